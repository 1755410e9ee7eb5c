//! From the configuration to scrape loops: discovery per job, the target
//! pipeline, and dealing targets to the shards that own them.
//!
//! Runs on the main thread. [`TargetManager::sync`] recomputes every job's
//! targets (static, file and HTTP groups through relabeling) and sends each
//! runtime thread the complete list it must scrape; the shard's scrape
//! manager diffs it against its running loops by [`ScrapeTarget::key`], so a
//! target whose labels, URL and job settings are unchanged keeps its loop.
//! Files of `file_sd_configs` are re-read as soon as inotify reports a
//! change in their directory ([`TargetManager::file_changes`]), checked
//! every [`FILE_SD_CHECK`] as a fallback (size and modification time,
//! re-read only on change) and re-read whole every `refresh_interval`;
//! `http_sd_configs` endpoints are fetched on that tick once their
//! `refresh_interval` has passed, the first time at once, over HTTP or
//! HTTPS (each endpoint's TLS client is built when the configuration is
//! applied).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_ingest::config::{Config, HttpClientConfig, ScrapeConfig};
use kiln_ingest::discovery::{JobDiscovery, decode_http_sd};
use kiln_ingest::scrape::ScrapeSettings;
use kiln_ingest::target::{INSTANCE_LABEL, Target};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::xxh3_64;

use crate::scrape::tls::{TlsClient, TlsSetup};
use crate::scrape::{DroppedTargets, ScrapeCommand, ScrapeTarget, TargetRegistry};
use crate::tsdb::owner;

mod file_watch;

use self::file_watch::FileWatch;

/// How often file_sd files are checked for changes.
pub const FILE_SD_CHECK: Duration = Duration::from_secs(5);

/// How many dropped targets a scrape pool keeps for `/api/v1/targets` when
/// its `keep_dropped_targets` is 0. Prometheus keeps them all then; kiln
/// bounds the memory (the count stays exact).
pub const DEFAULT_KEEP_DROPPED: usize = 1000;

/// The logical shard a target's samples go to:
/// `hash(job, instance) % logical`.
pub fn shard_of(job: &str, instance: &str, logical: usize) -> usize {
    let mut key = Vec::with_capacity(job.len() + instance.len() + 1);
    key.extend_from_slice(job.as_bytes());
    key.push(0xff);
    key.extend_from_slice(instance.as_bytes());
    (xxh3_64(&key) % logical.max(1) as u64) as usize
}

/// Keeps the shards' target lists in step with the configuration.
pub struct TargetManager {
    jobs: Vec<(ScrapeConfig, JobDiscovery)>,
    /// When each job's `http_sd_configs[i]` is next fetched.
    http_due: Vec<Vec<Instant>>,
    /// Each job's `http_sd_configs[i]` TLS client.
    http_tls: Vec<Vec<TlsSetup>>,
    /// HTTP discovery fetches that failed.
    http_failures: u64,
    logical: usize,
    commands: Vec<mpsc::UnboundedSender<ScrapeCommand>>,
    /// Each job's authorization header, computed once per configuration.
    auth: BTreeMap<String, Option<String>>,
    /// Each job's TLS client, built once per configuration.
    tls: BTreeMap<String, TlsSetup>,
    /// Where the dropped targets are published.
    registry: Arc<TargetRegistry>,
    /// inotify on the file_sd directories, when available.
    watch: Option<FileWatch>,
}

impl TargetManager {
    /// A manager sending to the given shards' scrape managers and
    /// publishing dropped targets in `registry`.
    pub fn new(
        logical: usize,
        commands: Vec<mpsc::UnboundedSender<ScrapeCommand>>,
        registry: Arc<TargetRegistry>,
    ) -> Self {
        TargetManager {
            jobs: Vec::new(),
            http_due: Vec::new(),
            http_tls: Vec::new(),
            http_failures: 0,
            logical,
            commands,
            auth: BTreeMap::new(),
            tls: BTreeMap::new(),
            registry,
            watch: FileWatch::new(),
        }
    }

