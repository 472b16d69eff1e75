//! One harness (its stores, started once) and one run per seed: replicas up, clients and
//! faults side by side, heal, audit, check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem_sim::external::{self, Bounds, History};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;

use crate::audit::{self, RowsAt};
use crate::client::{self, Clients};
use crate::disk::Disk;
use crate::faults::{self, SLOT, Scheduled};
use crate::network::{Link, Network};
use crate::replica::Replica;
use crate::report::{self, RunReport};
use crate::services::{Postgres, Redis};
use crate::strike::{self, Targets};
use crate::{ChaosError, Config, StoreKind};

/// The lease the replicas run with (`idem serve --lease`): short, so pauses outlive it.
const LEASE: Duration = Duration::from_secs(2);
/// The first fault is planned this long after the clients start.
const FIRST_FAULT: Duration = Duration::from_millis(500);
/// The client's budget per submission (idem-client's deadline).
const CLIENT_DEADLINE: Duration = Duration::from_secs(6);
/// G6: lease + a whole client deadline + a resubmission pause + a replica's restart, rounded up.
const PROGRESS_BOUND: Duration = Duration::from_secs(14);
/// The replicas' retention (`idem serve`'s default).
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The clients are cut off this long after the progress bound (then G6 fails).
const CUT_OFF_SLACK: Duration = Duration::from_secs(5);
/// The longest handler delay a seed draws (`idem serve --handler-delay`): a kill or a
/// pause that strikes a request in flight then mostly strikes it inside its handler,
/// after its claim and before its write.
const HANDLER_DELAY_MAX_MS: u64 = 400;
/// The longest commit delay a PostgreSQL seed draws (`idem serve --commit-delay`): a
/// vanishing host then mostly dies inside its transaction, holding its row lock.
const COMMIT_DELAY_MAX_MS: u64 = 300;
/// The port every replica listens on, on its own host's front address.
const REPLICA_PORT: u16 = 8080;

/// A harness: its test network and stores, made once and shared by its runs (each run has
/// its own SQLite file, PostgreSQL schema or Redis key prefix).
pub struct Harness {
    config: Config,
    // Fields drop in order: the stores stop before their network and disk go away.
    postgres: Option<Postgres>,
    redis: Option<Redis>,
    disk: Option<Disk>,
    network: Network,
    // The harness's directory (the SQLite disk is mounted in it), deleted last.
    work: TempDir,
    runs: u64,
}

impl Harness {
    /// Checks `config` and starts what its store needs.
    pub fn start(config: Config) -> Result<Harness, ChaosError> {
        if !(1..=8).contains(&config.replicas) {
            return Err(ChaosError::Invalid(format!("{} replicas; 1 to 8", config.replicas)));
        }
        if !(1..=20).contains(&config.faults) {
            return Err(ChaosError::Invalid(format!("{} faults per run; 1 to 20", config.faults)));
        }
        if !config.binary.is_file() {
            return Err(ChaosError::Missing(format!("the idem binary {}", config.binary.display())));
        }
        let work =
            tempfile::Builder::new().prefix("idem-chaos-").tempdir().map_err(|e| ChaosError::Io(e.to_string()))?;
        let network = Network::create(config.replicas)?;
        let stores_at = network.gateway(Link::Back);
        let disk = if config.store == StoreKind::Sqlite { Some(Disk::mount(&work.path().join("disk"))?) } else { None };
        let postgres = match config.store {
            StoreKind::Sqlite => None,
            StoreKind::Postgres | StoreKind::Redis => Some(Postgres::start(stores_at)?),
        };
        let redis = if config.store == StoreKind::Redis { Some(Redis::start(stores_at)?) } else { None };
        Ok(Harness { config, postgres, redis, disk, network, work, runs: 0 })
    }

