//! A serde value as a recorded outcome (feature `json`).

use idem_core::{ContentType, StoredOutcome};

/// `value` as an `application/json` outcome.
///
/// # Errors
/// The value does not serialize.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<StoredOutcome, serde_json::Error> {
    let bytes = serde_json::to_vec(value)?;
    let content_type = ContentType::new("application/json").expect("a valid media type");
    Ok(StoredOutcome::new(content_type, bytes))
}
