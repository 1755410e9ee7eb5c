//! Configuration: `prometheus.yml` read into typed, validated values.
//!
//! [`Config::parse`] reads the YAML (unknown fields, wrong types, bad
//! durations, sizes and regexes are errors with file, line and column),
//! then resolves what Prometheus resolves after reading: every scrape
//! config's interval, timeout and limits from `global`, and the checks that
//! span several fields (timeout ≤ interval, unique job names). Sections kiln
//! does not act on yet (`remote_read`, `storage`, `tracing`, …) are parsed
//! and kept as YAML values; service discovery mechanisms kiln does not
//! implement are listed in [`ScrapeConfig::unsupported_sd_configs`] rather
//! than refused, so that `kiln check config` can warn about them.
//!
//! Invariants of a [`Config`] that parsed: every [`ScrapeConfig`] has a
//! non-zero interval, `0 < scrape_timeout <= scrape_interval`, a scheme of
//! `http` or `https`, a unique non-empty job name, and a normalized
//! [`HttpClientConfig`].

mod http;
pub(crate) mod units;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use kiln_storage::Labels;
use serde::Deserialize;

pub use http::{Authorization, BasicAuth, HttpClientConfig, TlsConfig};
pub use units::{Secret, format_duration, parse_bytes, parse_duration};

use crate::relabel::RelabelConfig;
use http::{RawHttpClientConfig, split_unknown};
use units::{de_bytes, de_null_default, de_opt_duration};

/// Prometheus's defaults for `global`.
const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(60);

/// The scrape protocols Prometheus knows, for `scrape_protocols`.
const SCRAPE_PROTOCOLS: [&str; 5] = [
    "PrometheusProto",
    "OpenMetricsText0.0.1",
    "OpenMetricsText1.0.0",
    "PrometheusText0.0.4",
    "PrometheusText1.0.0",
];

/// Why a configuration was refused: where (when known) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file name given to [`Config::parse`] or the path given to
    /// [`Config::load`].
    pub file: String,
    /// 1-based line, when the error has a position.
    pub line: Option<usize>,
    /// 1-based column, when the error has a position.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `file:line:column: message`, or `file: message` without a position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A whole `prometheus.yml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `global`.
    pub global: GlobalConfig,
    /// `scrape_configs`, resolved against `global`.
    pub scrape_configs: Vec<ScrapeConfig>,
    /// `scrape_config_files`: globs of files with more scrape configs, whose
    /// configs [`Config::load`] appends to `scrape_configs`.
    pub scrape_config_files: Vec<String>,
    /// `rule_files` (globs).
    pub rule_files: Vec<String>,
    /// `alerting`.
    pub alerting: AlertingConfig,
    /// `remote_write`.
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Sections kiln keeps but does not use: `remote_read`, `storage`,
    /// `tracing`, `otlp`, `runtime`, by name.
    pub kept: BTreeMap<String, serde_norway::Value>,
}

/// `global`.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalConfig {
    /// Default scrape interval (1m).
    pub scrape_interval: Duration,
    /// Default scrape timeout (10s, or the interval when that is shorter).
    pub scrape_timeout: Duration,
    /// Rule evaluation interval (1m).
    pub evaluation_interval: Duration,
    /// `rule_query_offset` (0).
    pub rule_query_offset: Duration,
    /// Labels added to series and alerts leaving this server.
    pub external_labels: Labels,
    /// Limits every scrape config inherits unless it sets its own (0 = none).
    pub limits: ScrapeLimits,
    /// `query_log_file`.
    pub query_log_file: Option<String>,
    /// `scrape_protocols` (empty = Prometheus's default order).
    pub scrape_protocols: Vec<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
            evaluation_interval: DEFAULT_EVALUATION_INTERVAL,
            rule_query_offset: Duration::ZERO,
            external_labels: Labels::empty(),
            limits: ScrapeLimits::default(),
            query_log_file: None,
            scrape_protocols: Vec::new(),
        }
    }
}

/// The per-scrape limits `global` gives every scrape config that does not
/// set its own; 0 means no limit. The fields mean what the same-named
/// fields of [`ScrapeConfig`] mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeLimits {
    /// `sample_limit`: more samples after metric relabeling fail the scrape.
    pub sample_limit: u64,
    /// `label_limit`: more labels on a series fail the scrape.
    pub label_limit: u64,
    /// `label_name_length_limit`.
    pub label_name_length_limit: u64,
    /// `label_value_length_limit`.
    pub label_value_length_limit: u64,
    /// `target_limit`: more targets after relabeling fail them all.
    pub target_limit: u64,
    /// `body_size_limit` in bytes.
    pub body_size_limit: u64,
    /// `keep_dropped_targets`.
    pub keep_dropped_targets: u64,
}

