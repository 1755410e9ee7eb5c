//! Fuzzes the exposition parser in both formats, with and without
//! `_created` folding, every accessor of what it yields, and the strict
//! OpenMetrics checker. The parser
//! must never panic, every error must carry a position inside the body,
//! and every sample it accepts must be readable.
#![no_main]

use kiln_ingest::exposition::{Entry, Format, Parser, check_openmetrics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    if let Err(e) = check_openmetrics(body) {
        assert!(e.line >= 1 && e.line <= lines + 1, "{e}");
    }
    for format in [Format::PromText, Format::OpenMetrics] {
        for created in [false, true] {
            let mut p = Parser::new(body, format);
            if created {
                p = p.with_created_timestamps();
            }
            for entry in p {
                match entry {
                    Ok(Entry::Sample(s)) => {
                        assert!(body.len() >= s.series().len());
                        let _ = s.metric_name();
                        let _ = s.to_labels();
                        let _ = (s.value(), s.timestamp_ms(), s.start_timestamp_ms());
                        if let Some(e) = s.exemplar() {
                            let _ = e.to_labels();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert!(e.line >= 1 && e.line <= lines + 1, "{e}");
                        assert!(e.column >= 1, "{e}");
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
});
