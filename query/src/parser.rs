//! The PromQL parser: precedence climbing over the lexer's tokens.
//!
//! It accepts the stable syntax of Prometheus 3.x (including `@`, negative
//! `offset`, subqueries, quoted UTF-8 names, raw strings and duration
//! expressions in ranges and offsets) and type-checks as Prometheus does,
//! with Prometheus's error texts. Experimental syntax kiln does not
//! implement (histogram trim operators, `info()`) is rejected with an
//! error that says so.
//!
//! The first error wins; parsing stops there.

use std::fmt;

use kiln_storage::{MatchOp, Matcher};

use crate::ast::*;
use crate::functions;
use crate::lexer::{TokKind, Token, is_aggregator, lex};

/// A parse error; `Display` is Prometheus's text, e.g.
/// `1:3: parse error: unexpected end of input`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Where in the input.
    pub pos: PosRange,
    /// 1-based line of `pos.start`.
    pub line: usize,
    /// 1-based byte column of `pos.start`.
    pub col: usize,
    /// The message without the position prefix.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: parse error: {}", self.line, self.col, self.msg)
    }
}

type PResult<T> = Result<T, (PosRange, String)>;

/// Parses a PromQL expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        input,
        toks: lex(input),
        i: 0,
        depth: 0,
        in_info: false,
    };
    p.parse_all().map_err(|(pos, msg)| {
        let (line, col) = pos.line_col(input);
        ParseError {
            pos,
            line,
            col,
            msg,
        }
    })
}

/// Largest duration Prometheus accepts (Go's `time.Duration`), in seconds.
const MAX_DURATION_S: f64 = MAX_DURATION_MS as f64 / 1000.0;

/// How deeply expressions may nest. The parser and the evaluator recurse
/// over the tree, so an unbounded depth would let a query overflow the
/// stack; real queries stay far below this.
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    input: &'a str,
    toks: Vec<Token>,
    i: usize,
    /// Current nesting of `parse_expr`/`parse_dur_expr` calls.
    depth: usize,
    /// Inside `info(…)`, whose label selector may match the empty string.
    in_info: bool,
}

