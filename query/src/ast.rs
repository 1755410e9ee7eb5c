//! The PromQL syntax tree. Every node carries its [`PosRange`] in the query
//! text; [`PosRange::line_col`] turns it into the `line:column` Prometheus
//! prints in errors and annotations.
//!
//! Invariants established by the parser: selectors hold compiled matchers
//! and at least one matcher that does not match the empty string; range
//! and subquery durations are positive; call arguments have the types of
//! their function's signature.

use kiln_storage::Matcher;

/// A byte range in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PosRange {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl PosRange {
    /// The 1-based `(line, column)` of `start` in `input`, columns counted
    /// in bytes as Prometheus does.
    pub fn line_col(&self, input: &str) -> (usize, usize) {
        let pos = self.start.min(input.len());
        let before = &input.as_bytes()[..pos];
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let col = match before.iter().rposition(|b| *b == b'\n') {
            Some(nl) => pos - nl,
            None => pos + 1,
        };
        (line, col)
    }

    /// The smallest range covering both.
    pub fn to(self, other: PosRange) -> PosRange {
        PosRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// The type of a PromQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A single number.
    Scalar,
    /// A set of series with one sample each.
    InstantVector,
    /// A set of series with a window of samples each.
    RangeVector,
    /// A string.
    String,
}

impl ValueType {
    /// Prometheus's name for the type, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::InstantVector => "instant vector",
            ValueType::RangeVector => "range vector",
            ValueType::String => "string",
        }
    }
}

/// The largest timestamp magnitude (ms) kiln evaluates at, about 36
/// million years: far beyond any real data, and small enough that shifting
/// by any offset, range or lookback cannot overflow an `i64`.
pub const MAX_TIMESTAMP_MS: i64 = 1 << 60;

/// The largest duration (ms), Go's `time.Duration` limit.
pub const MAX_DURATION_MS: i64 = 9_223_372_036_854;

/// The `@` modifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AtModifier {
    /// `@ <timestamp>`, in milliseconds.
    Timestamp(i64),
    /// `@ start()`
    Start,
    /// `@ end()`
    End,
}

/// A time shift written with `offset` or as a range: a constant, or a
/// duration expression that needs the query's step or range.
#[derive(Debug, Clone, PartialEq)]
pub enum Duration {
    /// Milliseconds known at parse time.
    Const(i64),
    /// A duration expression using `step()` or `range()`.
    Expr(Box<DurationExpr>),
}

impl Duration {
    /// The value in ms given the query's step and range (both in ms).
    pub fn resolve(&self, step_ms: i64, range_ms: i64) -> f64 {
        match self {
            Duration::Const(v) => *v as f64,
            Duration::Expr(e) => e.eval(step_ms as f64 / 1000.0, range_ms as f64 / 1000.0) * 1000.0,
        }
    }
}

/// A duration expression (arithmetic over seconds), evaluated per query.
#[derive(Debug, Clone, PartialEq)]
pub enum DurationExpr {
    /// A literal number of seconds.
    Num(f64),
    /// `step()`
    Step,
    /// `range()`
    Range,
    /// Unary minus.
    Neg(Box<DurationExpr>),
    /// A binary operation (`+ - * / % ^`).
    Bin(char, Box<DurationExpr>, Box<DurationExpr>),
    /// `min_of(a, b)` (false) or `max_of(a, b)` (true).
    MinMax(bool, Box<DurationExpr>, Box<DurationExpr>),
}

impl DurationExpr {
    /// The value in seconds.
    pub fn eval(&self, step_s: f64, range_s: f64) -> f64 {
        match self {
            DurationExpr::Num(v) => *v,
            DurationExpr::Step => step_s,
            DurationExpr::Range => range_s,
            DurationExpr::Neg(e) => -e.eval(step_s, range_s),
            DurationExpr::Bin(op, a, b) => {
                let (a, b) = (a.eval(step_s, range_s), b.eval(step_s, range_s));
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' => a / b,
                    '%' => a % b,
                    _ => a.powf(b),
                }
            }
            DurationExpr::MinMax(max, a, b) => {
                let (a, b) = (a.eval(step_s, range_s), b.eval(step_s, range_s));
                if *max { a.max(b) } else { a.min(b) }
            }
        }
    }
}

