//! The simulated fleet as a pure function: which targets exist, what kind
//! each is, and the exact body each one serves in a given scrape slot.
//!
//! Owns the determinism contract: a payload depends only on the
//! [`FleetSpec`], the target index and the scrape slot (time divided by the
//! interval since the fleet's origin), never on when or how often it is
//! asked, so repeated scrapes within one interval agree byte for byte.
//! Counters never decrease from one slot to the next (within one churn
//! generation, and across them too, since values ignore the generation).
//!
//! Rendering is cheap by construction: every line's label text is fixed in
//! the template; a scrape only formats the values (and the generation label
//! when churn is on).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::template::{Evolution, Template, TemplateSeries};

/// Series in one histogram family of a histogram-heavy target: 12 buckets
/// (the last is `+Inf`), `_sum` and `_count`.
pub const HISTOGRAM_FAMILY_SERIES: usize = 14;
const BUCKET_BOUNDS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];
const BUCKET_BOUNDS_F: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Everything that shapes the fleet's payloads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetSpec {
    pub targets: usize,
    /// Series served by an ordinary target (replicas of the template).
    pub series_per_target: usize,
    pub interval_ms: u64,
    /// Share of series replaced per hour (0 = none): a replaced series gets
    /// a new value of the `generation` label.
    pub churn_per_hour: f64,
    /// Targets that also serve histogram families.
    pub histogram_targets: usize,
    /// Extra series each histogram target serves (rounded up to whole
    /// families of [`HISTOGRAM_FAMILY_SERIES`]).
    pub histogram_series: usize,
    /// Targets that answer only after `slow_delay_ms`.
    pub slow_targets: usize,
    pub slow_delay_ms: u64,
    /// Targets that always answer 503.
    pub failing_targets: usize,
    /// Append the slot's start time to every sample.
    pub timestamps: bool,
    /// Unix milliseconds of slot 0.
    pub origin_ms: i64,
    /// Answer scrapes that send `Accept-Encoding: gzip` with a gzip body,
    /// as node_exporter does (runs saved before the option existed had
    /// none, hence the `false` default when reading them).
    #[serde(default)]
    pub gzip: bool,
}

/// What a target does when scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Normal,
    Histogram,
    Slow,
    Failing,
}

impl FleetSpec {
    /// The kind of target `index`: histogram targets come first, slow and
    /// failing ones last, so counts are exact and stable.
    pub fn kind(&self, index: usize) -> TargetKind {
        if index >= self.targets.saturating_sub(self.failing_targets) {
            TargetKind::Failing
        } else if index
            >= self
                .targets
                .saturating_sub(self.failing_targets + self.slow_targets)
        {
            TargetKind::Slow
        } else if index < self.histogram_targets {
            TargetKind::Histogram
        } else {
            TargetKind::Normal
        }
    }

    /// Histogram families a histogram target serves.
    pub fn histogram_families(&self) -> usize {
        self.histogram_series.div_ceil(HISTOGRAM_FAMILY_SERIES)
    }

    /// Series target `index` serves (0 for failing targets).
    pub fn series_of(&self, index: usize) -> usize {
        match self.kind(index) {
            TargetKind::Failing => 0,
            TargetKind::Histogram => {
                self.series_per_target + self.histogram_families() * HISTOGRAM_FAMILY_SERIES
            }
            TargetKind::Normal | TargetKind::Slow => self.series_per_target,
        }
    }

    /// Series the whole fleet serves per scrape round.
    pub fn total_series(&self) -> usize {
        (0..self.targets).map(|i| self.series_of(i)).sum()
    }

    /// The scrape slot containing unix time `now_ms` (0 before the origin).
    pub fn slot_at(&self, now_ms: i64) -> u64 {
        u64::try_from(now_ms.saturating_sub(self.origin_ms)).unwrap_or(0) / self.interval_ms.max(1)
    }

    /// Unix milliseconds at which `slot` starts.
    pub fn slot_start_ms(&self, slot: u64) -> i64 {
        self.origin_ms.saturating_add(
            i64::try_from(slot.saturating_mul(self.interval_ms)).unwrap_or(i64::MAX),
        )
    }
}

