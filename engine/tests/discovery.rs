//! Discovery end to end through the HTTP API: targets dropped by
//! relabeling in `/api/v1/targets`, and file_sd changes picked up through
//! inotify notices (checked by the notice's debug log line, not by timing).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Kiln, eventually, targets};
use serde_json::{Value, json};

fn targets_json(kiln: &Kiln, query: &str) -> Value {
    let r = kiln.get(&format!("/api/v1/targets{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn targets_dropped_by_relabeling_are_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("prometheus.yml");
    // Nothing listens on these addresses; only the dropping matters.
    std::fs::write(
        &path,
        "global: {scrape_interval: 1s}\n\
         scrape_configs:\n\
         \x20 - job_name: kept_one\n\
         \x20   keep_dropped_targets: 1\n\
         \x20   static_configs: [{targets: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'], labels: {team: a}}]\n\
         \x20   relabel_configs: [{source_labels: [__address__], regex: '.*:[23]', action: drop}]\n\
         \x20 - job_name: all_kept\n\
         \x20   static_configs: [{targets: ['127.0.0.1:4', '127.0.0.1:5']}]\n\
         \x20   relabel_configs: [{source_labels: [__address__], regex: '.*:5', action: drop}]\n",
    )
    .expect("write config");
    let kiln = Kiln::start(&[&format!("--config.file={}", path.display())]);

    let r = targets_json(&kiln, "?state=dropped");
    assert_eq!(r["data"]["activeTargets"], json!([]), "{r}");
    assert_eq!(
        r["data"]["droppedTargetCounts"],
        json!({"all_kept": 1, "kept_one": 2}),
        "{r}"
    );
    let dropped = r["data"]["droppedTargets"].as_array().expect("list");
    assert_eq!(
        dropped.len(),
        2,
        "one kept of kept_one's two, all_kept's one: {r}"
    );
    let of = |pool: &str| {
        dropped
            .iter()
            .find(|d| d["scrapePool"] == pool)
            .unwrap_or_else(|| panic!("no dropped target of {pool}: {r}"))
    };
    // Discovered labels: before relabeling, with the job's defaults.
    assert_eq!(
        of("kept_one")["discoveredLabels"],
        json!({
            "__address__": "127.0.0.1:2",
            "__metrics_path__": "/metrics",
            "__scheme__": "http",
            "__scrape_interval__": "1s",
            "__scrape_timeout__": "1s",
            "job": "kept_one",
            "team": "a",
        }),
        "{r}"
    );
    assert_eq!(
        of("all_kept")["discoveredLabels"]["__address__"],
        "127.0.0.1:5"
    );

    // Filters.
    let r = targets_json(&kiln, "?state=dropped&scrapePool=all_kept");
    assert_eq!(
        r["data"]["droppedTargets"].as_array().map(Vec::len),
        Some(1),
        "{r}"
    );
    assert_eq!(
        r["data"]["droppedTargetCounts"],
        json!({"all_kept": 1}),
        "{r}"
    );
    let r = targets_json(&kiln, "?state=active");
    assert_eq!(r["data"]["droppedTargets"], json!([]), "{r}");
    assert_eq!(
        r["data"]["activeTargets"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    let r = targets_json(&kiln, "");
    assert_eq!(
        r["data"]["activeTargets"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    assert_eq!(
        r["data"]["droppedTargets"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn group(addr: SocketAddr, rev: &str) -> String {
    format!(r#"[{{"targets": ["{addr}"], "labels": {{"rev": "{rev}"}}}}]"#)
}

/// The `rev` label of the active target at `addr`, if there is one.
fn rev_of(kiln: &Kiln, addr: SocketAddr) -> Option<String> {
    let r = targets_json(kiln, "?state=active");
    r["data"]["activeTargets"]
        .as_array()?
        .iter()
        .find(|t| t["labels"]["instance"] == addr.to_string())
        .and_then(|t| t["labels"]["rev"].as_str().map(str::to_owned))
}

#[test]
fn file_sd_changes_are_noticed_through_inotify() {
    let t = targets::start(2, 1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let sd = dir.path().join("sd");
    std::fs::create_dir(&sd).expect("mkdir");
    let a = sd.join("a.json");
    write_atomically(&a, &group(t.addrs[0], "1"));
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}\n\
             scrape_configs:\n  - job_name: files\n    file_sd_configs: [{{files: ['{}/*.json']}}]\n",
            sd.display()
        ),
    )
    .expect("write config");
    let kiln = Kiln::start(&[
        &format!("--config.file={}", path.display()),
        "--log.level=debug",
    ]);
    assert_eq!(
        eventually(Duration::from_secs(10), || rev_of(&kiln, t.addrs[0])),
        Some("1".to_owned())
    );

    // A new file, renamed into place as tools do.
    let b = sd.join("b.json");
    write_atomically(&b, &group(t.addrs[1], "1"));
    let notice = format!("change notice for {}", b.display());
    assert!(
        kiln.wait_log(&notice, Duration::from_secs(10)).is_some(),
        "no inotify notice for {}",
        b.display()
    );
    assert_eq!(
        eventually(Duration::from_secs(10), || rev_of(&kiln, t.addrs[1])),
        Some("1".to_owned())
    );

    // A file rewritten in place.
    std::fs::write(&a, group(t.addrs[0], "2")).expect("rewrite");
    let notice = format!("change notice for {}", a.display());
    assert!(
        kiln.wait_log(&notice, Duration::from_secs(10)).is_some(),
        "no inotify notice for {}",
        a.display()
    );
    assert_eq!(
        eventually(Duration::from_secs(10), || {
            rev_of(&kiln, t.addrs[0]).filter(|r| r == "2")
        }),
        Some("2".to_owned())
    );

    // A removed file takes its target with it; files of no pattern are
    // not noticed.
    std::fs::write(sd.join("notes.txt"), "x").expect("write");
    std::fs::remove_file(&b).expect("remove");
    let line = kiln
        .wait_log("change notice for", Duration::from_secs(10))
        .expect("no notice for the removal");
    assert!(line.contains("b.json"), "{line}");
    assert!(
        eventually(Duration::from_secs(10), || {
            rev_of(&kiln, t.addrs[1]).is_none().then_some(())
        })
        .is_some(),
        "the removed file's target stayed"
    );
}

#[test]
fn relative_paths_are_read_from_the_config_files_directory() {
    // kiln runs with the test's working directory; the files sit beside
    // the configuration, which names them relatively, as Prometheus allows.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("fleet.json"),
        r#"[{"targets": ["127.0.0.1:7"], "labels": {"from": "file_sd"}}]"#,
    )
    .expect("write file_sd");
    std::fs::create_dir(dir.path().join("jobs")).expect("mkdir");
    std::fs::write(
        dir.path().join("jobs/extra.yml"),
        "scrape_configs:\n\
         \x20 - job_name: extra\n\
         \x20   static_configs: [{targets: ['127.0.0.1:8']}]\n",
    )
    .expect("write scrape config file");
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        "global: {scrape_interval: 1s}\n\
         scrape_config_files: ['jobs/*.yml']\n\
         scrape_configs:\n\
         \x20 - job_name: files\n\
         \x20   file_sd_configs: [{files: ['fleet.json']}]\n",
    )
    .expect("write config");
    assert!(!Path::new("fleet.json").exists());
    let kiln = Kiln::start(&[&format!("--config.file={}", path.display())]);
    let found = eventually(Duration::from_secs(20), || {
        let r = targets_json(&kiln, "");
        let active = r["data"]["activeTargets"].as_array()?;
        let pools: Vec<&str> = active
            .iter()
            .filter_map(|t| t["scrapePool"].as_str())
            .collect();
        (pools.contains(&"files") && pools.contains(&"extra")).then_some(r)
    });
    let r = found.expect("both the file_sd target and the scrape_config_files job");
    let files = r["data"]["activeTargets"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["scrapePool"] == "files").cloned())
        .expect("files target");
    assert_eq!(files["labels"]["from"], "file_sd", "{files}");
    assert_eq!(files["labels"]["instance"], "127.0.0.1:7", "{files}");
}
