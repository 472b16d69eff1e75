//! Semantic fingerprints (SPEC "Key lifecycle", opt-in per layer or route): what counts
//! as "the same request" is what it means, not its bytes.
//!
//! [`FingerprintRules::Semantic`] fingerprints (idem-core's
//! [`Fingerprint::semantic`], version 2):
//!
//! * the method and the path, as sent;
//! * the query parameters, percent-decoded (`application/x-www-form-urlencoded` rules),
//!   in canonical order: stably sorted by name, so `?b=2&a=1` is `?a=1&b=2` while the
//!   order of repeated names (`?tag=x&tag=y`, often a list) still counts;
//! * the chosen request headers ([`SemanticRules::header`], e.g. `Content-Type`), by
//!   lower-case name, their bytes as sent; an absent header is left out;
//! * a body that parses as JSON, canonicalised by RFC 8785 (the JSON Canonicalization
//!   Scheme: members sorted, no insignificant whitespace, numbers in their shortest form,
//!   by the `serde_json_canonicalizer` crate), without the ignored fields
//!   ([`SemanticRules::ignore`], RFC 6901 JSON pointers, nested at any depth); any other
//!   body (not JSON, or empty), byte for byte.
//!
//! So re-spaced or reordered JSON replays, and an ignored field (a client timestamp, a
//! trace id in the body) never changes the outcome; any change to a covered field is a
//! different request: 422 `key-reused`.
//!
//! The layer also computes the byte fingerprint (version 1) and sends it as the claim's
//! earlier fingerprint ([`idem_core::ClaimRequest::earlier`]), so records written before
//! a route turned semantic fingerprints on still match their retries (a byte-identical
//! retry replays; a re-spaced one is 422, as before the change).
//!
//! The earlier fingerprint is always the byte one, so it bridges that one change only.
//! Changing a semantic route's rules (another ignored field, another header), or turning
//! them off again, makes every retry of a record written under the old rules a different
//! request, byte-identical or not: 422 `key-reused` until the record expires. Change the
//! rules when the route's records have expired (its retention after the last request
//! under the old rules), or on a new route.

use http::HeaderName;
use http::request::Parts;
use idem_core::{ClaimRequest, Fingerprint, SemanticParts};

/// The most ignored fields one route declares.
pub const IGNORED_FIELDS_MAX: usize = 64;
/// The most headers one route's fingerprint covers.
pub const HEADERS_MAX: usize = 16;

/// How a route fingerprints its requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FingerprintRules {
    /// Method, path with query, and body bytes, as sent (version 1, the default).
    #[default]
    Bytes,
    /// What the request means (version 2): see the module docs.
    Semantic(SemanticRules),
}

/// Why a [`SemanticRules`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SemanticRulesError {
    /// An ignored field is not an RFC 6901 JSON pointer (`""` or starting with `/`), or
    /// points at the whole body.
    #[error("ignored field {0:?} is not a JSON pointer to a member or element (RFC 6901: \"/a/b\")")]
    NotAPointer(String),
    /// More than [`IGNORED_FIELDS_MAX`] ignored fields or [`HEADERS_MAX`] headers.
    #[error("at most {IGNORED_FIELDS_MAX} ignored fields and {HEADERS_MAX} headers")]
    TooMany,
}

/// The rules of a semantic fingerprint: which JSON fields it ignores and which headers it covers.
///
/// ```
/// use idem_http::SemanticRules;
///
/// let rules = SemanticRules::new()
///     .ignore("/client_sent_at")?
///     .ignore("/metadata/trace")?
///     .header(http::header::CONTENT_TYPE)?;
/// # Ok::<(), idem_http::SemanticRulesError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SemanticRules {
    ignored: Vec<String>,
    headers: Vec<HeaderName>,
}

impl SemanticRules {
    /// Canonical JSON and query order, no ignored field, no header.
    #[must_use]
    pub fn new() -> SemanticRules {
        SemanticRules::default()
    }

    /// Also ignores the JSON field at `pointer` (RFC 6901, e.g. `/metadata/trace` or
    /// `/items/0/note`). A pointer that matches nothing in a body is no error.
    ///
    /// # Errors
    /// [`SemanticRulesError`] for a pointer that is not one, or one too many.
    pub fn ignore(mut self, pointer: &str) -> Result<SemanticRules, SemanticRulesError> {
        if !pointer.starts_with('/') {
            return Err(SemanticRulesError::NotAPointer(pointer.to_owned()));
        }
        if self.ignored.len() == IGNORED_FIELDS_MAX {
            return Err(SemanticRulesError::TooMany);
        }
        self.ignored.push(pointer.to_owned());
        Ok(self)
    }

