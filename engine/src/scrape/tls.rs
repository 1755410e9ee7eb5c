//! TLS for scrapes and HTTP discovery, as Prometheus's HTTP client does it:
//! the server's certificate is verified against `ca_file` (or inline `ca`)
//! when one is given and against the system's trusted roots otherwise;
//! `server_name` replaces the URL's host for SNI and verification;
//! `insecure_skip_verify` accepts any certificate (the handshake's
//! signatures are still checked); `cert_file` and `key_file` (or inline
//! `cert`/`key`) present a client certificate; `min_version` and
//! `max_version` bound the protocol (rustls speaks TLS 1.2 and 1.3, so
//! `TLS10` and `TLS11` as a minimum mean TLS 1.2).
//!
//! A [`TlsClient`] is built once per `tls_config` when the configuration is
//! applied (start and every reload, reading its files then) and shared by
//! every connection made with it. Building fails on unreadable files or
//! unusable PEM; that error is then what every HTTPS scrape with it
//! reports, as the brief of a failed scrape.

use std::fmt;
use std::sync::{Arc, OnceLock};

use kiln_ingest::config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What a failed [`TlsClient`] build or handshake reports.
pub type TlsSetup = Result<Arc<TlsClient>, String>;

/// A ready TLS client configuration for one `tls_config`.
pub struct TlsClient {
    connector: TlsConnector,
    /// `server_name`, when set.
    server_name: Option<ServerName<'static>>,
    /// What the server's certificate is checked against, for errors.
    trust: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trusted roots, read once per process (as Go does).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("reading the system's trusted certificates: {e}");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            if ignored > 0 {
                log::warn!("{ignored} of the system's trusted certificates are unusable");
            }
            if added == 0 {
                log::warn!(
                    "no trusted certificates found on the system: HTTPS targets need tls_config.ca_file"
                );
            }
            Arc::new(store)
        })
        .clone()
}

/// PEM text from an inline value or a file.
fn pem(inline: Option<&str>, file: Option<&str>, what: &str) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(text), _) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(path)) => std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("unable to read {what} file {path:?}: {e}")),
        (None, None) => Ok(None),
    }
}

