//! A throw-away PostgreSQL cluster: `initdb`, `postgres` on a free port, `createdb test`;
//! stopped and started again on request ([`PostgresCluster`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::process::{self, Launch, LogOn, Running, Tail};
use crate::{PORT_ATTEMPTS, STARTUP_MAX, Started};

/// What a root process uses instead of a cluster of its own (PostgreSQL refuses to run as
/// root): the machine's server on the default port, as `.ci/run` starts it.
pub const ROOT_FALLBACK_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The Debian package with `initdb` and `postgres` (it pulls in the versioned server and
/// client packages).
const PACKAGE: &str = "postgresql";

/// The server's log line once it takes connections (with `lc_messages=C`; PostgreSQL 10+).
const READY: &str = "database system is ready to accept connections";

/// The server's log line when another process holds its port.
const PORT_TAKEN: &str = "Address already in use";

/// The database made in the cluster, as in the URL every test used before.
const DATABASE: &str = "test";

/// The programs a cluster takes.
#[derive(Clone)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
    createdb: PathBuf,
    /// For [`PostgresCluster::stop`]: it shuts the server down and waits until it is down.
    pg_ctl: PathBuf,
}

/// The throw-away cluster of this process, once it is up.
pub(crate) static CLUSTER: OnceLock<PostgresCluster> = OnceLock::new();

/// What the keeper thread is asked to do: start the server again, answering how that went.
type StartOrder = mpsc::Sender<Result<(), String>>;

/// The throw-away cluster behind [`crate::postgres_url`], for a test of what its clients do
/// while the server is down: [`stop`](PostgresCluster::stop) shuts it down (fast shutdown,
/// as `pg_ctlcluster stop` does), [`start`](PostgresCluster::start) starts it again on the
/// same port and data directory, so the URL and every row stay valid.
///
/// The server is started again by the thread that started it first (its keeper), so it still
/// dies with the test process; see the crate docs.
pub struct PostgresCluster {
    port: u16,
    data: PathBuf,
    pg_ctl: PathBuf,
    /// Set by `stop` before the shutdown, so the keeper takes the exit for a requested one.
    stop_asked: std::sync::Arc<AtomicBool>,
    /// Whether `stop` succeeded and no `start` since: `start` refuses a running server.
    /// The lock also keeps one `stop` or `start` at a time.
    stopped: Mutex<bool>,
    orders: Mutex<mpsc::Sender<StartOrder>>,
}

impl PostgresCluster {
    /// The port the server listens on, the same after every start.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shuts the server down (`pg_ctl stop -m fast`: open sessions are ended) and returns once
    /// it is down, at most [`STARTUP_MAX`] later.
    ///
    /// # Errors
    ///
    /// When it is stopped already, or `pg_ctl` failed (its output is quoted).
    pub fn stop(&self) -> Result<(), String> {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return Err("the throw-away PostgreSQL is stopped already".to_owned());
        }
        // Before the shutdown: the keeper may see the exit before `pg_ctl` returns.
        self.stop_asked.store(true, Ordering::SeqCst);
        let outcome = Command::new(&self.pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", &STARTUP_MAX.as_secs().to_string()])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", self.pg_ctl.display()))
            .and_then(|output| {
                if output.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} stop failed ({}): {}",
                        self.pg_ctl.display(),
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                }
            });
        if outcome.is_err() {
            // The server still runs: a later exit is not one a test asked for.
            self.stop_asked.store(false, Ordering::SeqCst);
        }
        *stopped = outcome.is_ok();
        outcome
    }

    /// Starts the stopped server again on the same port and data directory; returns once it
    /// accepts connections, at most [`STARTUP_MAX`] later.
    ///
    /// # Errors
    ///
    /// When it is not stopped, or it did not come up (with its last log lines).
    pub fn start(&self) -> Result<(), String> {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*stopped {
            return Err("the throw-away PostgreSQL is running; stop it first".to_owned());
        }
        let (answer, answered) = mpsc::channel();
        self.orders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(answer)
            .map_err(|_| "the throw-away PostgreSQL's keeper thread is gone".to_owned())?;
        let outcome = match answered.recv_timeout(STARTUP_MAX) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => Err(format!("not ready within {STARTUP_MAX:?} of the start")),
            Err(RecvTimeoutError::Disconnected) => Err("the keeper thread ended without an answer".to_owned()),
        };
        *stopped = outcome.is_err();
        outcome
    }
}