/// One entry of `scrape_configs`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    /// `job_name`, unique in the file; the `job` label of its targets.
    pub job_name: String,
    /// Resolved from `global` when not set.
    pub scrape_interval: Duration,
    /// Resolved from `global` when not set; never above the interval.
    pub scrape_timeout: Duration,
    /// `metrics_path` (default `/metrics`).
    pub metrics_path: String,
    /// `scheme`: `http` (default) or `https`.
    pub scheme: String,
    /// `params`: URL query parameters.
    pub params: BTreeMap<String, Vec<String>>,
    /// `honor_labels` (default false).
    pub honor_labels: bool,
    /// `honor_timestamps` (default true).
    pub honor_timestamps: bool,
    /// `track_timestamps_staleness` (default false).
    pub track_timestamps_staleness: bool,
    /// `enable_compression` (default true): ask for gzip.
    pub enable_compression: bool,
    /// `sample_limit` (0 = none; resolved from `global`): more samples
    /// after metric relabeling fail the scrape.
    pub sample_limit: u64,
    /// `label_limit`: more labels on a series fail the scrape.
    pub label_limit: u64,
    /// `label_name_length_limit`.
    pub label_name_length_limit: u64,
    /// `label_value_length_limit`.
    pub label_value_length_limit: u64,
    /// `target_limit`: more targets after relabeling fail them all.
    pub target_limit: u64,
    /// `body_size_limit` in bytes.
    pub body_size_limit: u64,
    /// `keep_dropped_targets`.
    pub keep_dropped_targets: u64,
    /// `scrape_protocols` (empty = the global setting or the default).
    pub scrape_protocols: Vec<String>,
    /// `fallback_scrape_protocol`.
    pub fallback_scrape_protocol: Option<String>,
    /// Authentication, TLS, proxy.
    pub http: HttpClientConfig,
    /// `static_configs`.
    pub static_configs: Vec<StaticConfig>,
    /// `file_sd_configs`.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// `http_sd_configs`.
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// Names of `*_sd_configs` present that kiln does not implement.
    pub unsupported_sd_configs: Vec<String>,
    /// Names of settings accepted but ignored by kiln (native histograms,
    /// name escaping, failure logs).
    pub ignored_settings: Vec<String>,
    /// `relabel_configs`: applied to targets.
    pub relabel_configs: Vec<RelabelConfig>,
    /// `metric_relabel_configs`: applied to scraped series.
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

/// One entry of `static_configs` (also the shape of a file_sd target group).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses.
    #[serde(default, deserialize_with = "de_null_default")]
    pub targets: Vec<String>,
    /// Labels given to every target of the group.
    #[serde(default, deserialize_with = "de_null_default")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `file_sd_configs`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawFileSdConfig")]
pub struct FileSdConfig {
    /// File patterns (`*` in the last path element only), `.json`,
    /// `.yml` or `.yaml`.
    pub files: Vec<String>,
    /// How often the files are re-read besides change notifications (5m).
    pub refresh_interval: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSdConfig {
    #[serde(default, deserialize_with = "de_null_default")]
    files: Vec<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    refresh_interval: Option<Duration>,
}

impl TryFrom<RawFileSdConfig> for FileSdConfig {
    type Error = String;

    fn try_from(r: RawFileSdConfig) -> Result<Self, String> {
        if r.files.is_empty() {
            return Err("file service discovery config must contain at least one path name".into());
        }
        for f in &r.files {
            let name = f.rsplit('/').next().unwrap_or(f);
            let dir_has_star = f[..f.len() - name.len()].contains('*');
            let ext_ok = [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"]
                .iter()
                .any(|e| name.ends_with(e));
            if dir_has_star || name.matches('*').count() > 1 || !ext_ok {
                return Err(format!("path name {f:?} is not valid for file discovery"));
            }
        }
        Ok(FileSdConfig {
            files: r.files,
            refresh_interval: r.refresh_interval.unwrap_or(Duration::from_secs(300)),
        })
    }
}

/// One entry of `http_sd_configs`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawHttpSdConfig")]
pub struct HttpSdConfig {
    /// The URL returning target groups as JSON.
    pub url: String,
    /// How often to fetch it (60s).
    pub refresh_interval: Duration,
    /// Authentication, TLS, proxy for the fetch.
    pub http: HttpClientConfig,
}

#[derive(Deserialize)]
struct RawHttpSdConfig {
    #[serde(default)]
    url: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    refresh_interval: Option<Duration>,
    #[serde(flatten)]
    http: RawHttpClientConfig,
    #[serde(flatten)]
    other: BTreeMap<String, serde_norway::Value>,
}

impl TryFrom<RawHttpSdConfig> for HttpSdConfig {
    type Error = String;

