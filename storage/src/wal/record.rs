//! WAL records: framing, checksums and payload encodings. The byte layout
//! is specified in `docs/storage-format.md`.
//!
//! A record is `type: u8, len: u32 LE, crc: u32 LE, payload[len]`, where
//! `crc` is CRC-32C over the type byte and the payload. Type 0 never starts
//! a record: it is the zero padding after the last record of a segment.
//!
//! Invariants:
//! * a payload never exceeds [`MAX_RECORD_LEN`]; encoders start a new record
//!   before [`TARGET_RECORD_LEN`], so only a single huge label set could
//!   approach the limit;
//! * decoding never panics: every length and varint is checked against the
//!   bytes at hand and reported as [`WalError::Invalid`].

use crate::labels::Labels;
use crate::varint::{get_uvarint, get_varint, put_uvarint, put_varint};
use crate::wal::WalError;

/// Bytes of a record header.
pub(crate) const HEADER_LEN: usize = 9;
/// Largest payload accepted when reading.
pub(crate) const MAX_RECORD_LEN: usize = 16 << 20;
/// Encoders close a record once its payload reaches this size.
pub(crate) const TARGET_RECORD_LEN: usize = 1 << 20;

pub(crate) const TYPE_SERIES: u8 = 1;
pub(crate) const TYPE_SAMPLES: u8 = 2;
pub(crate) const TYPE_CHUNK: u8 = 3;
pub(crate) const TYPE_MIN_VALID: u8 = 4;

/// One decoded record.
pub(crate) enum WalRecord<'a> {
    /// A series definition.
    Series {
        /// Head series id.
        id: u32,
        /// Its labels.
        labels: Labels,
    },
    /// Samples `(series id, ms, value)`.
    Samples(SampleIter<'a>),
    /// One encoded chunk of a series (checkpoints only).
    Chunk {
        /// Head series id.
        id: u32,
        /// Chunk bytes, see [`crate::chunk`].
        bytes: &'a [u8],
    },
    /// The head's truncation point (checkpoints only).
    MinValid(i64),
}

fn invalid(what: &str) -> WalError {
    WalError::Invalid(what.to_owned())
}

/// A cursor over a payload.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn uvarint(&mut self) -> Result<u64, WalError> {
        let mut pos = 0;
        let v = get_uvarint(self.b, &mut pos).ok_or_else(|| invalid("bad varint"))?;
        self.b = &self.b[pos..];
        Ok(v)
    }

    fn varint(&mut self) -> Result<i64, WalError> {
        let mut pos = 0;
        let v = get_varint(self.b, &mut pos).ok_or_else(|| invalid("bad varint"))?;
        self.b = &self.b[pos..];
        Ok(v)
    }

    fn id(&mut self) -> Result<u32, WalError> {
        u32::try_from(self.uvarint()?).map_err(|_| invalid("series id over u32"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        if n > self.b.len() {
            return Err(invalid("field longer than its record"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WalError> {
        let (&b, rest) = self
            .b
            .split_first()
            .ok_or_else(|| invalid("field longer than its record"))?;
        self.b = rest;
        Ok(b)
    }

    fn str(&mut self) -> Result<&'a str, WalError> {
        let n = usize::try_from(self.uvarint()?).map_err(|_| invalid("length"))?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| invalid("label is not UTF-8"))
    }
}

/// Decoded samples of a samples record.
pub(crate) struct SampleIter<'a> {
    c: Cursor<'a>,
    base: i64,
    prev_id: i64,
}

impl Iterator for SampleIter<'_> {
    type Item = Result<(u32, i64, f64), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.c.b.is_empty() {
            return None;
        }
        let one = (|| {
            let id = self.prev_id.wrapping_add(self.c.varint()?);
            self.prev_id = id;
            let id = u32::try_from(id).map_err(|_| invalid("series id over u32"))?;
            let t = self.base.wrapping_add(self.c.varint()?);
            let n = usize::from(self.c.u8()?);
            if n > 8 {
                return Err(invalid("value longer than 8 bytes"));
            }
            // The `n` high bytes of the value, most significant first.
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(self.c.bytes(n)?);
            Ok((id, t, f64::from_bits(u64::from_be_bytes(v))))
        })();
        if one.is_err() {
            self.c.b = &[];
        }
        Some(one)
    }
}

