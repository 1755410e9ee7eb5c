//! Exposition parsing: the Prometheus text format 0.0.4 and OpenMetrics 1.0
//! text, as scraped from a target's `/metrics`.
//!
//! The [`Parser`] walks the body once, line by line, and yields [`Entry`]s
//! that borrow from it: metadata (HELP, TYPE, UNIT) and [`Sample`]s. A sample
//! is fully validated when it is yielded (syntax, UTF-8, numbers), but its
//! label set is not built: [`Sample::series`] gives the raw bytes of name and
//! labels as written, which the scrape cache uses as its key, and
//! [`Sample::to_labels`] builds the [`Labels`] only for a series the cache
//! has not seen. Histograms and summaries are plain series (`_bucket`,
//! `_sum`, `_count`, `quantile=`), as Prometheus stores classic histograms.
//!
//! Invariants:
//! * the first error ends the parse: a scrape is accepted or refused whole;
//! * every error carries the 1-based line and byte column where it was found;
//! * the parser never allocates per sample; it allocates only to unescape
//!   HELP text or a quoted name that contains escapes, and when the
//!   `_created` folding of [`Parser::with_created_timestamps`] is on.
//!
//! The two formats differ as Prometheus's two parsers do: the text format is
//! lenient (whitespace around tokens, a missing comma, free `#` comments,
//! integer millisecond timestamps) and OpenMetrics is strict (single spaces,
//! no blank lines, a final `# EOF`, float-second timestamps, exemplars).

mod check;
mod created;
mod number;
mod parser;

use std::borrow::Cow;
use std::fmt;

use kiln_storage::{LabelError, Labels, METRIC_NAME};

pub use check::check_openmetrics;
pub use parser::Parser;

use number::{format_openmetrics_float, parse_float};
use parser::{Span, scan_label_set, unescape};

/// The wire format of a scrape body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    PromText,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The `Accept` header Prometheus sends on a scrape: OpenMetrics first,
    /// the text format as the fallback, anything else last.
    pub const ACCEPT: &'static str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    /// The format of a response from its `Content-Type` header. OpenMetrics
    /// when the media type is `application/openmetrics-text`; the text format
    /// for anything else, including a missing header (Prometheus's fallback).
    pub fn from_content_type(ct: Option<&str>) -> Format {
        let media = ct.and_then(|ct| ct.split(';').next()).unwrap_or("");
        if media
            .trim()
            .eq_ignore_ascii_case("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::PromText
        }
    }
}

/// The type a `# TYPE` line declares for a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    StateSet,
    /// `unknown` in OpenMetrics, `untyped` in the text format, or no TYPE.
    Unknown,
}

