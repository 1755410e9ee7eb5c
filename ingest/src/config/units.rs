//! Prometheus's value syntaxes in YAML: durations (`1h30m`, `15s`, `100ms`,
//! `1d`, `1w`, `1y`) and byte sizes (`10MB`, `512KiB`), with the serde
//! helpers the configuration types use for them and for YAML `null`.
//!
//! Durations follow Prometheus's `model.ParseDuration`: units in decreasing
//! order, each at most once, integers only, `y` = 365 days, `w` = 7 days;
//! `0` alone is allowed, the empty string is not. Byte sizes are base 2
//! (`1KB` = 1024 bytes) as Prometheus's `body_size_limit` reads them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Units in the order a duration must write them, with their length in ms.
const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration. The error says why.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    let bad = || format!("not a valid duration string: {s:?}");
    let mut rest = s;
    let mut ms: u64 = 0;
    // Index into DURATION_UNITS of the next unit allowed.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let pos = DURATION_UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(bad)?;
        let (_, len) = DURATION_UNITS[next_unit + pos];
        next_unit += pos + 1;
        ms = n
            .checked_mul(len)
            .and_then(|v| ms.checked_add(v))
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
    }
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way Prometheus prints one: largest units first,
/// zero parts left out, `0s` for zero; years and weeks only when the whole
/// duration is a multiple of them (`15d`, not `2w1d`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in DURATION_UNITS {
        let len = u128::from(len);
        if ms >= len && (!matches!(unit, "y" | "w") || ms.is_multiple_of(len)) {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

/// Parses a base-2 byte size: an integer with an optional unit among `B`,
/// `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`, `EB`/`EiB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let bad = || format!("not a valid byte size: {s:?}");
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let shift = match &s[digits..] {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        "PB" | "PiB" => 50,
        "EB" | "EiB" => 60,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("byte size out of range: {s:?}"))
}

/// A visitor that parses a YAML string with `parse`. Errors raised inside
/// a visitor get the position of the scalar being read, which is where a
/// user wants to be pointed.
pub(crate) struct StrVisitor<T> {
    pub(crate) parse: fn(&str) -> Result<T, String>,
    pub(crate) expecting: &'static str,
}

impl<'de, T> Visitor<'de> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// Reads an optional scalar with `parse`; YAML `null` is `None`.
struct OptVisitor<T>(StrVisitor<T>);

impl<'de, T> Visitor<'de> for OptVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.expecting)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

/// Serde: an optional duration (`null` or absent = `None`).
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptVisitor(StrVisitor {
        parse: parse_duration,
        expecting: "a duration such as 15s or 1h30m",
    }))
}

/// Serde: a byte size written as an integer or with a unit; `null` is 0.
pub(crate) fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_option(OptVisitor(StrVisitor {
        parse: parse_bytes,
        expecting: "a byte size such as 10MB",
    }))?;
    Ok(v.unwrap_or(0))
}

/// Serde: YAML `null` reads as the type's default, as in Go's YAML decoder
/// (`rule_files:` with every entry commented out is an empty list).
pub(crate) fn de_null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A secret string (password, token, key): never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("15s"), Ok(15_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("100ms"), Ok(100));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("1w"), Ok(604_800_000));
        assert_eq!(ms("1y"), Ok(31_536_000_000));
        assert_eq!(ms("1m1s1ms"), Ok(61_001));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("0s"), Ok(0));
        for bad in [
            "", "15", "1.5s", "s", "1s1m", "1m1m", "1x", "-1s", " 1s", "1S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999y").is_err());
    }

    #[test]
    fn durations_render_as_prometheus() {
        // Values as `prometheus --help` and /api/v1/status/flags show them.
        let f = |ms| format_duration(Duration::from_millis(ms));
        assert_eq!(f(0), "0s");
        assert_eq!(f(300_000), "5m");
        assert_eq!(f(15 * 86_400_000), "15d");
        assert_eq!(f(36 * 3_600_000), "1d12h");
        assert_eq!(f(14 * 86_400_000), "2w");
        assert_eq!(f(365 * 86_400_000), "1y");
        assert_eq!(f(366 * 86_400_000), "366d");
        assert_eq!(f(90_500), "1m30s500ms");
    }

    #[test]
    fn durations_round_trip_through_format() {
        for s in [
            "15s",
            "1h30m",
            "100ms",
            "1d",
            "1w",
            "1y",
            "0s",
            "382d4h5m6s7ms",
        ] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        // Years and weeks print only when they divide the whole duration,
        // so a mixed duration comes back in days.
        let d = parse_duration("1y2w3d4h5m6s7ms").unwrap();
        assert_eq!(format_duration(d), "382d4h5m6s7ms");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("10MB"), Ok(10 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("7B"), Ok(7));
        for bad in ["", "MB", "1.5MB", "10mb", "10 MB", "99999999999EB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<secret>");
    }
}
