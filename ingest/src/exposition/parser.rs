//! The line grammar of both text formats, and the label-set scanner that
//! [`Sample::to_labels`](super::Sample::to_labels) shares with it so that
//! validation and construction can never disagree.
//!
//! The body is split into lines with `memchr`; each line is parsed with
//! byte-class tables and no allocation. Positions are byte offsets into the
//! line and become 1-based columns only in errors.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

use super::created::CreatedFolding;
use super::number::{parse_float, parse_int_timestamp, seconds_to_ms};
use super::{
    Entry, Format, HAS_EXEMPLAR_TIMESTAMP, HAS_TIMESTAMP, MetricType, NAME_ESCAPED, ParseError,
    ParseErrorKind, Sample,
};

/// Byte classes for names: bit 0 = may start a metric name, bit 1 = may
/// continue one, bit 2 = may start a label name, bit 3 = may continue one.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b':' {
            v |= 1 | 2;
        }
        if digit {
            v |= 2 | 8;
        }
        if alpha {
            v |= 4 | 8;
        }
        t[c] = v;
        c += 1;
    }
    t
};

#[inline]
fn metric_start(b: u8) -> bool {
    CLASS[b as usize] & 1 != 0
}
#[inline]
fn label_start(b: u8) -> bool {
    CLASS[b as usize] & 4 != 0
}

/// Bit of [`CLASS`] for "may continue a metric name".
const METRIC_CONT: u8 = 2;
/// Bit of [`CLASS`] for "may continue a label name".
const LABEL_CONT: u8 = 8;

/// End of the run of bytes of class `bit` from `i`. Names are the longest
/// tokens of a line, so they are scanned eight bytes at a time with a
/// branch-free AND of table entries, then byte by byte for the tail.
#[inline]
fn scan_class(line: &[u8], mut i: usize, bit: u8) -> usize {
    while let Some(chunk) = line.get(i..i + 8) {
        let all = chunk
            .iter()
            .fold(0xff, |acc, &b| acc & CLASS[usize::from(b)]);
        if all & bit == 0 {
            break;
        }
        i += 8;
    }
    while i < line.len() && CLASS[usize::from(line[i])] & bit != 0 {
        i += 1;
    }
    i
}

#[inline]
fn scan_while(line: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while i < line.len() && f(line[i]) {
        i += 1;
    }
    i
}

#[inline]
fn skip_ws(line: &[u8], i: usize) -> usize {
    scan_while(line, i, |b| b == b' ' || b == b'\t')
}

/// End of the token starting at `i`: the next separator or the line end.
#[inline]
fn token_end(line: &[u8], i: usize, format: Format) -> usize {
    match format {
        Format::PromText => scan_while(line, i, |b| b != b' ' && b != b'\t'),
        Format::OpenMetrics => memchr(b' ', &line[i..]).map_or(line.len(), |n| i + n),
    }
}

/// Describes the input at `i` for an error message, truncated.
fn found(line: &[u8], i: usize) -> String {
    if i >= line.len() {
        return "end of line".into();
    }
    let end = (i + 16).min(line.len());
    format!("{:?}", String::from_utf8_lossy(&line[i..end]))
}

fn unexpected(expected: &'static str, line: &[u8], i: usize) -> (usize, ParseErrorKind) {
    (
        i,
        ParseErrorKind::Unexpected {
            expected,
            found: found(line, i),
        },
    )
}

fn lossy(b: &[u8]) -> String {
    let end = b.len().min(64);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A line of the body, with its text when the body is valid UTF-8.
///
/// Most bodies are; the parser then validates UTF-8 once for the whole body
/// and slices strings out of it at ASCII delimiters, which costs a boundary
/// check instead of a validation per name, value and HELP text.
#[derive(Clone, Copy)]
struct Line<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Line<'a> {
    /// `bytes[a..b]` as a string; an error at the first invalid byte.
    fn str(self, a: usize, b: usize) -> Result<&'a str, (usize, ParseErrorKind)> {
        if let Some(s) = self.text.and_then(|t| t.get(a..b)) {
            return Ok(s);
        }
        std::str::from_utf8(&self.bytes[a..b])
            .map_err(|e| (a + e.valid_up_to(), ParseErrorKind::InvalidUtf8))
    }
}

