//! A real HTTP server on loopback around the layer, a real HTTP client, a test app whose
//! handlers count their side effects, and a store wrapper that counts calls and injects
//! faults (it delegates to the real `MemoryStore`; it replaces nothing).

#![allow(dead_code, unreachable_pub)] // each test file uses a different part of the support

mod harness;
mod routes;
mod store;

// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use harness::{Harness, Reply, problem_type};
#[allow(unused_imports)]
pub use routes::{Counters, app, serve};
#[allow(unused_imports)]
pub use store::{TestStore, TokioClock, anonymous};
