//! Key names and values: records to and from bytes, ids to and from key names.
//!
//! Nothing here panics on what Redis holds: every value read back is checked, and one
//! that does not decode is [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{Fence, Fingerprint, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp};

/// First byte of a stored response, so a future encoding can be told apart.
const RESPONSE_VERSION: u8 = 2;

pub(crate) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

/// The names of every key one store uses, all under `{prefix}` (a Redis Cluster hash
/// tag, so they hash to one slot and one script may touch them all).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}`, the start of every key.
    pub(crate) tagged: String,
    /// `{prefix}:counters`: a hash with fields `fence` (the next fence, which only grows),
    /// `records` and `bytes` (the usage totals).
    pub(crate) counters: String,
    /// `{prefix}:expiry`: a sorted set, score = forgettable-at ms, member = `<fence as 20
    /// digits>:<id field>` (written by the script).
    pub(crate) expiry: String,
}

/// Counters hash field: the next fence.
pub(crate) const COUNTER_FENCE: &str = "fence";
/// Counters hash field: records held.
pub(crate) const USAGE_RECORDS: &str = "records";
/// Counters hash field: bytes held.
pub(crate) const USAGE_BYTES: &str = "bytes";

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        let tagged = format!("{{{prefix}}}");
        Keys { counters: format!("{tagged}:counters"), expiry: format!("{tagged}:expiry"), tagged }
    }

    /// `{prefix}:r:<id field>`: the record of `field`.
    pub(crate) fn record(&self, field: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.tagged.len() + 3 + field.len());
        key.extend_from_slice(self.tagged.as_bytes());
        key.extend_from_slice(b":r:");
        key.extend_from_slice(field);
        key
    }

    /// `{prefix}:h:<id field>`: `"<fence> <bytes>"` of the record held under `field`, kept
    /// without expiry, so a record Redis forgot by itself is still accounted for.
    pub(crate) fn held(&self, field: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.tagged.len() + 3 + field.len());
        key.extend_from_slice(self.tagged.as_bytes());
        key.extend_from_slice(b":h:");
        key.extend_from_slice(field);
        key
    }

    /// The `SCAN MATCH` pattern of every key of this prefix.
    pub(crate) fn pattern(&self) -> String {
        format!("{}*", self.tagged)
    }
}

/// A record id as bytes: `<principal length>:<principal><key>`. The key is last and the
/// principal length-prefixed, so every id has one encoding and no two ids share one.
pub(crate) fn id_field(id: &RecordId) -> Vec<u8> {
    let principal = id.principal.as_str();
    let mut field = format!("{}:", principal.len()).into_bytes();
    field.extend_from_slice(principal.as_bytes());
    field.extend_from_slice(id.key.as_str().as_bytes());
    field
}

/// A response as bytes, the record hash's `resp` field: status, headers (count, then
/// length-prefixed names and values) and the body. Integers are big-endian. The script
/// stores and returns it without reading it.
pub(crate) fn encode_response(response: &StoredResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + response.stored_bytes());
    out.push(RESPONSE_VERSION);
    out.extend_from_slice(&response.status.to_be_bytes());
    let count = u32::try_from(response.headers.len()).expect("a response has at most 64 stored headers");
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in &response.headers {
        for part in [name.as_bytes(), value.as_ref()] {
            let length = u32::try_from(part.len()).expect("a header is shorter than 4 GiB");
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&response.body);
    out
}

/// Reads bytes in order; running out is corruption.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(corrupt("a record value ends early"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
}

/// A response read back from [`encode_response`]'s bytes.
pub(crate) fn decode_response(value: &[u8]) -> Result<StoredResponse, StoreError> {
    let mut reader = Reader { rest: value };
    let [version] = reader.array()?;
    if version != RESPONSE_VERSION {
        return Err(corrupt(format!("response encoding version {version}, this build reads {RESPONSE_VERSION}")));
    }
    let status = u16::from_be_bytes(reader.array()?);
    let count = reader.u32()?;
    if count as usize > idem_core::record::STORED_HEADERS_MAX {
        return Err(corrupt(format!("{count} stored headers")));
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let length = reader.u32()? as usize;
        let name = std::str::from_utf8(reader.take(length)?)
            .map_err(|_| corrupt("a stored header name is not UTF-8"))?
            .to_owned();
        let length = reader.u32()? as usize;
        headers.push((name, Bytes::copy_from_slice(reader.take(length)?)));
    }
    Ok(StoredResponse { status, headers, body: Bytes::copy_from_slice(reader.rest) })
}