    fn try_from(r: RawHttpSdConfig) -> Result<Self, String> {
        if let Some(key) = r.other.keys().next() {
            return Err(format!("unknown field `{key}` in http_sd_configs"));
        }
        if r.url.is_empty() {
            return Err("URL is missing".into());
        }
        let (scheme, rest) = r.url.split_once("://").unwrap_or(("", ""));
        if !matches!(scheme, "http" | "https") {
            return Err("URL scheme must be 'http' or 'https'".into());
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err("host is missing in URL".into());
        }
        Ok(HttpSdConfig {
            url: r.url,
            refresh_interval: r.refresh_interval.unwrap_or(Duration::from_secs(60)),
            http: r.http.try_into()?,
        })
    }
}

/// `alerting`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// `alert_relabel_configs`.
    #[serde(default, deserialize_with = "de_null_default")]
    pub alert_relabel_configs: Vec<RelabelConfig>,
    /// `alertmanagers`.
    #[serde(default, deserialize_with = "de_null_default")]
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

/// One entry of `alerting.alertmanagers`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawAlertmanagerConfig")]
pub struct AlertmanagerConfig {
    /// `http` (default) or `https`.
    pub scheme: String,
    /// Prefix of the API path.
    pub path_prefix: String,
    /// Per-request timeout (10s).
    pub timeout: Duration,
    /// `v2` (default; `v1` is gone from Alertmanager).
    pub api_version: String,
    /// `static_configs`.
    pub static_configs: Vec<StaticConfig>,
    /// `file_sd_configs`.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// `http_sd_configs`.
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// `relabel_configs` applied to discovered Alertmanagers.
    pub relabel_configs: Vec<RelabelConfig>,
    /// `alert_relabel_configs` for this Alertmanager only.
    pub alert_relabel_configs: Vec<RelabelConfig>,
    /// Names of `*_sd_configs` kiln does not implement.
    pub unsupported_sd_configs: Vec<String>,
    /// Authentication, TLS, proxy.
    pub http: HttpClientConfig,
}

#[derive(Deserialize)]
struct RawAlertmanagerConfig {
    scheme: Option<String>,
    #[serde(default)]
    path_prefix: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    api_version: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    static_configs: Vec<StaticConfig>,
    #[serde(default, deserialize_with = "de_null_default")]
    file_sd_configs: Vec<FileSdConfig>,
    #[serde(default, deserialize_with = "de_null_default")]
    http_sd_configs: Vec<HttpSdConfig>,
    #[serde(default, deserialize_with = "de_null_default")]
    relabel_configs: Vec<RelabelConfig>,
    #[serde(default, deserialize_with = "de_null_default")]
    alert_relabel_configs: Vec<RelabelConfig>,
    #[serde(flatten)]
    http: RawHttpClientConfig,
    #[serde(flatten)]
    other: BTreeMap<String, serde_norway::Value>,
}

impl TryFrom<RawAlertmanagerConfig> for AlertmanagerConfig {
    type Error = String;

    fn try_from(r: RawAlertmanagerConfig) -> Result<Self, String> {
        let scheme = check_scheme(r.scheme)?;
        let api_version = r.api_version.unwrap_or_else(|| "v2".into());
        if !matches!(api_version.as_str(), "v1" | "v2") {
            return Err(format!(
                "expected Alertmanager api version to be one of [v1 v2] but got {api_version:?}"
            ));
        }
        Ok(AlertmanagerConfig {
            scheme,
            path_prefix: r.path_prefix,
            timeout: r.timeout.unwrap_or(Duration::from_secs(10)),
            api_version,
            static_configs: r.static_configs,
            file_sd_configs: r.file_sd_configs,
            http_sd_configs: r.http_sd_configs,
            relabel_configs: r.relabel_configs,
            alert_relabel_configs: r.alert_relabel_configs,
            unsupported_sd_configs: split_unknown("alertmanagers", r.other)?,
            http: r.http.try_into()?,
        })
    }
}

/// One entry of `remote_write`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRemoteWriteConfig")]
pub struct RemoteWriteConfig {
    /// Endpoint URL.
    pub url: String,
    /// Optional name, unique among remote writes.
    pub name: Option<String>,
    /// Per-request timeout (30s).
    pub remote_timeout: Duration,
    /// Extra HTTP headers.
    pub headers: BTreeMap<String, String>,
    /// `write_relabel_configs`.
    pub write_relabel_configs: Vec<RelabelConfig>,
    /// `send_exemplars`.
    pub send_exemplars: bool,
    /// `send_native_histograms`.
    pub send_native_histograms: bool,
    /// `protobuf_message` (remote write 1.0 or 2.0 message type).
    pub protobuf_message: Option<String>,
    /// `queue_config`, `metadata_config`, `sigv4`, `azuread`, `google_iam`,
    /// `round_robin_dns`, kept as written.
    pub kept: BTreeMap<String, serde_norway::Value>,
    /// Authentication, TLS, proxy.
    pub http: HttpClientConfig,
}

#[derive(Deserialize)]
struct RawRemoteWriteConfig {
    #[serde(default)]
    url: String,
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    remote_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_null_default")]
    headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "de_null_default")]
    write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    send_exemplars: bool,
    #[serde(default)]
    send_native_histograms: bool,
    protobuf_message: Option<String>,
    #[serde(flatten)]
    http: RawHttpClientConfig,
    #[serde(flatten)]
    other: BTreeMap<String, serde_norway::Value>,
}

