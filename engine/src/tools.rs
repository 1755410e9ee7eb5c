//! The subcommands that are not the server: `kiln check config`,
//! `kiln promql-test` and `kiln tsdb analyze`. Each writes its report to
//! stdout/stderr and returns the process exit code.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_query::EngineOptions;
use kiln_storage::{Db, HeadOptions, WalOptions};

use kiln_ingest::config::Config;

use crate::cli::{CheckCommand, Command, TsdbCommand};

/// Runs a subcommand; returns the exit code.
pub fn run(cmd: Command) -> i32 {
    match cmd {
        Command::Check(CheckCommand::Config { files }) => check_config(&files),
        Command::PromqlTest { files } => promql_test(&files),
        Command::Tsdb(TsdbCommand::Analyze { dir, limit }) => match analyze(&dir, limit) {
            Ok(report) => {
                print!("{report}");
                0
            }
            Err(e) => {
                eprintln!("tsdb analyze: {e}");
                1
            }
        },
    }
}

/// `kiln check config FILE…`, worded as `promtool check config`: exit code
/// 1 when any file is invalid.
fn check_config(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for f in files {
        println!("Checking {}", f.display());
        match Config::load(f) {
            Ok(cfg) => {
                println!(
                    " SUCCESS: {} is valid prometheus config file syntax",
                    f.display()
                );
                let base = f.parent().unwrap_or(Path::new("."));
                let mut rule_files = 0;
                for pattern in &cfg.rule_files {
                    let full = base.join(pattern);
                    match glob::glob(&full.to_string_lossy()) {
                        Ok(paths) => rule_files += paths.flatten().count(),
                        Err(e) => {
                            println!("  FAILED: invalid rule file pattern {pattern:?}: {e}");
                            failed = true;
                        }
                    }
                }
                if rule_files > 0 {
                    println!("  SUCCESS: {rule_files} rule files found");
                }
            }
            Err(e) => {
                println!("  FAILED: {e}");
                failed = true;
            }
        }
        println!();
    }
    i32::from(failed)
}

/// `kiln promql-test FILE…`: exit code 1 when any eval failed.
fn promql_test(files: &[PathBuf]) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match kiln_query::promqltest::run_files(files, &EngineOptions::default(), &mut out) {
        Ok(t) => i32::from(t.failed > 0),
        Err(e) => {
            let _ = writeln!(out, "promql-test: {e}");
            1
        }
    }
}

/// `kiln tsdb analyze DIR`: opens every logical shard as the server does
/// (blocks, then the WAL replayed into memory) and reports on what is
/// there: the head in detail, the blocks by their counts.
fn analyze(dir: &Path, limit: usize) -> Result<String, String> {
    let mut shard_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-"))
                && p.join("wal").is_dir()
        })
        .collect();
    shard_dirs.sort();
    if shard_dirs.is_empty() {
        return Err(format!("{}: no shard-*/wal directories", dir.display()));
    }
    let mut series = 0usize;
    let mut samples = 0u64;
    let mut chunk_bytes = 0usize;
    let mut head_bytes = 0usize;
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
    let (mut blocks, mut block_series, mut block_samples, mut block_bytes) = (0, 0u64, 0u64, 0u64);
    for d in &shard_dirs {
        // Opening replays the WAL exactly as the server does at start
        // (a torn tail is truncated), hence: a stopped server's directory.
        let (db, _) = Db::open(d, HeadOptions::default(), WalOptions::default())
            .map_err(|e| format!("{}: {e}", d.display()))?;
        for b in db.blocks() {
            let m = b.meta();
            blocks += 1;
            block_series += m.stats.num_series;
            block_samples += m.stats.num_samples;
            block_bytes += b.size_bytes();
        }
        let head = db.head();
        let m = head.memory();
        series += head.num_series();
        samples += m.samples;
        chunk_bytes += m.chunk_bytes;
        head_bytes += m.bytes_total;
        if let (Some(a), Some(b)) = (head.min_time(), head.max_time()) {
            mint = mint.min(a);
            maxt = maxt.max(b);
        }
        for (name, value, n) in head.label_pair_counts() {
            *pairs.entry((name, value)).or_default() += n;
        }
    }
    // Distinct values per label name and series per metric name, over all
    // shards (a value present in several shards counts once).
    let mut cardinality: BTreeMap<String, usize> = BTreeMap::new();
    let mut metric_series: BTreeMap<String, usize> = BTreeMap::new();
    for ((name, value), n) in pairs {
        if name == kiln_storage::METRIC_NAME {
            metric_series.insert(value, n as usize);
        }
        *cardinality.entry(name).or_default() += 1;
    }
    let mut r = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(r, "Data directory: {}", dir.display());
    let _ = writeln!(r, "Logical shards: {}", shard_dirs.len());
    if mint <= maxt {
        let _ = writeln!(
            r,
            "Time range: {mint} .. {maxt} ms ({} s)",
            (maxt - mint) / 1000
        );
    }
    let _ = writeln!(
        r,
        "Blocks: {blocks} ({block_series} series, {block_samples} samples, {block_bytes} bytes; series counted once per block)"
    );
    let _ = writeln!(r, "Series: {series}");
    let _ = writeln!(r, "Samples: {samples}");
    if samples > 0 {
        let _ = writeln!(
            r,
            "Chunk bytes per sample: {:.3}",
            chunk_bytes as f64 / samples as f64
        );
    }
    if series > 0 {
        let _ = writeln!(
            r,
            "Head bytes per series (excluding chunks): {:.0}",
            (head_bytes.saturating_sub(chunk_bytes)) as f64 / series as f64
        );
    }
    let _ = writeln!(r, "\nHighest cardinality labels (distinct values):");
    for (name, n) in top(&cardinality, limit) {
        let _ = writeln!(r, "{n} {name}");
    }
    let _ = writeln!(r, "\nHighest cardinality metric names (series):");
    for (name, n) in top(&metric_series, limit) {
        let _ = writeln!(r, "{n} {name}");
    }
    Ok(r)
}

/// The `limit` largest entries, largest first, ties by name.
fn top(m: &BTreeMap<String, usize>, limit: usize) -> Vec<(&String, &usize)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.truncate(limit);
    v
}
