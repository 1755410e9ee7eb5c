//! OpenMetrics semantic checks: the rules of the OpenMetrics 1.0
//! specification that go beyond its grammar, for `kiln check metrics` and
//! exporter authors. Scraping does not apply them, exactly as Prometheus
//! does not: a target that breaks them still gets scraped.
//!
//! Checked, per metric family (the lines from a family's first metadata or
//! sample to the next family):
//! * metadata: HELP, TYPE and UNIT at most once each, before any sample; no
//!   UNIT on `info` or `stateset`; a family appears once, and its name and
//!   the sample names its type implies clash with no other family's;
//! * values: counters, histogram buckets, counts, summary counts and sums
//!   are non-negative and not NaN, quantile values not negative; info values
//!   are 1, stateset values 0 or 1;
//! * labels: no trailing comma; summaries need `quantile` in [0, 1], buckets
//!   an `le` with `+Inf` spelled so, stateset samples a label named after
//!   the family;
//! * histograms: `le` increasing, counts cumulative, a `+Inf` bucket, `_count`
//!   equal to it, `_sum` with `_count` (and `_gsum` with `_gcount`), no
//!   histogram sum when a bucket is negative, a negative gauge-histogram sum
//!   only then;
//! * exemplars: only on counter `_total` and bucket samples, at most 128
//!   characters of label names and values;
//! * timestamps: a series given twice has timestamps on both, not
//!   decreasing.

use std::collections::{HashMap, HashSet};

use super::number::parse_float;
use super::{Entry, Format, MetricType, ParseError, ParseErrorKind, Parser, Sample};

/// The OpenMetrics limit on an exemplar's label names and values.
const EXEMPLAR_MAX_CHARS: usize = 128;

/// Parses `body` as OpenMetrics and applies the semantic rules of the
/// module documentation. The first violation is the error, with its line.
pub fn check_openmetrics(body: &[u8]) -> Result<(), ParseError> {
    let mut c = Checker::default();
    let mut last_line = 1;
    for entry in Parser::new(body, Format::OpenMetrics) {
        match entry? {
            Entry::Help { metric, .. } => c.metadata(&metric, Meta::Help, last_line)?,
            Entry::Type { metric, kind } => c.metadata(&metric, Meta::Type(kind), last_line)?,
            Entry::Unit { metric, .. } => c.metadata(&metric, Meta::Unit, last_line)?,
            Entry::Sample(s) => {
                last_line = s.line();
                c.sample(&s)?;
            }
        }
    }
    c.close_family(last_line)
}

enum Meta {
    Help,
    Type(MetricType),
    Unit,
}

#[derive(Default)]
struct Family {
    name: String,
    kind: Option<MetricType>,
    help: bool,
    unit: bool,
    has_samples: bool,
    /// Histogram state per label set without `le`.
    groups: HashMap<Vec<(String, String)>, Histogram>,
    /// Last timestamp per series text, for repeated series.
    seen: HashMap<String, Option<i64>>,
}

#[derive(Default)]
struct Histogram {
    last_le: Option<f64>,
    last_count: f64,
    inf: Option<f64>,
    negative_bucket: bool,
    count: Option<f64>,
    sum: bool,
}

#[derive(Default)]
struct Checker {
    family: Option<Family>,
    /// Family names and the sample names their types imply.
    taken: HashSet<String>,
}

fn violation(line: usize, message: String) -> ParseError {
    ParseError::new(line, 1, ParseErrorKind::Semantic(message))
}

/// The sample-name suffixes a family of type `kind` may use.
fn suffixes(kind: MetricType) -> &'static [&'static str] {
    match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
        MetricType::Summary => &["", "_count", "_sum", "_created"],
        MetricType::Info => &["_info"],
        MetricType::Gauge | MetricType::StateSet | MetricType::Unknown => &[""],
    }
}