impl TryFrom<RawRemoteWriteConfig> for RemoteWriteConfig {
    type Error = String;

    fn try_from(r: RawRemoteWriteConfig) -> Result<Self, String> {
        if r.url.is_empty() {
            return Err("url for remote_write is empty".into());
        }
        const KEPT: [&str; 6] = [
            "queue_config",
            "metadata_config",
            "sigv4",
            "azuread",
            "google_iam",
            "round_robin_dns",
        ];
        if let Some(key) = r.other.keys().find(|k| !KEPT.contains(&k.as_str())) {
            return Err(format!("unknown field `{key}` in remote_write"));
        }
        Ok(RemoteWriteConfig {
            url: r.url,
            name: r.name,
            remote_timeout: r.remote_timeout.unwrap_or(Duration::from_secs(30)),
            headers: r.headers,
            write_relabel_configs: r.write_relabel_configs,
            send_exemplars: r.send_exemplars,
            send_native_histograms: r.send_native_histograms,
            protobuf_message: r.protobuf_message,
            kept: r.other,
            http: r.http.try_into()?,
        })
    }
}

fn check_scheme(scheme: Option<String>) -> Result<String, String> {
    let scheme = scheme.unwrap_or_else(|| "http".into());
    if matches!(scheme.as_str(), "http" | "https") {
        Ok(scheme)
    } else {
        Err(format!("invalid scheme {scheme:?}: must be http or https"))
    }
}

/// Declares the raw scrape config with one kept field per service
/// discovery mechanism kiln does not implement, and the list of those
/// present.
macro_rules! raw_scrape_config {
    ($($sd:ident),* $(,)?) => {
        /// A scrape config as written. Every field is listed here rather than
        /// flattened so that an error anywhere inside keeps its position.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawScrapeConfig {
            #[serde(default)]
            job_name: String,
            #[serde(default, deserialize_with = "de_opt_duration")]
            scrape_interval: Option<Duration>,
            #[serde(default, deserialize_with = "de_opt_duration")]
            scrape_timeout: Option<Duration>,
            metrics_path: Option<String>,
            scheme: Option<String>,
            #[serde(default, deserialize_with = "de_null_default")]
            params: BTreeMap<String, Vec<String>>,
            #[serde(default)]
            honor_labels: bool,
            honor_timestamps: Option<bool>,
            #[serde(default)]
            track_timestamps_staleness: bool,
            enable_compression: Option<bool>,
            #[serde(default)]
            sample_limit: u64,
            #[serde(default)]
            label_limit: u64,
            #[serde(default)]
            label_name_length_limit: u64,
            #[serde(default)]
            label_value_length_limit: u64,
            #[serde(default)]
            target_limit: u64,
            #[serde(default, deserialize_with = "de_bytes")]
            body_size_limit: u64,
            #[serde(default)]
            keep_dropped_targets: u64,
            #[serde(default, deserialize_with = "de_null_default")]
            scrape_protocols: Vec<String>,
            fallback_scrape_protocol: Option<String>,
            // Accepted, ignored: see `ignored_settings`.
            scrape_classic_histograms: Option<bool>,
            always_scrape_classic_histograms: Option<bool>,
            convert_classic_histograms_to_nhcb: Option<bool>,
            scrape_native_histograms: Option<bool>,
            native_histogram_bucket_limit: Option<u64>,
            native_histogram_min_bucket_factor: Option<f64>,
            metric_name_validation_scheme: Option<String>,
            metric_name_escaping_scheme: Option<String>,
            scrape_failure_log_file: Option<String>,
            // The HTTP client.
            basic_auth: Option<BasicAuth>,
            authorization: Option<Authorization>,
            oauth2: Option<serde_norway::Value>,
            bearer_token: Option<Secret>,
            bearer_token_file: Option<String>,
            #[serde(default, deserialize_with = "de_null_default")]
            tls_config: TlsConfig,
            proxy_url: Option<String>,
            no_proxy: Option<String>,
            #[serde(default)]
            proxy_from_environment: bool,
            proxy_connect_header: Option<serde_norway::Value>,
            follow_redirects: Option<bool>,
            enable_http2: Option<bool>,
            http_headers: Option<serde_norway::Value>,
            // Discovery and relabeling.
            #[serde(default, deserialize_with = "de_null_default")]
            static_configs: Vec<StaticConfig>,
            #[serde(default, deserialize_with = "de_null_default")]
            file_sd_configs: Vec<FileSdConfig>,
            #[serde(default, deserialize_with = "de_null_default")]
            http_sd_configs: Vec<HttpSdConfig>,
            #[serde(default, deserialize_with = "de_null_default")]
            relabel_configs: Vec<RelabelConfig>,
            #[serde(default, deserialize_with = "de_null_default")]
            metric_relabel_configs: Vec<RelabelConfig>,
            $(
                $sd: Option<serde_norway::Value>,
            )*
        }

        impl RawScrapeConfig {
            fn unsupported_sd_configs(&self) -> Vec<String> {
                let mut names = Vec::new();
                $(
                    if self.$sd.is_some() {
                        names.push(stringify!($sd).to_owned());
                    }
                )*
                names
            }
        }
    };
}