/// An instant vector selector: `name{matchers} offset … @ …`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSelector {
    /// The metric name written outside the braces, if any.
    pub name: Option<String>,
    /// All matchers, including `__name__="<name>"` for a name outside braces.
    pub matchers: Vec<Matcher>,
    /// `offset`, in ms (negative allowed).
    pub offset: Duration,
    /// `@`, if written.
    pub at: Option<AtModifier>,
    /// The experimental `smoothed` modifier: the value is interpolated
    /// between the samples around the evaluation time.
    pub smoothed: bool,
}

/// How a range selector treats its window's edges (experimental modifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Only the samples in the window, extrapolated to its edges.
    Plain,
    /// `anchored`: the last sample at or before the start joins the window;
    /// no extrapolation.
    Anchored,
    /// `smoothed`: the values at both edges are interpolated from the
    /// samples around them.
    Smoothed,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `atan2`
    Atan2,
    /// `==`
    Eql,
    /// `!=`
    Neq,
    /// `<`
    Lss,
    /// `<=`
    Lte,
    /// `>`
    Gtr,
    /// `>=`
    Gte,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Atan2 => "atan2",
            BinOp::Eql => "==",
            BinOp::Neq => "!=",
            BinOp::Lss => "<",
            BinOp::Lte => "<=",
            BinOp::Gtr => ">",
            BinOp::Gte => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }

    /// `== != < <= > >=`
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eql | BinOp::Neq | BinOp::Lss | BinOp::Lte | BinOp::Gtr | BinOp::Gte
        )
    }

    /// `and or unless`
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Binding strength; higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eql | BinOp::Neq | BinOp::Lss | BinOp::Lte | BinOp::Gtr | BinOp::Gte => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Atan2 => 5,
            BinOp::Pow => 6,
        }
    }
}

/// Cardinality of vector matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    /// Each side has at most one series per match group.
    OneToOne,
    /// `group_left`
    ManyToOne,
    /// `group_right`
    OneToMany,
    /// Set operators.
    ManyToMany,
}

/// How the two sides of a vector–vector operation are matched.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    /// The cardinality.
    pub card: Card,
    /// `on(...)` (true) or `ignoring(...)` (false).
    pub on: bool,
    /// The labels of `on`/`ignoring`.
    pub labels: Vec<String>,
    /// The extra labels of `group_left(...)`/`group_right(...)`.
    pub include: Vec<String>,
    /// `fill_left(v)` (or `fill(v)`): the value of a missing left operand.
    /// With `group_right` it fills the right (the "many") side, as in
    /// Prometheus, which swaps the sides before filling.
    pub fill_left: Option<f64>,
    /// `fill_right(v)` (or `fill(v)`): the value of a missing right operand
    /// (with `group_right`, of the left, "one" side).
    pub fill_right: Option<f64>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `count_values`
    CountValues,
    /// `quantile`
    Quantile,
    /// `limitk`
    Limitk,
    /// `limit_ratio`
    LimitRatio,
}

impl AggOp {
    /// Parses an aggregator name (case-insensitive).
    pub fn from_name(s: &str) -> Option<AggOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sum" => AggOp::Sum,
            "avg" => AggOp::Avg,
            "count" => AggOp::Count,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "group" => AggOp::Group,
            "stddev" => AggOp::Stddev,
            "stdvar" => AggOp::Stdvar,
            "topk" => AggOp::Topk,
            "bottomk" => AggOp::Bottomk,
            "count_values" => AggOp::CountValues,
            "quantile" => AggOp::Quantile,
            "limitk" => AggOp::Limitk,
            "limit_ratio" => AggOp::LimitRatio,
            _ => return None,
        })
    }

    /// The operator's name as written (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Count => "count",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Group => "group",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::Topk => "topk",
            AggOp::Bottomk => "bottomk",
            AggOp::CountValues => "count_values",
            AggOp::Quantile => "quantile",
            AggOp::Limitk => "limitk",
            AggOp::LimitRatio => "limit_ratio",
        }
    }

    /// The type of the parameter, for operators that take one.
    pub fn param_type(self) -> Option<ValueType> {
        match self {
            AggOp::Topk | AggOp::Bottomk | AggOp::Quantile | AggOp::Limitk | AggOp::LimitRatio => {
                Some(ValueType::Scalar)
            }
            AggOp::CountValues => Some(ValueType::String),
            _ => None,
        }
    }
}

