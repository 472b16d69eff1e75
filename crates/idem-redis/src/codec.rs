//! Key names and values: records to and from bytes, ids to and from key names.
//!
//! Nothing here panics on what Redis holds: every value read back is checked, and one
//! that does not decode is [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{
    Fence, Fingerprint, Holder, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};

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
    /// `{prefix}:list`: a sorted set, score 0, member = [`list_member`] of every record
    /// held: `ZRANGEBYLEX` walks it in `RecordId` order (written by the script).
    pub(crate) list: String,
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
        Keys {
            counters: format!("{tagged}:counters"),
            expiry: format!("{tagged}:expiry"),
            list: format!("{tagged}:list"),
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

/// A record id as a list-index member: `<principal>\0<key>`. A principal holds no byte
/// below 0x20 (no control characters), so bytewise order of members is `RecordId`'s
/// order: principal first (a shorter principal that is a prefix of another sorts first,
/// as in `str`'s order), then key.
pub(crate) fn list_member(id: &RecordId) -> Vec<u8> {
    let mut member = id.principal.as_str().as_bytes().to_vec();
    member.push(0);
    member.extend_from_slice(id.key.as_str().as_bytes());
    member
}

/// The record id of a list-index member.
pub(crate) fn id_of_member(member: &[u8]) -> Result<RecordId, StoreError> {
    let bad = || corrupt(format!("a list index member: {:?}", String::from_utf8_lossy(member)));
    let split = member.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let principal = std::str::from_utf8(&member[..split]).map_err(|_| bad())?;
    let principal =
        if principal.is_empty() { Principal::anonymous() } else { Principal::new(principal).map_err(|_| bad())? };
    let key = Key::parse(&member[split + 1..]).map_err(|_| bad())?;
    Ok(RecordId::new(principal, key))
}

/// A response as bytes, the record's `resp` field: status, headers (count, then
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

/// A record read back from its value (see `store.lua`): the fingerprint's digest (32
/// bytes), then `"v<version> <fence> <expires_at> <lease end> <stored bytes> <created_at>
/// <state i|c|t> <renewals> <replays> <tombstone_until> <request id> <trace id>\n"`, then
/// for a completed record the response ([`encode_response`]). A value the script wrote
/// before (a digit after the digest: `"<fence> <expires_at> <lease end> <stored
/// bytes>\n"`) reads as a version 1 fingerprint, created at the epoch (unknown), with no
/// holder, renewals, replays or tombstone.
pub(crate) fn decode_record(value: &[u8]) -> Result<Record, StoreError> {
    let bad = |what: &str| corrupt(format!("a record value {what}"));
    if value.len() < 33 {
        return Err(bad("is shorter than a fingerprint and a header"));
    }
    let (digest, rest) = value.split_at(32);
    let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("has no header"))?;
    let (header, response) = (&rest[..end], &rest[end + 1..]);
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let fields: Vec<&str> = header.split(' ').collect();
    let fields = match (header.strip_prefix('v'), &fields[..]) {
        (Some(_), [version, rest @ ..]) if rest.len() == 11 => Fields::parse(&version[1..], rest)?,
        (None, [fence, expires_at, lease, _bytes]) => Fields::legacy(fence, expires_at, lease)?,
        _ => return Err(bad("header has not the fields of either format")),
    };
    let mut stored = Vec::with_capacity(33);
    if fields.version != 1 {
        stored.push(fields.version);
    }
    stored.extend_from_slice(digest);
    let fingerprint = Fingerprint::from_stored(&stored).map_err(|error| corrupt(error.to_string()))?;
    let state = match (fields.state, fields.lease) {
        ("i", Some(lease_expires_at)) if response.is_empty() => {
            RecordState::InFlight { lease_expires_at, holder: fields.holder, renewals: fields.renewals }
        }
        ("c", None) => RecordState::Completed {
            response: decode_response(response)?,
            replays: fields.replays,
            tombstone_until: fields.tombstone_until,
        },
        ("t", None) if response.is_empty() => RecordState::Tombstone,
        (state, _) => return Err(bad(&format!("in state {state:?} has a lease or response it cannot have"))),
    };
    Ok(Record { fingerprint, fence: fields.fence, created_at: fields.created_at, expires_at: fields.expires_at, state })
}

