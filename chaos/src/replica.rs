//! The `idem serve` replicas of one run: real processes on fixed loopback ports (a
//! restart comes back on the same address), killed, paused and restarted by the faults.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::ChaosError;
use crate::process::{Marks, Process};

/// How long a replica may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries to start a replica: a store that is itself starting (a PostgreSQL in recovery)
/// can make `idem serve` exit at start.
const START_TRIES: u32 = 5;
const START_PAUSE: Duration = Duration::from_millis(300);
/// The log line a replica writes when it takes over a lapsed claim (idem-http).
pub(crate) const TAKE_OVER_MARK: &str = "taking over a lapsed claim";

/// How a replica's process is started: the program and its leading arguments (`ip netns
/// exec <its host> <idem>`), then `serve --listen ADDR` and the run's arguments.
pub(crate) type Launch = Box<dyn Fn() -> Command + Send>;

/// One replica: its address and arguments, and its process while it runs.
pub(crate) struct Replica {
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
    launch: Launch,
    args: Vec<String>,
    process: Option<Process>,
    paused: bool,
    /// Take-overs logged by its earlier processes.
    takeovers_before: u64,
    /// Starts that failed (and were tried again), with why: `idem serve` exits at start
    /// when its store is itself still starting (issue 20).
    pub(crate) failed_starts: Vec<String>,
}

impl Replica {
    /// Starts replica `index` with `launch`, listening on `addr`, with `args` (store, lease, …).
    pub(crate) fn start(
        index: usize,
        addr: SocketAddr,
        launch: Launch,
        args: Vec<String>,
    ) -> Result<Replica, ChaosError> {
        let mut replica = Replica {
            index,
            addr,
            launch,
            args,
            process: None,
            paused: false,
            takeovers_before: 0,
            failed_starts: Vec::new(),
        };
        replica.start_again()?;
        Ok(replica)
    }

    /// Starts it again (it must be down), on the same address.
    pub(crate) fn start_again(&mut self) -> Result<(), ChaosError> {
        let mut last = None;
        for _ in 0..START_TRIES {
            let mut command = (self.launch)();
            command
                .args(["serve", "--listen", &self.addr.to_string()])
                .args(&self.args)
                .env("RUST_LOG", "info,idem_http=warn,sqlx=warn");
            let marks = Marks { ready: "listening on http://", counted: TAKE_OVER_MARK };
            match Process::spawn(&format!("replica-{}", self.index), command, marks, START_TIMEOUT) {
                Ok(process) => {
                    self.process = Some(process);
                    self.paused = false;
                    return Ok(());
                }
                Err(error) => {
                    let why = error.to_string();
                    let last_line = why.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
                    self.failed_starts.push(format!("{}: {last_line}", why.lines().next().unwrap_or_default()));
                    last = Some(error);
                }
            }
            std::thread::sleep(START_PAUSE);
        }
        Err(last.unwrap_or_else(|| ChaosError::Io("no start was tried".into())))
    }

    /// Whether its process runs (paused or not).
    pub(crate) fn is_up(&self) -> bool {
        self.process.is_some()
    }

    /// SIGKILL, no shutdown.
    pub(crate) fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            self.takeovers_before += process.counted();
            process.kill();
        }
        self.paused = false;
    }

    /// SIGSTOP: it keeps its sockets, connections and claims, and runs nothing.
    pub(crate) fn pause(&mut self) -> Result<(), ChaosError> {
        if let Some(process) = &self.process {
            process.signal("STOP")?;
            self.paused = true;
        }
        Ok(())
    }

    /// SIGCONT.
    pub(crate) fn resume(&mut self) -> Result<(), ChaosError> {
        if let Some(process) = &self.process
            && self.paused
        {
            process.signal("CONT")?;
        }
        self.paused = false;
        Ok(())
    }

    /// Back to running: resumed if paused, started if down.
    pub(crate) fn heal(&mut self) -> Result<(), ChaosError> {
        self.resume()?;
        if self.process.is_none() { self.start_again() } else { Ok(()) }
    }

    /// Take-overs it has logged, over all its processes.
    pub(crate) fn takeovers(&self) -> u64 {
        self.takeovers_before + self.process.as_ref().map_or(0, Process::counted)
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("index", &self.index).field("addr", &self.addr).finish_non_exhaustive()
    }
}
