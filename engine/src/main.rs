//! `kiln`: the Prometheus-compatible server binary.
//!
//! Parses Prometheus-style flags and runs the server (see `server.rs`). Exit
//! codes: 0 after a clean shutdown, 1 when the server cannot start (bad
//! configuration, address in use, …), 2 for bad command-line flags.

mod cli;
mod http;
mod logging;
mod query;
mod scrape;
mod selfmetrics;
mod server;
mod shard;
mod state;
mod targets;
mod tools;
mod tsdb;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
    if let Some(cmd) = cli.command {
        std::process::exit(tools::run(cmd));
    }
    logging::init(&cli.server.log_level);
    if let Err(e) = server::run(cli.server) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
