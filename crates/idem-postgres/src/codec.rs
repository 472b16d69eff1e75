//! Records to and from rows: checked integer conversions and the header encoding.
//!
//! Nothing here panics on what a row holds: every value read back is checked and a
//! value that does not fit is a [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{
    Fence, Fingerprint, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt, store_error};

/// `state` of an in-flight record.
pub(crate) const STATE_IN_FLIGHT: &str = "in_flight";
/// `state` of a completed record.
pub(crate) const STATE_COMPLETED: &str = "completed";

/// First byte of the header encoding, so a future encoding can be told apart.
const HEADERS_VERSION: u8 = 1;

/// The columns [`decode_record`] reads, from `idem_records AS r`. Each is named as its
/// column, so the list works in a join with tables that share column names.
pub(crate) const RECORD_COLUMNS: &str = "r.fingerprint AS fingerprint, r.fence AS fence, r.state AS state, \
     r.lease_expires_at AS lease_expires_at, r.expires_at AS expires_at, \
     r.forgettable_at AS forgettable_at, r.status AS status, r.headers AS headers, r.body AS body";

/// How many shards the usage totals are kept in (`idem_usage`, migration 0001).
pub(crate) const USAGE_SHARDS: u32 = 64;

/// The usage shard of `id`: FNV-1a (64 bit) over the principal's bytes, a zero byte (which
/// neither a principal nor a key holds) and the key's bytes, modulo [`USAGE_SHARDS`]. Every
/// step on one record id adds to the same shard, so no shard's totals go below zero.
pub(crate) fn usage_shard(id: &RecordId) -> i32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let bytes = id.principal.as_str().bytes().chain([0]).chain(id.key.as_str().bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    i32::try_from(hash % u64::from(USAGE_SHARDS)).expect("a shard number is below 64")
}

/// The column values of a record, ready to bind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordRow {
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) fence: i64,
    pub(crate) state: &'static str,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) expires_at: i64,
    pub(crate) forgettable_at: i64,
    pub(crate) status: Option<i32>,
    pub(crate) headers: Option<Vec<u8>>,
    pub(crate) body: Option<Vec<u8>>,
}

/// A time as stored. Times past `i64::MAX` ms (292 million years) are stored as
/// `i64::MAX`, the store's end of time, as [`Timestamp`]'s own arithmetic saturates.
pub(crate) fn time_to_sql(time: Timestamp) -> i64 {
    i64::try_from(time.unix_ms()).unwrap_or(i64::MAX)
}

/// A time read back; a negative value is corrupt.
fn time_from_sql(column: &str, value: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(value)
        .map(Timestamp::from_unix_ms)
        .map_err(|_| corrupt(format!("{column} is {value}, a time before 1970")))
}

/// A fence as stored; fences past `i64::MAX` cannot be, and no store issues them.
pub(crate) fn fence_to_sql(fence: Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.get()).map_err(|_| corrupt(format!("fence {fence:?} does not fit a PostgreSQL bigint")))
}

/// A fence read back; anything below 1 is corrupt.
pub(crate) fn fence_from_sql(column: &str, value: i64) -> Result<Fence, StoreError> {
    match u64::try_from(value) {
        Ok(number) if number >= Fence::FIRST.get() => Ok(Fence::new(number)),
        _ => Err(corrupt(format!("{column} is {value}, not a fence"))),
    }
}

/// A byte count as stored.
pub(crate) fn count_to_sql(column: &str, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| corrupt(format!("{column} of {count} does not fit a PostgreSQL bigint")))
}

/// A count read back; a negative value is corrupt.
pub(crate) fn count_from_sql(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is {value}, a negative count")))
}

/// The column values of `record`.
pub(crate) fn encode_record(record: &Record) -> Result<RecordRow, StoreError> {
    let (state, lease_expires_at, status, headers, body) = match &record.state {
        RecordState::InFlight { lease_expires_at } => {
            (STATE_IN_FLIGHT, Some(time_to_sql(*lease_expires_at)), None, None, None)
        }
        RecordState::Completed { response } => (
            STATE_COMPLETED,
            None,
            Some(i32::from(response.status)),
            Some(encode_headers(&response.headers)?),
            Some(response.body.to_vec()),
        ),
    };
    Ok(RecordRow {
        fingerprint: record.fingerprint.as_bytes().to_vec(),
        fence: fence_to_sql(record.fence)?,
        state,
        lease_expires_at,
        expires_at: time_to_sql(record.expires_at),
        forgettable_at: time_to_sql(record.forgettable_at()),
        status,
        headers,
        body,
    })
}

/// The record id of a row's `principal` and `idem_key` (`''` is the anonymous principal).
pub(crate) fn id_from_sql(principal: &str, key: &str) -> Result<RecordId, StoreError> {
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).map_err(|error| corrupt(format!("principal {principal:?}: {error}")))?
    };
    // The column holds the key's characters; as a structured-field string they parse back
    // to exactly that key (a bare value starting with `"` would be read as quoted).
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    let parsed = Key::parse(quoted.as_bytes()).map_err(|error| corrupt(format!("idem_key {key:?}: {error}")))?;
    debug_assert_eq!(parsed.as_str(), key, "a quoted key parses back to its characters");
    Ok(RecordId::new(principal, parsed))
}