/// As root, [`ROOT_FALLBACK_URL`]; otherwise a throw-away cluster's database `test`.
pub(crate) fn throw_away_or_root_fallback() -> Result<Started, String> {
    if process::is_root() {
        return Ok(Started {
            url: ROOT_FALLBACK_URL.to_owned(),
            how: "running as root, which PostgreSQL refuses, so not a throw-away cluster but the machine's \
                  server on the default port; .ci/run starts it"
                .to_owned(),
        });
    }
    let binaries = binaries()?;
    process::on_keeper_thread("idem-testkit-postgres", move |tail, answer| {
        let dir = match process::own_dir("postgres") {
            Ok(dir) => dir,
            Err(why) => {
                let _ = answer.send(Err(why));
                return;
            }
        };
        match start(&binaries, &dir, tail) {
            Ok((port, running)) => {
                let how = format!("a throw-away cluster in {}, postgres pid {}", dir.display(), running.pid());
                let (orders, ordered) = mpsc::channel();
                let stop_asked = std::sync::Arc::new(AtomicBool::new(false));
                let _ = CLUSTER.set(PostgresCluster {
                    port,
                    data: dir.join("data"),
                    pg_ctl: binaries.pg_ctl.clone(),
                    stop_asked: std::sync::Arc::clone(&stop_asked),
                    stopped: Mutex::new(false),
                    orders: Mutex::new(orders),
                });
                let url = format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}");
                // The test process may have given up waiting; the server then idles until it exits.
                let _ = answer.send(Ok(Started { url, how }));
                keep(running, &binaries, &dir, port, tail, &stop_asked, &ordered);
            }
            Err(why) => {
                let _ = answer.send(Err(why));
            }
        }
        process::remove_dir_best_effort(&dir);
    })
}

/// The keeper's life once the server is up: follows its log until it exits; after an exit
/// [`PostgresCluster::stop`] asked for, starts it again on each order, on the same port;
/// after any other exit, says so and returns (the server is gone for good).
fn keep(
    mut running: Running,
    binaries: &Binaries,
    dir: &Path,
    port: u16,
    tail: &Tail,
    stop_asked: &AtomicBool,
    ordered: &mpsc::Receiver<StartOrder>,
) {
    loop {
        let (pid, status) = running.follow_until_exit();
        if !stop_asked.swap(false, Ordering::SeqCst) {
            eprintln!(
                "idem-testkit: the throw-away PostgreSQL (pid {pid}) exited ({status}); its last log lines:{}",
                tail.quoted()
            );
            return;
        }
        eprintln!("idem-testkit: the throw-away PostgreSQL (pid {pid}) stopped as a test asked ({status})");
        running = loop {
            // No order comes once the test process stops asking: the thread ends with it.
            let Ok(answer) = ordered.recv() else { return };
            match launch(binaries, dir, port, tail) {
                Launch::Ready(started) => {
                    eprintln!("idem-testkit: the throw-away PostgreSQL started again, postgres pid {}", started.pid());
                    let _ = answer.send(Ok(()));
                    break started;
                }
                Launch::PortTaken => {
                    let _ = answer.send(Err(format!("another process took port {port} while PostgreSQL was down")));
                }
                Launch::Failed(why) => {
                    let _ = answer.send(Err(format!("{}: {why}", binaries.postgres.display())));
                }
            }
        };
    }
}

/// `initdb` into `dir/data`, `postgres` on a free port with its socket in `dir`, `createdb`;
/// answers the port.
fn start(binaries: &Binaries, dir: &Path, tail: &Tail) -> Result<(u16, Running), String> {
    let data = dir.join("data");
    let initdb = process::dies_with_this_thread(&binaries.initdb, "KILL")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binaries.initdb.display()))?;
    if !initdb.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            binaries.initdb.display(),
            initdb.status,
            String::from_utf8_lossy(&initdb.stderr).trim()
        ));
    }
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port()?;
        match launch(binaries, dir, port, tail) {
            Launch::Ready(running) => {
                return match create_database(binaries, dir, port) {
                    Ok(()) => Ok((port, running)),
                    Err(why) => {
                        running.kill();
                        Err(why)
                    }
                };
            }
            Launch::PortTaken => continue,
            Launch::Failed(why) => return Err(format!("{}: {why}", binaries.postgres.display())),
        }
    }
    Err(format!("another process took each of the {PORT_ATTEMPTS} free ports tried before postgres bound it"))
}