fn certs(text: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unable to parse {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("unable to use {what}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The protocol versions `min_version`..=`max_version` allow.
fn versions(cfg: &TlsConfig) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    // Rank: TLS10 = 0 … TLS13 = 3; the configuration parser refused
    // anything else.
    let rank = |v: &Option<String>, default: u8| match v.as_deref() {
        Some("TLS10") => 0,
        Some("TLS11") => 1,
        Some("TLS12") => 2,
        Some("TLS13") => 3,
        _ => default,
    };
    let (min, max) = (rank(&cfg.min_version, 2), rank(&cfg.max_version, 3));
    let mut out = Vec::new();
    if min <= 3 && max >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if min <= 2 && max >= 2 {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(format!(
            "tls_config allows no protocol kiln speaks (min_version {:?}, max_version {:?}; kiln speaks TLS12 and TLS13)",
            cfg.min_version.as_deref().unwrap_or(""),
            cfg.max_version.as_deref().unwrap_or("")
        ));
    }
    Ok(out)
}

impl TlsClient {
    /// Builds the client for `cfg`, reading its files now.
    pub fn build(cfg: &TlsConfig) -> Result<TlsClient, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(cfg)?)
            .map_err(|e| format!("tls_config: {e}"))?;
        let ca = pem(cfg.ca.as_deref(), cfg.ca_file.as_deref(), "CA")?;
        let (verifier, trust): (Arc<dyn ServerCertVerifier>, String) = if cfg.insecure_skip_verify {
            let v = AnyCertificate(provider.signature_verification_algorithms);
            (Arc::new(v), "nothing (insecure_skip_verify)".to_owned())
        } else {
            let (roots, trust) = match &ca {
                Some(text) => {
                    let name = cfg
                        .ca_file
                        .as_deref()
                        .map_or_else(|| "the inline ca".to_owned(), |f| format!("ca_file {f:?}"));
                    let mut store = RootCertStore::empty();
                    for c in certs(text, &name)? {
                        store
                            .add(c)
                            .map_err(|e| format!("unable to use {name}: {e}"))?;
                    }
                    (Arc::new(store), name)
                }
                None => (system_roots(), "the system's trusted roots".to_owned()),
            };
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("tls_config: {e}"))?;
            (v, trust)
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let cert = pem(cfg.cert.as_deref(), cfg.cert_file.as_deref(), "client cert")?;
        let key = pem(
            cfg.key.as_ref().map(|k| k.0.as_str()),
            cfg.key_file.as_deref(),
            "client key",
        )?;
        let config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = certs(&cert, "the client cert")?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| format!("unable to parse the client key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("unable to use the client cert and key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            // The configuration parser refuses one without the other.
            _ => return Err("client cert and key must be given together".to_owned()),
        };
        let server_name = match &cfg.server_name {
            Some(n) if !n.is_empty() => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("invalid tls_config server_name {n:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            trust,
        })
    }

    /// Builds the client for `cfg`, shared; logs a failure once for `what`
    /// when the configuration sets anything (a default `tls_config` cannot
    /// fail unless the system has no roots).
    pub fn setup(cfg: &TlsConfig, what: &str) -> TlsSetup {
        TlsClient::build(cfg).map(Arc::new).inspect_err(|e| {
            log::error!("{what}: tls_config: {e}; its HTTPS requests fail until this is fixed");
        })
    }

    /// Runs the TLS handshake over `tcp` with the server `host` (from the
    /// URL, bracketless; replaced by `server_name` when set).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host:?} cannot be verified as a TLS server name: {e}"))?,
        };
        self.connector.connect(name, tcp).await.map_err(|e| {
            self.describe(&e)
                .unwrap_or_else(|| format!("TLS handshake: {e}"))
        })
    }

    /// A precise text for a TLS failure found anywhere in `err`'s chain of
    /// causes (a handshake error, or an alert the server sent later, as a
    /// TLS 1.3 server refusing a client certificate does); `None` when the
    /// chain holds no TLS error.
    pub fn describe(&self, err: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(self.explain(tls));
            }
            // io::Error hides its payload from `source()`.
            cur = match e.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as _),
                None => e.source(),
            };
        }
        None
    }

    fn explain(&self, e: &rustls::Error) -> String {
        use rustls::AlertDescription as A;
        match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "TLS handshake: certificate signed by unknown authority (checked against {})",
                self.trust
            ),
            rustls::Error::InvalidCertificate(c) => format!("TLS handshake: {c}"),
            rustls::Error::AlertReceived(A::CertificateRequired) => {
                "TLS: the server requires a client certificate (tls_config cert_file and key_file)"
                    .to_owned()
            }
            rustls::Error::AlertReceived(
                a @ (A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::AccessDenied),
            ) => format!("TLS: the server refused kiln's client certificate (alert {a:?})"),
            rustls::Error::AlertReceived(a) => {
                format!("TLS: the server ended the handshake with alert {a:?}")
            }
            other => format!("TLS: {other}"),
        }
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures must still be made by its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_min_and_max() {
        let cfg = |min: Option<&str>, max: Option<&str>| TlsConfig {
            min_version: min.map(str::to_owned),
            max_version: max.map(str::to_owned),
            ..TlsConfig::default()
        };
        let names = |c: &TlsConfig| -> Result<Vec<_>, String> {
            Ok(versions(c)?.iter().map(|v| v.version).collect())
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(names(&cfg(None, None)), Ok(vec![TLSv1_3, TLSv1_2]));
        assert_eq!(names(&cfg(Some("TLS10"), None)), Ok(vec![TLSv1_3, TLSv1_2]));
        assert_eq!(names(&cfg(Some("TLS13"), None)), Ok(vec![TLSv1_3]));
        assert_eq!(names(&cfg(None, Some("TLS12"))), Ok(vec![TLSv1_2]));
        assert!(names(&cfg(None, Some("TLS11"))).is_err());
    }

    #[test]
    fn unreadable_and_unusable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem").display().to_string();
        let e = TlsClient::build(&TlsConfig {
            ca_file: Some(missing.clone()),
            ..TlsConfig::default()
        })
        .unwrap_err();
        assert!(
            e.contains("unable to read CA file") && e.contains(&missing),
            "{e}"
        );
        let e = TlsClient::build(&TlsConfig {
            ca: Some("not PEM".to_owned()),
            ..TlsConfig::default()
        })
        .unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        // insecure_skip_verify needs no roots and no files.
        assert!(
            TlsClient::build(&TlsConfig {
                insecure_skip_verify: true,
                server_name: Some("example.org".to_owned()),
                ..TlsConfig::default()
            })
            .is_ok()
        );
    }
}
