//! The endpoints Grafana's Prometheus data source calls beyond queries and
//! label lookups — `/api/v1/format_query`, `/api/v1/query_exemplars`,
//! `/api/v1/rules`, `/api/v1/alerts` — answered by kiln and by a real
//! Prometheus 2.42 (Debian's package; `scripts/test.sh` installs it) started
//! with the same empty configuration: status codes and bodies must be equal
//! byte for byte. Where kiln deliberately answers otherwise (listed in
//! docs/compatibility.md) the test says what each answers.

mod common;

use std::net::SocketAddr;

use common::prometheus::start_prometheus;
use common::{Kiln, Response, request};

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn get(addr: SocketAddr, path: &str, pairs: &[(&str, &str)]) -> Response {
    let q = encode(pairs);
    let sep = if q.is_empty() { "" } else { "?" };
    request(addr, "GET", &format!("{path}{sep}{q}"), &[], b"")
}

fn post(addr: SocketAddr, path: &str, pairs: &[(&str, &str)]) -> Response {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        encode(pairs).as_bytes(),
    )
}

/// Both servers give the same status and the same body bytes.
fn same(what: &str, kiln: Response, prom: Response) -> Option<String> {
    if kiln.status == prom.status && kiln.body == prom.body {
        return None;
    }
    Some(format!(
        "{what}:\n  kiln       {} {}\n  Prometheus {} {}",
        kiln.status,
        String::from_utf8_lossy(&kiln.body),
        prom.status,
        String::from_utf8_lossy(&prom.body)
    ))
}

const LONG_SEL: &str =
    r#"http_requests_total{job="apiserver",handler="/api/comments",code=~"5..",instance="foo"}"#;

