//! Targets: what one discovered address becomes after the scrape config's
//! defaults and `relabel_configs`, as Prometheus builds them.
//!
//! The pipeline of [`populate`], in order:
//! 1. the target's own labels (`__address__`, …), then the group's labels
//!    where the target has none of that name;
//! 2. `job`, `__scrape_interval__`, `__scrape_timeout__`,
//!    `__metrics_path__`, `__scheme__` and one `__param_<name>` per `params`
//!    entry (its first value), each only where not already set;
//! 3. `relabel_configs` (the set as it was before this step is the target's
//!    *discovered labels*); a drop ends here;
//! 4. checks: an address is required and may not contain `/`; interval and
//!    timeout must be valid non-zero durations with timeout ≤ interval;
//! 5. `__meta_*` labels are removed; `instance` defaults to `__address__`;
//! 6. the URL is built from `__scheme__`, `__address__`, `__metrics_path__`
//!    and the `params` with `__param_*` labels overriding their first value;
//!    the target's visible labels are the set without `__`-prefixed names.
//!
//! Invariant: a [`Target`] has non-empty `job` and `instance` labels (unless
//! relabeling removed `job`), a URL, and `0 < scrape_timeout <= scrape_interval`.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_storage::{LabelError, Labels, LabelsBuilder};

use crate::config::{ScrapeConfig, format_duration, parse_duration};
use crate::relabel::relabel;

/// The label holding a target's `host:port`.
pub const ADDRESS_LABEL: &str = "__address__";
/// The label holding the scrape scheme.
pub const SCHEME_LABEL: &str = "__scheme__";
/// The label holding the metrics path.
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
/// The label holding the scrape interval.
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
/// The label holding the scrape timeout.
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
/// Prefix of labels that become URL parameters.
pub const PARAM_LABEL_PREFIX: &str = "__param_";
/// Prefix of discovery metadata labels, removed after relabeling.
pub const META_LABEL_PREFIX: &str = "__meta_";
/// Prefix of labels that never reach a series.
pub const RESERVED_LABEL_PREFIX: &str = "__";
/// The `job` label.
pub const JOB_LABEL: &str = "job";
/// The `instance` label.
pub const INSTANCE_LABEL: &str = "instance";

/// A target ready to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The labels attached to every series scraped from it: `job`,
    /// `instance` and whatever relabeling added, without `__` names.
    pub labels: Labels,
    /// The labels before relabeling (discovery's view, with `__meta_*`).
    pub discovered_labels: Labels,
    /// `scheme://address/path?params`.
    pub url: String,
    /// From `__scrape_interval__` after relabeling.
    pub scrape_interval: Duration,
    /// From `__scrape_timeout__` after relabeling.
    pub scrape_timeout: Duration,
}

/// What [`populate`] made of one discovered target.
#[derive(Clone, Debug, PartialEq)]
pub enum Populated {
    /// A target to scrape.
    Active(Target),
    /// Dropped by `relabel_configs`; its discovered labels.
    Dropped(Labels),
}

/// A discovered target that cannot be scraped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("target {discovered_labels}: {message}")]
pub struct TargetError {
    /// The labels before relabeling, to identify the target.
    pub discovered_labels: Labels,
    /// What is wrong.
    pub message: String,
}

