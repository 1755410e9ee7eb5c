//! Every configuration in testdata/configs/ loads: real configurations
//! (Debian's packaged prometheus.yml and example, Prometheus's Kubernetes
//! example, the PromQL compliance tester's) and kiln's own fleet example.

use std::path::Path;

use kiln_ingest::config::Config;

#[test]
fn every_testdata_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.scrape_configs.is_empty(), "{}", path.display());
        for sc in &cfg.scrape_configs {
            assert!(!sc.scrape_timeout.is_zero() && sc.scrape_timeout <= sc.scrape_interval);
        }
        n += 1;
    }
    assert!(n >= 5, "only {n} configs");
}

#[test]
fn debian_default_config_reads_as_prometheus_reads_it() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/configs/debian-prometheus.yml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.global.scrape_interval.as_secs(), 15);
    assert_eq!(cfg.global.evaluation_interval.as_secs(), 15);
    assert_eq!(cfg.global.scrape_timeout.as_secs(), 10);
    assert_eq!(cfg.global.external_labels.get("monitor"), Some("example"));
    assert!(cfg.rule_files.is_empty());
    let p = cfg.scrape_config("prometheus").unwrap();
    assert_eq!(
        (p.scrape_interval.as_secs(), p.scrape_timeout.as_secs()),
        (5, 5)
    );
    assert_eq!(p.static_configs[0].targets, ["localhost:9090"]);
    let node = cfg.scrape_config("node").unwrap();
    assert_eq!(
        (
            node.scrape_interval.as_secs(),
            node.scrape_timeout.as_secs()
        ),
        (15, 10)
    );
    assert_eq!(
        cfg.alerting.alertmanagers[0].static_configs[0].targets,
        ["localhost:9093"]
    );
}
