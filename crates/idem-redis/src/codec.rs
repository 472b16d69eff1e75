//! Key names and values: records to and from bytes, ids to and from key names.
//!
//! Nothing here panics on what Redis holds: every value read back is checked, and one
//! that does not decode is [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{
    Fence, Fingerprint, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};

/// First byte of a record's value, so a future encoding can be told apart.
const RECORD_VERSION: u8 = 1;
const TAG_IN_FLIGHT: u8 = 0;
const TAG_COMPLETED: u8 = 1;

pub(crate) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

/// The names of every key one store uses, all under `{prefix}` (a Redis Cluster hash
/// tag, so they hash to one slot and a transaction may touch them all).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}`, the start of every key.
    tagged: String,
    /// `{prefix}:fence`: the next fence (an integer that only grows).
    pub(crate) fence: String,
    /// `{prefix}:usage`: a hash with fields `records` and `bytes`.
    pub(crate) usage: String,
    /// `{prefix}:expiry`: a sorted set, score = forgettable-at ms, member = [`Keys::member`].
    pub(crate) expiry: String,
}

/// Usage hash field: records held.
pub(crate) const USAGE_RECORDS: &str = "records";
/// Usage hash field: bytes held.
pub(crate) const USAGE_BYTES: &str = "bytes";

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        let tagged = format!("{{{prefix}}}");
        Keys {
            fence: format!("{tagged}:fence"),
            usage: format!("{tagged}:usage"),
            expiry: format!("{tagged}:expiry"),
            tagged,
        }
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
    /// without expiry, so a record Redis forgot by itself is still accounted for (see
    /// [`Held`]).
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
/// principal length-prefixed, so every id has one encoding and decodes back.
pub(crate) fn id_field(id: &RecordId) -> Vec<u8> {
    let principal = id.principal.as_str();
    let mut field = format!("{}:", principal.len()).into_bytes();
    field.extend_from_slice(principal.as_bytes());
    field.extend_from_slice(id.key.as_str().as_bytes());
    field
}

/// The record id of an [`id_field`].
pub(crate) fn id_from_field(field: &[u8]) -> Result<RecordId, StoreError> {
    let bad = || corrupt(format!("{:?} is not a record id", String::from_utf8_lossy(field)));
    let colon = field.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let length: usize = std::str::from_utf8(&field[..colon]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rest = &field[colon + 1..];
    if rest.len() < length {
        return Err(bad());
    }
    let (principal, key) = rest.split_at(length);
    let principal = std::str::from_utf8(principal).map_err(|_| bad())?;
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).map_err(|error| corrupt(format!("principal {principal:?}: {error}")))?
    };
    // A key's characters, quoted as a structured-field string, parse back to that key
    // (a bare value starting with `"` would be read as quoted).
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    for &c in key {
        if c == b'"' || c == b'\\' {
            quoted.push(b'\\');
        }
        quoted.push(c);
    }
    quoted.push(b'"');
    let parsed =
        Key::parse(&quoted).map_err(|error| corrupt(format!("key {:?}: {error}", String::from_utf8_lossy(key))))?;
    Ok(RecordId::new(principal, parsed))
}

/// The expiry-index member of the record with `fence` under `field`: the fence as 20
/// digits first, so members with the same score (forgettable at the same ms) sort by
/// fence, as [`idem_core::MemoryState`] purges them.
pub(crate) fn member(fence: Fence, field: &[u8]) -> Vec<u8> {
    let mut member = format!("{:020}:", fence.get()).into_bytes();
    member.extend_from_slice(field);
    member
}

/// The fence and id field of an expiry-index member.
pub(crate) fn from_member(member: &[u8]) -> Result<(Fence, &[u8]), StoreError> {
    let bad = || corrupt(format!("{:?} is not an expiry index member", String::from_utf8_lossy(member)));
    if member.len() < 21 || member[20] != b':' {
        return Err(bad());
    }
    let fence = std::str::from_utf8(&member[..20]).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad)?;
    Ok((Fence::new(fence), &member[21..]))
}

/// What `{prefix}:h:<id>` says about one id: the fence and stored bytes of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) fence: Fence,
    pub(crate) bytes: u64,
}