    /// Also covers the request header `name` (its bytes as sent, every value in order).
    ///
    /// # Errors
    /// [`SemanticRulesError::TooMany`] past [`HEADERS_MAX`].
    pub fn header(mut self, name: HeaderName) -> Result<SemanticRules, SemanticRulesError> {
        if self.headers.len() == HEADERS_MAX {
            return Err(SemanticRulesError::TooMany);
        }
        if !self.headers.contains(&name) {
            self.headers.push(name);
            self.headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        }
        Ok(self)
    }

    /// The semantic fingerprint of a request with head `parts` and whole `body`.
    #[must_use]
    pub fn fingerprint(&self, parts: &Parts, body: &[u8]) -> Fingerprint {
        let query = canonical_query(parts.uri.query().unwrap_or(""));
        let headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .flat_map(|name| {
                parts.headers.get_all(name).iter().map(|value| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            })
            .collect();
        let canonical = self.canonical_body(body);
        let body = canonical.as_deref().unwrap_or(body);
        Fingerprint::semantic(&SemanticParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: &query,
            headers: &headers,
            body,
        })
    }

    /// The body as RFC 8785 JSON without the ignored fields, or `None` if it is not JSON.
    fn canonical_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        for pointer in &self.ignored {
            remove(&mut value, pointer);
        }
        serde_json_canonicalizer::to_vec(&value).ok()
    }
}

impl FingerprintRules {
    /// What a claim for a request with head `parts` and whole `body` sends: under
    /// [`FingerprintRules::Bytes`] the byte fingerprint `bytes`; under semantic rules the
    /// semantic fingerprint, with `bytes` as its earlier one.
    #[must_use]
    pub fn claim_request(&self, parts: &Parts, body: &[u8], bytes: Fingerprint) -> ClaimRequest {
        match self {
            FingerprintRules::Bytes => ClaimRequest::new(bytes),
            FingerprintRules::Semantic(rules) => {
                ClaimRequest { earlier: Some(bytes), ..ClaimRequest::new(rules.fingerprint(parts, body)) }
            }
        }
    }
}

