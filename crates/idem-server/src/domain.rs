//! Payments and users: what a request may ask for (parsed and validated once), and what
//! the API answers.

use idem_core::{Principal, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::time::rfc3339_utc;

/// The largest amount accepted, in minor units (cents): 1,000,000,000.00.
pub const AMOUNT_MINOR_MAX: u64 = 100_000_000_000;
/// The most characters in a destination, a name or an email address.
pub const TEXT_CHARS_MAX: usize = 255;
/// The most digits an amount may be written with; longer is refused before any arithmetic.
const AMOUNT_DIGITS_MAX: usize = 30;

// The largest amount must fit every integer type it passes through (SQLite's i64, u128 maths).
const _: () = assert!(AMOUNT_MINOR_MAX < i64::MAX as u64);

/// Why a request body was refused (answered as a 400 problem; nothing is recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not JSON of the expected shape (syntax, a missing or unknown field, a wrong type).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The amount is not a JSON number.
    #[error("amount must be a JSON number, like 100.00")]
    AmountNotANumber,
    /// The amount is zero or negative.
    #[error("amount must be positive")]
    AmountNotPositive,
    /// The amount has more than two decimal places.
    #[error("amount must have at most 2 decimal places")]
    AmountTooPrecise,
    /// The amount is over [`AMOUNT_MINOR_MAX`].
    #[error("amount must be at most 1000000000.00")]
    AmountTooLarge,
    /// The currency is not three upper-case ASCII letters.
    #[error("currency must be three upper-case letters (ISO 4217), like USD")]
    BadCurrency,
    /// A text field is empty or longer than [`TEXT_CHARS_MAX`] characters.
    #[error("{field} must have 1 to {TEXT_CHARS_MAX} characters, it has {chars}")]
    BadLength {
        /// Which field.
        field: &'static str,
        /// How many characters it has.
        chars: usize,
    },
    /// The email address does not have exactly one `@` with text on both sides.
    #[error("email must contain exactly one '@' with text on both sides")]
    BadEmail,
    /// A text field holds a control character (U+0000-U+001F, U+007F-U+009F): line breaks,
    /// tabs, NUL and escapes have no place in a name, an address or a destination, and would
    /// reach logs and terminals that print the field.
    #[error("{field} must not contain control characters (found U+{code:04X})")]
    ControlCharacter {
        /// Which field.
        field: &'static str,
        /// The first one found.
        code: u32,
    },
}

/// An amount of money in minor units (cents), positive and at most [`AMOUNT_MINOR_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(u64);

impl Amount {
    /// Parses the text of a JSON number (`100`, `100.5`, `100.00`, `1e2`) exactly, without
    /// going through floating point.
    ///
    /// # Errors
    /// A [`ValidationError`] saying what is wrong with it.
    pub fn parse_json_number(text: &str) -> Result<Amount, ValidationError> {
        let text = text.trim();
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => {
                let exponent = parse_exponent(&unsigned[at + 1..]).ok_or(ValidationError::AmountNotANumber)?;
                (&unsigned[..at], exponent)
            }
            None => (unsigned, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(ValidationError::AmountNotANumber);
        }
        // value = digits * 10^(exponent - fraction.len()); leading zeros carry nothing.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Err(ValidationError::AmountNotPositive);
        }
        if negative {
            return Err(ValidationError::AmountNotPositive);
        }
        // Trailing zeros move into the exponent, so `100.000` counts as `100`.
        let significant = digits.trim_end_matches('0');
        // Saturating: an exponent that big or small is out of range either way.
        let scale = exponent
            .saturating_sub(i64::try_from(fraction.len()).unwrap_or(i64::MAX))
            .saturating_add(i64::try_from(digits.len() - significant.len()).unwrap_or(i64::MAX));
        // In cents: significant * 10^(scale + 2).
        let cents_exponent = scale.saturating_add(2);
        if cents_exponent < 0 {
            return Err(ValidationError::AmountTooPrecise);
        }
        if significant.len() > AMOUNT_DIGITS_MAX || cents_exponent > 20 {
            return Err(ValidationError::AmountTooLarge);
        }
        let significant: u128 = significant.parse().map_err(|_| ValidationError::AmountTooLarge)?;
        let power = 10u128.checked_pow(u32::try_from(cents_exponent).unwrap_or(u32::MAX));
        let cents = power.and_then(|power| significant.checked_mul(power)).ok_or(ValidationError::AmountTooLarge)?;
        match u64::try_from(cents) {
            Ok(cents) if cents <= AMOUNT_MINOR_MAX => Ok(Amount(cents)),
            _ => Err(ValidationError::AmountTooLarge),
        }
    }

    /// An amount of `minor` cents, if it is positive and at most [`AMOUNT_MINOR_MAX`].
    #[must_use]
    pub fn from_minor(minor: u64) -> Option<Amount> {
        (1..=AMOUNT_MINOR_MAX).contains(&minor).then_some(Amount(minor))
    }

    /// The amount in minor units (cents).
    #[must_use]
    pub fn minor(self) -> u64 {
        self.0
    }

    /// The amount as a JSON number with exactly two decimals, e.g. `100.00`.
    #[must_use]
    pub fn to_json_text(self) -> String {
        format!("{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// The body of `POST /payments`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// How much.
    pub amount: Amount,
    /// Three upper-case letters.
    pub currency: String,
    /// Who receives it: 1 to 255 characters.
    pub destination: String,
}

/// `POST /payments` as sent; the amount stays text until [`Amount::parse_json_number`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentWire<'a> {
    #[serde(borrow)]
    amount: &'a RawValue,
    currency: String,
    destination: String,
}