    /// Takes a (new) configuration and re-deals every target.
    pub fn apply(&mut self, cfg: &Config) {
        self.auth = cfg
            .scrape_configs
            .iter()
            .map(|sc| (sc.job_name.clone(), authorization(&sc.job_name, &sc.http)))
            .collect();
        self.tls = cfg
            .scrape_configs
            .iter()
            .map(|sc| {
                let what = format!("job {}", sc.job_name);
                (
                    sc.job_name.clone(),
                    TlsClient::setup(&sc.http.tls_config, &what),
                )
            })
            .collect();
        self.http_tls = cfg
            .scrape_configs
            .iter()
            .map(|sc| {
                sc.http_sd_configs
                    .iter()
                    .map(|h| {
                        let what = format!("job {}: http_sd {}", sc.job_name, h.url);
                        TlsClient::setup(&h.http.tls_config, &what)
                    })
                    .collect()
            })
            .collect();
        let now = Instant::now();
        self.http_due = cfg
            .scrape_configs
            .iter()
            .map(|sc| vec![now; sc.http_sd_configs.len()])
            .collect();
        self.jobs = cfg
            .scrape_configs
            .iter()
            .map(|sc| (sc.clone(), JobDiscovery::new(sc)))
            .collect();
        if let Some(w) = &mut self.watch {
            w.set_patterns(
                cfg.scrape_configs
                    .iter()
                    .flat_map(|sc| &sc.file_sd_configs)
                    .flat_map(|f| f.files.iter().map(String::as_str)),
            );
        }
        for (_, d) in &mut self.jobs {
            for e in d.refresh_files() {
                log::error!("file discovery: {e}");
            }
        }
        self.sync();
    }

    /// Waits for inotify to report a change to a file_sd file, then
    /// re-reads the changed files and re-deals targets if they changed.
    /// Never returns when inotify is unavailable. Cancel-safe.
    pub async fn file_changes(&mut self) {
        let Some(w) = &mut self.watch else {
            return std::future::pending().await;
        };
        for path in w.changed().await {
            log::debug!("file discovery: change notice for {}", path.display());
        }
        let before: Vec<_> = self.jobs.iter().map(|(_, d)| d.targets()).collect();
        for (_, d) in &mut self.jobs {
            for e in d.refresh_files() {
                log::error!("file discovery: {e}");
            }
        }
        let after: Vec<_> = self.jobs.iter().map(|(_, d)| d.targets()).collect();
        if before != after {
            self.sync();
        }
    }

