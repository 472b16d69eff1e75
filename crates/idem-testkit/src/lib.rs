//! Servers for the workspace's tests: the PostgreSQL and Redis a test should talk to, started
//! by the test process itself when nobody named one (issue 24, item 4: tests that run
//! anywhere).
//!
//! `cargo test --workspace` has to pass on a fresh machine where the server binaries are
//! installed but no server runs and the user is not root. Each function here answers a URL,
//! decided on the first call in a test process and the same on every later call; the
//! choice is said once on stderr, as `idem-testkit: ...`.
//!
//! | function | variable that wins | otherwise |
//! |---|---|---|
//! | [`postgres_url`] | `IDEM_TEST_POSTGRES_URL` | a throw-away cluster of this process; as root, `postgres://postgres@127.0.0.1:5432/test` |
//! | [`redis_url`] | `IDEM_TEST_REDIS_URL` | a throw-away `redis-server` of this process |
//!
//! And for tests that break a server on purpose, without root:
//!
//! | item | what it gives |
//! |---|---|
//! | [`postgres_cluster`] | the throw-away cluster behind [`postgres_url`], to [`stop`](PostgresCluster::stop) and [`start`](PostgresCluster::start) again on the same port and data directory; `None` when the URL is not one (the variable named a server, or root) |
//! | [`proxy::TcpProxy`] | a loopback TCP forwarder to a server; [`cut`](proxy::TcpProxy::cut) closes every connection through it, as a dropped network path would |
//! | [`is_root`] | whether the process runs as root: the tests with a root version (a tmpfs mounted in the machine's namespace, network namespaces, the machine's PostgreSQL cluster) run it only then |
//!
//! A variable set to the empty string counts as unset. A missing server binary fails the
//! test with the Debian package that provides it (`postgresql`, `redis-server`); a server
//! that does not come up within [`STARTUP_MAX`] fails it with the server's last log lines.
//! A failure is remembered: every later call in the process fails the same way at once.
//!
//! # Throw-away servers
//!
//! PostgreSQL: `initdb` (trust authentication, superuser `postgres`, no fsync) into a
//! directory `idem-testkit-<pid>-postgres-<n>` under the temp dir, then `postgres` on a free
//! loopback port with its socket in that directory and durability off (`fsync`,
//! `synchronous_commit`, `full_page_writes`), then `createdb test`. The binaries come from
//! `pg_config --bindir`, else the highest `/usr/lib/postgresql/<version>/bin` (Debian's
//! layout), else `PATH`. PostgreSQL refuses to run as root, so a root process uses the
//! machine's server on the default port instead, the one `.ci/run` starts.
//!
//! Redis: `redis-server` on a free loopback port, without persistence (`--save ""`,
//! `--appendonly no`), so it writes no file.
//!
//! Neither is polled for readiness: each says in its log when it accepts connections
//! (PostgreSQL's `database system is ready to accept connections`, Redis's `Ready to accept
//! connections`), and a thread reads that log line by line. A port taken between choosing it
//! and the server binding it is retried on another port, up to [`PORT_ATTEMPTS`] times.
//!
//! # Why the servers die with the test process
//!
//! A test binary ends by exiting the process: statics are never dropped, so no destructor
//! could stop a server. Instead each server is started with a parent-death signal
//! (`PR_SET_PDEATHSIG`, prctl(2)): the kernel sends it to the server when the thread that
//! started it ends, which at the latest is when the test process exits, also when it is
//! killed. Setting it takes a `prctl` call in the child between fork and exec, which
//! `Command::pre_exec` would make unsafe code, and the workspace forbids unsafe code; so the
//! child is started through util-linux's `setpriv --pdeathsig <signal> -- <server>`, which
//! makes that same call and then execs the server (the signal setting survives the exec).
//! PostgreSQL gets `SIGQUIT` (immediate shutdown: it stops its backends too and releases its
//! shared memory), Redis `SIGKILL` (it has nothing to save).
//!
//! The signal follows the starting *thread*, and the test harness ends a test's thread when
//! the test ends; so no test thread starts a server. A thread of this crate does, and then
//! reads the server's log until the server exits, which keeps it alive exactly as long as
//! the server.
//!
//! Without `setpriv` (not util-linux, or older than 2.33) the servers are started without the
//! signal, said once on stderr; they then outlive the test process.
//!
//! A killed or exited test process cannot remove its cluster's directory; the next process
//! that starts a cluster removes every `idem-testkit-<pid>-*` directory whose process is gone.