/// Reads a record from a row that holds the columns of `record_columns!`.
pub(crate) fn decode_record(row: &PgRow) -> Result<Record, StoreError> {
    let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(store_error)?;
    let fingerprint: [u8; 32] = fingerprint
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(format!("fingerprint has {} bytes, not 32", fingerprint.len())))?;
    let fence = fence_from_sql("fence", row.try_get("fence").map_err(store_error)?)?;
    let state: String = row.try_get("state").map_err(store_error)?;
    let expires_at = time_from_sql("expires_at", row.try_get("expires_at").map_err(store_error)?)?;
    let forgettable_at: i64 = row.try_get("forgettable_at").map_err(store_error)?;

    let state = match state.as_str() {
        STATE_IN_FLIGHT => {
            let lease: Option<i64> = row.try_get("lease_expires_at").map_err(store_error)?;
            let lease = lease.ok_or_else(|| corrupt("an in-flight record has no lease_expires_at"))?;
            RecordState::InFlight { lease_expires_at: time_from_sql("lease_expires_at", lease)? }
        }
        STATE_COMPLETED => RecordState::Completed { response: decode_response(row)? },
        other => return Err(corrupt(format!("state is {other:?}, not {STATE_IN_FLIGHT:?} or {STATE_COMPLETED:?}"))),
    };
    let record = Record { fingerprint: Fingerprint::from_bytes(fingerprint), fence, expires_at, state };
    // Purging trusts the column to say when the record expires; a row where it disagrees
    // with the record would be purged early or late.
    if time_to_sql(record.forgettable_at()) != forgettable_at {
        return Err(corrupt(format!(
            "forgettable_at is {forgettable_at}, but the record becomes forgettable at {}",
            record.forgettable_at().unix_ms()
        )));
    }
    Ok(record)
}

fn decode_response(row: &PgRow) -> Result<StoredResponse, StoreError> {
    let status: Option<i32> = row.try_get("status").map_err(store_error)?;
    let status = status.ok_or_else(|| corrupt("a completed record has no status"))?;
    let status = u16::try_from(status).map_err(|_| corrupt(format!("status is {status}, not an HTTP status")))?;
    let headers: Option<Vec<u8>> = row.try_get("headers").map_err(store_error)?;
    let headers = decode_headers(&headers.ok_or_else(|| corrupt("a completed record has no headers"))?)?;
    let body: Option<Vec<u8>> = row.try_get("body").map_err(store_error)?;
    let body = body.ok_or_else(|| corrupt("a completed record has no body"))?;
    Ok(StoredResponse { status, headers, body: Bytes::from(body) })
}