/// Decodes a payload of type `ty`. Series records hold exactly one series.
pub(crate) fn decode(ty: u8, payload: &[u8]) -> Result<WalRecord<'_>, WalError> {
    let mut c = Cursor { b: payload };
    match ty {
        TYPE_SERIES => {
            let id = c.id()?;
            let n = c.uvarint()?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                pairs.push((c.str()?, c.str()?));
            }
            if !c.b.is_empty() {
                return Err(invalid("trailing bytes in series record"));
            }
            let labels = Labels::from_pairs(pairs).map_err(|e| WalError::Invalid(e.to_string()))?;
            Ok(WalRecord::Series { id, labels })
        }
        TYPE_SAMPLES => {
            let base = c.varint()?;
            Ok(WalRecord::Samples(SampleIter {
                c,
                base,
                prev_id: 0,
            }))
        }
        TYPE_CHUNK => {
            let id = c.id()?;
            Ok(WalRecord::Chunk { id, bytes: c.b })
        }
        TYPE_MIN_VALID => {
            let t = c.varint()?;
            Ok(WalRecord::MinValid(t))
        }
        other => Err(WalError::Invalid(format!("unknown record type {other}"))),
    }
}

/// Encodes records back to back into one buffer.
#[derive(Debug, Default)]
pub(crate) struct RecordBuf {
    buf: Vec<u8>,
    /// Start of the open record's header, and its type.
    open: Option<(usize, u8)>,
    /// Base timestamp of the open samples record.
    base: i64,
    /// Previous series id in the open samples record (0 at its start).
    prev_id: i64,
}

