//! Property test: the column engine against a naive reference evaluator.
//!
//! Random series (irregular timestamps, gaps, staleness markers) go into a
//! MemStore; random queries from a small grammar run as range queries on
//! the engine. The reference evaluates the same query step by step, one
//! timestamp at a time, straight from the definitions (last sample in the
//! lookback window, samples in the left-open range window, per-step
//! grouping), with no sliding cursors, no columns and no batching. Both must
//! agree on every series and point.

use std::collections::BTreeMap;

use kiln_query::{Engine, EngineOptions, QueryLimits, QueryValue};
use kiln_storage::{Labels, is_stale_nan, mem::MemStore, stale_nan};
use proptest::prelude::*;

const LOOKBACK: i64 = 300_000;

type Data = Vec<(Labels, Vec<(i64, f64)>)>;

/// A query of the test grammar.
#[derive(Debug, Clone)]
enum Q {
    Sel {
        name: &'static str,
        offset_s: i64,
    },
    Range {
        func: &'static str,
        name: &'static str,
        range_s: i64,
    },
    Agg {
        op: &'static str,
        without: bool,
        inner: Box<Q>,
    },
    Scalar {
        op: &'static str,
        k: f64,
        inner: Box<Q>,
    },
}

impl Q {
    fn promql(&self) -> String {
        match self {
            Q::Sel { name, offset_s: 0 } => name.to_string(),
            Q::Sel { name, offset_s } => format!("{name} offset {offset_s}s"),
            Q::Range {
                func,
                name,
                range_s,
            } => format!("{func}({name}[{range_s}s])"),
            Q::Agg { op, without, inner } => format!(
                "{op} {} (job) ({})",
                if *without { "without" } else { "by" },
                inner.promql()
            ),
            Q::Scalar { op, k, inner } => format!("({}) {op} {k}", inner.promql()),
        }
    }

    /// The instant vector at `t`: labels (name already dropped where due)
    /// to value.
    fn eval(&self, data: &Data, t: i64) -> BTreeMap<Labels, f64> {
        let mut out = BTreeMap::new();
        match self {
            Q::Sel { name, offset_s } => {
                let at = t - offset_s * 1000;
                for (l, samples) in data.iter().filter(|(l, _)| l.metric_name() == Some(name)) {
                    if let Some(&(ts, v)) = samples.iter().rev().find(|(ts, _)| *ts <= at)
                        && ts > at - LOOKBACK
                        && !is_stale_nan(v)
                    {
                        out.insert(l.clone(), v);
                    }
                }
            }
            Q::Range {
                func,
                name,
                range_s,
            } => {
                let range = range_s * 1000;
                for (l, samples) in data.iter().filter(|(l, _)| l.metric_name() == Some(name)) {
                    let w: Vec<(i64, f64)> = samples
                        .iter()
                        .copied()
                        .filter(|(ts, v)| *ts > t - range && *ts <= t && !is_stale_nan(*v))
                        .collect();
                    if let Some(v) = range_fn(func, &w, t, range) {
                        // last_over_time keeps the metric name; the others drop it.
                        let l = if *func == "last_over_time" {
                            l.clone()
                        } else {
                            drop_name(l)
                        };
                        out.insert(l, v);
                    }
                }
            }
            Q::Agg { op, without, inner } => {
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for (l, v) in inner.eval(data, t) {
                    let mut b = l.builder();
                    if *without {
                        b.del("__name__").del("job");
                    } else {
                        b.retain(|n, _| n == "job");
                    }
                    groups.entry(b.build().unwrap()).or_default().push(v);
                }
                for (g, vs) in groups {
                    let n = vs.len() as f64;
                    let v = match *op {
                        "sum" => vs.iter().sum(),
                        "count" => n,
                        "avg" => vs.iter().sum::<f64>() / n,
                        "max" => vs
                            .iter()
                            .copied()
                            .fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a }),
                        _ => vs
                            .iter()
                            .copied()
                            .fold(f64::NAN, |a, b| if a.is_nan() || b < a { b } else { a }),
                    };
                    out.insert(g, v);
                }
            }
            Q::Scalar { op, k, inner } => {
                for (l, v) in inner.eval(data, t) {
                    let r = match *op {
                        "+" => Some(v + k),
                        "*" => Some(v * k),
                        "-" => Some(v - k),
                        ">" => (v > *k).then_some(v),
                        _ => (v <= *k).then_some(v),
                    };
                    if let Some(r) = r {
                        let l = if matches!(*op, "+" | "*" | "-") {
                            drop_name(&l)
                        } else {
                            l
                        };
                        out.insert(l, r);
                    }
                }
            }
        }
        out
    }
}

fn drop_name(l: &Labels) -> Labels {
    let mut b = l.builder();
    b.del("__name__");
    b.build().unwrap()
}

