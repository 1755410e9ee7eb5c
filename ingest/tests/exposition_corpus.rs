//! The exposition parser against independent truth: the case table taken
//! from Prometheus's parser tests (`testdata/exposition/corpus/cases.json`,
//! with expected entries), the standalone upstream files that must parse,
//! and the OpenMetrics conformance suite as the target of the strict
//! checker, `check_openmetrics`.
//!
//! Cases we knowingly get wrong are listed with a reason in
//! `testdata/exposition/corpus/KNOWN_FAILURES.txt`. The test fails when an
//! unlisted case fails AND when a listed case starts passing, so the list
//! is always exact.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_ingest::exposition::{Entry, Format, Parser, check_openmetrics};
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/exposition/corpus")
}

/// `case id -> reason` from the known-failures list.
fn known_failures() -> BTreeMap<String, String> {
    let text = fs::read_to_string(corpus().join("KNOWN_FAILURES.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, reason) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (id.to_owned(), reason.trim().to_owned())
        })
        .collect()
}

/// Parses a whole body; the entries or the first error's text.
fn parse_all(body: &[u8], format: Format, created: bool) -> Result<Vec<Entry<'_>>, String> {
    let mut p = Parser::new(body, format);
    if created {
        p = p.with_created_timestamps();
    }
    p.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

fn float_matches(want: &Value, got: f64) -> bool {
    match want {
        Value::String(s) if s == "NaN" => got.is_nan(),
        Value::String(s) if s == "+Inf" => got == f64::INFINITY,
        Value::String(s) if s == "-Inf" => got == f64::NEG_INFINITY,
        Value::Number(n) => n.as_f64() == Some(got),
        _ => false,
    }
}

fn labels_json(l: &kiln_storage::Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.to_owned(), Value::String(l.value.to_owned())))
            .collect(),
    )
}

/// Compares one of our entries with one expected entry; the fields the
/// expected entry carries are checked, and for a full sample entry (one
/// with a value) absent optional fields must be absent here too.
fn compare(want: &Value, got: &Entry<'_>) -> Result<(), String> {
    let kind = want["kind"].as_str().unwrap();
    let series_text = want["series_text"].as_str().unwrap();
    match (kind, got) {
        ("help", Entry::Help { metric, text }) => {
            if metric != series_text || want["help"].as_str() != Some(text) {
                return Err(format!("help {metric:?} {text:?}"));
            }
        }
        ("type", Entry::Type { metric, kind }) => {
            if metric != series_text || want["type"].as_str() != Some(kind.as_str()) {
                return Err(format!("type {metric:?} {kind}"));
            }
        }
        ("unit", Entry::Unit { metric, unit }) => {
            if metric != series_text || want["unit"].as_str() != Some(unit) {
                return Err(format!("unit {metric:?} {unit:?}"));
            }
        }
        ("sample", Entry::Sample(s)) => {
            if s.series() != series_text.as_bytes() {
                return Err(format!("series {:?}", String::from_utf8_lossy(s.series())));
            }
            let full = want.get("value").is_some();
            if full && !float_matches(&want["value"], s.value()) {
                return Err(format!("value {}", s.value()));
            }
            if let Some(l) = want.get("labels") {
                let got = labels_json(&s.to_labels().map_err(|e| e.to_string())?);
                if &got != l {
                    return Err(format!("labels {got}"));
                }
            }
            if full && want.get("timestamp_ms").and_then(Value::as_i64) != s.timestamp_ms() {
                return Err(format!("timestamp {:?}", s.timestamp_ms()));
            }
            // Prometheus reports "no start timestamp" as 0.
            if full || want.get("start_timestamp_ms").is_some() {
                let st = want
                    .get("start_timestamp_ms")
                    .and_then(Value::as_i64)
                    .filter(|t| *t != 0);
                if st != s.start_timestamp_ms() {
                    return Err(format!("start timestamp {:?}", s.start_timestamp_ms()));
                }
            }
            if full {
                let want_ex = want.get("exemplars").and_then(Value::as_array);
                match (want_ex.map(Vec::as_slice), s.exemplar()) {
                    (None | Some([]), None) => {}
                    (Some([w]), Some(e)) => {
                        let l = labels_json(&e.to_labels().map_err(|e| e.to_string())?);
                        if l != w["labels"]
                            || !float_matches(&w["value"], e.value())
                            || w.get("timestamp_ms").and_then(Value::as_i64) != e.timestamp_ms()
                        {
                            return Err(format!("exemplar {e:?}"));
                        }
                    }
                    (w, g) => return Err(format!("exemplars: want {w:?}, got {g:?}")),
                }
            }
        }
        _ => return Err(format!("kind: want {kind}, got {got:?}")),
    }
    Ok(())
}

