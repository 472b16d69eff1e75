//! `idem serve`: the payments/users API with idempotency keys on a TCP port.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use idem_core::{Policy, PolicyError, TOMBSTONE_MAX};
use idem_http::{ConfigError, ConflictPolicy};
use idem_server::serve::{AdminToken, AdminTokenError};
use idem_server::{
    DbSpec, FairnessLimits, HANDLER_DELAY_MAX, PlantedBug, RequestLimits, ServeError, ServerConfig, ServerLimits,
    SqliteTuning, StoreSpec,
};
use idem_sqlite::ClaimSync;

/// `--lease`'s default: idem-core's [`idem_core::LEASE_DEFAULT`], as the flag writes it
/// (a test checks that the two agree).
const LEASE_DEFAULT_TEXT: &str = "10s";

/// Options of `idem serve`. Each flag can also be set by the environment variable named.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address and port to listen on (port 0 picks a free one; the log says which).
    #[arg(long, env = "IDEM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where idempotency records live (and, except with Redis, payments and users too):
    /// sqlite://PATH (a file, durable, atomic mode: G1-G8), postgres://USER@HOST:PORT/DB
    /// or postgresql://… with optional ?schema=NAME (durable, shared by replicas, atomic
    /// mode: G1-G8), redis://HOST:PORT[/N] (or rediss://… where the build has TLS) with optional ?prefix=NAME (shared
    /// by replicas, separate mode; needs --db), or memory:// (lost on exit, separate mode).
    /// The startup log says which mode runs and which guarantees hold in it.
    #[arg(long, env = "IDEM_STORE", default_value = "sqlite://./idem.db")]
    store: StoreSpec,
    /// With a Redis store only, and then required: where payments and users live,
    /// sqlite://PATH (one process) or postgres://USER@HOST:PORT/DB[?schema=NAME] (shared by
    /// replicas). Records and rows then commit separately (separate mode).
    #[arg(long, env = "IDEM_DB")]
    db: Option<DbSpec>,
    /// How long a completed key is remembered (e.g. 24h, 90m).
    #[arg(long, env = "IDEM_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// How long a claim holds without renewal before another request may take it over
    /// (e.g. 10s). The lease is renewed every third of it while the request runs, so a
    /// slow request keeps its claim; the lease bounds how long a crashed server blocks a
    /// key, and should stay shorter than the clients' retry budget.
    #[arg(long, env = "IDEM_LEASE", default_value = LEASE_DEFAULT_TEXT, value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Keep a tombstone of each completed key for this long after its retention ends (e.g.
    /// 30d; SPEC "Key lifecycle"): the same request then gets 410 Gone (problem
    /// key-expired, with Idempotency-Expires) and never runs again, and another request
    /// under the key gets 422, until the tombstone is purged in turn. From 1ms to 366 days;
    /// off unless set.
    #[arg(long, env = "IDEM_TOMBSTONE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    tombstone: Option<Duration>,
    /// Stop renewing a claim once its handler has run this long (e.g. 2m; SPEC "Key
    /// lifecycle"), so a hung handler frees its key within this ceiling plus one lease and
    /// its late completion is refused. From one renewal interval (a third of --lease) to
    /// 24h; off (renew while the handler runs) unless set.
    #[arg(long, env = "IDEM_EXECUTION_MAX", value_name = "DURATION", value_parser = humantime::parse_duration)]
    execution_max: Option<Duration>,
    /// Mount the key administration API at /admin (GET /admin/keys, GET and DELETE
    /// /admin/keys/{caller}/{key} or /admin/keys/{id}; SPEC "Key lifecycle", forget is
    /// fenced) for the operator token in this file: one word of visible ASCII, whitespace
    /// around it ignored, the file at most 4096 bytes. Requests must send exactly one
    /// `Authorization: Bearer <token>` (else 401). Without this flag nothing is at /admin.
    #[arg(long, env = "IDEM_ADMIN_TOKEN_FILE", value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// Let a duplicate of a request in flight wait up to this long for its answer (e.g. 5s)
    /// instead of getting 409 at once.
    #[arg(long, env = "IDEM_CONFLICT_WAIT", value_parser = humantime::parse_duration)]
    conflict_wait: Option<Duration>,
    /// Open connections at most; at the cap new connections wait in the kernel's backlog.
    #[arg(long, env = "IDEM_CONNECTIONS_MAX", default_value_t = ServerLimits::DEFAULT.connections_max,
          value_parser = connection_count)]
    connections_max: usize,
    /// How long a client may take to send a request's headers, and how long a keep-alive
    /// connection may stay idle between requests; then the connection is closed.
    #[arg(long, env = "IDEM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: Duration,
    /// How long a client may take to send a whole request body; past it, 408.
    #[arg(long, env = "IDEM_BODY_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    body_read_timeout: Duration,
    /// Request-body bytes held in memory across all requests at once; past it, 503 with
    /// Retry-After (nothing recorded). At least one full body (1 MiB).
    #[arg(long, env = "IDEM_BODY_BUFFER_MAX", default_value_t = RequestLimits::DEFAULT.body_bytes_buffered_max,
          value_parser = body_buffer_bytes)]
    body_buffer_max: usize,
    /// On SIGTERM or Ctrl-C, how long requests in progress get to finish before their
    /// connections are closed.
    #[arg(long, env = "IDEM_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// New idempotency keys per second one caller (principal) may create; past it, 429 with
    /// Retry-After and nothing recorded. Replays are not counted. 0 turns the limit off.
    #[arg(long, env = "IDEM_NEW_KEYS_PER_SECOND", default_value_t = FairnessLimits::DEFAULT.new_keys_per_second)]
    new_keys_per_second: u32,
    /// New keys one caller may create at once after being idle (the bucket's size).
    #[arg(long, env = "IDEM_NEW_KEYS_BURST", default_value_t = FairnessLimits::DEFAULT.burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    new_keys_burst: u32,
    /// For testing a test harness: the payment handler waits this long after its key is
    /// claimed and before it writes the payment and completes (e.g. 300ms), so a kill, a
    /// pause or a duplicate lands inside the handler. At most 60s; 0ms (the default) is off.
    /// (A flag only, never read from the environment, as every test knob here.)
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = handler_delay)]
    handler_delay: Duration,
    /// For testing a test harness: with a postgres:// store, each write waits this long
    /// after its completion locked the record's row and before COMMIT (e.g. 200ms), so a
    /// frozen or vanished holder dies inside its transaction. At most 60s; 0ms is off.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = handler_delay)]
    commit_delay: Duration,
    /// For testing the test harness: runs the store with this rule planted wrong (a
    /// PostgreSQL store only; never with real data). NAME is one of: completion-without-fence,
    /// completion-fence-at-most, completion-without-state, completion-unguarded,
    /// retention-from-lease-end, completion-without-tombstone, usage-delta-needs-both,
    /// purge-one-ms-late, list-without-collation.
    #[arg(long, value_name = "NAME")]
    plant_bug: Option<PlantedBug>,
    /// A sqlite:// store: sync every claim on its own (every-commit) or with its completion
    /// (deferred, the default: in atomic mode a claim lost in a crash guarded nothing that
    /// survived it; idem-sqlite's `ClaimSync`).
    #[arg(long, env = "IDEM_SQLITE_CLAIM_SYNC", value_name = "WHEN", value_parser = claim_sync)]
    sqlite_claim_sync: Option<ClaimSync>,
    /// For testing a crash harness: open SQLite files through idem-power-loss's journaling
    /// VFS, which records every write not yet synced in DIR (keep it off the database's
    /// filesystem) so that `idem chaos` can drop them after killing this process (a
    /// simulated power loss). Slower; never in production.
    #[arg(long, value_name = "DIR")]
    sqlite_power_loss_journal: Option<std::path::PathBuf>,
}