/// A record read back from its value (see `store.lua`): the fingerprint (32 bytes), then
/// `"<fence> <expires_at> <lease end, empty once completed> <stored bytes>\n"`, then for
/// a completed record the response ([`encode_response`]).
pub(crate) fn decode_record(value: &[u8]) -> Result<Record, StoreError> {
    let bad = |what: &str| corrupt(format!("a record value {what}"));
    if value.len() < 32 {
        return Err(bad("is shorter than a fingerprint"));
    }
    let (fingerprint, rest) = value.split_at(32);
    let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("has no header"))?;
    let (header, response) = (&rest[..end], &rest[end + 1..]);
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [fence, expires_at, lease, _bytes] = parts[..] else { return Err(bad("header has not four fields")) };
    let number = |what: &str, text: &str| decimal(what, Some(text.as_bytes().to_vec()));
    let fence = number("fence", fence)?;
    if fence < Fence::FIRST.get() {
        return Err(corrupt(format!("fence {fence} is not a fence")));
    }
    let expires_at = Timestamp::from_unix_ms(number("expires_at", expires_at)?);
    let state = if lease.is_empty() {
        RecordState::Completed { response: decode_response(response)? }
    } else if response.is_empty() {
        RecordState::InFlight { lease_expires_at: Timestamp::from_unix_ms(number("lease", lease)?) }
    } else {
        return Err(bad("in flight holds a response"));
    };
    let fingerprint: [u8; 32] = fingerprint.try_into().expect("split at 32");
    Ok(Record { fingerprint: Fingerprint::from_bytes(fingerprint), fence: Fence::new(fence), expires_at, state })
}

/// An unsigned decimal the script wrote or answered.
pub(crate) fn decimal(what: &str, value: Option<Vec<u8>>) -> Result<u64, StoreError> {
    value.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()).and_then(|text| text.parse().ok()).ok_or_else(
        || corrupt(format!("{what} is not a number: {:?}", value.map(|v| String::from_utf8_lossy(&v).into_owned()))),
    )
}

#[cfg(test)]
mod tests {
    use idem_core::{Key, Principal};

    use super::*;

    fn id(principal: &str, key: &str) -> RecordId {
        let principal = if principal.is_empty() { Principal::anonymous() } else { Principal::new(principal).unwrap() };
        RecordId::new(principal, Key::parse(key.as_bytes()).unwrap())
    }

    #[test]
    fn distinct_ids_have_distinct_fields() {
        // Goal: the id field is one-to-one: the anonymous principal, principals with ':' and
        // digits, and keys that would run into the principal never share a field (G4).
        let ids = [id("", "k1"), id("alice", "k:1"), id("alic", "ek:1"), id("12:ab", r#""a\"b\\c""#), id("ünï", "~!")];
        let fields: std::collections::HashSet<Vec<u8>> = ids.iter().map(id_field).collect();
        assert_eq!(fields.len(), ids.len());
        assert_eq!(id_field(&id("alice", "k1")), b"5:alicek1");
    }

    fn value(record: &Record) -> Vec<u8> {
        // What the script writes: see store.lua's `put`.
        let (lease, response) = match &record.state {
            RecordState::InFlight { lease_expires_at } => (lease_expires_at.unix_ms().to_string(), vec![]),
            RecordState::Completed { response } => (String::new(), encode_response(response)),
        };
        let mut value = record.fingerprint.as_bytes().to_vec();
        value.extend_from_slice(
            format!("{} {} {lease} 99\n", record.fence.get(), record.expires_at.unix_ms()).as_bytes(),
        );
        value.extend_from_slice(&response);
        value
    }

    #[test]
    fn records_round_trip_and_damage_is_corrupt() {
        // Goal: in-flight and completed records (with binary header values) decode back
        // from the value the script writes; every truncation is an error value.
        let fingerprint = Fingerprint::of("POST", "/p", b"{}");
        let in_flight = Record {
            fingerprint,
            fence: Fence::new(7),
            expires_at: Timestamp::from_unix_ms(9),
            state: RecordState::InFlight { lease_expires_at: Timestamp::from_unix_ms(5) },
        };
        let response = StoredResponse {
            status: 201,
            headers: vec![("x-bin".to_owned(), Bytes::from_static(&[0, 255]))],
            body: Bytes::from_static(b"body"),
        };
        let completed = Record { state: RecordState::Completed { response: response.clone() }, ..in_flight.clone() };
        for record in [in_flight, completed] {
            let bytes = value(&record);
            assert_eq!(decode_record(&bytes).unwrap(), record);
            for cut in 0..bytes.len() - 4 {
                assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let bytes = encode_response(&response);
        assert_eq!(decode_response(&bytes).unwrap(), response);
        // Cuts inside the headers are errors; a cut in the body is a shorter body.
        for cut in 0..bytes.len() - 4 {
            assert!(decode_response(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
