//! The parser against Prometheus's own parser table
//! (testdata/promql-parse/parse_expressions_cases.json, 353 cases): every
//! case must be accepted or rejected as Prometheus does, with Prometheus's
//! message. Cases kiln gets wrong are listed, with the reason, in
//! testdata/promql-parse/known_failures.txt; the test fails when an
//! unlisted case fails or a listed case starts passing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_query::parse;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// Standard base64 (for the two inputs that are not valid UTF-8).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// What kiln does with one case, in a form the known-failures file names.
fn outcome(case: &serde_json::Value) -> (String, Result<(), String>) {
    let expect_ok = case["expect"] == "ok";
    let (key, input) = match case.get("input").and_then(|v| v.as_str()) {
        Some(s) => (s.to_owned(), Some(s.to_owned())),
        None => {
            let b64 = case["input_base64"].as_str().unwrap_or_default();
            (
                format!("base64:{b64}"),
                String::from_utf8(base64_decode(b64)).ok(),
            )
        }
    };
    let Some(input) = input else {
        // Not UTF-8: it cannot reach `parse(&str)`, so it is rejected before
        // parsing (the HTTP layer refuses it); Prometheus rejects it too.
        return (
            key,
            if expect_ok {
                Err("valid input is not UTF-8".into())
            } else {
                Ok(())
            },
        );
    };
    let got = parse(&input);
    let res = match (expect_ok, got) {
        (true, Ok(_)) => Ok(()),
        (true, Err(e)) => Err(format!("rejected valid input: {e}")),
        (false, Ok(_)) => Err("accepted invalid input".into()),
        (false, Err(e)) => {
            let want = case["prometheus_error"].as_str().unwrap_or_default();
            if e.msg == want {
                Ok(())
            } else {
                Err(format!("message {:?}, Prometheus says {:?}", e.msg, want))
            }
        }
    };
    (key, res)
}

#[test]
fn prometheus_parser_table() {
    let text = std::fs::read_to_string(testdata("promql-parse/parse_expressions_cases.json"))
        .expect("corpus present");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid json");
    assert_eq!(cases.len(), 353);
    let known_text = std::fs::read_to_string(testdata("promql-parse/known_failures.txt"))
        .expect("known failures list present");
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for line in known_text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (input, reason) = line.split_once('\t').expect("input<TAB>reason");
        let input: String = serde_json::from_str(input).expect("input is a JSON string");
        known.insert(input, reason.to_owned());
    }
    let mut problems = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    let mut seen_failing = std::collections::BTreeSet::new();
    for case in &cases {
        let (key, res) = outcome(case);
        match res {
            Ok(()) => {
                passed += 1;
                if known.contains_key(&key) && !seen_failing.contains(&key) {
                    problems.push(format!("listed as failing but passes: {key:?}"));
                }
            }
            Err(why) => {
                failed += 1;
                seen_failing.insert(key.clone());
                if !known.contains_key(&key) {
                    problems.push(format!(
                        "{}\t{why}",
                        serde_json::to_string(&key).unwrap_or_default()
                    ));
                }
            }
        }
    }
    for k in known.keys() {
        if !cases.iter().any(|c| outcome(c).0 == *k) {
            problems.push(format!("listed case not in corpus: {k:?}"));
        }
    }
    println!(
        "parser table: {passed} passed, {failed} failed (known: {})",
        known.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn error_display_has_prometheus_prefix() {
    let e = parse("1+").unwrap_err();
    assert_eq!(e.to_string(), "1:3: parse error: unexpected end of input");
    let e = parse("foo{\n  a=b}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "2:5: parse error: unexpected identifier \"b\" in label matching, expected string"
    );
}
