//! Claim + complete per second on RedisStore against a plain baseline of one
//! `SET key val NX PX` per operation, at 1 and 16 concurrent clients, side by side.
//!
//! `cargo bench -p idem-redis --bench throughput` (Redis at `IDEM_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; `IDEM_BENCH_SECONDS` per measurement, default 2). Every loop
//! stops at its deadline; the keys it wrote are deleted at the end.

#![allow(clippy::print_stdout, missing_docs)] // a bench binary reports on stdout

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idem_core::{
    Bytes, Decision, Fenced, Fingerprint, Key, Policy, Principal, RecordId, Store, StoredResponse, Timestamp,
};
use idem_redis::{RedisOptions, RedisStore};

const CLIENTS: [usize; 2] = [1, 16];

fn now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is past 1970").as_millis();
    Timestamp::from_unix_ms(u64::try_from(ms).expect("ms fit u64"))
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))],
        body: Bytes::from(vec![b'x'; 100]),
    }
}

/// Runs `clients` tasks, each calling `operation(client, n)` until the deadline; returns
/// operations per second.
async fn measure<F, Fut>(clients: usize, duration: Duration, operation: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let operation = Arc::new(operation);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let operation = Arc::clone(&operation);
            tokio::spawn(async move {
                let mut done: u64 = 0;
                while Instant::now() < deadline {
                    operation(client, done).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total: u64 = 0;
    for task in tasks {
        total += task.await.expect("a bench task does not panic");
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_second = total as f64 / start.elapsed().as_secs_f64();
    per_second
}

fn main() {
    let url = std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let seconds: u64 = std::env::var("IDEM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let duration = Duration::from_secs(seconds);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let run = std::process::id();
        let prefix = format!("idem-bench-{run}");
        let options = RedisOptions::new(&url).expect("the URL parses").prefix(&prefix).expect("a valid prefix");
        let store = match RedisStore::open(options).await {
            Ok(store) => Arc::new(store),
            Err(error) => panic!("{error}"),
        };
        let client = redis::Client::open(url.as_str()).expect("the URL parses");
        let baseline_connection = redis::aio::ConnectionManager::new(client).await.expect("Redis answers");
        let value = Bytes::from(vec![b'x'; 160]);
        println!("clients  baseline SET NX PX/s  claim+complete/s  ratio");
        for clients in CLIENTS {
            let connection = baseline_connection.clone();
            let (value, tag) = (value.clone(), format!("{{{prefix}}}:baseline:{clients}"));
            let baseline = measure(clients, duration, move |client, n| {
                let mut connection = connection.clone();
                let (value, key) = (value.clone(), format!("{tag}:{client}:{n}"));
                async move {
                    let _: Option<String> = redis::cmd("SET")
                        .arg(key)
                        .arg(value.as_ref())
                        .arg("NX")
                        .arg("PX")
                        .arg(60_000)
                        .query_async(&mut connection)
                        .await
                        .expect("SET answers");
                }
            })
            .await;
            let store_for = Arc::clone(&store);
            let idem = measure(clients, duration, move |client, n| {
                let store = Arc::clone(&store_for);
                async move {
                    let key = Key::parse(format!("c{clients}-{client}-{n}").as_bytes()).expect("a valid key");
                    let id = RecordId::new(Principal::anonymous(), key);
                    let fingerprint = Fingerprint::of("POST", "/payments", b"{}");
                    let policy = Policy::default();
                    let Ok(Decision::Execute(claim)) = store.claim(&id, &fingerprint, now(), &policy).await else {
                        panic!("a new key executes")
                    };
                    let done = store.complete(&id, claim.fence, response(), now(), &policy).await;
                    assert_eq!(done.expect("completion answers"), Fenced::Applied);
                }
            })
            .await;
            println!("{clients:>7}  {baseline:>21.0}  {idem:>16.0}  {:>5.2}", idem / baseline);
        }
        let deleted = store.clear().await.expect("the bench keys are deleted");
        println!("deleted {deleted} keys under {{{prefix}}}");
    });
}