/// Runs the target pipeline (see the module documentation) for one target
/// with labels `target` (at least `__address__`) in a group with labels
/// `group`.
pub fn populate(
    cfg: &ScrapeConfig,
    target: &BTreeMap<String, String>,
    group: &BTreeMap<String, String>,
) -> Result<Populated, TargetError> {
    let mut lb = LabelsBuilder::new();
    for (n, v) in target {
        lb.set(n, v);
    }
    for (n, v) in group {
        if !target.contains_key(n) {
            lb.set(n, v);
        }
    }
    let defaults = [
        (JOB_LABEL, cfg.job_name.clone()),
        (SCRAPE_INTERVAL_LABEL, format_duration(cfg.scrape_interval)),
        (SCRAPE_TIMEOUT_LABEL, format_duration(cfg.scrape_timeout)),
        (METRICS_PATH_LABEL, cfg.metrics_path.clone()),
        (SCHEME_LABEL, cfg.scheme.clone()),
    ];
    for (n, v) in defaults {
        if lb.get(n).is_none() {
            lb.set(n, &v);
        }
    }
    for (k, vs) in &cfg.params {
        let name = format!("{PARAM_LABEL_PREFIX}{k}");
        if let Some(first) = vs.first()
            && lb.get(&name).is_none()
        {
            lb.set(&name, first);
        }
    }
    let discovered = lb.build().map_err(|e| TargetError {
        discovered_labels: Labels::empty(),
        message: format!("invalid discovered labels: {e}"),
    })?;
    let fail = |message: String| TargetError {
        discovered_labels: discovered.clone(),
        message,
    };
    if !relabel(&mut lb, &cfg.relabel_configs) {
        return Ok(Populated::Dropped(discovered));
    }
    let addr = lb.get(ADDRESS_LABEL).unwrap_or("").to_owned();
    if addr.is_empty() {
        return Err(fail("no address".into()));
    }
    if addr.contains('/') {
        return Err(fail(format!("{addr:?} is not a valid hostname")));
    }
    let duration = |label: &str| -> Result<Duration, TargetError> {
        let text = lb.get(label).unwrap_or("");
        let d = parse_duration(text)
            .map_err(|e| fail(format!("error parsing {label} {text:?}: {e}")))?;
        if d.is_zero() {
            return Err(fail(format!("{label} cannot be 0")));
        }
        Ok(d)
    };
    let scrape_interval = duration(SCRAPE_INTERVAL_LABEL)?;
    let scrape_timeout = duration(SCRAPE_TIMEOUT_LABEL)?;
    if scrape_timeout > scrape_interval {
        return Err(fail(format!(
            "scrape timeout cannot be greater than scrape interval ({} > {})",
            format_duration(scrape_timeout),
            format_duration(scrape_interval)
        )));
    }
    lb.retain(|n, _| !n.starts_with(META_LABEL_PREFIX));
    if lb.get(INSTANCE_LABEL).is_none() {
        lb.set(INSTANCE_LABEL, &addr);
    }
    let url = target_url(&lb, &cfg.params);
    lb.retain(|n, _| !n.starts_with(RESERVED_LABEL_PREFIX));
    let labels = lb
        .build()
        .map_err(|e: LabelError| fail(format!("invalid labels: {e}")))?;
    Ok(Populated::Active(Target {
        labels,
        discovered_labels: discovered,
        url,
        scrape_interval,
        scrape_timeout,
    }))
}