raw_scrape_config!(
    azure_sd_configs,
    consul_sd_configs,
    digitalocean_sd_configs,
    docker_sd_configs,
    dockerswarm_sd_configs,
    dns_sd_configs,
    ec2_sd_configs,
    eureka_sd_configs,
    gce_sd_configs,
    hetzner_sd_configs,
    ionos_sd_configs,
    kubernetes_sd_configs,
    kuma_sd_configs,
    lightsail_sd_configs,
    linode_sd_configs,
    marathon_sd_configs,
    nerve_sd_configs,
    nomad_sd_configs,
    openstack_sd_configs,
    ovhcloud_sd_configs,
    puppetdb_sd_configs,
    scaleway_sd_configs,
    serverset_sd_configs,
    stackit_sd_configs,
    triton_sd_configs,
    uyuni_sd_configs,
    vultr_sd_configs,
);

impl ScrapeConfig {
    /// Each limit left at 0 takes the global one.
    fn inherit_limits(&mut self, global: ScrapeLimits) {
        let pick = |own: &mut u64, global: u64| {
            if *own == 0 {
                *own = global;
            }
        };
        pick(&mut self.sample_limit, global.sample_limit);
        pick(&mut self.label_limit, global.label_limit);
        pick(
            &mut self.label_name_length_limit,
            global.label_name_length_limit,
        );
        pick(
            &mut self.label_value_length_limit,
            global.label_value_length_limit,
        );
        pick(&mut self.target_limit, global.target_limit);
        pick(&mut self.body_size_limit, global.body_size_limit);
        pick(&mut self.keep_dropped_targets, global.keep_dropped_targets);
    }
}

impl RawScrapeConfig {
    /// The scrape config with everything but `global` applied and checked.
    /// Interval and timeout stay zero when unset; [`Config::parse`] fills
    /// them from `global`.
    fn into_scrape_config(self) -> Result<ScrapeConfig, String> {
        if self.job_name.is_empty() {
            return Err("job_name is empty".into());
        }
        let scheme = check_scheme(self.scheme.clone())?;
        for p in &self.scrape_protocols {
            if !SCRAPE_PROTOCOLS.contains(&p.as_str()) {
                return Err(format!(
                    "unknown scrape protocol {p:?}, supported: {SCRAPE_PROTOCOLS:?}"
                ));
            }
        }
        let mut ignored = Vec::new();
        for (name, set) in [
            (
                "scrape_classic_histograms",
                self.scrape_classic_histograms.is_some(),
            ),
            (
                "always_scrape_classic_histograms",
                self.always_scrape_classic_histograms.is_some(),
            ),
            (
                "convert_classic_histograms_to_nhcb",
                self.convert_classic_histograms_to_nhcb.is_some(),
            ),
            (
                "scrape_native_histograms",
                self.scrape_native_histograms.is_some(),
            ),
            (
                "native_histogram_bucket_limit",
                self.native_histogram_bucket_limit.is_some(),
            ),
            (
                "native_histogram_min_bucket_factor",
                self.native_histogram_min_bucket_factor.is_some(),
            ),
            (
                "metric_name_validation_scheme",
                self.metric_name_validation_scheme.is_some(),
            ),
            (
                "metric_name_escaping_scheme",
                self.metric_name_escaping_scheme.is_some(),
            ),
            (
                "scrape_failure_log_file",
                self.scrape_failure_log_file.is_some(),
            ),
        ] {
            if set {
                ignored.push(name.to_owned());
            }
        }
        let unsupported_sd_configs = self.unsupported_sd_configs();
        let http = HttpClientConfig::try_from(RawHttpClientConfig {
            basic_auth: self.basic_auth,
            authorization: self.authorization,
            oauth2: self.oauth2,
            bearer_token: self.bearer_token,
            bearer_token_file: self.bearer_token_file,
            tls_config: self.tls_config,
            proxy_url: self.proxy_url,
            no_proxy: self.no_proxy,
            proxy_from_environment: self.proxy_from_environment,
            proxy_connect_header: self.proxy_connect_header,
            follow_redirects: self.follow_redirects,
            enable_http2: self.enable_http2,
            http_headers: self.http_headers,
        })?;
        Ok(ScrapeConfig {
            job_name: self.job_name,
            scrape_interval: self.scrape_interval.unwrap_or(Duration::ZERO),
            scrape_timeout: self.scrape_timeout.unwrap_or(Duration::ZERO),
            metrics_path: self.metrics_path.unwrap_or_else(|| "/metrics".into()),
            scheme,
            params: self.params,
            honor_labels: self.honor_labels,
            honor_timestamps: self.honor_timestamps.unwrap_or(true),
            track_timestamps_staleness: self.track_timestamps_staleness,
            enable_compression: self.enable_compression.unwrap_or(true),
            sample_limit: self.sample_limit,
            label_limit: self.label_limit,
            label_name_length_limit: self.label_name_length_limit,
            label_value_length_limit: self.label_value_length_limit,
            target_limit: self.target_limit,
            body_size_limit: self.body_size_limit,
            keep_dropped_targets: self.keep_dropped_targets,
            scrape_protocols: self.scrape_protocols,
            fallback_scrape_protocol: self.fallback_scrape_protocol,
            http,
            static_configs: self.static_configs,
            file_sd_configs: self.file_sd_configs,
            http_sd_configs: self.http_sd_configs,
            unsupported_sd_configs,
            ignored_settings: ignored,
            relabel_configs: self.relabel_configs,
            metric_relabel_configs: self.metric_relabel_configs,
        })
    }
}

