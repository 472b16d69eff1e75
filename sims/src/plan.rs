//! What the clients will do: each client's streams of operations, drawn from the seed.
//!
//! Clients vary what a real caller varies: the token (`alice` and `Alice` are two callers),
//! the auth scheme's spelling (`Bearer`, `bearer`, `BEARER`: one caller), a query string on
//! the URL, repeated request headers, a key reused with another request (body or query),
//! a double submit, an invalid body whose key is then reused with a valid one, and one key
//! string that every caller uses with the same body.

use bytes::Bytes;
use idem_core::Key;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::faults::ms;
use crate::scenario::Settings;

/// The clients' bearer tokens, one caller each; the first and the last differ only in case.
pub(crate) const TOKENS: [&str; 3] = ["alice", "bob", "Alice"];
/// With a recording limit (`oversized-responses`): the share of operations with a long
/// destination, and its length (the API allows 255 characters).
const LONG_DESTINATION_ODDS: f64 = 0.4;
const LONG_DESTINATION_CHARS: usize = 200;
/// How the auth scheme is spelled (RFC 9110 §11.1: case-insensitive).
const SCHEMES: [&str; 3] = ["Bearer", "bearer", "BEARER"];

/// One logical operation of a client: the same key and request on every submission.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) index: usize,
    pub(crate) start_ms: u64,
    /// The `Authorization` value, as sent.
    pub(crate) auth: String,
    pub(crate) key: Key,
    /// Path and query, as sent.
    pub(crate) target: String,
    pub(crate) body: Bytes,
}

/// A payment request body, as the simulated clients write it.
pub(crate) fn payment_body(amount_minor: u64, currency: &str, destination: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"amount":{}.{:02},"currency":"{currency}","destination":"{destination}"}}"#,
        amount_minor / 100,
        amount_minor % 100
    ))
}

fn auth(rng: &mut ChaCha8Rng, token: &str) -> String {
    format!("{} {token}", SCHEMES[rng.random_range(0..SCHEMES.len())])
}

fn target(rng: &mut ChaCha8Rng) -> String {
    if rng.random_bool(0.3) { format!("/payments?ref=r{:04x}", rng.random::<u16>()) } else { "/payments".to_owned() }
}

/// The operations of each client, per stream.
/// With `fresh_only`, every operation is a new one with its own body (the client picks
/// its keys, so no key is shared, reused or submitted twice).
pub(crate) fn plan(rng: &mut ChaCha8Rng, settings: &Settings, fresh_only: bool) -> Vec<Vec<Vec<Op>>> {
    let span_ms = ms(settings.last_start);
    let shared_key = format!("shared-{:08x}", rng.random::<u32>());
    let shared_body = payment_body(rng.random_range(100..=99_999), "USD", "merchant-shared");
    let mut plans = Vec::new();
    let mut index = 0;
    for client in 0..settings.clients {
        let token = TOKENS[client % TOKENS.len()];
        let mut streams = Vec::new();
        for stream in 0..settings.streams_per_client {
            let mut ops: Vec<Op> = Vec::new();
            for k in 0..settings.ops_per_stream {
                let slot = span_ms / settings.ops_per_stream as u64;
                let start_ms = slot * k as u64 + rng.random_range(0..slot);
                let amount = rng.random_range(100..=99_999);
                // Unique per operation, so a stored row names the request it came from.
                let mut destination = format!("m-c{client}-o{index}");
                if settings.response_body_bytes_max.is_some() && rng.random_bool(LONG_DESTINATION_ODDS) {
                    // The 201 echoes the destination: this one takes it past the recording limit.
                    destination = format!("{destination:-<LONG_DESTINATION_CHARS$}");
                }
                let duplicate =
                    streams.first().and_then(|first: &Vec<Op>| first.get(k)).filter(|_| rng.random_bool(0.3));
                let auth = auth(rng, token);
                let reused = ops.last().filter(|_| rng.random_bool(0.3));
                // Some requests are invalid (lower-case currency): 400, nothing recorded.
                let currency = if rng.random_bool(0.08) { "usd" } else { "USD" };
                let (key, target, body, start_ms) = if fresh_only {
                    let key = format!("c{client}s{stream}k{k}-{:08x}", rng.random::<u32>());
                    (key, target(rng), payment_body(amount, currency, &destination), start_ms)
                } else if stream == 0 && k == 1 {
                    // One key string for every caller, with one body: keys are scoped by caller.
                    (shared_key.clone(), "/payments".to_owned(), shared_body.clone(), start_ms)
                } else if let Some(original) = duplicate {
                    // The same operation sent twice at once (a double submit), perhaps with the
                    // scheme spelled otherwise: one key in flight twice, so one can take over.
                    let start_ms = original.start_ms + rng.random_range(0..1_500);
                    (original.key.as_str().to_owned(), original.target.clone(), original.body.clone(), start_ms)
                } else if let Some(previous) = reused {
                    reuse(rng, previous, amount, &destination, start_ms)
                } else {
                    let key = format!("c{client}s{stream}k{k}-{:08x}", rng.random::<u32>());
                    (key, target(rng), payment_body(amount, currency, &destination), start_ms)
                };
                let key = Key::try_from(key.as_str()).expect("generated keys are visible ASCII");
                ops.push(Op { index, start_ms, auth, key, target, body });
                index += 1;
            }
            streams.push(ops);
        }
        plans.push(streams);
    }
    if !fresh_only {
        late_retries(rng, settings, &mut plans, index);
    }
    plans
}

