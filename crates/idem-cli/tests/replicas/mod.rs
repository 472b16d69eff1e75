//! Shared by the replica tests: the databases they need (failing, never skipping, when one
//! is down), a schema and a key prefix of their own per run, and a burst of concurrent
//! same-key requests spread over several `idem serve` processes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use sqlx::Connection as _;

use crate::support::{Reply, send};

/// The PostgreSQL the tests (and the `idem serve` processes they start) use:
/// `IDEM_TEST_POSTGRES_URL`, else a throw-away cluster of this test process (as root, the
/// local server on port 5432); see idem-testkit.
pub fn postgres_url() -> String {
    idem_testkit::postgres_url()
}

/// The Redis the tests (and their `idem serve` processes) use: `IDEM_TEST_REDIS_URL`, else a
/// throw-away `redis-server` of this test process.
pub fn redis_url() -> String {
    idem_testkit::redis_url()
}

/// A name no other run uses: `idem_rep_<pid>_<nanoseconds>`, a plain identifier.
pub fn unique_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos());
    format!("idem_rep_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// `url` with `key=value` added to its query.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts").block_on(work)
}

/// A PostgreSQL schema of the test's own, dropped (with everything in it) when this is
/// dropped, also when the test fails.
pub struct Schema {
    pub name: String,
}

impl Schema {
    /// Checks that PostgreSQL answers (or fails the test saying how to start it) and names
    /// a fresh schema; `idem serve` creates it.
    pub fn fresh() -> Schema {
        let url = postgres_url();
        let reached = std::thread::spawn(move || block_on(sqlx::PgConnection::connect(&url)).map(|_| ()))
            .join()
            .expect("the probe thread ends");
        if let Err(error) = reached {
            panic!(
                "the replica tests need PostgreSQL at {} (set IDEM_TEST_POSTGRES_URL to use another); \
                 as root that is the local one: start it with `pg_ctlcluster 15 main start` (see `ls /etc/postgresql` for \
                 the version) or `.ci/run`: {error}",
                postgres_url()
            );
        }
        Schema { name: unique_name() }
    }

    /// The database URL naming this schema, for `--store` or `--db`.
    pub fn url(&self) -> String {
        with_param(&postgres_url(), "schema", &self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (postgres_url(), self.name.clone());
        // Its own thread and runtime: a drop may run inside the test's runtime.
        let dropped = std::thread::spawn(move || {
            block_on(async {
                let mut connection = sqlx::PgConnection::connect(&url).await?;
                let statement = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}: {dropped:?}", self.name);
        }
    }
}

/// A Redis key prefix of the test's own, cleared when this is dropped.
pub struct RedisPrefix {
    pub name: String,
}

impl RedisPrefix {
    /// Checks that Redis answers (or fails the test saying how to start it) and names a
    /// fresh prefix.
    pub fn fresh() -> RedisPrefix {
        let name = unique_name().replace('_', "-");
        let prefix = RedisPrefix { name };
        if let Err(error) = prefix.open() {
            panic!(
                "the replica tests need Redis at {} (idem-testkit's throw-away one, unless \
                 IDEM_TEST_REDIS_URL names another): {error}",
                redis_url()
            );
        }
        prefix
    }

    /// The Redis URL naming this prefix, for `--store`.
    pub fn url(&self) -> String {
        with_param(&redis_url(), "prefix", &self.name)
    }

    fn open(&self) -> Result<(), String> {
        let url = self.url();
        std::thread::spawn(move || {
            block_on(async {
                let options = idem_redis::RedisOptions::new(&url).map_err(|error| error.to_string())?;
                let store = idem_redis::RedisStore::open(options).await.map_err(|error| error.to_string())?;
                store.clear().await.map_err(|error| error.to_string())?;
                store.close();
                Ok(())
            })
        })
        .join()
        .expect("the Redis thread ends")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        if let Err(error) = self.open() {
            eprintln!("could not clear the test prefix {}: {error}", self.name);
        }
    }
}

/// `requests` concurrent `POST path` with the same key, body and principal, request `i`
/// to `replicas[i % replicas.len()]`, all released together. Each retries a 409 (in
/// progress), a 503 and a network error after a short pause, until it gets a final answer
/// or `deadline` passes (then the test fails). Returns the final answers.
pub async fn same_key_burst(
    replicas: &[SocketAddr],
    requests: usize,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    deadline: Duration,
) -> Vec<Reply> {
    let start = Arc::new(tokio::sync::Barrier::new(requests));
    let give_up = Instant::now() + deadline;
    let mut tasks = Vec::new();
    for i in 0..requests {
        let addr = replicas[i % replicas.len()];
        let start = Arc::clone(&start);
        let path = path.to_owned();
        let body = body.to_owned();
        let headers: Vec<(String, String)> =
            headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            start.wait().await;
            let mut seen = Vec::new();
            loop {
                let answer = send(addr, Method::POST, &path, &headers, &body).await;
                match answer {
                    Ok(reply) if reply.status != 409 && reply.status != 503 => return Ok(reply),
                    other => seen.push(other.map_or_else(|error| error, |reply| reply.status.to_string())),
                }
                if Instant::now() > give_up {
                    return Err(format!("request {i} to {addr} got no final answer within {deadline:?}: {seen:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a request task ends").unwrap_or_else(|error| panic!("{error}")));
    }
    answers
}

/// Asserts what one execution looks like from outside: every answer is a 201 with the same
/// body and `Location`, exactly one of them not a replay; returns that body.
pub fn assert_one_execution(answers: &[Reply]) -> bytes::Bytes {
    let first = &answers[0];
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 201, "answer {i}: {answer:?}");
        assert_eq!(answer.body, first.body, "answer {i} differs from answer 0");
        assert_eq!(answer.header("location"), first.header("location"), "answer {i}'s Location differs");
        assert!(answer.header("location").is_some_and(|at| at.starts_with("/payments/")), "{answer:?}");
    }
    let executions = answers.iter().filter(|answer| !answer.is_replay()).count();
    assert_eq!(executions, 1, "answers not marked as replays: {executions} of {}", answers.len());
    first.body.clone()
}

/// The principal's payments as `replica` lists them (`GET /payments?limit=100`).
pub async fn payments_listed(replica: SocketAddr, authorization: &str) -> Vec<serde_json::Value> {
    let reply = send(replica, Method::GET, "/payments?limit=100", &[("authorization", authorization)], "")
        .await
        .expect("the replica answers");
    assert_eq!(reply.status, 200, "{reply:?}");
    let listed: serde_json::Value = serde_json::from_slice(&reply.body).expect("the list is JSON");
    listed["data"].as_array().expect("a list of payments").clone()
}
