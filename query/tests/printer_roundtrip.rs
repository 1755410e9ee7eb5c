//! Printing then parsing gives back the same tree: for every expression of
//! Prometheus's parser table (testdata/promql-parse) and of the PromQL test
//! scripts (testdata/promql/*.test) that kiln parses, and for generated
//! expressions. Both renderings are checked: one line (`Display`) and
//! `format_query`'s (`pretty`). Trees are compared without positions and
//! with matchers in a canonical order (the printer sorts them, as
//! Prometheus does).

use std::path::PathBuf;

use kiln_query::ast::{Expr, ExprKind, PosRange};
use kiln_query::parse;
use proptest::prelude::*;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// The tree without positions and with sorted matchers, as text.
fn canonical(e: &Expr) -> String {
    fn norm(e: &mut Expr) {
        e.pos = PosRange::default();
        match &mut e.kind {
            ExprKind::Vector(sel) | ExprKind::Matrix { sel, .. } => {
                sel.matchers.sort_by_key(|m| m.to_string());
            }
            ExprKind::Subquery { expr, .. } | ExprKind::Neg(expr) | ExprKind::Paren(expr) => {
                norm(expr)
            }
            ExprKind::Call { args, .. } => args.iter_mut().for_each(norm),
            ExprKind::Aggregate { expr, param, .. } => {
                norm(expr);
                if let Some(p) = param {
                    norm(p);
                }
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                norm(lhs);
                norm(rhs);
            }
            ExprKind::Number(_) | ExprKind::String(_) => {}
        }
    }
    let mut e = e.clone();
    norm(&mut e);
    // Debug, so that NaN literals compare equal.
    format!("{e:?}")
}

/// Checks both renderings of `query` (which must parse); returns an error
/// text naming the first rendering that does not read back the same.
fn round_trip(query: &str) -> Result<(), String> {
    let e = parse(query).map_err(|err| format!("{query:?} does not parse: {err}"))?;
    let want = canonical(&e);
    for (how, text) in [("one line", e.to_string()), ("pretty", e.pretty())] {
        let back = parse(&text)
            .map_err(|err| format!("{how} {text:?} of {query:?} does not parse: {err}"))?;
        if canonical(&back) != want {
            return Err(format!(
                "{how} {text:?} of {query:?} parses to another tree:\n{}\n{want}",
                canonical(&back)
            ));
        }
        // Printing is idempotent: the re-read tree prints the same text.
        if how == "one line" && back.to_string() != text {
            return Err(format!(
                "{text:?} prints as {:?} once re-read",
                back.to_string()
            ));
        }
    }
    Ok(())
}

fn corpus_queries() -> Vec<String> {
    let text = std::fs::read_to_string(testdata("promql-parse/parse_expressions_cases.json"))
        .expect("parser table");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
    cases
        .iter()
        .filter_map(|c| c["input"].as_str().map(str::to_owned))
        .collect()
}

/// The query of every `eval…` line of the test scripts.
fn script_queries() -> Vec<String> {
    let mut out = Vec::new();
    let dir = testdata("promql");
    for entry in std::fs::read_dir(&dir).expect("testdata/promql") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("test") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("script");
        for line in text.lines() {
            let line = line.trim();
            if !line.starts_with("eval") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            // `eval… instant at T q` or `eval… range from A to B step S q`.
            let skip = match words.get(1) {
                Some(&"instant") => 4,
                Some(&"range") => 8,
                _ => continue,
            };
            let mut rest = line;
            for _ in 0..skip {
                rest = rest.trim_start();
                rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
            }
            let q = rest.trim();
            if !q.is_empty() {
                out.push(q.to_owned());
            }
        }
    }
    out
}

