//! Node-exporter-like series for compression tests and benches.
//!
//! Built from two real captures of node_exporter 1.5.0 taken 15 s apart
//! (`testdata/exposition/node_exporter-1.5.0.t{0,15}.prom`). Every series
//! keeps its labels and starting value; scrape `k` then evolves it by the
//! change the captures show over one interval:
//!
//! * unchanged between the captures: constant;
//! * counters (`# TYPE … counter`, `_sum`, `_count`): each scrape adds the
//!   observed increase times a uniform factor in [0.5, 1.5];
//! * other changing series (gauges): each scrape is the first value plus
//!   the observed change times a uniform factor in [-1, 1], a pessimistic
//!   model (real gauges mostly move less often);
//! * values are rounded to the decimal places the exporter printed; values
//!   printed with float noise (`11.467414000000002`) keep full precision;
//!   integers keep the power-of-two granularity the two captures share
//!   (memory in pages or KiB, disk bytes in sectors), up to 64 KiB;
//! * timestamps step by 15 s; one scrape in ten is off by 1–10 ms of jitter.
//!
//! A deterministic xorshift generator makes every run produce the same data.

use std::collections::HashMap;

use kiln_storage::Labels;

/// One series: labels and samples in time order.
pub struct Series {
    /// The label set, `__name__` included.
    pub labels: Labels,
    /// `(ms, value)` samples.
    pub samples: Vec<(i64, f64)>,
}

const T0: &str = include_str!("../../../testdata/exposition/node_exporter-1.5.0.t0.prom");
const T15: &str = include_str!("../../../testdata/exposition/node_exporter-1.5.0.t15.prom");

/// Scrape interval of the model, ms.
pub const INTERVAL_MS: i64 = 15_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses `name{a="b",…} value` lines (comments give the metric types).
/// A parsed sample line: labels, value, and the value as printed.
type Line = (Labels, f64, String);

fn parse(text: &str) -> (Vec<Line>, HashMap<String, String>) {
    let mut types = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_owned(), t.to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value_text = value.to_owned();
        let value: f64 = value.parse().expect("numeric sample value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut pairs = vec![("__name__".to_owned(), name.to_owned())];
        let mut rest = labels;
        while let Some((n, after)) = rest.split_once("=\"") {
            let mut v = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            v.push(if e == 'n' { '\n' } else { e });
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            pairs.push((n.trim_start_matches(',').to_owned(), v));
            rest = &after[end..];
        }
        out.push((
            Labels::from_pairs(pairs).expect("valid labels"),
            value,
            value_text,
        ));
    }
    (out, types)
}

/// Decimal places needed to print `v` exactly, if at most 12.
fn decimals(v: f64) -> Option<i32> {
    (0..=12).find(|&d| {
        let p = 10f64.powi(d);
        ((v * p).round() / p).to_bits() == v.to_bits()
    })
}

/// `scrapes` samples of every series of the capture, starting at `start_ms`.
pub fn generate(scrapes: usize, start_ms: i64, seed: u64) -> Vec<Series> {
    let (t0, types) = parse(T0);
    let (t15, _) = parse(T15);
    let later: HashMap<&Labels, f64> = t15.iter().map(|(l, v, _)| (l, *v)).collect();
    let mut rng = Rng(seed | 1);
    let mut times = Vec::with_capacity(scrapes);
    for k in 0..scrapes as i64 {
        let jitter = if rng.next().is_multiple_of(10) {
            let ms = (rng.next() % 10 + 1) as i64;
            if rng.next().is_multiple_of(2) {
                ms
            } else {
                -ms
            }
        } else {
            0
        };
        times.push(start_ms + k * INTERVAL_MS + jitter);
    }
    let mut out = Vec::with_capacity(t0.len());
    for (labels, v0, text) in t0 {
        let v1 = later.get(&labels).copied().unwrap_or(v0);
        let name = labels.metric_name().unwrap_or_default().to_owned();
        let family = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(&name);
        let counter = types.get(&name).is_some_and(|t| t == "counter")
            || family != name
            || types.get(family).is_some_and(|t| t == "counter");
        let printed = text.parse::<f64>().ok().and(decimals(v0)).max(decimals(v1));
        // Integers keep the power-of-two granularity both captures share
        // (pages, sectors, KiB), up to 64 KiB.
        let granule = match printed {
            Some(0) if v0.abs() < 9e15 && v1.abs() < 9e15 => {
                let tz = ((v0 as i64) | (v1 as i64)).trailing_zeros().min(16);
                (1i64 << tz) as f64
            }
            _ => 1.0,
        };
        let round = |v: f64| match printed {
            Some(0) => (v / granule).round() * granule,
            Some(d) => {
                let p = 10f64.powi(d);
                (v * p).round() / p
            }
            None => v,
        };
        let delta = v1 - v0;
        let mut v = v0;
        let samples = times
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                if k > 0 && delta != 0.0 {
                    v = if counter {
                        round(v + delta.abs() * (0.5 + rng.unit()))
                    } else {
                        round(v0 + delta * (2.0 * rng.unit() - 1.0))
                    };
                }
                (t, v)
            })
            .collect();
        out.push(Series { labels, samples });
    }
    out
}
