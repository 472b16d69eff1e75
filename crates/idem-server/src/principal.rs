//! Who is asking: the `Authorization: Bearer <token>` value, which scopes keys, payments and users.

use std::fmt::Write as _;

use http::{HeaderMap, StatusCode, header};
use idem_core::Principal;
use idem_http::Problem;
use sha2::{Digest, Sha256};

/// The principal of a request: anonymous without `Authorization`, else the SHA-256 of the
/// bearer token (so tokens are never stored in clear). Any token is accepted: the demo
/// does not authenticate, it only keeps callers apart (G4).
///
/// # Errors
/// A 401 problem for several `Authorization` headers, another scheme than `Bearer`, or an
/// empty token: guessing a principal for those could mix two callers' data.
pub fn principal_of(headers: &HeaderMap) -> Result<Principal, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(Principal::anonymous()) };
    if values.next().is_some() {
        return Err(unauthorized("send one Authorization header, not several"));
    }
    let value = value.as_bytes();
    let scheme_ok = value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ");
    let token = if scheme_ok { value[7..].trim_ascii() } else { &[][..] };
    if token.is_empty() {
        return Err(unauthorized("Authorization must be `Bearer <token>` with a non-empty token"));
    }
    let digest = Sha256::new().chain_update(b"idem-server bearer\0").chain_update(token).finalize();
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    Ok(Principal::new(&hex).expect("64 hex digits are a valid principal"))
}

fn unauthorized(detail: &str) -> Problem {
    Problem::of(idem_http::problem::types::UNAUTHORIZED, StatusCode::UNAUTHORIZED, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn each_token_is_its_own_principal_and_none_is_anonymous() {
        // Goal: tokens are told apart, the scheme's case does not matter, and no header is anonymous.
        let alice = principal_of(&headers(&["Bearer alice"])).expect("valid");
        assert_eq!(alice, principal_of(&headers(&["bearer alice"])).expect("valid"));
        assert_ne!(alice, principal_of(&headers(&["Bearer bob"])).expect("valid"));
        assert!(!alice.as_str().contains("alice"));
        assert!(principal_of(&headers(&[])).expect("valid").is_anonymous());
    }

    #[test]
    fn odd_authorization_headers_are_refused() {
        // Goal: another scheme, an empty token or two headers are 401s, never a guessed principal.
        for bad in [&["Basic YTpi"][..], &["Bearer "], &["Bearer"], &["Bearer a", "Bearer b"]] {
            let problem = principal_of(&headers(bad)).expect_err("refused");
            assert_eq!(problem.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
