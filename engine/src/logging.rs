//! The process logger: logfmt lines on stderr, as Prometheus writes them
//! (`ts=… level=info component=… msg="…"`), so existing log pipelines parse
//! kiln's logs unchanged.
//!
//! Also owns wall-clock rendering (RFC 3339 in UTC), which the status API
//! shares, so that no date crate is needed for two formatting functions.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct LogfmtLogger {
    max: LevelFilter,
}

impl Log for LogfmtLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug | Level::Trace => "debug",
        };
        let line = format!(
            "ts={} level={level} component={} msg={}\n",
            rfc3339_millis(SystemTime::now()),
            record.target().rsplit("::").next().unwrap_or("kiln"),
            logfmt_quote(&record.args().to_string()),
        );
        // One write per line so lines from different shards never interleave.
        // A closed stderr is no reason to stop serving.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger for the given `--log.level`. A second call keeps the
/// first logger.
pub fn init(level: &str) {
    let max = match level {
        "debug" => LevelFilter::Debug,
        "warn" => LevelFilter::Warn,
        "error" => LevelFilter::Error,
        _ => LevelFilter::Info,
    };
    // The logger lives for the whole process; leaking the one allocation is
    // how a `'static` logger is made without a global.
    let logger: &'static LogfmtLogger = Box::leak(Box::new(LogfmtLogger { max }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// Quotes a logfmt value when it needs it.
fn logfmt_quote(s: &str) -> String {
    if !s.is_empty() && !s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'=') {
        return s.to_owned();
    }
    format!("{s:?}")
}

/// `2026-11-23T19:15:43.129Z`
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (secs, nanos) = since_epoch(t);
    let (date, time) = civil(secs);
    format!("{date}T{time}.{:03}Z", nanos / 1_000_000)
}

/// `2026-11-23T19:15:43.129076753Z`, as Go renders `time.Time` in JSON.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let (secs, nanos) = since_epoch(t);
    let (date, time) = civil(secs);
    if nanos == 0 {
        return format!("{date}T{time}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{date}T{time}.{}Z", frac.trim_end_matches('0'))
}

fn since_epoch(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        // Before 1970: only possible with a broken clock; render the epoch.
        Err(_) => (0, 0),
    }
}

/// Splits seconds since the epoch into `YYYY-MM-DD` and `HH:MM:SS` (UTC),
/// using the days-to-civil algorithm on the proleptic Gregorian calendar.
fn civil(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn civil_dates() {
        // Reference instants computed independently (`date -u -d @N`).
        assert_eq!(rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(at(951_782_400, 5_000_000)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339_millis(at(1_795_461_343, 129_076_753)),
            "2026-11-23T19:15:43.129Z"
        );
        assert_eq!(
            rfc3339_nanos(at(1_795_461_343, 129_076_753)),
            "2026-11-23T19:15:43.129076753Z"
        );
        assert_eq!(rfc3339_nanos(at(1_795_461_343, 0)), "2026-11-23T19:15:43Z");
        assert_eq!(
            rfc3339_nanos(at(4_107_542_399, 500_000_000)),
            "2100-02-28T23:59:59.5Z"
        );
    }

    #[test]
    fn logfmt_quoting() {
        assert_eq!(logfmt_quote("ready"), "ready");
        assert_eq!(logfmt_quote("two words"), "\"two words\"");
        assert_eq!(logfmt_quote("a=b"), "\"a=b\"");
        assert_eq!(logfmt_quote(""), "\"\"");
    }
}
