//! The checker's own oracles: who a caller is, what a request asks for, whether it is
//! valid, and which payment an answer or a list item names, all read from the bytes the
//! clients sent and received. Nothing here calls idem-server, idem-http or idem-core code:
//! a bug there cannot hide itself by agreeing with its own oracle (issue 19, item 4).

use serde::Deserialize;
use serde_json::value::RawValue;

/// A caller as the checker tells callers apart: the bearer token, compared exactly (RFC
/// 6750 tokens are case-sensitive), whatever the spelling of the scheme (RFC 9110 §11.1:
/// auth schemes are case-insensitive). `None` for anything but `Bearer <token>`.
pub(crate) fn caller_of(auth: &str) -> Option<String> {
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// What a payment asks for: amount in cents, currency, destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Asked {
    pub(crate) amount_minor: u64,
    pub(crate) currency: String,
    pub(crate) destination: String,
}

/// `POST /payments` as the clients write it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestWire<'a> {
    #[serde(borrow)]
    amount: &'a RawValue,
    currency: String,
    destination: String,
}

/// A payment as the API answers it (201 bodies, list items); other fields are not compared.
#[derive(Deserialize)]
struct PaymentWire<'a> {
    payment_id: String,
    #[serde(borrow)]
    amount: &'a RawValue,
    currency: String,
    destination: String,
}

/// The cents of an amount written as the clients write it: digits, optionally a dot and
/// one or two digits. Other forms of JSON numbers are not sent, so not read.
fn cents(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 12 || fraction.len() > 2 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let fraction: u64 = format!("{fraction:0<2}").parse().ok()?;
    whole.parse::<u64>().ok()?.checked_mul(100)?.checked_add(fraction)
}

/// What a request body asks for, if it has the shape of a payment request.
pub(crate) fn asked(body: &[u8]) -> Option<Asked> {
    let wire: RequestWire<'_> = serde_json::from_slice(body).ok()?;
    let amount_minor = cents(wire.amount.get())?;
    Some(Asked { amount_minor, currency: wire.currency, destination: wire.destination })
}

/// Whether the API must accept this payment request (SPEC: a 400 only for an invalid one):
/// a positive amount of at most 1,000,000,000.00 with at most two decimals, a currency of
/// three upper-case letters, a destination of 1 to 255 characters without control characters.
pub(crate) fn is_valid(asked: &Asked) -> bool {
    let chars = asked.destination.chars().count();
    (1..=100_000_000_000).contains(&asked.amount_minor)
        && asked.currency.len() == 3
        && asked.currency.bytes().all(|b| b.is_ascii_uppercase())
        && (1..=255).contains(&chars)
        && !asked.destination.chars().any(char::is_control)
}

/// The payment a 201 body or a list item names, and what it says was asked.
pub(crate) fn payment_of(body: &[u8]) -> Option<(String, Asked)> {
    let wire: PaymentWire<'_> = serde_json::from_slice(body).ok()?;
    let amount_minor = cents(wire.amount.get())?;
    Some((wire.payment_id, Asked { amount_minor, currency: wire.currency, destination: wire.destination }))
}

/// Whether an answer's body is the problem SPEC promises the retries of a request whose
/// response was too long to record ("HTTP behaviour"): its `type` is the
/// `response-not-kept` section of docs/problems.md.
pub(crate) fn is_not_kept(body: &[u8]) -> bool {
    problem_type(body).is_some_and(|kind| kind.ends_with("#response-not-kept"))
}

/// Whether an answer's body is the problem SPEC promises a key whose record left only its
/// tombstone ("Key lifecycle"): its `type` is the `key-expired` section of docs/problems.md.
pub(crate) fn is_key_expired(body: &[u8]) -> bool {
    problem_type(body).is_some_and(|kind| kind.ends_with("#key-expired"))
}

fn problem_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ProblemWire {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<ProblemWire>(body).ok().map(|problem| problem.kind)
}

/// The payment id a `Location` names (`/payments/{id}`).
pub(crate) fn payment_at(location: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(location).ok()?.strip_prefix("/payments/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_tokens_compared_exactly_whatever_the_scheme_spelling() {
        // Goal: the scheme's case does not matter, the token's does, and other schemes are no caller.
        assert_eq!(caller_of("Bearer alice").as_deref(), Some("alice"));
        assert_eq!(caller_of("bEaReR alice"), caller_of("Bearer alice"));
        assert_ne!(caller_of("Bearer Alice"), caller_of("Bearer alice"));
        assert_eq!(caller_of("Basic YTpi"), None);
        assert_eq!(caller_of("Bearer "), None);
    }

    #[test]
    fn amounts_and_validity_are_read_from_the_bytes_sent() {
        // Goal: cents are exact, and a lower-case currency or a zero amount is invalid.
        let ok = asked(br#"{"amount":12.05,"currency":"USD","destination":"m"}"#).expect("a payment");
        assert_eq!(ok.amount_minor, 1205);
        assert!(is_valid(&ok));
        let lower = asked(br#"{"amount":1.00,"currency":"usd","destination":"m"}"#).expect("a payment");
        assert!(!is_valid(&lower));
        let zero = asked(br#"{"amount":0.00,"currency":"USD","destination":"m"}"#).expect("a payment");
        assert!(!is_valid(&zero));
        assert_eq!(asked(br#"{"amount":1.234,"currency":"USD","destination":"m"}"#), None);
    }

    #[test]
    fn a_response_not_kept_problem_and_the_payment_it_locates_are_read_from_the_answer() {
        // Goal: only a problem whose type is response-not-kept counts, and only a payments
        // path names a payment.
        assert!(is_not_kept(br#"{"type":"https://x.example/problems.md#response-not-kept","status":201}"#));
        assert!(!is_not_kept(br#"{"type":"https://x.example/problems.md#key-reused"}"#));
        assert!(!is_not_kept(br#"{"payment_id":"pay_1"}"#));
        assert!(is_key_expired(br#"{"type":"/problems#key-expired","status":410}"#));
        assert!(!is_key_expired(br#"{"type":"/problems#key-reused","status":422}"#));
        assert_eq!(payment_at(b"/payments/pay_01ab").as_deref(), Some("pay_01ab"));
        assert_eq!(payment_at(b"/users/usr_1"), None);
        assert_eq!(payment_at(b"/payments/"), None);
    }
}
