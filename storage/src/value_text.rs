//! How a sample value is written as text: Go's
//! `strconv.FormatFloat(v, 'g', -1, 64)`, which Prometheus uses in the text
//! exposition format, in PromQL's printed numbers and (with a `.0` suffix)
//! for canonical `le`/`quantile` values. One implementation for every crate
//! that writes values, so they cannot drift apart.

/// `v` as Go's shortest `%g` writes it: the shortest digits that read back
/// to the same value, in exponent form (at least two exponent digits) when
/// the decimal exponent is below -4 or at least 6, plain otherwise; `+Inf`,
/// `-Inf`, `NaN`, and `-0` for negative zero.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` and `Display` both give the shortest round-trip digits;
    // only the choice between the two forms and the exponent's spelling
    // differ from Go.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        v.to_string()
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_go_does() {
        // Expected texts are Go's strconv.FormatFloat(v, 'g', -1, 64).
        for (v, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (100.0, "100"),
            (1e5, "100000"),
            (123_456.0, "123456"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (123_456_789.0, "1.23456789e+08"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (0.000_015, "1.5e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (12.75, "12.75"),
            (-2.5e10, "-2.5e+10"),
            (1e21, "1e+21"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_value(v), want, "{v}");
        }
    }

    proptest::proptest! {
        /// Whatever the form, the text reads back to the same value.
        #[test]
        fn text_reads_back_exactly(bits in proptest::num::u64::ANY) {
            let v = f64::from_bits(bits);
            proptest::prop_assume!(v.is_finite());
            let text = format_value(v);
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", text);
        }
    }
}