/// A scrape config checked on its own while reading, so that its errors
/// carry the position where the reader stands.
struct ParsedScrapeConfig(ScrapeConfig);

impl<'de> Deserialize<'de> for ParsedScrapeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawScrapeConfig::deserialize(d)?;
        raw.into_scrape_config()
            .map(ParsedScrapeConfig)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobalConfig {
    #[serde(default, deserialize_with = "de_opt_duration")]
    scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    scrape_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    evaluation_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    rule_query_offset: Option<Duration>,
    #[serde(default, deserialize_with = "de_null_default")]
    external_labels: BTreeMap<String, String>,
    query_log_file: Option<String>,
    scrape_failure_log_file: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    scrape_protocols: Vec<String>,
    #[serde(default)]
    sample_limit: u64,
    #[serde(default)]
    label_limit: u64,
    #[serde(default)]
    label_name_length_limit: u64,
    #[serde(default)]
    label_value_length_limit: u64,
    #[serde(default)]
    target_limit: u64,
    #[serde(default, deserialize_with = "de_bytes")]
    body_size_limit: u64,
    #[serde(default)]
    keep_dropped_targets: u64,
    metric_name_validation_scheme: Option<String>,
    metric_name_escaping_scheme: Option<String>,
    convert_classic_histograms_to_nhcb: Option<bool>,
    always_scrape_classic_histograms: Option<bool>,
}

impl RawGlobalConfig {
    /// Prometheus's resolution of `global`: an unset timeout is 10s or the
    /// interval, whichever is shorter.
    fn resolve(self) -> Result<GlobalConfig, String> {
        let scrape_interval = self
            .scrape_interval
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_SCRAPE_INTERVAL);
        let scrape_timeout = match self.scrape_timeout.filter(|d| !d.is_zero()) {
            Some(t) => t,
            None => DEFAULT_SCRAPE_TIMEOUT.min(scrape_interval),
        };
        if scrape_timeout > scrape_interval {
            return Err("global scrape timeout greater than scrape interval".into());
        }
        for p in &self.scrape_protocols {
            if !SCRAPE_PROTOCOLS.contains(&p.as_str()) {
                return Err(format!("unknown global scrape protocol {p:?}"));
            }
        }
        let external_labels = Labels::from_pairs(&self.external_labels)
            .map_err(|e| format!("invalid external_labels: {e}"))?;
        // Read so that a typo in their type is an error; kiln has no use for
        // them yet.
        let _ignored = (
            self.scrape_failure_log_file,
            self.metric_name_validation_scheme,
            self.metric_name_escaping_scheme,
            self.convert_classic_histograms_to_nhcb,
            self.always_scrape_classic_histograms,
        );
        Ok(GlobalConfig {
            scrape_interval,
            scrape_timeout,
            evaluation_interval: self
                .evaluation_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_EVALUATION_INTERVAL),
            rule_query_offset: self.rule_query_offset.unwrap_or(Duration::ZERO),
            external_labels,
            limits: ScrapeLimits {
                sample_limit: self.sample_limit,
                label_limit: self.label_limit,
                label_name_length_limit: self.label_name_length_limit,
                label_value_length_limit: self.label_value_length_limit,
                target_limit: self.target_limit,
                body_size_limit: self.body_size_limit,
                keep_dropped_targets: self.keep_dropped_targets,
            },
            query_log_file: self.query_log_file,
            scrape_protocols: self.scrape_protocols,
        })
    }
}

