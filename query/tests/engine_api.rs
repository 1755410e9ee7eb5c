//! The public query API: result shapes, ordering, errors and limits, on a
//! small MemStore.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kiln_query::{Engine, EngineOptions, ErrorType, QueryLimits, QueryValue};
use kiln_storage::{Labels, mem::MemStore};

fn store() -> MemStore {
    let mut s = MemStore::new();
    for (job, scale) in [("a", 1.0), ("b", 2.0)] {
        let l = Labels::from_pairs([("__name__", "x"), ("job", job)]).unwrap();
        for i in 0..=20 {
            s.insert(&l, i * 15_000, i as f64 * scale);
        }
    }
    s
}

#[test]
fn instant_selector_and_arithmetic() {
    let e = Engine::new(EngineOptions::default());
    let s = store();
    let r = e
        .instant_query(&s, "x * 2", 60_000, &QueryLimits::default())
        .unwrap();
    let QueryValue::Vector(v) = r.value else {
        panic!("vector expected")
    };
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].labels, Labels::from_pairs([("job", "a")]).unwrap());
    assert_eq!(v[0].v, 8.0);
    assert_eq!(v[1].v, 16.0);
    let r = e
        .instant_query(&s, "1 + 2 * 3", 0, &QueryLimits::default())
        .unwrap();
    assert_eq!(r.value, QueryValue::Scalar { t_ms: 0, v: 7.0 });
}

#[test]
fn range_query_of_scalar_is_one_unlabelled_series() {
    let e = Engine::new(EngineOptions::default());
    let r = e
        .range_query(
            &store(),
            "time()",
            0,
            60_000,
            30_000,
            &QueryLimits::default(),
        )
        .unwrap();
    let QueryValue::Matrix(m) = r.value else {
        panic!("matrix expected")
    };
    assert_eq!(m.len(), 1);
    assert!(m[0].labels.is_empty());
    assert_eq!(m[0].samples, vec![(0, 0.0), (30_000, 30.0), (60_000, 60.0)]);
}

#[test]
fn rate_over_range_query() {
    let e = Engine::new(EngineOptions::default());
    let r = e
        .range_query(
            &store(),
            "sum by (job) (rate(x[1m]))",
            60_000,
            240_000,
            60_000,
            &QueryLimits::default(),
        )
        .unwrap();
    let QueryValue::Matrix(m) = r.value else {
        panic!("matrix expected")
    };
    assert_eq!(m.len(), 2);
    for (series, slope) in m.iter().zip([1.0 / 15.0, 2.0 / 15.0]) {
        assert_eq!(series.samples.len(), 4);
        for (_, v) in &series.samples {
            assert!((v - slope).abs() < 1e-9, "{v} vs {slope}");
        }
    }
}

#[test]
fn errors_have_prometheus_types_and_texts() {
    let e = Engine::new(EngineOptions::default());
    let s = store();
    let err = e
        .instant_query(&s, "1 +", 0, &QueryLimits::default())
        .unwrap_err();
    assert_eq!(err.error_type(), ErrorType::BadData);
    assert_eq!(err.to_string(), "1:4: parse error: unexpected end of input");

    let small = Engine::new(EngineOptions {
        max_samples: 10,
        ..EngineOptions::default()
    });
    let err = small
        .instant_query(&s, "x[10m]", 300_000, &QueryLimits::default())
        .unwrap_err();
    assert_eq!(err.error_type(), ErrorType::Execution);
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );

    let cancel = Arc::new(AtomicBool::new(true));
    let limits = QueryLimits {
        deadline: None,
        cancel: Some(cancel),
    };
    let err = e.instant_query(&s, "x", 0, &limits).unwrap_err();
    assert_eq!(err.error_type(), ErrorType::Canceled);

    let limits = QueryLimits {
        deadline: Some(std::time::Instant::now()),
        cancel: None,
    };
    let err = e.instant_query(&s, "x", 0, &limits).unwrap_err();
    assert_eq!(err.error_type(), ErrorType::Timeout);
    assert_eq!(err.to_string(), "query timed out in query execution");
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn extreme_times_and_durations_are_errors_not_panics() {
    let e = Engine::new(EngineOptions::default());
    let s = store();
    let l = QueryLimits::default();
    for t in [i64::MIN, i64::MAX, -(1 << 60), 1 << 60] {
        let err = e.instant_query(&s, "x", t, &l).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::BadData);
    }
    assert!(e.range_query(&s, "x", -(1 << 59), 1 << 59, 1, &l).is_err());
    assert!(e.instant_query(&s, "x @ 1e300", 0, &l).is_err());
    for q in [
        "x offset 9e9",
        "x offset -9e9",
        "x[9e9]",
        "rate(x[5m] @ -1e15)",
        "x offset range() * 1e300",
        "sum_over_time(x[1m:1ms])",
        "max_over_time(x[9e9:1d])",
    ] {
        let _ = e.instant_query(&s, q, 1 << 58, &l);
        let _ = e.range_query(&s, q, -(1 << 58), 1 << 58, 1 << 57, &l);
    }
}
