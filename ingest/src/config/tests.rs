//! Configuration parsing: defaults, resolution against `global`, and errors
//! with positions.

use std::time::Duration;

use super::*;
use crate::relabel::Action;

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::parse(yaml, "p.yml")
}

fn err(yaml: &str) -> ConfigError {
    parse(yaml).unwrap_err()
}

#[test]
fn empty_file_gives_prometheus_defaults() {
    for text in ["", "# nothing\n", "global:\n"] {
        let c = parse(text).unwrap();
        assert_eq!(c.global.scrape_interval, Duration::from_secs(60));
        assert_eq!(c.global.scrape_timeout, Duration::from_secs(10));
        assert_eq!(c.global.evaluation_interval, Duration::from_secs(60));
        assert!(c.scrape_configs.is_empty());
    }
}

#[test]
fn scrape_config_defaults_and_resolution() {
    let c = parse(
        "
global:
  scrape_interval: 5s
  sample_limit: 100
scrape_configs:
  - job_name: a
  - job_name: b
    scrape_interval: 1m
    sample_limit: 7
  - job_name: c
    scrape_interval: 20s
    scrape_timeout: 15s
",
    )
    .unwrap();
    // A global interval under 10s pulls the default timeout down with it.
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(5));
    let a = c.scrape_config("a").unwrap();
    assert_eq!(a.scrape_interval, Duration::from_secs(5));
    assert_eq!(a.scrape_timeout, Duration::from_secs(5));
    assert_eq!(a.metrics_path, "/metrics");
    assert_eq!(a.scheme, "http");
    assert!(a.honor_timestamps && !a.honor_labels && a.enable_compression);
    assert_eq!(a.sample_limit, 100);
    let b = c.scrape_config("b").unwrap();
    assert_eq!(b.scrape_timeout, Duration::from_secs(5));
    assert_eq!(b.sample_limit, 7);
    let cc = c.scrape_config("c").unwrap();
    assert_eq!(cc.scrape_timeout, Duration::from_secs(15));
}

#[test]
fn bearer_token_becomes_authorization() {
    let c = parse("scrape_configs:\n- job_name: a\n  bearer_token: s3cret\n").unwrap();
    let a = c.scrape_configs[0].http.authorization.as_ref().unwrap();
    assert_eq!(a.kind, "Bearer");
    assert_eq!(a.credentials, Some(Secret("s3cret".into())));
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "secrets must not print"
    );
}

#[test]
fn unsupported_discovery_is_listed_not_refused() {
    let c =
        parse("scrape_configs:\n- job_name: k\n  kubernetes_sd_configs: [{role: pod}]\n").unwrap();
    assert_eq!(
        c.scrape_configs[0].unsupported_sd_configs,
        ["kubernetes_sd_configs"]
    );
}

#[test]
fn errors_name_file_line_and_column() {
    let e = err("global:\n  scrape_interval: 15x\n");
    assert_eq!((e.line, e.column), (Some(2), Some(20)), "{e}");
    assert!(e.to_string().starts_with("p.yml:2:20: "), "{e}");
    assert!(e.message.contains("not a valid duration"), "{e}");

    let e = err("scrape_configs:\n- job_name: a\n  colour: red\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");

    let e = err("scrape_configs:\n- job_name: a\n  sample_limit: lots\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("invalid type"), "{e}");

    let e = err(
        "scrape_configs:\n- job_name: a\n  relabel_configs:\n  - regex: '(('\n    target_label: x\n",
    );
    assert!(e.line.is_some_and(|l| l >= 4), "{e}");
    assert!(e.message.contains("invalid regex"), "{e}");
}

#[test]
fn duplicate_jobs_point_at_the_second() {
    let e = err("scrape_configs:\n- job_name: a\n- job_name: b\n- job_name: 'a'\n");
    assert_eq!((e.line, e.column), (Some(4), Some(3)), "{e}");
    assert!(e.message.contains("multiple scrape configs"), "{e}");
}

#[test]
fn semantic_errors() {
    for (yaml, msg) in [
        (
            "scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 6s\n",
            "scrape timeout greater",
        ),
        (
            "global:\n  scrape_interval: 5s\n  scrape_timeout: 6s\n",
            "global scrape timeout greater",
        ),
        (
            "scrape_configs:\n- scrape_interval: 5s\n",
            "job_name is empty",
        ),
        (
            "scrape_configs:\n- job_name: a\n  scheme: ftp\n",
            "invalid scheme",
        ),
        (
            "scrape_configs:\n- job_name: a\n  bearer_token: x\n  bearer_token_file: y\n",
            "at most one of bearer_token",
        ),
        (
            "scrape_configs:\n- job_name: a\n  basic_auth: {username: u}\n  authorization: {credentials: c}\n",
            "at most one of basic_auth",
        ),
        (
            "scrape_configs:\n- job_name: a\n  file_sd_configs: [{files: [x.txt]}]\n",
            "not valid for file discovery",
        ),
        (
            "scrape_configs:\n- job_name: a\n  body_size_limit: 10XB\n",
            "not a valid byte size",
        ),
        (
            "global:\n  external_labels: {'': x}\n",
            "invalid external_labels",
        ),
        (
            "remote_write:\n- url: http://a\n  wat: 1\n",
            "unknown field `wat`",
        ),
        (
            "alerting:\n  alertmanagers:\n  - api_version: v9\n",
            "api version",
        ),
        ("nonsense: 1\n", "unknown field `nonsense`"),
    ] {
        let e = err(yaml);
        assert!(e.message.contains(msg), "{yaml}: {e}");
    }
}

#[test]
fn relabel_and_sd_sections_are_typed() {
    let c = parse(
        "
scrape_configs:
- job_name: a
  static_configs:
  - targets: ['h:1', 'h:2']
    labels: {team: x}
  file_sd_configs:
  - files: ['/t/*.json']
  http_sd_configs:
  - url: http://sd/targets
  metric_relabel_configs:
  - {source_labels: [__name__], regex: 'go_.*', action: DROP}
",
    )
    .unwrap();
    let a = &c.scrape_configs[0];
    assert_eq!(a.static_configs[0].targets, ["h:1", "h:2"]);
    assert_eq!(
        a.file_sd_configs[0].refresh_interval,
        Duration::from_secs(300)
    );
    assert_eq!(
        a.http_sd_configs[0].refresh_interval,
        Duration::from_secs(60)
    );
    assert_eq!(a.metric_relabel_configs[0].action, Action::Drop);
}

#[test]
fn load_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        "rule_files: [r.yml]\nscrape_configs:\n- job_name: a\n  file_sd_configs: [{files: [t/*.json]}]\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.rule_files[0],
        dir.path().join("r.yml").display().to_string()
    );
    let f = &c.scrape_configs[0].file_sd_configs[0].files[0];
    assert_eq!(f, &dir.path().join("t/*.json").display().to_string());
    let missing = Config::load(&dir.path().join("nope.yml")).unwrap_err();
    assert_eq!(missing.line, None);
}

