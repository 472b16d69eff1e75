//! PostgresStore against idem-core's MemoryStore (`idem_core::differential`): the same random
//! operations give the same outcomes, records, errors and usage totals (fences compared by
//! rank: `common/differential.rs`). MemoryStore is I/O around `idem_core::step`, and so is
//! PostgresStore, except its guarded completion, which restates the step's completion rules
//! in one SQL statement; this pins that SQL and everything around the step to the core, and
//! `src/planted.rs` shows the check catches rules planted wrong in the SQL.

mod common;
#[path = "common/differential.rs"]
mod differential;

/// Random operation sequences, about 20 operations each.
const CASES: u32 = 1000;

/// Their seed: fixed, so a failure replays; other than `src/planted.rs`'s, so the two
/// checks of the shipped SQL see different histories.
const SEED: [u8; 32] = *b"idem-postgres differential seed1";

#[test]
fn postgres_store_answers_like_memory_store() {
    // Goal: for any sequence of claims, completions, releases, renewals, reads, purges and
    // clock steps, PostgresStore answers exactly as the reference MemoryStore does
    // (decisions, fences by rank, refusals, renewals, stored records, Full errors), and its
    // usage shards and its rows both sum to MemoryStore's totals.
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
    let store = runtime.block_on(differential::open(&common::url(), &schema));
    eprintln!("seed {:?}, {CASES} cases", String::from_utf8_lossy(&SEED));
    let outcome = differential::check(&runtime, &store, SEED, CASES);
    runtime.block_on(store.close());
    if let Err(error) = outcome {
        panic!("PostgresStore answered unlike MemoryStore: {error}");
    }
}
