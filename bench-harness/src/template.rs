//! The payload template: a real exposition capture, read twice 15 s apart,
//! turned into a list of series that know how they evolve.
//!
//! Owns: parsing the two captures, grouping samples into metric families
//! (HELP/TYPE lines kept verbatim), and classifying every series as a
//! counter (with its measured per-second rate), a wandering gauge (with its
//! measured step) or a constant. The template is immutable once built; the
//! fleet model derives every target's payload from it.

use std::collections::HashMap;

use thiserror::Error;

/// How a template series evolves between scrapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Evolution {
    /// Never changes; rendered exactly as captured (covers NaN and ±Inf too).
    Constant(String),
    /// Monotonic, growing at `rate` per second on average from `start`.
    Counter { start: f64, rate: f64 },
    /// Moves around `centre` by up to `step` per scrape.
    Gauge { centre: f64, step: f64 },
}

/// One series of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSeries {
    /// `name{labels` without the closing brace, or just `name`.
    pub open_prefix: String,
    /// Whether `open_prefix` contains a label list (then it ends inside `{`).
    pub has_labels: bool,
    pub evolution: Evolution,
    /// Both captured values were integers: render integers.
    pub integer: bool,
}

/// A metric family: its comment lines and its series, in capture order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// `# HELP` and `# TYPE` lines, each ending in `\n`.
    pub header: String,
    pub series: Vec<TemplateSeries>,
}

/// The whole template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub families: Vec<Family>,
}

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("line {line}: series {series} is missing from the second capture")]
    Missing { line: usize, series: String },
    #[error("the capture holds no samples")]
    Empty,
}

impl Template {
    /// Builds the template from two captures of the same exporter taken
    /// `gap_s` seconds apart.
    pub fn from_captures(first: &str, second: &str, gap_s: f64) -> Result<Self, TemplateError> {
        let later: HashMap<&str, &str> = parse_samples(second)?
            .into_iter()
            .map(|s| (s.prefix, s.value))
            .collect();
        let mut families: Vec<Family> = Vec::new();
        let mut family_type = "untyped";
        let mut header_open = false;
        for (index, raw) in first.lines().enumerate() {
            let line = raw.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                let keyword = words.next().unwrap_or("");
                if keyword != "HELP" && keyword != "TYPE" {
                    continue;
                }
                if !header_open {
                    families.push(Family {
                        header: String::new(),
                        series: Vec::new(),
                    });
                    header_open = true;
                    family_type = "untyped";
                }
                if keyword == "TYPE" {
                    family_type = match words.nth(1) {
                        Some("counter") => "counter",
                        Some("summary") => "summary",
                        Some("histogram") => "histogram",
                        Some("gauge") => "gauge",
                        _ => "untyped",
                    };
                }
                let family = families
                    .last_mut()
                    .expect("pushed above when header_open was false");
                family.header.push_str(line);
                family.header.push('\n');
                continue;
            }
            header_open = false;
            if families.is_empty() {
                families.push(Family {
                    header: String::new(),
                    series: Vec::new(),
                });
            }
            let sample = parse_sample(line, index + 1)?;
            let later_value = later
                .get(sample.prefix)
                .ok_or_else(|| TemplateError::Missing {
                    line: index + 1,
                    series: sample.prefix.to_owned(),
                })?;
            let series = classify(&sample, later_value, family_type, gap_s, index + 1)?;
            families
                .last_mut()
                .expect("a family exists: pushed above when empty")
                .series
                .push(series);
        }
        families.retain(|f| !f.series.is_empty());
        if families.is_empty() {
            return Err(TemplateError::Empty);
        }
        Ok(Template { families })
    }

    /// Number of series in one copy of the template.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}

struct RawSample<'a> {
    prefix: &'a str,
    value: &'a str,
    name: &'a str,
}

fn parse_samples(text: &str) -> Result<Vec<RawSample<'_>>, TemplateError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse_sample(l.trim_end(), i + 1))
        .collect()
}

/// Splits `name{labels} value` into its series prefix and value. Label values
/// may hold spaces, so the value is the last word (captures carry no
/// timestamps).
fn parse_sample(line: &str, number: usize) -> Result<RawSample<'_>, TemplateError> {
    let (prefix, value) = line.rsplit_once(' ').ok_or_else(|| TemplateError::Syntax {
        line: number,
        what: "a sample line needs a value".to_owned(),
    })?;
    let name_end = prefix.find('{').unwrap_or(prefix.len());
    let name = &prefix[..name_end];
    if name.is_empty() || (name_end < prefix.len() && !prefix.ends_with('}')) {
        return Err(TemplateError::Syntax {
            line: number,
            what: format!("malformed series {prefix:?}"),
        });
    }
    Ok(RawSample {
        prefix,
        value,
        name,
    })
}

