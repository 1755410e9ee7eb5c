//! Renders a syntax tree back to PromQL text, as Prometheus does.
//!
//! Two renderings:
//! * [`Expr`]'s `Display`: the whole expression on one line, the text
//!   Prometheus's `String()` gives (used in errors and by `pretty`);
//! * [`Expr::pretty`]: the `/api/v1/format_query` rendering. A node whose
//!   one-line text is at most [`MAX_LINE`] bytes stays on one line; a longer
//!   one is broken up, each nesting level indented by two spaces:
//!   aggregations and calls put every argument on its own line between
//!   `op(` and `)`, parentheses put their content on its own line, binary
//!   operations put the operator (with `bool`, `on`/`ignoring` and
//!   `group_*`) on a line of its own between the indented operands, a
//!   subquery breaks up its inner expression and keeps its `[range:step]`
//!   suffix, and a unary minus goes right before its broken-up operand.
//!
//! What each node prints, as Prometheus 2.42 prints it (checked byte for
//! byte against it by `engine/tests/format_query.rs`):
//! * numbers as Go's `%v` (`1e+06`, `1e-05`, `+Inf`, `NaN`), strings and
//!   label values double-quoted with Go's escapes;
//! * selectors with the metric name outside the braces and the other
//!   matchers sorted by their text; `@` (three decimals) before `offset`;
//!   durations as Prometheus writes them (`1m30s`, `1w`, `1y`);
//! * `sum by (a, b) (x)`, `sum without () (x)`, `sum(x)` for an empty `by`;
//! * `a / on (x) group_left (y) b`, `a > bool 1`.
//!
//! Where kiln deliberately differs (see docs/compatibility.md): unary plus
//! is not kept by the parser, so `+a` prints as `a`; `ignoring ()` with
//! `group_left`/`group_right` keeps its modifiers (Prometheus 2.42 drops
//! them, which changes the query's meaning). Syntax 2.42 does not have is
//! printed so that kiln parses it back to the same tree: quoted UTF-8 names
//! (`{"my.metric"}`, `sum by ("a.b")`), duration expressions
//! (`[step() * 2]`, `offset (1h + step())`), `anchored`/`smoothed` and
//! `fill(…)` modifiers.

use std::fmt::{self, Write};

use kiln_storage::labels::{is_legacy_label_name, is_legacy_metric_name};
use kiln_storage::{MatchOp, Matcher, format_value};

use crate::ast::*;

/// Longest one-line rendering `pretty` keeps on one line (bytes).
pub const MAX_LINE: usize = 100;

const INDENT: &str = "  ";

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Number(v) => f.write_str(&format_value(*v)),
            ExprKind::String(s) => f.write_str(&go_quote(s)),
            ExprKind::Vector(sel) => {
                write_selector(f, sel)?;
                if sel.smoothed {
                    f.write_str(" smoothed")?;
                }
                write_at_offset(f, &sel.at, &sel.offset)
            }
            ExprKind::Matrix {
                sel,
                range,
                boundary,
            } => {
                write_selector(f, sel)?;
                write!(f, "[{}]", bracket_duration(range))?;
                match boundary {
                    Boundary::Plain => {}
                    Boundary::Anchored => f.write_str(" anchored")?,
                    Boundary::Smoothed => f.write_str(" smoothed")?,
                }
                write_at_offset(f, &sel.at, &sel.offset)
            }
            ExprKind::Subquery { expr, .. } => {
                write!(f, "{expr}")?;
                write_subquery_suffix(f, &self.kind)
            }
            ExprKind::Call { func, args } => {
                write!(f, "{func}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            ExprKind::Aggregate { expr, param, .. } => {
                f.write_str(&aggregate_head(&self.kind))?;
                f.write_str("(")?;
                if let Some(p) = param {
                    write!(f, "{p}, ")?;
                }
                write!(f, "{expr})")
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                write!(f, "{lhs} {} {rhs}", binary_operator(&self.kind))
            }
            ExprKind::Neg(e) => write!(f, "-{e}"),
            ExprKind::Paren(e) => write!(f, "({e})"),
        }
    }
}

impl Expr {
    /// The `/api/v1/format_query` rendering (see the module documentation).
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        pretty(self, 0, &mut out);
        out
    }
}

/// Counts the bytes written and fails once they exceed [`MAX_LINE`], so
/// that deciding whether a node fits costs at most a line's worth of
/// rendering however large the node is.
struct LineBudget(usize);

