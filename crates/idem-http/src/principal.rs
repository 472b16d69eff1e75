//! Who is asking: the principal that scopes every key (G4).

use std::sync::Arc;

use http::header;
use http::request::Parts;
use idem_core::Principal;
use sha2::{Digest, Sha256};

use crate::Problem;

/// A function from the request's head to its principal, or a problem that refuses the
/// request before anything is recorded.
pub type PrincipalExtractor = Arc<dyn Fn(&Parts) -> Result<Principal, Problem> + Send + Sync>;

/// The default principal: the SHA-256 of the `Authorization` header value(s), as 64 hex
/// digits, or [`Principal::anonymous`] without that header.
///
/// Hashing keeps credentials out of the store while giving each distinct credential its
/// own key space. Several `Authorization` values are hashed together, each length-prefixed,
/// in the order sent. It never refuses a request: authentication is the application's job.
///
/// ```
/// use idem_http::principal::authorization_principal;
///
/// let (alice, _) = http::Request::post("/").header("authorization", "Bearer a").body(()).unwrap().into_parts();
/// let (nobody, _) = http::Request::post("/").body(()).unwrap().into_parts();
/// let alice = authorization_principal(&alice).unwrap();
/// assert_eq!(alice.as_str().len(), 64);
/// assert!(authorization_principal(&nobody).unwrap().is_anonymous());
/// ```
///
/// # Errors
/// None; the `Result` matches [`PrincipalExtractor`].
pub fn authorization_principal(parts: &Parts) -> Result<Principal, Problem> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter().peekable();
    if values.peek().is_none() {
        return Ok(Principal::anonymous());
    }
    let mut hasher = Sha256::new();
    for value in values {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    // `hex` rather than `write!` per byte: the formatter showed in the layer's profile.
    let hex = hex::encode(hasher.finalize());
    Ok(Principal::new(&hex).expect("64 hex digits are a valid principal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(authorization: &[&'static str]) -> Parts {
        let mut builder = http::Request::post("/payments");
        for value in authorization {
            builder = builder.header(header::AUTHORIZATION, *value);
        }
        builder.body(()).expect("static test request is valid").into_parts().0
    }

    #[test]
    fn distinct_credentials_are_distinct_principals() {
        // Goal: each credential gets its own key space, and the credential is not stored in clear.
        let alice = authorization_principal(&parts(&["Bearer alice"])).expect("never refuses");
        let bob = authorization_principal(&parts(&["Bearer bob"])).expect("never refuses");
        assert_ne!(alice, bob);
        assert_eq!(alice, authorization_principal(&parts(&["Bearer alice"])).expect("never refuses"));
        assert!(!alice.as_str().contains("alice"));
        assert_ne!(
            authorization_principal(&parts(&["a", "bc"])).expect("never refuses"),
            authorization_principal(&parts(&["ab", "c"])).expect("never refuses"),
            "values are length-prefixed, so their boundaries count"
        );
    }

    #[test]
    fn no_authorization_is_anonymous() {
        // Goal: a request without credentials gets the anonymous principal.
        assert!(authorization_principal(&parts(&[])).expect("never refuses").is_anonymous());
    }
}
