//! Bad input never panics: random strings, and random soups of PromQL
//! tokens, go through the parser and (when they parse) the engine; every
//! outcome must be a value or a typed error.

use kiln_query::{Engine, EngineOptions, QueryLimits, parse};
use kiln_storage::{Labels, mem::MemStore};
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "foo",
    "info",
    "target_info",
    "fill(0)",
    "fill_left(1)",
    "fill_right(NaN)",
    "anchored",
    "smoothed",
    "histogram_quantiles",
    "instance",
    "{__name__=~\".+_info\"}",
    "changes",
    "delta",
    "bar",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "5m",
    "1h30m",
    "0",
    "1.5",
    "-",
    "+",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<=",
    "=~",
    "!~",
    "=",
    ",",
    ":",
    "@",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "sum",
    "topk",
    "count_values",
    "quantile",
    "rate",
    "label_replace",
    "histogram_quantile",
    "absent",
    "time",
    "vector",
    "scalar",
    "start()",
    "end()",
    "step()",
    "\"a\"",
    "'b'",
    "`c`",
    "job",
    "le",
    "0x1f",
    "Inf",
    "NaN",
    "#",
    "\n",
    " ",
    "\\",
    "\"",
    "1e308",
    "9e99",
    "-0",
    "[5m:1m]",
    "[1s:]",
    "round",
    "clamp",
    "sort_by_label",
    "limitk",
    "limit_ratio",
];

fn store() -> MemStore {
    let mut s = MemStore::new();
    for (name, job) in [("foo", "a"), ("foo", "b"), ("bar", "a")] {
        let l = Labels::from_pairs([("__name__", name), ("job", job), ("le", "1")]).unwrap();
        for i in 0..40 {
            s.insert(&l, i * 15_000, (i % 7) as f64);
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
        let _ = parse(&s);
    }

    #[test]
    fn token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(TOKENS), 1..14)) {
        let q = toks.join(" ");
        if parse(&q).is_ok() {
            let e = Engine::new(EngineOptions { max_samples: 100_000, ..EngineOptions::default() });
            let s = store();
            let _ = e.instant_query(&s, &q, 300_000, &QueryLimits::default());
            let _ = e.range_query(&s, &q, 0, 600_000, 60_000, &QueryLimits::default());
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [100_000usize, 1_000] {
        for (open, close) in [("(", ")"), ("-", ""), ("abs(", ")"), ("sum(", ")")] {
            let q = format!("{}x{}", open.repeat(depth), close.repeat(depth));
            let e = parse(&q).unwrap_err();
            assert!(e.msg.contains("nests more than"), "{}", e.msg);
        }
        let q = format!("x[{}1m{}]", "(".repeat(depth), ")".repeat(depth));
        assert!(parse(&q).is_err());
        let q = vec!["x"; depth].join(" + ");
        assert!(parse(&q).unwrap_err().msg.contains("nests more than"));
    }
    // Ordinary nesting evaluates fine.
    let q = format!("{}x{}", "abs(".repeat(127), ")".repeat(127));
    let e = Engine::new(EngineOptions::default());
    assert!(
        e.instant_query(&store(), &q, 300_000, &QueryLimits::default())
            .is_ok()
    );
}

#[test]
fn deepest_allowed_queries_evaluate_within_a_small_stack() {
    // Query threads may have small stacks; the deepest query the parser
    // accepts must still evaluate on a 1 MiB stack.
    let h = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let e = Engine::new(EngineOptions::default());
            let s = store();
            let l = QueryLimits::default();
            let nested = format!("{}foo{}", "abs(".repeat(127), ")".repeat(127));
            let chain = vec!["foo"; 127].join(" + ");
            let subq = format!(
                "{}foo{}",
                "max_over_time(".repeat(63),
                "[1m:30s])".repeat(63)
            );
            for q in [nested, chain, subq] {
                let r = e.range_query(&s, &q, 0, 600_000, 60_000, &l);
                assert!(r.is_ok(), "{q}: {r:?}");
            }
        })
        .unwrap();
    h.join().expect("no stack overflow");
}
