//! HTTPS scrapes and HTTPS HTTP discovery, end to end: the test makes its
//! own certificate authority, a server certificate for 127.0.0.1 and
//! `localhost` and a client certificate, serves HTTPS with tokio-rustls on
//! 127.0.0.1 ephemeral ports, and checks through kiln's HTTP API what each
//! `tls_config` gives: verification against `ca_file`, the unknown
//! authority without it, `insecure_skip_verify`, `server_name` both ways,
//! client certificates, discovery over HTTPS, and a CA file rotated under
//! an unchanged configuration picked up by a reload.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Kiln;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;

/// A certificate authority and what it signed, as PEM text.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, ca)
        .expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn pki(name: &str) -> Pki {
    let ca = authority(name);
    let (server_cert, server_key) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = leaf(&ca, &["kiln-client"]);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration with `pki`'s server certificate; when
/// `client_ca` is given, clients must present a certificate it signed.
fn server_config(pki: &Pki, client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("server cert");
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).expect("server key");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("client CA")).expect("add client CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(chain, key).expect("server config"))
}

/// An HTTPS server answering every request with `body`; stops on drop.
struct HttpsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn serve_https(
    config: Arc<rustls::ServerConfig>,
    content_type: &'static str,
    body: String,
) -> HttpsServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let body = Bytes::from(body);
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut stopped => return,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    // A refused handshake is part of some tests.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            let mut resp = hyper::Response::new(Full::new(body));
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static(content_type),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    HttpsServer {
        addr,
        stop: Some(stop),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// Every active target by job, once each job in `jobs` has one whose
/// health is not `unknown`; at most 20 s.
fn settled(kiln: &Kiln, jobs: &[&str]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = BTreeMap::new();
    while Instant::now() < deadline {
        let r = kiln.get("/api/v1/targets?state=active").json();
        last = r["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| (t["scrapePool"].as_str().unwrap_or("").to_owned(), t.clone()))
            .collect();
        if jobs
            .iter()
            .all(|j| last.get(*j).is_some_and(|t| t["health"] != "unknown"))
        {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("targets of {jobs:?} never settled: {last:?}");
}

/// Waits (at most 20 s) until `job`'s target has `health`; returns it.
fn wait_health(kiln: &Kiln, job: &str, health: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = kiln
            .get(&format!("/api/v1/targets?scrapePool={job}"))
            .json();
        last = r["data"]["activeTargets"][0].clone();
        if last["health"] == health {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {job} never became {health}: {last}");
}

const METRICS: &str = "# TYPE tls_test_value gauge\ntls_test_value 42\n";

#[test]
fn https_targets_follow_tls_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = pki("kiln test CA");
    let other = pki("another CA");
    let ca = write(dir.path(), "ca.pem", &good.ca);
    let cert = write(dir.path(), "client.pem", &good.client_cert);
    let key = write(dir.path(), "client-key.pem", &good.client_key);
    // Starts as the wrong authority; replaced before a reload.
    let rotated = write(dir.path(), "rotated-ca.pem", &other.ca);

    let plain = serve_https(server_config(&good, None), "text/plain", METRICS.to_owned());
    let mutual = serve_https(
        server_config(&good, Some(&good.ca)),
        "text/plain",
        METRICS.to_owned(),
    );
    let sd = serve_https(
        server_config(&good, None),
        "application/json",
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"origin": "sd"}}}}]"#,
            plain.addr
        ),
    );
    let (p, m) = (plain.addr, mutual.addr);
    let job = |name: &str, addr: SocketAddr, tls: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config: {{{tls}}}\n    static_configs: [{{targets: ['{addr}']}}]\n"
        )
    };
    let config = [
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\nscrape_configs:\n".to_owned(),
        job("ca", p, &format!("ca_file: '{ca}'")),
        job("system_roots", p, ""),
        job("insecure", p, "insecure_skip_verify: true"),
        job("name_override", p, &format!("ca_file: '{ca}', server_name: localhost")),
        job("name_mismatch", p, &format!("ca_file: '{ca}', server_name: wrong.example")),
        job("mtls", m, &format!("ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'")),
        job("mtls_no_cert", m, &format!("ca_file: '{ca}'")),
        job("rotated", p, &format!("ca_file: '{rotated}'")),
        format!(
            "  - job_name: https_sd\n    scheme: https\n    tls_config: {{ca_file: '{ca}'}}\n    http_sd_configs:\n      - url: 'https://localhost:{}/sd'\n        refresh_interval: 1s\n        tls_config: {{ca_file: '{ca}'}}\n",
            sd.addr.port()
        ),
    ]
    .concat();
    let path = write(dir.path(), "prometheus.yml", &config);
    let kiln = Kiln::start(&[&format!("--config.file={path}"), "--web.enable-lifecycle"]);

    let all = [
        "ca",
        "system_roots",
        "insecure",
        "name_override",
        "name_mismatch",
        "mtls",
        "mtls_no_cert",
        "rotated",
    ];
    let t = settled(&kiln, &all);
    for up in ["ca", "insecure", "name_override", "mtls"] {
        let t = wait_health(&kiln, up, "up");
        assert_eq!(t["lastError"], "", "{up}: {t}");
    }
    let error = |job: &str| {
        let t = &t[job];
        assert_eq!(t["health"], "down", "{job}: {t}");
        t["lastError"].as_str().unwrap_or("").to_owned()
    };
    let e = error("system_roots");
    assert!(
        e.contains("certificate signed by unknown authority")
            && e.contains("the system's trusted roots"),
        "{e}"
    );
    let e = error("name_mismatch");
    assert!(e.contains("not valid for name \"wrong.example\""), "{e}");
    let e = error("mtls_no_cert");
    assert!(e.contains("requires a client certificate"), "{e}");
    let e = error("rotated");
    assert!(
        e.contains("certificate signed by unknown authority") && e.contains("rotated-ca.pem"),
        "{e}"
    );

    // The scraped samples are there, with the target's labels.
    let r = kiln
        .get("/api/v1/query?query=tls_test_value%7Bjob%3D%22mtls%22%7D")
        .json();
    assert_eq!(r["data"]["result"][0]["value"][1], "42", "{r}");

    // Discovery over HTTPS found the target, and it is scraped over HTTPS.
    let t = wait_health(&kiln, "https_sd", "up");
    assert_eq!(t["labels"]["origin"], "sd", "{t}");
    assert_eq!(t["scrapeUrl"], format!("https://{p}/metrics"), "{t}");

    // The right CA under the same file name and an unchanged
    // configuration: a reload rebuilds the TLS client and the running
    // loop uses it.
    write(dir.path(), "rotated-ca.pem", &good.ca);
    let r = kiln.request("POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = wait_health(&kiln, "rotated", "up");
    assert_eq!(t["lastError"], "", "{t}");
}

#[test]
fn unreadable_ca_file_fails_each_scrape_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = pki("kiln test CA");
    let server = serve_https(server_config(&good, None), "text/plain", METRICS.to_owned());
    let missing = dir.path().join("missing-ca.pem").display().to_string();
    let path = write(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}\nscrape_configs:\n  - job_name: broken\n    scheme: https\n    tls_config: {{ca_file: '{missing}'}}\n    static_configs: [{{targets: ['{}']}}]\n",
            server.addr
        ),
    );
    let kiln = Kiln::start(&[&format!("--config.file={path}")]);
    let t = wait_health(&kiln, "broken", "down");
    let e = t["lastError"].as_str().unwrap_or("");
    assert!(
        e.contains("unable to read CA file") && e.contains("missing-ca.pem"),
        "{e}"
    );
}
