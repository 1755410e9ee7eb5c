//! `kiln`: the Prometheus-compatible server binary.

fn main() {
    eprintln!("kiln {}: the server is not wired up yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(1);
}
