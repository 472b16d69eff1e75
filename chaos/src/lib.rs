//! A Jepsen-style harness of real processes (issue 20). Several `idem serve` replicas run
//! as child processes on a real store: one SQLite file shared on one host, a private
//! PostgreSQL (atomic mode) or a private Redis with the payments in the private
//! PostgreSQL (separate mode). Each replica is a host of its own on the harness's test
//! network (`network`: a namespace with a front link to the clients and a back link to
//! the stores). Clients on idem-client drive the simulation's workload (keys, reused keys,
//! double submits, several callers) while faults drawn from the seed strike: SIGKILL and
//! restart of a replica (inside a handler when one is running), SIGSTOP past the lease
//! then SIGCONT, every replica killed at once, a host that vanishes (frozen, cut off
//! without a FIN, killed), partitions between clients and a replica and between a
//! replica and the store, slow links, PostgreSQL stopped fast or immediate, Redis killed
//! with or without its data, SQLite's disk full, and a power loss (every process on the
//! host killed at once, SQLite's unsynced writes dropped). After healing, each caller's
//! payments are listed over HTTP and the store's rows read; the simulation's checker
//! ([`idem_sim::external::check`]) judges the history.
//!
//! A seed fixes the workload, the faults, when they are planned and which replica they
//! strike; it does not fix the timing of real processes (scheduling, fsync, start-up), so
//! a replayed seed runs the same faults, not the same interleaving.
//!
//! ```no_run
//! use idem_chaos::{Config, Harness, StoreKind};
//!
//! let config = Config::new("target/debug/idem".into(), StoreKind::Postgres);
//! let mut harness = Harness::start(config).expect("the store starts");
//! let report = harness.run(0).expect("the harness runs");
//! assert!(report.passed(), "{report}");
//! ```
//!
//! Every child is in a process group of its own and killed (with its group) when its
//! handle drops, also on a panic; the stores are stopped and their directories deleted
//! when the [`Harness`] drops. A harness killed with SIGKILL leaves them running.

mod audit;
mod client;
mod disk;
mod faults;
mod network;
mod power;
mod process;
mod replica;
mod report;
mod run;
mod services;
mod strike;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use faults::{Fault, FaultKind, Scheduled};
pub use report::{RunReport, Summary};
pub use run::{Harness, faults_of};

/// Which store the replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreKind {
    /// One SQLite file shared by the replicas on this host (atomic mode).
    Sqlite,
    /// A private PostgreSQL the harness starts (atomic mode).
    Postgres,
    /// A private Redis for the records, the payments in the private PostgreSQL (separate mode).
    Redis,
}

impl StoreKind {
    /// The names `FromStr` reads.
    pub const NAMES: [&'static str; 3] = ["sqlite", "postgres", "redis"];
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
        })
    }
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(given: &str) -> Result<StoreKind, String> {
        match given {
            "sqlite" => Ok(StoreKind::Sqlite),
            "postgres" => Ok(StoreKind::Postgres),
            "redis" => Ok(StoreKind::Redis),
            _ => Err(format!("unknown store {given:?}; one of: {}", StoreKind::NAMES.join(", "))),
        }
    }
}

/// A harness's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `idem` binary whose `serve` the replicas run.
    pub binary: PathBuf,
    /// The store.
    pub store: StoreKind,
    /// Replicas per run (1 to 8).
    pub replicas: usize,
    /// Faults per run (1 to 20), one after another.
    pub faults: usize,
    /// A bug planted behind the server's back, to show the checker catches it.
    pub plant: Option<Plant>,
    /// A rule of the store's own code planted wrong in every replica (`idem serve
    /// --plant-bug NAME`, PostgreSQL only), to show the harness catches a bug in real store
    /// code.
    pub server_bug: Option<String>,
}

impl Config {
    /// Three replicas, four faults, nothing planted.
    #[must_use]
    pub fn new(binary: PathBuf, store: StoreKind) -> Config {
        Config { binary, store, replicas: 3, faults: 4, plant: None, server_bug: None }
    }
}

/// A bug the harness plants itself, in the store's rows behind the server's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// After healing, before the audit, the first payment row is deleted straight from the
    /// store: an acknowledged write lost (G7, or G2: an answered payment never stored).
    LoseOnePayment,
    /// After healing, before the audit, the first payment row is copied under another
    /// payment id: a second payment for one key (G1; expected in separate mode).
    DuplicateOnePayment,
}

/// Why the harness could not run (not a broken guarantee).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Something the harness needs is not installed.
    #[error("not found: {0}")]
    Missing(String),
    /// A process could not be spawned.
    #[error("cannot spawn {0}: {1}")]
    Spawn(String, String),
    /// A process did not start, or a command failed; its last output lines follow.
    #[error("{0} {1}; its last lines:\n{2}")]
    Start(String, String, String),
    /// A signal could not be sent.
    #[error("cannot send {0}: {1}")]
    Signal(String, String),
    /// A file or socket operation failed.
    #[error("{0}")]
    Io(String),
    /// The store's rows could not be read.
    #[error("cannot read the payment rows: {0}")]
    Rows(String),
}