impl NewPayment {
    /// Parses and validates a request body.
    ///
    /// # Errors
    /// The first [`ValidationError`] found.
    pub fn parse(body: &[u8]) -> Result<NewPayment, ValidationError> {
        let wire: PaymentWire<'_> = parse_json(body)?;
        let amount_text = wire.amount.get().trim();
        if !amount_text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(ValidationError::AmountNotANumber);
        }
        let amount = Amount::parse_json_number(amount_text)?;
        let currency_ok = wire.currency.len() == 3 && wire.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return Err(ValidationError::BadCurrency);
        }
        check_length("destination", &wire.destination)?;
        Ok(NewPayment { amount, currency: wire.currency, destination: wire.destination })
    }
}

/// The body of `POST /users`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 255 characters.
    pub name: String,
    /// Exactly one `@`, text on both sides, at most 255 characters.
    pub email: String,
}

impl NewUser {
    /// Parses and validates a request body.
    ///
    /// # Errors
    /// The first [`ValidationError`] found.
    pub fn parse(body: &[u8]) -> Result<NewUser, ValidationError> {
        let user: NewUser = parse_json(body)?;
        check_length("name", &user.name)?;
        check_length("email", &user.email)?;
        match user.email.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(user),
            _ => Err(ValidationError::BadEmail),
        }
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ValidationError> {
    serde_json::from_slice(body).map_err(|error| ValidationError::MalformedJson(error.to_string()))
}

/// A text field: 1 to [`TEXT_CHARS_MAX`] characters, none of them a control character.
fn check_length(field: &'static str, text: &str) -> Result<(), ValidationError> {
    let chars = text.chars().count();
    if !(1..=TEXT_CHARS_MAX).contains(&chars) {
        return Err(ValidationError::BadLength { field, chars });
    }
    match text.chars().find(|c| c.is_control()) {
        Some(control) => Err(ValidationError::ControlCharacter { field, code: u32::from(control) }),
        None => Ok(()),
    }
}

/// The state of a payment. The demo never moves a payment on from `PENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Accepted, not yet settled.
    Pending,
}

impl PaymentStatus {
    /// The name the API and the database use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
        }
    }

    /// The status named `name`, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<PaymentStatus> {
        (name == "PENDING").then_some(PaymentStatus::Pending)
    }
}

/// A payment as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// `pay_` and 24 hex digits.
    pub payment_id: String,
    /// Whose payment it is.
    pub principal: Principal,
    /// What was asked for.
    pub request: NewPayment,
    /// Where it stands.
    pub status: PaymentStatus,
    /// When it was created, on the app's clock.
    pub created_at: Timestamp,
}

/// A user as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `usr_` and 24 hex digits.
    pub user_id: String,
    /// Who created it.
    pub principal: Principal,
    /// What was asked for.
    pub request: NewUser,
    /// When it was created, on the app's clock.
    pub created_at: Timestamp,
}

#[derive(Serialize)]
struct PaymentJson<'a> {
    payment_id: &'a str,
    amount: &'a RawValue,
    currency: &'a str,
    destination: &'a str,
    status: &'static str,
    created_at: String,
}

