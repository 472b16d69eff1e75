//! The consumer scenarios (issue 21, SPEC "Message consumers"): two hosts run the real
//! `idem_consumer::Consumer` against a simulated at-least-once broker and the store host,
//! while a publisher publishes a plan drawn from the seed and the faults of
//! [`ConsumerMix`] strike; a checker reads the history and the broker's final state.
//!
//! * `broker`, `broker_host`: the queue (ack-wait or channel-close) and its host.
//! * `transport`: `SimTransport` / `SimDelivery`, idem-consumer's transport trait over
//!   turmoil's TCP, every call under a timeout.
//! * `effects`: the effect row, and `RemoteStore` as an `AtomicStore` (rows and completion
//!   in one step on the store host).
//! * `handler`: the handler (and the planted variants' wrappers).
//! * `publisher`: the plan (the checker's oracle) and the publisher host.
//! * `faults`, `run`, `drive`: the faults, one run, and its driver striking the faults;
//!   `coverage`: the counters.
//! * The checker is `crate::check::messages`.

mod broker;
mod broker_host;
mod coverage;
mod drive;
mod effects;
mod events;
mod faults;
mod handler;
mod publisher;
mod run;
mod transport;

use std::time::Duration;

pub(crate) use broker::{Copy, Mode, Phase};
pub(crate) use effects::Effect;
pub(crate) use events::MsgEvent;
pub use faults::ConsumerMix;
pub(crate) use publisher::Planned;
pub(crate) use run::run;

use crate::Scenario;

/// A consumer scenario's settings. Times are simulated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    /// Separate mode: the handler writes its row alone, the consumer completes afterwards.
    pub(crate) separate: bool,
    pub(crate) consumers: usize,
    /// Message ids in the plan.
    pub(crate) ids: usize,
    /// The claim lease (renewed every third of it, with the broker's progress).
    pub(crate) lease: Duration,
    /// How long a channel-close broker waits for a silent consumer before it closes its
    /// channel (a RabbitMQ heartbeat timeout, much shortened).
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) store_call_timeout: Duration,
    /// Faults stop and every link and host is healthy again (skew stays) from here.
    pub(crate) heal_at: Duration,
    /// First copies are published before this; later copies and mismatches before `last_by`.
    pub(crate) first_by: Duration,
    pub(crate) last_by: Duration,
    /// G6: every copy is settled within this after healing or its publish, whichever is later.
    pub(crate) settle_bound: Duration,
    /// The publisher waits for every copy to be settled until this.
    pub(crate) run_for: Duration,
    pub(crate) skew_max: Duration,
    pub(crate) tick: Duration,
    pub(crate) duration_max: Duration,
}

impl Settings {
    const BASE: Settings = Settings {
        mode: Mode::AckWait,
        separate: false,
        consumers: 2,
        ids: 8,
        lease: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(1),
        store_call_timeout: Duration::from_millis(300),
        heal_at: Duration::from_secs(20),
        first_by: Duration::from_secs(15),
        last_by: Duration::from_secs(25),
        // After healing: a copy out to a consumer that crashed comes back after an ack wait
        // (2.7 s) or a channel close (1 s), meets a lease of at most 2 s plus twice the
        // largest skew, is naked for at most a lease, and a slow handler started before
        // healing runs up to three leases (6 s); then its ack. Twice that, rounded up.
        settle_bound: Duration::from_secs(20),
        run_for: Duration::from_secs(60),
        skew_max: Duration::from_millis(200),
        tick: Duration::from_millis(10),
        duration_max: Duration::from_secs(70),
    };

    pub(crate) fn of(scenario: Scenario) -> Settings {
        match scenario {
            Scenario::ConsumerChannelClose => Settings { mode: Mode::ChannelClose, ..Settings::BASE },
            Scenario::ConsumerSeparate => Settings { separate: true, ..Settings::BASE },
            _ => Settings::BASE,
        }
    }

    /// The broker's ack wait: one lease and one renewal interval (idem-core's recommendation).
    pub(crate) fn ack_wait(&self) -> Duration {
        self.lease + self.lease / 3
    }
}

// The last publish, then the bound, end before the publisher stops waiting, which is
// before turmoil would cut the run off.
const _: () = assert!(
    Settings::BASE.last_by.as_millis() + Settings::BASE.settle_bound.as_millis() <= Settings::BASE.run_for.as_millis()
);
const _: () = assert!(Settings::BASE.run_for.as_millis() < Settings::BASE.duration_max.as_millis());
const _: () = assert!(Settings::BASE.heal_at.as_millis() <= Settings::BASE.last_by.as_millis());
