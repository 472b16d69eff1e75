//! How to open a [`crate::SqliteStore`]: the file, its size limits and its pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idem_core::Limits;

/// The most connections a pool may be given. SQLite has one writer at a time, so more
/// connections only add readers and memory; this bound catches a misplaced zero or unit.
pub const CONNECTIONS_MAX_LIMIT: u32 = 64;

/// [`SqliteOptions::replay_cache_bytes`]'s default: 64 MiB.
pub const DEFAULT_REPLAY_CACHE_BYTES: u64 = 64 << 20;

/// Where the store lives and how big it may grow.
///
/// ```
/// use std::time::Duration;
/// use idem_sqlite::SqliteOptions;
///
/// let options = SqliteOptions::new("./idem.db")
///     .records_max(1_000_000)
///     .stored_bytes_max(1 << 30)
///     .connections_max(8)
///     .busy_timeout(Duration::from_secs(2));
/// assert_eq!(options.path().to_str(), Some("./idem.db"));
/// assert_eq!(options.limits().records_max, 1_000_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    pub(crate) path: PathBuf,
    pub(crate) create_if_missing: bool,
    pub(crate) limits: Limits,
    pub(crate) connections_max: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) acquire_timeout: Duration,
    pub(crate) claim_sync: ClaimSync,
    pub(crate) replay_cache_bytes: u64,
    pub(crate) vfs: Option<String>,
}

/// When a claim (and a renewal or release) reaches the disk.
///
/// Completions are always synced before they are answered (G7). Claims need not be, in
/// atomic mode only: if a crash loses a claim that was never synced, the execution it
/// admitted cannot have committed either, because its completion's commit would have
/// synced the claim before it (the `-wal` file is synced as a whole). The model checks
/// exactly this: `idem check --store-crashes 1` holds G1-G5 in atomic mode with claims
/// lost in a crash, and breaks G1 in separate mode (docs/guarantees.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimSync {
    /// Every commit is synced (`synchronous=FULL`). Right for separate mode, where a
    /// handler's side effect lives elsewhere and a lost claim would let it run twice.
    #[default]
    EveryCommit,
    /// Claims, renewals and releases commit with `synchronous=NORMAL`; they reach the disk
    /// with the next completion (or checkpoint). Only for atomic mode
    /// ([`idem_core::AtomicStore::complete_with`]). Opening the store skips the fence
    /// counter past every fence a crash can have lost, so no fence is issued twice.
    Deferred,
}