/// Runs one case of cases.json; `Err` describes the mismatch.
fn run_case(case: &Value) -> Result<(), String> {
    let file = case["file"].as_str().unwrap();
    let body = fs::read(corpus().join(file)).unwrap();
    let format = if case["format"].as_str().unwrap().starts_with("openmetrics") {
        Format::OpenMetrics
    } else {
        Format::PromText
    };
    let options = case["parser_options"].as_str().unwrap();
    if options.contains("NHCB=true") {
        return Err("needs classic-to-native histogram conversion".into());
    }
    let created = options.starts_with("_created series skipped")
        || options.contains(", _created series skipped");
    let expect = case["expect"].as_str().unwrap();
    let result = parse_all(&body, format, created);
    if expect != "ok" {
        return match result {
            Ok(_) => Err("accepted an input that must be refused".into()),
            Err(_) => Ok(()),
        };
    }
    let entries = result?;
    let Some(expected_field) = case.get("expected_entries").and_then(Value::as_str) else {
        return Ok(());
    };
    // Some entries append a remark after the file name.
    let expected_file = expected_field.split(' ').next().unwrap();
    let expected: Vec<Value> =
        serde_json::from_slice(&fs::read(corpus().join(expected_file)).unwrap()).unwrap();
    // Comments are not entries of this parser.
    let expected: Vec<&Value> = expected.iter().filter(|e| e["kind"] != "comment").collect();
    for (i, (w, g)) in expected.iter().zip(&entries).enumerate() {
        compare(w, g).map_err(|e| format!("entry {i}: {e}; want {w}"))?;
    }
    if expected.len() != entries.len() {
        return Err(format!(
            "{} entries, want {}",
            entries.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// Checks outcomes against the known-failures list for one group of ids.
fn check(group: &str, outcomes: &BTreeMap<String, Result<(), String>>) {
    let known = known_failures();
    let mut problems = Vec::new();
    let mut passed = 0;
    for (id, r) in outcomes {
        match (r, known.contains_key(id)) {
            (Ok(()), false) => passed += 1,
            (Err(e), false) => problems.push(format!("FAIL {id}: {e}")),
            (Ok(()), true) => problems.push(format!("now passes, remove from list: {id}")),
            (Err(_), true) => {}
        }
    }
    println!(
        "{group}: {passed} passed, {} known failures, {} problems",
        outcomes.len() - passed - problems.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "{group}:\n{}", problems.join("\n"));
}

#[test]
fn case_table() {
    let cases: Vec<Value> =
        serde_json::from_slice(&fs::read(corpus().join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 120);
    let outcomes = cases
        .iter()
        .map(|c| (c["file"].as_str().unwrap().to_owned(), run_case(c)))
        .collect();
    check("cases.json", &outcomes);
}

#[test]
fn standalone_files_parse() {
    for (file, format) in [
        (
            "textparse-testdata/alltypes.237mfs.prom.txt",
            Format::PromText,
        ),
        (
            "textparse-testdata/alltypes.237mfs.nometa.prom.txt",
            Format::PromText,
        ),
        (
            "textparse-testdata/alltypes.5mfs.om.txt",
            Format::OpenMetrics,
        ),
        ("textparse-testdata/1histogram.om.txt", Format::OpenMetrics),
        ("promtool-testdata/metrics-test.prom", Format::PromText),
        (
            "promtool-testdata/dump-openmetrics-test.prom",
            Format::OpenMetrics,
        ),
        (
            "promtool-testdata/dump-openmetrics-roundtrip-test.prom",
            Format::OpenMetrics,
        ),
    ] {
        let body = fs::read(corpus().join(file)).unwrap();
        let entries = parse_all(&body, format, false).unwrap_or_else(|e| panic!("{file}: {e}"));
        let samples = entries
            .iter()
            .filter(|e| matches!(e, Entry::Sample(_)))
            .count();
        for e in &entries {
            if let Entry::Sample(s) = e {
                s.to_labels().unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
        let want = match file {
            "textparse-testdata/alltypes.237mfs.prom.txt" => 1857,
            "textparse-testdata/alltypes.237mfs.nometa.prom.txt" => 1857,
            "textparse-testdata/alltypes.5mfs.om.txt" => 53,
            "textparse-testdata/1histogram.om.txt" => 42,
            "promtool-testdata/metrics-test.prom" => 27,
            _ => samples,
        };
        assert_eq!(samples, want, "{file}");
    }
}

#[test]
fn openmetrics_conformance_suite() {
    let dir = corpus().join("openmetrics-suite");
    let mut outcomes = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let name = case.file_name().unwrap().to_str().unwrap().to_owned();
        let meta: Value =
            serde_json::from_slice(&fs::read(case.join("test.json")).unwrap()).unwrap();
        let body = fs::read(case.join(meta["file"].as_str().unwrap())).unwrap();
        let should_parse = meta["shouldParse"].as_bool().unwrap();
        // The strict target: the grammar, every label set, and the
        // specification's semantic rules.
        let result = check_openmetrics(&body).map_err(|e| e.to_string());
        let outcome = match (should_parse, result) {
            (true, Ok(())) | (false, Err(_)) => Ok(()),
            (true, Err(e)) => Err(format!("refused a valid input: {e}")),
            (false, Ok(())) => Err("accepted an invalid input".into()),
        };
        outcomes.insert(format!("openmetrics-suite/{name}"), outcome);
    }
    assert_eq!(outcomes.len(), 211);
    check("openmetrics-suite", &outcomes);
}

#[test]
fn node_exporter_captures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/exposition");
    let mut series_sets = Vec::new();
    for file in [
        "node_exporter-1.5.0.t0.prom",
        "node_exporter-1.5.0.t15.prom",
    ] {
        let body = fs::read(dir.join(file)).unwrap();
        let entries = parse_all(&body, Format::PromText, false).unwrap();
        let (mut help, mut types) = (0, 0);
        let mut series = std::collections::BTreeSet::new();
        for e in &entries {
            match e {
                Entry::Help { .. } => help += 1,
                Entry::Type { .. } => types += 1,
                Entry::Sample(s) => {
                    let labels = s.to_labels().unwrap();
                    assert!(s.timestamp_ms().is_none());
                    series.insert(labels);
                }
                Entry::Unit { .. } => panic!("no UNIT in the text format"),
            }
        }
        assert_eq!((help, types, series.len()), (283, 283, 507), "{file}");
        // Summary quantiles are rewritten as Prometheus 3 stores them.
        let q = kiln_storage::Labels::from_pairs([
            ("__name__", "go_gc_duration_seconds"),
            ("quantile", "1.0"),
        ])
        .unwrap();
        assert!(series.contains(&q), "{file}");
        series_sets.push(series);
    }
    assert_eq!(series_sets[0], series_sets[1], "the same series 15 s apart");
}