/// A byte range of a line; `escaped` when it holds a backslash escape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) escaped: bool,
}

/// What [`scan_label_set`] found besides the pairs.
pub(crate) struct LabelScan {
    /// Index just after the closing `}`.
    pub(crate) end: usize,
    /// A quoted metric name given inside the braces (`{"a.b", x="y"}`).
    pub(crate) name: Option<Span>,
}

/// Scans a label set from `i` (just after `{`) to its `}`, calling `pair`
/// for every `name="value"`. The text format allows blanks around tokens and
/// a missing comma; OpenMetrics allows neither. Both allow a trailing comma
/// and quoted names. Errors are `(offset, kind)`.
pub(crate) fn scan_label_set(
    line: &[u8],
    mut i: usize,
    format: Format,
    mut pair: impl FnMut(Span, Span),
) -> Result<LabelScan, (usize, ParseErrorKind)> {
    let lenient = format == Format::PromText;
    let mut name = None;
    loop {
        if lenient {
            i = skip_ws(line, i);
        }
        let key = match line.get(i) {
            Some(b'}') => return Ok(LabelScan { end: i + 1, name }),
            Some(b'"') => {
                let s = scan_quoted(line, i + 1)?;
                i = s.end + 1;
                s
            }
            Some(&c) if label_start(c) => {
                let start = i;
                i = scan_class(line, i + 1, LABEL_CONT);
                Span {
                    start,
                    end: i,
                    escaped: false,
                }
            }
            _ => return Err(unexpected("label name", line, i)),
        };
        let quoted = key.start > 0 && line[key.start - 1] == b'"';
        if lenient {
            i = skip_ws(line, i);
        }
        match line.get(i) {
            Some(b'=') => i += 1,
            Some(&c @ (b',' | b'}')) if quoted => {
                if name.is_some() {
                    return Err((key.start, ParseErrorKind::DuplicateMetricName));
                }
                if key.start == key.end {
                    return Err((key.start, ParseErrorKind::MissingMetricName));
                }
                name = Some(key);
                if c == b',' {
                    i += 1;
                }
                continue;
            }
            _ => return Err(unexpected("'='", line, i)),
        }
        if lenient {
            i = skip_ws(line, i);
        }
        if line.get(i) != Some(&b'"') {
            return Err(unexpected("quoted label value", line, i));
        }
        let value = scan_quoted(line, i + 1)?;
        i = value.end + 1;
        pair(key, value);
        if lenient {
            i = skip_ws(line, i);
        }
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            Some(&c) if lenient && (c == b'"' || label_start(c)) => {}
            _ => return Err(unexpected("',' or '}'", line, i)),
        }
    }
}

/// Scans a quoted string whose content starts at `i`; the span excludes
/// the quotes. Any byte may follow a backslash; the line end is an error.
fn scan_quoted(line: &[u8], i: usize) -> Result<Span, (usize, ParseErrorKind)> {
    // Most values are a few bytes long, where a plain loop beats setting up
    // a vector search; long ones go on with memchr2.
    let short_end = (i + 16).min(line.len());
    let mut j = i;
    while j < short_end {
        match line[j] {
            b'"' => {
                return Ok(Span {
                    start: i,
                    end: j,
                    escaped: false,
                });
            }
            b'\\' => break,
            _ => j += 1,
        }
    }
    let mut escaped = false;
    loop {
        match memchr2(b'"', b'\\', &line[j..]) {
            None => return Err(unexpected("closing '\"'", line, line.len())),
            Some(n) if line[j + n] == b'"' => {
                return Ok(Span {
                    start: i,
                    end: j + n,
                    escaped,
                });
            }
            Some(n) => {
                escaped = true;
                j += n + 2;
                if j > line.len() {
                    return Err(unexpected("escaped character", line, line.len()));
                }
            }
        }
    }
}

