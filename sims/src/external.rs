//! The simulation's workload and history checker for a harness outside it (issue 20:
//! `idem-chaos` runs real `idem serve` processes on real stores). The harness draws the
//! same operations ([`plan`]), records the same history ([`History`]) from what its
//! clients sent and saw, the store's rows and each caller's list read after healing, and
//! checks it with the same checker ([`check`]), oracles and stories included.
//!
//! What an outside harness cannot see is left out of the history: the store's own events
//! (claims, fences: G3, G8) and executions. The checks that read them find nothing to
//! judge; every other check runs as in the simulation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use crate::check::{self, Violation};
use crate::history::{Answer, Event, Kind, Recorder, Row};
use crate::scenario::{Scenario, Settings};

/// The shape and timing of a run, as the checker judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Callers (tokens `alice`, `bob`, `Alice`, in that order; at most three).
    pub clients: usize,
    /// Concurrent streams per caller.
    pub streams_per_client: usize,
    /// Operations per stream.
    pub ops_per_stream: usize,
    /// Operations start until this time after the run's start.
    pub last_start: Duration,
    /// Faults end and everything is up again from here (G6 counts from here).
    pub heal_at: Duration,
    /// G6: every operation ends within this after `max(its start, heal_at)`.
    pub progress_bound: Duration,
    /// How long a completed key is remembered (two payments of one key further apart
    /// than this are two record lifetimes).
    pub retention: Duration,
    /// The largest clock difference between two replicas (zero on one host).
    pub skew_max: Duration,
    /// Separate mode (records and rows commit apart): a second payment for one key is
    /// SPEC's expected counterexample, reported apart, not a violation.
    pub separate: bool,
}

impl Bounds {
    fn settings(&self) -> Settings {
        Settings {
            scenario: if self.separate { Scenario::Separate } else { Scenario::Default },
            clients: self.clients.min(crate::plan::TOKENS.len()),
            streams_per_client: self.streams_per_client,
            ops_per_stream: self.ops_per_stream,
            last_start: self.last_start,
            heal_at: self.heal_at,
            progress_bound: self.progress_bound,
            retention: self.retention,
            skew_max: self.skew_max,
            separate: self.separate,
            ..Settings::DEFAULT
        }
    }
}

/// One operation of the workload: the same key and request on every submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    /// The caller's index (0..clients).
    pub client: usize,
    /// The operation's number, unique in the run.
    pub index: usize,
    /// When it starts, after the run's start.
    pub start: Duration,
    /// The `Authorization` value, as sent.
    pub auth: String,
    /// The idempotency key.
    pub key: String,
    /// Path and query, as sent (`/payments…`).
    pub target: String,
    /// The JSON body, as sent.
    pub body: Bytes,
}

