//! Child processes the harness owns: each in a process group of its own, its output
//! drained into a bounded tail (so it never blocks on a full pipe), killed with its group
//! when dropped, also when the harness panics. Signals go through kill(1): the workspace
//! forbids `unsafe`, and std sends only SIGKILL.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ChaosError;

/// Output lines kept per process, for a report when it misbehaves.
const TAIL_LINES: usize = 40;
/// How often a start waits before looking at the output again.
const START_POLL: Duration = Duration::from_millis(20);

/// What a process wrote: its last lines, and how many lines matched the counted marker.
#[derive(Debug, Default)]
struct Output {
    tail: VecDeque<String>,
    counted: u64,
    seen_ready: bool,
}

/// A running child process (and its process group).
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    child: Child,
    output: Arc<Mutex<Output>>,
}

/// How a process is recognised as ready, and which of its lines are counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    /// A line containing this means the process is ready.
    pub(crate) ready: &'static str,
    /// Lines containing this are counted (e.g. take-overs in a replica's log).
    pub(crate) counted: &'static str,
}

impl Process {
    /// Spawns `command` in a new process group, drains its stdout and stderr, and waits up
    /// to `timeout` for a line containing `marks.ready`.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        marks: Marks,
        timeout: Duration,
    ) -> Result<Process, ChaosError> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = command.spawn().map_err(|error| ChaosError::Spawn(name.to_owned(), error.to_string()))?;
        let output = Arc::new(Mutex::new(Output::default()));
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, Arc::clone(&output), marks);
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, Arc::clone(&output), marks);
        }
        let mut process = Process { name: name.to_owned(), child, output };
        process.wait_ready(timeout)?;
        Ok(process)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), ChaosError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lock().seen_ready {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the drain threads a moment to read the last lines.
                std::thread::sleep(START_POLL);
                return Err(ChaosError::Start(
                    self.name.clone(),
                    format!("exited with {status}"),
                    self.tail().join("\n"),
                ));
            }
            std::thread::sleep(START_POLL);
        }
        Err(ChaosError::Start(self.name.clone(), format!("not ready within {timeout:?}"), self.tail().join("\n")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The process's id (also its process group's).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines matching the counted marker so far.
    pub(crate) fn counted(&self) -> u64 {
        self.lock().counted
    }

    /// The last lines it wrote.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.lock().tail.iter().cloned().collect()
    }

    /// Sends `signal` (a name kill(1) knows: STOP, CONT, KILL) to the process.
    pub(crate) fn signal(&self, signal: &str) -> Result<(), ChaosError> {
        send_signal(signal, &self.pid().to_string())
            .map_err(|why| ChaosError::Signal(format!("{signal} to {} ({})", self.name, self.pid()), why))
    }

    /// SIGKILL to its whole process group, then reaps it.
    pub(crate) fn kill(mut self) {
        self.kill_group();
    }

    fn kill_group(&mut self) {
        // The group first (children it may have started), then the child itself.
        let _ = send_signal("KILL", &format!("-{}", self.pid()));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Runs `kill -s SIGNAL -- TARGET` (a pid, or `-PGID` for a group).
fn send_signal(signal: &str, target: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|error| format!("kill(1) did not run: {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("kill(1) {status}")) }
}

/// Reads `from` line by line until it closes, into `output`.
fn drain(from: impl Read + Send + 'static, output: Arc<Mutex<Output>>, marks: Marks) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut output = output.lock().unwrap_or_else(PoisonError::into_inner);
            output.seen_ready |= line.contains(marks.ready);
            if !marks.counted.is_empty() && line.contains(marks.counted) {
                output.counted += 1;
            }
            if output.tail.len() == TAIL_LINES {
                output.tail.pop_front();
            }
            output.tail.push_back(line);
        }
    });
}

/// Runs a command to its end within `timeout` (killed past it); its output on failure.
pub(crate) fn run_to_end(what: &str, mut command: Command, timeout: Duration) -> Result<(), ChaosError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = command.spawn().map_err(|error| ChaosError::Spawn(what.to_owned(), error.to_string()))?;
    let output = Arc::new(Mutex::new(Output::default()));
    let marks = Marks { ready: "\u{0}", counted: "" };
    if let Some(stdout) = child.stdout.take() {
        drain(stdout, Arc::clone(&output), marks);
    }
    if let Some(stderr) = child.stderr.take() {
        drain(stderr, Arc::clone(&output), marks);
    }
    let deadline = Instant::now() + timeout;
    let tail =
        || output.lock().unwrap_or_else(PoisonError::into_inner).tail.iter().cloned().collect::<Vec<_>>().join("\n");
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                std::thread::sleep(START_POLL);
                return Err(ChaosError::Start(what.to_owned(), format!("exited with {status}"), tail()));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(START_POLL),
            _ => {
                let _ = send_signal("KILL", &format!("-{}", child.id()));
                let _ = child.kill();
                let _ = child.wait();
                return Err(ChaosError::Start(what.to_owned(), format!("did not finish within {timeout:?}"), tail()));
            }
        }
    }
}