/// Loopback address of target `index`: 127.0.X.Y with X from 1 and Y in
/// 1..=254, which keeps clear of 127.0.0.x where servers listen.
pub fn target_addr(index: usize) -> Ipv4Addr {
    let x = 1 + index / 254;
    let y = 1 + index % 254;
    Ipv4Addr::new(
        127,
        0,
        u8::try_from(x).unwrap_or(255),
        u8::try_from(y).unwrap_or(255),
    )
}

/// Most targets [`target_addr`] can address.
pub const MAX_TARGETS: usize = 254 * 254;

/// A deterministic number in [0, 1) from a few integers (splitmix64 mix).
pub fn unit(a: u64, b: u64, c: u64) -> f64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(c.wrapping_mul(0x94D0_49BB_1331_11EB))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Salts that keep the different uses of [`unit`] independent.
const SALT_SCALE: u64 = 1 << 40;
const SALT_JITTER: u64 = 2 << 40;
const SALT_PHASE: u64 = 3 << 40;
const SALT_CHURN: u64 = 4 << 40;

/// Value of a counter with long-run `rate` per second: `base` plus the
/// expected growth, with a bounded per-slot jitter of less than half a
/// slot's growth, so consecutive slots differ by at least half of it.
fn counter_value(base: f64, rate: f64, interval_s: f64, slot: u64, jitter: f64) -> f64 {
    base + rate * interval_s * (slot as f64 + 0.5 * jitter)
}

/// Appends the value of `series` on target `target` in `slot` to `out`;
/// `key` tells the series' replicas apart (its index across all replicas).
pub fn series_value(
    spec: &FleetSpec,
    series: &TemplateSeries,
    target: usize,
    key: u64,
    slot: u64,
    out: &mut String,
) {
    let t = target as u64;
    let interval_s = spec.interval_ms as f64 / 1000.0;
    let value = match &series.evolution {
        Evolution::Constant(text) => {
            out.push_str(text);
            return;
        }
        Evolution::Counter { start, rate } => {
            let scale = 0.5 + unit(t, key, SALT_SCALE);
            counter_value(
                start * scale,
                rate * scale,
                interval_s,
                slot,
                unit(t, key, SALT_JITTER ^ slot),
            )
        }
        Evolution::Gauge { centre, step } => {
            // A slow sine (period 20–60 slots, random phase) plus noise.
            let phase = unit(t, key, SALT_PHASE);
            let period = 20.0 + 40.0 * unit(key, 0, SALT_PHASE);
            let angle = std::f64::consts::TAU * (phase + slot as f64 / period);
            let noise = unit(t, key, SALT_JITTER ^ slot) - 0.5;
            let v = centre + step * (2.0 * angle.sin() + noise);
            if *centre >= 0.0 { v.max(0.0) } else { v }
        }
    };
    push_number(out, value, series.integer);
}

