//! The subcommands, run as a user runs them.

use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn promql_test_runs_scripts_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.test");
    std::fs::write(
        &good,
        "load 1m\n  m{a=\"x\"} 1 2 3\n\neval instant at 2m m\n  m{a=\"x\"} 3\n\neval instant at 2m sum(rate(m[2m]))\n  {} 0.016666666666666666\n",
    )
    .unwrap();
    let out = kiln().arg("promql-test").arg(&good).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 passed, 0 failed"), "{text}");

    // A wrong expectation is reported and fails the run.
    let bad = dir.path().join("bad.test");
    std::fs::write(&bad, "load 1m\n  m 1 2 3\n\neval instant at 2m m\n  m 4\n").unwrap();
    let out = kiln()
        .arg("promql-test")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("2 passed, 1 failed"), "{text}");

    // Prometheus's own scripts that kiln passes in full.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/promql");
    let out = kiln()
        .arg("promql-test")
        .arg(format!("{root}/literals.test"))
        .arg(format!("{root}/selectors.test"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