impl MetricType {
    /// The name `/api/v1/metadata` reports: the OpenMetrics spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    /// Parses the word of a TYPE line in the given format.
    fn parse(word: &[u8], format: Format) -> Option<MetricType> {
        let t = match word {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" if format == Format::PromText => MetricType::Unknown,
            b"gaugehistogram" if format == Format::OpenMetrics => MetricType::GaugeHistogram,
            b"info" if format == Format::OpenMetrics => MetricType::Info,
            b"stateset" if format == Format::OpenMetrics => MetricType::StateSet,
            b"unknown" if format == Format::OpenMetrics => MetricType::Unknown,
            _ => return None,
        };
        Some(t)
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One item of an exposition body.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// `# HELP name text`, with the text unescaped.
    Help {
        /// The metric family name (unescaped when it was quoted).
        metric: Cow<'a, str>,
        /// The help text.
        text: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        /// The metric family name.
        metric: Cow<'a, str>,
        /// The declared type.
        kind: MetricType,
    },
    /// `# UNIT name unit` (OpenMetrics).
    Unit {
        /// The metric family name.
        metric: Cow<'a, str>,
        /// The unit; may be empty.
        unit: &'a str,
    },
    /// One sample line.
    Sample(Sample<'a>),
}

/// One sample line, borrowed from the body. See the module documentation.
///
/// Kept compact (offsets and flags rather than options and sub-slices)
/// because one is moved per sample on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Name and label set as written (valid UTF-8, checked by the parser).
    series: &'a str,
    /// The exemplar's label set with its braces; empty when there is none.
    exemplar_set: &'a str,
    value: f64,
    exemplar_value: f64,
    timestamp_ms: i64,
    start_timestamp_ms: i64,
    exemplar_timestamp_ms: i64,
    /// The metric name is `series[name_start..name_end]`, still escaped when
    /// the `NAME_ESCAPED` flag is set.
    name_start: u32,
    name_end: u32,
    /// Index in `series` just after `{`; 0 when there is no label set.
    labels_at: u32,
    /// 1-based line number, saturating at `u32::MAX`.
    line: u32,
    flags: u8,
    format: Format,
    /// The type of the latest TYPE line: it decides `le`/`quantile` rewriting.
    family: MetricType,
}

/// [`Sample::flags`] bits.
const HAS_TIMESTAMP: u8 = 1;
const HAS_START_TIMESTAMP: u8 = 2;
const HAS_EXEMPLAR_TIMESTAMP: u8 = 4;
const NAME_ESCAPED: u8 = 8;

impl<'a> Sample<'a> {
    /// The raw bytes of name and label set as written: the scrape-cache key.
    /// Two lines with the same bytes are the same series; the converse need
    /// not hold (`a{x="1",y="2"}` and `a{y="2",x="1"}`), which only costs a
    /// cache miss.
    pub fn series(&self) -> &'a [u8] {
        self.series.as_bytes()
    }

    /// The metric name, unescaped when it was quoted.
    pub fn metric_name(&self) -> Cow<'a, str> {
        let raw = &self.series[self.name_start as usize..self.name_end as usize];
        unescape(raw, self.flags & NAME_ESCAPED != 0, true)
    }

    /// Builds the label set: the name as `__name__`, label values unescaped,
    /// empty values dropped, `le` (histograms) and `quantile` (summaries)
    /// rewritten to canonical float text as Prometheus 3 does. Fails on a
    /// repeated or empty label name.
    pub fn to_labels(&self) -> Result<Labels, ParseError> {
        self.build_labels(true)
    }

    /// The label set with values as written (unescaped, `le` and
    /// `quantile` not rewritten): what the strict checker judges.
    fn labels_as_written(&self) -> Result<Labels, ParseError> {
        self.build_labels(false)
    }

    fn build_labels(&self, rewrite: bool) -> Result<Labels, ParseError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(8);
        pairs.push((Cow::Borrowed(METRIC_NAME), self.metric_name()));
        if self.labels_at != 0 {
            let s = self.series;
            // The set was scanned when the line was parsed, so this cannot
            // fail; spans sit between ASCII delimiters of valid UTF-8.
            scan_label_set(
                s.as_bytes(),
                self.labels_at as usize,
                self.format,
                |k: Span, v: Span| {
                    let name = unescape(&s[k.start..k.end], k.escaped, true);
                    let mut value = unescape(&s[v.start..v.end], v.escaped, true);
                    if rewrite
                        && self.rewrites(&name)
                        && let Some(f) = parse_float(value.as_bytes())
                    {
                        value = Cow::Owned(format_openmetrics_float(f));
                    }
                    pairs.push((name, value));
                },
            )
            .map_err(|(col, kind)| ParseError::new(self.line(), col + 1, kind))?;
        }
        Labels::from_pairs(pairs).map_err(|e| ParseError::new(self.line(), 1, e.into()))
    }

    /// Whether label `name` gets canonical float text under this family type.
    fn rewrites(&self, name: &str) -> bool {
        match self.family {
            MetricType::Histogram | MetricType::GaugeHistogram => name == "le",
            MetricType::Summary => name == "quantile",
            _ => false,
        }
    }

    /// The sample value. A NaN value is an ordinary NaN, never the staleness
    /// marker's bit pattern.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The explicit timestamp in milliseconds, if the line has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        (self.flags & HAS_TIMESTAMP != 0).then_some(self.timestamp_ms)
    }

    /// The start ("created") timestamp in milliseconds, from the family's
    /// `_created` line, when [`Parser::with_created_timestamps`] is on.
    pub fn start_timestamp_ms(&self) -> Option<i64> {
        (self.flags & HAS_START_TIMESTAMP != 0).then_some(self.start_timestamp_ms)
    }

    fn set_start_timestamp_ms(&mut self, t: Option<i64>) {
        match t {
            Some(t) => {
                self.start_timestamp_ms = t;
                self.flags |= HAS_START_TIMESTAMP;
            }
            None => self.flags &= !HAS_START_TIMESTAMP,
        }
    }

    /// The exemplar attached to the line (OpenMetrics).
    pub fn exemplar(&self) -> Option<Exemplar<'a>> {
        if self.exemplar_set.is_empty() {
            return None;
        }
        Some(Exemplar {
            set: self.exemplar_set,
            value: self.exemplar_value,
            timestamp_ms: (self.flags & HAS_EXEMPLAR_TIMESTAMP != 0)
                .then_some(self.exemplar_timestamp_ms),
            line: self.line(),
        })
    }

    /// The 1-based line number of the sample in the body.
    pub fn line(&self) -> usize {
        self.line as usize
    }
}

