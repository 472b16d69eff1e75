//! How to reach Redis and what the store may hold: [`RedisOptions`].

use std::time::Duration;

use idem_core::Limits;

/// The key prefix when none is given.
pub const PREFIX_DEFAULT: &str = "idem";
/// The longest key prefix, in bytes.
pub const PREFIX_BYTES_MAX: usize = 64;

/// Where the fence counter starts when its key is missing (a new prefix, or Redis lost
/// its data). See the crate docs, "Restart without persistence".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceSeed {
    /// Redis's own clock (`TIME`) in milliseconds × 2^10 ([`crate::FENCE_SEED_SHIFT`]): a
    /// counter recreated after a restart starts past every fence the lost counter issued,
    /// unless the old one issued more than 1024 fences per millisecond on average, or
    /// Redis's clock went back.
    ServerClock,
    /// Fence 1, as [`idem_core::MemoryStore`] starts. Only for tests that compare fences
    /// with a memory store: after a restart without persistence it reissues fences that
    /// stale handlers may still hold (G3).
    First,
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The URL does not parse as a Redis URL.
    #[error("not a Redis URL ({url}): {reason}")]
    Url {
        /// The URL, without its password.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The prefix is empty, too long, or holds a character other than `A-Z a-z 0-9 . _ : -`.
    #[error("key prefix {0:?} must be 1 to {PREFIX_BYTES_MAX} characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'")]
    Prefix(String),
}

/// How to open a [`crate::RedisStore`]: the URL, the key prefix, size limits, timeouts
/// and bounds.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) limits: Limits,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) connections_max: usize,
    pub(crate) fence_seed: FenceSeed,
}

impl RedisOptions {
    /// Options for the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://`/`unix://` when the driver was built for them). A query parameter
    /// `prefix=NAME` sets the key prefix (default [`PREFIX_DEFAULT`]); other query
    /// parameters go to the driver. Nothing is contacted until [`crate::RedisStore::open`].
    ///
    /// # Errors
    /// [`OptionsError`] when the URL does not parse or the prefix is not allowed.
    pub fn new(url: &str) -> Result<RedisOptions, OptionsError> {
        let (url, prefix) = split_prefix(url);
        let options = RedisOptions {
            url,
            prefix: PREFIX_DEFAULT.to_owned(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(3),
            connections_max: 2,
            fence_seed: FenceSeed::ServerClock,
        };
        // Parse now, so a bad URL is an error at configuration time.
        redis::Client::open(options.url.as_str())
            .map_err(|error| OptionsError::Url { url: redacted(&options.url), reason: error.to_string() })?;
        match prefix {
            Some(prefix) => options.prefix(&prefix),
            None => Ok(options),
        }
    }

    /// Every key goes under `{prefix}` (hash-tagged, so in a Redis Cluster they share a
    /// slot). Stores with different prefixes share nothing, not even the fence counter.
    ///
    /// # Errors
    /// [`OptionsError::Prefix`] unless it is 1..=64 characters of `A-Z a-z 0-9 . _ : -`
    /// (no glob or hash-tag characters, so `SCAN MATCH` and the hash tag stay exact).
    pub fn prefix(mut self, prefix: &str) -> Result<RedisOptions, OptionsError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if prefix.is_empty() || prefix.len() > PREFIX_BYTES_MAX || !prefix.chars().all(allowed) {
            return Err(OptionsError::Prefix(prefix.to_owned()));
        }
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// The most records held at once (default 100,000).
    #[must_use]
    pub fn records_max(mut self, records_max: u64) -> RedisOptions {
        self.limits.records_max = records_max;
        self
    }

    /// The most bytes held at once (default 256 MiB; see [`Limits`] for the overshoot).
    #[must_use]
    pub fn stored_bytes_max(mut self, stored_bytes_max: u64) -> RedisOptions {
        self.limits.stored_bytes_max = stored_bytes_max;
        self
    }

    /// How long connecting may take (default 1 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisOptions {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one request or pipeline (default 1 s).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> RedisOptions {
        self.response_timeout = timeout;
        self
    }

    /// How long one store operation may take in all, reconnecting included (default 3 s). Past it the operation
    /// answers [`idem_core::StoreError::Unavailable`].
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> RedisOptions {
        self.operation_timeout = timeout;
        self
    }

    /// Multiplexed connections the store dials and uses in turn (default 2, at least 1).
    /// Each carries many operations at once, pipelined: every operation is one command,
    /// so no operation needs a connection of its own.
    #[must_use]
    pub fn connections_max(mut self, connections_max: usize) -> RedisOptions {
        self.connections_max = connections_max.max(1);
        self
    }

    /// Kept for compatibility; it has no effect. It bounded the attempts of an operation
    /// whose `WATCH`ed transaction a concurrent write aborted; every operation is now one
    /// atomic script, which nothing aborts.
    #[must_use]
    #[deprecated(note = "every operation is one atomic Lua script now; nothing is attempted twice")]
    pub fn attempts_max(self, attempts_max: u32) -> RedisOptions {
        let _ = attempts_max;
        self
    }

    /// Where a missing fence counter starts (default [`FenceSeed::ServerClock`]).
    #[must_use]
    pub fn fence_seed(mut self, seed: FenceSeed) -> RedisOptions {
        self.fence_seed = seed;
        self
    }

    /// The size limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The key prefix.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL without its password, for logs and messages.
    #[must_use]
    pub fn url_redacted(&self) -> String {
        redacted(&self.url)
    }
}

/// `url` without a `prefix=` query parameter, and that parameter's value.
fn split_prefix(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
    let mut prefix = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("prefix=") {
            Some(value) => {
                prefix = Some(value.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    (url, prefix)
}

/// `url` with any password replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_comes_from_the_url_query() {
        // Goal: `?prefix=` sets the prefix and is not passed on; other parameters stay.
        let options = RedisOptions::new("redis://127.0.0.1:6379/2?prefix=shop-a").unwrap();
        assert_eq!((options.key_prefix(), options.url.as_str()), ("shop-a", "redis://127.0.0.1:6379/2"));
        let options = RedisOptions::new("redis://127.0.0.1/?protocol=resp2&prefix=p").unwrap();
        assert_eq!((options.key_prefix(), options.url.as_str()), ("p", "redis://127.0.0.1/?protocol=resp2"));
        assert_eq!(RedisOptions::new("redis://127.0.0.1").unwrap().key_prefix(), PREFIX_DEFAULT);
    }

    #[test]
    fn bad_prefixes_and_urls_are_refused() {
        // Goal: hash-tag and glob characters, empty and long prefixes, and non-Redis URLs
        // are errors, and messages never show a password.
        for prefix in ["", "a{b", "a*", "a b", &"x".repeat(65)] {
            assert!(RedisOptions::new("redis://127.0.0.1").unwrap().prefix(prefix).is_err(), "{prefix:?}");
        }
        assert!(matches!(RedisOptions::new("http://x"), Err(OptionsError::Url { .. })));
        assert_eq!(redacted("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
    }
}