impl Checker {
    fn metadata(&mut self, name: &str, meta: Meta, line: usize) -> Result<(), ParseError> {
        if self.family.as_ref().is_none_or(|f| f.name != name) {
            self.close_family(line)?;
            self.open_family(name, line)?;
        }
        let Some(f) = self.family.as_mut() else {
            return Ok(());
        };
        if f.has_samples {
            return Err(violation(
                line,
                format!("metadata for {name:?} after its samples"),
            ));
        }
        let repeated = match meta {
            Meta::Help => std::mem::replace(&mut f.help, true),
            Meta::Unit => std::mem::replace(&mut f.unit, true),
            Meta::Type(kind) => f.kind.replace(kind).is_some(),
        };
        if repeated {
            return Err(violation(line, format!("repeated metadata for {name:?}")));
        }
        if matches!(f.kind, Some(MetricType::Info | MetricType::StateSet)) && f.unit {
            return Err(violation(
                line,
                format!("{name:?}: info and stateset have no unit"),
            ));
        }
        if let Meta::Type(kind) = meta {
            for s in suffixes(kind).iter().filter(|s| !s.is_empty()) {
                let sample_name = format!("{name}{s}");
                if !self.taken.insert(sample_name.clone()) {
                    return Err(violation(
                        line,
                        format!("{sample_name:?} clashes with another family"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn open_family(&mut self, name: &str, line: usize) -> Result<(), ParseError> {
        if !self.taken.insert(name.to_owned()) {
            return Err(violation(
                line,
                format!("family {name:?} appears twice or clashes with another family"),
            ));
        }
        self.family = Some(Family {
            name: name.to_owned(),
            ..Family::default()
        });
        Ok(())
    }

    /// The suffix of `name` within the current family, if it belongs.
    fn suffix_in_family<'n>(&self, name: &'n str) -> Option<&'n str> {
        let f = self.family.as_ref()?;
        let suffix = name.strip_prefix(f.name.as_str())?;
        suffixes(f.kind.unwrap_or(MetricType::Unknown))
            .contains(&suffix)
            .then_some(suffix)
    }

    fn sample(&mut self, s: &Sample<'_>) -> Result<(), ParseError> {
        let line = s.line();
        let name = s.metric_name();
        let suffix = match self.suffix_in_family(&name) {
            Some(suffix) => suffix.to_owned(),
            None => {
                self.close_family(line)?;
                self.open_family(&name, line)?;
                String::new()
            }
        };
        if s.series().ends_with(b",}") {
            return Err(violation(
                line,
                format!("{name:?}: trailing comma in label set"),
            ));
        }
        let labels = s.labels_as_written()?;
        // The family exists: it was just found or opened.
        let Some(f) = self.family.as_mut() else {
            return Ok(());
        };
        f.has_samples = true;
        let kind = f.kind.unwrap_or(MetricType::Unknown);
        let v = s.value();
        let err = |m: String| Err(violation(line, format!("{name:?}: {m}")));

        let series = String::from_utf8_lossy(s.series()).into_owned();
        if let Some(prev) = f.seen.insert(series, s.timestamp_ms()) {
            match (prev, s.timestamp_ms()) {
                (Some(a), Some(b)) if b >= a => {}
                _ => return err("a repeated series needs non-decreasing timestamps".into()),
            }
        }

        let non_negative = matches!(
            (kind, suffix.as_str()),
            (MetricType::Counter, _)
                | (MetricType::Histogram, "_bucket" | "_count")
                | (MetricType::GaugeHistogram, "_bucket" | "_gcount")
                | (MetricType::Summary, "_count" | "_sum")
        );
        if non_negative && (v.is_nan() || v < 0.0) {
            return err(format!("value {v} must be a non-negative number"));
        }
        // A quantile may be NaN (no observations), never negative.
        if kind == MetricType::Summary && suffix.is_empty() && v < 0.0 {
            return err(format!("quantile value {v} is negative"));
        }
        match kind {
            MetricType::Info if v != 1.0 => return err("info value must be 1".into()),
            MetricType::StateSet if v != 0.0 && v != 1.0 => {
                return err("stateset value must be 0 or 1".into());
            }
            MetricType::StateSet if labels.get(&f.name).is_none() => {
                return err(format!("stateset sample needs a label {:?}", f.name));
            }
            MetricType::Summary if suffix.is_empty() => {
                let q = labels
                    .get("quantile")
                    .and_then(|q| parse_float(q.as_bytes()));
                if !q.is_some_and(|q| (0.0..=1.0).contains(&q)) {
                    return err("quantile must be a number in [0, 1]".into());
                }
            }
            _ => {}
        }

        if let Some(e) = s.exemplar() {
            let allowed = matches!(
                (kind, suffix.as_str()),
                (MetricType::Counter, "_total")
                    | (
                        MetricType::Histogram | MetricType::GaugeHistogram,
                        "_bucket"
                    )
            );
            if !allowed {
                return err("exemplars are allowed on counter totals and buckets only".into());
            }
            let chars: usize = e
                .to_labels()?
                .iter()
                .map(|l| l.name.chars().count() + l.value.chars().count())
                .sum();
            if chars > EXEMPLAR_MAX_CHARS {
                return err(format!("exemplar labels have {chars} characters, over 128"));
            }
        }

        if matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram) {
            let le_text = labels.get("le").map(str::to_owned);
            let key: Vec<(String, String)> = labels
                .iter()
                .filter(|l| l.name != "le" && l.name != kiln_storage::METRIC_NAME)
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect();
            let h = f.groups.entry(key).or_default();
            match suffix.as_str() {
                "_bucket" => {
                    let Some(le_text) = le_text else {
                        return err("bucket without le".into());
                    };
                    let le = parse_float(le_text.as_bytes())
                        .filter(|le| !le.is_nan() && (le.is_finite() || le_text == "+Inf"));
                    let Some(le) = le else {
                        return err(format!("invalid le {le_text:?}"));
                    };
                    if h.count.is_some() || h.sum {
                        return err("buckets must come before count and sum".into());
                    }
                    if h.last_le.is_some_and(|prev| le <= prev) {
                        return err("le values must increase".into());
                    }
                    if h.last_le.is_some() && v < h.last_count {
                        return err("bucket counts must be cumulative".into());
                    }
                    h.negative_bucket |= le < 0.0;
                    h.last_le = Some(le);
                    h.last_count = v;
                    if le == f64::INFINITY {
                        h.inf = Some(v);
                    }
                }
                "_count" | "_gcount" => h.count = Some(v),
                "_sum" | "_gsum" => {
                    if v.is_nan() || (v < 0.0 && !h.negative_bucket) {
                        return err(format!("sum {v} is invalid"));
                    }
                    h.sum = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the current family: the checks that need all its samples.
    fn close_family(&mut self, line: usize) -> Result<(), ParseError> {
        let Some(f) = self.family.take() else {
            return Ok(());
        };
        for h in f.groups.values() {
            let err = |m: &str| Err(violation(line, format!("{:?}: {m}", f.name)));
            let Some(inf) = h.inf else {
                return err("histogram without a +Inf bucket");
            };
            if h.count.is_some() != h.sum {
                return err("sum and count must be given together");
            }
            if h.count.is_some_and(|c| c != inf) {
                return err("count must equal the +Inf bucket");
            }
            // A gauge histogram's sum may be negative; a histogram's sum
            // means nothing once buckets are negative.
            if h.sum && h.negative_bucket && f.kind == Some(MetricType::Histogram) {
                return err("no sum with negative buckets");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation_of(body: &str) -> Option<String> {
        check_openmetrics(body.as_bytes())
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn a_well_formed_histogram_passes() {
        let body = "# TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
            h_seconds_bucket{le=\"0.5\"} 1 # {trace=\"a\"} 0.3\n\
            h_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_count 2\nh_seconds_sum 0.9\n\
            # TYPE c counter\nc_total 3\nc_created 1.5e9\n# EOF\n";
        assert_eq!(violation_of(body), None);
    }

    #[test]
    fn violations_name_the_family_and_line() {
        let e = violation_of(
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\nh_sum 1\n# EOF\n",
        )
        .unwrap();
        assert!(e.contains("count must equal the +Inf bucket"), "{e}");
        let e = violation_of("# TYPE c counter\nc_total -1\n# EOF\n").unwrap();
        assert!(
            e.starts_with("line 2, column 1: violates OpenMetrics: \"c_total\""),
            "{e}"
        );
        let e = violation_of("a 1\nb 1\na 2\n# EOF\n").unwrap();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn grammar_errors_come_first() {
        let e = violation_of("a 1\n").unwrap();
        assert!(e.contains("# EOF"), "{e}");
    }
}