/// The simulation's workload for `seed`: per caller, per stream, the operations in order
/// (keys reused with another request, double submits, a key every caller uses, invalid
/// bodies), drawn from a ChaCha stream of the seed.
#[must_use]
pub fn plan(seed: u64, bounds: &Bounds) -> Vec<Vec<Vec<PlannedOp>>> {
    let settings = bounds.settings();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plans = crate::plan::plan(&mut rng, &settings, false);
    plans
        .into_iter()
        .enumerate()
        .map(|(client, streams)| {
            streams
                .into_iter()
                .map(|ops| {
                    ops.into_iter()
                        .map(|op| PlannedOp {
                            client,
                            index: op.index,
                            start: Duration::from_millis(op.start_ms),
                            auth: op.auth,
                            key: op.key.as_str().to_owned(),
                            target: op.target,
                            body: op.body,
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The bearer tokens of the first `clients` callers, as the auditor lists them.
#[must_use]
pub fn tokens(clients: usize) -> Vec<&'static str> {
    crate::plan::TOKENS[..clients.min(crate::plan::TOKENS.len())].to_vec()
}

/// A payment row as read from the store after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// The row's owner as the server stored it (opaque to the checker).
    pub owner: String,
    /// The payment's id.
    pub payment_id: String,
    /// The amount in cents.
    pub amount_minor: u64,
    /// The currency code.
    pub currency: String,
    /// The destination (unique per operation: it ties a row to its request).
    pub destination: String,
}

/// The history of one run, recorded from several threads; times are milliseconds since
/// [`History::new`]. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct History {
    recorder: Recorder,
    started: Arc<Instant>,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    /// An empty history starting now.
    #[must_use]
    pub fn new() -> History {
        History { recorder: Recorder::default(), started: Arc::new(Instant::now()) }
    }

    /// Milliseconds since the run started.
    #[must_use]
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, kind: Kind) {
        self.recorder.record_at(self.elapsed_ms(), kind);
    }

    /// A fault injected or reverted, as text.
    pub fn fault(&self, text: impl Into<String>) {
        self.record(Kind::Fault(text.into()));
    }

    /// A (re)submission of `op`: what is sent, as sent.
    pub fn invoke(&self, op: &PlannedOp, submission: u32) {
        self.record(Kind::Invoke {
            client: op.client,
            op: op.index,
            submission,
            auth: op.auth.clone(),
            key: op.key.clone(),
            target: op.target.clone(),
            body: op.body.clone(),
        });
    }

    /// An attempt of `op` left for `replica` with `key` on the wire.
    pub fn send(&self, client: usize, op: usize, replica: usize, key: &str) {
        self.record(Kind::Send { client, op, replica, key: key.trim_matches('"').to_owned() });
    }

    /// An attempt's answer, read whole. The headers a replay must repeat are kept in
    /// order: all but `date`, `content-length`, the key echo and `idempotent-replayed`.
    pub fn answer(&self, client: usize, op: usize, replica: usize, parts: &http::response::Parts, body: Bytes) {
        let replayed = parts.headers.get("idempotent-replayed").is_some_and(|value| value == "true");
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(name.as_str(), "date" | "content-length" | "idempotency-key" | "idempotent-replayed")
            })
            .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
            .collect();
        let answer = Answer { status: parts.status.as_u16(), replayed, headers, body };
        self.record(Kind::Answer { client, op, replica, answer });
    }

    /// An attempt lost on the transport or cut off by the client's timeout.
    pub fn lost(&self, client: usize, op: usize, replica: usize, why: impl Into<String>) {
        self.record(Kind::Lost { client, op, replica, why: why.into() });
    }

    /// A submission ended with an error from the client layer.
    pub fn failed(&self, client: usize, op: usize, why: impl Into<String>) {
        self.record(Kind::Failed { client, op, why: why.into() });
    }

    /// An operation ended with an answer's status, or gave up (`None`).
    pub fn end(&self, client: usize, op: usize, status: Option<u16>) {
        self.record(Kind::End { client, op, status });
    }

    /// A payment row read from the store after healing.
    pub fn row(&self, row: StoredRow) {
        let StoredRow { owner, payment_id, amount_minor, currency, destination } = row;
        let row = Row {
            epoch: 0,
            via: "the store, read after healing",
            owner,
            payment_id,
            amount_minor,
            currency,
            destination,
        };
        self.record(Kind::Row(Box::new(row)));
    }

    /// A caller's payments as a user listed them after healing, page by page: the items as
    /// answered, or `None` when a page could not be read.
    pub fn listed(&self, auth: &str, pages: u32, items: Option<Vec<Bytes>>) {
        self.record(Kind::Listed { auth: auth.to_owned(), pages, items });
    }

    fn events(&self) -> Vec<Event> {
        let events = self.recorder.take();
        for event in &events {
            self.recorder.record_at(event.at_ms, event.kind.clone());
        }
        events
    }

    /// The history as text, one event a line (the run's trace).
    #[must_use]
    pub fn trace(&self) -> Vec<String> {
        self.events().iter().map(ToString::to_string).collect()
    }
}

/// What the checker found in an outside history.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// Broken guarantees, each with its story.
    pub violations: Vec<Violation>,
    /// Counterexamples the mode does not exclude (separate mode's G1 window): not failures.
    pub expected: Vec<Violation>,
}

/// Checks `history` with the simulation's checker (G1, G2, G4, G5, G6, G7; G3 and G8 need
/// the store's events, which an outside harness does not see); `run_error` says why the
/// run was cut off, if it was (a G6 violation).
#[must_use]
pub fn check(history: &History, bounds: &Bounds, run_error: Option<&str>) -> Checked {
    let mut events = history.events();
    // Events from several threads: the recorder's order is the order they were recorded
    // in, the times are taken before the lock; sort by time, stably.
    events.sort_by_key(|event| event.at_ms);
    let settings = bounds.settings();
    let checked = check::check(&events, &settings, 0, run_error);
    Checked { violations: checked.violations, expected: checked.expected }
}
