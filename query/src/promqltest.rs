//! The promqltest runner: executes scripts in the DSL of Prometheus's own
//! PromQL test suite (`load`, `clear`, `eval instant|range`, `eval_fail`,
//! `eval_ordered`, the `expect …` lines) against the real engine over a
//! [`MemStore`], and reports `N passed, M failed, K skipped`.
//!
//! An eval is *skipped*, never passed, when it needs what kiln does not
//! implement: native histograms (a `{{…}}` literal in its expected output,
//! or a selector that matches a series loaded as a histogram), start
//! timestamps (a selector that matches a series given `@st` lines), or
//! experimental syntax the parser refuses.
//!
//! Like Prometheus's runner, a passing instant eval is re-checked twice:
//! as a range query from `t-1m` to `t+1m` (its middle step must give the
//! expected result), and with `@ t` added to every selector and subquery
//! and evaluated at other times (the result must not change). Both are
//! skipped where Prometheus skips them.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_storage::{Labels, MatchOp, mem::MemStore, stale_nan};

use crate::ast::{Expr, ExprKind};
use crate::engine::{Engine, EngineOptions, QueryLimits, QueryResult, QueryValue};
use crate::lexer::parse_duration;
use crate::parser::parse;

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Evals whose result matched.
    pub passed: usize,
    /// Evals whose result did not match (or whose script is malformed).
    pub failed: usize,
    /// Evals that need native histograms or experimental syntax.
    pub skipped: usize,
}

/// What happened to one eval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The result matched.
    Passed,
    /// It did not; the text says how.
    Failed(String),
    /// Not run; the text says why.
    Skipped(String),
}

/// One eval's outcome, identified by its 1-based line in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Line of the `eval` command.
    pub line: usize,
    /// The command line itself.
    pub command: String,
    /// The verdict.
    pub status: Status,
}

/// Runs every file, printing one line per failure (with its diff) and the
/// totals; returns the totals.
pub fn run_files(
    paths: &[PathBuf],
    opts: &EngineOptions,
    out: &mut dyn Write,
) -> std::io::Result<Totals> {
    let mut totals = Totals::default();
    for p in paths {
        let text = std::fs::read_to_string(p)?;
        let outcomes = run_script(&text, opts);
        let mut t = Totals::default();
        for o in &outcomes {
            match &o.status {
                Status::Passed => t.passed += 1,
                Status::Skipped(_) => t.skipped += 1,
                Status::Failed(why) => {
                    t.failed += 1;
                    writeln!(
                        out,
                        "{}:{}: {}\n    {}",
                        p.display(),
                        o.line,
                        o.command,
                        why.replace('\n', "\n    ")
                    )?;
                }
            }
        }
        writeln!(
            out,
            "{}: {} passed, {} failed, {} skipped",
            p.display(),
            t.passed,
            t.failed,
            t.skipped
        )?;
        totals.passed += t.passed;
        totals.failed += t.failed;
        totals.skipped += t.skipped;
    }
    writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    )?;
    Ok(totals)
}

/// Runs one script and returns every eval's outcome.
pub fn run_script(text: &str, opts: &EngineOptions) -> Vec<Outcome> {
    let engine = Engine::new(opts.clone());
    let mut st = ScriptState {
        store: MemStore::new(),
        histograms: Vec::new(),
        start_timestamps: Vec::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let word = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if word == "clear" {
            // `clear` has no body: the next line is a command.
            st.store.clear();
            st.histograms.clear();
            st.start_timestamps.clear();
            continue;
        }
        let mut body = Vec::new();
        while i < lines.len() {
            let l = lines[i].trim();
            if l.is_empty() || l.starts_with('#') {
                break;
            }
            body.push((i + 1, l));
            i += 1;
        }
        if word.starts_with("load") {
            st.load(line, &body);
        } else if word.starts_with("eval") {
            let status = match Eval::parse(line, &body) {
                Ok(ev) => ev.run(&engine, &st),
                Err(e) => Status::Failed(format!("malformed eval: {e}")),
            };
            out.push(Outcome {
                line: start + 1,
                command: line.to_owned(),
                status,
            });
        }
    }
    out
}