/// `--sqlite-claim-sync`: every-commit or deferred.
fn claim_sync(text: &str) -> Result<ClaimSync, String> {
    match text {
        "every-commit" => Ok(ClaimSync::EveryCommit),
        "deferred" => Ok(ClaimSync::Deferred),
        _ => Err(format!("{text:?} is neither every-commit nor deferred")),
    }
}

/// `--handler-delay`: a duration from zero to [`HANDLER_DELAY_MAX`].
fn handler_delay(text: &str) -> Result<Duration, String> {
    let delay = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if delay > HANDLER_DELAY_MAX {
        return Err(format!("must be at most {}", humantime::format_duration(HANDLER_DELAY_MAX)));
    }
    Ok(delay)
}

/// A duration flag that must be above zero (a zero timeout would refuse every client).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// `--connections-max`: 1 to 1,000,000.
fn connection_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if (1..=1_000_000).contains(&count) => Ok(count),
        _ => Err(format!("{text:?} is not a whole number from 1 to 1000000")),
    }
}

/// `--body-buffer-max`: a byte count from one full body (1 MiB) to 4 GiB.
fn body_buffer_bytes(text: &str) -> Result<usize, String> {
    let bytes: u64 = text.parse().map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    let low = idem_server::app::BODY_BYTES_MAX as u64;
    if (low..=4 << 30).contains(&bytes) {
        Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
    } else {
        Err(format!("must be from {low} (one full body) to {} bytes", 4u64 << 30))
    }
}

/// Why `idem serve` could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeCliError {
    /// Lease and retention do not fit together.
    #[error("invalid --lease/--retention: {0}")]
    Policy(#[from] PolicyError),
    /// A tombstone period out of idem-core's range ([`Policy::with_tombstone`]).
    #[error(
        "invalid --tombstone {}: a tombstone lasts from 1ms to {} days (SPEC \"Key lifecycle\")",
        humantime::format_duration(*given),
        TOMBSTONE_MAX.as_secs() / 86_400
    )]
    Tombstone {
        /// The period asked for.
        given: Duration,
    },
    /// An execution ceiling the idempotency layer refuses ([`ConfigError::ExecutionMax`]).
    #[error(
        "invalid --execution-max {}: the execution ceiling must be from one renewal interval (a third of --lease, here {renew_every:?}) to 24h (SPEC \"Key lifecycle\")",
        humantime::format_duration(*ceiling)
    )]
    ExecutionMax {
        /// The ceiling asked for.
        ceiling: Duration,
        /// The lease's renewal interval.
        renew_every: Duration,
    },
    /// The admin token file was refused (the message names the file, never the token).
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] idem_server::ServeError),
}

pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    init_logging();
    let mut policy = Policy::new(args.lease, args.retention).map_err(ServeCliError::Policy)?;
    if let Some(period) = args.tombstone {
        policy = policy.with_tombstone(period).map_err(|_| ServeCliError::Tombstone { given: period })?;
    }
    let admin_token =
        args.admin_token_file.as_deref().map(AdminToken::read).transpose().map_err(ServeCliError::AdminToken)?;
    let config = ServerConfig {
        listen: args.listen,
        store: args.store.clone(),
        db: args.db.clone(),
        policy,
        execution_max: args.execution_max,
        admin_token,
        conflict: args.conflict_wait.map_or(ConflictPolicy::Reject, ConflictPolicy::Wait),
        server_limits: ServerLimits {
            connections_max: args.connections_max,
            header_read_timeout: args.header_read_timeout,
            drain_timeout: args.drain_timeout,
        },
        request_limits: RequestLimits {
            body_read_timeout: args.body_read_timeout,
            body_bytes_buffered_max: args.body_buffer_max,
        },
        fairness: (args.new_keys_per_second > 0).then_some(FairnessLimits {
            new_keys_per_second: args.new_keys_per_second,
            burst: args.new_keys_burst,
            ..FairnessLimits::DEFAULT
        }),
        handler_delay: args.handler_delay,
        planted_bug: args.plant_bug,
        commit_delay: args.commit_delay,
        sqlite: SqliteTuning {
            claim_sync: args.sqlite_claim_sync,
            vfs: args.sqlite_power_loss_journal.as_ref().map(|_| idem_power_loss::VFS_NAME.to_owned()),
        },
    };
    if let Some(dir) = &args.sqlite_power_loss_journal {
        idem_power_loss::register_with_journal_dir(dir)
            .map_err(|error| format!("cannot register the power-loss journal in {}: {error}", dir.display()))?;
        eprintln!(
            "idem: WARNING: --sqlite-power-loss-journal: SQLite files are opened through a test VFS that journals every unsynced write; never use it in production"
        );
    }
    if let (Some(bug), StoreSpec::Postgres(_)) = (args.plant_bug, &args.store) {
        // On stderr whatever the log filter: this server is wrong on purpose. (Another
        // store is refused with the bug's name by `idem_server::run`.)
        eprintln!(
            "idem: WARNING: --plant-bug {bug}: this server runs its store with a rule planted wrong, for testing the test harness; never use it with real data"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServeCliError::Runtime)?;
    runtime.block_on(idem_server::run(config, shutdown_signal())).map_err(|error| match error {
        ServeError::Config(ConfigError::ExecutionMax { ceiling, renew_every }) => {
            ServeCliError::ExecutionMax { ceiling, renew_every }
        }
        other => ServeCliError::Serve(other),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line per request (from idem-server) on stderr; `RUST_LOG` overrides. The layer's
/// own per-request event is left out by default, so each request logs exactly once.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,idem_http=warn,sqlx=warn"));
    // A second initialisation (never in the binary) would fail harmlessly.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: finishing requests in progress, then stopping"),
        () = terminate => tracing::info!("SIGTERM: finishing requests in progress, then stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_delay_takes_zero_to_the_bound_and_refuses_more() {
        // Goal: `--handler-delay` parses like the other duration flags and is bounded.
        assert_eq!(handler_delay("0ms"), Ok(Duration::ZERO));
        assert_eq!(handler_delay("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(handler_delay("60s"), Ok(HANDLER_DELAY_MAX));
        assert_eq!(handler_delay("61s"), Err("must be at most 1m".to_owned()));
        assert!(handler_delay("soon").is_err());
    }

    #[test]
    fn the_admin_token_file_help_states_the_servers_bound() {
        // Goal: `--admin-token-file`'s help states the bound the server checks.
        use clap::CommandFactory as _;
        use idem_server::serve::ADMIN_TOKEN_FILE_BYTES_MAX;

        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: Args,
        }
        let help = Serve::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains(&format!("at most {ADMIN_TOKEN_FILE_BYTES_MAX} bytes")), "{help}");
    }

    #[test]
    fn the_lease_flag_defaults_to_the_core_lease() {
        // Goal: `idem serve` without --lease uses idem-core's default lease, whatever it becomes.
        let parsed = humantime::parse_duration(LEASE_DEFAULT_TEXT).expect("the default is a duration");
        assert_eq!(parsed, idem_core::LEASE_DEFAULT);
    }
}