/// A PromQL expression with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Where the expression is in the query text.
    pub pos: PosRange,
    /// What it is.
    pub kind: ExprKind,
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A number literal.
    Number(f64),
    /// A string literal.
    String(String),
    /// An instant vector selector.
    Vector(VectorSelector),
    /// A range vector selector `sel[range]`; offset and `@` live in `sel`.
    Matrix {
        /// The selector.
        sel: VectorSelector,
        /// The range.
        range: Duration,
        /// The experimental `anchored`/`smoothed` modifier.
        boundary: Boundary,
    },
    /// A subquery `expr[range:step] offset … @ …`.
    Subquery {
        /// The inner expression (an instant vector).
        expr: Box<Expr>,
        /// The range.
        range: Duration,
        /// The step; `None` means the engine's default.
        step: Option<Duration>,
        /// `offset`.
        offset: Duration,
        /// `@`.
        at: Option<AtModifier>,
    },
    /// A function call.
    Call {
        /// The function's name (as in the function table).
        func: &'static str,
        /// The arguments.
        args: Vec<Expr>,
    },
    /// An aggregation.
    Aggregate {
        /// The operator.
        op: AggOp,
        /// The aggregated expression.
        expr: Box<Expr>,
        /// The parameter of topk, quantile, count_values, …
        param: Option<Box<Expr>>,
        /// `by (…)` or `without (…)` labels.
        grouping: Vec<String>,
        /// `without` (true) or `by` (false).
        without: bool,
    },
    /// A binary operation.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
        /// `bool` modifier.
        return_bool: bool,
        /// Vector matching, for vector–vector operations.
        matching: Option<VectorMatching>,
    },
    /// Unary minus (unary plus is dropped by the parser).
    Neg(Box<Expr>),
    /// Parentheses.
    Paren(Box<Expr>),
}

impl Expr {
    /// The expression's type.
    pub fn value_type(&self) -> ValueType {
        match &self.kind {
            ExprKind::Number(_) => ValueType::Scalar,
            ExprKind::String(_) => ValueType::String,
            ExprKind::Vector(_) | ExprKind::Aggregate { .. } => ValueType::InstantVector,
            ExprKind::Matrix { .. } | ExprKind::Subquery { .. } => ValueType::RangeVector,
            ExprKind::Call { func, .. } => crate::functions::lookup(func)
                .map(|f| f.ret)
                .unwrap_or(ValueType::InstantVector),
            ExprKind::Binary { lhs, rhs, .. } => {
                if lhs.value_type() == ValueType::Scalar && rhs.value_type() == ValueType::Scalar {
                    ValueType::Scalar
                } else {
                    ValueType::InstantVector
                }
            }
            ExprKind::Neg(e) | ExprKind::Paren(e) => e.value_type(),
        }
    }

    /// Calls `f` on this node and every descendant, parents first.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Subquery { expr, .. } | ExprKind::Neg(expr) | ExprKind::Paren(expr) => {
                expr.walk(f)
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| a.walk(f)),
            ExprKind::Aggregate { expr, param, .. } => {
                if let Some(p) = param {
                    p.walk(f);
                }
                expr.walk(f);
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            ExprKind::Number(_)
            | ExprKind::String(_)
            | ExprKind::Vector(_)
            | ExprKind::Matrix { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_bytes_from_one() {
        let q = "sum(\n  foo)";
        assert_eq!(PosRange { start: 0, end: 1 }.line_col(q), (1, 1));
        assert_eq!(PosRange { start: 7, end: 10 }.line_col(q), (2, 3));
    }

    #[test]
    fn every_node_has_a_position_inside_the_query() {
        let q = "sum by (job) (rate(foo{a=\"b\"}[5m] offset 1m)) / on(job) group_left bar @ 10";
        let e = crate::parse(q).unwrap();
        let mut n = 0;
        e.walk(&mut |x| {
            n += 1;
            assert!(x.pos.start < x.pos.end && x.pos.end <= q.len(), "{x:?}");
        });
        assert_eq!(n, 5);
        assert_eq!(
            e.pos,
            PosRange {
                start: 0,
                end: q.len()
            }
        );
    }
}