struct ScriptState {
    store: MemStore,
    /// Series loaded as native histograms (not stored: kiln is float-only).
    histograms: Vec<Labels>,
    /// Series given start timestamps (`@st` lines), which kiln cannot store.
    start_timestamps: Vec<Labels>,
}

impl ScriptState {
    fn load(&mut self, line: &str, body: &[(usize, &str)]) {
        let mut parts = line.split_whitespace();
        let cmd = parts.next().unwrap_or("");
        let nhcb = cmd.eq_ignore_ascii_case("load_with_nhcb");
        let Some(step) = parts.next().and_then(|s| parse_time(s).ok()) else {
            return;
        };
        for (_, l) in body {
            let Some((metric, values)) = split_series(l) else {
                continue;
            };
            if let Some(m) = metric.strip_suffix("@st") {
                if let Ok(l) = parse_metric(m) {
                    self.start_timestamps.push(l);
                }
                continue;
            }
            let Ok(labels) = parse_metric(metric) else {
                continue;
            };
            if values.contains("{{") {
                self.histograms.push(labels);
                continue;
            }
            let Ok(vals) = expand_values(values) else {
                continue;
            };
            if nhcb
                && let Some(name) = labels.metric_name()
                && let Some(base) = name.strip_suffix("_bucket")
                && labels.contains("le")
            {
                let mut b = labels.builder();
                b.del("le");
                b.set("__name__", base);
                if let Ok(h) = b.build() {
                    self.histograms.push(h);
                }
            }
            for (k, v) in vals.iter().enumerate() {
                if let Some(v) = v {
                    self.store.insert(&labels, k as i64 * step, *v);
                }
            }
        }
    }

    /// Whether `expr` selects one of `series`.
    fn touches(expr: &Expr, series: &[Labels]) -> bool {
        let mut hit = false;
        expr.walk(&mut |e| {
            let sel = match &e.kind {
                ExprKind::Vector(s) | ExprKind::Matrix { sel: s, .. } => s,
                _ => return,
            };
            if series.iter().any(|h| {
                sel.matchers
                    .iter()
                    .all(|m| m.matches(h.get(m.name()).unwrap_or("")))
            }) {
                hit = true;
            }
        });
        hit
    }
}

/// Splits `metric{…} values` at the first blank outside braces and quotes.
fn split_series(l: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in l.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => depth += 1,
            '}' => depth -= 1,
            c if c.is_whitespace() && depth == 0 => {
                return Some((&l[..i], l[i..].trim()));
            }
            _ => {}
        }
    }
    Some((l, ""))
}

/// The labels of a series description's metric part.
fn parse_metric(metric: &str) -> Result<Labels, String> {
    if metric.replace(' ', "") == "{}" {
        return Ok(Labels::empty());
    }
    let e = parse(metric).map_err(|e| e.to_string())?;
    let ExprKind::Vector(sel) = e.kind else {
        return Err(format!("not a series description: {metric}"));
    };
    let mut pairs = Vec::new();
    for m in &sel.matchers {
        if m.op() != MatchOp::Equal {
            return Err(format!("only = matchers allowed in {metric}"));
        }
        pairs.push((m.name().to_owned(), m.value().to_owned()));
    }
    Labels::from_pairs(pairs).map_err(|e| e.to_string())
}

fn parse_float(s: &str) -> Result<f64, String> {
    let (sign, body) = match s.strip_prefix('-') {
        Some(b) => (-1.0, b),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if body.starts_with(|c: char| c.is_ascii_digit() || c == '.') => body
            .parse::<f64>()
            .map_err(|_| format!("bad number {s:?}"))?,
        _ => return Err(format!("bad number {s:?}")),
    };
    Ok(sign * v)
}

