//! Discovery: the target groups of one scrape config, from `static_configs`,
//! `file_sd_configs` and `http_sd_configs`, turned into [`Target`]s.
//!
//! * Static groups never change.
//! * File discovery re-reads a file only when its modification time or size
//!   changed since the last [`JobDiscovery::refresh_files`] (the caller calls
//!   it when notified of a change and on a short poll), and every file once
//!   the config's `refresh_interval` has passed since the last full read
//!   (a change that kept size and modification time is seen then). A file that fails to read or parse keeps the groups it last
//!   gave, and the failure is counted; a file that disappears gives none.
//!   Every group from a file carries `__meta_filepath`.
//! * HTTP discovery: [`decode_http_sd`] decodes a response body (the
//!   fetching is the HTTP client's job); groups carry `__meta_url`.
//!
//! Invariant: [`JobDiscovery::targets`] is a pure function of the groups
//! held; targets whose final label sets and URLs are equal are kept once.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Deserialize;

use crate::config::{FileSdConfig, ScrapeConfig};
use crate::target::{ADDRESS_LABEL, Populated, Target, TargetError, populate};

/// The label file discovery adds: the path of the file a group came from.
pub const FILEPATH_LABEL: &str = "__meta_filepath";
/// The label HTTP discovery adds: the URL the groups came from.
pub const URL_LABEL: &str = "__meta_url";

/// A group of targets sharing labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetGroup {
    /// Where the group came from (`static/0`, `<file>:<index>`, `<url>:<index>`).
    pub source: String,
    /// One label set per target; each has at least `__address__`.
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels of every target in the group.
    pub labels: BTreeMap<String, String>,
}

/// A group as written in file and HTTP discovery documents.
#[derive(Deserialize)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Why a discovery document was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct DiscoveryError {
    /// The file or URL.
    pub source_name: String,
    /// What is wrong, with line and column when the decoder gave them.
    pub message: String,
}

fn groups_from(
    raw: Vec<RawGroup>,
    source: &str,
    meta: (&str, &str),
) -> Result<Vec<TargetGroup>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            if let Some(n) = g.labels.keys().find(|n| n.is_empty()) {
                return Err(format!("group {i}: invalid label name {n:?}"));
            }
            let mut labels = g.labels;
            labels.insert(meta.0.to_owned(), meta.1.to_owned());
            let targets = g
                .targets
                .into_iter()
                .map(|t| BTreeMap::from([(ADDRESS_LABEL.to_owned(), t)]))
                .collect();
            Ok(TargetGroup {
                source: format!("{source}:{i}"),
                targets,
                labels,
            })
        })
        .collect()
}

/// Decodes a file discovery document: a JSON or YAML (by extension) list
/// of `{targets: [...], labels: {...}}`.
pub fn decode_file_sd(path: &Path, text: &str) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let name = path.display().to_string();
    let err = |message: String| DiscoveryError {
        source_name: name.clone(),
        message,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: Vec<RawGroup> = match ext.as_str() {
        "json" => serde_json::from_str(text).map_err(|e| err(e.to_string()))?,
        "yml" | "yaml" => serde_norway::from_str::<Option<Vec<RawGroup>>>(text)
            .map_err(|e| err(e.to_string()))?
            .unwrap_or_default(),
        _ => return Err(err(format!("unknown file extension {ext:?}"))),
    };
    groups_from(raw, &name, (FILEPATH_LABEL, &name)).map_err(err)
}

/// Decodes an `http_sd_configs` response body: a JSON list of groups.
pub fn decode_http_sd(url: &str, body: &[u8]) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let err = |message: String| DiscoveryError {
        source_name: url.to_owned(),
        message,
    };
    let raw: Vec<RawGroup> = serde_json::from_slice(body).map_err(|e| err(e.to_string()))?;
    groups_from(raw, url, (URL_LABEL, url)).map_err(err)
}

/// What one file last gave.
struct FileState {
    stamp: Option<(SystemTime, u64)>,
    groups: Vec<TargetGroup>,
}

/// The state of one `file_sd_configs` entry.
pub struct FileSd {
    cfg: FileSdConfig,
    files: BTreeMap<PathBuf, FileState>,
    failures: u64,
    /// When every file was last read regardless of its stamp.
    last_full: Option<Instant>,
}

impl FileSd {
    /// A file discovery that has read nothing yet.
    pub fn new(cfg: FileSdConfig) -> Self {
        FileSd {
            cfg,
            files: BTreeMap::new(),
            failures: 0,
            last_full: None,
        }
    }

