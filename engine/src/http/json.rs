//! Writing the API's JSON the way Prometheus writes it, byte for byte where
//! clients could tell the difference.
//!
//! Query results are the API's big responses, so they are written straight
//! into one buffer rather than through an intermediate value tree. The
//! rules: a timestamp is unix seconds with the millisecond fraction written
//! as exactly three digits and left out when zero (`1.5` s is `1.500`); a
//! sample value is a string holding the shortest decimal that round-trips,
//! never in exponent form, with `+Inf`, `-Inf` and `NaN` spelled so; strings
//! are escaped as Go's encoding/json escapes them (including `<`, `>`, `&`,
//! U+2028 and U+2029).

use std::fmt::Write as _;

use kiln_storage::Labels;

/// A JSON document being written into one buffer.
#[derive(Debug, Default)]
pub struct JsonBuf {
    buf: String,
}

impl JsonBuf {
    /// An empty buffer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        JsonBuf {
            buf: String::with_capacity(cap),
        }
    }

    /// Appends raw JSON text (punctuation, keys known to need no escaping).
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.buf.push_str(s);
        self
    }

    /// Appends `s` as a JSON string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buf.reserve(s.len() + 2);
        self.buf.push('"');
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let esc: Option<&str> = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '<' => Some("\\u003c"),
                '>' => Some("\\u003e"),
                '&' => Some("\\u0026"),
                '\u{2028}' => Some("\\u2028"),
                '\u{2029}' => Some("\\u2029"),
                c if (c as u32) < 0x20 => None,
                _ => continue,
            };
            self.buf.push_str(&s[start..i]);
            match esc {
                Some(e) => self.buf.push_str(e),
                None => {
                    let _ = write!(self.buf, "\\u{:04x}", c as u32);
                }
            }
            start = i + c.len_utf8();
        }
        self.buf.push_str(&s[start..]);
        self.buf.push('"');
        self
    }

    /// Appends a timestamp in milliseconds as Prometheus renders it.
    pub fn timestamp(&mut self, t_ms: i64) -> &mut Self {
        let neg = t_ms < 0;
        let t = t_ms.unsigned_abs();
        if neg {
            self.buf.push('-');
        }
        let _ = write!(self.buf, "{}", t / 1000);
        let frac = t % 1000;
        if frac != 0 {
            let _ = write!(self.buf, ".{frac:03}");
        }
        self
    }

    /// Appends a sample value as a JSON string, rendered as Prometheus
    /// renders floats.
    pub fn value(&mut self, v: f64) -> &mut Self {
        self.buf.push('"');
        push_float(&mut self.buf, v);
        self.buf.push('"');
        self
    }

    /// Appends `[t, "v"]`.
    pub fn point(&mut self, t_ms: i64, v: f64) -> &mut Self {
        self.raw("[").timestamp(t_ms).raw(",").value(v).raw("]")
    }

    /// Appends a label set as a JSON object, in label order.
    pub fn labels(&mut self, labels: &Labels) -> &mut Self {
        self.raw("{");
        for (i, l) in labels.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.string(l.name).raw(":").string(l.value);
        }
        self.raw("}")
    }

    /// Appends an array of strings.
    pub fn strings<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.raw("[");
        for (i, s) in items.into_iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.string(s);
        }
        self.raw("]")
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Renders a float as Go's `strconv.FormatFloat(v, 'f', -1, 64)`, which
/// Prometheus uses for sample values: the shortest decimal that round-trips,
/// without exponent. Rust's `Display` for `f64` has exactly that contract.
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut JsonBuf)) -> String {
        let mut b = JsonBuf::default();
        f(&mut b);
        b.finish()
    }

    #[test]
    fn timestamps_as_prometheus() {
        let cases = [
            (0, "0"),
            (1000, "1"),
            (1500, "1.500"),
            (1_435_781_451_781, "1435781451.781"),
            (1_435_781_451_001, "1435781451.001"),
            (1_435_781_451_010, "1435781451.010"),
            (-1500, "-1.500"),
            (-1, "-0.001"),
        ];
        for (t, want) in cases {
            assert_eq!(
                render(|b| {
                    b.timestamp(t);
                }),
                want,
                "{t}"
            );
        }
    }

    #[test]
    fn values_as_go_formats_them() {
        // Expected texts are Go's strconv.FormatFloat(v, 'f', -1, 64).
        let cases = [
            (1.0, "1"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (123456789.123, "123456789.123"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (f64::from_bits(0x7ff0_0000_0000_0002), "NaN"),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            push_float(&mut s, v);
            assert_eq!(s, want, "{v}");
        }
        // 1.7976931348623157e308: the 17 significant digits, then zeros.
        let mut s = String::new();
        push_float(&mut s, f64::MAX);
        assert_eq!(s, format!("17976931348623157{}", "0".repeat(292)));
    }

    #[test]
    fn strings_escaped_as_go() {
        let got = render(|b| {
            b.string("a\"b\\c\nd<e>&f\u{1}\u{2028}é");
        });
        assert_eq!(got, r#""a\"b\\c\nd\u003ce\u003e\u0026f\u0001\u2028é""#);
        // The output is valid JSON that decodes to the input.
        let back: String = serde_json::from_str(&got).unwrap();
        assert_eq!(back, "a\"b\\c\nd<e>&f\u{1}\u{2028}é");
    }

    #[test]
    fn labels_and_points() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]).unwrap();
        let got = render(|b| {
            b.labels(&l).raw(",").point(1500, 2.5);
        });
        assert_eq!(got, r#"{"__name__":"up","job":"a\"b"},[1.500,"2.5"]"#);
        assert_eq!(
            render(|b| {
                b.strings(["a", "b"]);
            }),
            r#"["a","b"]"#
        );
        assert_eq!(
            render(|b| {
                b.strings([]);
            }),
            "[]"
        );
    }
}
