//! Label matchers: `=`, `!=`, `=~`, `!~` with Prometheus semantics.
//!
//! * Regexes are fully anchored: the pattern `p` is compiled as `^(?s:p)$`,
//!   so `.` also matches a newline and the whole value must match.
//! * Regexes follow Go RE2 where it differs from Rust's `regex` crate: the
//!   Perl classes `\d \w \s` and the word boundary `\b` are ASCII-only, a `[`
//!   inside a class is a literal, `&&`/`--`/`~~` inside a class are literals,
//!   and a `{` that does not start a repetition is a literal. The pattern is
//!   rewritten once, at construction ([`translate_go_regex`]).
//! * A label that a series does not have has the value `""`; so a matcher
//!   that matches the empty string also selects series without the label.
//!
//! Invariant: `re` is `Some` exactly when `op` is a regex operator.

use std::fmt;

use regex::Regex;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// Why a matcher could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// The regex does not compile.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern as given.
        pattern: String,
        /// The compiler's explanation.
        reason: String,
    },
}

/// A compiled label matcher.
#[derive(Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; regex operators compile `value` with Prometheus's
    /// anchoring and Go's semantics.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile_anchored(&value)?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            re,
        })
    }

    /// Shorthand for an `=` matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value or pattern as written (unanchored, untranslated).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether the label value `v` (`""` for a missing label) matches.
    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // Unreachable by the struct invariant; treat as no match.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the matcher selects series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if crate::labels::is_legacy_label_name(&self.name) {
            f.write_str(&self.name)?;
        } else {
            write!(f, "{:?}", self.name)?;
        }
        write!(f, "{}{:?}", self.op.as_str(), self.value)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn compile_anchored(pattern: &str) -> Result<Regex, MatcherError> {
    let translated = translate_go_regex(pattern);
    Regex::new(&format!("^(?s:{translated})$")).map_err(|e| MatcherError::InvalidRegex {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\x0C\r ";

/// Rewrites a Go RE2 pattern into a Rust `regex` pattern with the same
/// meaning. See the module documentation for the differences handled. The
/// rewrite never makes an invalid Go pattern valid except for the literal
/// `{` case, which Go itself accepts.
pub fn translate_go_regex(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    // Inside a bracketed class; `class_start` is the index just after `[`/`[^`.
    let mut in_class = false;
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else {
                out.push('\\'); // Trailing backslash: leave the error to the compiler.
                break;
            };
            let class = match e {
                'd' | 'D' => Some(DIGIT),
                'w' | 'W' => Some(WORD),
                's' | 'S' => Some(SPACE),
                _ => None,
            };
            match (class, in_class) {
                (Some(set), false) => {
                    out.push('[');
                    if e.is_ascii_uppercase() {
                        out.push('^');
                    }
                    out.push_str(set);
                    out.push(']');
                }
                (Some(set), true) if e.is_ascii_lowercase() => out.push_str(set),
                // A negated class inside a class: nested classes are a union.
                (Some(set), true) => {
                    out.push_str("[^");
                    out.push_str(set);
                    out.push(']');
                }
                (None, false) if e == 'b' || e == 'B' => {
                    out.push_str("(?-u:\\");
                    out.push(e);
                    out.push(')');
                }
                _ => {
                    out.push('\\');
                    out.push(e);
                }
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' if i > class_start => {
                    in_class = false;
                    out.push(']');
                }
                // Go: POSIX classes like [:alpha:] are kept as they are.
                '[' if chars.get(i + 1) == Some(&':') => {
                    if let Some(end) = find_posix_end(&chars, i + 2) {
                        out.extend(&chars[i..=end]);
                        i = end + 1;
                        continue;
                    }
                    out.push_str("\\[");
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                // `--` is set difference in Rust; in Go a `-` next to another
                // `-` is a range endpoint or a literal. Escape a `-` that
                // follows a `-`.
                '-' if out.ends_with('-') && !out.ends_with("\\-") => out.push_str("\\-"),
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                // A `]` first in a class is a literal in both dialects.
                continue;
            }
            // A repetition `{n}`, `{n,}`, `{n,m}` is copied whole; any other
            // brace is a literal in Go and must be escaped for Rust.
            '{' if starts_repetition(&chars, i) => {
                while i < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                    if chars[i - 1] == '}' {
                        break;
                    }
                }
                continue;
            }
            '{' => out.push_str("\\{"),
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether `chars[at] == '{'` starts a valid Go repetition `{n}`, `{n,}` or
/// `{n,m}` (which also requires something to repeat before it).
fn starts_repetition(chars: &[char], at: usize) -> bool {
    if at == 0 {
        return false;
    }
    let mut i = at + 1;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    if !digits(&mut i) {
        return false;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    chars.get(i) == Some(&'}')
}

fn find_posix_end(chars: &[char], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < chars.len() {
        if chars[i] == ':' && chars[i + 1] == ']' {
            return Some(i + 1);
        }
        if !chars[i].is_ascii_alphabetic() && chars[i] != '^' {
            return None;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Matcher {
        Matcher::new(MatchOp::Regex, "l", p).unwrap()
    }

    #[test]
    fn anchored_and_dot_matches_newline() {
        assert!(re("foo").matches("foo"));
        assert!(!re("foo").matches("foobar"));
        assert!(!re("foo").matches("xfoo"));
        assert!(re("a.c").matches("a\nc"));
        assert!(re("a|b").matches("b"));
        assert!(!re("a|b").matches("ab"));
    }

    #[test]
    fn perl_classes_are_ascii() {
        assert!(re(r"\d+").matches("123"));
        assert!(!re(r"\d").matches("٣")); // Arabic-Indic digit three
        assert!(!re(r"\w").matches("é"));
        assert!(re(r"\W").matches("é"));
        assert!(re(r"[\d\s]+").matches("1 2"));
        assert!(re(r"[a\D]").matches("é"));
        assert!(!re(r"\s").matches("\u{00a0}"));
        assert!(re(r"\bfoo\b").matches("foo"));
    }

    #[test]
    fn go_literal_quirks() {
        assert!(re("[[]").matches("["));
        assert!(re("[a&&b]").matches("&"));
        assert!(re("[]a]").matches("]"));
        assert!(re("a{").matches("a{"));
        assert!(re("{x}").matches("{x}"));
        assert!(re("a{2}").matches("aa"));
        assert!(re("a{2,}").matches("aaa"));
        assert!(re("[[:alpha:]]+").matches("abc"));
        assert!(re("x{1,2}y").matches("xxy"));
    }

    #[test]
    fn empty_matching() {
        assert!(Matcher::equal("a", "").matches_empty());
        assert!(re(".*").matches_empty());
        assert!(!re(".+").matches_empty());
        assert!(
            Matcher::new(MatchOp::NotEqual, "a", "x")
                .unwrap()
                .matches_empty()
        );
        assert!(
            !Matcher::new(MatchOp::NotRegex, "a", ".*")
                .unwrap()
                .matches_empty()
        );
    }

    #[test]
    fn invalid_regex_is_an_error() {
        assert!(matches!(
            Matcher::new(MatchOp::Regex, "a", "(unclosed"),
            Err(MatcherError::InvalidRegex { .. })
        ));
        assert!(Matcher::new(MatchOp::Regex, "a", "*").is_err());
    }
}