    /// Expands the patterns and re-reads new or changed files. Returns the
    /// errors of this round; bad files keep their previous groups.
    pub fn refresh(&mut self) -> Vec<DiscoveryError> {
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.cfg.refresh_interval);
        if full {
            self.last_full = Some(Instant::now());
        }
        let mut errors = Vec::new();
        let mut present = HashSet::new();
        for pattern in &self.cfg.files {
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(DiscoveryError {
                        source_name: pattern.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for path in paths.filter_map(Result::ok) {
                present.insert(path.clone());
                let stamp = std::fs::metadata(&path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                let state = self.files.entry(path.clone()).or_insert(FileState {
                    stamp: None,
                    groups: Vec::new(),
                });
                if !full && stamp.is_some() && state.stamp == stamp {
                    continue;
                }
                let read = std::fs::read_to_string(&path).map_err(|e| DiscoveryError {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                });
                match read.and_then(|text| decode_file_sd(&path, &text)) {
                    Ok(groups) => {
                        state.groups = groups;
                        state.stamp = stamp;
                    }
                    Err(e) => {
                        self.failures += 1;
                        errors.push(e);
                    }
                }
            }
        }
        self.files.retain(|p, _| present.contains(p));
        errors
    }

    /// The groups of every file, in path order.
    pub fn groups(&self) -> impl Iterator<Item = &TargetGroup> {
        self.files.values().flat_map(|f| f.groups.iter())
    }

    /// Files that failed to read or parse, since creation.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// The targets of one scrape config at a point in time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetSet {
    /// Targets to scrape, deduplicated.
    pub active: Vec<Target>,
    /// Discovered labels of targets dropped by relabeling.
    pub dropped: Vec<kiln_storage::Labels>,
    /// Targets that could not be built.
    pub errors: Vec<TargetError>,
    /// `target_limit` is set and `active` exceeds it: Prometheus then
    /// scrapes none of the job's targets and reports them all as failed.
    pub target_limit_exceeded: bool,
}

/// The discovery of one scrape config: static, file and HTTP groups.
pub struct JobDiscovery {
    cfg: ScrapeConfig,
    static_groups: Vec<TargetGroup>,
    file_sd: Vec<FileSd>,
    http_groups: Vec<Vec<TargetGroup>>,
}

impl JobDiscovery {
    /// Discovery for `cfg`; call [`JobDiscovery::refresh_files`] to read
    /// its files.
    pub fn new(cfg: &ScrapeConfig) -> Self {
        let static_groups = cfg
            .static_configs
            .iter()
            .enumerate()
            .map(|(i, s)| TargetGroup {
                source: format!("static/{i}"),
                targets: s
                    .targets
                    .iter()
                    .map(|t| BTreeMap::from([(ADDRESS_LABEL.to_owned(), t.clone())]))
                    .collect(),
                labels: s.labels.clone(),
            })
            .collect();
        JobDiscovery {
            cfg: cfg.clone(),
            static_groups,
            file_sd: cfg
                .file_sd_configs
                .iter()
                .cloned()
                .map(FileSd::new)
                .collect(),
            http_groups: vec![Vec::new(); cfg.http_sd_configs.len()],
        }
    }

    /// Refreshes every `file_sd_configs` entry; the errors of this round.
    pub fn refresh_files(&mut self) -> Vec<DiscoveryError> {
        self.file_sd.iter_mut().flat_map(FileSd::refresh).collect()
    }

    /// Total file discovery failures so far (a counter for self-metrics).
    pub fn file_failures(&self) -> u64 {
        self.file_sd.iter().map(FileSd::failures).sum()
    }

    /// Replaces the groups of `http_sd_configs[index]` with a freshly
    /// decoded response. An index out of range is ignored.
    pub fn set_http_groups(&mut self, index: usize, groups: Vec<TargetGroup>) {
        if let Some(slot) = self.http_groups.get_mut(index) {
            *slot = groups;
        }
    }

    /// The current target groups.
    pub fn groups(&self) -> impl Iterator<Item = &TargetGroup> {
        self.static_groups
            .iter()
            .chain(self.file_sd.iter().flat_map(FileSd::groups))
            .chain(self.http_groups.iter().flatten())
    }

    /// Runs the target pipeline over every group.
    pub fn targets(&self) -> TargetSet {
        let mut set = TargetSet::default();
        let mut seen = HashSet::new();
        for g in self.groups() {
            for t in &g.targets {
                match populate(&self.cfg, t, &g.labels) {
                    Ok(Populated::Active(t)) => {
                        if seen.insert((t.labels.clone(), t.url.clone())) {
                            set.active.push(t);
                        }
                    }
                    Ok(Populated::Dropped(l)) => set.dropped.push(l),
                    Err(e) => set.errors.push(e),
                }
            }
        }
        let limit = self.cfg.target_limit;
        set.target_limit_exceeded = limit > 0 && set.active.len() as u64 > limit;
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn job(yaml: &str) -> ScrapeConfig {
        Config::parse(yaml, "t.yml")
            .unwrap()
            .scrape_configs
            .remove(0)
    }

    #[test]
    fn static_targets() {
        let d = JobDiscovery::new(&job(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: [a:1, b:2, a:1]\n    labels: {env: prod}\n",
        ));
        let set = d.targets();
        assert_eq!(set.active.len(), 2, "duplicates are kept once");
        assert_eq!(set.active[0].labels.get("env"), Some("prod"));
        assert_eq!(set.active[1].url, "http://b:2/metrics");
    }

    #[test]
    fn file_sd_json_and_yaml_with_filepath_and_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = dir.path().join("*.json").display().to_string();
        let yml = dir.path().join("more.yml");
        let cfg = job(&format!(
            "scrape_configs:\n- job_name: j\n  file_sd_configs:\n  - files: ['{pattern}', '{}']\n  relabel_configs:\n  - {{source_labels: [__meta_filepath], target_label: src}}\n",
            yml.display()
        ));
        let json = dir.path().join("a.json");
        std::fs::write(&json, r#"[{"targets": ["h:1"], "labels": {"team": "x"}}]"#).unwrap();
        std::fs::write(&yml, "- targets: ['h:2']\n").unwrap();
        let mut d = JobDiscovery::new(&cfg);
        assert!(d.refresh_files().is_empty());
        let set = d.targets();
        assert_eq!(set.active.len(), 2);
        let t = set
            .active
            .iter()
            .find(|t| t.labels.get("team") == Some("x"))
            .unwrap();
        assert_eq!(
            t.labels.get("src"),
            Some(json.display().to_string().as_str())
        );

        // A broken file keeps its last good targets and counts a failure.
        std::fs::write(&json, "[{\"targets\": [").unwrap();
        let errs = d.refresh_files();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("line 1"), "{}", errs[0]);
        assert_eq!(d.file_failures(), 1);
        assert_eq!(d.targets().active.len(), 2);

        // A removed file gives nothing.
        std::fs::remove_file(&yml).unwrap();
        d.refresh_files();
        assert_eq!(d.targets().active.len(), 1);
    }

    #[test]
    fn refresh_interval_rereads_files_whose_stamp_did_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let write = |addr: &str, mtime: Option<SystemTime>| {
            std::fs::write(&path, format!(r#"[{{"targets": ["{addr}"]}}]"#)).unwrap();
            if let Some(t) = mtime {
                let f = std::fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(t).unwrap();
            }
        };
        let addr = |d: &JobDiscovery| d.targets().active[0].url.clone();
        let discovery = |every: &str| {
            let mut d = JobDiscovery::new(&job(&format!(
                "scrape_configs:\n- job_name: j\n  file_sd_configs: [{{files: ['{}'], refresh_interval: {every}}}]\n",
                path.display()
            )));
            assert!(d.refresh_files().is_empty());
            d
        };
        write("h:1", None);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (mut hourly, mut always) = (discovery("1h"), discovery("1ms"));
        // Same size, same modification time, other content.
        write("h:2", Some(mtime));
        std::thread::sleep(std::time::Duration::from_millis(5));
        hourly.refresh_files();
        always.refresh_files();
        assert_eq!(addr(&hourly), "http://h:1/metrics");
        assert_eq!(addr(&always), "http://h:2/metrics");
    }

    #[test]
    fn http_sd_decoding() {
        let groups = decode_http_sd(
            "http://sd/t",
            br#"[{"targets": ["h:1", "h:2"], "labels": {"__meta_datacenter": "x"}}]"#,
        )
        .unwrap();
        assert_eq!(groups[0].targets.len(), 2);
        assert_eq!(
            groups[0].labels.get("__meta_url").map(String::as_str),
            Some("http://sd/t")
        );
        assert!(decode_http_sd("u", b"{}").is_err());
        assert!(decode_http_sd("u", br#"[{"targets": [1]}]"#).is_err());

        let mut d = JobDiscovery::new(&job(
            "scrape_configs:\n- job_name: j\n  http_sd_configs: [{url: 'http://sd/t'}]\n",
        ));
        d.set_http_groups(0, groups);
        assert_eq!(d.targets().active.len(), 2);
    }

    #[test]
    fn target_limit_and_errors_are_reported() {
        let d = JobDiscovery::new(&job(
            "scrape_configs:\n- job_name: j\n  target_limit: 1\n  static_configs: [{targets: [a:1, b:1, 'c:1/x']}]\n",
        ));
        let set = d.targets();
        assert!(set.target_limit_exceeded);
        assert_eq!(set.errors.len(), 1);
    }
}
