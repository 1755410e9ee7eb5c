//! Numbers in exposition text: sample values, timestamps, and the canonical
//! float text Prometheus writes for `le` and `quantile` label values.
//!
//! Values accept what Go's `strconv.ParseFloat` accepts for base 10 (decimal
//! and exponent forms, `NaN`, `Inf`, `+Inf`, `-Inf`, `infinity`, any case);
//! hexadecimal floats and `_` digit separators are refused, as Prometheus
//! refuses them. The common case (at most 19 significant digits and a power
//! of ten within ±22) is converted exactly without going through `str`: the
//! mantissa and the power of ten are both exact `f64`s, so one IEEE multiply
//! or divide gives the correctly rounded result (Clinger's fast path).

/// Exact powers of ten representable as `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest mantissa that converts to `f64` exactly.
const MAX_EXACT_MANTISSA: u64 = 1 << 53;

/// Parses a sample value. `None` when the text is not a float.
pub(crate) fn parse_float(b: &[u8]) -> Option<f64> {
    if let Some(v) = parse_float_fast(b) {
        return Some(v);
    }
    parse_float_slow(b)
}

/// Clinger's fast path; `None` means "not handled here", not "invalid".
#[inline]
fn parse_float_fast(b: &[u8]) -> Option<f64> {
    let mut i = 0;
    let neg = match b.first()? {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut exp10: i32 = 0;
    let int_start = i;
    i = accumulate_digits(b, i, &mut mantissa, &mut digits);
    let mut any_digit = i > int_start;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        i = accumulate_digits(b, i, &mut mantissa, &mut digits);
        // Saturating: a line may hold more fraction digits than i32 counts.
        exp10 = exp10.saturating_sub(i32::try_from(i - frac_start).unwrap_or(i32::MAX));
        any_digit |= i > frac_start;
    }
    if !any_digit || digits > 19 {
        return None;
    }
    if let Some(&(b'e' | b'E')) = b.get(i) {
        i += 1;
        let eneg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i32 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 || e > 10_000 {
                break;
            }
            e = e * 10 + i32::from(d);
            i += 1;
        }
        if i == start {
            return None;
        }
        exp10 += if eneg { -e } else { e };
    }
    if i != b.len() || mantissa > MAX_EXACT_MANTISSA {
        return None;
    }
    let m = mantissa as f64;
    let v = match exp10 {
        0 => m,
        1..=22 => m * POW10[exp10 as usize],
        -22..=-1 => m / POW10[(-exp10) as usize],
        _ => return None,
    };
    Some(if neg { -v } else { v })
}

/// Everything the fast path leaves: long mantissas, big exponents, and the
/// special values. Rust's parser is correctly rounded and accepts the same
/// base-10 syntax as Go's; only the letters need checking first, since Rust
/// also refuses hex and `_`, which Prometheus refuses too.
#[cold]
fn parse_float_slow(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<f64>().ok()
}

/// Parses a text-format timestamp: a base-10 `i64` of milliseconds.
pub(crate) fn parse_int_timestamp(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    // Accumulated as a negative number so that i64::MIN parses.
    if neg { Some(v) } else { v.checked_neg() }
}

/// Converts OpenMetrics float seconds to milliseconds as Prometheus does
/// (multiply, then truncate toward zero). `None` for NaN and ±Inf.
pub(crate) fn seconds_to_ms(s: f64) -> Option<i64> {
    if !s.is_finite() {
        return None;
    }
    // `as` saturates at the i64 range, which is the best answer for
    // timestamps beyond year 292 million.
    Some((s * 1000.0) as i64)
}

/// Formats `f` as Go's `strconv.FormatFloat(f, 'g', -1, 64)` followed by
/// `.0` when the result has neither `.` nor `e`: Prometheus's canonical text
/// for `le` and `quantile` values, so `1` and `1.0` name the same bucket.
pub(crate) fn format_openmetrics_float(f: f64) -> String {
    let mut s = kiln_storage::format_value(f);
    if f.is_finite() && !s.contains(['.', 'e']) {
        s.push_str(".0");
    }
    s
}

/// Folds the decimal digits of `b` from `i` on into `mantissa` (wrapping;
/// the caller rejects more than 19 digits) and counts them; returns the
/// index after the last digit.
#[inline]
fn accumulate_digits(b: &[u8], mut i: usize, mantissa: &mut u64, digits: &mut usize) -> usize {
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        *digits += 1;
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_std_parse() {
        for s in [
            "0",
            "1",
            "-1",
            "+1",
            "1.5",
            ".5",
            "5.",
            "1e3",
            "1.446521e+06",
            "4.9351e-05",
            "7.424100000000001e-05",
            "123456789012345678",
            "1234567890123456789012",
            "1e-300",
            "1e308",
            "2.5E-3",
            "0.1",
            "9007199254740993",
        ] {
            let want: f64 = s.parse().unwrap();
            assert_eq!(
                parse_float(s.as_bytes()).unwrap().to_bits(),
                want.to_bits(),
                "{s}"
            );
        }
    }

    #[test]
    fn special_and_invalid_floats() {
        assert!(parse_float(b"NaN").unwrap().is_nan());
        assert_eq!(parse_float(b"+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_float(b"-Inf"), Some(f64::NEG_INFINITY));
        for bad in [
            "", "-", ".", "e5", "1e", "1_2", "0x1p-3", "true", "1z", "1\t2", "1 2",
        ] {
            assert_eq!(parse_float(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn int_timestamps() {
        assert_eq!(parse_int_timestamp(b"123123"), Some(123123));
        assert_eq!(parse_int_timestamp(b"-5"), Some(-5));
        assert_eq!(parse_int_timestamp(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int_timestamp(b"9223372036854775808"), None);
        assert_eq!(parse_int_timestamp(b"1_2"), None);
        assert_eq!(parse_int_timestamp(b"1.5"), None);
        assert_eq!(parse_int_timestamp(b"-"), None);
    }

    #[test]
    fn seconds_truncate_like_prometheus() {
        assert_eq!(seconds_to_ms(123.123), Some(123123));
        assert_eq!(seconds_to_ms(1520879607.789), Some(1520879607789));
        assert_eq!(seconds_to_ms(f64::NAN), None);
        assert_eq!(seconds_to_ms(f64::NEG_INFINITY), None);
    }

    #[test]
    fn openmetrics_float_text() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (0.25, "0.25"),
            (100000.0, "100000.0"),
            (999999.0, "999999.0"),
            (1e6, "1e+06"),
            (1e21, "1e+21"),
            (123456789.0, "1.23456789e+08"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (-0.005, "-0.005"),
        ] {
            assert_eq!(format_openmetrics_float(f), want, "{f}");
        }
    }
}