fn experimental(what: &str) -> String {
    format!("{what} is experimental syntax that kiln does not support")
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_n(&self, n: usize) -> &Token {
        &self.toks[(self.i + n).min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn text(&self, t: &Token) -> &str {
        &self.input[t.pos.start..t.pos.end]
    }

    fn peek_word(&self) -> Option<String> {
        let t = self.peek();
        (t.kind == TokKind::Word).then(|| self.text(t).to_ascii_lowercase())
    }

    /// Prometheus's "unexpected <token>[ in <context>][, expected <what>]".
    /// A lexer error token reports its own message instead.
    fn unexpected<T>(&self, context: &str, expected: &str) -> PResult<T> {
        let t = self.peek();
        if let TokKind::Error(m) = &t.kind {
            return Err((t.pos, m.clone()));
        }
        let mut msg = format!("unexpected {}", t.describe(self.input));
        if !context.is_empty() {
            msg.push_str(" in ");
            msg.push_str(context);
        }
        if !expected.is_empty() {
            msg.push_str(", expected ");
            msg.push_str(expected);
        }
        Err((t.pos, msg))
    }

    fn parse_all(&mut self) -> PResult<Expr> {
        if self.peek().kind == TokKind::Eof {
            return Err((self.peek().pos, "no expression found in input".into()));
        }
        let e = self.parse_expr(0)?;
        if self.peek().kind != TokKind::Eof {
            return self.unexpected("", "");
        }
        Ok(e)
    }

    fn peek_binop(&self) -> PResult<Option<BinOp>> {
        let t = self.peek();
        Ok(Some(match &t.kind {
            TokKind::Add => BinOp::Add,
            TokKind::Sub => BinOp::Sub,
            TokKind::Mul => BinOp::Mul,
            TokKind::Div => BinOp::Div,
            TokKind::Mod => BinOp::Mod,
            TokKind::Pow => BinOp::Pow,
            TokKind::Eqlc => BinOp::Eql,
            TokKind::Neq => BinOp::Neq,
            TokKind::Lss => BinOp::Lss,
            TokKind::Lte => BinOp::Lte,
            TokKind::Gtr => BinOp::Gtr,
            TokKind::Gte => BinOp::Gte,
            TokKind::Trim => {
                return Err((t.pos, experimental("the histogram trim operator")));
            }
            TokKind::Word => match self.text(t).to_ascii_lowercase().as_str() {
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "unless" => BinOp::Unless,
                "atan2" => BinOp::Atan2,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }))
    }

    /// Enters one nesting level, or fails when the query nests too deeply.
    fn nest<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_DEPTH {
            return Err((
                self.peek().pos,
                format!("expression nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn parse_expr(&mut self, min_prec: u8) -> PResult<Expr> {
        self.nest(|p| p.parse_expr_nested(min_prec))
    }

    fn parse_expr_nested(&mut self, min_prec: u8) -> PResult<Expr> {
        let mut lhs = self.parse_unary()?;
        // A chain `a + b + c …` nests to the left: each link is a level.
        let mut chain = 0;
        while let Some(op) = self.peek_binop()? {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            chain += 1;
            if self.depth + chain > MAX_DEPTH {
                return Err((
                    self.peek().pos,
                    format!("expression nests more than {MAX_DEPTH} levels deep"),
                ));
            }
            let op_tok = self.next();
            let mut return_bool = false;
            if self.peek_word().as_deref() == Some("bool") {
                self.next();
                return_bool = true;
            }
            let mut matching: Option<VectorMatching> = None;
            match self.peek_word().as_deref() {
                Some(w @ ("on" | "ignoring")) => {
                    let on = w == "on";
                    self.next();
                    let labels = self.parse_grouping()?;
                    let mut m = VectorMatching {
                        card: Card::OneToOne,
                        on,
                        labels,
                        include: Vec::new(),
                        fill_left: None,
                        fill_right: None,
                    };
                    if let Some(g @ ("group_left" | "group_right")) = self.peek_word().as_deref() {
                        m.card = if g == "group_left" {
                            Card::ManyToOne
                        } else {
                            Card::OneToMany
                        };
                        self.next();
                        if self.peek().kind == TokKind::LParen {
                            m.include = self.parse_grouping()?;
                        }
                    }
                    matching = Some(m);
                }
                Some("group_left" | "group_right") => return self.unexpected("", ""),
                _ => {}
            }
            if matches!(
                self.peek_word().as_deref(),
                Some("on" | "ignoring" | "group_left" | "group_right")
            ) {
                return self.unexpected("", "");
            }
            let fills = self.parse_fills()?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.parse_expr(next_min)?;
            lhs = self.build_binary(op, op_tok.pos, lhs, rhs, return_bool, matching, fills)?;
        }
        Ok(lhs)
    }

    /// `fill(v)`, `fill_left(v)`, `fill_right(v)` after the operator's other
    /// modifiers; a word `fill…` not followed by `(` is the right operand.
    fn parse_fills(&mut self) -> PResult<(Option<f64>, Option<f64>)> {
        let (mut left, mut right) = (None, None);
        while let Some(w @ ("fill" | "fill_left" | "fill_right")) = self.peek_word().as_deref() {
            if self.peek_n(1).kind != TokKind::LParen {
                break;
            }
            let kw = self.next();
            self.next();
            let mut sign = 1.0;
            while matches!(self.peek().kind, TokKind::Add | TokKind::Sub) {
                if self.next().kind == TokKind::Sub {
                    sign = -sign;
                }
            }
            let TokKind::Number(v) = self.peek().kind else {
                return self.unexpected("fill modifier", "number");
            };
            self.next();
            if self.peek().kind != TokKind::RParen {
                return self.unexpected("fill modifier", "\")\"");
            }
            self.next();
            let v = sign * v;
            let twice = match w {
                "fill" => left.replace(v).is_some() | right.replace(v).is_some(),
                "fill_left" => left.replace(v).is_some(),
                _ => right.replace(v).is_some(),
            };
            if twice {
                return Err((kw.pos, "fill modifier may not be set multiple times".into()));
            }
        }
        Ok((left, right))
    }

    #[allow(clippy::too_many_arguments)]
    fn build_binary(
        &self,
        op: BinOp,
        op_pos: PosRange,
        lhs: Expr,
        rhs: Expr,
        return_bool: bool,
        mut matching: Option<VectorMatching>,
        (fill_left, fill_right): (Option<f64>, Option<f64>),
    ) -> PResult<Expr> {
        let pos = lhs.pos.to(rhs.pos);
        let (lt, rt) = (lhs.value_type(), rhs.value_type());
        if return_bool && !op.is_comparison() {
            return Err((
                op_pos,
                "bool modifier can only be used on comparison operators".into(),
            ));
        }
        if op.is_comparison() && !return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar
        {
            return Err((
                op_pos,
                "comparisons between scalars must use BOOL modifier".into(),
            ));
        }
        if let Some(m) = &matching
            && m.on
            && let Some(l) = m.labels.iter().find(|l| m.include.contains(l))
        {
            return Err((
                op_pos,
                format!("label {l:?} must not occur in ON and GROUP clause at once"),
            ));
        }
        for (t, e) in [(lt, &lhs), (rt, &rhs)] {
            if t != ValueType::Scalar && t != ValueType::InstantVector {
                return Err((
                    e.pos,
                    "binary expression must contain only scalar and instant vector types".into(),
                ));
            }
        }
        let both_vectors = lt == ValueType::InstantVector && rt == ValueType::InstantVector;
        if !both_vectors {
            if matching.as_ref().is_some_and(|m| !m.labels.is_empty()) {
                return Err((
                    pos,
                    "vector matching only allowed between instant vectors".into(),
                ));
            }
            matching = None;
        } else {
            let m = matching.get_or_insert(VectorMatching {
                card: Card::OneToOne,
                on: false,
                labels: Vec::new(),
                include: Vec::new(),
                fill_left: None,
                fill_right: None,
            });
            (m.fill_left, m.fill_right) = (fill_left, fill_right);
            if op.is_set() && (fill_left.is_some() || fill_right.is_some()) {
                return Err((
                    pos,
                    format!(
                        "fill modifiers are not allowed for {:?} operation",
                        op.as_str()
                    ),
                ));
            }
            if op.is_set() {
                if matches!(m.card, Card::ManyToOne | Card::OneToMany) {
                    return Err((
                        pos,
                        format!("no grouping allowed for {:?} operation", op.as_str()),
                    ));
                }
                m.card = Card::ManyToMany;
            }
        }
        if (lt == ValueType::Scalar || rt == ValueType::Scalar) && op.is_set() {
            return Err((
                pos,
                format!(
                    "set operator {:?} not allowed in binary scalar expression",
                    op.as_str()
                ),
            ));
        }
        Ok(Expr {
            pos,
            kind: ExprKind::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                return_bool,
                matching,
            },
        })
    }

    fn parse_unary(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        let neg = match t.kind {
            TokKind::Sub => true,
            TokKind::Add => false,
            _ => return self.parse_postfix(),
        };
        self.next();
        let e = self.parse_expr(BinOp::Pow.precedence())?;
        let ty = e.value_type();
        if ty != ValueType::Scalar && ty != ValueType::InstantVector {
            return Err((
                t.pos.to(e.pos),
                format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                    ty.name()
                ),
            ));
        }
        let pos = t.pos.to(e.pos);
        if !neg {
            return Ok(Expr { pos, kind: e.kind });
        }
        Ok(match e.kind {
            ExprKind::Number(v) => Expr {
                pos,
                kind: ExprKind::Number(-v),
            },
            kind => Expr {
                pos,
                kind: ExprKind::Neg(Box::new(Expr { pos: e.pos, kind })),
            },
        })
    }

    fn parse_postfix(&mut self) -> PResult<Expr> {
        let mut e = self.parse_primary()?;
        loop {
            match &self.peek().kind {
                TokKind::LBracket => e = self.parse_bracket(e)?,
                TokKind::At => e = self.parse_at(e)?,
                TokKind::Word => match self.peek_word().as_deref() {
                    Some("offset") => e = self.parse_offset(e)?,
                    Some(w @ ("anchored" | "smoothed")) => {
                        let boundary = if w == "anchored" {
                            Boundary::Anchored
                        } else {
                            Boundary::Smoothed
                        };
                        match &mut e.kind {
                            ExprKind::Matrix { boundary: b, .. } if *b == Boundary::Plain => {
                                *b = boundary;
                            }
                            ExprKind::Vector(sel) if w == "smoothed" && !sel.smoothed => {
                                sel.smoothed = true;
                            }
                            _ => return self.unexpected("", ""),
                        }
                        self.next();
                        e.pos = e.pos.to(self.toks[self.i - 1].pos);
                    }
                    _ => break,
                },
                _ => break,
            }
        }
        Ok(e)
    }

    fn parse_bracket(&mut self, e: Expr) -> PResult<Expr> {
        let open = self.next();
        let ctx = "subquery or range selector";
        let expected = "number, duration, step(), or range()";
        if matches!(self.peek().kind, TokKind::RBracket | TokKind::Colon) {
            return self.unexpected(ctx, expected);
        }
        if self.peek().kind == TokKind::Eof {
            return Err((
                self.peek().pos,
                "unexpected end of input in duration expression".into(),
            ));
        }
        let range = self.parse_duration_value(true)?;
        let mut step = None;
        let subquery = self.peek().kind == TokKind::Colon;
        if subquery {
            self.next();
            if self.peek().kind != TokKind::RBracket {
                step = Some(self.parse_duration_value(true)?);
            }
        }
        let close = self.peek().clone();
        match close.kind {
            TokKind::RBracket => {
                self.next();
            }
            TokKind::Eof => {
                return Err((
                    close.pos,
                    "unexpected end of input in duration expression".into(),
                ));
            }
            _ => return self.unexpected(ctx, "\":\" or \"]\""),
        }
        let pos = e.pos.to(close.pos).to(open.pos);
        if subquery {
            let ty = e.value_type();
            if ty != ValueType::InstantVector {
                let got = if ty == ValueType::RangeVector {
                    "matrix"
                } else {
                    ty.name()
                };
                return Err((
                    pos,
                    format!("subquery is only allowed on instant vector, got {got} instead"),
                ));
            }
            return Ok(Expr {
                pos,
                kind: ExprKind::Subquery {
                    expr: Box::new(e),
                    range,
                    step,
                    offset: Duration::Const(0),
                    at: None,
                },
            });
        }
        match e.kind {
            ExprKind::Vector(sel) => {
                if sel.offset != Duration::Const(0) {
                    return Err((pos, "no offset modifiers allowed before range".into()));
                }
                if sel.at.is_some() {
                    return Err((pos, "no @ modifiers allowed before range".into()));
                }
                Ok(Expr {
                    pos,
                    kind: ExprKind::Matrix {
                        sel,
                        range,
                        boundary: Boundary::Plain,
                    },
                })
            }
            _ => Err((pos, "ranges only allowed for vector selectors".into())),
        }
    }

    fn parse_offset(&mut self, mut e: Expr) -> PResult<Expr> {
        let kw = self.next();
        if matches!(self.peek().kind, TokKind::Eof) {
            return self.unexpected("offset", "number, duration, step(), or range()");
        }
        let d = self.parse_duration_value(false)?;
        let slot = match &mut e.kind {
            ExprKind::Vector(sel) | ExprKind::Matrix { sel, .. } => &mut sel.offset,
            ExprKind::Subquery { offset, .. } => offset,
            _ => {
                return Err((
                    kw.pos,
                    "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery".into(),
                ));
            }
        };
        if *slot != Duration::Const(0) {
            return Err((kw.pos, "offset may not be set multiple times".into()));
        }
        *slot = d;
        e.pos = e.pos.to(self.toks[self.i.saturating_sub(1)].pos);
        Ok(e)
    }

    fn parse_at(&mut self, mut e: Expr) -> PResult<Expr> {
        let at_tok = self.next();
        let t = self.peek().clone();
        let at = match &t.kind {
            TokKind::Word
                if matches!(self.peek_word().as_deref(), Some("start" | "end"))
                    && self.peek_n(1).kind == TokKind::LParen
                    && self.peek_n(2).kind == TokKind::RParen =>
            {
                let start = self.peek_word().as_deref() == Some("start");
                self.i += 3;
                if start {
                    AtModifier::Start
                } else {
                    AtModifier::End
                }
            }
            TokKind::Number(_) | TokKind::Duration(_) | TokKind::Add | TokKind::Sub => {
                let mut sign = 1.0;
                if matches!(t.kind, TokKind::Add | TokKind::Sub) {
                    if t.kind == TokKind::Sub {
                        sign = -1.0;
                    }
                    self.next();
                }
                let v = match self.next().kind {
                    TokKind::Number(v) => v,
                    TokKind::Duration(ms) => ms as f64 / 1000.0,
                    _ => {
                        self.i -= 1;
                        return self.unexpected("@", "timestamp");
                    }
                };
                let v = sign * v;
                let ms = v * 1000.0;
                if !ms.is_finite() || ms.abs() >= MAX_TIMESTAMP_MS as f64 {
                    return Err((
                        at_tok.pos,
                        format!("timestamp out of bounds for @ modifier: {}", go_float(v)),
                    ));
                }
                AtModifier::Timestamp(ms.round() as i64)
            }
            _ => return self.unexpected("@", "timestamp"),
        };
        let slot = match &mut e.kind {
            ExprKind::Vector(sel) | ExprKind::Matrix { sel, .. } => &mut sel.at,
            ExprKind::Subquery { at, .. } => at,
            _ => {
                return Err((
                    at_tok.pos,
                    "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery".into(),
                ));
            }
        };
        if slot.is_some() {
            return Err((at_tok.pos, "@ may not be set multiple times".into()));
        }
        *slot = Some(at);
        e.pos = e.pos.to(self.toks[self.i.saturating_sub(1)].pos);
        Ok(e)
    }

    /// A range or subquery step (`positive`: a full duration expression)
    /// or an offset (one signed term; `foo offset 5s - 8` subtracts 8 from
    /// the shifted selector, as in Prometheus).
    fn parse_duration_value(&mut self, positive: bool) -> PResult<Duration> {
        let start = self.peek().pos;
        let e = if positive {
            self.parse_dur_expr(0)?
        } else {
            self.parse_dur_unary()?
        };
        let pos = start.to(self.toks[self.i.saturating_sub(1)].pos);
        check_zero_divisors(&e).map_err(|m| (pos, m))?;
        if uses_query_params(&e) {
            return Ok(Duration::Expr(Box::new(e)));
        }
        let secs = e.eval(0.0, 0.0);
        if !secs.is_finite() || secs.abs() >= MAX_DURATION_S {
            return Err((pos, "duration out of range".into()));
        }
        let ms = (secs * 1000.0).round() as i64;
        // Only a literal range is checked here; Prometheus does not check
        // the value of a range written as an expression.
        let literal = match &e {
            DurationExpr::Num(_) => true,
            DurationExpr::Neg(inner) => matches!(**inner, DurationExpr::Num(_)),
            _ => false,
        };
        if positive && literal && ms <= 0 {
            return Err((pos, "duration must be greater than 0".into()));
        }
        Ok(Duration::Const(ms))
    }

    fn dur_binop(&self) -> Option<(char, u8)> {
        Some(match self.peek().kind {
            TokKind::Add => ('+', 1),
            TokKind::Sub => ('-', 1),
            TokKind::Mul => ('*', 2),
            TokKind::Div => ('/', 2),
            TokKind::Mod => ('%', 2),
            TokKind::Pow => ('^', 3),
            _ => return None,
        })
    }

    fn parse_dur_expr(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        self.nest(|p| p.parse_dur_expr_nested(min_prec))
    }

    fn parse_dur_expr_nested(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        let mut lhs = match self.peek().kind {
            // A sign binds looser than `^`: `-2^2` is `-(2^2)`.
            TokKind::Sub => {
                self.next();
                DurationExpr::Neg(Box::new(self.parse_dur_expr(3)?))
            }
            TokKind::Add => {
                self.next();
                self.parse_dur_expr(3)?
            }
            _ => self.parse_dur_primary()?,
        };
        while let Some((op, prec)) = self.dur_binop() {
            if prec < min_prec {
                break;
            }
            self.next();
            let rhs = self.parse_dur_expr(if op == '^' { prec } else { prec + 1 })?;
            lhs = DurationExpr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    /// One signed term (after `offset`).
    fn parse_dur_unary(&mut self) -> PResult<DurationExpr> {
        self.nest(|p| p.parse_dur_unary_nested())
    }

    fn parse_dur_unary_nested(&mut self) -> PResult<DurationExpr> {
        match self.peek().kind {
            TokKind::Sub => {
                self.next();
                Ok(DurationExpr::Neg(Box::new(self.parse_dur_unary()?)))
            }
            TokKind::Add => {
                self.next();
                self.parse_dur_unary()
            }
            _ => self.parse_dur_primary(),
        }
    }

    fn parse_dur_primary(&mut self) -> PResult<DurationExpr> {
        let t = self.peek().clone();
        let expected = "number, duration, step(), or range()";
        match &t.kind {
            TokKind::Number(v) => {
                self.next();
                Ok(DurationExpr::Num(*v))
            }
            TokKind::Duration(ms) => {
                self.next();
                Ok(DurationExpr::Num(*ms as f64 / 1000.0))
            }
            TokKind::LParen => {
                self.next();
                let e = self.parse_dur_expr(0)?;
                if self.peek().kind != TokKind::RParen {
                    return self.unexpected("duration expression", "\")\"");
                }
                self.next();
                Ok(e)
            }
            TokKind::Word => {
                let w = self.text(&t).to_ascii_lowercase();
                if self.peek_n(1).kind != TokKind::LParen {
                    self.next();
                    return self.unexpected("subquery or range selector", expected);
                }
                self.next();
                self.next();
                let e = match w.as_str() {
                    "step" => DurationExpr::Step,
                    "range" => DurationExpr::Range,
                    "min_of" | "max_of" => {
                        let a = self.parse_dur_expr(0)?;
                        if self.peek().kind != TokKind::Comma {
                            return self.unexpected("duration expression", "\",\"");
                        }
                        self.next();
                        let b = self.parse_dur_expr(0)?;
                        DurationExpr::MinMax(w == "max_of", Box::new(a), Box::new(b))
                    }
                    _ => return self.unexpected("duration expression", expected),
                };
                if self.peek().kind != TokKind::RParen {
                    return self.unexpected("duration expression", "\")\"");
                }
                self.next();
                Ok(e)
            }
            TokKind::RBracket => self.unexpected("subquery or range selector", expected),
            _ => self.unexpected("duration expression", expected),
        }
    }

    fn parse_primary(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        match &t.kind {
            TokKind::Number(v) => {
                self.next();
                Ok(Expr {
                    pos: t.pos,
                    kind: ExprKind::Number(*v),
                })
            }
            TokKind::Duration(ms) => {
                self.next();
                Ok(Expr {
                    pos: t.pos,
                    kind: ExprKind::Number(*ms as f64 / 1000.0),
                })
            }
            TokKind::Str(s) => {
                self.next();
                Ok(Expr {
                    pos: t.pos,
                    kind: ExprKind::String(s.clone()),
                })
            }
            TokKind::LParen => {
                self.next();
                let inner = self.parse_expr(0)?;
                if self.peek().kind != TokKind::RParen {
                    return self.unexpected("", "");
                }
                let close = self.next();
                Ok(Expr {
                    pos: t.pos.to(close.pos),
                    kind: ExprKind::Paren(Box::new(inner)),
                })
            }
            TokKind::LBrace => self.parse_selector(None, t.pos),
            TokKind::Word => {
                let word = self.text(&t).to_owned();
                let lower = word.to_ascii_lowercase();
                let next = &self.peek_n(1).kind;
                if *next == TokKind::LParen {
                    if is_aggregator(&lower) {
                        return self.parse_aggregate(&t);
                    }
                    return self.parse_call(&t, &word);
                }
                if is_aggregator(&lower)
                    && *next == TokKind::Word
                    && matches!(
                        self.text(self.peek_n(1)).to_ascii_lowercase().as_str(),
                        "by" | "without"
                    )
                {
                    return self.parse_aggregate(&t);
                }
                self.next();
                self.parse_selector(Some(word), t.pos)
            }
            _ => self.unexpected("", ""),
        }
    }

    fn parse_call(&mut self, name_tok: &Token, name: &str) -> PResult<Expr> {
        let Some(func) = functions::lookup(name) else {
            if functions::UNSUPPORTED.contains(&name) {
                return Err((
                    name_tok.pos,
                    format!("function {name:?} is experimental and not supported by kiln"),
                ));
            }
            return Err((name_tok.pos, format!("unknown function with name {name:?}")));
        };
        self.next();
        let outer = std::mem::replace(&mut self.in_info, func.name == "info");
        let parsed = self.parse_args();
        self.in_info = outer;
        let (args, close) = parsed?;
        let pos = name_tok.pos.to(close);
        if func.name == "info" {
            self.check_info_args(&args)?;
        }
        let nargs = func.args.len();
        let got = args.len();
        if func.variadic == 0 {
            if nargs != got {
                return Err((
                    pos,
                    format!("expected {nargs} argument(s) in call to {name:?}, got {got}"),
                ));
            }
        } else {
            let na = nargs - 1;
            if na > got {
                return Err((
                    pos,
                    format!("expected at least {na} argument(s) in call to {name:?}, got {got}"),
                ));
            }
            let max = na + func.variadic.max(0) as usize;
            if func.variadic > 0 && max < got {
                return Err((
                    pos,
                    format!("expected at most {max} argument(s) in call to {name:?}, got {got}"),
                ));
            }
        }
        for (i, a) in args.iter().enumerate() {
            let want = func.args[i.min(nargs.saturating_sub(1))];
            let ty = a.value_type();
            if ty != want {
                return Err((
                    a.pos,
                    format!(
                        "expected type {} in call to function {name:?}, got {}",
                        want.name(),
                        ty.name()
                    ),
                ));
            }
        }
        Ok(Expr {
            pos,
            kind: ExprKind::Call {
                func: func.name,
                args,
            },
        })
    }

    /// `( expr, expr, … )` after the name; returns the args and the `)` position.
    fn parse_args(&mut self) -> PResult<(Vec<Expr>, PosRange)> {
        // The caller has checked the `(`.
        self.next();
        let mut args = Vec::new();
        if self.peek().kind == TokKind::RParen {
            return Ok((args, self.next().pos));
        }
        loop {
            args.push(self.parse_expr(0)?);
            match self.peek().kind {
                TokKind::Comma => {
                    self.next();
                    if self.peek().kind == TokKind::RParen {
                        return Err((
                            self.peek().pos,
                            "trailing commas not allowed in function call args".into(),
                        ));
                    }
                }
                TokKind::RParen => return Ok((args, self.next().pos)),
                _ => return self.unexpected("", ""),
            }
        }
    }

    /// `info(v, {…})`: the optional second argument is a bare label
    /// selector; only it may consist of matchers that match the empty string.
    fn check_info_args(&self, args: &[Expr]) -> PResult<()> {
        if let Some(ExprKind::Vector(sel)) = args.first().map(|a| &a.kind)
            && !sel.matchers.iter().any(|m| !m.matches_empty())
        {
            return Err((
                args[0].pos,
                "vector selector must contain at least one non-empty matcher".into(),
            ));
        }
        if let Some(sel) = args.get(1) {
            match &sel.kind {
                ExprKind::Vector(_) if self.input[sel.pos.start..].starts_with('{') => {}
                ExprKind::Vector(_) => {
                    return Err((
                        sel.pos,
                        "expected label selectors only, got vector selector instead".into(),
                    ));
                }
                _ => return Err((sel.pos, "expected label selectors only".into())),
            }
        }
        Ok(())
    }

    fn parse_grouping(&mut self) -> PResult<Vec<String>> {
        if self.peek().kind != TokKind::LParen {
            return self.unexpected("grouping opts", "\"(\"");
        }
        self.next();
        let mut labels = Vec::new();
        loop {
            let t = self.peek().clone();
            match &t.kind {
                TokKind::RParen => {
                    self.next();
                    return Ok(labels);
                }
                TokKind::Word => {
                    self.next();
                    labels.push(self.text(&t).to_owned());
                }
                TokKind::Str(s) => {
                    self.next();
                    labels.push(s.clone());
                }
                _ => return self.unexpected("grouping opts", "label"),
            }
            match self.peek().kind {
                TokKind::Comma => {
                    self.next();
                }
                TokKind::RParen => {}
                _ => return self.unexpected("grouping opts", "\",\" or \")\""),
            }
        }
    }

    fn parse_aggregate(&mut self, op_tok: &Token) -> PResult<Expr> {
        let op = AggOp::from_name(self.text(op_tok))
            .ok_or((op_tok.pos, "not an aggregator".to_owned()))?;
        self.next();
        let mut grouping = Vec::new();
        let mut without = false;
        let mut prefix = false;
        if let Some(w @ ("by" | "without")) = self.peek_word().as_deref() {
            without = w == "without";
            self.next();
            grouping = self.parse_grouping()?;
            prefix = true;
        }
        if self.peek().kind != TokKind::LParen {
            return self.unexpected("aggregation", "\"(\"");
        }
        if self.peek_n(1).kind == TokKind::RParen {
            return Err((
                op_tok.pos.to(self.peek_n(1).pos),
                "no arguments for aggregate expression provided".into(),
            ));
        }
        let (mut args, close) = self.parse_args()?;
        let mut pos = op_tok.pos.to(close);
        if !prefix && let Some(w @ ("by" | "without")) = self.peek_word().as_deref() {
            without = w == "without";
            self.next();
            grouping = self.parse_grouping()?;
            pos = pos.to(self.toks[self.i - 1].pos);
        }
        let want = if op.param_type().is_some() { 2 } else { 1 };
        if args.len() != want {
            return Err((
                pos,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            ));
        }
        let expr = args.pop().ok_or((pos, "missing argument".to_owned()))?;
        let param = args.pop();
        if let (Some(p), Some(want)) = (&param, op.param_type()) {
            let ty = p.value_type();
            if ty != want {
                return Err((
                    p.pos,
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        want.name(),
                        ty.name()
                    ),
                ));
            }
        }
        let ty = expr.value_type();
        if ty != ValueType::InstantVector {
            return Err((
                expr.pos,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    ty.name()
                ),
            ));
        }
        Ok(Expr {
            pos,
            kind: ExprKind::Aggregate {
                op,
                expr: Box::new(expr),
                param: param.map(Box::new),
                grouping,
                without,
            },
        })
    }

    fn parse_selector(&mut self, name: Option<String>, start: PosRange) -> PResult<Expr> {
        let mut matchers: Vec<Matcher> = Vec::new();
        let mut end = start;
        let mut inner_names: Vec<String> = Vec::new();
        if self.peek().kind == TokKind::LBrace {
            self.next();
            loop {
                let t = self.peek().clone();
                let label = match &t.kind {
                    TokKind::RBrace => {
                        end = self.next().pos;
                        break;
                    }
                    TokKind::Word => self.text(&t).to_owned(),
                    TokKind::Str(s) => {
                        let follows = &self.peek_n(1).kind;
                        if matches!(follows, TokKind::Comma | TokKind::RBrace) {
                            self.next();
                            inner_names.push(s.clone());
                            matchers.push(Matcher::equal("__name__", s.clone()));
                            if self.peek().kind == TokKind::Comma {
                                self.next();
                            }
                            continue;
                        }
                        s.clone()
                    }
                    _ => return self.unexpected("label matching", "identifier or \"}\""),
                };
                self.next();
                let op = match self.peek().kind {
                    TokKind::Assign => MatchOp::Equal,
                    TokKind::Neq => MatchOp::NotEqual,
                    TokKind::EqlRegex => MatchOp::Regex,
                    TokKind::NeqRegex => MatchOp::NotRegex,
                    _ => {
                        return self.unexpected("label matching", "label matching operator");
                    }
                };
                self.next();
                let vt = self.peek().clone();
                let TokKind::Str(value) = &vt.kind else {
                    return self.unexpected("label matching", "string");
                };
                self.next();
                let m =
                    Matcher::new(op, label, value.clone()).map_err(|e| (vt.pos, e.to_string()))?;
                matchers.push(m);
                match self.peek().kind {
                    TokKind::Comma => {
                        self.next();
                    }
                    TokKind::RBrace => {}
                    _ => return self.unexpected("label matching", "\",\" or \"}\""),
                }
            }
        }
        let pos = start.to(end);
        if let Some(n) = &name {
            if let Some(m) = matchers.iter().find(|m| m.name() == "__name__") {
                return Err((
                    pos,
                    format!(
                        "metric name must not be set twice: {n:?} or {:?}",
                        m.value()
                    ),
                ));
            }
            matchers.insert(0, Matcher::equal("__name__", n.clone()));
        }
        if !self.in_info && !matchers.iter().any(|m| !m.matches_empty()) {
            return Err((
                pos,
                "vector selector must contain at least one non-empty matcher".into(),
            ));
        }
        let name = name.or_else(|| inner_names.into_iter().next());
        Ok(Expr {
            pos,
            kind: ExprKind::Vector(VectorSelector {
                name,
                matchers,
                offset: Duration::Const(0),
                at: None,
                smoothed: false,
            }),
        })
    }
}

fn uses_query_params(e: &DurationExpr) -> bool {
    match e {
        DurationExpr::Num(_) => false,
        DurationExpr::Step | DurationExpr::Range => true,
        DurationExpr::Neg(a) => uses_query_params(a),
        DurationExpr::Bin(_, a, b) | DurationExpr::MinMax(_, a, b) => {
            uses_query_params(a) || uses_query_params(b)
        }
    }
}

/// Rejects `/ 0` and `% 0` with a constant zero divisor.
fn check_zero_divisors(e: &DurationExpr) -> Result<(), String> {
    match e {
        DurationExpr::Num(_) | DurationExpr::Step | DurationExpr::Range => Ok(()),
        DurationExpr::Neg(a) => check_zero_divisors(a),
        DurationExpr::MinMax(_, a, b) => {
            check_zero_divisors(a)?;
            check_zero_divisors(b)
        }
        DurationExpr::Bin(op, a, b) => {
            check_zero_divisors(a)?;
            check_zero_divisors(b)?;
            if !uses_query_params(b) && b.eval(0.0, 0.0) == 0.0 {
                match op {
                    '/' => return Err("division by zero".into()),
                    '%' => return Err("modulo by zero".into()),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// Formats a float as Go's `%f` does for the special values Prometheus
/// prints in `@` errors.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:.6}")
    }
}
