//! Request parameters of the Prometheus API, read and validated as
//! Prometheus reads them.
//!
//! Parameters come from the URL's query string and, for a form POST
//! (`application/x-www-form-urlencoded`), from the body as well, body values
//! first — Go's `Request.FormValue` order, which Grafana's POST queries rely
//! on. Times are unix seconds with up to millisecond precision or RFC 3339;
//! durations are float seconds or Prometheus duration strings. Errors carry
//! Prometheus's exact texts because clients show them to users.

use std::time::Duration;

/// The form values of one request, in arrival order (body before URL).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Reads the URL query string and, when present, a form body.
    pub fn parse(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut pairs = Vec::new();
        if let Some(body) = form_body {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Params { pairs }
    }

    /// The first value of `name`, or `""` when absent (Go's `FormValue`).
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`, in order (e.g. `match[]`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The lowest timestamp the API accepts, Prometheus's `MinTime` in unix
/// milliseconds: Go's `time.Unix(math.MinInt64/1000+62135596801, 0)`, the
/// earliest time whose milliseconds survive Go's time arithmetic.
pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974_000;
/// The highest timestamp the API accepts, Prometheus's `MaxTime`:
/// `time.Unix(math.MaxInt64/1000-62135596801, 999999999)` in milliseconds.
pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974_999;

/// Prometheus's RFC 3339 renderings of [`MIN_TIME_MS`] and [`MAX_TIME_MS`],
/// which clients send back as "no bound".
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// A parameter error, rendered as Prometheus renders it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter {name:?}: {reason}")]
pub struct ParamError {
    /// The parameter.
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ParamError {
    /// An error for parameter `name`.
    pub fn new(name: &'static str, reason: impl Into<String>) -> Self {
        ParamError {
            name,
            reason: reason.into(),
        }
    }
}

/// Reads optional time parameter `name` (`time` of a query, `start` and
/// `end` of the metadata endpoints), `default` when absent or empty. Its
/// errors carry Prometheus's extra "Invalid time value" wording, which the
/// required `start`/`end` of a range query do not.
pub fn time_param(p: &Params, name: &'static str, default: i64) -> Result<i64, ParamError> {
    let v = p.get(name);
    if v.is_empty() {
        return Ok(default);
    }
    parse_time(v).map_err(|reason| {
        ParamError::new(name, format!("Invalid time value for '{name}': {reason}"))
    })
}

/// Parses a timestamp as the Prometheus API does: float unix seconds
/// (rounded to the millisecond), RFC 3339 with optional fraction, or the
/// renderings of the minimum and maximum time. Returns milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let err = || format!("cannot parse {s:?} to a valid timestamp");
    if let Some(f) = parse_go_float(s) {
        if !f.is_finite() {
            return Err(err());
        }
        let secs = f.trunc();
        let frac = ((f - secs) * 1000.0).round();
        let ms = secs * 1000.0 + frac;
        if ms < MIN_TIME_MS as f64 || ms > MAX_TIME_MS as f64 {
            return Err(err());
        }
        return Ok(ms as i64);
    }
    if let Some(ms) = parse_rfc3339_ms(s) {
        return Ok(ms);
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(err()),
    }
}

/// Parses a duration as the Prometheus API does: float seconds or a
/// Prometheus duration string (`5m`, `1h30m`). Returns milliseconds,
/// truncated.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Some(f) = parse_go_float(s) {
        let ns = f * 1e9;
        if ns.is_nan() || ns > i64::MAX as f64 || ns < i64::MIN as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok((ns as i64) / 1_000_000);
    }
    kiln_ingest::config::parse_duration(s)
        .ok()
        .and_then(|d: Duration| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// Go's `strconv.ParseFloat` over the forms clients send: decimal with
/// optional sign, fraction and exponent, and `inf`/`infinity`/`nan` in any
/// case. Rust's parser accepts the same decimal grammar; the extra check
/// keeps out what Go refuses (e.g. a trailing `.` alone is fine in both).
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let word = body.to_ascii_lowercase();
    if matches!(word.as_str(), "inf" | "infinity" | "nan") {
        return s.parse::<f64>().ok();
    }
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into unix
/// milliseconds (fraction truncated to the millisecond, as Prometheus's
/// conversion of a `time.Time` truncates).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' && b[10] != b't' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *c == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs * 1000 + nanos / 1_000_000)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// civil-days algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_body_first_then_url() {
        let p = Params::parse(
            Some("query=up&match%5B%5D=a&match[]=b"),
            Some(b"query=sum%28x%29&time=1.5"),
        );
        assert_eq!(p.get("query"), "sum(x)");
        assert_eq!(p.get("time"), "1.5");
        assert_eq!(p.get("missing"), "");
        assert_eq!(p.all("match[]"), vec!["a", "b"]);
        let p = Params::parse(Some("q=a+b%20c"), None);
        assert_eq!(p.get("q"), "a b c");
    }

    #[test]
    fn times_as_prometheus_reads_them() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1.5"), Ok(1500));
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000.1236"), Ok(1_700_000_000_124));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1e3"), Ok(1_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781999+02:00"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Ok(MIN_TIME_MS));
        for bad in [
            "",
            "abc",
            "NaN",
            "Inf",
            "2015-02-30T00:00:00Z",
            "2015-07-01 20:10:51Z",
            "1_000",
        ] {
            assert_eq!(
                parse_time(bad),
                Err(format!("cannot parse {bad:?} to a valid timestamp")),
                "{bad}"
            );
        }
    }

    #[test]
    fn min_and_max_time_are_prometheus_constants() {
        // Derived independently from Go's definitions.
        let min_s = i64::MIN / 1000 + 62_135_596_801;
        let max_s = i64::MAX / 1000 - 62_135_596_801;
        assert_eq!(MIN_TIME_MS, min_s * 1000);
        assert_eq!(MAX_TIME_MS, max_s * 1000 + 999);
    }

    #[test]
    fn durations_as_prometheus_reads_them() {
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("-5"), Ok(-5000));
        assert_eq!(
            parse_duration_ms("1e30"),
            Err("cannot parse \"1e30\" to a valid duration. It overflows int64".into())
        );
        assert_eq!(
            parse_duration_ms("x"),
            Err("cannot parse \"x\" to a valid duration".into())
        );
    }

    #[test]
    fn param_error_text() {
        let e = ParamError::new("start", "cannot parse \"x\" to a valid timestamp");
        assert_eq!(
            e.to_string(),
            "invalid parameter \"start\": cannot parse \"x\" to a valid timestamp"
        );
    }
}
