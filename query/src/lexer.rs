//! The PromQL lexer: turns a query string into tokens with byte positions.
//!
//! It follows Prometheus's lexical rules: it tracks whether it is inside
//! braces (label matchers) or brackets (ranges, subquery steps, duration
//! expressions), because the same characters mean different things there.
//! Lexical errors become a final [`TokKind::Error`] token carrying
//! Prometheus's message; the parser reports it when it reaches that token,
//! so an earlier syntax error wins, as in Prometheus.
//!
//! Invariant: the token list always ends with exactly one `Eof` or `Error`.

use crate::ast::PosRange;

/// The kinds of token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokKind {
    /// A word: identifier, metric identifier (may contain `:`), or keyword.
    Word,
    /// A number literal, already converted.
    Number(f64),
    /// A duration literal like `5m`, in milliseconds.
    Duration(i64),
    /// A string literal, unquoted.
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    /// `=`
    Assign,
    Colon,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// `==`
    Eqlc,
    /// `!=`
    Neq,
    Lss,
    Lte,
    Gtr,
    Gte,
    /// `=~`
    EqlRegex,
    /// `!~`
    NeqRegex,
    At,
    /// `</` or `>/`, the experimental histogram trim operators.
    Trim,
    Eof,
    /// A lexical error with Prometheus's message.
    Error(String),
}

/// One token: its kind and where it is in the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokKind,
    pub pos: PosRange,
}

const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
];

const KEYWORDS: &[&str] = &[
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "start",
    "end",
    "step",
    "range",
    "anchored",
    "smoothed",
    "fill",
    "fill_left",
    "fill_right",
];

/// Whether `w` is one of the aggregation operators.
pub(crate) fn is_aggregator(w: &str) -> bool {
    AGGREGATORS.contains(&w.to_ascii_lowercase().as_str())
}

impl Token {
    /// How Prometheus names this token in "unexpected …" messages.
    pub fn describe(&self, input: &str) -> String {
        let text = &input[self.pos.start..self.pos.end];
        match &self.kind {
            TokKind::Eof => "end of input".to_owned(),
            TokKind::Error(m) => m.clone(),
            TokKind::Word => {
                let lower = text.to_ascii_lowercase();
                if matches!(lower.as_str(), "and" | "or" | "unless" | "atan2") {
                    format!("<op:{text}>")
                } else if AGGREGATORS.contains(&lower.as_str()) {
                    format!("<aggr:{text}>")
                } else if KEYWORDS.contains(&lower.as_str()) {
                    format!("<{text}>")
                } else {
                    format!("identifier {text:?}")
                }
            }
            TokKind::Number(_) => format!("number {text:?}"),
            TokKind::Duration(_) => format!("duration {text:?}"),
            TokKind::Str(_) => format!("string {text:?}"),
            TokKind::Add
            | TokKind::Sub
            | TokKind::Mul
            | TokKind::Div
            | TokKind::Mod
            | TokKind::Pow
            | TokKind::Eqlc
            | TokKind::Neq
            | TokKind::Lss
            | TokKind::Lte
            | TokKind::Gtr
            | TokKind::Gte
            | TokKind::EqlRegex
            | TokKind::NeqRegex
            | TokKind::At
            | TokKind::Trim => format!("<op:{text}>"),
            _ => format!("{text:?}"),
        }
    }
}