    /// Re-reads changed discovery files and fetches the HTTP discovery
    /// endpoints that are due; re-deals targets when any changed. A failed
    /// fetch keeps the endpoint's last good groups.
    pub async fn refresh(&mut self) {
        if let Some(w) = &mut self.watch {
            w.rewatch();
        }
        let before: Vec<_> = self.jobs.iter().map(|(_, d)| d.targets()).collect();
        for (_, d) in &mut self.jobs {
            for e in d.refresh_files() {
                log::error!("file discovery: {e}");
            }
        }
        let now = Instant::now();
        for (j, (sc, d)) in self.jobs.iter_mut().enumerate() {
            for (i, h) in sc.http_sd_configs.iter().enumerate() {
                let Some(due) = self.http_due.get_mut(j).and_then(|v| v.get_mut(i)) else {
                    continue;
                };
                if *due > now {
                    continue;
                }
                *due = now + h.refresh_interval;
                let timeout = h.refresh_interval.min(HTTP_SD_TIMEOUT);
                let auth = authorization(&sc.job_name, &h.http);
                let Some(tls) = self.http_tls.get(j).and_then(|v| v.get(i)) else {
                    continue;
                };
                let get = http_get(&h.url, auth, tls, h.refresh_interval);
                let fetched = tokio::time::timeout(timeout, get)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("Get {:?}: timed out after {timeout:?}", h.url))
                    })
                    .and_then(|body| decode_http_sd(&h.url, &body).map_err(|e| e.to_string()));
                match fetched {
                    Ok(groups) => d.set_http_groups(i, groups),
                    Err(e) => {
                        self.http_failures += 1;
                        log::error!("job {}: HTTP discovery: {e}", sc.job_name);
                    }
                }
            }
        }
        let after: Vec<_> = self.jobs.iter().map(|(_, d)| d.targets()).collect();
        if before != after {
            self.sync();
        }
    }

    /// HTTP discovery fetches that failed (for self-metrics).
    pub fn http_failures(&self) -> u64 {
        self.http_failures
    }

    /// Total file discovery failures (for self-metrics).
    pub fn file_failures(&self) -> u64 {
        self.jobs.iter().map(|(_, d)| d.file_failures()).sum()
    }

    /// Computes every target and sends each shard its list.
    pub fn sync(&self) {
        let threads = self.commands.len();
        let mut per_thread: Vec<Vec<ScrapeTarget>> = vec![Vec::new(); threads];
        let mut dropped = BTreeMap::new();
        for (sc, d) in &self.jobs {
            let mut set = d.targets();
            let keep = match sc.keep_dropped_targets {
                0 => DEFAULT_KEEP_DROPPED,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            };
            let count = set.dropped.len();
            set.dropped.truncate(keep);
            let kept = std::mem::take(&mut set.dropped);
            dropped.insert(sc.job_name.clone(), DroppedTargets { kept, count });
            for e in &set.errors {
                log::warn!("job {}: {e}", sc.job_name);
            }
            if set.target_limit_exceeded {
                log::error!(
                    "job {}: {} targets exceed target_limit {}; scraping none of them",
                    sc.job_name,
                    set.active.len(),
                    sc.target_limit
                );
                continue;
            }
            let auth = self.auth.get(&sc.job_name).cloned().flatten();
            let tls = match self.tls.get(&sc.job_name) {
                Some(t) => t.clone(),
                None => TlsClient::setup(&sc.http.tls_config, &sc.job_name),
            };
            for t in set.active {
                let st = scrape_target(sc, t, auth.clone(), tls.clone(), self.logical);
                per_thread[owner(st.shard, threads)].push(st);
            }
        }
        *self.registry.dropped.lock() = dropped;
        for (tx, targets) in self.commands.iter().zip(per_thread) {
            // A shard that is gone is shutting down with the rest.
            let _ = tx.send(ScrapeCommand::SetTargets(targets));
        }
    }
}

fn scrape_target(
    sc: &ScrapeConfig,
    t: Target,
    authorization: Option<String>,
    tls: TlsSetup,
    logical: usize,
) -> ScrapeTarget {
    let instance = t.labels.get(INSTANCE_LABEL).unwrap_or_default().to_owned();
    let settings = ScrapeSettings {
        target_labels: t.labels.clone(),
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps,
        track_timestamps_staleness: sc.track_timestamps_staleness,
        metric_relabel: sc.metric_relabel_configs.clone(),
        sample_limit: sc.sample_limit,
        label_limit: sc.label_limit,
        label_name_length_limit: sc.label_name_length_limit,
        label_value_length_limit: sc.label_value_length_limit,
    };
    // Everything that shapes what the loop does goes into its identity, so
    // a changed setting restarts the loop and an unchanged one keeps it.
    let identity = format!(
        "{}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
        sc.job_name, t.url, t.labels, t.scrape_interval, t.scrape_timeout, authorization, sc
    );
    ScrapeTarget {
        key: xxh3_64(identity.as_bytes()),
        shard: shard_of(&sc.job_name, &instance, logical),
        job: sc.job_name.clone(),
        url: t.url,
        discovered_labels: t.discovered_labels,
        interval: t.scrape_interval,
        timeout: t.scrape_timeout,
        body_size_limit: sc.body_size_limit,
        authorization,
        tls,
        settings,
    }
}

/// How long an HTTP discovery fetch may take at most.
const HTTP_SD_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest HTTP discovery response read.
const HTTP_SD_MAX_BODY: usize = 64 << 20;