/// Decodes `\\`, `\n` and (when `quote`) `\"`; any other backslash stays as
/// written, as in both of Prometheus's parsers.
pub(crate) fn unescape(raw: &str, escaped: bool, quote: bool) -> Cow<'_, str> {
    if !escaped || !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// A streaming parser over one scrape body. See the module documentation.
pub struct Parser<'a> {
    body: &'a [u8],
    /// The body as text when it is valid UTF-8 as a whole.
    text: Option<&'a str>,
    /// Start of the next line.
    pos: usize,
    /// 1-based number of the next line.
    line: usize,
    format: Format,
    /// The type of the latest TYPE line.
    family: MetricType,
    /// Set after `# EOF` or the first error: nothing more is yielded.
    done: bool,
    created: Option<CreatedFolding>,
}

impl<'a> Parser<'a> {
    /// A parser over `body` in `format`. `_created` lines are ordinary
    /// samples, as in Prometheus without created-timestamp ingestion.
    pub fn new(body: &'a [u8], format: Format) -> Self {
        Parser {
            body,
            text: std::str::from_utf8(body).ok(),
            pos: 0,
            line: 1,
            format,
            family: MetricType::Unknown,
            done: false,
            created: None,
        }
    }

    /// A plain OpenMetrics parser over the rest of a body, continuing a
    /// family of type `family` at line `line`: the `_created` read-ahead.
    pub(super) fn lookahead(
        rest: &'a [u8],
        rest_text: Option<&'a str>,
        family: MetricType,
        line: usize,
    ) -> Self {
        Parser {
            body: rest,
            text: rest_text,
            pos: 0,
            line,
            format: Format::OpenMetrics,
            family,
            done: false,
            created: None,
        }
    }

    /// OpenMetrics only: folds each counter, histogram and summary family's
    /// `_created` lines into [`Sample::start_timestamp_ms`] of the family's
    /// samples with the same labels, wherever it stands in the family, and
    /// does not yield them as samples. Costs allocation per family while on.
    pub fn with_created_timestamps(mut self) -> Self {
        if self.format == Format::OpenMetrics {
            self.created = Some(CreatedFolding::default());
        }
        self
    }

