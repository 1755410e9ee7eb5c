//! Prometheus's PromQL acceptance scripts (testdata/promql/*.test) run
//! through kiln's promqltest runner. Evals kiln fails are listed with a
//! reason in testdata/promql/known_failures.txt (`file:line<TAB>reason`);
//! the test fails when an unlisted eval fails or a listed one stops
//! failing, so the list stays honest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_query::EngineOptions;
use kiln_query::promqltest::{Status, run_files, run_script, scripts_in};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/promql")
}

/// The options Prometheus's own suite runs with.
fn suite_options() -> EngineOptions {
    EngineOptions {
        lookback_delta_ms: 300_000,
        max_samples: 10_000,
        default_subquery_step_ms: 60_000,
    }
}

#[test]
fn prometheus_scripts_against_known_failures() {
    let known_text =
        std::fs::read_to_string(dir().join("known_failures.txt")).expect("known failures list");
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for line in known_text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line.split_once('\t').unwrap_or((line, ""));
        known.insert(id.to_owned(), reason.to_owned());
    }
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for path in scripts_in(&dir()).expect("scripts") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for o in run_script(&text, &suite_options()) {
            let id = format!("{name}:{}", o.line);
            seen.insert(id.clone());
            match (&o.status, known.contains_key(&id)) {
                (Status::Failed(why), false) => problems.push(format!(
                    "{id}\t{}\n    {}",
                    o.command,
                    why.lines().next().unwrap_or("")
                )),
                (Status::Passed | Status::Skipped(_), true) => {
                    problems.push(format!("listed as failing but does not fail: {id}"))
                }
                _ => {}
            }
        }
    }
    for id in known.keys() {
        if !seen.contains(id) {
            problems.push(format!("listed eval does not exist: {id}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn run_files_prints_totals() {
    let mut out = Vec::new();
    let totals = run_files(&[dir().join("literals.test")], &suite_options(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with(&format!(
        "{} passed, {} failed, {} skipped\n",
        totals.passed, totals.failed, totals.skipped
    )));
    assert_eq!(totals.passed + totals.failed + totals.skipped, 25);
}
