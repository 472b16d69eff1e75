//! Starting a server process the test process owns: finding its binary, a directory and a
//! port of its own, the parent-death signal, and reading its log until it is ready and then
//! until it exits, on a thread of this crate (see the crate doc for why).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::{STARTUP_MAX, Started};

/// The start of every directory this crate makes under the temp dir; the process id follows.
const DIR_PREFIX: &str = "idem-testkit-";

/// Log lines kept for a failure's message.
const TAIL_LINES: usize = 20;

/// Where a program is looked for after `PATH`: system directories a user's `PATH` may lack
/// (Debian puts `nats-server` and `rabbitmq-server` in /usr/sbin).
const SYSTEM_DIRS: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// `name` on `PATH` or in [`SYSTEM_DIRS`], if there as an executable file.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file someone may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether the process runs as root (effective user id 0): the `Uid:` line of
/// /proc/self/status (real, effective, saved, filesystem), else `id -u`.
pub(crate) fn is_root() -> bool {
    let from_proc = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
        uids.split_whitespace().nth(1)?.parse::<u32>().ok()
    });
    let effective = from_proc.or_else(|| {
        let output = Command::new("id").arg("-u").stdin(Stdio::null()).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse::<u32>().ok()
    });
    effective == Some(0)
}

/// A command that runs `program` and is sent `signal` (a name `setpriv` knows: `KILL`,
/// `QUIT`) when the calling thread ends: `setpriv --pdeathsig <signal> -- <program>`. Without a
/// `setpriv` that knows `--pdeathsig`, plain `program` (said once on stderr).
pub(crate) fn dies_with_this_thread(program: &Path, signal: &str) -> Command {
    match setpriv() {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", signal, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The `setpriv` to start servers through, checked once by running `setpriv --pdeathsig
/// KILL -- true` (util-linux 2.33 and later know the option).
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let works = |setpriv: &PathBuf| {
                Command::new(setpriv)
                    .args(["--pdeathsig", "KILL", "--", "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            let found = find_program("setpriv").filter(works);
            if found.is_none() {
                eprintln!(
                    "idem-testkit: no `setpriv --pdeathsig` (Debian package util-linux): the test servers \
                     will outlive the test process; stop them by hand"
                );
            }
            found
        })
        .as_deref()
}

/// A fresh directory `idem-testkit-<pid>-<what>-<n>` under the temp dir. The first call in
/// the process first removes the directories of processes that are gone.
pub(crate) fn own_dir(what: &str) -> Result<PathBuf, String> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    SWEPT.get_or_init(remove_dirs_of_gone_processes);
    let name = format!("{DIR_PREFIX}{}-{what}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir().join(name);
    // The same name can only be left by an earlier process with our (reused) pid: it is gone.
    remove_dir_best_effort(&dir);
    std::fs::create_dir(&dir).map_err(|error| format!("cannot make the directory {}: {error}", dir.display()))?;
    Ok(dir)
}

/// Removes `dir` and everything in it; a failure only leaves it for the next sweep.
pub(crate) fn remove_dir_best_effort(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => eprintln!("idem-testkit: could not remove {}: {error}", dir.display()),
    }
}

/// Removes every `idem-testkit-<pid>-*` directory under the temp dir whose process is gone
/// (no /proc/<pid>). Only where /proc lists processes: elsewhere every pid would look gone.
fn remove_dirs_of_gone_processes() {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.map_while(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(DIR_PREFIX)?.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !proc.join(pid).exists() {
            remove_dir_best_effort(&entry.path());
        }
    }
}

/// A loopback port nobody listens on right now (the kernel's choice for port 0).
pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free loopback port: {error}"))
}

/// The last [`TAIL_LINES`] lines of a server's log, shared with the caller waiting for it
/// so that a timeout can quote them.
#[derive(Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, one per line, indented.
    pub(crate) fn quoted(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().map(|line| format!("\n    {line}")).collect()
    }
}

/// Which of its outputs a server logs to.
#[derive(Clone, Copy)]
pub(crate) enum LogOn {
    Stdout,
    Stderr,
}