#[derive(Default)]
struct ParsedGlobalConfig(GlobalConfig);

impl<'de> Deserialize<'de> for ParsedGlobalConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<RawGlobalConfig>::deserialize(d)?.unwrap_or_default();
        raw.resolve()
            .map(ParsedGlobalConfig)
            .map_err(serde::de::Error::custom)
    }
}

/// A file named by `scrape_config_files`: scrape configs only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrapeConfigFile {
    #[serde(default, deserialize_with = "de_null_default")]
    scrape_configs: Vec<ParsedScrapeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: ParsedGlobalConfig,
    #[serde(default, deserialize_with = "de_null_default")]
    scrape_configs: Vec<ParsedScrapeConfig>,
    #[serde(default, deserialize_with = "de_null_default")]
    scrape_config_files: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    rule_files: Vec<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    alerting: AlertingConfig,
    #[serde(default, deserialize_with = "de_null_default")]
    remote_write: Vec<RemoteWriteConfig>,
    remote_read: Option<serde_norway::Value>,
    storage: Option<serde_norway::Value>,
    tracing: Option<serde_norway::Value>,
    otlp: Option<serde_norway::Value>,
    runtime: Option<serde_norway::Value>,
}

impl Config {
    /// Reads and parses the file at `path`; relative paths inside it
    /// (`rule_files`, `scrape_config_files`, file_sd `files`, the files of
    /// a scrape config's `tls_config`) are taken relative to the file's
    /// directory, as Prometheus does. As `promtool check config`, a scrape
    /// config's client certificate and key files must exist (a CA file is
    /// read when the configuration is applied).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            column: None,
            message: e.to_string(),
        })?;
        let mut cfg = Config::parse(&text, &file)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            cfg.resolve_paths(dir);
        }
        cfg.load_scrape_config_files()?;
        cfg.check_client_cert_files(&file)?;
        Ok(cfg)
    }

    /// `promtool check config`'s check: the client certificate and key
    /// files of every scrape config exist.
    fn check_client_cert_files(&mut self, file: &str) -> Result<(), ConfigError> {
        for sc in &mut self.scrape_configs {
            for (what, path) in sc.http.tls_config.files_mut().into_iter().skip(1) {
                let Some(path) = path.as_deref() else {
                    continue;
                };
                if let Err(e) = std::fs::metadata(path) {
                    return Err(ConfigError {
                        file: file.to_owned(),
                        line: None,
                        column: None,
                        message: format!(
                            "job {}: error checking {what} file {path:?}: {e}",
                            sc.job_name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends the scrape configs of every file matching
    /// `scrape_config_files` (in path order), resolved against `global`,
    /// with job names unique across all files.
    fn load_scrape_config_files(&mut self) -> Result<(), ConfigError> {
        let mut seen: HashSet<String> = self
            .scrape_configs
            .iter()
            .map(|s| s.job_name.clone())
            .collect();
        for pattern in self.scrape_config_files.clone() {
            let err = |file: &str, message: String| ConfigError {
                file: file.to_owned(),
                line: None,
                column: None,
                message,
            };
            let mut paths: Vec<_> = glob::glob(&pattern)
                .map_err(|e| err(&pattern, e.to_string()))?
                .filter_map(Result::ok)
                .collect();
            paths.sort();
            for path in paths {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| err(&file, e.to_string()))?;
                let raw: Option<ScrapeConfigFile> =
                    serde_norway::from_str(&text).map_err(|e| yaml_error(&file, &e))?;
                let mut configs: Vec<ScrapeConfig> = raw
                    .map(|r| r.scrape_configs.into_iter().map(|p| p.0).collect())
                    .unwrap_or_default();
                resolve_scrape_configs(&mut configs, &self.global, &mut seen, &text, &file)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    for c in &mut configs {
                        resolve_scrape_config_paths(c, dir);
                    }
                }
                self.scrape_configs.extend(configs);
            }
        }
        Ok(())
    }

    /// Parses configuration text; `file_name` names it in errors.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let raw: Option<RawConfig> =
            serde_norway::from_str(text).map_err(|e| yaml_error(file_name, &e))?;
        let raw = raw.unwrap_or_default();
        let global = raw.global.0;
        let mut scrape_configs: Vec<ScrapeConfig> =
            raw.scrape_configs.into_iter().map(|p| p.0).collect();
        let mut seen = HashSet::new();
        resolve_scrape_configs(&mut scrape_configs, &global, &mut seen, text, file_name)?;
        let mut names = HashSet::new();
        for rw in &raw.remote_write {
            if let Some(n) = &rw.name
                && !names.insert(n.clone())
            {
                return Err(ConfigError {
                    file: file_name.to_owned(),
                    line: None,
                    column: None,
                    message: format!("found multiple remote write configs with job name {n:?}"),
                });
            }
        }
        let kept = [
            ("remote_read", raw.remote_read),
            ("storage", raw.storage),
            ("tracing", raw.tracing),
            ("otlp", raw.otlp),
            ("runtime", raw.runtime),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect();
        Ok(Config {
            global,
            scrape_configs,
            scrape_config_files: raw.scrape_config_files,
            rule_files: raw.rule_files,
            alerting: raw.alerting,
            remote_write: raw.remote_write,
            kept,
        })
    }

    /// The scrape config of job `name`.
    pub fn scrape_config(&self, name: &str) -> Option<&ScrapeConfig> {
        self.scrape_configs.iter().find(|s| s.job_name == name)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                *p = dir.join(&*p).display().to_string();
            }
        };
        self.rule_files.iter_mut().for_each(join);
        self.scrape_config_files.iter_mut().for_each(join);
        for sc in &mut self.scrape_configs {
            resolve_scrape_config_paths(sc, dir);
        }
        let sd_files = self
            .alerting
            .alertmanagers
            .iter_mut()
            .flat_map(|a| a.file_sd_configs.iter_mut());
        for sd in sd_files {
            sd.files.iter_mut().for_each(join);
        }
    }
}

/// Makes a scrape config's relative paths (file_sd `files`, the
/// `tls_config` files of the job and of its `http_sd_configs`) relative to
/// `dir`.
fn resolve_scrape_config_paths(sc: &mut ScrapeConfig, dir: &Path) {
    let join = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = dir.join(&*p).display().to_string();
        }
    };
    for sd in &mut sc.file_sd_configs {
        sd.files.iter_mut().for_each(join);
    }
    let tls = std::iter::once(&mut sc.http.tls_config).chain(
        sc.http_sd_configs
            .iter_mut()
            .map(|h| &mut h.http.tls_config),
    );
    for t in tls {
        for (_, f) in t.files_mut() {
            if let Some(f) = f {
                join(f);
            }
        }
    }
}

