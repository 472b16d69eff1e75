//! Helpers shared by the integration tests: stores on the real Redis, each under a key
//! prefix of its own, deleted when the test ends (also when it fails), and idem-core's
//! fixtures (ids, fingerprints, the policy, responses) every store's tests share.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `wall_now` is idem-core's `wall_clock` (the HTTP layer's `SystemClock`), under the name
/// this crate's tests call it by.
#[allow(unused_imports)] // each test binary uses its own subset
pub use idem_core::conformance::fixtures::{at, fingerprint, id, policy, response, wall_clock as wall_now};
use idem_redis::{RedisOptions, RedisStore};

/// The Redis the tests use: `IDEM_TEST_REDIS_URL`, else a throw-away `redis-server` of this
/// test process (idem-testkit).
pub fn redis_url() -> String {
    idem_testkit::redis_url()
}

/// A prefix no other run or harness open shares: process id, clock and a counter.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is past 1970").as_nanos();
    format!("idem-test-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Options for a fresh prefix on the test Redis.
pub fn options() -> RedisOptions {
    RedisOptions::new(&redis_url())
        .expect("the test URL parses")
        .prefix(&unique_prefix())
        .expect("test prefixes are valid")
}

/// Opens a store, or fails the test saying how to start Redis: never a silent skip.
pub async fn open(options: RedisOptions) -> RedisStore {
    match RedisStore::open(options).await {
        Ok(store) => store,
        Err(error) => panic!(
            "these tests need the Redis at {}: {error}\n\
             (idem-testkit's throw-away one, unless IDEM_TEST_REDIS_URL points at another)",
            redis_url()
        ),
    }
}

/// Deletes the keys of every prefix it was told about when dropped, with a blocking
/// connection, so a failing test cleans up too.
#[derive(Default)]
pub struct Cleanup {
    prefixes: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn track(&self, options: &RedisOptions) {
        self.prefixes.lock().expect("no test thread panicked holding the list").push(options.key_prefix().to_owned());
    }

    /// Keys left under the tracked prefixes.
    pub fn keys_left(&self) -> usize {
        let prefixes = self.prefixes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Ok(mut connection) = redis::Client::open(redis_url()).and_then(|client| client.get_connection()) else {
            return 0;
        };
        prefixes.iter().map(|prefix| scan(&mut connection, prefix).len()).sum()
    }
}

fn scan(connection: &mut redis::Connection, prefix: &str) -> Vec<Vec<u8>> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{prefix}}}*"))
            .arg("COUNT")
            .arg(1000)
            .query(connection)
            .expect("SCAN answers");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefixes = self.prefixes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Ok(mut connection) = redis::Client::open(redis_url()).and_then(|client| client.get_connection()) else {
            return;
        };
        for prefix in prefixes {
            let keys = scan(&mut connection, &prefix);
            if !keys.is_empty() {
                let _: Result<u64, _> = redis::cmd("DEL").arg(keys).query(&mut connection);
            }
        }
    }
}