/// How a server's start ended.
pub(crate) enum Launch {
    /// Its log said `ready`; it runs.
    Ready(Running),
    /// Its log said its port was taken; it exited.
    PortTaken,
    /// It could not be started or exited before it was ready; why, with its last log lines.
    Failed(String),
}

/// A server that said it was ready, and the rest of its log.
pub(crate) struct Running {
    child: Child,
    log: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
    tail: Tail,
}

/// Spawns `command` with its log on a pipe and reads the log until a line contains `ready`
/// (or `port_taken`, or the log ends because the server exited).
pub(crate) fn launch(mut command: Command, log_on: LogOn, ready: &str, port_taken: &str, tail: &Tail) -> Launch {
    command.stdin(Stdio::null());
    match log_on {
        LogOn::Stdout => command.stdout(Stdio::piped()).stderr(Stdio::null()),
        LogOn::Stderr => command.stdout(Stdio::null()).stderr(Stdio::piped()),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Launch::Failed(format!("cannot run {:?}: {error}", command.get_program())),
    };
    let log: Box<dyn Read + Send> = match log_on {
        LogOn::Stdout => Box::new(child.stdout.take().expect("stdout is piped")),
        LogOn::Stderr => Box::new(child.stderr.take().expect("stderr is piped")),
    };
    let mut log = BufReader::new(log).lines();
    let mut saw_port_taken = false;
    for line in log.by_ref().map_while(Result::ok) {
        let is_ready = line.contains(ready);
        saw_port_taken |= line.contains(port_taken);
        tail.push(line);
        if is_ready {
            return Launch::Ready(Running { child, log, tail: tail.clone() });
        }
    }
    // The log ended: the server exited (or closed its log, which these servers do not).
    let status = child.wait().map_or_else(|error| format!("unknown ({error})"), |status| status.to_string());
    if saw_port_taken {
        Launch::PortTaken
    } else {
        Launch::Failed(format!("it exited ({status}) before it was ready; its last log lines:{}", tail.quoted()))
    }
}

impl Running {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (SIGKILL) and reaps it, for a start that failed after it was ready.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reads the rest of the log until the server exits, keeping the calling thread (the one
    /// that started the server, whose end signals it) alive that long; then says on stderr
    /// that the server is gone, with its last lines, since later tests will fail to reach it.
    pub(crate) fn watch_until_exit(self, server: &str) {
        let tail = self.tail.clone();
        let (pid, status) = self.follow_until_exit();
        eprintln!(
            "idem-testkit: the throw-away {server} (pid {pid}) exited ({status}); its last log lines:{}",
            tail.quoted()
        );
    }

    /// Reads the rest of the log into the tail until the server exits; answers its process id
    /// and how it exited.
    pub(crate) fn follow_until_exit(mut self) -> (u32, String) {
        for line in self.log.by_ref().map_while(Result::ok) {
            self.tail.push(line);
        }
        let status = self.child.wait().map_or_else(|error| format!("unknown ({error})"), |status| status.to_string());
        (self.child.id(), status)
    }
}

/// Runs `start` on a new thread named `name`, which keeps running after the start as the
/// server's keeper; waits at most [`STARTUP_MAX`] for what it sends.
pub(crate) fn on_keeper_thread(
    name: &str,
    start: impl FnOnce(&Tail, mpsc::Sender<Result<Started, String>>) + Send + 'static,
) -> Result<Started, String> {
    let (answer, answered) = mpsc::channel();
    let tail = Tail::default();
    let kept_tail = tail.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || start(&kept_tail, answer))
        .map_err(|error| format!("cannot start the thread {name}: {error}"))?;
    match answered.recv_timeout(STARTUP_MAX) {
        Ok(outcome) => outcome,
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("not ready within {STARTUP_MAX:?}; the last log lines so far:{}", tail.quoted()))
        }
        Err(RecvTimeoutError::Disconnected) => Err(format!("the thread {name} ended without an answer (it panicked)")),
    }
}