/// Expands a value sequence (`1 2 _ 3+1x4 stale _x2`); `None` is a gap.
fn expand_values(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for item in values.split_whitespace() {
        if item == "_" {
            out.push(None);
            continue;
        }
        if item.eq_ignore_ascii_case("stale") {
            out.push(Some(stale_nan()));
            continue;
        }
        let Some(xpos) = item.rfind('x') else {
            out.push(Some(parse_float(item)?));
            continue;
        };
        let (base, count) = (&item[..xpos], &item[xpos + 1..]);
        let n: usize = count
            .parse()
            .map_err(|_| format!("bad repetition count in {item:?}"))?;
        if base == "_" {
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        // Split `a+b` / `a-b` at a sign that is neither leading nor part of
        // an exponent.
        let bytes = base.as_bytes();
        let split = (1..bytes.len())
            .rev()
            .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
        let (a, delta) = match split {
            Some(i) => {
                let d = parse_float(&base[i + 1..])?;
                (
                    parse_float(&base[..i])?,
                    if bytes[i] == b'-' { -d } else { d },
                )
            }
            None => (parse_float(base)?, 0.0),
        };
        let mut v = a;
        for _ in 0..=n {
            out.push(Some(v));
            v += delta;
        }
    }
    Ok(out)
}

/// A time or duration in a command: Prometheus duration syntax, or `0`.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Some(rest) = s.strip_prefix('-') {
        return parse_time(rest).map(|v| -v);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| format!("bad time {s:?}"))?;
        return Ok(secs * 1000);
    }
    parse_duration(s)
}

enum Mode {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Default)]
struct Expectations {
    fail: Option<Option<(bool, String)>>,
    warn: Vec<Option<(bool, String)>>,
    info: Vec<Option<(bool, String)>>,
    no_warn: bool,
    no_info: bool,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    scalar: Option<f64>,
    series: Vec<(Labels, Vec<Option<f64>>)>,
    histogram_output: bool,
}

struct Eval {
    mode: Mode,
    expr: String,
    exp: Expectations,
}

/// Parses `msg: text` / `regex: re` after an expect keyword.
fn parse_matcher(rest: &str) -> Option<(bool, String)> {
    let rest = rest.trim();
    if let Some(m) = rest.strip_prefix("msg:") {
        return Some((false, m.trim().to_owned()));
    }
    if let Some(r) = rest.strip_prefix("regex:") {
        return Some((true, r.trim().to_owned()));
    }
    None
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('`') && s.ends_with('`') {
        return s[1..s.len() - 1].to_owned();
    }
    match parse(s) {
        Ok(Expr {
            kind: ExprKind::String(v),
            ..
        }) => v,
        _ => s.to_owned(),
    }
}

impl Eval {
    fn parse(line: &str, body: &[(usize, &str)]) -> Result<Eval, String> {
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let cmd = cmd.to_ascii_lowercase();
        let mut exp = Expectations::default();
        match cmd.as_str() {
            "eval" => {}
            "eval_fail" => exp.fail = Some(None),
            "eval_warn" => exp.warn.push(None),
            "eval_info" => exp.info.push(None),
            "eval_ordered" => exp.ordered = true,
            other => return Err(format!("unknown command {other}")),
        }
        let rest = rest.trim_start();
        let (mode, expr) = if let Some(r) = rest.strip_prefix("instant") {
            let r = r
                .trim_start()
                .strip_prefix("at")
                .ok_or("expected 'at'")?
                .trim_start();
            let (t, e) = r
                .split_once(char::is_whitespace)
                .ok_or("missing expression")?;
            (Mode::Instant(parse_time(t)?), e.trim())
        } else if let Some(r) = rest.strip_prefix("range") {
            let mut rest = r;
            let mut words = Vec::new();
            for _ in 0..6 {
                let t = rest.trim_start();
                let (w, tail) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
                words.push(w);
                rest = tail;
            }
            if words[0] != "from" || words[2] != "to" || words[4] != "step" {
                return Err("expected 'range from <t> to <t> step <d> <expr>'".into());
            }
            let start = parse_time(words[1])?;
            let end = parse_time(words[3])?;
            let step = parse_time(words[5])?;
            if end < start {
                return Err("end before start".into());
            }
            (Mode::Range { start, end, step }, rest.trim())
        } else {
            return Err("expected 'instant' or 'range'".into());
        };
        for (_, l) in body {
            if let Some(r) = l.strip_prefix("expected_fail_message") {
                exp.fail = Some(Some((false, r.trim().to_owned())));
            } else if let Some(r) = l.strip_prefix("expected_fail_regexp") {
                exp.fail = Some(Some((true, r.trim().to_owned())));
            } else if let Some(r) = l.strip_prefix("expect range vector") {
                let w: Vec<&str> = r.split_whitespace().collect();
                if w.len() != 6 {
                    return Err(format!("bad range vector expectation {l:?}"));
                }
                exp.range_vector = Some((parse_time(w[1])?, parse_time(w[3])?, parse_time(w[5])?));
            } else if let Some(r) = l.strip_prefix("expect string") {
                exp.string = Some(unquote(r));
            } else if let Some(r) = l.strip_prefix("expect ") {
                let r = r.trim();
                let (kind, tail) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
                match kind {
                    "fail" => exp.fail = Some(parse_matcher(tail)),
                    "warn" => exp.warn.push(parse_matcher(tail)),
                    "info" => exp.info.push(parse_matcher(tail)),
                    "no_warn" => exp.no_warn = true,
                    "no_info" => exp.no_info = true,
                    "ordered" => exp.ordered = true,
                    other => return Err(format!("unknown expectation {other:?}")),
                }
            } else if l.contains("{{") {
                exp.histogram_output = true;
            } else if let Ok(v) = parse_scalar_line(l) {
                exp.scalar = Some(v);
            } else {
                let (metric, values) = split_series(l).ok_or("bad series line")?;
                let labels = parse_metric(metric)?;
                exp.series.push((labels, expand_values(values)?));
            }
        }
        Ok(Eval {
            mode,
            expr: expr.to_owned(),
            exp,
        })
    }