/// An OpenMetrics exemplar: ` # {labels} value [timestamp]` after a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    /// The label set as written, braces included; valid UTF-8.
    set: &'a str,
    value: f64,
    timestamp_ms: Option<i64>,
    line: usize,
}

impl Exemplar<'_> {
    /// The exemplar's label set, unescaped.
    pub fn to_labels(&self) -> Result<Labels, ParseError> {
        let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
        let s = self.set;
        scan_label_set(s.as_bytes(), 1, Format::OpenMetrics, |k: Span, v: Span| {
            pairs.push((
                unescape(&s[k.start..k.end], k.escaped, true),
                unescape(&s[v.start..v.end], v.escaped, true),
            ));
        })
        .map_err(|(col, kind)| ParseError::new(self.line, col + 1, kind))?;
        Labels::from_pairs(pairs).map_err(|e| ParseError::new(self.line, 1, e.into()))
    }

    /// The exemplar value.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The exemplar timestamp in milliseconds, if given.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

/// Why a body was refused, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column within the line.
    pub column: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    fn new(line: usize, column: usize, kind: ParseErrorKind) -> Self {
        ParseError { line, column, kind }
    }
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A token other than the one the grammar requires.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar required.
        expected: &'static str,
        /// What was there (quoted and truncated input, or `end of line`).
        found: String,
    },
    /// A sample or exemplar value that is not a float.
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// A timestamp that is not an integer (text format) or a finite float
    /// (OpenMetrics).
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// A name or label value that is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A sample with a label set but no metric name.
    #[error("metric name not set")]
    MissingMetricName,
    /// A sample that names its metric twice.
    #[error("metric name given twice")]
    DuplicateMetricName,
    /// A TYPE line with a type the format does not know.
    #[error("invalid metric type {0:?}")]
    InvalidMetricType(String),
    /// An OpenMetrics UNIT that is not a `_`-suffix of the family name.
    #[error("unit {unit:?} is not a suffix of metric {metric:?}")]
    UnitNotSuffix {
        /// The unit.
        unit: String,
        /// The family name.
        metric: String,
    },
    /// An OpenMetrics body that does not end with `# EOF`.
    #[error("data does not end with \"# EOF\"")]
    MissingEof,
    /// A line of 4 GiB or more.
    #[error("line too long")]
    LineTooLong,
    /// Anything after an OpenMetrics `# EOF` line.
    #[error("unexpected data after \"# EOF\"")]
    DataAfterEof,
    /// A rule of the OpenMetrics specification beyond its grammar, found by
    /// [`check_openmetrics`].
    #[error("violates OpenMetrics: {0}")]
    Semantic(String),
    /// A label set the storage refuses (repeated or empty name).
    #[error("invalid label set: {0}")]
    Labels(#[from] LabelError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_negotiation() {
        let om = Some("application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert_eq!(Format::from_content_type(om), Format::OpenMetrics);
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::PromText
        );
        assert_eq!(
            Format::from_content_type(Some("text/html")),
            Format::PromText
        );
        assert_eq!(Format::from_content_type(None), Format::PromText);
        assert!(Format::ACCEPT.starts_with("application/openmetrics-text;version=1.0.0,"));
        assert!(Format::ACCEPT.contains("text/plain;version=0.0.4;q=0.5"));
    }

    fn first_error(body: &[u8], format: Format) -> ParseError {
        Parser::new(body, format)
            .find_map(Result::err)
            .expect("an error")
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let e = first_error(b"a 1\nb{c=\"d\" 2\n", Format::PromText);
        assert_eq!((e.line, e.column), (2, 9), "{e}");
        let e = first_error(b"a 1\n# EOF\nb 2\n", Format::OpenMetrics);
        assert_eq!(
            (e.line, e.column, e.kind),
            (3, 1, ParseErrorKind::DataAfterEof)
        );
        let e = first_error(b"a 1\n", Format::OpenMetrics);
        assert_eq!(e.kind, ParseErrorKind::MissingEof);
        let e = first_error(b"a{b=\"\xff\"} 1\n", Format::PromText);
        assert_eq!((e.column, e.kind), (6, ParseErrorKind::InvalidUtf8));
        let e = first_error(b"a 1 1.5\n", Format::PromText);
        assert!(matches!(e.kind, ParseErrorKind::InvalidTimestamp(_)), "{e}");
    }

    #[test]
    fn the_first_error_ends_the_parse() {
        let mut p = Parser::new(b"a x\nb 1\n", Format::PromText);
        assert!(p.next_entry().unwrap().is_err());
        assert!(p.next_entry().is_none());
    }

    #[test]
    fn samples_expose_value_timestamp_and_labels() {
        let body = b"# TYPE h histogram\nh_bucket{le=\"1\",x=\"\\n\"} 3 1700000000000\n";
        let Some(Ok(Entry::Sample(s))) = Parser::new(body, Format::PromText).nth(1) else {
            panic!("no sample");
        };
        assert_eq!(s.series(), br#"h_bucket{le="1",x="\n"}"#);
        assert_eq!(s.value(), 3.0);
        assert_eq!(s.timestamp_ms(), Some(1_700_000_000_000));
        let l = s.to_labels().unwrap();
        assert_eq!(l.get("le"), Some("1.0"));
        assert_eq!(l.get("x"), Some("\n"));
        assert_eq!(l.metric_name(), Some("h_bucket"));
    }

    #[test]
    fn openmetrics_timestamps_are_float_seconds() {
        let body = b"a 1 1.5\n# EOF\n";
        let Some(Ok(Entry::Sample(s))) = Parser::new(body, Format::OpenMetrics).next() else {
            panic!("no sample");
        };
        assert_eq!(s.timestamp_ms(), Some(1500));
    }

    #[test]
    fn repeated_label_names_fail_when_building_labels() {
        let Some(Ok(Entry::Sample(s))) =
            Parser::new(b"a{x=\"1\",x=\"2\"} 1\n", Format::PromText).next()
        else {
            panic!("no sample");
        };
        assert!(matches!(
            s.to_labels().unwrap_err().kind,
            ParseErrorKind::Labels(LabelError::DuplicateName { .. })
        ));
    }

    #[test]
    fn error_display_has_position() {
        let e = ParseError::new(3, 7, ParseErrorKind::MissingMetricName);
        assert_eq!(e.to_string(), "line 3, column 7: metric name not set");
    }
}