    /// The next entry; `None` at the end of the body or after an error.
    pub fn next_entry(&mut self) -> Option<Result<Entry<'a>, ParseError>> {
        let body = self.body;
        loop {
            if self.done {
                return None;
            }
            if self.pos >= body.len() {
                self.done = true;
                return match self.format {
                    Format::PromText => None,
                    Format::OpenMetrics => Some(Err(ParseError::new(
                        self.line.saturating_sub(1).max(1),
                        1,
                        ParseErrorKind::MissingEof,
                    ))),
                };
            }
            let start = self.pos;
            let end = memchr(b'\n', &body[start..]).map_or(body.len(), |n| start + n);
            let line = Line {
                bytes: &body[start..end],
                text: self.text.and_then(|t| t.get(start..end)),
            };
            let lineno = self.line;
            self.line += 1;
            self.pos = end + 1;
            let res = match (line.bytes.first(), self.format) {
                (Some(b'#'), Format::PromText) => self.prom_comment(line),
                (Some(b'#'), Format::OpenMetrics) => self.om_comment(line, end),
                (None, Format::PromText) => continue,
                (None, Format::OpenMetrics) => {
                    Err(unexpected("metric name or comment", line.bytes, 0).into())
                }
                (Some(_), _) => self.sample(line, lineno, start),
            };
            match res {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(LineError(e)) => {
                    let (col, kind) = *e;
                    self.done = true;
                    // Data after `# EOF` is reported where it starts.
                    let (l, c) = match kind {
                        ParseErrorKind::DataAfterEof => (lineno + 1, 1),
                        _ => (lineno, col + 1),
                    };
                    return Some(Err(ParseError::new(l, c, kind)));
                }
            }
        }
    }

    /// A `#` line of the text format: HELP, TYPE, or a comment (skipped).
    fn prom_comment(&mut self, l: Line<'a>) -> LineResult<'a> {
        let line = l.bytes;
        let i = skip_ws(line, 1);
        let keyword =
            |k: &[u8]| line[i..].starts_with(k) && matches!(line.get(i + 4), Some(b' ' | b'\t'));
        if keyword(b"HELP") {
            let (metric, j) = meta_name(l, skip_ws(line, i + 4), "metric name after HELP")?;
            let text = match line.get(j) {
                None => Cow::Borrowed(""),
                Some(b' ' | b'\t') => help_text(l, skip_ws(line, j), false),
                Some(_) => return Err(unexpected("blank after metric name", line, j).into()),
            };
            return Ok(Some(Entry::Help { metric, text }));
        }
        if keyword(b"TYPE") {
            let (metric, j) = meta_name(l, skip_ws(line, i + 4), "metric name after TYPE")?;
            if !matches!(line.get(j), Some(b' ' | b'\t')) {
                return Err(unexpected("blank and type after metric name", line, j).into());
            }
            let t = skip_ws(line, j);
            let mut e = line.len();
            while e > t && matches!(line[e - 1], b' ' | b'\t') {
                e -= 1;
            }
            return self.type_entry(metric, &line[t..e], t);
        }
        Ok(None)
    }

    /// A `#` line of OpenMetrics: exactly `# HELP`, `# TYPE`, `# UNIT` or
    /// `# EOF`; anything else is an error.
    fn om_comment(&mut self, l: Line<'a>, end: usize) -> LineResult<'a> {
        let line = l.bytes;
        if line == b"# EOF" {
            self.done = true;
            if end + 1 < self.body.len() {
                return Err((0, ParseErrorKind::DataAfterEof).into());
            }
            return Ok(None);
        }
        let what = if line.starts_with(b"# HELP ") {
            "HELP"
        } else if line.starts_with(b"# TYPE ") {
            "TYPE"
        } else if line.starts_with(b"# UNIT ") {
            "UNIT"
        } else {
            return Err(unexpected(
                "\"# HELP \", \"# TYPE \", \"# UNIT \" or \"# EOF\"",
                line,
                0,
            )
            .into());
        };
        let (metric, j) = meta_name(l, 7, "metric name")?;
        if line.get(j) != Some(&b' ') {
            return Err(unexpected("a space and text after the metric name", line, j).into());
        }
        let rest = &line[j + 1..];
        match what {
            "HELP" => Ok(Some(Entry::Help {
                metric,
                text: help_text(l, j + 1, true),
            })),
            "TYPE" => self.type_entry(metric, rest, j + 1),
            _ => {
                let unit = l.str(j + 1, line.len())?;
                let suffix_ok = unit.is_empty()
                    || metric
                        .strip_suffix(unit)
                        .is_some_and(|head| head.ends_with('_'));
                if !suffix_ok {
                    return Err((
                        j + 1,
                        ParseErrorKind::UnitNotSuffix {
                            unit: lossy(rest),
                            metric: metric.into_owned(),
                        },
                    )
                        .into());
                }
                Ok(Some(Entry::Unit { metric, unit }))
            }
        }
    }

    fn type_entry(&mut self, metric: Cow<'a, str>, word: &[u8], at: usize) -> LineResult<'a> {
        let kind = MetricType::parse(word, self.format)
            .ok_or_else(|| (at, ParseErrorKind::InvalidMetricType(lossy(word))))?;
        self.family = kind;
        if let Some(c) = &mut self.created {
            c.start_family(&metric, kind);
        }
        Ok(Some(Entry::Type { metric, kind }))
    }

    /// A sample line: `name{labels} value [timestamp] [# exemplar]`.
    fn sample(&mut self, l: Line<'a>, lineno: usize, line_start: usize) -> LineResult<'a> {
        let line = l.bytes;
        if u32::try_from(line.len()).is_err() {
            return Err((0, ParseErrorKind::LineTooLong).into());
        }
        let format = self.format;
        let lenient = format == Format::PromText;
        let mut name = None;
        let mut i = 0;
        if metric_start(line[0]) {
            i = scan_class(line, 1, METRIC_CONT);
            name = Some(Span {
                start: 0,
                end: i,
                escaped: false,
            });
        }
        let name_end = i;
        if lenient {
            i = skip_ws(line, i);
        }
        let mut labels_at = None;
        let mut series_end = name_end;
        if line.get(i) == Some(&b'{') {
            let scan = scan_label_set(line, i + 1, format, |_, _| {})?;
            labels_at = Some(i + 1);
            series_end = scan.end;
            match (name, scan.name) {
                (Some(_), Some(q)) => {
                    return Err((q.start, ParseErrorKind::DuplicateMetricName).into());
                }
                (None, Some(q)) => name = Some(q),
                (None, None) => return Err((0, ParseErrorKind::MissingMetricName).into()),
                (Some(_), None) => {}
            }
            i = scan.end;
            if lenient {
                i = skip_ws(line, i);
            }
        }
        let Some(name) = name else {
            return Err(unexpected("metric name", line, 0).into());
        };
        // One blank (OpenMetrics: exactly one space) before the value.
        if lenient {
            if (i == series_end && labels_at.is_none()) || i >= line.len() {
                return Err(unexpected("blank and value after metric", line, i).into());
            }
        } else {
            if line.get(i) != Some(&b' ') {
                return Err(unexpected("space and value after metric", line, i).into());
            }
            i += 1;
        }
        let series = l.str(0, series_end)?;

        let vend = token_end(line, i, format);
        let value = parse_float(&line[i..vend])
            .ok_or_else(|| (i, ParseErrorKind::InvalidValue(lossy(&line[i..vend]))))?;
        let timestamp = match format {
            Format::PromText => prom_timestamp(line, vend)?,
            Format::OpenMetrics => None,
        };
        let mut sample = Sample {
            series,
            exemplar_set: "",
            value,
            exemplar_value: 0.0,
            timestamp_ms: timestamp.unwrap_or(0),
            start_timestamp_ms: 0,
            exemplar_timestamp_ms: 0,
            // Offsets fit: the line length was checked against u32 above.
            name_start: name.start as u32,
            name_end: name.end as u32,
            labels_at: labels_at.unwrap_or(0) as u32,
            line: u32::try_from(lineno).unwrap_or(u32::MAX),
            flags: if name.escaped { NAME_ESCAPED } else { 0 }
                | if timestamp.is_some() {
                    HAS_TIMESTAMP
                } else {
                    0
                },
            format,
            family: self.family,
        };
        if format == Format::OpenMetrics {
            om_tail(l, vend, &mut sample)?;
        }
        if let Some(c) = &mut self.created {
            let rest = &self.body[line_start..];
            let rest_text = self.text.and_then(|t| t.get(line_start..));
            if !c.fold(&mut sample, rest, rest_text, lineno) {
                return Ok(None);
            }
        }
        Ok(Some(Entry::Sample(sample)))
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry()
    }
}

/// What parsing one line gives: an entry, nothing (a comment, a folded
/// `_created` line, `# EOF`), or an error at a byte offset of the line.
type LineResult<'a> = Result<Option<Entry<'a>>, LineError>;

/// A line's error, boxed: errors are rare, and a one-word error keeps the
/// line result the same size as the entry it usually carries, so the entry
/// moves to the caller without a copy through a wider enum.
struct LineError(Box<(usize, ParseErrorKind)>);

impl From<(usize, ParseErrorKind)> for LineError {
    #[cold]
    fn from(e: (usize, ParseErrorKind)) -> Self {
        LineError(Box::new(e))
    }
}

/// Text format: `[blanks timestamp] [blanks]` to the end of the line.
fn prom_timestamp(line: &[u8], i: usize) -> Result<Option<i64>, (usize, ParseErrorKind)> {
    let t = skip_ws(line, i);
    if t == line.len() {
        return Ok(None);
    }
    let tend = token_end(line, t, Format::PromText);
    let ts = parse_int_timestamp(&line[t..tend])
        .ok_or_else(|| (t, ParseErrorKind::InvalidTimestamp(lossy(&line[t..tend]))))?;
    let e = skip_ws(line, tend);
    if e != line.len() {
        return Err(unexpected("end of line after timestamp", line, e));
    }
    Ok(Some(ts))
}

/// OpenMetrics: `[ timestamp][ # {labels} value[ timestamp]]` after the
/// value ending at `vend`, recorded into `sample`.
fn om_tail<'a>(
    l: Line<'a>,
    vend: usize,
    sample: &mut Sample<'a>,
) -> Result<(), (usize, ParseErrorKind)> {
    let line = l.bytes;
    if vend == line.len() {
        return Ok(());
    }
    let mut i = vend + 1;
    if !line[i..].starts_with(b"# ") {
        let tend = token_end(line, i, Format::OpenMetrics);
        sample.timestamp_ms = om_timestamp(&line[i..tend], i)?;
        sample.flags |= HAS_TIMESTAMP;
        if tend == line.len() {
            return Ok(());
        }
        if !line[tend..].starts_with(b" # ") {
            return Err(unexpected(
                "end of line or exemplar after timestamp",
                line,
                tend,
            ));
        }
        i = tend + 1;
    }
    // `i` is at "# ".
    let set_start = i + 2;
    if line.get(set_start) != Some(&b'{') {
        return Err(unexpected("'{' starting exemplar labels", line, set_start));
    }
    let scan = scan_label_set(line, set_start + 1, Format::OpenMetrics, |_, _| {})?;
    if let Some(q) = scan.name {
        return Err(unexpected("exemplar label", line, q.start));
    }
    sample.exemplar_set = l.str(set_start, scan.end)?;
    if line.get(scan.end) != Some(&b' ') {
        return Err(unexpected("space and exemplar value", line, scan.end));
    }
    let v = scan.end + 1;
    let vend = token_end(line, v, Format::OpenMetrics);
    sample.exemplar_value = parse_float(&line[v..vend])
        .ok_or_else(|| (v, ParseErrorKind::InvalidValue(lossy(&line[v..vend]))))?;
    if vend < line.len() {
        let t = vend + 1;
        let tend = token_end(line, t, Format::OpenMetrics);
        sample.exemplar_timestamp_ms = om_timestamp(&line[t..tend], t)?;
        sample.flags |= HAS_EXEMPLAR_TIMESTAMP;
        if tend != line.len() {
            return Err(unexpected("end of line after exemplar", line, tend));
        }
    }
    Ok(())
}

/// OpenMetrics timestamp: finite float seconds, to milliseconds.
fn om_timestamp(b: &[u8], at: usize) -> Result<i64, (usize, ParseErrorKind)> {
    parse_float(b)
        .and_then(seconds_to_ms)
        .ok_or_else(|| (at, ParseErrorKind::InvalidTimestamp(lossy(b))))
}

/// The metric name of a HELP/TYPE/UNIT line at `i`: bare or quoted.
/// Returns the name and the offset just after it.
fn meta_name<'a>(
    l: Line<'a>,
    i: usize,
    expected: &'static str,
) -> Result<(Cow<'a, str>, usize), (usize, ParseErrorKind)> {
    let line = l.bytes;
    match line.get(i) {
        Some(b'"') => {
            let s = scan_quoted(line, i + 1)?;
            let raw = l.str(s.start, s.end)?;
            if raw.is_empty() {
                return Err(unexpected(expected, line, i));
            }
            Ok((unescape(raw, s.escaped, true), s.end + 1))
        }
        Some(&c) if metric_start(c) => {
            let end = scan_class(line, i + 1, METRIC_CONT);
            Ok((Cow::Borrowed(l.str(i, end)?), end))
        }
        _ => Err(unexpected(expected, line, i)),
    }
}

/// HELP text, unescaped. Invalid UTF-8 is replaced rather than refused:
/// Prometheus does not check HELP text either.
fn help_text(l: Line<'_>, from: usize, om: bool) -> Cow<'_, str> {
    match l.str(from, l.bytes.len()) {
        Ok(s) => unescape(s, true, om),
        Err(_) => {
            let s = String::from_utf8_lossy(&l.bytes[from..]);
            Cow::Owned(unescape(&s, true, om).into_owned())
        }
    }
}