/// Writes `value` as Prometheus text: integers without a fraction when the
/// series is integral, shortest round-trip form otherwise.
fn push_number(out: &mut String, value: f64, integer: bool) {
    if integer && value.abs() < 9.0e15 {
        let _ = write!(out, "{}", value.floor() as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The churn generation of series `key` on `target` in `slot`: every series
/// is replaced once per `1 / churn_per_hour` hours, at a staggered phase.
pub fn generation(spec: &FleetSpec, target: usize, key: u64, slot: u64) -> u64 {
    let hours = slot as f64 * spec.interval_ms as f64 / 3_600_000.0;
    (hours * spec.churn_per_hour + unit(target as u64, key, SALT_CHURN)) as u64
}

/// Renders the body target `target` serves in `slot` into `out` (cleared
/// first). Failing targets render nothing; the server answers for them.
pub fn render(spec: &FleetSpec, template: &Template, target: usize, slot: u64, out: &mut String) {
    out.clear();
    let kind = spec.kind(target);
    if kind == TargetKind::Failing {
        return;
    }
    let per_copy = template.series_count();
    let full_copies = spec.series_per_target / per_copy.max(1);
    let remainder = spec.series_per_target % per_copy.max(1);
    let suffix_ts = spec.timestamps.then(|| spec.slot_start_ms(slot));
    let mut position = 0usize;
    for family in &template.families {
        // A family whose first series is past a partial copy emits nothing.
        if full_copies == 0 && position >= remainder {
            break;
        }
        out.push_str(&family.header);
        for (offset, series) in family.series.iter().enumerate() {
            let index = position + offset;
            let copies = full_copies + usize::from(index < remainder);
            for replica in 0..copies {
                let key = (replica * per_copy + index) as u64;
                push_series(out, spec, series, target, replica, key, slot);
                if let Some(ts) = suffix_ts {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
        position += family.series.len();
    }
    if kind == TargetKind::Histogram {
        render_histograms(spec, target, slot, suffix_ts, out);
    }
}

fn push_series(
    out: &mut String,
    spec: &FleetSpec,
    series: &TemplateSeries,
    target: usize,
    replica: usize,
    key: u64,
    slot: u64,
) {
    out.push_str(&series.open_prefix);
    let mut separator = if series.has_labels { ',' } else { '{' };
    if replica > 0 {
        out.push(separator);
        let _ = write!(out, "replica=\"{replica}\"");
        separator = ',';
    }
    if spec.churn_per_hour > 0.0 {
        out.push(separator);
        let _ = write!(
            out,
            "generation=\"{}\"",
            generation(spec, target, key, slot)
        );
        separator = ',';
    }
    if separator == ',' {
        out.push('}');
    }
    out.push(' ');
    series_value(spec, series, target, key, slot, out);
}

/// Histogram families of a latency-like metric: bucket counts are the
/// request count times a fixed exponential CDF, so every bucket is a
/// monotonic counter and buckets never decrease with `le`.
fn render_histograms(
    spec: &FleetSpec,
    target: usize,
    slot: u64,
    suffix_ts: Option<i64>,
    out: &mut String,
) {
    let families = spec.histogram_families();
    if families == 0 {
        return;
    }
    let interval_s = spec.interval_ms as f64 / 1000.0;
    let t = target as u64;
    out.push_str("# HELP kiln_bench_request_duration_seconds Simulated request latency.\n");
    out.push_str("# TYPE kiln_bench_request_duration_seconds histogram\n");
    for handler in 0..families {
        let key = (1u64 << 32) + handler as u64;
        let mean_s = 0.01 + 0.5 * unit(t, key, SALT_SCALE);
        let rate = 1.0 + 50.0 * unit(key, 0, SALT_SCALE);
        let count = counter_value(
            0.0,
            rate,
            interval_s,
            slot,
            unit(t, key, SALT_JITTER ^ slot),
        )
        .floor();
        let stamp = |out: &mut String| {
            if let Some(ts) = suffix_ts {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        };
        for (bound, le) in BUCKET_BOUNDS.iter().zip(BUCKET_BOUNDS_F) {
            let cdf = 1.0 - (-le / mean_s).exp();
            let _ = write!(
                out,
                "kiln_bench_request_duration_seconds_bucket{{handler=\"/h{handler}\",le=\"{bound}\"}} {}",
                (count * cdf).floor()
            );
            stamp(out);
        }
        let _ = write!(
            out,
            "kiln_bench_request_duration_seconds_bucket{{handler=\"/h{handler}\",le=\"+Inf\"}} {count}"
        );
        stamp(out);
        let _ = write!(
            out,
            "kiln_bench_request_duration_seconds_sum{{handler=\"/h{handler}\"}} {}",
            count * mean_s
        );
        stamp(out);
        let _ = write!(
            out,
            "kiln_bench_request_duration_seconds_count{{handler=\"/h{handler}\"}} {count}"
        );
        stamp(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use std::collections::HashMap;

    fn template() -> Template {
        crate::embedded_template().expect("embedded capture parses")
    }

    fn spec() -> FleetSpec {
        FleetSpec {
            targets: 10,
            series_per_target: 1200,
            interval_ms: 15_000,
            churn_per_hour: 0.0,
            histogram_targets: 2,
            histogram_series: 30,
            slow_targets: 1,
            slow_delay_ms: 2000,
            failing_targets: 1,
            timestamps: false,
            origin_ms: 1_700_000_000_000,
            gzip: true,
        }
    }

    fn parse(body: &str) -> HashMap<String, f64> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect()
    }

    fn is_counter(series: &str) -> bool {
        let name = series.split('{').next().unwrap();
        name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count")
    }

    #[test]
    fn kinds_are_exact_counts() {
        let s = spec();
        let kinds: Vec<_> = (0..10).map(|i| s.kind(i)).collect();
        assert_eq!(kinds[0], TargetKind::Histogram);
        assert_eq!(kinds[1], TargetKind::Histogram);
        assert_eq!(kinds[2], TargetKind::Normal);
        assert_eq!(kinds[8], TargetKind::Slow);
        assert_eq!(kinds[9], TargetKind::Failing);
        // 30 histogram series round up to 3 families of 14.
        assert_eq!(s.series_of(0), 1200 + 42);
        assert_eq!(s.total_series(), 2 * 1242 + 7 * 1200);
    }

    #[test]
    fn payloads_are_deterministic_and_sized() {
        let (s, t) = (spec(), template());
        let (mut a, mut b) = (String::new(), String::new());
        for target in [0, 3, 8] {
            render(&s, &t, target, 42, &mut a);
            render(&s, &t, target, 42, &mut b);
            assert_eq!(a, b, "target {target}");
            assert_eq!(parse(&a).len(), s.series_of(target), "target {target}");
        }
        render(&s, &t, 4, 42, &mut b);
        assert_ne!(a, b, "targets differ");
        render(&s, &t, 9, 42, &mut a);
        assert!(a.is_empty(), "failing targets render nothing");
        // Fewer series than one copy: no comment lines for absent families.
        let mut small = s.clone();
        small.series_per_target = 10;
        render(&small, &t, 3, 42, &mut a);
        assert_eq!(parse(&a).len(), 10);
        let families = a.lines().filter(|l| l.starts_with("# TYPE")).count();
        let named: std::collections::HashSet<&str> = a
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect();
        assert!(families <= named.len(), "{a}");
    }

    #[test]
    fn counters_never_decrease_and_buckets_are_cumulative() {
        let (s, t) = (spec(), template());
        let mut body = String::new();
        for target in [0, 5] {
            render(&s, &t, target, 0, &mut body);
            let mut previous = parse(&body);
            let mut moved = 0;
            for slot in 1..60 {
                render(&s, &t, target, slot, &mut body);
                let now = parse(&body);
                for (series, value) in &now {
                    if is_counter(series) {
                        let before = previous[series];
                        assert!(
                            *value >= before,
                            "{series}: {before} -> {value} at slot {slot}"
                        );
                        moved += usize::from(*value > before);
                    }
                }
                previous = now;
            }
            assert!(moved > 1000, "counters move: {moved}");
            if s.kind(target) != TargetKind::Histogram {
                continue;
            }
            let mut last = -1.0;
            for bound in BUCKET_BOUNDS.iter().chain(["+Inf"].iter()) {
                let v = previous[&format!(
                    "kiln_bench_request_duration_seconds_bucket{{handler=\"/h1\",le=\"{bound}\"}}"
                )];
                assert!(v >= last, "bucket {bound}");
                last = v;
            }
        }
    }

    #[test]
    fn churn_replaces_the_requested_share() {
        let mut s = spec();
        s.churn_per_hour = 0.5;
        let t = template();
        let (mut a, mut b) = (String::new(), String::new());
        // One hour is 240 slots of 15 s.
        render(&s, &t, 3, 100, &mut a);
        render(&s, &t, 3, 340, &mut b);
        let (before, after) = (parse(&a), parse(&b));
        let kept = before.keys().filter(|k| after.contains_key(*k)).count();
        let replaced = 1.0 - kept as f64 / before.len() as f64;
        assert!((replaced - 0.5).abs() < 0.06, "replaced {replaced}");
    }

    #[test]
    fn timestamps_are_the_slot_start() {
        let mut s = spec();
        s.timestamps = true;
        let mut body = String::new();
        render(&s, &template(), 2, 7, &mut body);
        let expected = format!(" {}", 1_700_000_000_000i64 + 7 * 15_000);
        assert!(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| l.ends_with(&expected))
        );
        assert_eq!(s.slot_at(1_700_000_000_000 + 7 * 15_000 + 14_999), 7);
    }

    #[test]
    fn addresses_are_distinct_loopback() {
        assert_eq!(target_addr(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(target_addr(253), Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(target_addr(254), Ipv4Addr::new(127, 0, 2, 1));
        assert!(target_addr(MAX_TARGETS - 1).is_loopback());
    }
}