#[test]
fn scrape_config_files_are_loaded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/a.yml"),
        "scrape_configs:\n- job_name: extra\n  file_sd_configs: [{files: [t.json]}]\n",
    )
    .unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        "global: {scrape_interval: 7s}\nscrape_config_files: [jobs/*.yml]\nscrape_configs:\n- job_name: main\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    let extra = c.scrape_config("extra").unwrap();
    assert_eq!(extra.scrape_interval, Duration::from_secs(7));
    let want = dir.path().join("jobs/t.json").display().to_string();
    assert_eq!(extra.file_sd_configs[0].files[0], want);

    std::fs::write(
        dir.path().join("jobs/b.yml"),
        "scrape_configs:\n- job_name: main\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.file.ends_with("b.yml"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("multiple scrape configs"), "{e}");
}

#[test]
fn tls_config_rules() {
    let job = |tls: &str| {
        parse(&format!(
            "scrape_configs:\n- job_name: a\n  scheme: https\n  tls_config: {tls}\n"
        ))
    };
    let c = job("{ca_file: ca.pem, server_name: example.org, min_version: TLS13}").unwrap();
    let t = &c.scrape_configs[0].http.tls_config;
    assert_eq!(t.server_name.as_deref(), Some("example.org"));
    assert_eq!(t.min_version.as_deref(), Some("TLS13"));
    for (tls, want) in [
        ("{cert_file: c.pem}", "needs its key"),
        ("{key_file: k.pem}", "needs its certificate"),
        ("{ca: x, ca_file: y}", "at most one of ca and ca_file"),
        ("{min_version: TLS14}", "unknown TLS version: TLS14"),
        ("{max_version: SSL3}", "unknown TLS version: SSL3"),
    ] {
        let e = job(tls).unwrap_err();
        assert!(e.to_string().contains(want), "{tls}: {e}");
    }
    // The same rules hold for the discovery client.
    let e = parse(
        "scrape_configs:\n- job_name: a\n  http_sd_configs: [{url: 'https://sd/x', tls_config: {cert_file: c.pem}}]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs its key"), "{e}");
}

#[test]
fn load_resolves_tls_files_and_checks_client_cert_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    let write = |tls: &str| {
        std::fs::write(
            &path,
            format!(
                "scrape_configs:\n- job_name: a\n  tls_config: {tls}\n  http_sd_configs: [{{url: 'https://sd/x', tls_config: {{ca_file: sd-ca.pem}}}}]\n"
            ),
        )
        .unwrap();
    };
    // The CA file is only read when the configuration is applied, as in
    // Prometheus; the client certificate and key must exist.
    write("{ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}");
    let e = Config::load(&path).unwrap_err();
    assert!(
        e.message.contains("error checking client cert file") && e.message.contains("c.pem"),
        "{e}"
    );
    std::fs::write(dir.path().join("c.pem"), "").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.message.contains("client key file"), "{e}");
    std::fs::write(dir.path().join("k.pem"), "").unwrap();
    let c = Config::load(&path).unwrap();
    let sc = &c.scrape_configs[0];
    let full = |f: &str| Some(dir.path().join(f).display().to_string());
    assert_eq!(sc.http.tls_config.ca_file, full("ca.pem"));
    assert_eq!(sc.http.tls_config.cert_file, full("c.pem"));
    assert_eq!(sc.http.tls_config.key_file, full("k.pem"));
    assert_eq!(
        sc.http_sd_configs[0].http.tls_config.ca_file,
        full("sd-ca.pem")
    );
}
