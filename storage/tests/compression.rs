//! Bytes per sample of the chunk codec on node-exporter-like data (see
//! `support/node_exporter.rs` for how the data evolves), against the
//! design budget of 1.3 bytes per sample, and a bit-exact round trip of
//! that data.

mod support;

use kiln_storage::{ChunkIter, MAX_CHUNK_SAMPLES, OpenChunk};
use support::node_exporter;

/// Encodes every series in 120-sample chunks made by `new`; returns
/// (bytes, samples).
fn encode_all(series: &[node_exporter::Series], new: fn() -> OpenChunk) -> (usize, usize) {
    let (mut bytes, mut samples) = (0, 0);
    for s in series {
        for part in s.samples.chunks(usize::from(MAX_CHUNK_SAMPLES)) {
            let mut c = new();
            for &(t, v) in part {
                c.append(t, v);
            }
            let decoded: Vec<(i64, u64)> = ChunkIter::new(c.bytes())
                .unwrap()
                .map(|r| r.map(|(t, v)| (t, v.to_bits())).unwrap())
                .collect();
            let want: Vec<(i64, u64)> = part.iter().map(|&(t, v)| (t, v.to_bits())).collect();
            assert_eq!(decoded, want, "{}", s.labels);
            bytes += c.bytes().len();
            samples += part.len();
        }
    }
    (bytes, samples)
}

#[test]
fn node_exporter_data_fits_the_budget() {
    // Two hours of 15 s scrapes: 480 samples, four full chunks per series.
    let series = node_exporter::generate(480, 1_700_000_000_000, 42);
    let (bytes, samples) = encode_all(&series, OpenChunk::new);
    let (xor_bytes, _) = encode_all(&series, OpenChunk::xor_only);
    let per_sample = bytes as f64 / samples as f64;
    let xor_per_sample = xor_bytes as f64 / samples as f64;
    println!(
        "node-exporter-like data, {samples} samples: {per_sample:.3} bytes/sample, plain Gorilla {xor_per_sample:.3}"
    );
    assert!(bytes < xor_bytes);
    assert!(per_sample <= 1.3, "{per_sample:.3} bytes/sample");
}