impl SqliteOptions {
    /// The store in the file at `path`, created if missing, with the defaults:
    /// 1,000,000 records, 1 GiB of ids and responses, 8 connections, a 5 s busy timeout
    /// a 5 s wait for a free connection, and every commit synced
    /// ([`ClaimSync::EveryCommit`]).
    #[must_use]
    pub fn new(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions {
            path: path.as_ref().to_path_buf(),
            create_if_missing: true,
            limits: Limits { records_max: 1_000_000, stored_bytes_max: 1 << 30 },
            connections_max: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            claim_sync: ClaimSync::EveryCommit,
            replay_cache_bytes: DEFAULT_REPLAY_CACHE_BYTES,
            vfs: None,
        }
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size limits the store's steps admit claims against ([`idem_core::step::step`]).
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether opening creates a missing file (default `true`); `false` makes a missing
    /// file an [`crate::OpenError`], e.g. for a CLI that inspects an existing store.
    #[must_use]
    pub fn create_if_missing(mut self, create: bool) -> SqliteOptions {
        self.create_if_missing = create;
        self
    }

    /// Most records held at once, live or expired but not yet purged; at the limit new
    /// claims get [`idem_core::StoreError::Full`].
    #[must_use]
    pub fn records_max(mut self, records_max: u64) -> SqliteOptions {
        self.limits.records_max = records_max;
        self
    }

    /// Most bytes of ids, responses and bookkeeping held at once, counted by
    /// [`idem_core::usage::stored_bytes`] as in every store; at the limit new claims get
    /// [`idem_core::StoreError::Full`]. Completions of granted claims are always accepted,
    /// so the count may overshoot by the responses of the claims in flight.
    #[must_use]
    pub fn stored_bytes_max(mut self, stored_bytes_max: u64) -> SqliteOptions {
        self.limits.stored_bytes_max = stored_bytes_max;
        self
    }

    /// Most connections in the pool, 1..=[`CONNECTIONS_MAX_LIMIT`]. Each is a SQLite
    /// handle on its own thread; writers still take turns.
    #[must_use]
    pub fn connections_max(mut self, connections_max: u32) -> SqliteOptions {
        self.connections_max = connections_max;
        self
    }

    /// How long a writer waits for another writer's transaction before its statement fails
    /// with `SQLITE_BUSY` (reported as [`idem_core::StoreError::Unavailable`]).
    #[must_use]
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> SqliteOptions {
        self.busy_timeout = busy_timeout;
        self
    }

    /// How long a call waits for a free pooled connection before it fails with
    /// [`idem_core::StoreError::Unavailable`].
    #[must_use]
    pub fn acquire_timeout(mut self, acquire_timeout: Duration) -> SqliteOptions {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// When claims reach the disk (default [`ClaimSync::EveryCommit`]); see [`ClaimSync`].
    /// Every process that opens one file must use the same setting.
    #[must_use]
    pub fn claim_sync(mut self, claim_sync: ClaimSync) -> SqliteOptions {
        self.claim_sync = claim_sync;
        self
    }

    /// Most bytes of completed records kept in memory to answer replays without reading
    /// the file (default 64 MiB, counted as [`idem_core::usage::stored_bytes`]); 0 keeps
    /// none. A completed record never changes until it expires, so the copies stay right
    /// across processes sharing the file; each is dropped once its record has expired.
    #[must_use]
    pub fn replay_cache_bytes(mut self, replay_cache_bytes: u64) -> SqliteOptions {
        self.replay_cache_bytes = replay_cache_bytes;
        self
    }

    /// Opens every connection through the SQLite VFS registered under `name` instead of
    /// the default one, e.g. idem-power-loss's `VFS_NAME`, which journals unsynced writes
    /// so a crash harness can drop them as a power loss would. The VFS must be registered
    /// in this process before [`crate::SqliteStore::open`]; an unknown name fails the
    /// open. Every connection of the store (setup, writer, pool) uses it.
    ///
    /// ```
    /// use idem_sqlite::{SqliteOptions, SqliteStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let options = SqliteOptions::new(dir.path().join("idem.db")).vfs("no-such-vfs");
    /// assert_eq!(options.vfs_name(), Some("no-such-vfs"));
    /// // SQLite is asked for that VFS, and has none by that name.
    /// assert!(SqliteStore::open(options).await.is_err());
    /// # }
    /// ```
    #[must_use]
    pub fn vfs(mut self, name: impl Into<String>) -> SqliteOptions {
        self.vfs = Some(name.into());
        self
    }

    /// The VFS connections open through, if not the default ([`SqliteOptions::vfs`]).
    #[must_use]
    pub fn vfs_name(&self) -> Option<&str> {
        self.vfs.as_deref()
    }

    /// Why these options cannot open a store, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.connections_max == 0 || self.connections_max > CONNECTIONS_MAX_LIMIT {
            return Some(format!(
                "connections_max is {}; it must be 1..={CONNECTIONS_MAX_LIMIT}",
                self.connections_max
            ));
        }
        if self.limits.records_max == 0 {
            return Some("records_max is 0; the store could take no claim".to_owned());
        }
        if self.limits.stored_bytes_max == 0 {
            return Some("stored_bytes_max is 0; the store could take no claim".to_owned());
        }
        if self.acquire_timeout.is_zero() {
            return Some("acquire_timeout is 0; no call could get a connection".to_owned());
        }
        None
    }
}
