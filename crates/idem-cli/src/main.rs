//! The `idem` command line. Each subcommand lives in its own module; `main` only parses
//! and dispatches, so adding one (`serve`, `pay`) means one new module and one enum arm.

mod chaos;
mod check;
mod explore;
mod keys;
mod model_options;
mod pay;
mod serve;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// idem: idempotency keys for HTTP, model-checked and simulated.
#[derive(Parser, Debug)]
#[command(name = "idem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run `idem serve` replicas as real processes on a real store under real faults, seed by seed.
    Chaos(chaos::Args),
    /// Model-check the protocol (idem-core's own transitions) and print each property's verdict.
    Check(check::Args),
    /// Serve stateright's Explorer web UI to walk the model step by step.
    Explore(explore::Args),
    /// List, show or forget idempotency records in a store (SQLite, PostgreSQL or Redis).
    Keys(keys::Args),
    /// Send a payment to a running server through the retrying client (a key per payment).
    Pay(pay::Args),
    /// Serve the payments/users API with idempotency keys (SQLite, PostgreSQL, Redis or memory store).
    Serve(serve::Args),
    /// Simulate the shipped server, replicas and store over a faulty network (turmoil), seed by seed.
    Sim(sim::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chaos(args) => chaos::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Explore(args) => explore::run(&args),
        Command::Keys(args) => keys::run(&args),
        Command::Pay(args) => pay::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("idem: error: {error}");
            ExitCode::from(2)
        }
    }
}