mod postgres;
mod process;
pub mod proxy;
mod redis;

use std::sync::OnceLock;
use std::time::Duration;

pub use postgres::{PostgresCluster, ROOT_FALLBACK_URL};

/// Longest a throw-away server may take from its first command to accepting connections.
pub const STARTUP_MAX: Duration = Duration::from_secs(30);

/// Free ports tried per server before giving up (another process may take a free port
/// between our choosing it and the server binding it).
pub const PORT_ATTEMPTS: usize = 3;

/// The variable naming an existing PostgreSQL database to test against.
pub const POSTGRES_URL_VAR: &str = "IDEM_TEST_POSTGRES_URL";

/// The variable naming an existing Redis to test against.
pub const REDIS_URL_VAR: &str = "IDEM_TEST_REDIS_URL";

/// The PostgreSQL database the tests of this process use: `IDEM_TEST_POSTGRES_URL` if set,
/// else a throw-away cluster's database `test` (`postgres://postgres@127.0.0.1:<port>/test`),
/// else, when the process runs as root, [`ROOT_FALLBACK_URL`].
///
/// # Panics
///
/// When no cluster can be started: a binary is missing (the message names the Debian
/// package), `initdb`, `postgres` or `createdb` failed (it quotes their output), or the
/// server was not ready within [`STARTUP_MAX`].
pub fn postgres_url() -> String {
    static CHOSEN: OnceLock<Result<String, String>> = OnceLock::new();
    chosen_or_panic(&CHOSEN, POSTGRES_URL_VAR, "PostgreSQL", postgres::throw_away_or_root_fallback)
}

/// The throw-away cluster behind [`postgres_url`] (started by this call if no call did
/// yet), to stop and start again; `None` when [`postgres_url`] names another server:
/// `IDEM_TEST_POSTGRES_URL`'s, or, as root, [`ROOT_FALLBACK_URL`].
///
/// # Panics
///
/// As [`postgres_url`], when no cluster can be started.
pub fn postgres_cluster() -> Option<&'static PostgresCluster> {
    let _chosen = postgres_url();
    postgres::CLUSTER.get()
}

/// Whether this process runs as root (effective user id 0).
#[must_use]
pub fn is_root() -> bool {
    process::is_root()
}

/// The Redis the tests of this process use: `IDEM_TEST_REDIS_URL` if set, else a throw-away
/// `redis-server` (`redis://127.0.0.1:<port>`).
///
/// # Panics
///
/// When no `redis-server` can be started: it is missing (the message names the Debian
/// package), it exited (the message quotes its log), or it was not ready within
/// [`STARTUP_MAX`].
pub fn redis_url() -> String {
    static CHOSEN: OnceLock<Result<String, String>> = OnceLock::new();
    chosen_or_panic(&CHOSEN, REDIS_URL_VAR, "Redis", redis::throw_away)
}

/// The URL in `chosen`, deciding it on the first call: the variable `var` if set and not
/// empty, else what `start` gives. Said once on stderr; a failure panics on every call.
fn chosen_or_panic(
    chosen: &OnceLock<Result<String, String>>,
    var: &str,
    server: &str,
    start: fn() -> Result<Started, String>,
) -> String {
    let outcome = chosen.get_or_init(|| {
        let outcome = match std::env::var(var) {
            Ok(url) if !url.is_empty() => Ok(Started { url, how: format!("from {var}") }),
            _ => start(),
        };
        match &outcome {
            Ok(Started { url, how }) => eprintln!("idem-testkit: {server} for this test process: {url} ({how})"),
            Err(why) => eprintln!("idem-testkit: no {server} for this test process: {why}"),
        }
        outcome.map(|started| started.url)
    });
    match outcome {
        Ok(url) => url.clone(),
        Err(why) => panic!("idem-testkit: no {server} for the tests: {why}"),
    }
}

/// A server chosen for the process: its URL, and how it was chosen (for the log line).
struct Started {
    url: String,
    how: String,
}
