//! Fuzzes the configuration parser with arbitrary text: it must return a
//! config or an error, never panic, and a parsed config must uphold the
//! invariants `Config` documents.
#![no_main]

use kiln_ingest::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Config::parse(text, "fuzz.yml") {
        Ok(cfg) => {
            for sc in &cfg.scrape_configs {
                assert!(!sc.job_name.is_empty());
                assert!(!sc.scrape_timeout.is_zero());
                assert!(sc.scrape_timeout <= sc.scrape_interval);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