/// Resolves scrape configs read from `text` (named `file_name`) against
/// `global` and checks their job names against `seen` and each other.
fn resolve_scrape_configs(
    scrape_configs: &mut [ScrapeConfig],
    global: &GlobalConfig,
    seen: &mut HashSet<String>,
    text: &str,
    file_name: &str,
) -> Result<(), ConfigError> {
    let at_job = |job: &str, nth: usize, message: String| {
        let pos = locate_job(text, job, nth);
        ConfigError {
            file: file_name.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            message,
        }
    };
    // Occurrences of each job name in this file, to point at the right one.
    let mut in_file: HashMap<String, usize> = HashMap::new();
    for sc in scrape_configs.iter_mut() {
        let nth = in_file.entry(sc.job_name.clone()).or_default();
        *nth += 1;
        if !seen.insert(sc.job_name.clone()) {
            return Err(at_job(
                &sc.job_name,
                *nth,
                format!(
                    "found multiple scrape configs with job name {:?}",
                    sc.job_name
                ),
            ));
        }
        if sc.scrape_interval.is_zero() {
            sc.scrape_interval = global.scrape_interval;
        }
        if sc.scrape_timeout > sc.scrape_interval {
            return Err(at_job(
                &sc.job_name,
                *nth,
                format!(
                    "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                    sc.job_name
                ),
            ));
        }
        if sc.scrape_timeout.is_zero() {
            sc.scrape_timeout = global.scrape_timeout.min(sc.scrape_interval);
        }
        sc.inherit_limits(global.limits);
        if sc.scrape_protocols.is_empty() {
            sc.scrape_protocols = global.scrape_protocols.clone();
        }
    }
    Ok(())
}

/// A YAML or type error with its position; the message without the
/// reader's own " at line L column C" suffix.
fn yaml_error(file: &str, e: &serde_norway::Error) -> ConfigError {
    let loc = e.location();
    let mut message = e.to_string();
    if let Some(l) = &loc {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
        }
    }
    ConfigError {
        file: file.to_owned(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message,
    }
}

/// Line and column of the `nth` (1-based) `job_name: <job>` in `text`: the
/// position of an error found after reading, such as a duplicate job.
fn locate_job(text: &str, job: &str, nth: usize) -> Option<(usize, usize)> {
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(col) = line.find("job_name:") else {
            continue;
        };
        let value = line[col + "job_name:".len()..]
            .split(" #")
            .next()
            .unwrap_or("")
            .trim();
        let value = value
            .strip_prefix(['"', '\''])
            .and_then(|v| v.strip_suffix(['"', '\'']))
            .unwrap_or(value);
        if value == job {
            count += 1;
            if count == nth {
                return Some((i + 1, col + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
