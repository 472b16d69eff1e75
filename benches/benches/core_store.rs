//! claim+complete on `MemoryStore` against a plain `Mutex<HashMap>` doing the same
//! insert+update, on one thread and on two contending threads, in the same run.
//!
//! Run: `cargo bench -p idem-benches --bench core_store`, then
//! `python3 benches/report.py claim_complete` for the ratios.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use idem_core::{
    Bytes, Decision, Fenced, Fingerprint, Key, Limits, MemoryStore, Policy, Principal, RecordId, Store, StoredResponse,
    Timestamp,
};
use pollster::block_on;

/// What the baseline keeps per id: the same facts a record holds.
struct PlainEntry {
    fingerprint: Fingerprint,
    fence: u64,
    response: Option<StoredResponse>,
}

/// The baseline: a map behind a lock, insert on claim, update on completion, no decisions.
#[derive(Default)]
struct PlainMap {
    entries: Mutex<HashMap<RecordId, PlainEntry>>,
}

impl PlainMap {
    fn claim_complete(&self, id: &RecordId, fingerprint: &Fingerprint, fence: u64, response: &StoredResponse) {
        let mut entries = self.entries.lock().expect("no panics while locked");
        entries.insert(id.clone(), PlainEntry { fingerprint: *fingerprint, fence, response: None });
        drop(entries);
        let mut entries = self.entries.lock().expect("no panics while locked");
        let entry = entries.get_mut(id).expect("just inserted");
        black_box((&entry.fingerprint, entry.fence));
        entry.response = Some(response.clone());
    }
}

fn unbounded_store() -> MemoryStore {
    MemoryStore::new(Limits { records_max: u64::MAX, stored_bytes_max: u64::MAX })
}

fn store_claim_complete(store: &MemoryStore, id: &RecordId, fingerprint: &Fingerprint, response: &StoredResponse) {
    let (now, policy) = (Timestamp::from_unix_ms(1), Policy::DEFAULT);
    let Decision::Execute(claim) = block_on(store.claim(id, fingerprint, now, &policy)).expect("unbounded") else {
        unreachable!("every id is new")
    };
    let fenced = block_on(store.complete(id, claim.fence, response.clone(), now, &policy)).expect("unbounded");
    assert_eq!(fenced, Fenced::Applied, "nobody else claims these ids");
}

fn ids(count: u64, thread: usize) -> Vec<RecordId> {
    let principal = Principal::new("bench-principal").expect("valid");
    (0..count)
        .map(|n| RecordId::new(principal.clone(), Key::try_from(format!("t{thread}-{n}").as_str()).expect("valid")))
        .collect()
}

fn response() -> StoredResponse {
    let mut response = StoredResponse::new(201, Bytes::from_static(br#"{"payment_id":"pay_1","status":"PENDING"}"#));
    response.headers.push(("content-type".into(), Bytes::from_static(b"application/json")));
    response
}

/// Times `threads` threads, each running `op` over its own ids, started together.
fn timed<T: Sync>(iters: u64, threads: usize, target: &T, op: impl Fn(&T, &RecordId) + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let work: Vec<Vec<RecordId>> = (0..threads).map(|t| ids(per_thread, t)).collect();
    let barrier = Barrier::new(threads + 1);
    thread::scope(|scope| {
        for ids in &work {
            let (barrier, op) = (&barrier, &op);
            scope.spawn(move || {
                barrier.wait();
                for id in ids {
                    op(target, id);
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning, so the time covers all work.
        start
    })
    .elapsed()
}

fn claim_complete(c: &mut Criterion) {
    let fingerprint = Fingerprint::of("POST", "/payments", br#"{"amount":100.00}"#);
    let response = response();
    let mut group = c.benchmark_group("claim_complete");
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new("plain_map", format!("{threads}_threads")), |b| {
            b.iter_custom(|iters| {
                let map = Arc::new(PlainMap::default());
                let fence = std::sync::atomic::AtomicU64::new(1);
                timed(iters, threads, &*map, |map, id| {
                    let f = fence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    map.claim_complete(id, &fingerprint, f, &response);
                })
            });
        });
        group.bench_function(BenchmarkId::new("memory_store", format!("{threads}_threads")), |b| {
            b.iter_custom(|iters| {
                let store = unbounded_store();
                timed(iters, threads, &store, |store, id| store_claim_complete(store, id, &fingerprint, &response))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, claim_complete);
criterion_main!(benches);
