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

#[test]
fn check_config_agrees_with_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/configs");
    // Files Prometheus 2.42 (Debian's promtool) can judge: Debian's own and
    // the compliance suite's, plus broken ones written here.
    let mut files: Vec<std::path::PathBuf> = [
        "debian-prometheus.yml",
        "debian-example-prometheus.yml",
        "promql-compliance-prometheus.yml",
    ]
    .iter()
    .map(|f| std::path::Path::new(root).join(f))
    .collect();
    let broken = [
        "global:\n  scrape_interval: 15x\n",
        "global:\n  no_such_field: 1\n",
        "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
        "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
        "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: explode\n",
        "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [x]\n        regex: '(unclosed'\n",
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: 'not-a-list'\n",
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['h:1']\n        labels:\n          x: y\n",
    ];
    for (i, text) in broken.iter().enumerate() {
        let p = dir.path().join(format!("case{i}.yml"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    for f in &files {
        let ours = kiln().args(["check", "config"]).arg(f).output().unwrap();
        let theirs = Command::new("promtool")
            .args(["check", "config"])
            .arg(f)
            .output()
            .expect("promtool must be installed (scripts/test.sh installs the prometheus package)");
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{}:\nkiln: {}\npromtool: {}{}",
            f.display(),
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            String::from_utf8_lossy(&theirs.stderr)
        );
    }
}