    fn run(&self, engine: &Engine, st: &ScriptState) -> Status {
        if self.exp.histogram_output {
            return Status::Skipped("native histograms in the expected result".into());
        }
        let parsed = match parse(&self.expr) {
            Ok(e) => e,
            Err(e) if e.msg.contains("experimental") => {
                return Status::Skipped(format!("experimental syntax: {}", e.msg));
            }
            Err(e) => return Status::Failed(format!("parse error: {e}")),
        };
        if ScriptState::touches(&parsed, &st.histograms) {
            return Status::Skipped("selects native histograms".into());
        }
        if ScriptState::touches(&parsed, &st.start_timestamps) {
            return Status::Skipped("selects series with start timestamps".into());
        }
        let limits = QueryLimits::default();
        let res = match self.mode {
            Mode::Instant(t) => engine.instant_query(&st.store, &self.expr, t, &limits),
            Mode::Range { start, end, step } => {
                engine.range_query(&st.store, &self.expr, start, end, step, &limits)
            }
        };
        let status = match (&self.exp.fail, res) {
            (Some(m), Err(e)) => match m {
                None => Status::Passed,
                Some((false, msg)) if e.to_string() == *msg => Status::Passed,
                Some((true, re))
                    if regex::Regex::new(re).is_ok_and(|r| r.is_match(&e.to_string())) =>
                {
                    Status::Passed
                }
                Some((_, want)) => Status::Failed(format!("error {e:?} does not match {want:?}")),
            },
            (Some(_), Ok(r)) => Status::Failed(format!("expected an error, got {:?}", r.value)),
            (None, Err(e)) => Status::Failed(format!("unexpected error: {e}")),
            (None, Ok(r)) => match self
                .check_annotations(&r)
                .and_then(|_| self.check_value(&r))
            {
                Ok(()) => Status::Passed,
                Err(why) => Status::Failed(why),
            },
        };
        match (status, &self.mode) {
            (Status::Passed, Mode::Instant(t)) => match self
                .range_cross_check(engine, st, &parsed, *t)
                .and_then(|_| self.at_invariance_check(engine, st, &parsed, *t))
            {
                Ok(()) => Status::Passed,
                Err(why) => Status::Failed(why),
            },
            (s, _) => s,
        }
    }

