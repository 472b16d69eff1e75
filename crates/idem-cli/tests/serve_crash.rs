//! Crash test: the real `idem serve` on a real SQLite file, SIGKILLed at random moments
//! while retrying clients send duplicate requests, restarted on the same file each time.
//!
//! Afterwards every key has exactly one payment, every answer for a key is the same, and
//! every payment a client saw acknowledged is there (G1, G2, G7 across crashes).
//!
//! The kill moments follow a seeded RNG; the seed is printed, and
//! `IDEM_CRASH_SEED=<seed> cargo test -p idem-cli --test serve_crash` replays the schedule.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{Reply, ServerProcess, send};

/// Server kills (and restarts) per run.
const KILLS: usize = 6;
/// Client pairs; the two clients of a pair send the same keys (duplicates), each pair as its own principal.
const PAIRS: usize = 6;
/// Keys per pair at most: `GET /payments` lists up to 100, which the check relies on.
const KEYS_PER_PAIR_MAX: usize = 100;
/// Attempts per key before a client gives up (a failure of the test).
const ATTEMPTS_PER_KEY_MAX: usize = 400;
/// The lease, short so that claims orphaned by a kill lapse quickly.
const LEASE: &str = "1s";
/// Everything must be over well within this.
const TEST_DEADLINE: Duration = Duration::from_secs(50);

/// Where the current server listens (it changes at each restart).
type Address = Arc<RwLock<SocketAddr>>;
/// Every successful answer, per (pair, key index).
type Answers = Arc<Mutex<BTreeMap<(usize, usize), Vec<Reply>>>>;

/// What the clients went through, printed at the end to show the kills met traffic.
#[derive(Default)]
struct Weather {
    network_errors: AtomicU64,
    conflicts: AtomicU64,
}

fn key(pair: usize, index: usize) -> String {
    format!("crash-p{pair}-k{index}")
}

fn token(pair: usize) -> String {
    format!("Bearer pair-{pair}")
}