impl RecordBuf {
    /// An empty buffer with room for `bytes`.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        RecordBuf {
            buf: Vec::with_capacity(bytes),
            ..RecordBuf::default()
        }
    }

    /// Bytes encoded so far (the open record included).
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    fn begin(&mut self, ty: u8) {
        if let Some((start, open_ty)) = self.open {
            if open_ty == ty && self.buf.len() - start < TARGET_RECORD_LEN {
                return;
            }
            self.close();
        }
        self.open = Some((self.buf.len(), ty));
        self.buf.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    fn close(&mut self) {
        if let Some((start, ty)) = self.open.take() {
            let payload = &self.buf[start + HEADER_LEN..];
            // Payloads stay under MAX_RECORD_LEN (see module invariants),
            // far below u32::MAX.
            let len = payload.len() as u32;
            let crc = crc32c::crc32c_append(crc32c::crc32c(&[ty]), payload);
            self.buf[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// Adds a series definition (one record each).
    pub(crate) fn series(&mut self, id: u32, labels: &Labels) {
        self.close();
        self.begin(TYPE_SERIES);
        put_uvarint(&mut self.buf, u64::from(id));
        put_uvarint(&mut self.buf, labels.len() as u64);
        for l in labels.iter() {
            put_uvarint(&mut self.buf, l.name.len() as u64);
            self.buf.extend_from_slice(l.name.as_bytes());
            put_uvarint(&mut self.buf, l.value.len() as u64);
            self.buf.extend_from_slice(l.value.as_bytes());
        }
        self.close();
    }

    /// Adds a sample, to the open samples record or a new one.
    pub(crate) fn sample(&mut self, id: u32, t: i64, v: f64) {
        let full = self
            .open
            .is_some_and(|(start, _)| self.buf.len() - start >= TARGET_RECORD_LEN);
        if full || !matches!(self.open, Some((_, TYPE_SAMPLES))) {
            self.close();
            self.begin(TYPE_SAMPLES);
            self.base = t;
            self.prev_id = 0;
            put_varint(&mut self.buf, t);
        }
        // Scrapes append their series in the same order every time, so
        // consecutive ids are close: their difference is one byte.
        put_varint(&mut self.buf, i64::from(id) - self.prev_id);
        self.prev_id = i64::from(id);
        put_varint(&mut self.buf, t.wrapping_sub(self.base));
        // Low zero bytes are dropped: integers and short binary fractions
        // (0, 1, byte counts) need 1–6 bytes instead of 8.
        let bits = v.to_bits();
        let n = 8 - (bits.trailing_zeros() / 8) as usize;
        self.buf.push(n as u8);
        self.buf.extend_from_slice(&bits.to_be_bytes()[..n]);
    }

    /// Adds one chunk of a series (one record each).
    pub(crate) fn chunk(&mut self, id: u32, bytes: &[u8]) {
        self.close();
        self.begin(TYPE_CHUNK);
        put_uvarint(&mut self.buf, u64::from(id));
        self.buf.extend_from_slice(bytes);
        self.close();
    }

    /// Adds the truncation point.
    pub(crate) fn min_valid(&mut self, t: i64) {
        self.close();
        self.begin(TYPE_MIN_VALID);
        put_varint(&mut self.buf, t);
        self.close();
    }

    /// Closes the open record and returns the bytes.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.close();
        std::mem::take(&mut self.buf)
    }
}

/// Splits `bytes` into records, calling `f(type, payload)` for each, until
/// the end or the first bad header or checksum; returns the length of the
/// valid prefix. Used by tests; replay reads files with the same checks.
#[cfg(test)]
pub(crate) fn split(bytes: &[u8], mut f: impl FnMut(u8, &[u8])) -> usize {
    let mut at = 0;
    while let Some(h) = bytes.get(at..at + HEADER_LEN) {
        let Some((ty, len, crc)) = parse_header(h) else {
            break;
        };
        let Some(payload) = bytes.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
            break;
        };
        if !crc_ok(ty, payload, crc) {
            break;
        }
        f(ty, payload);
        at += HEADER_LEN + len;
    }
    at
}

/// Type, payload length and checksum of a header; `None` for padding
/// (type 0) or an impossible length.
pub(crate) fn parse_header(h: &[u8]) -> Option<(u8, usize, u32)> {
    let ty = h[0];
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let crc = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
    (ty != 0 && len <= MAX_RECORD_LEN).then_some((ty, len, crc))
}

/// Whether `crc` is the checksum of a record of type `ty` with `payload`.
pub(crate) fn crc_ok(ty: u8, payload: &[u8], crc: u32) -> bool {
    crc32c::crc32c_append(crc32c::crc32c(&[ty]), payload) == crc
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Rec {
        Series(u32, Vec<(String, String)>),
        Sample(u32, i64, u64),
        Chunk(u32, Vec<u8>),
        MinValid(i64),
    }

    fn rec() -> impl Strategy<Value = Rec> {
        prop_oneof![
            (
                any::<u32>(),
                prop::collection::btree_map("[a-z]{1,3}", "[a-zé]{1,4}", 1..4)
            )
                .prop_map(|(id, m)| Rec::Series(id, m.into_iter().collect())),
            (any::<u32>(), any::<i64>(), any::<u64>()).prop_map(|(i, t, v)| Rec::Sample(i, t, v)),
            (any::<u32>(), prop::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(i, b)| Rec::Chunk(i, b)),
            any::<i64>().prop_map(Rec::MinValid),
        ]
    }

    fn encode(recs: &[Rec]) -> Vec<u8> {
        let mut b = RecordBuf::default();
        for r in recs {
            match r {
                Rec::Series(id, pairs) => {
                    b.series(*id, &Labels::from_pairs(pairs.clone()).unwrap())
                }
                Rec::Sample(id, t, v) => b.sample(*id, *t, f64::from_bits(*v)),
                Rec::Chunk(id, bytes) => b.chunk(*id, bytes),
                Rec::MinValid(t) => b.min_valid(*t),
            }
        }
        b.take()
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Rec>, usize) {
        let mut out = Vec::new();
        let valid = split(bytes, |ty, payload| match decode(ty, payload).unwrap() {
            WalRecord::Series { id, labels } => out.push(Rec::Series(
                id,
                labels
                    .iter()
                    .map(|l| (l.name.to_owned(), l.value.to_owned()))
                    .collect(),
            )),
            WalRecord::Samples(it) => {
                for s in it {
                    let (id, t, v) = s.unwrap();
                    out.push(Rec::Sample(id, t, v.to_bits()));
                }
            }
            WalRecord::Chunk { id, bytes } => out.push(Rec::Chunk(id, bytes.to_vec())),
            WalRecord::MinValid(t) => out.push(Rec::MinValid(t)),
        });
        (out, valid)
    }

    proptest! {
        #[test]
        fn records_round_trip(recs in prop::collection::vec(rec(), 0..30)) {
            let bytes = encode(&recs);
            let (got, valid) = decode_all(&bytes);
            prop_assert_eq!(valid, bytes.len());
            prop_assert_eq!(got, recs);
        }

        #[test]
        fn a_flipped_byte_stops_at_its_record(recs in prop::collection::vec(rec(), 1..20),
                                              at in any::<prop::sample::Index>(),
                                              flip in 1u8..=255) {
            let mut bytes = encode(&recs);
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            // Records stop at the damaged one, and decoding whatever passes
            // the checksum never panics.
            let valid = split(&bytes, |ty, payload| {
                if let Ok(WalRecord::Samples(it)) = decode(ty, payload) {
                    it.for_each(drop);
                }
            });
            prop_assert!(valid <= at);
        }
    }
}