/// GETs an HTTP discovery endpoint over HTTP or HTTPS.
async fn http_get(
    url: &str,
    authorization: Option<String>,
    tls: &TlsSetup,
    refresh: Duration,
) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => None,
        Some("https") => Some(tls.as_ref().map_err(|e| format!("tls_config: {e}"))?),
        _ => return Err(format!("{url:?}: the URL must be http:// or https://")),
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let (mut send, conn) = match tls {
        None => handshake(stream).await,
        Some(c) => {
            let stream = c
                .connect(stream, host)
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            handshake(stream).await
        }
    }
    .map_err(|e| format!("Get {url:?}: {e}"))?;
    let describe = |e: &(dyn std::error::Error + 'static)| {
        tls.and_then(|c| c.describe(e))
            .unwrap_or_else(|| e.to_string())
    };
    let mut req = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("kiln/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-Prometheus-Refresh-Interval-Seconds",
            refresh.as_secs().to_string(),
        );
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("building request: {e}"))?;
    let resp = send.send_request(req).await.map_err(|e| {
        conn.abort();
        format!("Get {url:?}: {}", describe(&e))
    })?;
    if resp.status() != http::StatusCode::OK {
        conn.abort();
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), HTTP_SD_MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading {url:?}: {}", describe(&*e)))?
        .to_bytes();
    conn.abort();
    Ok(body.to_vec())
}

/// HTTP/1.1 over `io`; the connection runs as a task, aborted by the
/// caller when done.
async fn handshake<T>(
    io: T,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ),
    hyper::Error,
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    Ok((send, tokio::spawn(conn)))
}

/// The `Authorization` header sent with `http`'s settings, if any.
fn authorization(job: &str, http: &HttpClientConfig) -> Option<String> {
    let read = |path: &str| match std::fs::read_to_string(path) {
        Ok(s) => Some(s.trim().to_owned()),
        Err(e) => {
            log::error!("job {job}: reading {path}: {e}");
            None
        }
    };
    if let Some(b) = &http.basic_auth {
        let user = match &b.username_file {
            Some(f) => read(f)?,
            None => b.username.clone(),
        };
        let pass = match (&b.password, &b.password_file) {
            (Some(p), _) => p.0.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => String::new(),
        };
        return Some(format!(
            "Basic {}",
            base64(format!("{user}:{pass}").as_bytes())
        ));
    }
    if let Some(a) = &http.authorization {
        let cred = match (&a.credentials, &a.credentials_file) {
            (Some(c), _) => c.0.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => return None,
        };
        return Some(format!("{} {cred}", a.kind));
    }
    None
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pass", "dXNlcjpwYXNz"),
        ];
        for (i, o) in cases {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn targets_spread_over_logical_shards_stably() {
        let mut counts = [0usize; 4];
        for i in 0..400 {
            let s = shard_of("node", &format!("10.0.{}.{}:9100", i / 256, i % 256), 4);
            assert_eq!(
                s,
                shard_of("node", &format!("10.0.{}.{}:9100", i / 256, i % 256), 4)
            );
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }

    #[test]
    fn jobs_become_targets_with_identity_and_auth() {
        let cfg = Config::parse(
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    basic_auth:\n      username: user\n      password: pass\n    static_configs:\n      - targets: ['h1:1', 'h2:2']\n",
            "test.yml",
        )
        .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut m = TargetManager::new(2, vec![tx], Arc::default());
        m.apply(&cfg);
        let Some(ScrapeCommand::SetTargets(ts)) = rx.try_recv().ok() else {
            panic!("no targets sent");
        };
        assert_eq!(ts.len(), 2);
        let t = ts.iter().find(|t| t.url == "http://h1:1/metrics").unwrap();
        assert_eq!(t.interval, Duration::from_secs(5));
        assert_eq!(t.authorization.as_deref(), Some("Basic dXNlcjpwYXNz"));
        assert_eq!(t.settings.target_labels.get("instance"), Some("h1:1"));
        assert_eq!(t.shard, shard_of("a", "h1:1", 2));
        // The same configuration again gives the same identities.
        m.apply(&cfg);
        let Some(ScrapeCommand::SetTargets(again)) = rx.try_recv().ok() else {
            panic!("no targets sent");
        };
        let keys = |v: &[ScrapeTarget]| {
            let mut k: Vec<u64> = v.iter().map(|t| t.key).collect();
            k.sort_unstable();
            k
        };
        assert_eq!(keys(&ts), keys(&again));
    }
}