fn body(pair: usize, index: usize) -> String {
    format!(r#"{{"amount": {}.{:02}, "currency": "USD", "destination": "{}"}}"#, index + 1, pair, key(pair, index))
}

fn seed() -> u64 {
    match std::env::var("IDEM_CRASH_SEED") {
        Ok(seed) => seed.parse().expect("IDEM_CRASH_SEED is a u64"),
        // A new schedule each run; the printed seed replays it.
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |t| t.as_nanos() as u64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_keeps_one_payment_per_key_and_every_acknowledged_payment() {
    // Goal: G1, G2 and G7 hold for the real binary across repeated SIGKILLs and restarts.
    let seed = seed();
    eprintln!("crash test seed: {seed} (replay: IDEM_CRASH_SEED={seed} cargo test -p idem-cli --test serve_crash)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let db = dir.path().join("idem.db");
    let args = ["--lease", LEASE];

    let mut server = ServerProcess::sqlite(&db, &args);
    let address: Address = Arc::new(RwLock::new(server.addr));
    let answers: Answers = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let weather = Arc::new(Weather::default());
    let mut clients = Vec::new();
    for pair in 0..PAIRS {
        for _ in 0..2 {
            let (address, answers, stop) = (Arc::clone(&address), Arc::clone(&answers), Arc::clone(&stop));
            let (weather, think_seed) = (Arc::clone(&weather), rng.random::<u64>());
            clients.push(tokio::spawn(client(pair, address, answers, stop, weather, think_seed)));
        }
    }

    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.kill();
        eprintln!("kill {kill}: SIGKILL sent, restarting on the same file");
        server = ServerProcess::sqlite(&db, &args);
        *address.write().expect("no writer panics") = server.addr;
    }
    stop.store(true, Ordering::SeqCst);
    let mut keys_used = BTreeMap::new();
    for (index, handle) in clients.into_iter().enumerate() {
        let used = tokio::time::timeout(TEST_DEADLINE, handle)
            .await
            .expect("clients finish within the deadline")
            .expect("client tasks do not panic")
            .unwrap_or_else(|error| panic!("client {index} failed (seed {seed}): {error}"));
        let pair = index / 2;
        let entry = keys_used.entry(pair).or_insert(0);
        *entry = used.max(*entry);
    }

    let answers = answers.lock().expect("no client panicked holding the lock").clone();
    let addr = server.addr;
    let mut acknowledged = 0;
    for pair in 0..PAIRS {
        let used = keys_used[&pair];
        assert!(used > 0, "pair {pair} sent nothing (seed {seed})");
        // Every key sent has exactly one payment: the pair's list holds one per key, no more.
        let list = send(addr, Method::GET, "/payments?limit=100", &[("authorization", &token(pair))], "")
            .await
            .expect("the final server answers");
        let list: serde_json::Value = serde_json::from_slice(&list.body).expect("a JSON list");
        let destinations: Vec<&str> = list["payments"]
            .as_array()
            .expect("payments is a list")
            .iter()
            .map(|payment| payment["destination"].as_str().expect("a destination"))
            .collect();
        let distinct: BTreeSet<&str> = destinations.iter().copied().collect();
        assert_eq!(distinct.len(), destinations.len(), "a key has two payments (seed {seed}): {destinations:?}");
        let expected: BTreeSet<String> = (0..used).map(|index| key(pair, index)).collect();
        let found: BTreeSet<String> = distinct.iter().map(|d| (*d).to_owned()).collect();
        assert_eq!(found, expected, "pair {pair}: payments differ from the keys sent (seed {seed})");

        for index in 0..used {
            let Some(replies) = answers.get(&(pair, index)) else {
                panic!("key {} was sent but never answered (seed {seed})", key(pair, index))
            };
            // Every answer for the key is the same bytes, and so is one more retry now.
            let retry = post(addr, pair, index).await.expect("the final server answers");
            assert!(retry.is_replay(), "final retry of {} was not a replay: {retry:?}", key(pair, index));
            for reply in replies {
                assert_eq!((reply.status, &reply.body), (retry.status, &retry.body), "answers differ (seed {seed})");
                assert_eq!(reply.header("location"), retry.header("location"));
            }
            // The acknowledged payment is there, as acknowledged.
            let payment: serde_json::Value = serde_json::from_slice(&retry.body).expect("a payment");
            let path = format!("/payments/{}", payment["payment_id"].as_str().expect("an id"));
            let fetched = send(addr, Method::GET, &path, &[("authorization", &token(pair))], "")
                .await
                .expect("the final server answers");
            assert_eq!(
                (fetched.status, &fetched.body),
                (200, &retry.body),
                "acknowledged payment missing (seed {seed})"
            );
            acknowledged += 1;
        }
    }
    eprintln!(
        "checked {acknowledged} keys over {PAIRS} pairs after {KILLS} kills; clients met {} network errors and {} conflicts",
        weather.network_errors.load(Ordering::SeqCst),
        weather.conflicts.load(Ordering::SeqCst)
    );
    server.kill();
}

async fn post(addr: SocketAddr, pair: usize, index: usize) -> Result<Reply, String> {
    let key = key(pair, index);
    let token = token(pair);
    send(addr, Method::POST, "/payments", &[("idempotency-key", &key), ("authorization", &token)], &body(pair, index))
        .await
}

/// Walks the pair's keys in order until told to stop, retrying each until it gets a 201;
/// returns how many keys it sent.
async fn client(
    pair: usize,
    address: Address,
    answers: Answers,
    stop: Arc<AtomicBool>,
    weather: Arc<Weather>,
    seed: u64,
) -> Result<usize, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut index = 0;
    while index < KEYS_PER_PAIR_MAX && !stop.load(Ordering::SeqCst) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > ATTEMPTS_PER_KEY_MAX {
                return Err(format!("{} got no answer in {ATTEMPTS_PER_KEY_MAX} attempts", key(pair, index)));
            }
            let addr = *address.read().map_err(|_| "address lock poisoned")?;
            match post(addr, pair, index).await {
                Ok(reply) if reply.status == 201 => {
                    answers.lock().map_err(|_| "answers lock poisoned")?.entry((pair, index)).or_default().push(reply);
                    break;
                }
                // In flight elsewhere (or orphaned by a kill until its lease lapses), or the store is busy.
                Ok(reply) if reply.status == 409 || reply.status == 503 => {
                    weather.conflicts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(reply) => return Err(format!("{}: unexpected answer {reply:?}", key(pair, index))),
                // The server is down or was killed mid-request: retry, as a real client would.
                Err(_) => {
                    weather.network_errors.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        index += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
    }
    Ok(index)
}
