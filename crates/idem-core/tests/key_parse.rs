//! `Key::parse` on arbitrary input: it never panics, and it accepts exactly what SPEC
//! allows, checked against an oracle written from RFC 9651's sf-string grammar (not sfv).

use idem_core::{KEY_CHARS_MAX, Key};
use proptest::prelude::*;

/// SPEC: 1..=255 characters in 0x21..=0x7E, sent bare or as an sf-string
/// (`DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE`, unescaped = %x20-21 / %x23-5B / %x5D-7E).
fn oracle(value: &[u8]) -> Option<String> {
    let content = if value.first() == Some(&b'"') { unquote(value)? } else { value.to_vec() };
    let allowed = (1..=KEY_CHARS_MAX).contains(&content.len()) && content.iter().all(|b| (0x21..=0x7E).contains(b));
    allowed.then(|| String::from_utf8(content).expect("visible ASCII"))
}

fn unquote(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        match *value.get(i)? {
            b'"' => return (i == value.len() - 1).then_some(out),
            b'\\' => {
                let escaped = *value.get(i + 1)?;
                if escaped != b'"' && escaped != b'\\' {
                    return None;
                }
                out.push(escaped);
                i += 2;
            }
            byte @ 0x20..=0x7E => {
                out.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
}

fn sf_quote(chars: &str) -> String {
    let escaped: String =
        chars.chars().flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect();
    format!("\"{escaped}\"")
}

/// Inputs near the boundary: quotes, backslashes, spaces, controls and visible characters,
/// often wrapped in quotes, with lengths around the limits.
fn near_keys() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x21u8..=0x7E,
        1 => Just(b'"'),
        1 => Just(b'\\'),
        1 => Just(b' '),
        1 => prop_oneof![0u8..0x20, 0x7Fu8..=0xFF],
    ];
    (prop::collection::vec(byte, 0..300), any::<bool>()).prop_map(|(mut bytes, quoted)| {
        if quoted {
            bytes.insert(0, b'"');
            bytes.push(b'"');
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_match_the_oracle(value in prop::collection::vec(any::<u8>(), 0..600)) {
        // Goal: no input panics; acceptance is exactly SPEC's rule.
        let parsed = Key::parse(&value);
        let expected = oracle(&value);
        prop_assert_eq!(parsed.as_ref().ok().map(Key::as_str), expected.as_deref(), "{:?}", parsed);
    }

    #[test]
    fn near_keys_match_the_oracle(value in near_keys()) {
        // Goal: the boundary cases (escapes, spaces, lengths 254..=256) agree with the oracle.
        let parsed = Key::parse(&value);
        let expected = oracle(&value);
        prop_assert_eq!(parsed.as_ref().ok().map(Key::as_str), expected.as_deref(), "{:?}", parsed);
    }

    #[test]
    fn bare_and_quoted_spellings_give_one_key(chars in "[!-~]{1,255}") {
        // Goal: every valid key parses from both spellings to the same key, and round-trips.
        let quoted = sf_quote(&chars);
        let from_quoted = Key::parse(quoted.as_bytes()).expect("a quoted valid key parses");
        prop_assert_eq!(from_quoted.as_str(), chars.as_str());
        if !chars.starts_with('"') {
            prop_assert_eq!(Key::parse(chars.as_bytes()).expect("a bare valid key parses"), from_quoted.clone());
        }
        prop_assert_eq!(Key::parse(from_quoted.to_sf_string().as_bytes()).expect("round trip"), from_quoted);
    }
}