    /// Runs the instant eval as a range query around `t` and checks the
    /// middle step.
    fn range_cross_check(
        &self,
        engine: &Engine,
        st: &ScriptState,
        expr: &Expr,
        t: i64,
    ) -> Result<(), String> {
        if self.exp.ordered || self.exp.string.is_some() || self.exp.range_vector.is_some() {
            return Ok(());
        }
        if calls_any(expr, &["start", "end", "range", "step"])
            || !matches!(
                expr.value_type(),
                crate::ast::ValueType::Scalar | crate::ast::ValueType::InstantVector
            )
        {
            return Ok(());
        }
        let res = engine.range_query(
            &st.store,
            &self.expr,
            t - 60_000,
            t + 60_000,
            60_000,
            &QueryLimits::default(),
        );
        let r = match (res, self.exp.fail.is_some()) {
            (Err(_), true) => return Ok(()),
            (Ok(_), true) => return Err("range-mode cross-check: expected an error".into()),
            (Err(e), false) => return Err(format!("range-mode cross-check: error {e}")),
            (Ok(r), false) => r,
        };
        let QueryValue::Matrix(m) = r.value else {
            return Err("range-mode cross-check: not a matrix".into());
        };
        let got: Vec<(Labels, f64)> = m
            .iter()
            .filter_map(|s| {
                s.samples
                    .iter()
                    .find(|p| p.0 == t)
                    .map(|p| (s.labels.clone(), p.1))
            })
            .collect();
        let res = if let Some(w) = self.exp.scalar {
            match got.as_slice() {
                [(_, v)] if almost_equal(*v, w) => Ok(()),
                other => Err(format!("got {other:?}, want scalar {w}")),
            }
        } else {
            compare_instant(&got, &self.exp.series, false)
        };
        res.map_err(|e| format!("range-mode cross-check: {e}"))
    }

    /// Pins every selector and subquery with `@ t` and evaluates at other
    /// times: the result must stay the expected one.
    fn at_invariance_check(
        &self,
        engine: &Engine,
        st: &ScriptState,
        expr: &Expr,
        t: i64,
    ) -> Result<(), String> {
        const TIME_DEPENDENT: &[&str] = &[
            "days_in_month",
            "day_of_month",
            "day_of_week",
            "day_of_year",
            "end",
            "hour",
            "minute",
            "month",
            "year",
            "predict_linear",
            "range",
            "start",
            "step",
            "time",
            "timestamp",
        ];
        if self.exp.fail.is_some()
            || self.exp.string.is_some()
            || self.exp.range_vector.is_some()
            || calls_any(expr, TIME_DEPENDENT)
        {
            return Ok(());
        }
        let mut pinned = expr.clone();
        pin_at(&mut pinned, t);
        let times = if t == 0 {
            vec![-1000, 0, 1000]
        } else {
            vec![-10 * t, 0, t / 5, t, 10 * t]
        };
        for at in times {
            let r = engine
                .instant_query_parsed(&st.store, &self.expr, &pinned, at, &QueryLimits::default())
                .map_err(|e| format!("@ step-invariance at {at}ms: error {e}"))?;
            let res = match &r.value {
                QueryValue::Scalar { v, .. } => match self.exp.scalar {
                    Some(w) if almost_equal(*v, w) => Ok(()),
                    w => Err(format!("got scalar {v}, want {w:?}")),
                },
                QueryValue::Vector(vec) => {
                    let got: Vec<(Labels, f64)> =
                        vec.iter().map(|s| (s.labels.clone(), s.v)).collect();
                    compare_instant(&got, &self.exp.series, self.exp.ordered)
                }
                _ => Ok(()),
            };
            res.map_err(|e| format!("@ step-invariance at {at}ms: {e}"))?;
        }
        Ok(())
    }

    fn check_annotations(&self, r: &QueryResult) -> Result<(), String> {
        check_kind("warning", &self.exp.warn, self.exp.no_warn, &r.warnings)?;
        check_kind("info", &self.exp.info, self.exp.no_info, &r.infos)
    }