/// `postgres` on the cluster in `dir/data`, on `port` with its socket in `dir`, until ready.
fn launch(binaries: &Binaries, dir: &Path, port: u16, tail: &Tail) -> Launch {
    // SIGQUIT is PostgreSQL's immediate shutdown: it stops its backends as well.
    let mut postgres = process::dies_with_this_thread(&binaries.postgres, "QUIT");
    postgres.arg("-D").arg(dir.join("data")).args(["-p", &port.to_string(), "-k"]).arg(dir);
    for setting in [
        "listen_addresses=127.0.0.1",
        // Nothing here must survive a crash: durability only costs time.
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        // The ready line is matched in English.
        "lc_messages=C",
    ] {
        postgres.args(["-c", setting]);
    }
    postgres.env("LC_ALL", "C");
    process::launch(postgres, LogOn::Stderr, READY, PORT_TAKEN, tail)
}

/// `createdb test` over the cluster's socket in `dir`.
fn create_database(binaries: &Binaries, dir: &Path, port: u16) -> Result<(), String> {
    let output = process::dies_with_this_thread(&binaries.createdb, "KILL")
        .arg("-h")
        .arg(dir)
        .args(["-p", &port.to_string(), "-U", "postgres", DATABASE])
        .env("LC_ALL", "C")
        // Bounds the connection attempt; the caller's wait bounds the whole start.
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binaries.createdb.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {DATABASE} failed ({}): {}",
            binaries.createdb.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `initdb`, `postgres`, `createdb` and `pg_ctl` from the first directory that has the server ones:
/// `pg_config --bindir`, the highest `/usr/lib/postgresql/<version>/bin`, then `PATH`.
fn binaries() -> Result<Binaries, String> {
    let server_dir = bindir_candidates()
        .into_iter()
        .find(|dir| process::is_executable(&dir.join("initdb")) && process::is_executable(&dir.join("postgres")));
    let (initdb, postgres) = match &server_dir {
        Some(dir) => (dir.join("initdb"), dir.join("postgres")),
        None => match (process::find_program("initdb"), process::find_program("postgres")) {
            (Some(initdb), Some(postgres)) => (initdb, postgres),
            _ => {
                return Err(format!(
                    "no PostgreSQL server binaries (`initdb`, `postgres`) in `pg_config --bindir`, \
                     /usr/lib/postgresql/*/bin or PATH: install the Debian package `{PACKAGE}` \
                     (`apt-get install {PACKAGE}`), or set IDEM_TEST_POSTGRES_URL to a running server"
                ));
            }
        },
    };
    let createdb = server_dir
        .map(|dir| dir.join("createdb"))
        .filter(|createdb| process::is_executable(createdb))
        .or_else(|| process::find_program("createdb"))
        .ok_or_else(|| {
            format!(
                "no `createdb` beside {} or on PATH: install the Debian package `{PACKAGE}` \
                 (it brings postgresql-client)",
                initdb.display()
            )
        })?;
    // Beside `postgres` in every layout that has one; needed only to stop a cluster, so a
    // missing one is reported by `PostgresCluster::stop` (it cannot run it).
    let pg_ctl = Some(postgres.with_file_name("pg_ctl"))
        .filter(|pg_ctl| process::is_executable(pg_ctl))
        .or_else(|| process::find_program("pg_ctl"))
        .unwrap_or_else(|| PathBuf::from("pg_ctl"));
    Ok(Binaries { initdb, postgres, createdb, pg_ctl })
}

/// Directories that may hold the server binaries, most likely first.
fn bindir_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    let pg_config = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).stderr(Stdio::null()).output();
    if let Some(output) = pg_config.ok().filter(|output| output.status.success()) {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    }
    // Debian's layout: one directory per major version; the highest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .map_while(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versions.into_iter().map(|(_, bin)| bin));
    candidates
}