    /// What the harness made on this machine (its test network and its directory), for a
    /// person who must clean up after a harness that was killed.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}; directory {}", self.network.describe(), self.work.path().display())
    }

    /// Where SQLite replicas journal their unsynced writes: in the harness's directory, off
    /// the SQLite disk, so a full disk fails the database's writes, not the journal's.
    fn journal_dir(&self) -> std::path::PathBuf {
        self.work.path().join("journal")
    }

    /// The timing a run of this harness is judged by.
    fn bounds(&self) -> Bounds {
        let heal_at = FIRST_FAULT + SLOT * u32::try_from(self.config.faults).unwrap_or(20);
        Bounds {
            clients: 3,
            streams_per_client: 3,
            ops_per_stream: 6,
            last_start: heal_at,
            heal_at,
            progress_bound: PROGRESS_BOUND,
            retention: RETENTION,
            skew_max: Duration::ZERO,
            separate: self.config.store == StoreKind::Redis,
        }
    }

    /// Where this run's records and rows go: `idem serve`'s store arguments, and the rows.
    fn store_for_run(&mut self, seed: u64) -> Result<(Vec<String>, RowsAt), ChaosError> {
        self.runs += 1;
        let name = format!("chaos_s{seed}_r{}", self.runs);
        let postgres = self.postgres.as_ref();
        let pg = |postgres: Option<&Postgres>| {
            postgres
                .ok_or_else(|| ChaosError::Missing("the private PostgreSQL".into()))
                .map(|pg| (pg.url(&name), RowsAt::Postgres { url: pg.plain_url(), schema: name.clone() }))
        };
        Ok(match self.config.store {
            StoreKind::Sqlite => {
                let disk = self.disk.as_ref().ok_or_else(|| ChaosError::Missing("the SQLite disk".into()))?;
                let path = disk.path().join(format!("{name}.db"));
                let args = vec!["--store".into(), format!("sqlite://{}", path.display())];
                (args, RowsAt::Sqlite(path))
            }
            StoreKind::Postgres => {
                let (url, rows) = pg(postgres)?;
                (vec!["--store".into(), url], rows)
            }
            StoreKind::Redis => {
                let redis = self.redis.as_ref().ok_or_else(|| ChaosError::Missing("the private Redis".into()))?;
                let (db, rows) = pg(postgres)?;
                (vec!["--store".into(), redis.url(&name.replace('_', "-")), "--db".into(), db], rows)
            }
        })
    }

    /// Runs one seed: its workload under its faults, then the checks.
    pub fn run(&mut self, seed: u64) -> Result<RunReport, ChaosError> {
        let wall = Instant::now();
        let bounds = self.bounds();
        let Drawn { schedule, attempt_timeout, handler_delay, claim_sync, commit_delay } = draw(&self.config, seed);
        let (mut args, rows_at) = self.store_for_run(seed)?;
        args.extend(["--lease".into(), "2s".into(), "--new-keys-per-second".into(), "0".into()]);
        args.extend(["--handler-delay".into(), format!("{}ms", handler_delay.as_millis())]);
        if self.config.store == StoreKind::Sqlite {
            // Through the journal that lets a power loss drop the unsynced writes.
            let journal = self.journal_dir().display().to_string();
            args.extend([
                "--sqlite-power-loss-journal".into(),
                journal,
                "--sqlite-claim-sync".into(),
                claim_sync.into(),
            ]);
        }
        if self.config.store == StoreKind::Postgres {
            args.extend(["--commit-delay".into(), format!("{}ms", commit_delay.as_millis())]);
        }
        if let Some(bug) = &self.config.server_bug {
            args.extend(["--plant-bug".into(), bug.clone()]);
        }
        let mut replicas = (0..self.config.replicas)
            .map(|index| {
                let addr = std::net::SocketAddr::from((self.network.address(index, Link::Front), REPLICA_PORT));
                Replica::start(index, addr, self.network.launch(index, self.config.binary.clone()), args.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let history = History::new();
        history.fault(format!(
            "setup: replicas' handler delay {handler_delay:?}, clients' attempt timeout {attempt_timeout:?}{}{}",
            match self.config.store {
                StoreKind::Sqlite => format!(", SQLite claim sync {claim_sync}"),
                StoreKind::Postgres => format!(", commit delay {commit_delay:?}"),
                StoreKind::Redis => String::new(),
            },
            self.config.server_bug.as_ref().map_or(String::new(), |bug| format!(", planted in the store: {bug}"))
        ));
        let in_flight: Arc<Vec<AtomicUsize>> = Arc::new((0..replicas.len()).map(|_| AtomicUsize::new(0)).collect());
        let clients = Clients {
            history: history.clone(),
            replicas: Arc::new(replicas.iter().map(|replica| replica.addr).collect()),
            in_flight: Arc::clone(&in_flight),
            seed,
            attempt_timeout,
            deadline: CLIENT_DEADLINE,
            give_up_after_heal_ms: millis(bounds.progress_bound),
            heal_ms: Arc::new(AtomicU64::new(millis(bounds.heal_at))),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|error| ChaosError::Io(error.to_string()))?;
        let journal_dir = self.journal_dir();
        let sqlite_file = match &rows_at {
            RowsAt::Sqlite(path) => Some(path.clone()),
            RowsAt::Postgres { .. } => None,
        };
        let mut targets = Targets {
            replicas: &mut replicas,
            network: &self.network,
            postgres: if self.config.store == StoreKind::Postgres { self.postgres.as_mut() } else { None },
            redis: self.redis.as_mut(),
            sqlite: self.disk.as_mut().zip(sqlite_file).map(|(disk, file)| (disk, file, journal_dir)),
            in_flight,
            // A third of the delay: past the request's claim (a few ms), well inside its wait.
            into_handler: handler_delay / 3,
            // Past the handler's wait and the write's first statements, half into the commit delay.
            into_transaction: if commit_delay.is_zero() { handler_delay / 3 } else { handler_delay + commit_delay / 2 },
        };
        let (run_error, injected) = drive(&runtime, &clients, seed, &bounds, &schedule, &mut targets);
        if let Some(plant) = self.config.plant {
            runtime.block_on(audit::plant(&rows_at, plant))?;
        }
        let addrs: Vec<_> = replicas.iter().map(|replica| replica.addr).collect();
        runtime.block_on(audit::lists(&history, &addrs, &external::tokens(bounds.clients)));
        let takeovers = replicas.iter().map(Replica::takeovers).sum();
        let failed_starts: Vec<String> = replicas
            .iter()
            .flat_map(|replica| {
                replica.failed_starts.iter().map(move |why| format!("replica-{}: {why}", replica.index))
            })
            .collect();
        drop(replicas);
        for row in runtime.block_on(audit::rows(&rows_at))? {
            history.row(row);
        }
        if let RowsAt::Sqlite(path) = &rows_at {
            remove_database(path, &self.journal_dir());
        }
        // G6 counts from when everything was up again, if healing ran late.
        let bounds = Bounds { heal_at: bounds.heal_at.max(Duration::from_millis(injected.healed_ms)), ..bounds };
        let checked = external::check(&history, &bounds, run_error.as_deref());
        let counts = report::Counts { takeovers, struck_busy: injected.struck_busy, failed_starts };
        Ok(RunReport::new(seed, &self.config, schedule, counts, checked, history.trace(), wall.elapsed()))
    }
}

/// What a seed draws.
struct Drawn {
    schedule: Vec<Scheduled>,
    /// The clients' attempt timeout.
    attempt_timeout: Duration,
    /// The replicas' handler delay.
    handler_delay: Duration,
    /// SQLite's claim sync (`idem serve --sqlite-claim-sync`): G7 must hold in both.
    claim_sync: &'static str,
    /// PostgreSQL's commit delay (`idem serve --commit-delay`).
    commit_delay: Duration,
}

/// What `seed` draws for `config`.
fn draw(config: &Config, seed: u64) -> Drawn {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4A0_5000_0000_0000);
    let schedule = faults::draw(&mut rng, config.store, config.replicas, config.faults, FIRST_FAULT, LEASE);
    let attempt_timeout = Duration::from_millis(rng.random_range(500..=2500));
    let handler_delay = Duration::from_millis(rng.random_range(0..=HANDLER_DELAY_MAX_MS));
    let claim_sync = if rng.random_bool(0.5) { "deferred" } else { "every-commit" };
    let commit_delay = match config.store {
        StoreKind::Postgres => Duration::from_millis(rng.random_range(50..=COMMIT_DELAY_MAX_MS)),
        StoreKind::Sqlite | StoreKind::Redis => Duration::ZERO,
    };
    Drawn { schedule, attempt_timeout, handler_delay, claim_sync, commit_delay }
}

/// The faults `seed` draws for `config`, as a run of it injects them.
#[must_use]
pub fn faults_of(config: &Config, seed: u64) -> Vec<Scheduled> {
    draw(config, seed).schedule
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The clients on the runtime and the faults on a thread of their own, side by side; the
/// faults end with healing. Returns why the run was cut off (if it was) and what the fault
/// thread did.
fn drive(
    runtime: &tokio::runtime::Runtime,
    clients: &Clients,
    seed: u64,
    bounds: &Bounds,
    schedule: &[Scheduled],
    targets: &mut Targets<'_>,
) -> (Option<String>, Injected) {
    let plan = external::plan(seed, bounds);
    let history = clients.history.clone();
    let cut_off = bounds.heal_at + bounds.progress_bound + CUT_OFF_SLACK;
    std::thread::scope(|scope| {
        let heal_ms = Arc::clone(&clients.heal_ms);
        let fault_thread = scope.spawn(move || {
            let injected = inject(&history, bounds, schedule, targets);
            heal_ms.fetch_max(injected.healed_ms, Ordering::SeqCst);
            injected
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (client, streams) in plan.into_iter().enumerate() {
            tasks.spawn_on(client::client(clients.clone(), client, streams), runtime.handle());
        }
        let workload = async {
            let mut errors = Vec::new();
            while let Some(ended) = tasks.join_next().await {
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => errors.push(format!("a client failed: {error}")),
                    Err(error) => errors.push(format!("a client task failed: {error}")),
                }
            }
            errors
        };
        let mut run_error = match runtime.block_on(async { tokio::time::timeout(cut_off, workload).await }) {
            Ok(errors) if errors.is_empty() => None,
            Ok(errors) => Some(errors.join("; ")),
            Err(_) => Some(format!("operations still running {cut_off:?} after the start")),
        };
        // Clients still running at the cut-off stop here, before the audit.
        tasks.abort_all();
        let injected = fault_thread.join().unwrap_or_else(|_| Injected {
            errors: vec!["the fault thread panicked".into()],
            healed_ms: 0,
            struck_busy: 0,
        });
        if !injected.errors.is_empty() {
            let joined = injected.errors.join("; ");
            run_error = Some(run_error.map_or(joined.clone(), |error| format!("{error}; {joined}")));
        }
        (run_error, injected)
    })
}

/// Applies the faults one after another, each no earlier than planned, then heals at
/// `heal_at`.
fn inject(history: &History, bounds: &Bounds, schedule: &[Scheduled], targets: &mut Targets<'_>) -> Injected {
    let log = |text: String| history.fault(text);
    let mut errors = Vec::new();
    let mut struck_busy = 0;
    let sleep_until = |at: Duration| {
        let now = history.elapsed_ms();
        if millis(at) > now {
            std::thread::sleep(Duration::from_millis(millis(at) - now));
        }
    };
    for scheduled in schedule {
        sleep_until(scheduled.at);
        log(format!("inject: {}", scheduled.fault));
        match strike::apply(&scheduled.fault, targets, &log) {
            Ok(busy) => struck_busy += u64::from(busy),
            Err(error) => {
                log(format!("fault failed: {error}"));
                errors.push(format!("{}: {error}", scheduled.fault));
            }
        }
    }
    sleep_until(bounds.heal_at);
    log("heal: every fault ends".to_owned());
    if let Err(error) = strike::heal(targets, &log) {
        log(format!("heal failed: {error}"));
        errors.push(format!("heal: {error}"));
    }
    Injected { errors, healed_ms: history.elapsed_ms(), struck_busy }
}

/// Deletes a finished run's SQLite file and its companions (`-wal`, `-shm`, and their
/// power-loss journals in `journal`), so a long sweep fits on the harness's small disk.
fn remove_database(path: &std::path::Path, journal: &std::path::Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|name| name.to_str())) else { return };
    for dir in [dir, journal] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_str().is_some_and(|file| file.starts_with(name)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// What the fault thread did.
struct Injected {
    /// Faults that failed (a replica or store that would not come back).
    errors: Vec<String>,
    /// When healing ended, in ms of the run.
    healed_ms: u64,
    /// Faults that struck a replica with a request in flight.
    struck_busy: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_faults_and_every_store_draws_each_of_its_kinds() {
        // Goal: faults replay from the seed, and seeds 0..60 reach every kind a store has.
        for store in [StoreKind::Sqlite, StoreKind::Postgres, StoreKind::Redis] {
            let config = Config { faults: 2, ..Config::new("idem".into(), store) };
            assert_eq!(faults_of(&config, 7), faults_of(&config, 7));
            let mut drawn = std::collections::BTreeSet::new();
            for seed in 0..60 {
                let faults = faults_of(&config, seed);
                if std::env::var_os("CHAOS_PRINT").is_some() {
                    let kinds: Vec<_> = faults.iter().map(|s| s.fault.kind()).collect();
                    eprintln!("{store} {seed} {kinds:?}");
                }
                drawn.extend(faults.iter().map(|scheduled| scheduled.fault.kind()));
            }
            assert_eq!(drawn.into_iter().collect::<Vec<_>>(), crate::FaultKind::of_store(store), "{store}");
        }
    }
}
