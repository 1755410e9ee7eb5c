//! The HTTP client settings shared by scrape configs, alertmanagers,
//! `http_sd_configs` and remote write: authentication and TLS.
//!
//! Invariant: a [`HttpClientConfig`] is normalized: the legacy
//! `bearer_token`/`bearer_token_file` are folded into [`Authorization`]
//! (type `Bearer`), and at most one way to authenticate is configured.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{Secret, de_null_default};

/// `basic_auth`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// File holding the user name.
    pub username_file: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// File holding the password.
    pub password_file: Option<String>,
}

/// `authorization`: an `Authorization: <type> <credentials>` header.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme (default `Bearer`).
    #[serde(default = "bearer", rename = "type")]
    pub kind: String,
    /// The credentials.
    pub credentials: Option<Secret>,
    /// File holding the credentials.
    pub credentials_file: Option<String>,
}

fn bearer() -> String {
    "Bearer".into()
}

/// `tls_config`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate file.
    pub ca_file: Option<String>,
    /// CA certificate, inline PEM.
    pub ca: Option<String>,
    /// Client certificate file.
    pub cert_file: Option<String>,
    /// Client certificate, inline PEM.
    pub cert: Option<String>,
    /// Client key file.
    pub key_file: Option<String>,
    /// Client key, inline PEM.
    pub key: Option<Secret>,
    /// Server name for SNI and verification.
    pub server_name: Option<String>,
    /// Skip server certificate verification.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Minimum TLS version (`TLS12`, `TLS13`, …).
    pub min_version: Option<String>,
    /// Maximum TLS version.
    pub max_version: Option<String>,
}

/// The names `min_version` and `max_version` accept.
const TLS_VERSIONS: [&str; 4] = ["TLS10", "TLS11", "TLS12", "TLS13"];

impl TlsConfig {
    /// Prometheus's rules: one source per item, a client certificate and
    /// its key together, known protocol versions.
    fn validate(&self) -> Result<(), String> {
        let pairs = [
            ("ca", self.ca.is_some(), "ca_file", self.ca_file.is_some()),
            (
                "cert",
                self.cert.is_some(),
                "cert_file",
                self.cert_file.is_some(),
            ),
            (
                "key",
                self.key.is_some(),
                "key_file",
                self.key_file.is_some(),
            ),
        ];
        for (a, has_a, b, has_b) in pairs {
            if has_a && has_b {
                return Err(format!(
                    "tls_config: at most one of {a} and {b} must be configured"
                ));
            }
        }
        let cert = self.cert.is_some() || self.cert_file.is_some();
        let key = self.key.is_some() || self.key_file.is_some();
        if cert && !key {
            return Err(
                "tls_config: a client certificate (cert or cert_file) needs its key (key or key_file)"
                    .into(),
            );
        }
        if key && !cert {
            return Err(
                "tls_config: a client key (key or key_file) needs its certificate (cert or cert_file)"
                    .into(),
            );
        }
        for v in [&self.min_version, &self.max_version].into_iter().flatten() {
            if !TLS_VERSIONS.contains(&v.as_str()) {
                return Err(format!("unknown TLS version: {v}"));
            }
        }
        Ok(())
    }

    /// The files it names, each with what it holds, for path resolution
    /// and existence checks.
    pub(crate) fn files_mut(&mut self) -> [(&'static str, &mut Option<String>); 3] {
        [
            ("CA", &mut self.ca_file),
            ("client cert", &mut self.cert_file),
            ("client key", &mut self.key_file),
        ]
    }
}

/// The HTTP client settings, normalized. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpClientConfig {
    /// `basic_auth`.
    pub basic_auth: Option<BasicAuth>,
    /// `authorization`, or the folded `bearer_token(_file)`.
    pub authorization: Option<Authorization>,
    /// `oauth2`, kept as written (not implemented by kiln's client yet).
    pub oauth2: Option<serde_norway::Value>,
    /// `tls_config`.
    pub tls_config: TlsConfig,
    /// `proxy_url`.
    pub proxy_url: Option<String>,
    /// `no_proxy`.
    pub no_proxy: Option<String>,
    /// `proxy_from_environment`.
    pub proxy_from_environment: bool,
    /// `proxy_connect_header`, kept as written.
    pub proxy_connect_header: Option<serde_norway::Value>,
    /// `follow_redirects` (default true).
    pub follow_redirects: bool,
    /// `enable_http2` (default true).
    pub enable_http2: bool,
    /// `http_headers`, kept as written.
    pub http_headers: Option<serde_norway::Value>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            basic_auth: None,
            authorization: None,
            oauth2: None,
            tls_config: TlsConfig::default(),
            proxy_url: None,
            no_proxy: None,
            proxy_from_environment: false,
            proxy_connect_header: None,
            follow_redirects: true,
            enable_http2: true,
            http_headers: None,
        }
    }
}