/// The scrape URL: `params` with each `__param_<k>` label replacing the
/// first value of `k` (or adding it); keys sorted and query-escaped as Go's
/// `url.Values.Encode` does.
fn target_url(lb: &LabelsBuilder, params: &BTreeMap<String, Vec<String>>) -> String {
    let mut query: BTreeMap<String, Vec<String>> = params.clone();
    for (n, v) in lb.pairs() {
        if let Some(k) = n.strip_prefix(PARAM_LABEL_PREFIX) {
            let values = query.entry(k.to_owned()).or_default();
            match values.first_mut() {
                Some(first) => *first = v.to_owned(),
                None => values.push(v.to_owned()),
            }
        }
    }
    let mut url = format!(
        "{}://{}{}",
        lb.get(SCHEME_LABEL).unwrap_or("http"),
        lb.get(ADDRESS_LABEL).unwrap_or(""),
        lb.get(METRICS_PATH_LABEL).unwrap_or("")
    );
    let mut sep = '?';
    for (k, vs) in &query {
        for v in vs {
            url.push(sep);
            sep = '&';
            query_escape(k, &mut url);
            url.push('=');
            query_escape(v, &mut url);
        }
    }
    url
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, space as `+`,
/// everything else `%XX`.
fn query_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(yaml: &str) -> ScrapeConfig {
        Config::parse(yaml, "t.yml")
            .unwrap()
            .scrape_configs
            .remove(0)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn active(p: Result<Populated, TargetError>) -> Target {
        match p {
            Ok(Populated::Active(t)) => t,
            other => panic!("not active: {other:?}"),
        }
    }

    #[test]
    fn defaults_instance_and_url() {
        let c = cfg("scrape_configs:\n- job_name: node\n  scrape_interval: 30s\n");
        let t = active(populate(
            &c,
            &map(&[("__address__", "h:9100")]),
            &map(&[("__meta_x", "m"), ("team", "a")]),
        ));
        assert_eq!(
            t.labels,
            Labels::from_pairs([("instance", "h:9100"), ("job", "node"), ("team", "a")]).unwrap()
        );
        assert_eq!(t.url, "http://h:9100/metrics");
        assert_eq!(t.scrape_interval, Duration::from_secs(30));
        assert_eq!(t.scrape_timeout, Duration::from_secs(10));
        assert_eq!(t.discovered_labels.get("__scrape_interval__"), Some("30s"));
        assert_eq!(t.discovered_labels.get("__meta_x"), Some("m"));
    }

    #[test]
    fn target_labels_win_over_group_labels() {
        let c = cfg("scrape_configs:\n- job_name: j\n");
        let t = active(populate(
            &c,
            &map(&[("__address__", "h:1"), ("team", "t")]),
            &map(&[("team", "g")]),
        ));
        assert_eq!(t.labels.get("team"), Some("t"));
    }

    #[test]
    fn blackbox_style_relabeling_and_params() {
        let c = cfg(r"
scrape_configs:
- job_name: blackbox
  metrics_path: /probe
  params: {module: [http_2xx], extra: ['a b', 'c']}
  relabel_configs:
  - {source_labels: [__address__], target_label: __param_target}
  - {source_labels: [__param_target], target_label: instance}
  - {target_label: __address__, replacement: '127.0.0.1:9115'}
");
        let t = active(populate(
            &c,
            &map(&[("__address__", "https://example.com/x?y=1")]),
            &BTreeMap::new(),
        ));
        assert_eq!(t.labels.get("instance"), Some("https://example.com/x?y=1"));
        assert_eq!(
            t.url,
            "http://127.0.0.1:9115/probe?extra=a+b&extra=c&module=http_2xx&target=https%3A%2F%2Fexample.com%2Fx%3Fy%3D1"
        );
    }

    #[test]
    fn relabeled_interval_and_scheme_apply() {
        let c = cfg(r"
scrape_configs:
- job_name: j
  relabel_configs:
  - {target_label: __scrape_interval__, replacement: 2m}
  - {target_label: __scrape_timeout__, replacement: 1m30s}
  - {target_label: __scheme__, replacement: https}
");
        let t = active(populate(
            &c,
            &map(&[("__address__", "h:1")]),
            &BTreeMap::new(),
        ));
        assert_eq!(t.scrape_interval, Duration::from_secs(120));
        assert_eq!(t.scrape_timeout, Duration::from_secs(90));
        assert!(t.url.starts_with("https://h:1/"));
    }

    #[test]
    fn dropped_and_invalid_targets() {
        let c = cfg(
            "scrape_configs:\n- job_name: j\n  relabel_configs: [{source_labels: [__address__], regex: 'bad.*', action: drop}]\n",
        );
        assert!(matches!(
            populate(&c, &map(&[("__address__", "bad:1")]), &BTreeMap::new()),
            Ok(Populated::Dropped(_))
        ));
        let e = populate(&c, &map(&[("__address__", "h:1/x")]), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("not a valid hostname"), "{e}");
        let e = populate(&c, &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.message, "no address");

        let c = cfg(
            "scrape_configs:\n- job_name: j\n  relabel_configs: [{target_label: __scrape_timeout__, replacement: 2m}]\n",
        );
        let e = populate(&c, &map(&[("__address__", "h:1")]), &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("cannot be greater"), "{e}");
        let c = cfg(
            "scrape_configs:\n- job_name: j\n  relabel_configs: [{target_label: __scrape_interval__, replacement: soon}]\n",
        );
        let e = populate(&c, &map(&[("__address__", "h:1")]), &BTreeMap::new()).unwrap_err();
        assert!(
            e.message.contains("error parsing __scrape_interval__"),
            "{e}"
        );
    }
}
