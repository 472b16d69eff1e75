//! [`AdminToken`]: the operator's bearer token for the key administration API (`idem serve
//! --admin-token-file`), read from its file with bounds and checks, kept only as a digest,
//! and compared in constant time. Separate from running the server: it is a credential
//! with rules of its own, and `idem serve` reads it before anything opens.

use std::path::PathBuf;

use http::header::AUTHORIZATION;
use idem_http::Problem;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The most bytes an admin token file may hold: a token is a line, not a document.
pub const ADMIN_TOKEN_FILE_BYTES_MAX: usize = 4096;

/// The operator's bearer token for the admin API (`idem serve --admin-token-file`). Only
/// its SHA-256 digest is kept, and `Debug` shows neither, so the token never reaches a log.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why an admin token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The file could not be opened or read.
    #[error("cannot read the admin token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is longer than [`ADMIN_TOKEN_FILE_BYTES_MAX`].
    #[error("the admin token file {path} is over {ADMIN_TOKEN_FILE_BYTES_MAX} bytes; it must hold one token")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// Nothing but whitespace in the file.
    #[error("the admin token file {path} is empty; put the operator's token in it")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A token no client could send as `Authorization: Bearer <token>`.
    #[error(
        "the admin token in {path} must be one word of visible ASCII (no spaces or control characters), to be sent as `Authorization: Bearer <token>`"
    )]
    NotSendable {
        /// The file.
        path: PathBuf,
    },
}

impl AdminToken {
    /// The token in the file at `path`: its content without surrounding whitespace (a
    /// trailing newline is common), at most [`ADMIN_TOKEN_FILE_BYTES_MAX`] bytes of file,
    /// visible ASCII only.
    ///
    /// # Errors
    /// [`AdminTokenError`], naming the file and never the token.
    pub fn read(path: &std::path::Path) -> Result<AdminToken, AdminTokenError> {
        use std::io::Read as _;
        let unreadable = |source| AdminTokenError::Unreadable { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        // One byte past the bound tells a file at the bound from a longer one, without
        // reading a large file whole.
        let mut content = Vec::with_capacity(ADMIN_TOKEN_FILE_BYTES_MAX + 1);
        file.take(ADMIN_TOKEN_FILE_BYTES_MAX as u64 + 1).read_to_end(&mut content).map_err(unreadable)?;
        if content.len() > ADMIN_TOKEN_FILE_BYTES_MAX {
            return Err(AdminTokenError::TooLong { path: path.to_owned() });
        }
        let token = content.trim_ascii();
        if token.is_empty() {
            return Err(AdminTokenError::Empty { path: path.to_owned() });
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(AdminTokenError::NotSendable { path: path.to_owned() });
        }
        Ok(AdminToken::new(token))
    }

    /// A token given as bytes (tests; `idem serve` reads a file with [`Self::read`]).
    ///
    /// # Panics
    /// If `token` is empty: an empty token would admit `Authorization: Bearer `.
    #[must_use]
    pub fn new(token: &[u8]) -> AdminToken {
        assert!(!token.is_empty(), "an admin token must not be empty");
        AdminToken { digest: Sha256::digest(token).into() }
    }

    /// The admin API's authorisation hook ([`idem_admin::Authorize`]): admits a request
    /// with exactly one `Authorization: Bearer <token>` header whose token is this one,
    /// compared in constant time (digests, so the length does not show either); anything
    /// else is 401 `unauthorized`, which never says what was sent.
    ///
    /// # Errors
    /// The 401 problem to answer.
    pub fn admit(&self, request: &http::request::Parts) -> Result<(), Problem> {
        let mut values = request.headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(idem_admin::problems::unauthorized(
                "the admin API needs one `Authorization: Bearer <token>` header with the operator's token",
            ));
        };
        let value = value.as_bytes();
        let presented = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii_start(),
            _ => return Err(idem_admin::problems::unauthorized("the admin API takes `Authorization: Bearer <token>`")),
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(self.digest.ct_eq(&digest)) {
            Ok(())
        } else {
            Err(idem_admin::problems::unauthorized("the bearer token is not the admin API's"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_files_are_one_visible_word_within_the_bound() {
        // Goal: the token is the file's content without surrounding whitespace; an empty,
        // oversized, unsendable or missing file is refused with the file named and the
        // token never shown, and `Debug` shows no token either.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("a temporary file");
            path
        };
        let token = AdminToken::read(&write("ok", b"  s3cret-Token_1\n")).expect("a token");
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
        let exact = AdminToken::read(&write("exact", &[b'a'; ADMIN_TOKEN_FILE_BYTES_MAX]));
        assert!(exact.is_ok(), "a file of exactly the bound is accepted");

        let refused = |path: std::path::PathBuf| AdminToken::read(&path).expect_err("refused").to_string();
        let empty = refused(write("empty", b" \n\t\n"));
        assert!(empty.contains("is empty") && empty.contains("empty"), "{empty}");
        let long = refused(write("long", &[b'a'; ADMIN_TOKEN_FILE_BYTES_MAX + 1]));
        assert!(long.contains("over 4096 bytes"), "{long}");
        let spaced = refused(write("spaced", b"two words"));
        assert!(spaced.contains("visible ASCII") && !spaced.contains("two words"), "{spaced}");
        assert!(refused(write("accent", "caf\u{e9}".as_bytes())).contains("visible ASCII"));
        let missing = refused(dir.path().join("missing"));
        assert!(missing.contains("cannot read the admin token file") && missing.contains("missing"), "{missing}");
    }

    #[test]
    fn admin_token_admits_one_bearer_header_with_the_token_only() {
        // Goal: the hook admits exactly one `Authorization: Bearer <token>` (scheme in any
        // case) with the very token, and refuses other tokens, schemes and repeated headers.
        let token = AdminToken::new(b"s3cret");
        let admit = |values: &[&str]| {
            let mut request = http::Request::get("/keys");
            for value in values {
                request = request.header(AUTHORIZATION, *value);
            }
            let (parts, ()) = request.body(()).expect("a valid request").into_parts();
            token.admit(&parts).map_err(|problem| (problem.status(), problem.slug().to_owned()))
        };
        assert_eq!(admit(&["Bearer s3cret"]), Ok(()));
        assert_eq!(admit(&["BEARER s3cret"]), Ok(()));
        let unauthorized = Err((http::StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));
        for refused in [&[][..], &["Bearer s3cre"], &["Bearer s3crets"], &["Basic s3cret"], &["s3cret"]] {
            assert_eq!(admit(refused), unauthorized, "{refused:?}");
        }
        assert_eq!(admit(&["Bearer s3cret", "Bearer s3cret"]), unauthorized);
    }
}
