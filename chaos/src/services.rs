//! The stores the harness starts for itself, so that it may stop, kill and wipe them:
//! a private PostgreSQL (initdb and pg_ctl in a temporary directory, on a free loopback
//! port, as the `postgres` OS user when the harness runs as root) and a private Redis
//! (redis-server in the foreground, append-only file synced on every write). The shared
//! services other tests use (127.0.0.1:5432, 127.0.0.1:6379) are never touched.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::ChaosError;
use crate::process::{Marks, Process, run_to_end};

/// How long initdb, a start or a stop may take.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback port that was free a moment ago (bound, read, released).
pub(crate) fn free_port() -> Result<u16, ChaosError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| ChaosError::Io(error.to_string()))?;
    Ok(listener.local_addr().map_err(|error| ChaosError::Io(error.to_string()))?.port())
}

pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// The newest PostgreSQL server binaries under /usr/lib/postgresql/*/bin.
fn postgres_bin() -> Result<PathBuf, ChaosError> {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|error| ChaosError::Missing(format!("PostgreSQL under /usr/lib/postgresql: {error}")))?;
    let mut found: Vec<(u32, PathBuf)> = versions
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| ChaosError::Missing("pg_ctl under /usr/lib/postgresql/*/bin".into()))
}

/// How PostgreSQL is stopped (pg_ctl's `-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgStop {
    /// Rolls back open transactions, checkpoints, exits.
    Fast,
    /// Exits at once; the next start runs crash recovery from the WAL.
    Immediate,
}

/// A private PostgreSQL cluster, stopped (immediate) and deleted when dropped.
#[derive(Debug)]
pub(crate) struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// The replicas' way to it (the test network's back gateway); the harness itself uses loopback.
    host: Ipv4Addr,
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    /// initdb in a temporary directory, then starts it on a free port of loopback and `host`.
    pub(crate) fn start(host: Ipv4Addr) -> Result<Postgres, ChaosError> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new().prefix("idem-chaos-pg-").tempdir().map_err(io)?;
        let as_postgres = is_root();
        if as_postgres {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let mut chown = Command::new("chown");
            chown.args(["postgres:", &dir.path().display().to_string()]);
            run_to_end("chown", chown, SERVICE_TIMEOUT)?;
        }
        let mut cluster = Postgres { dir, bin, port: free_port()?, host, as_postgres, running: false };
        let data = cluster.data().display().to_string();
        let initdb = cluster.command("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        run_to_end("initdb", initdb, SERVICE_TIMEOUT)?;
        // The replicas connect from their hosts on the test network's back subnet.
        let hba = cluster.data().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).map_err(io)?;
        rules.push_str(&format!("host all all {}/24 trust\n", cluster.host));
        std::fs::write(&hba, rules).map_err(io)?;
        cluster.start_again()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let tool = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool).args(args);
            command
        } else {
            let mut command = Command::new(tool);
            command.args(args);
            command
        }
    }

    /// Starts the stopped cluster (after a crash: recovery from the WAL) and waits for it.
    pub(crate) fn start_again(&mut self) -> Result<(), ChaosError> {
        let options =
            format!("-p {} -c listen_addresses=127.0.0.1,{} -k {}", self.port, self.host, self.dir.path().display());
        let (data, log) = (self.data().display().to_string(), self.dir.path().join("log").display().to_string());
        let start = self.command("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
        run_to_end("pg_ctl start", start, SERVICE_TIMEOUT)?;
        self.running = true;
        Ok(())
    }

    /// Stops it with `mode`.
    pub(crate) fn stop(&mut self, mode: PgStop) -> Result<(), ChaosError> {
        let mode = match mode {
            PgStop::Fast => "fast",
            PgStop::Immediate => "immediate",
        };
        let data = self.data().display().to_string();
        let stop = self.command("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]);
        self.running = false;
        run_to_end("pg_ctl stop", stop, SERVICE_TIMEOUT)
    }

    /// Whether it was left running.
    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// The URL of database `postgres` with `schema`, for `idem serve` on the test network.
    pub(crate) fn url(&self, schema: &str) -> String {
        format!("postgres://postgres@{}:{}/postgres?schema={schema}", self.host, self.port)
    }

    /// The URL without a schema, on loopback, for the harness's own reads (sqlx).
    pub(crate) fn plain_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop(PgStop::Immediate);
    }
}

fn io(error: std::io::Error) -> ChaosError {
    ChaosError::Io(error.to_string())
}

/// A private Redis in the foreground, its append-only file fsynced on every write, so a
/// SIGKILL keeps every acknowledged write; killed and deleted when dropped.
#[derive(Debug)]
pub(crate) struct Redis {
    // Fields drop in order: the process is killed before its directory is deleted.
    process: Option<Process>,
    dir: TempDir,
    port: u16,
    /// The replicas' way to it (the test network's back gateway).
    host: Ipv4Addr,
}

impl Redis {
    /// Starts it on a free port of loopback and `host`.
    pub(crate) fn start(host: Ipv4Addr) -> Result<Redis, ChaosError> {
        let dir = tempfile::Builder::new().prefix("idem-chaos-redis-").tempdir().map_err(io)?;
        let mut redis = Redis { process: None, dir, port: free_port()?, host };
        redis.start_again()?;
        Ok(redis)
    }

    /// Starts it again (after a kill), on the same port and files.
    pub(crate) fn start_again(&mut self) -> Result<(), ChaosError> {
        let mut command = Command::new("redis-server");
        let (port, host) = (self.port.to_string(), self.host.to_string());
        command
            .args(["--port", &port, "--bind", "127.0.0.1", &host, "--dir"])
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--logfile", ""]);
        let marks = Marks { ready: "Ready to accept connections", counted: "" };
        self.process = Some(Process::spawn("redis-server", command, marks, SERVICE_TIMEOUT)?);
        Ok(())
    }

    /// SIGKILL (no save); with `wipe`, its files are deleted too (a restart without data).
    pub(crate) fn kill(&mut self, wipe: bool) -> Result<(), ChaosError> {
        if let Some(process) = self.process.take() {
            process.kill();
        }
        if wipe {
            wipe_dir(self.dir.path())?;
        }
        Ok(())
    }

    /// Whether it was left running.
    pub(crate) fn running(&self) -> bool {
        self.process.is_some()
    }

    /// The store URL for `idem serve`, with `prefix`.
    pub(crate) fn url(&self, prefix: &str) -> String {
        format!("redis://{}:{}?prefix={prefix}", self.host, self.port)
    }
}

/// Deletes everything in `dir` (not `dir` itself).
fn wipe_dir(dir: &Path) -> Result<(), ChaosError> {
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.map_err(io)?;
    }
    Ok(())
}