#[test]
fn parser_table_and_script_queries_read_back_the_same() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for q in corpus_queries().into_iter().chain(script_queries()) {
        if parse(&q).is_err() {
            continue;
        }
        checked += 1;
        if let Err(e) = round_trip(&q) {
            failures.push(e);
        }
    }
    assert!(checked > 1000, "only {checked} queries found");
    assert!(
        failures.is_empty(),
        "{} of {checked} do not round-trip:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Generated expressions: selectors with awkward names and values, numbers
/// across the float range, every operator family with its modifiers,
/// subqueries, `@` and offsets, and nesting deep enough to break lines.
fn selector() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("up".to_owned()),
        "[a-z_:][a-z0-9_:]{0,30}",
        "\"[a-z. ü-]{1,8}\"".prop_map(|s| format!("{{{s}}}")),
    ];
    let value = prop_oneof![
        "[a-z0-9 ]{0,12}",
        Just("a\\nb\\\"c\\\\".to_owned()),
        Just("ü\\x01\\u200b".to_owned()),
    ];
    let matcher = (
        prop_oneof![Just("job"), Just("instance"), Just("\"a.b\"")],
        prop_oneof![Just("="), Just("!="), Just("=~"), Just("!~")],
        value,
    )
        .prop_map(|(l, op, v)| format!("{l}{op}\"{v}\""));
    (name, prop::collection::vec(matcher, 0..3)).prop_map(|(n, ms)| {
        if ms.is_empty() {
            n
        } else if let Some(inner) = n.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            format!("{{{inner},{}}}", ms.join(","))
        } else {
            format!("{n}{{{}}}", ms.join(","))
        }
    })
}

fn modifiers() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(""),
            Just(" offset 5m"),
            Just(" offset -90s"),
            Just(" offset 1d1h")
        ],
        prop_oneof![
            Just(""),
            Just(" @ 100"),
            Just(" @ -1.5"),
            Just(" @ start()"),
            Just(" @ end()")
        ],
    )
        .prop_map(|(o, a)| format!("{a}{o}"))
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| if v.is_finite() {
            format!("{v:e}")
        } else {
            "Inf".to_owned()
        }),
        (0u32..2_000_000).prop_map(|v| v.to_string()),
        Just("NaN".to_owned()),
        Just("0x1F".to_owned()),
    ]
}

fn vector_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (selector(), modifiers()).prop_map(|(s, m)| format!("{s}{m}")),
        (
            selector(),
            prop_oneof![Just("5m"), Just("90s"), Just("1w")],
            modifiers()
        )
            .prop_map(|(s, r, m)| format!("rate({s}[{r}]{m})")),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            (
                prop_oneof![Just("sum"), Just("max"), Just("count")],
                prop_oneof![
                    Just(""),
                    Just(" by (job)"),
                    Just(" without (instance, \"a.b\")"),
                    Just(" by ()")
                ],
                inner.clone()
            )
                .prop_map(|(op, g, e)| format!("{op}{g} ({e})")),
            (number(), inner.clone()).prop_map(|(k, e)| format!("topk({k}, {e})")),
            (inner.clone(), inner.clone(), binary_op())
                .prop_map(|(a, b, op)| format!("{a} {op} {b}")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("{a} * -{n}")),
            (inner.clone(), modifiers())
                .prop_map(|(e, m)| format!("max_over_time(({e})[10m:1m]{m})")),
            inner.clone().prop_map(|e| format!("-({e})")),
            inner.clone().prop_map(|e| format!("abs({e})")),
            inner.prop_map(|e| format!("label_replace({e}, \"dst\", \"$1\", \"src\", \"(.*)\")")),
        ]
    })
}

fn binary_op() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("+"),
        Just("/ on (job) group_left (instance)"),
        Just("* ignoring (instance) group_right"),
        Just("- ignoring () group_left"),
        Just("> bool"),
        Just("== bool on ()"),
        Just("and"),
        Just("unless on (job)"),
        Just("or"),
        Just("^"),
        Just("atan2"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn generated_expressions_read_back_the_same(q in vector_expr()) {
        // Generated text may be invalid (e.g. a selector matching only
        // the empty string); only what kiln parses is checked.
        prop_assume!(parse(&q).is_ok());
        if let Err(e) = round_trip(&q) {
            prop_assert!(false, "{}", e);
        }
    }
}
