//! A throw-away PostgreSQL cluster: `initdb`, `postgres` on a free port, `createdb test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{self, Launch, LogOn, Tail};
use crate::{PORT_ATTEMPTS, Started};

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
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
    createdb: PathBuf,
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
            Ok((url, running)) => {
                let how = format!("a throw-away cluster in {}, postgres pid {}", dir.display(), running.pid());
                // The test process may have given up waiting; the server then idles until it exits.
                let _ = answer.send(Ok(Started { url, how }));
                running.watch_until_exit("PostgreSQL");
            }
            Err(why) => {
                let _ = answer.send(Err(why));
            }
        }
        process::remove_dir_best_effort(&dir);
    })
}

/// `initdb` into `dir/data`, `postgres` on a free port with its socket in `dir`, `createdb`.
fn start(binaries: &Binaries, dir: &Path, tail: &Tail) -> Result<(String, process::Running), String> {
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
        // SIGQUIT is PostgreSQL's immediate shutdown: it stops its backends as well.
        let mut postgres = process::dies_with_this_thread(&binaries.postgres, "QUIT");
        postgres.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(dir);
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
        match process::launch(postgres, LogOn::Stderr, READY, PORT_TAKEN, tail) {
            Launch::Ready(running) => {
                return match create_database(binaries, dir, port) {
                    Ok(()) => Ok((format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}"), running)),
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

/// `initdb`, `postgres` and `createdb` from the first directory that has the server ones:
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
    Ok(Binaries { initdb, postgres, createdb })
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
