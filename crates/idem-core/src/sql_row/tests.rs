//! The SQL row layout's unit tests: records, headers, ids and integers through the columns.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// A row as a map from column name to value, `None` for NULL.
#[derive(Default)]
struct Map(BTreeMap<&'static str, Value>);

#[derive(Clone)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Map {
    fn of(row: &RecordRow) -> Map {
        let text = |value: &Option<String>| Value::Text(value.clone());
        Map(BTreeMap::from([
            ("fingerprint", Value::Bytes(Some(row.fingerprint.clone()))),
            ("fence", Value::Int(Some(row.fence))),
            ("created_at", Value::Int(Some(row.created_at))),
            ("state", Value::Text(Some(row.state.to_owned()))),
            ("lease_expires_at", Value::Int(row.lease_expires_at)),
            ("holder_request_id", text(&row.holder_request_id)),
            ("holder_trace_id", text(&row.holder_trace_id)),
            ("renewals", Value::Int(Some(i64::from(row.renewals)))),
            ("expires_at", Value::Int(Some(row.expires_at))),
            ("due_at", Value::Int(Some(row.due_at))),
            ("status", Value::Int(row.status.map(i64::from))),
            ("headers", Value::Bytes(row.headers.clone())),
            ("body", Value::Bytes(row.body.clone())),
            ("replays", Value::Int(Some(row.replays))),
            ("tombstone_until", Value::Int(row.tombstone_until)),
        ]))
    }

    fn with(mut self, column: &'static str, value: Value) -> Map {
        self.0.insert(column, value);
        self
    }

    fn get(&self, column: &str) -> Result<&Value, StoreError> {
        self.0.get(column).ok_or_else(|| corrupt(format!("no column {column}")))
    }
}

impl Columns for Map {
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.get(column)? {
            Value::Int(value) => Ok(*value),
            _ => Err(corrupt(format!("{column} is not an integer"))),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.get(column)? {
            Value::Text(value) => Ok(value.clone()),
            _ => Err(corrupt(format!("{column} is not text"))),
        }
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(column)? {
            Value::Bytes(value) => Ok(value.clone()),
            _ => Err(corrupt(format!("{column} is not bytes"))),
        }
    }
}

fn records() -> [Record; 3] {
    let at = Timestamp::from_unix_ms;
    let record = |fence, state| Record {
        fingerprint: Fingerprint::of("POST", "/payments", b"{}"),
        fence: Fence::new(fence),
        created_at: at(1_000),
        expires_at: at(11_000),
        state,
    };
    let holder = Holder::new(Some("req-1"), None);
    let response = StoredResponse {
        status: 201,
        headers: vec![("x-binary".to_owned(), Bytes::from_static(&[0, 255]))],
        body: Bytes::from_static(b"{\"id\":1}"),
    };
    [
        record(3, RecordState::InFlight { lease_expires_at: at(2_000), holder, renewals: 2 }),
        record(4, RecordState::Completed { response, replays: 5, tombstone_until: Some(at(3_611_000)) }),
        record(5, RecordState::Tombstone),
    ]
}

fn is_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Corrupt { detail }) => detail,
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn records_round_trip() {
    // Goal: a record of each state, written as columns and read back, is itself.
    for record in records() {
        let row = encode_record(&record).unwrap();
        assert_eq!(decode_record(&Map::of(&row)).unwrap(), record);
    }
    let ends = Record { expires_at: Timestamp::from_unix_ms(u64::MAX), ..records()[2].clone() };
    assert_eq!(encode_record(&ends).unwrap().expires_at, i64::MAX, "the end of time saturates");
}

#[test]
fn damaged_rows_are_corrupt() {
    // Goal: a row idem did not write is Corrupt, naming the column, never a panic.
    let [in_flight, completed, _] = records().map(|record| Map::of(&encode_record(&record).unwrap()));
    let in_flight = || Map(in_flight.0.clone());
    let completed = || Map(completed.0.clone());
    let cases = [
        (in_flight().with("state", Value::Text(Some("done".into()))), "state"),
        (in_flight().with("due_at", Value::Int(Some(1))), "due_at"),
        (in_flight().with("fence", Value::Int(Some(0))), "fence"),
        (in_flight().with("fence", Value::Int(None)), "fence"),
        (in_flight().with("created_at", Value::Int(Some(-1))), "created_at"),
        (in_flight().with("renewals", Value::Int(Some(-1))), "renewals"),
        (in_flight().with("lease_expires_at", Value::Int(None)), "lease_expires_at"),
        (in_flight().with("holder_trace_id", Value::Text(Some("a b\u{7}".into()))), "holder ids"),
        (in_flight().with("fingerprint", Value::Bytes(Some(vec![9]))), "fingerprint"),
        (completed().with("status", Value::Int(None)), "status"),
        (completed().with("status", Value::Int(Some(70_000))), "status"),
        (completed().with("headers", Value::Bytes(Some(vec![2]))), "headers"),
        (completed().with("body", Value::Bytes(None)), "body"),
        (completed().with("replays", Value::Int(Some(-1))), "replays"),
        (completed().with("tombstone_until", Value::Int(Some(-5))), "tombstone_until"),
    ];
    for (row, column) in cases {
        let detail = is_corrupt(decode_record(&row), column);
        assert!(detail.contains(column), "{detail:?} names {column}");
    }
}

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
        is_corrupt(decode_headers(&encoded[..cut]), &format!("cut at {cut}"));
    }
    let mut padded = encoded.clone();
    padded.push(0);
    is_corrupt(decode_headers(&padded), "padded");
    let mut versioned = encoded.clone();
    versioned[0] = 2;
    is_corrupt(decode_headers(&versioned), "version 2");
    let huge_count = [HEADERS_VERSION, 0xff, 0xff, 0xff, 0xff];
    is_corrupt(decode_headers(&huge_count), "huge count");
    let bad_utf8 = [HEADERS_VERSION, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0];
    is_corrupt(decode_headers(&bad_utf8), "bad UTF-8");
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
        is_corrupt(id_from_sql(principal, key), &format!("{principal:?} {key:?}"));
    }
}

#[test]
fn conversions_are_checked() {
    // Goal: negative or oversized integers are refused instead of wrapping.
    is_corrupt(time_from_sql("t", -1), "time -1");
    assert_eq!(time_from_sql("t", i64::MAX).unwrap(), Timestamp::from_unix_ms(i64::MAX.unsigned_abs()));
    assert_eq!(time_to_sql(Timestamp::from_unix_ms(u64::MAX)), i64::MAX);
    assert_eq!(time_to_sql(Timestamp::EPOCH.saturating_add(Duration::from_millis(7))), 7);
    is_corrupt(fence_from_sql("f", 0), "fence 0");
    is_corrupt(fence_from_sql("f", -3), "fence -3");
    assert_eq!(fence_from_sql("f", 7).unwrap(), Fence::new(7));
    is_corrupt(fence_to_sql(Fence::new(u64::MAX)), "fence u64::MAX");
    is_corrupt(count_from_sql("c", -1), "count -1");
    is_corrupt(count_to_sql("c", u64::MAX), "count u64::MAX");
    assert_eq!(count_to_sql("c", 12).unwrap(), 12);
}