impl Write for LineBudget {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        if self.0 > MAX_LINE {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Whether `e` fits on one line.
fn fits(e: &Expr) -> bool {
    write!(LineBudget(0), "{e}").is_ok()
}

/// Appends `e` rendered at nesting `level` (indented unless noted).
fn pretty(e: &Expr, level: usize, out: &mut String) {
    let fits = fits(e);
    match &e.kind {
        // Prometheus does not indent a subquery that fits on its line.
        ExprKind::Subquery { expr, .. } => {
            if fits {
                let _ = write!(out, "{e}");
            } else {
                pretty(expr, level, out);
                let _ = write_subquery_suffix(out, &e.kind);
            }
        }
        ExprKind::Neg(inner) => {
            indent(out, level);
            out.push('-');
            let mut child = String::new();
            pretty(inner, level, &mut child);
            out.push_str(child.trim());
        }
        _ if fits => {
            indent(out, level);
            let _ = write!(out, "{e}");
        }
        ExprKind::Aggregate { expr, param, .. } => {
            indent(out, level);
            out.push_str(&aggregate_head(&e.kind));
            out.push_str("(\n");
            if let Some(p) = param {
                pretty(p, level + 1, out);
                out.push_str(",\n");
            }
            pretty(expr, level + 1, out);
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        ExprKind::Call { func, args } => {
            indent(out, level);
            out.push_str(func);
            out.push_str("(\n");
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pretty(a, level + 1, out);
            }
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        ExprKind::Paren(inner) => {
            indent(out, level);
            out.push_str("(\n");
            pretty(inner, level + 1, out);
            out.push('\n');
            indent(out, level);
            out.push(')');
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            pretty(lhs, level + 1, out);
            out.push('\n');
            indent(out, level);
            out.push_str(&binary_operator(&e.kind));
            out.push('\n');
            pretty(rhs, level + 1, out);
        }
        // Leaves are never broken up.
        ExprKind::Number(_)
        | ExprKind::String(_)
        | ExprKind::Vector(_)
        | ExprKind::Matrix { .. } => {
            indent(out, level);
            let _ = write!(out, "{e}");
        }
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str(INDENT);
    }
}

/// `name{matchers}` without modifiers.
fn write_selector(f: &mut impl Write, sel: &VectorSelector) -> fmt::Result {
    let name = sel.name.as_deref();
    let rest: Vec<&Matcher> = sel
        .matchers
        .iter()
        .filter(|m| {
            !(Some(m.value()) == name && m.name() == "__name__" && m.op() == MatchOp::Equal)
        })
        .collect();
    // `bar{__name__="baz"}` would not parse; `{"bar",__name__="baz"}` does.
    let other_name = rest.iter().any(|m| m.name() == "__name__");
    let mut parts: Vec<String> = rest.into_iter().map(matcher_text).collect();
    parts.sort_unstable();
    match name {
        Some(n) if bare_metric_name(n) && !other_name => {
            f.write_str(n)?;
            if !parts.is_empty() {
                write!(f, "{{{}}}", parts.join(","))?;
            }
            Ok(())
        }
        Some(n) => {
            parts.insert(0, go_quote(n));
            write!(f, "{{{}}}", parts.join(","))
        }
        None => write!(f, "{{{}}}", parts.join(",")),
    }
}

/// Whether a metric name can be written bare: a legacy name the lexer
/// does not read as a number.
fn bare_metric_name(n: &str) -> bool {
    is_legacy_metric_name(n) && !n.eq_ignore_ascii_case("inf") && !n.eq_ignore_ascii_case("nan")
}

fn matcher_text(m: &Matcher) -> String {
    format!(
        "{}{}{}",
        label_name(m.name()),
        m.op().as_str(),
        go_quote(m.value())
    )
}

/// A label name, quoted when it is not a legacy name.
fn label_name(n: &str) -> String {
    if is_legacy_label_name(n) {
        n.to_owned()
    } else {
        go_quote(n)
    }
}

fn label_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| label_name(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_at_offset(f: &mut impl Write, at: &Option<AtModifier>, offset: &Duration) -> fmt::Result {
    match at {
        None => {}
        Some(AtModifier::Start) => f.write_str(" @ start()")?,
        Some(AtModifier::End) => f.write_str(" @ end()")?,
        Some(AtModifier::Timestamp(ms)) => write!(f, " @ {:.3}", *ms as f64 / 1000.0)?,
    }
    match offset {
        Duration::Const(0) => Ok(()),
        Duration::Const(ms) if *ms < 0 => write!(f, " offset -{}", duration_text(-ms)),
        Duration::Const(ms) => write!(f, " offset {}", duration_text(*ms)),
        Duration::Expr(e) => write!(f, " offset {}", dur_term(e)),
    }
}

/// `[range:step]` and the modifiers of a subquery node.
fn write_subquery_suffix(f: &mut impl Write, kind: &ExprKind) -> fmt::Result {
    if let ExprKind::Subquery {
        range,
        step,
        offset,
        at,
        ..
    } = kind
    {
        let step = step.as_ref().map(bracket_duration).unwrap_or_default();
        write!(f, "[{}:{step}]", bracket_duration(range))?;
        write_at_offset(f, at, offset)?;
    }
    Ok(())
}

/// `sum`, `sum by (a, b) `, `sum without () `: everything before `(`.
fn aggregate_head(kind: &ExprKind) -> String {
    let ExprKind::Aggregate {
        op,
        grouping,
        without,
        ..
    } = kind
    else {
        return String::new();
    };
    let mut s = op.as_str().to_owned();
    if *without {
        let _ = write!(s, " without ({}) ", label_list(grouping));
    } else if !grouping.is_empty() {
        let _ = write!(s, " by ({}) ", label_list(grouping));
    }
    s
}

/// The operator with its modifiers: `/ on (a) group_left (b)`, `> bool`.
fn binary_operator(kind: &ExprKind) -> String {
    let ExprKind::Binary {
        op,
        return_bool,
        matching,
        ..
    } = kind
    else {
        return String::new();
    };
    let mut s = op.as_str().to_owned();
    if *return_bool {
        s.push_str(" bool");
    }
    let Some(m) = matching else {
        return s;
    };
    let grouped = matches!(m.card, Card::ManyToOne | Card::OneToMany);
    if m.on || !m.labels.is_empty() || grouped {
        let kw = if m.on { "on" } else { "ignoring" };
        let _ = write!(s, " {kw} ({})", label_list(&m.labels));
        if grouped {
            let side = if m.card == Card::ManyToOne {
                "left"
            } else {
                "right"
            };
            let _ = write!(s, " group_{side} ({})", label_list(&m.include));
        }
    }
    match (m.fill_left, m.fill_right) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            let _ = write!(s, " fill ({})", format_value(l));
        }
        (l, r) => {
            if let Some(l) = l {
                let _ = write!(s, " fill_left ({})", format_value(l));
            }
            if let Some(r) = r {
                let _ = write!(s, " fill_right ({})", format_value(r));
            }
        }
    }
    s
}

/// A range or subquery step inside brackets.
fn bracket_duration(d: &Duration) -> String {
    match d {
        Duration::Const(ms) if *ms > 0 => duration_text(*ms),
        // Only an expression can yield a range of zero or less; written as
        // a literal it would be rejected, so write an expression.
        Duration::Const(ms) => format!("0s - {}", duration_text(ms.saturating_neg())),
        Duration::Expr(e) => dur_expr(e),
    }
}

/// A duration in milliseconds as Prometheus writes it: `1y`, `1w` only
/// when exact, then `d h m s ms` (`1d1h`, `1m30s`, `1s500ms`, `0s`).
pub fn duration_text(ms: i64) -> String {
    if ms <= 0 {
        return "0s".into();
    }
    let mut left = ms;
    let mut out = String::new();
    const UNITS: [(&str, i64, bool); 7] = [
        ("y", 365 * 24 * 3_600_000, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in UNITS {
        if exact && left % mult != 0 {
            continue;
        }
        let n = left / mult;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
            left -= n * mult;
        }
    }
    out
}

/// Binding strength of a duration-expression node (higher binds tighter).
fn dur_prec(e: &DurationExpr) -> u8 {
    match e {
        DurationExpr::Bin('+' | '-', ..) => 1,
        DurationExpr::Bin('^', ..) => 3,
        DurationExpr::Bin(..) => 2,
        DurationExpr::Neg(_) => 3,
        _ => 4,
    }
}

/// A duration expression at the top of brackets.
fn dur_expr(e: &DurationExpr) -> String {
    match e {
        DurationExpr::Num(s) => dur_number(*s),
        DurationExpr::Bin(op @ ('*' | '/' | '%' | '^'), a, b) => {
            // Factors read as numbers: `step() * 2`, not `step() * 2s`.
            let plain = |x: &DurationExpr| match x {
                DurationExpr::Num(v) => format_value(*v),
                _ => dur_operand(e, x),
            };
            format!("{} {op} {}", plain(a), plain(b))
        }
        DurationExpr::Step => "step()".into(),
        DurationExpr::Range => "range()".into(),
        DurationExpr::MinMax(max, a, b) => {
            let f = if *max { "max_of" } else { "min_of" };
            format!("{f}({}, {})", dur_expr(a), dur_expr(b))
        }
        DurationExpr::Neg(a) => match **a {
            // `-` binds looser than `^` only.
            DurationExpr::Bin(op, ..) if op != '^' => format!("-({})", dur_expr(a)),
            DurationExpr::Neg(_) => format!("-({})", dur_expr(a)),
            _ => format!("-{}", dur_expr(a)),
        },
        DurationExpr::Bin(op, a, b) => {
            format!("{} {op} {}", dur_operand(e, a), dur_operand(e, b))
        }
    }
}

/// Operand `x` of the binary duration expression `parent`, in parentheses
/// when it would otherwise bind differently.
fn dur_operand(parent: &DurationExpr, x: &DurationExpr) -> String {
    let DurationExpr::Bin(op, lhs, _) = parent else {
        return dur_expr(x);
    };
    let (p, px) = (dur_prec(parent), dur_prec(x));
    let right_assoc = *op == '^';
    let is_left = std::ptr::eq(&**lhs, x);
    let wrap = if is_left {
        px < p || (right_assoc && px <= p)
    } else {
        matches!(x, DurationExpr::Bin(..)) && (px < p || (px == p && !right_assoc))
    };
    if wrap {
        format!("({})", dur_expr(x))
    } else {
        dur_expr(x)
    }
}

/// A duration expression after `offset`: one signed term.
fn dur_term(e: &DurationExpr) -> String {
    match e {
        DurationExpr::Bin(..) => format!("({})", dur_expr(e)),
        DurationExpr::Neg(a) => format!("-{}", dur_term(a)),
        _ => dur_expr(e),
    }
}

/// A number of seconds in a duration expression: a duration when it is a
/// whole number of milliseconds, else the number.
fn dur_number(s: f64) -> String {
    let ms = s * 1000.0;
    if s >= 0.0 && ms.fract() == 0.0 && ms < MAX_DURATION_MS as f64 {
        duration_text(ms as i64)
    } else {
        format_value(s)
    }
}

/// A string double-quoted as Go's `strconv.Quote` does: `\a \b \f \n \r
/// \t \v \\ \"`, other control characters as `\xNN`, characters Go does not
/// count as printable as `\uNNNN`/`\UNNNNNNNN`, everything else as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !go_printable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` for the characters that occur in practice:
/// controls, separators other than the ASCII space, format characters and
/// private-use characters are not printable. (Unassigned code points,
/// which Go also escapes, are printed as they are.)
fn go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn one_line(q: &str) -> String {
        parse(q).unwrap().to_string()
    }

    #[test]
    fn durations_print_as_prometheus_does() {
        for (ms, want) in [
            (90_000, "1m30s"),
            (90_000_000, "1d1h"),
            (7 * 86_400_000, "1w"),
            (8 * 86_400_000, "8d"),
            (365 * 86_400_000, "1y"),
            (1500, "1s500ms"),
            (0, "0s"),
        ] {
            assert_eq!(duration_text(ms), want);
        }
    }

    #[test]
    fn strings_are_quoted_as_go_does() {
        assert_eq!(go_quote("a\nb\"c\\"), r#""a\nb\"c\\""#);
        assert_eq!(go_quote("ü\u{1}\u{7f}"), r#""ü\x01\x7f""#);
        assert_eq!(go_quote("\u{200b}\u{a0}"), r#""\u200b\u00a0""#);
    }

    #[test]
    fn nodes_print_on_one_line() {
        for (q, want) in [
            (
                r#"sum by(job)(rate(foo{b="x",a=~"y"}[5m] offset 1m @ 100))"#,
                r#"sum by (job) (rate(foo{a=~"y",b="x"}[5m] @ 100.000 offset 1m))"#,
            ),
            ("foo offset -5m @ start()", "foo @ start() offset -5m"),
            ("a / on() group_left b", "a / on () group_left () b"),
            (
                "a / ignoring() group_left b",
                "a / ignoring () group_left () b",
            ),
            ("a + ignoring(x) b", "a + ignoring (x) b"),
            ("sum without() (x)", "sum without () (x)"),
            ("sum by () (x)", "sum(x)"),
            (r#"{"my.metric", "a.b"="c"}"#, r#"{"my.metric","a.b"="c"}"#),
            ("foo[step() * 2]", "foo[step() * 2]"),
            ("foo offset (1h + step())", "foo offset (1h + step())"),
            ("a + fill(0) b", "a + fill (0) b"),
            ("- 1", "-1"),
            ("-(1)", "-(1)"),
        ] {
            assert_eq!(one_line(q), want, "{q}");
        }
    }

    #[test]
    fn deep_large_expressions_format_quickly() {
        // 120 nested calls around a 1 MB selector: the fits check of each
        // ancestor stops after a line's worth of text instead of rendering
        // the whole subtree.
        let value = "v".repeat(1 << 20);
        let q = format!(
            "{}x{{a=\"{value}\"}}{}",
            "abs(".repeat(120),
            ")".repeat(120)
        );
        let started = std::time::Instant::now();
        let text = parse(&q).unwrap().pretty();
        assert!(text.len() > 1 << 20);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn long_expressions_break_up() {
        let q = r#"histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{handler="/api/v1/query_range"}[5m])))"#;
        assert_eq!(
            parse(q).unwrap().pretty(),
            "histogram_quantile(\n  0.9,\n  sum by (le) (\n    rate(prometheus_http_request_duration_seconds_bucket{handler=\"/api/v1/query_range\"}[5m])\n  )\n)"
        );
    }
}