/// Lexes the whole input. See the module documentation.
pub(crate) fn lex(input: &str) -> Vec<Token> {
    let mut lx = Lexer {
        src: input,
        pos: 0,
        toks: Vec::new(),
        paren_depth: 0,
        in_braces: false,
        in_bracket: false,
    };
    lx.run();
    lx.toks
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Token>,
    paren_depth: usize,
    in_braces: bool,
    in_bracket: bool,
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alnum(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

/// Go's `%q` for one rune, as Prometheus prints unexpected characters.
pub(crate) fn quote_char(c: char) -> String {
    let mut s = String::from("'");
    match c {
        '\'' => s.push_str("\\'"),
        '\\' => s.push_str("\\\\"),
        '\n' => s.push_str("\\n"),
        '\t' => s.push_str("\\t"),
        '\r' => s.push_str("\\r"),
        c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
        c => s.push(c),
    }
    s.push('\'');
    s
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, kind: TokKind, start: usize) {
        self.toks.push(Token {
            kind,
            pos: PosRange {
                start,
                end: self.pos,
            },
        });
    }

    fn error(&mut self, msg: String, start: usize) {
        self.push(TokKind::Error(msg), start);
    }

    fn run(&mut self) {
        loop {
            let done = if self.in_braces {
                self.lex_in_braces()
            } else {
                self.lex_statement()
            };
            if done {
                return;
            }
        }
    }

    /// Lexes one token outside braces; returns true when lexing ended.
    fn lex_statement(&mut self) -> bool {
        let start = self.pos;
        let Some(c) = self.bump() else {
            if self.paren_depth > 0 {
                self.error("unclosed left parenthesis".into(), start);
            } else {
                self.push(TokKind::Eof, start);
            }
            return true;
        };
        let simple = |k: TokKind| Some(k);
        let kind = match c {
            '#' => {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
                None
            }
            c if c.is_whitespace() => None,
            ',' => simple(TokKind::Comma),
            '*' => simple(TokKind::Mul),
            '/' => simple(TokKind::Div),
            '%' => simple(TokKind::Mod),
            '+' => simple(TokKind::Add),
            '-' => simple(TokKind::Sub),
            '^' => simple(TokKind::Pow),
            '@' => simple(TokKind::At),
            '=' => match self.peek() {
                Some('=') => {
                    self.bump();
                    simple(TokKind::Eqlc)
                }
                Some('~') => {
                    self.error("unexpected character after '=': '~'".into(), start);
                    return true;
                }
                _ => simple(TokKind::Assign),
            },
            '!' => match self.peek() {
                Some('=') => {
                    self.bump();
                    simple(TokKind::Neq)
                }
                other => {
                    let shown = other.map(quote_char).unwrap_or_else(|| "EOF".into());
                    self.error(format!("unexpected character after '!': {shown}"), start);
                    return true;
                }
            },
            '<' | '>' => {
                let lt = c == '<';
                match self.peek() {
                    Some('=') => {
                        self.bump();
                        simple(if lt { TokKind::Lte } else { TokKind::Gte })
                    }
                    Some('/') => {
                        self.bump();
                        simple(TokKind::Trim)
                    }
                    _ => simple(if lt { TokKind::Lss } else { TokKind::Gtr }),
                }
            }
            '"' | '\'' | '`' if self.in_bracket => {
                self.error(
                    format!(
                        "unexpected character in duration expression: {}",
                        quote_char(c)
                    ),
                    start,
                );
                return true;
            }
            '"' | '\'' => {
                return !self.lex_string(c, start);
            }
            '`' => {
                return !self.lex_raw_string(start);
            }
            '(' => {
                self.paren_depth += 1;
                simple(TokKind::LParen)
            }
            ')' => {
                if self.paren_depth == 0 {
                    self.error("unexpected right parenthesis ')'".into(), start);
                    return true;
                }
                self.paren_depth -= 1;
                simple(TokKind::RParen)
            }
            '{' => {
                self.in_braces = true;
                simple(TokKind::LBrace)
            }
            '[' => {
                if self.in_bracket {
                    self.error("unexpected left bracket '['".into(), start);
                    return true;
                }
                self.in_bracket = true;
                simple(TokKind::LBracket)
            }
            ']' => {
                if !self.in_bracket {
                    self.error("unexpected right bracket ']'".into(), start);
                    return true;
                }
                self.in_bracket = false;
                simple(TokKind::RBracket)
            }
            ':' if self.in_bracket => simple(TokKind::Colon),
            c if c.is_ascii_digit()
                || (c == '.' && self.peek().is_some_and(|d| d.is_ascii_digit())) =>
            {
                return !self.lex_number_or_duration(start);
            }
            c if is_alpha(c) || c == ':' => {
                while let Some(c) = self.peek() {
                    if is_alnum(c) || c == ':' {
                        self.bump();
                    } else {
                        break;
                    }
                }
                let word = &self.src[start..self.pos];
                let lower = word.to_ascii_lowercase();
                if lower == "inf" {
                    simple(TokKind::Number(f64::INFINITY))
                } else if lower == "nan" {
                    simple(TokKind::Number(f64::NAN))
                } else if self.in_bracket
                    && !matches!(lower.as_str(), "step" | "range" | "min_of" | "max_of")
                {
                    self.error(
                        format!("unexpected character: {}, expected ':'", quote_char(c)),
                        start,
                    );
                    return true;
                } else {
                    simple(TokKind::Word)
                }
            }
            c if self.in_bracket => {
                self.error(
                    format!(
                        "unexpected character in duration expression: {}",
                        quote_char(c)
                    ),
                    start,
                );
                return true;
            }
            c => {
                self.error(format!("unexpected character: {}", quote_char(c)), start);
                return true;
            }
        };
        if let Some(k) = kind {
            self.push(k, start);
        }
        false
    }

    /// Lexes one token inside braces; returns true when lexing ended.
    fn lex_in_braces(&mut self) -> bool {
        let start = self.pos;
        let Some(c) = self.bump() else {
            self.error("unexpected end of input inside braces".into(), start);
            return true;
        };
        let kind = match c {
            c if c.is_whitespace() => None,
            ',' => Some(TokKind::Comma),
            '"' | '\'' => return !self.lex_string(c, start),
            '`' => return !self.lex_raw_string(start),
            '=' => {
                if self.peek() == Some('~') {
                    self.bump();
                    Some(TokKind::EqlRegex)
                } else {
                    Some(TokKind::Assign)
                }
            }
            '!' => match self.bump() {
                Some('~') => Some(TokKind::NeqRegex),
                Some('=') => Some(TokKind::Neq),
                other => {
                    let shown = other.map(quote_char).unwrap_or_else(|| "EOF".into());
                    self.error(
                        format!("unexpected character after '!' inside braces: {shown}"),
                        start,
                    );
                    return true;
                }
            },
            '{' => {
                self.error("unexpected left brace '{' inside braces".into(), start);
                return true;
            }
            '}' => {
                self.in_braces = false;
                Some(TokKind::RBrace)
            }
            c if is_alpha(c) => {
                while self.peek().is_some_and(is_alnum) {
                    self.bump();
                }
                Some(TokKind::Word)
            }
            c => {
                self.error(
                    format!("unexpected character inside braces: {}", quote_char(c)),
                    start,
                );
                return true;
            }
        };
        if let Some(k) = kind {
            self.push(k, start);
        }
        false
    }

    /// Lexes a number or a duration; returns false on error (token pushed).
    fn lex_number_or_duration(&mut self, start: usize) -> bool {
        // Rewind to the first character, which the caller consumed.
        self.pos = start;
        let mut digits: &str = "0123456789";
        if self.peek() == Some('0') && matches!(self.peek_at(1), Some('x' | 'X')) {
            self.pos += 2;
            if self.peek() == Some('_') {
                self.pos += 1;
            }
            digits = "0123456789abcdefABCDEF_";
        }
        let accept_run = |lx: &mut Self, set: &str| {
            while lx.peek().is_some_and(|c| set.contains(c)) {
                lx.bump();
            }
        };
        accept_run(self, digits);
        if self.peek() == Some('.') {
            self.bump();
            accept_run(self, digits);
        }
        if digits.len() == 10 && matches!(self.peek(), Some('e' | 'E')) {
            // An exponent only when digits follow, else `e` may be a unit-less error.
            let save = self.pos;
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                accept_run(self, "0123456789_");
            } else {
                self.pos = save;
            }
        }
        match self.peek() {
            Some('.') => {
                self.bump();
                let text = &self.src[start..self.pos];
                self.error(format!("bad number or duration syntax: {text:?}"), start);
                false
            }
            Some(c) if is_alnum(c) => {
                // Not a number: maybe a duration such as `5m` or `1h30m`.
                self.pos = start;
                accept_run(self, "0123456789");
                if self.accept_remaining_duration() {
                    let text = &self.src[start..self.pos];
                    match parse_duration(text) {
                        Ok(ms) => {
                            self.push(TokKind::Duration(ms), start);
                            true
                        }
                        Err(m) => {
                            self.error(m, start);
                            false
                        }
                    }
                } else {
                    let text = &self.src[start..self.pos];
                    self.error(format!("bad number or duration syntax: {text:?}"), start);
                    false
                }
            }
            _ => {
                let text = &self.src[start..self.pos];
                match parse_number(text) {
                    Ok(v) => {
                        self.push(TokKind::Number(v), start);
                        true
                    }
                    Err(m) => {
                        self.error(m, start);
                        false
                    }
                }
            }
        }
    }

    /// After leading digits: units and further digit/unit groups. On
    /// success the position is after the duration; on failure it is after
    /// the offending character, which Prometheus includes in its message.
    fn accept_remaining_duration(&mut self) -> bool {
        let unit = |lx: &mut Self| -> bool {
            if lx.peek().is_some_and(|c| "smhdwy".contains(c)) {
                lx.bump();
                if lx.peek() == Some('s') {
                    lx.bump();
                }
                true
            } else {
                false
            }
        };
        if !unit(self) {
            return false;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            if !unit(self) {
                return false;
            }
        }
        match self.peek() {
            Some(c) if is_alnum(c) => {
                self.bump();
                false
            }
            _ => true,
        }
    }

    /// Lexes a quoted string with Go escapes; returns false on error.
    fn lex_string(&mut self, quote: char, start: usize) -> bool {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                self.error("unterminated quoted string".into(), start);
                return false;
            };
            match c {
                '\n' => {
                    self.error("unterminated quoted string".into(), start);
                    return false;
                }
                '\\' => {
                    if let Err(m) = self.lex_escape(quote, &mut out) {
                        self.error(m, start);
                        return false;
                    }
                }
                c if c == quote => break,
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        let s = String::from_utf8_lossy(&out).into_owned();
        self.push(TokKind::Str(s), start);
        true
    }

    fn lex_escape(&mut self, quote: char, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(c) = self.bump() else {
            return Err("escape sequence not terminated".into());
        };
        let simple = match c {
            'a' => Some(7u8),
            'b' => Some(8),
            'f' => Some(12),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(11),
            '\\' => Some(b'\\'),
            c if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let (n, base, max, first) = match c {
            '0'..='7' => (3, 8, 255, Some(c)),
            'x' => (2, 16, 255, self.bump()),
            'u' => (4, 16, 0x10FFFF, self.bump()),
            'U' => (8, 16, 0x10FFFF, self.bump()),
            c => {
                return Err(format!(
                    "unknown escape sequence U+{:04X} {}",
                    c as u32,
                    quote_char(c)
                ));
            }
        };
        let mut ch = first;
        let mut x: u32 = 0;
        for i in 0..n {
            let Some(c) = ch else {
                return Err("escape sequence not terminated".into());
            };
            let d = c.to_digit(16).filter(|d| *d < base);
            let Some(d) = d else {
                return Err(format!(
                    "illegal character U+{:04X} {} in escape sequence",
                    c as u32,
                    quote_char(c)
                ));
            };
            x = x * base + d;
            if i + 1 < n {
                ch = self.bump();
            }
        }
        if x > max || (0xD800..0xE000).contains(&x) {
            return Err("escape sequence is an invalid Unicode code point".into());
        }
        if max == 255 {
            out.push(x as u8);
        } else if let Some(ch) = char::from_u32(x) {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        Ok(())
    }

    fn lex_raw_string(&mut self, start: usize) -> bool {
        loop {
            match self.bump() {
                None => {
                    self.error("unterminated raw string".into(), start);
                    return false;
                }
                Some('`') => break,
                Some(_) => {}
            }
        }
        let s = self.src[start + 1..self.pos - 1].to_owned();
        self.push(TokKind::Str(s), start);
        true
    }
}

/// Parses a number literal as Prometheus does: integers with Go's base
/// prefixes (`0x`, leading `0` for octal), else a float.
pub(crate) fn parse_number(text: &str) -> Result<f64, String> {
    let clean = text.replace('_', "");
    let int = if let Some(h) = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else if clean.len() > 1 && clean.starts_with('0') && clean.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&clean[1..], 8).ok()
    } else {
        clean.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Ok(i as f64);
    }
    match clean.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(format!(
            "error parsing number: strconv.ParseFloat: parsing {text:?}: value out of range"
        )),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("bad number or duration syntax: {text:?}")),
    }
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `100ms`) to milliseconds.
/// Units must appear at most once each, largest first.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    const UNITS: &[(&str, i64)] = &[
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut parts: Vec<(i64, &str)> = Vec::new();
    while i < bytes.len() {
        let ds = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let us = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        if ds == us || us == i {
            return Err(format!("not a valid duration string: {text:?}"));
        }
        let n: i64 = text[ds..us]
            .parse()
            .map_err(|_| "duration out of range".to_owned())?;
        let unit = &text[us..i];
        if !UNITS.iter().any(|(u, _)| *u == unit) {
            return Err(format!("unknown unit {unit:?} in duration {text:?}"));
        }
        parts.push((n, unit));
    }
    let mut total: i64 = 0;
    let mut last_idx: Option<usize> = None;
    for (n, unit) in parts {
        let idx = UNITS.iter().position(|(u, _)| *u == unit).unwrap_or(0);
        if last_idx.is_some_and(|l| idx <= l) {
            return Err(format!("not a valid duration string: {text:?}"));
        }
        last_idx = Some(idx);
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_owned())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<TokKind> {
        lex(s).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn durations_follow_prometheus_rules() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1m30ms"), Ok(60_030));
        assert_eq!(parse_duration("1y"), Ok(31_536_000_000));
        assert!(
            parse_duration("5m1h")
                .unwrap_err()
                .contains("not a valid duration")
        );
        assert!(parse_duration("5hs").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn numbers_use_go_integer_prefixes() {
        assert_eq!(parse_number("0x1f"), Ok(31.0));
        assert_eq!(parse_number("0755"), Ok(493.0));
        assert_eq!(parse_number("1e3"), Ok(1000.0));
        assert!(
            parse_number(&"9".repeat(400))
                .unwrap_err()
                .contains("value out of range")
        );
    }

    #[test]
    fn strings_unescape_and_raw_strings_do_not() {
        assert_eq!(
            kinds(r#""a\tb\x41\u00e9""#)[0],
            TokKind::Str("a\tbAé".into())
        );
        assert_eq!(kinds(r"`a\d`")[0], TokKind::Str(r"a\d".into()));
        assert_eq!(
            kinds(r#""\c""#)[0],
            TokKind::Error("unknown escape sequence U+0063 'c'".into())
        );
    }

    #[test]
    fn braces_and_brackets_change_the_rules() {
        assert_eq!(
            kinds("a{b=~\"c\"}[5m:1m]"),
            vec![
                TokKind::Word,
                TokKind::LBrace,
                TokKind::Word,
                TokKind::EqlRegex,
                TokKind::Str("c".into()),
                TokKind::RBrace,
                TokKind::LBracket,
                TokKind::Duration(300_000),
                TokKind::Colon,
                TokKind::Duration(60_000),
                TokKind::RBracket,
                TokKind::Eof,
            ]
        );
        assert_eq!(
            kinds("a{b:c}").last(),
            Some(&TokKind::Error(
                "unexpected character inside braces: ':'".into()
            ))
        );
    }
}
