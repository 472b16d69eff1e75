//! What a run reports: the fault mix, the trace, violations, coverage.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::check::Violation;
use crate::faults::FaultMix;
use std::collections::{BTreeMap, BTreeSet};

use idem_core::RecordId;

use crate::history::{Answer, Event, Held, Kind, StoreOp};
use crate::oracle::{is_key_expired, is_not_kept, payment_of};
use crate::{Scenario, Variant};

/// The readable event log of one run; the same seed gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    pub(crate) fn new(lines: Vec<String>) -> Trace {
        Trace { lines }
    }

    /// The lines, one event each.
    #[must_use]
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The first 8 bytes of the SHA-256 of the lines (each ended by a newline).
    #[must_use]
    pub fn hash(&self) -> u64 {
        let mut hasher = Sha256::new();
        for line in &self.lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

macro_rules! coverage {
    ($($(#[doc = $doc:literal])* $field:ident: $name:literal,)*) => {
        /// How often a run reached the paths the faults target. Summed over a sweep with `+`;
        /// a sweep whose counter stays at zero did not test that path.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Coverage {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Coverage {
            /// The counters' names, in [`Coverage::iter`] order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Each counter with its name.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$(($name, self.$field)),*].into_iter()
            }
        }

        impl Add for Coverage {
            type Output = Coverage;
            fn add(self, other: Coverage) -> Coverage {
                Coverage { $($field: self.$field + other.$field),* }
            }
        }
    };
}

coverage! {
    /// A claim whose lease had lapsed was taken over.
    take_over: "take-over",
    /// A renewal was refused (another claim took over, or the record is gone).
    renewal_refused: "renewal refused",
    /// A completion or release with a fence that is not current was refused.
    stale_completion_refused: "stale completion refused",
    /// A client got a replayed response.
    replay: "replay",
    /// A client got 409 (in progress).
    conflict_409: "409",
    /// A client got 422 (key reused with another body).
    mismatch_422: "422",
    /// A replica crashed while a handler ran on it.
    crash_in_handler: "crash during a handler",
    /// A completion's call to the store failed on the network (outcome unknown).
    partition_during_completion: "partition during completion",
    /// A client got 503 because the store was unreachable.
    store_unavailable_503: "store unreachable answered 503",
    /// A client got 400 for an invalid request.
    invalid_400: "400 for an invalid request",
    /// A caller's payments were listed over several pages after healing.
    list_paged: "list read over several pages",
    /// A volatile store host booted again, empty (`volatile-store`).
    store_lost_state: "store lost its state",
    /// A second payment in separate mode's window, reported as expected (`separate`).
    separate_window: "separate-mode window (expected)",
    /// A replay carried repeated headers (`separate`).
    repeated_headers_replayed: "replay with repeated headers",
    /// A purge removed expired records (`short-retention`).
    purged: "records purged",
    /// A key was claimed again after its record expired or was purged (`short-retention`).
    claimed_after_expiry: "key claimed again after expiry",
    /// A request read a record still in flight: waiting its turn (`conflict-wait`).
    waited_in_flight: "waited on a key in flight",
    /// The client sent an operation more than once on its own (`client-defaults`).
    client_retried: "client retried on its own",
    /// A handler answered 500 before its write (`handler-faults`).
    error_before_write: "500 before the write",
    /// A handler panicked before its write (`handler-faults`).
    panic_before_write: "panic before the write",
    /// A handler answered 500 after its write (`handler-faults`).
    error_after_write: "500 after the write",
    /// A handler panicked after its write (`handler-faults`).
    panic_after_write: "panic after the write",
    /// A response over the recording limit reached its first client whole (`oversized-responses`).
    oversized_answered_whole: "over the limit, answered whole",
    /// A retry got the `response-not-kept` problem (`oversized-responses`).
    not_kept_replayed: "retry answered response-not-kept",
    /// One group commit decided several idempotency operations (`sqlite-batch`).
    batched: "operations decided in one batch",
    /// A client got 410 (`key-expired`): its key's record had left only its tombstone (`tombstones`).
    gone_410: "410 for a tombstoned key",
    /// An ack deadline passed and the broker made the copy ready again (`consumer`).
    redelivered_after_ack_wait: "redelivered after ack timeout",
    /// A channel closed and the broker requeued a copy out on it (`consumer-channel-close`).
    redelivered_after_channel_close: "redelivered after channel close",
    /// A copy came back while its handler still ran: a lost progress (ack-wait) or a
    /// channel closed under it (channel-close) (consumers).
    redelivered_while_running: "redelivered while its handler ran",
    /// A delivery whose record was replayed was acked (consumers).
    replay_acked: "replay acked",
    /// A delivery whose claim met a claim in flight was naked (consumers).
    conflict_naked: "conflict naked",
    /// The broker dead-lettered a copy (consumers).
    dead_lettered: "dead-lettered",
    /// An ack was lost on the network or refused by the broker (consumers).
    ack_lost: "ack lost",
    /// A consumer crashed after the store committed its completion, before its ack (consumers).
    crash_after_commit: "crash between commit and ack",
    /// The broker held a second copy of one id and payload (consumers).
    duplicate_publish: "duplicate publish",
    /// The broker restarted an ack deadline on a consumer's progress (`consumer`).
    progress_sent: "progress sent",
    /// A handler failed (consumers).
    handler_failed: "handler failed",
}

impl AddAssign for Coverage {
    fn add_assign(&mut self, other: Coverage) {
        *self = *self + other;
    }
}

impl Coverage {
    /// The names of the counters `scenario` must reach (its own and the common ones), in
    /// [`Coverage::iter`] order.
    #[must_use]
    pub fn relevant(scenario: Scenario) -> Vec<&'static str> {
        if scenario.is_consumer() {
            return Coverage::relevant_to_consumers(scenario);
        }
        let own: &[&str] = match scenario {
            Scenario::Default | Scenario::ClientDefaults => &[],
            Scenario::VolatileStore => &["store lost its state"],
            Scenario::Separate | Scenario::RedisLua => {
                &["separate-mode window (expected)", "replay with repeated headers"]
            }
            Scenario::RedisLuaAtomic => &[],
            Scenario::SqliteBatch => &["operations decided in one batch"],
            Scenario::Tombstones => &["records purged", "410 for a tombstoned key"],
            Scenario::ShortRetention => &["records purged", "key claimed again after expiry"],
            Scenario::ConflictWait => &["waited on a key in flight"],
            Scenario::HandlerFaults => {
                &["500 before the write", "panic before the write", "500 after the write", "panic after the write"]
            }
            Scenario::OversizedResponses | Scenario::OversizedResponsesSeparate => {
                &["over the limit, answered whole", "retry answered response-not-kept"]
            }
            Scenario::Consumer | Scenario::ConsumerChannelClose | Scenario::ConsumerSeparate => &[],
        };
        let common =
            Coverage::NAMES.iter().position(|name| *name == "list read over several pages").map_or(0, |at| at + 1);
        let mut names: Vec<&str> = Coverage::NAMES[..common].to_vec();
        if scenario == Scenario::ClientDefaults {
            // Every operation has its own key: no key is reused, so no 422; the client
            // retries by itself.
            names.retain(|name| *name != "422");
            names.push("client retried on its own");
        }
        if matches!(
            scenario,
            Scenario::ClientDefaults | Scenario::Separate | Scenario::OversizedResponsesSeparate | Scenario::RedisLua
        ) {
            // A stale completion needs a take-over to land between a handler's last renewal
            // and its completion: about 1 run in 300 in separate mode (the layer completes
            // only after the handler), none seen with the client's long attempts. The
            // default scenario targets it.
            names.retain(|name| *name != "stale completion refused");
        }
        if scenario == Scenario::ConflictWait {
            // A request for a key in flight waits (up to 3 s) instead of a 409; the client's
            // attempt timeout ends most waits that would run out.
            names.retain(|name| *name != "409");
        }
        names.extend_from_slice(own);
        names
    }

    /// The consumer scenarios' counters: take-over and crash during a handler, then their own.
    fn relevant_to_consumers(scenario: Scenario) -> Vec<&'static str> {
        let mut names = vec![
            "take-over",
            "crash during a handler",
            "redelivered after ack timeout",
            "redelivered after channel close",
            "redelivered while its handler ran",
            "replay acked",
            "conflict naked",
            "dead-lettered",
            "ack lost",
            "crash between commit and ack",
            "duplicate publish",
            "progress sent",
            "handler failed",
        ];
        match scenario {
            // A RabbitMQ-like broker has neither ack deadlines nor progress.
            Scenario::ConsumerChannelClose => {
                names.retain(|name| !matches!(*name, "redelivered after ack timeout" | "progress sent"));
            }
            // A JetStream-like broker closes no channels.
            _ => names.retain(|name| *name != "redelivered after channel close"),
        }
        if scenario == Scenario::ConsumerSeparate {
            names.push("separate-mode window (expected)");
        }
        names
    }

    /// The names of the counters `scenario` must reach that are still at zero.
    #[must_use]
    pub fn zeros(&self, scenario: Scenario) -> Vec<&'static str> {
        let relevant = Coverage::relevant(scenario);
        self.iter().filter(|(name, count)| *count == 0 && relevant.contains(name)).map(|(name, _)| name).collect()
    }

    /// `limit`: the scenario's recording limit, if it sets one.
    pub(crate) fn of(events: &[Event], expected: usize, limit: Option<usize>) -> Coverage {
        let mut coverage = Coverage { separate_window: expected as u64, ..Coverage::default() };
        let mut completed: BTreeSet<&RecordId> = BTreeSet::new();
        let mut sends: BTreeMap<(usize, usize), u32> = BTreeMap::new();
        for event in events {
            coverage.count_scenario_paths(event, &mut completed, &mut sends);
            match &event.kind {
                Kind::Store(store) => match store.op {
                    StoreOp::Claim if store.answer.starts_with("TakeOver") => coverage.take_over += 1,
                    StoreOp::Renew if !store.applied => coverage.renewal_refused += 1,
                    StoreOp::Complete | StoreOp::CompleteInTransaction | StoreOp::Release
                        if !store.applied && store.before.fence().is_some_and(|held| Some(held) != store.presented) =>
                    {
                        coverage.stale_completion_refused += 1;
                    }
                    _ => {}
                },
                Kind::Answer { answer, .. } => {
                    coverage.count_not_kept(answer, limit);
                    coverage.count_status(answer);
                }
                Kind::Fault(text) if text.contains("in a handler") => coverage.crash_in_handler += 1,
                Kind::Batch { .. } => coverage.batched += 1,
                Kind::StoreCallFailed { op: "complete-with-payment" | "complete", .. } => {
                    coverage.partition_during_completion += 1;
                }
                _ => {}
            }
        }
        coverage.client_retried = sends.values().filter(|count| **count > 1).count() as u64;
        coverage
    }

    /// The answers of the oversized scenarios: a 201 longer than the limit answered whole
    /// (the first client's), and the `response-not-kept` problem (a retry's).
    fn count_not_kept(&mut self, answer: &Answer, limit: Option<usize>) {
        let Some(limit) = limit else { return };
        if answer.status == 201 && !answer.replayed && answer.body.len() > limit && payment_of(&answer.body).is_some() {
            self.oversized_answered_whole += 1;
        }
        if is_not_kept(&answer.body) {
            self.not_kept_replayed += 1;
        }
    }

    fn count_status(&mut self, answer: &Answer) {
        match answer.status {
            409 => self.conflict_409 += 1,
            422 => self.mismatch_422 += 1,
            503 => self.store_unavailable_503 += 1,
            400 => self.invalid_400 += 1,
            410 if is_key_expired(&answer.body) => self.gone_410 += 1,
            _ if answer.replayed => self.replay += 1,
            _ => {}
        }
    }

    /// The counters of the scenarios' own paths.
    fn count_scenario_paths<'a>(
        &mut self,
        event: &'a Event,
        completed: &mut BTreeSet<&'a RecordId>,
        sends: &mut BTreeMap<(usize, usize), u32>,
    ) {
        match &event.kind {
            Kind::Store(store) => {
                if store.epoch > 0 && self.store_lost_state == 0 {
                    self.store_lost_state = 1;
                }
                match store.op {
                    StoreOp::Complete | StoreOp::CompleteInTransaction if store.applied => {
                        completed.insert(&store.id);
                    }
                    StoreOp::Claim
                        if store.before == Held::Absent && store.issued.is_some() && completed.remove(&store.id) =>
                    {
                        self.claimed_after_expiry += 1;
                    }
                    StoreOp::Get if matches!(store.before, Held::InFlight(_)) => self.waited_in_flight += 1,
                    _ => {}
                }
            }
            Kind::Purged { count } => self.purged += *count as u64,
            Kind::Send { client, op, .. } => *sends.entry((*client, *op)).or_default() += 1,
            Kind::Listed { pages, .. } if *pages > 1 => self.list_paged += 1,
            Kind::Answer { answer, .. }
                if answer.replayed && answer.headers.iter().filter(|(name, _)| name == "link").count() > 1 =>
            {
                self.repeated_headers_replayed += 1;
            }
            Kind::Fault(text) => match text.as_str() {
                "handler fault: 500 before its write" => self.error_before_write += 1,
                "handler fault: panic before its write" => self.panic_before_write += 1,
                "handler fault: 500 after its write" => self.error_after_write += 1,
                "handler fault: panic after its write" => self.panic_after_write += 1,
                _ => {}
            },
            _ => {}
        }
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The code under test.
    pub variant: Variant,
    /// The faults this seed drew.
    pub faults: FaultMix,
    /// The event log (its first lines name the seed and the mix).
    pub trace: Trace,
    /// What the checker found; empty when every guarantee held.
    pub violations: Vec<Violation>,
    /// What the scenario's mode does not promise (SPEC: separate mode's G1 window): found,
    /// reported, and not a failure.
    pub expected: Vec<Violation>,
    /// Which targeted paths the run reached.
    pub coverage: Coverage,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl RunReport {
    /// Whether every guarantee held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run with its trace.
    #[must_use]
    pub fn replay_command(&self) -> String {
        crate::replay_command(self.seed, self.scenario, self.variant)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        writeln!(
            f,
            "seed {} ({} / {}): {verdict} in {:.1} simulated s, trace {:016x}",
            self.seed,
            self.scenario,
            self.variant,
            self.simulated.as_secs_f64(),
            self.trace.hash()
        )?;
        writeln!(f, "  faults: {}", self.faults)?;
        for violation in &self.violations {
            write!(f, "  {violation}")?;
        }
        if !self.expected.is_empty() {
            writeln!(f, "  expected in this mode (not a failure): {} counterexample(s)", self.expected.len())?;
        }
        if !self.passed() {
            writeln!(f, "  replay: {}", self.replay_command())?;
        }
        Ok(())
    }
}
