//! Property tests: any body rendered from random series in either format
//! parses back to the same names, label sets, values and timestamps, and
//! any truncation of it either parses or fails with a position, never a
//! panic.

use std::collections::BTreeMap;

use kiln_ingest::exposition::{Entry, Format, Parser};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn series() -> impl Strategy<Value = Series> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", "\\PC{1,12}", 0..5),
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        ],
        proptest::option::of(0i64..4_000_000_000_000),
    )
        .prop_map(|(name, labels, value, timestamp_ms)| Series {
            name,
            // `__name__` would clash with the metric name.
            labels: labels
                .into_iter()
                .filter(|(k, _)| k != "__name__")
                .collect(),
            value,
            timestamp_ms,
        })
}

fn render(all: &[Series], format: Format) -> String {
    let mut out = String::new();
    for s in all {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let pairs: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            out.push('{');
            out.push_str(&pairs.join(","));
            out.push('}');
        }
        out.push_str(&format!(" {:?}", s.value));
        if let Some(t) = s.timestamp_ms {
            match format {
                Format::PromText => out.push_str(&format!(" {t}")),
                // Whole seconds convert exactly.
                Format::OpenMetrics => out.push_str(&format!(" {}", t / 1000)),
            }
        }
        out.push('\n');
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

proptest! {
    #[test]
    fn rendered_series_parse_back(all in proptest::collection::vec(series(), 1..20), om in any::<bool>()) {
        let format = if om { Format::OpenMetrics } else { Format::PromText };
        let body = render(&all, format);
        let parsed: Vec<_> = Parser::new(body.as_bytes(), format)
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        prop_assert_eq!(parsed.len(), all.len());
        for (want, got) in all.iter().zip(&parsed) {
            let Entry::Sample(s) = got else { return Err(TestCaseError::fail("not a sample")) };
            prop_assert_eq!(s.value().to_bits(), want.value.to_bits());
            let want_ts = match format {
                Format::PromText => want.timestamp_ms,
                Format::OpenMetrics => want.timestamp_ms.map(|t| t / 1000 * 1000),
            };
            prop_assert_eq!(s.timestamp_ms(), want_ts);
            let labels = s.to_labels().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(labels.metric_name(), Some(want.name.as_str()));
            for (k, v) in &want.labels {
                prop_assert_eq!(labels.get(k), Some(v.as_str()));
            }
            prop_assert_eq!(labels.len(), want.labels.len() + 1);
        }
    }

    #[test]
    fn truncated_bodies_fail_cleanly(all in proptest::collection::vec(series(), 1..8), cut in any::<prop::sample::Index>(), om in any::<bool>()) {
        let format = if om { Format::OpenMetrics } else { Format::PromText };
        let body = render(&all, format);
        let cut = cut.index(body.len());
        // A cut may split a UTF-8 sequence: that is part of the test.
        let truncated = &body.as_bytes()[..cut];
        let lines = truncated.iter().filter(|&&b| b == b'\n').count() + 1;
        for e in Parser::new(truncated, format) {
            match e {
                Ok(Entry::Sample(s)) => { let _ = s.to_labels(); }
                Ok(_) => {}
                Err(e) => prop_assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{}", e),
            }
        }
    }
}
