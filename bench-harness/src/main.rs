//! `kiln-bench`: fleet simulator, load runs, comparison and capacity planning.

fn main() {
    eprintln!(
        "kiln-bench {}: no subcommands yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