    fn check_value(&self, r: &QueryResult) -> Result<(), String> {
        let exp = &self.exp;
        match (&self.mode, &r.value) {
            (_, QueryValue::String { s, .. }) => match &exp.string {
                Some(w) if w == s => Ok(()),
                w => Err(format!("got string {s:?}, expected {w:?}")),
            },
            (Mode::Instant(_), QueryValue::Scalar { v, .. }) => match exp.scalar {
                Some(w) if almost_equal(w, *v) => Ok(()),
                w => Err(format!("got scalar {v}, expected {w:?}")),
            },
            (Mode::Instant(_), QueryValue::Vector(vec)) => {
                if exp.scalar.is_some() || exp.string.is_some() || exp.range_vector.is_some() {
                    return Err(format!("got an instant vector {vec:?}"));
                }
                let got: Vec<(Labels, f64)> = vec.iter().map(|s| (s.labels.clone(), s.v)).collect();
                compare_instant(&got, &exp.series, exp.ordered)
            }
            (Mode::Instant(_), QueryValue::Matrix(m)) => {
                let Some((from, _to, step)) = exp.range_vector else {
                    return Err("got a range vector; no 'expect range vector' line".into());
                };
                let want: Vec<(Labels, Vec<(i64, f64)>)> = exp
                    .series
                    .iter()
                    .map(|(l, vals)| {
                        let pts = vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| (from + i as i64 * step, v)))
                            .collect();
                        (l.clone(), pts)
                    })
                    .collect();
                compare_matrix(m, &want)
            }
            (Mode::Range { start, step, .. }, QueryValue::Matrix(m)) => {
                let want: Vec<(Labels, Vec<(i64, f64)>)> = exp
                    .series
                    .iter()
                    .map(|(l, vals)| {
                        let pts = vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v)))
                            .collect();
                        (l.clone(), pts)
                    })
                    .collect();
                if m.windows(2).any(|w| w[0].labels >= w[1].labels) {
                    return Err("range result is not sorted by labels".into());
                }
                compare_matrix(m, &want)
            }
            (_, v) => Err(format!("unexpected result type {v:?}")),
        }
    }
}

/// Whether `expr` calls one of `names`, or (when `names` has `step` or
/// `range`) has a duration expression using the query's step or range.
fn calls_any(expr: &Expr, names: &[&str]) -> bool {
    use crate::ast::Duration;
    let query_params = names.iter().any(|n| *n == "step" || *n == "range");
    let is_expr = |d: &Duration| matches!(d, Duration::Expr(_));
    let mut hit = false;
    expr.walk(&mut |e| match &e.kind {
        ExprKind::Call { func, .. } if names.contains(func) => hit = true,
        ExprKind::Vector(sel) if query_params && is_expr(&sel.offset) => hit = true,
        ExprKind::Matrix { sel, range, .. }
            if query_params && (is_expr(&sel.offset) || is_expr(range)) =>
        {
            hit = true
        }
        ExprKind::Subquery {
            range,
            step,
            offset,
            ..
        } if query_params
            && (is_expr(range) || is_expr(offset) || step.as_ref().is_some_and(is_expr)) =>
        {
            hit = true
        }
        _ => {}
    });
    hit
}

/// Adds `@ t` to every selector and subquery that has none, leaving alone
/// what is inside a subquery (its steps depend on the subquery's `@`).
fn pin_at(e: &mut Expr, t: i64) {
    use crate::ast::AtModifier;
    match &mut e.kind {
        ExprKind::Vector(sel) | ExprKind::Matrix { sel, .. } => {
            sel.at.get_or_insert(AtModifier::Timestamp(t));
        }
        ExprKind::Subquery { at, .. } => {
            at.get_or_insert(AtModifier::Timestamp(t));
        }
        ExprKind::Call { args, .. } => args.iter_mut().for_each(|a| pin_at(a, t)),
        ExprKind::Aggregate { expr, param, .. } => {
            pin_at(expr, t);
            if let Some(p) = param {
                pin_at(p, t);
            }
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            pin_at(lhs, t);
            pin_at(rhs, t);
        }
        ExprKind::Neg(x) | ExprKind::Paren(x) => pin_at(x, t),
        ExprKind::Number(_) | ExprKind::String(_) => {}
    }
}

fn parse_scalar_line(l: &str) -> Result<f64, String> {
    let l = l.trim();
    if l.contains(char::is_whitespace) || l.contains('{') {
        return Err("not a scalar".into());
    }
    let lower = l.to_ascii_lowercase();
    let (neg, body) = match lower.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if let Some(h) = body.strip_prefix("0x") {
        return i64::from_str_radix(h, 16)
            .map(|v| sign * v as f64)
            .map_err(|e| e.to_string());
    }
    parse_float(l)
}