/// A record header's fields, read.
struct Fields<'a> {
    version: u8,
    fence: Fence,
    expires_at: Timestamp,
    lease: Option<Timestamp>,
    created_at: Timestamp,
    state: &'a str,
    renewals: u32,
    replays: u64,
    tombstone_until: Option<Timestamp>,
    holder: Holder,
}

fn number(what: &str, text: &str) -> Result<u64, StoreError> {
    decimal(what, Some(text.as_bytes().to_vec()))
}

fn time(what: &str, text: &str) -> Result<Timestamp, StoreError> {
    number(what, text).map(Timestamp::from_unix_ms)
}

fn optional_time(what: &str, text: &str) -> Result<Option<Timestamp>, StoreError> {
    if text.is_empty() { Ok(None) } else { time(what, text).map(Some) }
}

fn fence(text: &str) -> Result<Fence, StoreError> {
    let fence = number("fence", text)?;
    if fence < Fence::FIRST.get() {
        return Err(corrupt(format!("fence {fence} is not a fence")));
    }
    Ok(Fence::new(fence))
}

impl<'a> Fields<'a> {
    fn parse(version: &str, fields: &[&'a str]) -> Result<Fields<'a>, StoreError> {
        let [
            fence_text,
            expires_at,
            lease,
            _bytes,
            created_at,
            state,
            renewals,
            replays,
            tombstone_until,
            request,
            trace,
        ] = fields[..]
        else {
            unreachable!("the caller matched eleven fields")
        };
        let version = u8::try_from(number("fingerprint version", version)?)
            .map_err(|_| corrupt(format!("fingerprint version {version}")))?;
        let renewals = number("renewals", renewals)?;
        let id = |text: &'a str| (!text.is_empty()).then_some(text);
        Ok(Fields {
            version,
            fence: fence(fence_text)?,
            expires_at: time("expires_at", expires_at)?,
            lease: optional_time("lease", lease)?,
            created_at: time("created_at", created_at)?,
            state,
            renewals: u32::try_from(renewals).map_err(|_| corrupt(format!("{renewals} renewals")))?,
            replays: number("replays", replays)?,
            tombstone_until: optional_time("tombstone_until", tombstone_until)?,
            holder: Holder::new(id(request), id(trace)),
        })
    }

    fn legacy(fence_text: &str, expires_at: &str, lease: &str) -> Result<Fields<'a>, StoreError> {
        let lease = optional_time("lease", lease)?;
        Ok(Fields {
            version: 1,
            fence: fence(fence_text)?,
            expires_at: time("expires_at", expires_at)?,
            state: if lease.is_some() { "i" } else { "c" },
            lease,
            created_at: Timestamp::EPOCH,
            renewals: 0,
            replays: 0,
            tombstone_until: None,
            holder: Holder::NONE,
        })
    }
}

/// An unsigned decimal the script wrote or answered.
pub(crate) fn decimal(what: &str, value: Option<Vec<u8>>) -> Result<u64, StoreError> {
    value.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()).and_then(|text| text.parse().ok()).ok_or_else(
        || corrupt(format!("{what} is not a number: {:?}", value.map(|v| String::from_utf8_lossy(&v).into_owned()))),
    )
}