impl Payment {
    /// The JSON text the API answers for this payment.
    #[must_use]
    pub fn to_json_text(&self) -> String {
        let amount = RawValue::from_string(self.request.amount.to_json_text())
            .expect("digits, a dot and two digits are a JSON number");
        let json = PaymentJson {
            payment_id: &self.payment_id,
            amount: &amount,
            currency: &self.request.currency,
            destination: &self.request.destination,
            status: self.status.as_str(),
            created_at: rfc3339_utc(self.created_at),
        };
        serde_json::to_string(&json).expect("strings and a raw number serialise")
    }
}

impl User {
    /// The JSON text the API answers for this user.
    #[must_use]
    pub fn to_json_text(&self) -> String {
        serde_json::json!({
            "user_id": self.user_id,
            "name": self.request.name,
            "email": self.request.email,
            "created_at": rfc3339_utc(self.created_at),
        })
        .to_string()
    }
}

/// A JSON number's exponent (`+5`, `-3`, `12`), saturated to `i64`'s range: a client may
/// send any number of exponent digits, and `1e-99999999999999999999` is still a number
/// (far too precise), not an error to panic or wrap on.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude =
        digits.bytes().fold(0i64, |value, digit| value.saturating_mul(10).saturating_add(i64::from(digit - b'0')));
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cents(text: &str) -> Result<u64, ValidationError> {
        Amount::parse_json_number(text).map(Amount::minor)
    }

    #[test]
    fn amounts_are_read_exactly_in_cents() {
        // Goal: every JSON spelling of an amount with at most two decimals gives its exact cents.
        assert_eq!(cents("100.00"), Ok(10_000));
        assert_eq!(cents("100"), Ok(10_000));
        assert_eq!(cents("0.01"), Ok(1));
        assert_eq!(cents("19.9"), Ok(1_990));
        assert_eq!(cents("100.000"), Ok(10_000), "trailing zeros are not decimal places");
        assert_eq!(cents("1e2"), Ok(10_000));
        assert_eq!(cents("1.5E+1"), Ok(1_500));
        assert_eq!(cents("12345e-2"), Ok(12_345));
        assert_eq!(cents("1000000000.00"), Ok(AMOUNT_MINOR_MAX));
    }

    #[test]
    fn bad_amounts_say_what_is_wrong() {
        // Goal: zero, negative, too precise and too large amounts are each refused with their own error.
        assert_eq!(cents("0"), Err(ValidationError::AmountNotPositive));
        assert_eq!(cents("0.00"), Err(ValidationError::AmountNotPositive));
        assert_eq!(cents("-5.00"), Err(ValidationError::AmountNotPositive));
        assert_eq!(cents("0.001"), Err(ValidationError::AmountTooPrecise));
        assert_eq!(cents("1.00000000000000001"), Err(ValidationError::AmountTooPrecise));
        assert_eq!(cents("1e-3"), Err(ValidationError::AmountTooPrecise));
        assert_eq!(cents("1000000000.01"), Err(ValidationError::AmountTooLarge));
        assert_eq!(cents("1e400"), Err(ValidationError::AmountTooLarge));
        assert_eq!(cents("1e-99999999999999999999"), Err(ValidationError::AmountTooPrecise));
        assert_eq!(cents("1.5e-9223372036854775808"), Err(ValidationError::AmountTooPrecise));
        assert_eq!(cents("10e9223372036854775807"), Err(ValidationError::AmountTooLarge));
        assert_eq!(cents("1e99999999999999999999999"), Err(ValidationError::AmountTooLarge));
        assert_eq!(cents("0e99999999999999999999999"), Err(ValidationError::AmountNotPositive));
        assert_eq!(cents("1e"), Err(ValidationError::AmountNotANumber));
        assert_eq!(cents("1e+-2"), Err(ValidationError::AmountNotANumber));
        assert_eq!(cents(&"9".repeat(100)), Err(ValidationError::AmountTooLarge));
    }

    #[test]
    fn amounts_are_written_with_two_decimals() {
        // Goal: the answer shows the amount as the article does, `100.00`.
        assert_eq!(Amount::parse_json_number("100").map(Amount::to_json_text), Ok("100.00".to_owned()));
        assert_eq!(Amount::parse_json_number("0.5").map(Amount::to_json_text), Ok("0.50".to_owned()));
    }

    #[test]
    fn payment_bodies_are_validated_field_by_field() {
        // Goal: each rule of the issue is enforced, and a valid body passes untouched.
        let ok = NewPayment::parse(br#"{"amount": 100.00, "currency": "USD", "destination": "merchant-id-xyz"}"#);
        assert_eq!(
            ok.map(|p| (p.amount.minor(), p.currency, p.destination)),
            Ok((10_000, "USD".into(), "merchant-id-xyz".into()))
        );
        let bad = |body: &str| NewPayment::parse(body.as_bytes()).expect_err("invalid body");
        assert_eq!(
            bad(r#"{"amount": "100.00", "currency": "USD", "destination": "m"}"#),
            ValidationError::AmountNotANumber
        );
        assert_eq!(bad(r#"{"amount": 1, "currency": "usd", "destination": "m"}"#), ValidationError::BadCurrency);
        assert_eq!(bad(r#"{"amount": 1, "currency": "USDX", "destination": "m"}"#), ValidationError::BadCurrency);
        assert_eq!(
            bad(r#"{"amount": 1, "currency": "USD", "destination": ""}"#),
            ValidationError::BadLength { field: "destination", chars: 0 }
        );
        let long = format!(r#"{{"amount": 1, "currency": "USD", "destination": "{}"}}"#, "é".repeat(256));
        assert_eq!(bad(&long), ValidationError::BadLength { field: "destination", chars: 256 });
        assert!(matches!(
            bad(r#"{"amount": 1, "currency": "USD", "destination": "m", "x": 1}"#),
            ValidationError::MalformedJson(_)
        ));
        assert!(matches!(bad(r#"{"amount": 1, "currency": "USD"}"#), ValidationError::MalformedJson(_)));
        assert!(matches!(bad(r#"{"amount": 1,"#), ValidationError::MalformedJson(_)));
    }

    #[test]
    fn user_bodies_are_validated_field_by_field() {
        // Goal: names need 1..=255 characters and emails exactly one '@' with text around it.
        assert!(NewUser::parse(br#"{"name": "Alice", "email": "alice@example.com"}"#).is_ok());
        let bad = |body: &str| NewUser::parse(body.as_bytes()).expect_err("invalid body");
        assert_eq!(bad(r#"{"name": "", "email": "a@b"}"#), ValidationError::BadLength { field: "name", chars: 0 });
        assert_eq!(bad(r#"{"name": "A", "email": "ab"}"#), ValidationError::BadEmail);
        assert_eq!(bad(r#"{"name": "A", "email": "a@b@c"}"#), ValidationError::BadEmail);
        assert_eq!(bad(r#"{"name": "A", "email": "@b"}"#), ValidationError::BadEmail);
        assert!(matches!(bad(r#"{"name": "A", "email": "a@b", "admin": true}"#), ValidationError::MalformedJson(_)));
    }

    #[test]
    fn text_fields_refuse_control_characters() {
        // Goal: a line break, NUL or escape in a name, email or destination is refused and
        // named; other non-ASCII text is fine.
        let user = |name: &str| NewUser::parse(format!(r#"{{"name": "{name}", "email": "a@b"}}"#).as_bytes());
        assert_eq!(
            user("A\\nB").expect_err("newline"),
            ValidationError::ControlCharacter { field: "name", code: 0x0A }
        );
        assert_eq!(user("A\\u0000").expect_err("NUL"), ValidationError::ControlCharacter { field: "name", code: 0 });
        assert_eq!(
            user("A\\u009b").expect_err("C1 CSI"),
            ValidationError::ControlCharacter { field: "name", code: 0x9B }
        );
        assert!(user("Zoë Ådahl 山田").is_ok());
        let email = NewUser::parse(br#"{"name": "A", "email": "a@b\u001b[31m"}"#).expect_err("escape");
        assert_eq!(email, ValidationError::ControlCharacter { field: "email", code: 0x1B });
        let payment = NewPayment::parse(br#"{"amount": 1, "currency": "USD", "destination": "m\tx"}"#);
        assert_eq!(payment.expect_err("tab"), ValidationError::ControlCharacter { field: "destination", code: 9 });
    }

    #[test]
    fn payment_json_has_the_article_shape() {
        // Goal: the answer's fields, order and amount spelling match the issue's example.
        let payment = Payment {
            payment_id: "pay_1".into(),
            principal: Principal::anonymous(),
            request: NewPayment::parse(br#"{"amount": 100.00, "currency": "USD", "destination": "m"}"#).expect("valid"),
            status: PaymentStatus::Pending,
            created_at: Timestamp::from_unix_ms(1_700_000_000_123),
        };
        assert_eq!(
            payment.to_json_text(),
            r#"{"payment_id":"pay_1","amount":100.00,"currency":"USD","destination":"m","status":"PENDING","created_at":"2023-11-14T22:13:20.123Z"}"#
        );
    }
}