fn check_kind(
    kind: &str,
    want: &[Option<(bool, String)>],
    none: bool,
    got: &[String],
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {kind} annotations, got {got:?}"));
    }
    if want.is_empty() {
        return Ok(());
    }
    if got.is_empty() {
        return Err(format!("expected {kind} annotations, got none"));
    }
    let matches = |m: &(bool, String), a: &str| -> bool {
        if m.0 {
            regex::Regex::new(&m.1).is_ok_and(|r| r.is_match(a))
        } else {
            m.1 == a
        }
    };
    let specific: Vec<&(bool, String)> = want.iter().flatten().collect();
    if specific.is_empty() {
        return Ok(());
    }
    for a in got {
        if !specific.iter().any(|m| matches(m, a)) {
            return Err(format!(
                "unexpected {kind} annotation {a:?}, expected {specific:?}"
            ));
        }
    }
    for m in &specific {
        if !got.iter().any(|a| matches(m, a)) {
            return Err(format!("expected {kind} annotation {:?}, got {got:?}", m.1));
        }
    }
    Ok(())
}

/// Prometheus's `almost.Equal` with epsilon 1e-6; the staleness NaN only
/// equals itself.
fn almost_equal(a: f64, b: f64) -> bool {
    let stale = |v: f64| kiln_storage::is_stale_nan(v);
    if stale(a) || stale(b) {
        return stale(a) && stale(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < 1e-6 * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

fn compare_instant(
    got: &[(Labels, f64)],
    want: &[(Labels, Vec<Option<f64>>)],
    ordered: bool,
) -> Result<(), String> {
    let mut errs = Vec::new();
    for (i, (l, vals)) in want.iter().enumerate() {
        let [Some(wv)] = vals.as_slice() else {
            return Err(format!("expected exactly one value for {l}"));
        };
        match got.iter().position(|(gl, _)| gl == l) {
            None => errs.push(format!("missing {l} {wv}")),
            Some(p) => {
                if !almost_equal(got[p].1, *wv) {
                    errs.push(format!("{l}: got {}, want {wv}", got[p].1));
                }
                if ordered && p != i {
                    errs.push(format!("{l}: at position {p}, expected {i}"));
                }
            }
        }
    }
    for (l, v) in got {
        if !want.iter().any(|(wl, _)| wl == l) {
            errs.push(format!("unexpected {l} {v}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

fn compare_matrix(
    got: &[crate::engine::RangeSeries],
    want: &[(Labels, Vec<(i64, f64)>)],
) -> Result<(), String> {
    let mut errs = Vec::new();
    for (l, pts) in want {
        match got.iter().find(|s| &s.labels == l) {
            None if pts.is_empty() => {}
            None => errs.push(format!("missing {l} {pts:?}")),
            Some(s) => {
                let same = s.samples.len() == pts.len()
                    && s.samples
                        .iter()
                        .zip(pts)
                        .all(|(a, b)| a.0 == b.0 && almost_equal(a.1, b.1));
                if !same {
                    errs.push(format!("{l}: got {:?}, want {pts:?}", s.samples));
                }
            }
        }
    }
    for s in got {
        if !want.iter().any(|(wl, _)| *wl == s.labels) {
            errs.push(format!("unexpected {} {:?}", s.labels, s.samples));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

/// The `.test` scripts in a directory, sorted by name.
pub fn scripts_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation_from_prometheus_cases() {
        let text = include_str!("../../testdata/promql-parse/notation/series_desc_cases.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        for c in cases {
            let input = c["input"].as_str().unwrap();
            let parsed = split_series(input)
                .ok_or_else(|| "no split".to_string())
                .and_then(|(m, v)| Ok((parse_metric(m)?, expand_values(v)?)));
            if c["expect"] == "error" {
                assert!(parsed.is_err(), "{input} should fail");
                continue;
            }
            let (labels, vals) = parsed.unwrap_or_else(|e| panic!("{input}: {e}"));
            let want_labels: Vec<(String, String)> = c["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            assert_eq!(labels, Labels::from_pairs(want_labels).unwrap(), "{input}");
            let want: Vec<Option<f64>> = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64())
                .collect();
            assert_eq!(vals.len(), want.len(), "{input}");
            for (g, w) in vals.iter().zip(&want) {
                match (g, w) {
                    (None, None) => {}
                    (Some(g), Some(w)) => assert!(almost_equal(*g, *w), "{input}: {g} vs {w}"),
                    _ => panic!("{input}: {vals:?} vs {want:?}"),
                }
            }
        }
    }
}
