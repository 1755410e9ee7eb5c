//! Folding OpenMetrics `_created` lines into start timestamps.
//!
//! Owns the state of the current counter, histogram, gauge histogram or
//! summary family while [`Parser::with_created_timestamps`] is on. When the
//! first sample of such a family arrives, the family's remaining lines are
//! read ahead once and its `_created` values indexed by label set (without
//! `__name__`, `le` and `quantile`); each sample of the family then takes its
//! start timestamp from that index, and the `_created` lines themselves are
//! not yielded. Reading ahead once per family keeps the cost linear in the
//! body, whatever the order of the lines.

use std::collections::HashMap;

use kiln_storage::Labels;

use super::number::seconds_to_ms;
use super::{Entry, MetricType, Parser, Sample};

/// Suffixes whose samples belong to a family named without them.
const FAMILY_SUFFIXES: [&str; 8] = [
    "", "_total", "_bucket", "_count", "_sum", "_created", "_gcount", "_gsum",
];

/// The `_created` folding state of one parser.
#[derive(Default)]
pub(crate) struct CreatedFolding {
    family: Option<Family>,
}

struct Family {
    name: String,
    kind: MetricType,
    /// Built on the family's first sample.
    index: Option<HashMap<Labels, i64>>,
}

impl CreatedFolding {
    /// A TYPE line starts a family; only the four types with `_created`
    /// series take part.
    pub(crate) fn start_family(&mut self, name: &str, kind: MetricType) {
        self.family = match kind {
            MetricType::Counter
            | MetricType::Histogram
            | MetricType::GaugeHistogram
            | MetricType::Summary => Some(Family {
                name: name.to_owned(),
                kind,
                index: None,
            }),
            _ => None,
        };
    }

    /// Sets the sample's start timestamp; false when the sample is a
    /// `_created` line to be dropped. `rest` (and `rest_text`, when the body
    /// is valid UTF-8) is the body from the sample's line on, `line` its
    /// number.
    pub(crate) fn fold(
        &mut self,
        sample: &mut Sample<'_>,
        rest: &[u8],
        rest_text: Option<&str>,
        line: usize,
    ) -> bool {
        let Some(family) = &mut self.family else {
            return true;
        };
        let name = sample.metric_name();
        let suffix = match name.strip_prefix(family.name.as_str()) {
            Some(s) if FAMILY_SUFFIXES.contains(&s) => s,
            _ => {
                // A sample of another family ends this one.
                self.family = None;
                return true;
            }
        };
        // Built from the family's first sample on, which may be the
        // `_created` line itself: unlike Prometheus, a `_created` that comes
        // first is not lost.
        let index = family
            .index
            .get_or_insert_with(|| build_index(&family.name, family.kind, rest, rest_text, line));
        if suffix == "_created" {
            return false;
        }
        sample
            .set_start_timestamp_ms(key(sample, family.kind).and_then(|k| index.get(&k).copied()));
        true
    }
}

/// Whether `name` is `family` plus one of the family suffixes.
fn belongs(name: &str, family: &str) -> bool {
    name.strip_prefix(family)
        .is_some_and(|s| FAMILY_SUFFIXES.contains(&s))
}

/// Reads the family's lines from `rest` on and indexes its `_created`
/// values. Stops at the first line that is not a sample of the family; an
/// error there is left for the main parser to report.
fn build_index(
    family: &str,
    kind: MetricType,
    rest: &[u8],
    rest_text: Option<&str>,
    line: usize,
) -> HashMap<Labels, i64> {
    let created = format!("{family}_created");
    let mut index = HashMap::new();
    let mut p = Parser::lookahead(rest, rest_text, kind, line);
    while let Some(Ok(Entry::Sample(s))) = p.next_entry() {
        let name = s.metric_name();
        if !belongs(&name, family) {
            break;
        }
        if name == created
            && let (Some(k), Some(ms)) = (key(&s, kind), seconds_to_ms(s.value()))
        {
            index.entry(k).or_insert(ms);
        }
    }
    index
}

/// The label set that links a sample to its `_created` line.
fn key(s: &Sample<'_>, kind: MetricType) -> Option<Labels> {
    let mut b = s.to_labels().ok()?.builder();
    b.del(kiln_storage::METRIC_NAME);
    match kind {
        MetricType::Histogram | MetricType::GaugeHistogram => b.del("le"),
        MetricType::Summary => b.del("quantile"),
        _ => &mut b,
    };
    b.build().ok()
}