/// The HTTP client fields as written. Embedded with `flatten` where the
/// enclosing section is kept rather than used (alerting, remote write,
/// http_sd); scrape configs list the same fields themselves so that errors
/// inside them keep their line and column.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawHttpClientConfig {
    pub(crate) basic_auth: Option<BasicAuth>,
    pub(crate) authorization: Option<Authorization>,
    pub(crate) oauth2: Option<serde_norway::Value>,
    pub(crate) bearer_token: Option<Secret>,
    pub(crate) bearer_token_file: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub(crate) tls_config: TlsConfig,
    pub(crate) proxy_url: Option<String>,
    pub(crate) no_proxy: Option<String>,
    #[serde(default)]
    pub(crate) proxy_from_environment: bool,
    pub(crate) proxy_connect_header: Option<serde_norway::Value>,
    pub(crate) follow_redirects: Option<bool>,
    pub(crate) enable_http2: Option<bool>,
    pub(crate) http_headers: Option<serde_norway::Value>,
}

impl TryFrom<RawHttpClientConfig> for HttpClientConfig {
    type Error = String;

    /// Prometheus's rules: one way to authenticate, one source per secret.
    fn try_from(r: RawHttpClientConfig) -> Result<Self, String> {
        if let Some(b) = &r.basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return Err(
                    "at most one of basic_auth password & password_file must be configured".into(),
                );
            }
            if !b.username.is_empty() && b.username_file.is_some() {
                return Err(
                    "at most one of basic_auth username & username_file must be configured".into(),
                );
            }
        }
        if r.bearer_token.is_some() && r.bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        r.tls_config.validate()?;
        let has_bearer = r.bearer_token.is_some() || r.bearer_token_file.is_some();
        if (r.basic_auth.is_some() || r.oauth2.is_some()) && has_bearer {
            return Err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"
                    .into(),
            );
        }
        let mut authorization = r.authorization;
        if let Some(a) = &authorization {
            if has_bearer {
                return Err(
                    "authorization is not compatible with bearer_token & bearer_token_file".into(),
                );
            }
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(
                    "at most one of authorization credentials & credentials_file must be configured"
                        .into(),
                );
            }
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
            if r.basic_auth.is_some() || r.oauth2.is_some() {
                return Err(
                    "at most one of basic_auth, oauth2 & authorization must be configured".into(),
                );
            }
        }
        if has_bearer {
            authorization = Some(Authorization {
                kind: bearer(),
                credentials: r.bearer_token,
                credentials_file: r.bearer_token_file,
            });
        }
        Ok(HttpClientConfig {
            basic_auth: r.basic_auth,
            authorization,
            oauth2: r.oauth2,
            tls_config: r.tls_config,
            proxy_url: r.proxy_url,
            no_proxy: r.no_proxy,
            proxy_from_environment: r.proxy_from_environment,
            proxy_connect_header: r.proxy_connect_header,
            follow_redirects: r.follow_redirects.unwrap_or(true),
            enable_http2: r.enable_http2.unwrap_or(true),
            http_headers: r.http_headers,
        })
    }
}

/// Checks that a section read with a flattened catch-all has no field
/// beyond the ones it knows. `*_sd_configs` keys are service discovery
/// kiln does not implement: they are returned, to be reported, not refused.
pub(crate) fn split_unknown(
    section: &str,
    other: BTreeMap<String, serde_norway::Value>,
) -> Result<Vec<String>, String> {
    let mut unsupported = Vec::new();
    for key in other.into_keys() {
        if key.ends_with("_sd_configs") {
            unsupported.push(key);
        } else {
            return Err(format!("unknown field `{key}` in {section}"));
        }
    }
    Ok(unsupported)
}
