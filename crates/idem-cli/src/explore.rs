//! `idem explore`: stateright's Explorer web UI for the model.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use stateright::Model;

use crate::model_options::ModelOptions;

/// Options of `idem explore`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelOptions,
    /// Address to serve the Explorer on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    address: SocketAddr,
}

/// Why `idem explore` cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExploreError {
    /// The model options are refused.
    #[error(transparent)]
    Config(#[from] idem_model::ConfigError),
    /// The address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
}

/// Serves the Explorer until the process is stopped.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let model = args.model.model().map_err(ExploreError::Config)?;
    // stateright's server panics when it cannot bind; try first so a busy port is an error.
    let probe =
        TcpListener::bind(args.address).map_err(|source| ExploreError::Bind { address: args.address, source })?;
    drop(probe);
    let _ = writeln!(std::io::stdout().lock(), "Explorer for the model: http://{}/ (Ctrl-C stops it)", args.address);
    let _checker = model.checker().serve(args.address);
    Ok(ExitCode::SUCCESS)
}