/// Encodes stored headers: a version byte (1), the number of headers as a big-endian
/// `u32`, then per header its name's length (`u32`, big-endian) and UTF-8 bytes and its
/// value's length (`u32`, big-endian) and bytes.
pub(crate) fn encode_headers(headers: &[(String, Bytes)]) -> Result<Vec<u8>, StoreError> {
    let too_big = |what: &str| corrupt(format!("{what} is too long for the header encoding"));
    let capacity: usize = headers.iter().map(|(name, value)| 8 + name.len() + value.len()).sum();
    let mut out = Vec::with_capacity(5 + capacity);
    out.push(HEADERS_VERSION);
    out.extend_from_slice(&u32::try_from(headers.len()).map_err(|_| too_big("the header list"))?.to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&u32::try_from(name.len()).map_err(|_| too_big("a header name"))?.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).map_err(|_| too_big("a header value"))?.to_be_bytes());
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// Decodes [`encode_headers`]' output; anything else is corrupt.
pub(crate) fn decode_headers(encoded: &[u8]) -> Result<Vec<(String, Bytes)>, StoreError> {
    let mut reader = Reader { rest: encoded };
    let version = reader.take(1)?[0];
    if version != HEADERS_VERSION {
        return Err(corrupt(format!("headers use encoding version {version}, this idem reads {HEADERS_VERSION}")));
    }
    let count = reader.length()?;
    // Each header takes at least 8 bytes, so a count beyond that is a lie, not a reason to allocate.
    if count > reader.rest.len() / 8 {
        return Err(corrupt(format!("headers claim {count} entries in {} bytes", reader.rest.len())));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name_bytes = reader.length()?;
        let name = std::str::from_utf8(reader.take(name_bytes)?)
            .map_err(|_| corrupt("a stored header name is not UTF-8"))?
            .to_owned();
        let value_bytes = reader.length()?;
        let value = Bytes::copy_from_slice(reader.take(value_bytes)?);
        headers.push((name, value));
    }
    if !reader.rest.is_empty() {
        return Err(corrupt(format!("headers have {} bytes after the last entry", reader.rest.len())));
    }
    Ok(headers)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, bytes: usize) -> Result<&'a [u8], StoreError> {
        if bytes > self.rest.len() {
            return Err(corrupt(format!("headers end {} bytes early", bytes - self.rest.len())));
        }
        let (taken, rest) = self.rest.split_at(bytes);
        self.rest = rest;
        Ok(taken)
    }

    fn length(&mut self) -> Result<usize, StoreError> {
        let bytes: [u8; 4] = self.take(4)?.try_into().expect("take(4) returns 4 bytes");
        usize::try_from(u32::from_be_bytes(bytes)).map_err(|_| corrupt("a header length does not fit in memory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        // Goal: any header list, including empty names and values and binary values, decodes to itself.
        let headers = vec![
            ("content-type".to_owned(), Bytes::from_static(b"application/json")),
            (String::new(), Bytes::new()),
            ("x-binary".to_owned(), Bytes::from_static(&[0, 255, 10, 13])),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers).unwrap()).unwrap(), headers);
        assert_eq!(decode_headers(&encode_headers(&[]).unwrap()).unwrap(), Vec::new());
    }

    #[test]
    fn damaged_headers_are_corrupt() {
        // Goal: truncated, padded, mis-versioned or lying encodings are errors, never panics.
        let encoded = encode_headers(&[("a".to_owned(), Bytes::from_static(b"b"))]).unwrap();
        for cut in 0..encoded.len() {
            assert!(matches!(decode_headers(&encoded[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
        let mut padded = encoded.clone();
        padded.push(0);
        assert!(matches!(decode_headers(&padded), Err(StoreError::Corrupt { .. })));
        let mut versioned = encoded.clone();
        versioned[0] = 2;
        assert!(matches!(decode_headers(&versioned), Err(StoreError::Corrupt { .. })));
        let huge_count = [HEADERS_VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode_headers(&huge_count), Err(StoreError::Corrupt { .. })));
        let bad_utf8 = [HEADERS_VERSION, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0];
        assert!(matches!(decode_headers(&bad_utf8), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn ids_read_back_as_stored() {
        // Goal: every key's characters, including quotes and backslashes in any place, and
        // the anonymous principal read back to the id they were stored from.
        for key in ["k1", "\"", "\"abc\"", "a\\b", "\\\"", "\"".repeat(255).as_str()] {
            let id = id_from_sql("", key).unwrap();
            assert_eq!((id.principal.is_anonymous(), id.key.as_str()), (true, key));
            assert_eq!(id_from_sql("alice", key).unwrap().principal.as_str(), "alice");
        }
    }

    #[test]
    fn damaged_ids_are_corrupt() {
        // Goal: a principal or key that idem-core would not accept is Corrupt, never a panic.
        for (principal, key) in
            [("alice", ""), ("alice", "a b"), ("alice", "é"), ("a\u{7}", "k"), ("alice", "k".repeat(256).as_str())]
        {
            assert!(matches!(id_from_sql(principal, key), Err(StoreError::Corrupt { .. })), "{principal:?} {key:?}");
        }
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        // Goal: the shard of an id never changes between versions (stored totals depend on
        // it) and every id lands in 0..USAGE_SHARDS.
        assert_eq!(
            usage_shard(&id_from_sql("alice", "k1").unwrap()),
            usage_shard(&id_from_sql("alice", "k1").unwrap())
        );
        assert_eq!(usage_shard(&id_from_sql("", "k").unwrap()), 28, "pinned: FNV-1a of \"\\0k\" modulo 64");
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let shard = usage_shard(&id_from_sql("alice", &format!("k{n}")).unwrap());
            assert!((0..64).contains(&shard));
            seen.insert(shard);
        }
        assert_eq!(seen.len(), 64, "1000 keys reach every shard");
    }

    #[test]
    fn conversions_are_checked() {
        // Goal: negative or oversized integers are refused instead of wrapping.
        assert!(matches!(time_from_sql("t", -1), Err(StoreError::Corrupt { .. })));
        assert_eq!(time_from_sql("t", i64::MAX).unwrap(), Timestamp::from_unix_ms(i64::MAX.unsigned_abs()));
        assert_eq!(time_to_sql(Timestamp::from_unix_ms(u64::MAX)), i64::MAX);
        assert!(matches!(fence_from_sql("f", 0), Err(StoreError::Corrupt { .. })));
        assert!(matches!(fence_from_sql("f", -3), Err(StoreError::Corrupt { .. })));
        assert_eq!(fence_from_sql("f", 7).unwrap(), Fence::new(7));
        assert!(matches!(fence_to_sql(Fence::new(u64::MAX)), Err(StoreError::Corrupt { .. })));
        assert!(matches!(count_from_sql("c", -1), Err(StoreError::Corrupt { .. })));
        assert!(matches!(count_to_sql("c", u64::MAX), Err(StoreError::Corrupt { .. })));
    }
}