#[cfg(test)]
mod tests {
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
        // What the script writes: see store.lua's `encode`.
        let time = |at: Option<Timestamp>| at.map(|at| at.unix_ms().to_string()).unwrap_or_default();
        let (state, lease, renewals, replays, tomb, holder, response) = match &record.state {
            RecordState::InFlight { lease_expires_at, holder, renewals } => {
                ("i", Some(*lease_expires_at), *renewals, 0, None, holder.clone(), vec![])
            }
            RecordState::Completed { response, replays, tombstone_until } => {
                ("c", None, 0, *replays, *tombstone_until, Holder::NONE, encode_response(response))
            }
            RecordState::Tombstone => ("t", None, 0, 0, None, Holder::NONE, vec![]),
        };
        let mut value = record.fingerprint.digest().to_vec();
        value.extend_from_slice(
            format!(
                "v{} {} {} {} 99 {} {state} {renewals} {replays} {} {} {}\n",
                record.fingerprint.version().number(),
                record.fence.get(),
                record.expires_at.unix_ms(),
                time(lease),
                record.created_at.unix_ms(),
                time(tomb),
                holder.request_id().unwrap_or_default(),
                holder.trace_id().unwrap_or_default(),
            )
            .as_bytes(),
        );
        value.extend_from_slice(&response);
        value
    }

    #[test]
    fn records_round_trip_and_damage_is_corrupt() {
        // Goal: every state (in flight with a holder, completed with binary header values,
        // replays and a tombstone end, a tombstone) with either fingerprint version decodes
        // back from the value the script writes; every truncation is an error value.
        let parts = idem_core::SemanticParts { method: "POST", path: "/p", query: &[], headers: &[], body: b"{}" };
        let in_flight = Record {
            fingerprint: Fingerprint::of("POST", "/p", b"{}"),
            fence: Fence::new(7),
            created_at: Timestamp::from_unix_ms(3),
            expires_at: Timestamp::from_unix_ms(9),
            state: RecordState::InFlight {
                lease_expires_at: Timestamp::from_unix_ms(5),
                holder: Holder::new(Some("req-1"), Some("trace-9")),
                renewals: 4,
            },
        };
        let response = StoredResponse {
            status: 201,
            headers: vec![("x-bin".to_owned(), Bytes::from_static(&[0, 255, b'\n', b' ']))],
            body: Bytes::from_static(b"body"),
        };
        let completed = Record {
            fingerprint: Fingerprint::semantic(&parts),
            state: RecordState::Completed {
                response: response.clone(),
                replays: u64::MAX,
                tombstone_until: Some(Timestamp::from_unix_ms(20)),
            },
            ..in_flight.clone()
        };
        let tombstone = Record { state: RecordState::Tombstone, ..completed.clone() };
        for record in [in_flight, completed, tombstone] {
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

    #[test]
    fn previous_records_read_as_version_one_without_lifecycle_fields() {
        // Goal: a value the previous script wrote (digest, then four header fields) reads
        // back: version 1 fingerprint, created at the epoch, no holder, renewals, replays or
        // tombstone; a header of neither format is damage.
        let fingerprint = Fingerprint::of("POST", "/p", b"{}");
        let mut value = fingerprint.to_stored();
        value.extend_from_slice(b"7 9  71\n");
        value.extend_from_slice(&encode_response(&StoredResponse::new(201, &b"ok"[..])));
        let record = decode_record(&value).unwrap();
        let expected = Record {
            fingerprint,
            fence: Fence::new(7),
            created_at: Timestamp::EPOCH,
            expires_at: Timestamp::from_unix_ms(9),
            state: RecordState::Completed {
                response: StoredResponse::new(201, &b"ok"[..]),
                replays: 0,
                tombstone_until: None,
            },
        };
        assert_eq!(record, expected);
        let mut in_flight = fingerprint.to_stored();
        in_flight.extend_from_slice(b"7 9 5 71\n");
        let state =
            RecordState::InFlight { lease_expires_at: Timestamp::from_unix_ms(5), holder: Holder::NONE, renewals: 0 };
        assert_eq!(decode_record(&in_flight).unwrap().state, state);
        let mut neither = fingerprint.to_stored();
        neither.extend_from_slice(b"7 9 5\n");
        assert!(decode_record(&neither).is_err());
    }

    #[test]
    fn list_members_sort_as_record_ids_do() {
        // Goal: bytewise order of list-index members (what ZRANGEBYLEX walks) is RecordId's
        // order, a principal that prefixes another included, and members map back to ids.
        let mut ids =
            vec![id("", "b"), id("", "a"), id("al", "z"), id("alice", "k2"), id("alice", "k1"), id("ali", "~")];
        let mut members: Vec<Vec<u8>> = ids.iter().map(list_member).collect();
        ids.sort();
        members.sort();
        let back: Vec<RecordId> = members.iter().map(|member| id_of_member(member).unwrap()).collect();
        assert_eq!(back, ids);
        assert!(id_of_member(b"no separator").is_err());
    }
}