/// Range functions from their definitions, over one window.
fn range_fn(func: &str, w: &[(i64, f64)], t: i64, range: i64) -> Option<f64> {
    let vals: Vec<f64> = w.iter().map(|p| p.1).collect();
    if w.is_empty() {
        return None;
    }
    match func {
        "sum_over_time" => Some(vals.iter().sum()),
        "count_over_time" => Some(vals.len() as f64),
        "last_over_time" => vals.last().copied(),
        "max_over_time" => Some(
            vals.iter()
                .copied()
                .fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a }),
        ),
        "changes" => Some(vals.windows(2).filter(|p| p[0] != p[1]).count() as f64),
        "resets" => Some(vals.windows(2).filter(|p| p[1] < p[0]).count() as f64),
        "idelta" if w.len() >= 2 => Some(vals[vals.len() - 1] - vals[vals.len() - 2]),
        "rate" | "increase" | "delta" if w.len() >= 2 => {
            let counter = func != "delta";
            let mut change = vals[vals.len() - 1] - vals[0];
            if counter {
                for p in vals.windows(2) {
                    if p[1] < p[0] {
                        change += p[0];
                    }
                }
            }
            let (first_t, last_t) = (w[0].0 as f64 / 1e3, w[w.len() - 1].0 as f64 / 1e3);
            let (start, end) = ((t - range) as f64 / 1e3, t as f64 / 1e3);
            let span = last_t - first_t;
            let avg_gap = span / (w.len() - 1) as f64;
            let mut before = first_t - start;
            let mut after = end - last_t;
            if before >= avg_gap * 1.1 {
                before = avg_gap / 2.0;
            }
            if counter && change > 0.0 && vals[0] >= 0.0 {
                before = before.min(span * vals[0] / change);
            }
            if after >= avg_gap * 1.1 {
                after = avg_gap / 2.0;
            }
            let mut v = change * (span + before + after) / span;
            if func == "rate" {
                v /= range as f64 / 1e3;
            }
            Some(v)
        }
        _ => None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn series_strategy() -> impl Strategy<Value = Data> {
    let one = (
        prop::sample::select(vec!["a", "b"]),
        prop::sample::select(vec!["x", "y", "z"]),
        prop::sample::select(vec!["0", "1"]),
        prop::collection::vec((1i64..90, -3i32..40, 0u8..20), 0..60),
    );
    prop::collection::vec(one, 1..7).prop_map(|specs| {
        let mut data: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for (name, job, inst, pts) in specs {
            let l =
                Labels::from_pairs([("__name__", name), ("job", job), ("instance", inst)]).unwrap();
            let mut t = 0i64;
            let s = data.entry(l).or_default();
            if !s.is_empty() {
                continue;
            }
            for (gap, v, kind) in pts {
                t += gap * 1000 * 5;
                let v = if kind == 0 { stale_nan() } else { v as f64 };
                s.push((t, v));
            }
        }
        data.into_iter().collect()
    })
}

fn query_strategy() -> impl Strategy<Value = Q> {
    let name = prop::sample::select(vec!["a", "b"]);
    let leaf = prop_oneof![
        (name.clone(), prop::sample::select(vec![0i64, 30, 300]))
            .prop_map(|(name, offset_s)| Q::Sel { name, offset_s }),
        (
            prop::sample::select(vec![
                "rate",
                "increase",
                "delta",
                "sum_over_time",
                "count_over_time",
                "last_over_time",
                "max_over_time",
                "changes",
                "resets",
                "idelta",
            ]),
            name,
            prop::sample::select(vec![20i64, 60, 95, 300]),
        )
            .prop_map(|(func, name, range_s)| Q::Range {
                func,
                name,
                range_s
            }),
    ];
    leaf.prop_recursive(2, 6, 1, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!["sum", "count", "max", "min", "avg"]),
                any::<bool>(),
                inner.clone()
            )
                .prop_map(|(op, without, q)| Q::Agg {
                    op,
                    without,
                    inner: Box::new(q)
                }),
            (
                prop::sample::select(vec!["+", "*", "-", ">", "<="]),
                prop::sample::select(vec![0.0, 2.0, 10.0]),
                inner
            )
                .prop_map(|(op, k, q)| Q::Scalar {
                    op,
                    k,
                    inner: Box::new(q)
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference(
        data in series_strategy(),
        q in query_strategy(),
        start_s in 0i64..600,
        step_s in prop::sample::select(vec![7i64, 15, 60]),
        steps in 1i64..60,
    ) {
        let mut store = MemStore::new();
        for (l, pts) in &data {
            for (t, v) in pts {
                store.insert(l, *t, *v);
            }
        }
        let engine = Engine::new(EngineOptions::default());
        let (start, step) = (start_s * 1000, step_s * 1000);
        let end = start + (steps - 1) * step;
        let res = engine
            .range_query(&store, &q.promql(), start, end, step, &QueryLimits::default())
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", q.promql())))?;
        let QueryValue::Matrix(m) = res.value else {
            return Err(TestCaseError::fail("range query must return a matrix"));
        };
        let mut want: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for k in 0..steps {
            let t = start + k * step;
            for (l, v) in q.eval(&data, t) {
                want.entry(l).or_default().push((t, v));
            }
        }
        prop_assert_eq!(m.len(), want.len(), "{}: series {:?} vs {:?}", q.promql(), m, want);
        for s in &m {
            let w = want.get(&s.labels).ok_or_else(|| TestCaseError::fail(format!("{}: unexpected {}", q.promql(), s.labels)))?;
            prop_assert_eq!(s.samples.len(), w.len(), "{} {}: {:?} vs {:?}", q.promql(), s.labels, s.samples, w);
            for (g, e) in s.samples.iter().zip(w) {
                prop_assert!(g.0 == e.0 && close(g.1, e.1), "{} {}: {:?} vs {:?}", q.promql(), s.labels, g, e);
            }
        }
    }
}
