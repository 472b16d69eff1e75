//! The model's configuration as command-line options, shared by `check` and `explore`.

use clap::Args;
use idem_model::{Config, ConfigError, IdemModel, Mode, NetworkKind, Variant};

/// Which system to model.
#[derive(Args, Debug, Clone)]
pub(crate) struct ModelOptions {
    /// Clients (each its own principal: alice, bob, carol, dave).
    #[arg(long, default_value_t = 2)]
    clients: u8,
    /// Server replicas sharing one store.
    #[arg(long, default_value_t = 2)]
    servers: u8,
    /// Logical operations per client (operation n uses key kn).
    #[arg(long = "ops", default_value_t = 1)]
    ops_per_client: u8,
    /// Client 1 also reuses key k1 with a different amount (expects 422).
    #[arg(long)]
    key_reuse: bool,
    /// Server crashes (a crash loses the server's running handlers).
    #[arg(long, default_value_t = 1)]
    crashes: u8,
    /// Lease lapses while the claim's holder is still running (0 turns them off).
    #[arg(long, default_value_t = 1)]
    lapses: u8,
    /// Handler failures before the side effect (each releases its claim).
    #[arg(long, default_value_t = 0)]
    failures: u8,
    /// Early timer resends per operation.
    #[arg(long, default_value_t = 1)]
    resends: u8,
    /// Network: duplicating (unordered, duplicates), ordered (FIFO, reliable), lossy (unordered, drops).
    #[arg(long, default_value_t = NetworkKind::Duplicating)]
    network: NetworkKind,
    /// Duplicate deliveries (duplicating) or losses (lossy) in all.
    #[arg(long, default_value_t = 1)]
    network_faults: u8,
    /// atomic: side effect and completion in one fenced transaction; separate: side effect on its own.
    #[arg(long, default_value_t = Mode::Atomic)]
    mode: Mode,
    /// correct, or a planted bug: no-claim, no-fence-check, unscoped-keys, no-fingerprint-check, fence-reuse.
    #[arg(long, default_value_t = Variant::Correct)]
    variant: Variant,
}

impl ModelOptions {
    /// The configuration these options describe.
    pub(crate) fn config(&self) -> Config {
        Config {
            clients: self.clients,
            servers: self.servers,
            ops_per_client: self.ops_per_client,
            key_reuse: self.key_reuse,
            crashes: self.crashes,
            lapses: self.lapses,
            failures: self.failures,
            resends: self.resends,
            network: self.network,
            network_faults: self.network_faults,
            mode: self.mode,
            variant: self.variant,
        }
    }

    /// The model these options describe, or why they are refused.
    pub(crate) fn model(&self) -> Result<IdemModel, ConfigError> {
        self.config().into_model()
    }
}