fn parse_value(text: &str, line: usize) -> Result<f64, TemplateError> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| TemplateError::Syntax {
            line,
            what: format!("bad value {text:?}"),
        }),
    }
}

fn classify(
    sample: &RawSample<'_>,
    later: &str,
    family_type: &str,
    gap_s: f64,
    line: usize,
) -> Result<TemplateSeries, TemplateError> {
    let v0 = parse_value(sample.value, line)?;
    let v1 = parse_value(later, line)?;
    let cumulative = match family_type {
        "counter" => true,
        "summary" => sample.name.ends_with("_sum") || sample.name.ends_with("_count"),
        "histogram" => {
            sample.name.ends_with("_sum")
                || sample.name.ends_with("_count")
                || sample.name.ends_with("_bucket")
        }
        // node_exporter's untyped families (netstat, snmp, vmstat) are
        // kernel counters: cumulative when they grew between the captures.
        "untyped" => sample.name.ends_with("_total") || v1 > v0,
        _ => false,
    };
    let evolution = if !v0.is_finite() || !v1.is_finite() || v0 == v1 {
        Evolution::Constant(sample.value.to_owned())
    } else if cumulative {
        Evolution::Counter {
            start: v0,
            rate: ((v1 - v0) / gap_s).max(0.0),
        }
    } else {
        Evolution::Gauge {
            centre: v0,
            step: (v1 - v0).abs(),
        }
    };
    let (open_prefix, has_labels) = match sample.prefix.strip_suffix('}') {
        Some(open) => (open.to_owned(), true),
        None => (sample.prefix.to_owned(), false),
    };
    Ok(TemplateSeries {
        open_prefix,
        has_labels,
        evolution,
        integer: v0.fract() == 0.0 && v1.fract() == 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1 2\"} 10\n\
# HELP g G.\n# TYPE g gauge\ng 1.5\ng2 7\n# TYPE s summary\ns{quantile=\"0.5\"} NaN\ns_sum 1\ns_count 2\n";
    const T15: &str =
        "a_total{x=\"1 2\"} 40\ng 2.5\ng2 7\ns{quantile=\"0.5\"} NaN\ns_sum 4\ns_count 5\n";

    #[test]
    fn classifies_counters_gauges_and_constants() {
        let t = Template::from_captures(T0, T15, 15.0).unwrap();
        assert_eq!(t.families.len(), 3);
        assert_eq!(t.series_count(), 6);
        let a = &t.families[0].series[0];
        assert_eq!(a.open_prefix, "a_total{x=\"1 2\"");
        assert!(a.has_labels);
        assert_eq!(
            a.evolution,
            Evolution::Counter {
                start: 10.0,
                rate: 2.0
            }
        );
        let g = &t.families[1].series[0];
        assert_eq!(
            g.evolution,
            Evolution::Gauge {
                centre: 1.5,
                step: 1.0
            }
        );
        assert!(!g.integer);
        assert_eq!(
            t.families[1].series[1].evolution,
            Evolution::Constant("7".into())
        );
        assert_eq!(
            t.families[2].series[0].evolution,
            Evolution::Constant("NaN".into())
        );
        assert!(matches!(
            t.families[2].series[2].evolution,
            Evolution::Counter { .. }
        ));
    }

    #[test]
    fn a_series_missing_later_is_an_error() {
        let err = Template::from_captures(T0, "g 1\n", 15.0).unwrap_err();
        assert!(
            matches!(err, TemplateError::Missing { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_real_capture_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/exposition/");
        let t0 = std::fs::read_to_string(format!("{dir}node_exporter-1.5.0.t0.prom")).unwrap();
        let t15 = std::fs::read_to_string(format!("{dir}node_exporter-1.5.0.t15.prom")).unwrap();
        let t = Template::from_captures(&t0, &t15, 15.0).unwrap();
        assert_eq!(t.series_count(), 507);
        let count = |f: fn(&Evolution) -> bool| {
            t.families
                .iter()
                .flat_map(|family| &family.series)
                .filter(|s| f(&s.evolution))
                .count()
        };
        let counters = count(|e| matches!(e, Evolution::Counter { .. }));
        let gauges = count(|e| matches!(e, Evolution::Gauge { .. }));
        // Counted by diffing the two captures: 128 series changed in 15 s.
        assert_eq!((counters, gauges), (36, 92));
    }
}