/// Expressions for `format_query`: every kind of node and modifier, and
/// expressions long enough to be broken up at each kind of node.
fn format_cases() -> Vec<String> {
    let mut v: Vec<String> = [
        // Selectors, matchers (sorted), @ and offset, durations.
        r#"foo{b="x",a=~"y",c!="z",d!~"w"}"#,
        r#"{__name__="foo"}"#,
        r#"{__name__=~"foo|bar",job="x"}"#,
        "foo offset 5m @ 10",
        "foo @ 1.2345 offset -90s",
        "foo @ start()",
        "foo @ end() offset 1d1h",
        "foo[90s]",
        "foo[7d]",
        "foo[365d]",
        "foo[1500ms] offset 1w",
        "foo[5m] @ -1",
        // Subqueries.
        "rate(foo[5m])[30m:1m]",
        "foo[5m:] offset 1m @ start()",
        "(a + b)[5m:]",
        "max_over_time(deriv(rate(foo[5m])[5m:])[1h:])",
        // Numbers and strings.
        "1e6",
        "100000",
        "0.00001",
        "0.0001",
        "123456789",
        "1.5e-7",
        "-1",
        "- 1",
        "-(1)",
        "0x10",
        "Inf",
        "-Inf",
        "NaN",
        r#""a\nb\"c\\""#,
        "'single'",
        "`raw\\x`",
        r#"x{a="ü\u0001\t"}"#,
        // Aggregations.
        "sum by(job)(x)",
        "sum(x) by (a, b)",
        "sum without() (x)",
        "sum by () (x)",
        "avg without (instance) (x)",
        "topk(5, x)",
        "bottomk by (job) (3, x)",
        r#"count_values("value", x)"#,
        "quantile(0.9, x)",
        "group(x)",
        "stddev(x) + stdvar(x)",
        // Binary operations.
        "a / on() group_left b",
        "a / on(x) group_right(y,z) b",
        "a * on(x) group_left(y) b",
        "a + ignoring(x) b",
        "a and on(x) b",
        "a unless ignoring(x) b",
        "a or b",
        "a > bool 1",
        "1 > bool 2",
        "a == bool on (x) b",
        "a atan2 b",
        "2 ^ 3 ^ 4",
        "a - (b - c)",
        "a - b - c",
        "-a ^ 2",
        "-foo",
        "abs(-foo)",
        "-(a + b)",
        "(((a)))",
        // Calls.
        "time()",
        "vector(1)",
        r#"label_replace(x, "a", "$1", "b", "(.*)")"#,
        r#"label_join(x, "dst", ",", "a", "b")"#,
        "histogram_quantile(0.9, rate(x_bucket[5m]))",
        "predict_linear(foo[5m:1m] offset 1m @ 5, 1)",
        "clamp(x, -1, 1)",
        "round(x, 0.5)",
        "absent_over_time(nonexistent{job=\"x\"}[1h])",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Long expressions: each kind of node broken up, at several depths.
    v.extend([
        format!("sum by (job, instance) (rate({LONG_SEL}[5m])) / on (job, instance) group_left (version) sum by (job, instance) (rate(http_requests_total{{job=\"apiserver\"}}[5m]))"),
        format!("histogram_quantile(0.9, sum by (le) (rate({LONG_SEL}[5m])))"),
        format!("max_over_time(rate({LONG_SEL}[5m])[30m:1m])"),
        format!("topk(10, sum without (instance, pod, container, namespace) (rate({LONG_SEL}[5m])))"),
        format!("-sum(rate({LONG_SEL}[5m]))"),
        format!("(sum(rate({LONG_SEL}[5m])))"),
        format!("{LONG_SEL} + {LONG_SEL} > bool on (job) group_right (handler) {LONG_SEL}"),
        format!("label_replace(rate({LONG_SEL}[5m]), \"dst\", \"$1\", \"src\", \"(.*)\")"),
        format!("{LONG_SEL}{{x=\"a very long label value that makes the selector itself too long\"}}"),
        format!("rate({LONG_SEL}[5m:1m])"),
        format!("sum_over_time({LONG_SEL}[5m:1m] offset 5m)"),
        format!("predict_linear(foo[5m:1m], scalar(sum(rate({LONG_SEL}[5m]))))"),
        format!("vector(1) + on() group_left() sum by (job) (rate({LONG_SEL}[5m]))"),
        format!("quantile by (job) (0.99, rate({LONG_SEL}[5m]))"),
        format!("count_values(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", sum by (job) (rate({LONG_SEL}[5m])))"),
        format!("a > bool on(x) group_left b unless c + ignoring (y) d or sum by (job) (rate({LONG_SEL}[5m]))"),
        format!("-(sum(rate({LONG_SEL}[5m])) / sum(rate({LONG_SEL}[5m])))"),
        format!("1 - sum(rate({LONG_SEL}[5m] offset 1h @ 1700000000)) / sum(rate({LONG_SEL}[5m])) * 100"),
    ]);
    // Invalid input: the same error.
    v.extend(
        [
            "",
            "sum(",
            "foo{",
            "rate(foo)",
            "x +",
            "a + on(x) group_left(x) b",
            "unknown_fn(x)",
            "{}",
            r#"foo{__name__="foo"}"#,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

#[test]
fn grafana_endpoints_answer_as_prometheus_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("config");
    let prom = start_prometheus(&config);
    let kiln = Kiln::start(&[&format!("--config.file={}", config.display())]);
    let (k, p) = (kiln.addr, prom.addr);
    let mut diffs = Vec::new();

    // format_query, GET and POST.
    for q in format_cases() {
        let args = [("query", q.as_str())];
        let path = "/api/v1/format_query";
        diffs.extend(same(
            &format!("GET format_query {q:?}"),
            get(k, path, &args),
            get(p, path, &args),
        ));
        diffs.extend(same(
            &format!("POST format_query {q:?}"),
            post(k, path, &args),
            post(p, path, &args),
        ));
    }
    diffs.extend(same(
        "format_query without query",
        get(k, "/api/v1/format_query", &[]),
        get(p, "/api/v1/format_query", &[]),
    ));

    // query_exemplars: Grafana's probe (`test`, times in milliseconds),
    // queries with and without selectors, bad parameters.
    let exemplar_cases: &[&[(&str, &str)]] = &[
        &[
            ("query", "test"),
            ("start", "1700000000000"),
            ("end", "1700000001800"),
        ],
        &[("query", "test")],
        &[
            ("query", "sum(rate(x[5m]))"),
            ("start", "10"),
            ("end", "20"),
        ],
        &[("query", "x[5m:]")],
        &[("query", "1")],
        &[("query", "1 + 1")],
        &[("query", "time()")],
        &[("query", "vector(1)")],
        &[("query", "\"s\"")],
        &[],
        &[("query", "sum(")],
        &[("query", "up"), ("start", "abc")],
        &[("query", "up"), ("end", "abc")],
        &[("query", "up"), ("start", "10"), ("end", "5")],
        &[("query", "sum("), ("start", "10"), ("end", "5")],
        &[("query", "up"), ("start", "2023-01-01T00:00:00Z")],
    ];
    for args in exemplar_cases {
        let path = "/api/v1/query_exemplars";
        diffs.extend(same(
            &format!("GET query_exemplars {args:?}"),
            get(k, path, args),
            get(p, path, args),
        ));
        diffs.extend(same(
            &format!("POST query_exemplars {args:?}"),
            post(k, path, args),
            post(p, path, args),
        ));
    }

    // rules and alerts without rule files.
    let rules_cases: &[&[(&str, &str)]] = &[
        &[],
        &[("type", "alert")],
        &[("type", "record")],
        &[("type", "ALERT")],
        &[("type", "bogus")],
        &[("exclude_alerts", "true")],
        &[("rule_name[]", "x"), ("rule_group[]", "y"), ("file[]", "z")],
    ];
    for args in rules_cases {
        diffs.extend(same(
            &format!("rules {args:?}"),
            get(k, "/api/v1/rules", args),
            get(p, "/api/v1/rules", args),
        ));
    }
    diffs.extend(same(
        "alerts",
        get(k, "/api/v1/alerts", &[]),
        get(p, "/api/v1/alerts", &[]),
    ));
    for path in ["/api/v1/rules", "/api/v1/alerts"] {
        let (a, b) = (post(k, path, &[]), post(p, path, &[]));
        if a.status != 405 || b.status != 405 {
            diffs.push(format!(
                "POST {path}: kiln {}, Prometheus {}",
                a.status, b.status
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );

    // Where kiln deliberately differs (docs/compatibility.md).
    let fq =
        |addr, q: &str| get(addr, "/api/v1/format_query", &[("query", q)]).json()["data"].clone();
    // Prometheus 2.42 drops `ignoring () group_left`, changing the query.
    assert_eq!(
        fq(k, "a / ignoring() group_left b"),
        "a / ignoring () group_left () b"
    );
    assert_eq!(fq(p, "a / ignoring() group_left b"), "a / b");
    // kiln's parser does not keep a unary plus.
    assert_eq!(fq(k, "+a"), "a");
    assert_eq!(fq(p, "+a"), "+a");
    // Prometheus 3's `exclude_alerts` check, which 2.42 does not make.
    let r = get(k, "/api/v1/rules", &[("exclude_alerts", "bogus")]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        get(p, "/api/v1/rules", &[("exclude_alerts", "bogus")]).status,
        200
    );
}

#[test]
fn rules_and_alerts_are_unavailable_when_rule_files_are_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "rule_files: [rules/*.yml]\n").expect("config");
    let kiln = Kiln::start(&[&format!("--config.file={}", config.display())]);
    for path in ["/api/v1/rules", "/api/v1/alerts"] {
        let r = kiln.get(path);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["errorType"], "unavailable", "{j}");
        assert!(
            j["error"]
                .as_str()
                .unwrap_or_default()
                .contains("does not evaluate rules"),
            "{j}"
        );
    }
    // A bad parameter is still a bad parameter.
    assert_eq!(kiln.get("/api/v1/rules?type=bogus").status, 400);
}