/// With tombstones (`tombstones`): each client gets one more stream, of `late_retries`
/// operations that send an earlier operation again, the same request under the same key
/// (its scheme perhaps spelled otherwise), started well after that one's retention; they
/// get the next operation indices from `index` on. Drawn after every other operation, so the
/// other scenarios' plans stay as they were.
fn late_retries(rng: &mut ChaCha8Rng, settings: &Settings, plans: &mut [Vec<Vec<Op>>], mut index: usize) {
    if settings.late_retries == 0 {
        return;
    }
    // Long enough after the original's start for a completion during the faults to pass
    // its retention, and no later than the last start a late retry may have.
    let after_ms = 2 * ms(settings.retention) + 3_000..=2 * ms(settings.retention) + 6_000;
    let last_ms = ms(settings.late_last_start);
    for (client, streams) in plans.iter_mut().enumerate() {
        let token = TOKENS[client % TOKENS.len()];
        let candidates: Vec<Op> =
            streams.iter().flatten().filter(|op| op.start_ms + after_ms.start() <= last_ms).cloned().collect();
        let mut late: Vec<Op> = Vec::new();
        for _ in 0..settings.late_retries.min(candidates.len()) {
            let original = &candidates[rng.random_range(0..candidates.len())];
            let start_ms = (original.start_ms + rng.random_range(after_ms.clone())).min(last_ms);
            let auth = auth(rng, token);
            late.push(Op { index, start_ms, auth, ..original.clone() });
            index += 1;
        }
        late.sort_by_key(|op| op.start_ms);
        streams.push(late);
    }
}

/// The previous operation's key with another request: another body (a 422, or an execution
/// if the first was released or invalid), or the same body at another URL (a 422 too).
fn reuse(
    rng: &mut ChaCha8Rng,
    previous: &Op,
    amount: u64,
    destination: &str,
    start_ms: u64,
) -> (String, String, Bytes, u64) {
    let key = previous.key.as_str().to_owned();
    if rng.random_bool(0.3) {
        let other =
            if previous.target == "/payments" { "/payments?ref=again".to_owned() } else { "/payments".to_owned() };
        (key, other, previous.body.clone(), start_ms)
    } else {
        (key, target(rng), payment_body(amount, "USD", destination), start_ms)
    }
}
