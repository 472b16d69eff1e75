//! A stateright model of the idempotency-key protocol that drives idem-core itself.
//!
//! (Header completed below.)

mod checking;
mod config;
mod model;
pub mod properties;
mod state;
mod story;

pub use checking::{
    Outcome, RunningChecker, Search, SearchError, Strategy, Verdict, join, shortest_discovery, spawn, verdicts,
};
pub use config::{ACTORS_MAX, Config, ConfigError, FAULTS_MAX, Mode, NetworkKind, Variant};
pub use model::{Action, IdemModel, LEASE, Operation, RETENTION, SendKind};
pub use state::{
    Answer, Broken, Budgets, Execution, Ghost, Handler, Message, OpIndex, OpState, Serial, Server, ServerIndex, Slot,
    Stage, State, Store, StoredRecord,
};
pub use story::story;
