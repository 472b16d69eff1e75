//! The small value types: what they print in logs and traces, what they cost in a store,
//! and the defaults they carry. (Each test here was added for a mutant that
//! `scripts/mutants.sh` found no test would catch; see docs/verification.md.)

use std::time::Duration;

use idem_core::{
    Fence, Fingerprint, Key, LEASE_DEFAULT, Policy, Principal, RENEWALS_PER_LEASE, RecordId, StoredResponse, Timestamp,
};

#[test]
fn debug_output_names_each_value() {
    // Goal: logs and model traces show fences, times, keys and principals readably.
    assert_eq!(format!("{:?}", Fence::new(3)), "f3");
    assert_eq!(format!("{:?}", Timestamp::from_unix_ms(1500)), "t=1500ms");
    assert_eq!(format!("{:?}", Key::parse(b"k1").expect("valid")), "Key(\"k1\")");
    assert_eq!(format!("{:?}", Principal::new("alice").expect("valid")), "Principal(\"alice\")");
    assert_eq!(format!("{:?}", Principal::anonymous()), "Principal(anonymous)");
    assert_eq!(format!("{:?}", Fingerprint::builder("POST", "/")), "FingerprintBuilder");
    assert_eq!(Key::parse(b"\"k1\"").expect("valid").to_string(), "k1", "Display is the key itself");
    let fingerprint = format!("{:?}", Fingerprint::of("POST", "/", b""));
    assert!(fingerprint.starts_with("Fingerprint(v1 ") && fingerprint.ends_with("…)"), "{fingerprint}");
    let hex = &fingerprint["Fingerprint(v1 ".len()..fingerprint.len() - "…)".len()];
    assert_eq!(hex.len(), 16, "eight bytes in hex: {fingerprint}");
    assert!(hex.bytes().all(|byte| byte.is_ascii_hexdigit()), "{fingerprint}");
    assert_ne!(fingerprint, format!("{:?}", Fingerprint::of("POST", "/", b"x")));
}

#[test]
fn principals_know_their_name_and_whether_anonymous() {
    // Goal: a named principal keeps its name and is not anonymous; the anonymous one is empty.
    let alice = Principal::new("alice").expect("valid");
    assert_eq!(alice.as_str(), "alice");
    assert!(!alice.is_anonymous());
    assert!(Principal::anonymous().is_anonymous());
    assert_eq!(Principal::anonymous().as_str(), "");
}

#[test]
fn stored_bytes_count_every_byte_of_ids_and_responses() {
    // Goal: size limits count the id's and the response's bytes exactly (sums, not products).
    let id = RecordId::new(Principal::new("alice").expect("valid"), Key::parse(b"key-1").expect("valid"));
    assert_eq!(id.stored_bytes(), 5 + 5);
    let response = StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), "text/plain".into()), ("x-a".to_owned(), "b".into())],
        body: vec![0u8; 7].into(),
    };
    assert_eq!(response.stored_bytes(), (12 + 10) + (3 + 1) + 7);
}

#[test]
fn default_policy_is_a_short_renewed_lease_and_a_day_of_retention() {
    // Goal: SPEC's defaults: 24 h retention; a 10 s lease renewed every third of it.
    assert_eq!(Policy::DEFAULT.retention(), Duration::from_secs(86_400));
    assert_eq!(Policy::DEFAULT.lease(), LEASE_DEFAULT);
    assert_eq!(LEASE_DEFAULT, Duration::from_secs(10));
    assert_eq!(RENEWALS_PER_LEASE, 3);
    let policy = Policy::new(Duration::from_secs(9), Duration::from_secs(60)).expect("valid");
    assert_eq!(policy.renew_every(), Duration::from_secs(3));
}

#[test]
fn a_quoted_key_at_the_header_limit_still_parses() {
    // Goal: the 512-byte header bound is inclusive: 255 escaped backslashes in quotes are
    // 512 bytes on the wire and a valid 255-character key.
    let mut value = b"\"".to_vec();
    value.extend(std::iter::repeat_n(b"\\\\".as_slice(), 255).flatten());
    value.push(b'"');
    assert_eq!(value.len(), 512);
    let key = Key::parse(&value).expect("255 characters once unescaped");
    assert_eq!(key.as_str(), "\\".repeat(255));
    value.insert(1, b'a');
    // Refused unread: the error counts header bytes, not the 256 characters inside.
    assert_eq!(Key::parse(&value), Err(idem_core::KeyError::TooLong { chars: 513 }));
}