impl Held {
    pub(crate) fn encode(self) -> String {
        format!("{} {}", self.fence.get(), self.bytes)
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Held, StoreError> {
        let bad = || corrupt(format!("{:?} is not a held entry", String::from_utf8_lossy(value)));
        let text = std::str::from_utf8(value).map_err(|_| bad())?;
        let (fence, bytes) = text.split_once(' ').ok_or_else(bad)?;
        Ok(Held { fence: Fence::new(fence.parse().map_err(|_| bad())?), bytes: bytes.parse().map_err(|_| bad())? })
    }
}

/// A sorted-set score for a time. Scores are doubles: exact up to 2^53 ms (year 287,396);
/// later times round, which only blurs the order of records kept that long.
#[allow(clippy::cast_precision_loss)] // see above
pub(crate) fn score(time: Timestamp) -> f64 {
    time.unix_ms() as f64
}

/// A record as bytes: version, fingerprint, fence, expires_at, state tag, then for an
/// in-flight record its lease's end, for a completed one status, headers
/// (count, then length-prefixed names and values) and the body. Integers are big-endian.
pub(crate) fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + record.stored_bytes());
    out.push(RECORD_VERSION);
    out.extend_from_slice(record.fingerprint.as_bytes());
    out.extend_from_slice(&record.fence.get().to_be_bytes());
    out.extend_from_slice(&record.expires_at.unix_ms().to_be_bytes());
    match &record.state {
        RecordState::InFlight { lease_expires_at } => {
            out.push(TAG_IN_FLIGHT);
            out.extend_from_slice(&lease_expires_at.unix_ms().to_be_bytes());
        }
        RecordState::Completed { response } => {
            out.push(TAG_COMPLETED);
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
        }
    }
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

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
}

/// A record read back.
pub(crate) fn decode_record(value: &[u8]) -> Result<Record, StoreError> {
    let mut reader = Reader { rest: value };
    let [version] = reader.array()?;
    if version != RECORD_VERSION {
        return Err(corrupt(format!("record encoding version {version}, this build reads {RECORD_VERSION}")));
    }
    let fingerprint = Fingerprint::from_bytes(reader.array()?);
    let fence = reader.u64()?;
    if fence < Fence::FIRST.get() {
        return Err(corrupt(format!("fence {fence} is not a fence")));
    }
    let expires_at = Timestamp::from_unix_ms(reader.u64()?);
    let [tag] = reader.array()?;
    let state = match tag {
        TAG_IN_FLIGHT => RecordState::InFlight { lease_expires_at: Timestamp::from_unix_ms(reader.u64()?) },
        TAG_COMPLETED => {
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
            let body = Bytes::copy_from_slice(reader.rest);
            reader.rest = &[];
            RecordState::Completed { response: StoredResponse { status, headers, body } }
        }
        other => return Err(corrupt(format!("record state tag {other}"))),
    };
    if !reader.rest.is_empty() {
        return Err(corrupt("an in-flight record value has trailing bytes"));
    }
    Ok(Record { fingerprint, fence: Fence::new(fence), expires_at, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(principal: &str, key: &str) -> RecordId {
        let principal = if principal.is_empty() { Principal::anonymous() } else { Principal::new(principal).unwrap() };
        RecordId::new(principal, Key::parse(key.as_bytes()).unwrap())
    }

    #[test]
    fn ids_round_trip_through_their_field() {
        // Goal: every id, including the anonymous principal, principals with ':' and
        // digits, and keys with quotes and backslashes, decodes back to itself.
        for id in [id("", "k1"), id("alice", "k:1"), id("12:ab", r#""a\"b\\c""#), id("ünï", "~!")] {
            assert_eq!(id_from_field(&id_field(&id)).unwrap(), id);
        }
        assert!(id_from_field(b"9:ab").is_err(), "a short principal is corrupt, not a panic");
    }

    #[test]
    fn records_round_trip_and_damage_is_corrupt() {
        // Goal: in-flight and completed records (with binary header values) decode back;
        // every truncation is an error value.
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
        let completed = Record { state: RecordState::Completed { response }, ..in_flight.clone() };
        for record in [in_flight, completed] {
            let bytes = encode_record(&record);
            assert_eq!(decode_record(&bytes).unwrap(), record);
            for cut in 0..bytes.len() - 4 {
                assert!(decode_record(&bytes[..cut]).is_err() || cut > 50, "cut at {cut}");
            }
        }
    }

    #[test]
    fn members_sort_by_fence_and_decode() {
        // Goal: index members of one score sort by fence numerically, and parse back.
        let (a, b) = (member(Fence::new(9), b"0:k"), member(Fence::new(10), b"0:a"));
        assert!(a < b);
        assert_eq!(from_member(&b).unwrap(), (Fence::new(10), &b"0:a"[..]));
    }
}