/// Query parameters, decoded, stably sorted by name.
fn canonical_query(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// Removes what `pointer` (RFC 6901) points at, if anything.
fn remove(value: &mut serde_json::Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(serde_json::Value::Object(members)) => {
            members.remove(&last);
        }
        Some(serde_json::Value::Array(elements)) => {
            if let Ok(index) = last.parse::<usize>()
                && index < elements.len()
            {
                elements.remove(index);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(uri: &str, content_type: Option<&str>) -> Parts {
        let mut request = http::Request::post(uri);
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        request.body(()).expect("a valid request").into_parts().0
    }

    fn rules() -> SemanticRules {
        SemanticRules::new().ignore("/sent_at").and_then(|rules| rules.ignore("/meta/trace")).expect("valid pointers")
    }

    fn of(rules: &SemanticRules, uri: &str, body: &str) -> Fingerprint {
        rules.fingerprint(&parts(uri, Some("application/json")), body.as_bytes())
    }

    #[test]
    fn respaced_and_reordered_json_and_query_fingerprint_alike() {
        // Goal: the examples of the module docs: whitespace, member order, number spelling
        // and query order do not count; repeated names keep their order.
        let rules = SemanticRules::new();
        let base = of(&rules, "/p?a=1&b=2", r#"{"amount":100,"currency":"EUR"}"#);
        assert_eq!(base, of(&rules, "/p?b=2&a=1", "{ \"currency\" : \"EUR\",\n \"amount\": 1.0e2 }"));
        assert_ne!(base, of(&rules, "/p?a=1&b=3", r#"{"amount":100,"currency":"EUR"}"#));
        assert_ne!(of(&rules, "/p?t=x&t=y", "{}"), of(&rules, "/p?t=y&t=x", "{}"));
        assert_eq!(base.version(), idem_core::FingerprintVersion::Semantic);
    }

    #[test]
    fn ignored_fields_are_ignored_at_any_depth_and_covered_ones_count() {
        // Goal: an ignored member (top level, nested) never changes the fingerprint; a covered one does.
        let rules = rules();
        let base = of(&rules, "/p", r#"{"amount":1,"sent_at":"09:00","meta":{"trace":"a","tag":"x"}}"#);
        assert_eq!(base, of(&rules, "/p", r#"{"amount":1,"sent_at":"10:00","meta":{"trace":"b","tag":"x"}}"#));
        assert_eq!(base, of(&rules, "/p", r#"{"amount":1,"meta":{"tag":"x"}}"#));
        assert_ne!(base, of(&rules, "/p", r#"{"amount":1,"meta":{"trace":"a","tag":"y"}}"#));
    }

    #[test]
    fn chosen_headers_count_and_others_do_not() {
        // Goal: a covered header takes part; an uncovered one, or a rule set without it, does not.
        let with_type = SemanticRules::new().header(http::header::CONTENT_TYPE).expect("valid");
        let json = with_type.fingerprint(&parts("/p", Some("application/json")), b"{}");
        assert_ne!(json, with_type.fingerprint(&parts("/p", Some("text/plain")), b"{}"));
        assert_ne!(json, with_type.fingerprint(&parts("/p", None), b"{}"));
        let plain = SemanticRules::new();
        assert_eq!(plain.fingerprint(&parts("/p", Some("a/b")), b"{}"), plain.fingerprint(&parts("/p", None), b"{}"));
    }

    #[test]
    fn bad_rules_are_refused() {
        // Goal: a pointer must be RFC 6901 and the lists are bounded.
        assert!(matches!(SemanticRules::new().ignore("amount"), Err(SemanticRulesError::NotAPointer(_))));
        assert!(matches!(SemanticRules::new().ignore(""), Err(SemanticRulesError::NotAPointer(_))));
        let mut rules = SemanticRules::new();
        for n in 0..IGNORED_FIELDS_MAX {
            rules = rules.ignore(&format!("/f{n}")).expect("within the bound");
        }
        assert_eq!(rules.ignore("/one-more"), Err(SemanticRulesError::TooMany));
    }

    /// A JSON object of a few members, as text with random spacing and member order.
    fn spelled(members: &[(String, i64)], order: &[usize], spaces: &[bool]) -> String {
        let mut text = String::from("{");
        for (n, index) in order.iter().enumerate() {
            let (name, value) = &members[*index];
            let gap = if spaces[n % spaces.len()] { " \n " } else { "" };
            if n > 0 {
                text.push(',');
            }
            text.push_str(&format!("{gap}\"{name}\"{gap}:{gap}{value}{gap}"));
        }
        text.push('}');
        text
    }

    proptest! {
        #[test]
        fn any_spelling_of_the_same_json_fingerprints_alike(
            values in proptest::collection::vec(any::<i64>(), 1..6),
            seed in any::<u64>(),
            spaces in proptest::collection::vec(any::<bool>(), 1..4),
        ) {
            // Goal (property): reordering and re-spacing never change a semantic fingerprint.
            let members: Vec<(String, i64)> = values.iter().enumerate().map(|(n, v)| (format!("m{n}"), *v)).collect();
            let natural: Vec<usize> = (0..members.len()).collect();
            let mut shuffled = natural.clone();
            shuffled.rotate_left((seed as usize) % members.len());
            let rules = SemanticRules::new();
            prop_assert_eq!(
                of(&rules, "/p", &spelled(&members, &natural, &[false])),
                of(&rules, "/p", &spelled(&members, &shuffled, &spaces))
            );
        }

        #[test]
        fn a_changed_covered_field_changes_and_an_ignored_one_never_does(
            amount in any::<i64>(), other in any::<i64>(), sent_at in "[a-z0-9:]{0,12}", later in "[a-z0-9:]{0,12}",
        ) {
            // Goal (property): a covered field's change is another request; an ignored field's never is.
            let rules = rules();
            let body = |amount: i64, sent_at: &str| format!(r#"{{"amount":{amount},"sent_at":"{sent_at}"}}"#);
            prop_assert_eq!(of(&rules, "/p", &body(amount, &sent_at)), of(&rules, "/p", &body(amount, &later)));
            prop_assert_eq!(amount == other, of(&rules, "/p", &body(amount, &sent_at)) == of(&rules, "/p", &body(other, &sent_at)));
        }
    }
}
