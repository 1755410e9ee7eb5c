//! The chunk codec: up to [`MAX_CHUNK_SAMPLES`] samples of one series,
//! compressed Gorilla-style. The byte layout is specified in
//! `docs/storage-format.md`; in short:
//!
//! * a 4-byte header: value encoding, decimal scale and shift, sample count
//!   (u16 BE);
//! * then one bit stream, per sample its timestamp then its value:
//!   timestamps as the first value (zigzag varint), the first delta (varint),
//!   then each delta's offset from a nominal delta (the last delta seen
//!   twice in a row) in prefix-coded buckets;
//! * values either as Gorilla XOR of the f64 bits ([`ValueEncoding::Xor`]),
//!   or — when every value of the chunk is `i / 10^scale` for an integer `i`
//!   of at most 53 bits, bit-exactly — as delta-of-deltas of those integers
//!   shifted right by the trailing zero bits they all share
//!   ([`ValueEncoding::Decimal`]). Counters and gauges of exporters are
//!   mostly such decimals (byte gauges often in whole pages or KiB), and
//!   their delta-of-deltas are small.
//!
//! [`OpenChunk`] chooses the value encoding while appending: it starts with
//! the smallest decimal scale (and largest shift) that fits the first
//! value, moves to a larger scale or smaller shift, or to XOR, when a value
//! does not fit, and re-encodes the samples it holds when it does (≤ 120
//! samples, a bounded number of times per chunk).
//!
//! Invariants:
//! * every f64 round-trips bit-exactly (NaN payloads, the staleness marker,
//!   ±Inf, -0.0): decimal mode admits a value only after checking that the
//!   decoder's computation gives back the same bits;
//! * timestamps in a chunk are strictly increasing; [`ChunkIter`] checks
//!   this, and any other inconsistency, and returns [`ChunkError`] on bad
//!   bytes rather than panicking.

use crate::bitstream::{BitReader, BitWriter};

/// A chunk is cut after this many samples.
pub const MAX_CHUNK_SAMPLES: u16 = 120;

/// Bytes before the bit stream: encoding, scale and shift, count (u16 BE).
pub const CHUNK_HEADER_LEN: usize = 4;

const ENC_XOR: u8 = 1;
const ENC_DECIMAL: u8 = 2;

/// Largest decimal scale tried: `10^12` and every integer of 53 bits are
/// exact f64s, so the decoder's division is correctly rounded.
const MAX_SCALE: u8 = 12;

/// Decimal integers are limited to 53 bits of magnitude.
const MAX_DECIMAL: i64 = 1 << 53;

/// Largest shift: it shares the header byte with the scale (4 bits each).
const MAX_SHIFT: u32 = 15;

const POW10: [f64; MAX_SCALE as usize + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

/// Bucket widths for timestamp offsets from the nominal delta. A zero costs
/// one bit; the 7-bit bucket absorbs a few ms of scrape jitter.
const TIME_WIDTHS: [u32; 4] = [7, 14, 20, 64];

/// Bucket widths for delta-of-deltas of decimal integers.
const VALUE_WIDTHS: [u32; 5] = [6, 13, 20, 32, 64];

/// How a chunk encodes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// Gorilla XOR of the f64 bits.
    Xor,
    /// Delta-of-deltas of `(v * 10^scale) >> shift`, an integer for every
    /// value.
    Decimal {
        /// The power of ten.
        scale: u8,
        /// Trailing zero bits shared by every scaled integer.
        shift: u8,
    },
}

/// Why chunk bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Fewer bytes than the header.
    #[error("chunk shorter than its {CHUNK_HEADER_LEN}-byte header")]
    TooShort,
    /// The encoding byte is not one this version writes.
    #[error("unknown chunk value encoding {0}")]
    UnknownEncoding(u8),
    /// The decimal scale is out of range.
    #[error("chunk decimal scale {0} out of range")]
    BadScale(u8),
    /// The bit stream ended or was inconsistent before the header's count.
    #[error("chunk corrupt at sample {0}")]
    Corrupt(u16),
}

/// `v * 10^scale` as an integer, if the decoder's `i / 10^scale` gives back
/// exactly the bits of `v` (so -0.0, NaNs and infinities never qualify).
#[inline]
fn to_decimal(v: f64, scale: u8) -> Option<i64> {
    let x = v * POW10[scale as usize];
    // NaN fails the range check too.
    if x.is_nan() || x.abs() > MAX_DECIMAL as f64 {
        return None;
    }
    // Round to nearest with two additions rather than `f64::round`, a
    // library call on baseline x86-64. Beyond 2^51 a double is an integer
    // or a half and the cast truncates; any rounding is fine, since the
    // bits are checked below.
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let r = if x.abs() < 2_251_799_813_685_248.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    };
    let i = r as i64;
    (from_decimal(i, scale).to_bits() == v.to_bits()).then_some(i)
}

#[inline]
fn from_decimal(i: i64, scale: u8) -> f64 {
    i as f64 / POW10[scale as usize]
}

/// The smallest scale `>= from` at which every value is a decimal, and the
/// trailing zero bits all the scaled integers share (at most [`MAX_SHIFT`]).
fn decimal_layout(from: u8, values: impl Iterator<Item = f64> + Clone) -> Option<(u8, u8)> {
    let scale = (from..=MAX_SCALE).find(|&s| values.clone().all(|v| to_decimal(v, s).is_some()))?;
    let shift = values
        .filter_map(|v| to_decimal(v, scale))
        .map(i64::trailing_zeros)
        .min()
        .unwrap_or(0)
        .min(MAX_SHIFT);
    Some((scale, shift as u8))
}

/// The nominal timestamp delta after a sample with `delta` that followed
/// one with `prev`: it moves only when two consecutive deltas agree. A
/// jittered scrape (`P + j`, then `P − j`) leaves it at `P`, so jitter costs
/// two non-zero offsets where plain delta-of-deltas costs three (`j`,
/// `−2j`, `j`); a missed scrape costs one.
#[inline]
fn next_nominal(nominal: u64, prev: u64, delta: u64) -> u64 {
    if delta == prev { delta } else { nominal }
}

fn fits(v: i64, width: u32) -> bool {
    width >= 64 || (-(1i64 << (width - 1))..(1i64 << (width - 1))).contains(&v)
}

/// Writes a delta-of-delta: `0` for zero, else bucket `i` as `i + 1` one
/// bits, a zero bit unless it is the last bucket, and `widths[i]` bits of
/// two's complement.
fn write_dod(w: &mut BitWriter, dod: i64, widths: &[u32]) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    for (i, &width) in widths.iter().enumerate() {
        let last = i + 1 == widths.len();
        if last || fits(dod, width) {
            let ones = (1u64 << (i + 1)) - 1;
            if last {
                w.write_bits(ones, i as u32 + 1);
            } else {
                w.write_bits(ones << 1, i as u32 + 2);
            }
            let mask = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            w.write_bits(dod as u64 & mask, width);
            return;
        }
    }
}

fn read_dod(r: &mut BitReader<'_>, widths: &[u32]) -> Option<i64> {
    let mut ones = 0;
    while ones < widths.len() && r.read_bit()? {
        ones += 1;
    }
    if ones == 0 {
        return Some(0);
    }
    let width = widths[ones - 1];
    let raw = r.read_bits(width)?;
    Some(if width >= 64 {
        raw as i64
    } else {
        ((raw << (64 - width)) as i64) >> (64 - width)
    })
}

/// Per-encoding state of an [`OpenChunk`].
#[derive(Debug, Clone)]
enum ValueState {
    Xor {
        /// Leading zeros of the current XOR window; `u8::MAX` before any.
        leading: u8,
        trailing: u8,
    },
    Decimal {
        scale: u8,
        shift: u8,
        last: i64,
        delta: i64,
    },
}

impl ValueState {
    /// The state before a chunk's first value: decimal with this
    /// `(scale, shift)` layout, or XOR without one.
    fn initial(layout: Option<(u8, u8)>) -> Self {
        match layout {
            Some((scale, shift)) => ValueState::Decimal {
                scale,
                shift,
                last: 0,
                delta: 0,
            },
            None => ValueState::Xor {
                leading: u8::MAX,
                trailing: 0,
            },
        }
    }
}

/// The chunk a series is appending to. See the module documentation.
#[derive(Debug, Clone)]
pub struct OpenChunk {
    w: BitWriter,
    count: u16,
    t_first: i64,
    t_last: i64,
    /// The last timestamp delta, as the wrapping difference.
    t_delta: u64,
    /// The nominal delta timestamps are coded against.
    t_nominal: u64,
    v_last: u64,
    values: ValueState,
    /// Whether the decimal encoding may be chosen (else plain Gorilla).
    decimal: bool,
}

impl Default for OpenChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenChunk {
    /// An empty chunk.
    pub fn new() -> Self {
        OpenChunk {
            w: BitWriter::with_prefix(&[0; CHUNK_HEADER_LEN], 32),
            count: 0,
            t_first: 0,
            t_last: 0,
            t_delta: 0,
            t_nominal: 0,
            v_last: 0,
            values: ValueState::Xor {
                leading: u8::MAX,
                trailing: 0,
            },
            decimal: true,
        }
    }

    /// An empty chunk that always encodes values with XOR: plain Gorilla,
    /// the baseline the decimal encoding is measured against.
    pub fn xor_only() -> Self {
        OpenChunk {
            decimal: false,
            ..OpenChunk::new()
        }
    }

    /// Rebuilds an open chunk from encoded bytes, to keep appending to it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChunkError> {
        let mut c = OpenChunk::new();
        for s in ChunkIter::new(bytes)? {
            let (t, v) = s?;
            c.append(t, v);
        }
        Ok(c)
    }

    /// Number of samples.
    pub fn len(&self) -> u16 {
        self.count
    }

    /// Whether the chunk has no sample.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// First timestamp (meaningless when empty).
    pub fn first_time(&self) -> i64 {
        self.t_first
    }

    /// Last timestamp (meaningless when empty).
    pub fn last_time(&self) -> i64 {
        self.t_last
    }

    /// Bits of the newest sample's value (meaningless while empty).
    pub fn last_value_bits(&self) -> u64 {
        self.v_last
    }

    /// The encoded bytes, readable with [`ChunkIter`] at any time.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// The value encoding in use.
    pub fn encoding(&self) -> ValueEncoding {
        match self.values {
            ValueState::Xor { .. } => ValueEncoding::Xor,
            ValueState::Decimal { scale, shift, .. } => ValueEncoding::Decimal { scale, shift },
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }

    /// Finishes the chunk: its bytes, trimmed.
    pub fn finish(mut self) -> Box<[u8]> {
        self.w.shrink_to_fit();
        self.w.into_bytes().into_boxed_slice()
    }

    /// Appends a sample. The caller guarantees `t` is greater than the last
    /// timestamp and that the chunk has fewer than `u16::MAX` samples.
    pub fn append(&mut self, t: i64, v: f64) {
        debug_assert!(
            self.count == 0 || t > self.t_last,
            "timestamps must increase"
        );
        if self.count == 0 {
            let layout = self
                .decimal
                .then(|| decimal_layout(0, std::iter::once(v)))
                .flatten();
            self.start(ValueState::initial(layout));
        } else if let ValueState::Decimal { scale, shift, .. } = self.values {
            match to_decimal(v, scale) {
                Some(i) if i.trailing_zeros() >= u32::from(shift) => {
                    self.push(t, v, Some(i));
                }
                _ => self.reencode(scale, t, v),
            }
            return;
        }
        self.push(t, v, None);
    }

    fn start(&mut self, values: ValueState) {
        let (enc, scale) = match values {
            ValueState::Xor { .. } => (ENC_XOR, 0),
            ValueState::Decimal { scale, shift, .. } => (ENC_DECIMAL, scale | (shift << 4)),
        };
        let header = self.w.bytes_mut();
        header[0] = enc;
        header[1] = scale;
        self.values = values;
    }

    /// Encodes a sample that fits the current value encoding; `int` is
    /// `v`'s scaled integer when the caller has it already.
    fn push(&mut self, t: i64, v: f64, int: Option<i64>) {
        match self.count {
            0 => {
                self.w.write_varint(t);
                self.t_first = t;
            }
            1 => {
                self.t_delta = t.wrapping_sub(self.t_last) as u64;
                self.t_nominal = self.t_delta;
                self.w.write_uvarint(self.t_delta);
            }
            _ => {
                let delta = t.wrapping_sub(self.t_last) as u64;
                write_dod(
                    &mut self.w,
                    delta.wrapping_sub(self.t_nominal) as i64,
                    &TIME_WIDTHS,
                );
                self.t_nominal = next_nominal(self.t_nominal, self.t_delta, delta);
                self.t_delta = delta;
            }
        }
        self.t_last = t;
        let bits = v.to_bits();
        match &mut self.values {
            ValueState::Decimal {
                scale,
                shift,
                last,
                delta,
            } => {
                // `append` and `reencode` checked that `v` is a decimal at
                // this scale whose low `shift` bits are zero.
                let i = int.or_else(|| to_decimal(v, *scale)).unwrap_or_default() >> *shift;
                if self.count == 0 {
                    self.w.write_varint(i);
                } else {
                    // |i| <= 2^53, so neither difference can overflow.
                    let d = i - *last;
                    write_dod(&mut self.w, d - *delta, &VALUE_WIDTHS);
                    *delta = d;
                }
                *last = i;
            }
            ValueState::Xor { leading, trailing } => {
                if self.count == 0 {
                    self.w.write_bits(bits, 64);
                } else {
                    let x = bits ^ self.v_last;
                    if x == 0 {
                        self.w.write_bit(false);
                    } else {
                        let lead = x.leading_zeros().min(31) as u8;
                        let trail = x.trailing_zeros() as u8;
                        if *leading != u8::MAX && lead >= *leading && trail >= *trailing {
                            let sig = 64 - u32::from(*leading) - u32::from(*trailing);
                            self.w.write_bits(0b10, 2);
                            self.w.write_bits(x >> *trailing, sig);
                        } else {
                            *leading = lead;
                            *trailing = trail;
                            let sig = 64 - u32::from(lead) - u32::from(trail);
                            self.w.write_bits(0b11, 2);
                            self.w.write_bits(u64::from(lead), 5);
                            // A 64-bit window is written as 0.
                            self.w.write_bits(u64::from(sig) & 63, 6);
                            self.w.write_bits(x >> trail, sig);
                        }
                    }
                }
            }
        }
        self.v_last = bits;
        self.count += 1;
        let count = self.count.to_be_bytes();
        self.w.bytes_mut()[2..4].copy_from_slice(&count);
    }

    /// `v` does not fit decimal `scale` and its shift: re-encodes the chunk
    /// with the smallest scale (not below `scale`) and largest shift that
    /// fit every value, or with XOR.
    fn reencode(&mut self, scale: u8, t: i64, v: f64) {
        let mut samples: Vec<(i64, f64)> = ChunkIter::new(self.w.bytes())
            .into_iter()
            .flatten()
            .map_while(Result::ok)
            .collect();
        debug_assert_eq!(samples.len(), usize::from(self.count));
        samples.push((t, v));
        let values = ValueState::initial(decimal_layout(scale, samples.iter().map(|s| s.1)));
        *self = OpenChunk::new();
        self.start(values);
        for (t, v) in samples {
            self.push(t, v, None);
        }
    }
}

/// Decodes a chunk sample by sample. See the module documentation.
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    scale: u8,
    shift: u8,
    decimal: bool,
    t: i64,
    t_delta: u64,
    t_nominal: u64,
    v: u64,
    leading: u8,
    trailing: u8,
    ival: i64,
    idelta: i64,
    failed: bool,
}

impl<'a> ChunkIter<'a> {
    /// Starts decoding `bytes`; fails on a bad header.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        if bytes.len() < CHUNK_HEADER_LEN {
            return Err(ChunkError::TooShort);
        }
        let decimal = match bytes[0] {
            // An empty open chunk has not chosen yet.
            0 | ENC_XOR => false,
            ENC_DECIMAL => true,
            e => return Err(ChunkError::UnknownEncoding(e)),
        };
        let (scale, shift) = (bytes[1] & 0x0f, bytes[1] >> 4);
        if scale > MAX_SCALE || (!decimal && bytes[1] != 0) {
            return Err(ChunkError::BadScale(bytes[1]));
        }
        let total = u16::from_be_bytes([bytes[2], bytes[3]]);
        if bytes[0] == 0 && total != 0 {
            return Err(ChunkError::UnknownEncoding(0));
        }
        Ok(ChunkIter {
            r: BitReader::new(bytes, CHUNK_HEADER_LEN),
            total,
            read: 0,
            scale,
            shift,
            decimal,
            t: 0,
            t_delta: 0,
            t_nominal: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            ival: 0,
            idelta: 0,
            failed: false,
        })
    }

    /// The number of samples the header announces.
    pub fn total(&self) -> u16 {
        self.total
    }

    /// The next sample, `None` at the end.
    pub fn next_sample(&mut self) -> Result<Option<(i64, f64)>, ChunkError> {
        if self.read >= self.total || self.failed {
            return Ok(None);
        }
        match self.decode() {
            Some(s) => {
                self.read += 1;
                Ok(Some(s))
            }
            None => {
                self.failed = true;
                Err(ChunkError::Corrupt(self.read))
            }
        }
    }

    /// Skips to the first sample with a timestamp `>= t` and returns it.
    pub fn seek(&mut self, t: i64) -> Result<Option<(i64, f64)>, ChunkError> {
        while let Some(s) = self.next_sample()? {
            if s.0 >= t {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn decode(&mut self) -> Option<(i64, f64)> {
        let r = &mut self.r;
        let t = match self.read {
            0 => r.read_varint()?,
            1 => {
                self.t_delta = r.read_uvarint()?;
                self.t_nominal = self.t_delta;
                self.t.wrapping_add(self.t_delta as i64)
            }
            _ => {
                let off = read_dod(r, &TIME_WIDTHS)?;
                let delta = self.t_nominal.wrapping_add(off as u64);
                self.t_nominal = next_nominal(self.t_nominal, self.t_delta, delta);
                self.t_delta = delta;
                self.t.wrapping_add(delta as i64)
            }
        };
        if self.read > 0 && t <= self.t {
            return None;
        }
        self.t = t;
        let v = if self.decimal {
            if self.read == 0 {
                self.ival = r.read_varint()?;
            } else {
                let dod = read_dod(r, &VALUE_WIDTHS)?;
                self.idelta = self.idelta.checked_add(dod)?;
                self.ival = self.ival.checked_add(self.idelta)?;
            }
            if self.ival.unsigned_abs() > (MAX_DECIMAL as u64) >> self.shift {
                return None;
            }
            from_decimal(self.ival << self.shift, self.scale)
        } else {
            if self.read == 0 {
                self.v = r.read_bits(64)?;
            } else if r.read_bit()? {
                if r.read_bit()? {
                    self.leading = r.read_bits(5)? as u8;
                    let sig = match r.read_bits(6)? as u8 {
                        0 => 64,
                        s => s,
                    };
                    self.trailing = 64u8.checked_sub(self.leading)?.checked_sub(sig)?;
                }
                let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
                let x = r.read_bits(sig)?;
                self.v ^= x << self.trailing;
            }
            f64::from_bits(self.v)
        };
        Some((t, v))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_sample().transpose()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::select::STALE_NAN_BITS;

    fn encode(samples: &[(i64, f64)]) -> OpenChunk {
        let mut c = OpenChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
        ChunkIter::new(bytes)
            .unwrap()
            .map(|s| s.map(|(t, v)| (t, v.to_bits())).unwrap())
            .collect()
    }

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn special_values_round_trip() {
        let samples = [
            (1, 1.0),
            (2, f64::from_bits(STALE_NAN_BITS)),
            (3, f64::NAN),
            (4, f64::from_bits(0xfff8_0000_dead_beef)),
            (5, f64::INFINITY),
            (6, f64::NEG_INFINITY),
            (7, -0.0),
            (8, 0.0),
            (9, f64::MIN_POSITIVE),
            (10, f64::MAX),
        ];
        let c = encode(&samples);
        assert_eq!(c.encoding(), ValueEncoding::Xor);
        assert_eq!(decode(c.bytes()), bits(&samples));
    }

    #[test]
    fn decimal_scale_grows_then_falls_back_to_xor() {
        let mut c = OpenChunk::new();
        c.append(0, 4096.0);
        assert_eq!(
            c.encoding(),
            ValueEncoding::Decimal {
                scale: 0,
                shift: 12
            }
        );
        c.append(5_000, 3.0);
        assert_eq!(c.encoding(), ValueEncoding::Decimal { scale: 0, shift: 0 });
        c.append(15_000, 3.25);
        assert_eq!(c.encoding(), ValueEncoding::Decimal { scale: 2, shift: 0 });
        c.append(30_000, 1e-3);
        assert_eq!(c.encoding(), ValueEncoding::Decimal { scale: 3, shift: 0 });
        c.append(45_000, -0.0);
        assert_eq!(c.encoding(), ValueEncoding::Xor);
        c.append(60_000, 7.0);
        assert_eq!(
            decode(c.bytes()),
            bits(&[
                (0, 4096.0),
                (5_000, 3.0),
                (15_000, 3.25),
                (30_000, 1e-3),
                (45_000, -0.0),
                (60_000, 7.0)
            ])
        );
    }

    #[test]
    fn xor_only_never_uses_decimal() {
        let mut c = OpenChunk::xor_only();
        c.append(1, 1.0);
        c.append(2, 2.0);
        assert_eq!(c.encoding(), ValueEncoding::Xor);
        assert_eq!(decode(c.bytes()), bits(&[(1, 1.0), (2, 2.0)]));
    }

    #[test]
    fn seek_and_rebuild() {
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 10, i as f64 * 0.5)).collect();
        let c = encode(&samples);
        let mut it = ChunkIter::new(c.bytes()).unwrap();
        assert_eq!(it.seek(305).unwrap(), Some((310, 15.5)));
        assert_eq!(it.next_sample().unwrap(), Some((320, 16.0)));
        assert_eq!(it.seek(10_000).unwrap(), None);
        let mut again = OpenChunk::from_bytes(c.bytes()).unwrap();
        again.append(1000, 1.0);
        let mut want = samples.clone();
        want.push((1000, 1.0));
        assert_eq!(decode(again.bytes()), bits(&want));
    }

    #[test]
    fn constant_series_cost_about_two_bits_per_sample() {
        let samples: Vec<(i64, f64)> = (0..120).map(|i| (i * 15_000, 1.0)).collect();
        let c = encode(&samples);
        // Header, first time and value, first delta: < 16 bytes; then
        // one bit per timestamp and one per value.
        assert!(c.bytes().len() <= 16 + 2 * 120 / 8, "{}", c.bytes().len());
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(ChunkIter::new(&[1, 0]).err(), Some(ChunkError::TooShort));
        assert_eq!(
            ChunkIter::new(&[9, 0, 0, 0]).err(),
            Some(ChunkError::UnknownEncoding(9))
        );
        assert_eq!(
            ChunkIter::new(&[2, 13, 0, 0]).err(),
            Some(ChunkError::BadScale(13))
        );
        assert_eq!(
            ChunkIter::new(&[1, 0x10, 0, 0]).err(),
            Some(ChunkError::BadScale(0x10))
        );
        // A count larger than the stream.
        let mut bytes = encode(&[(1, 1.5), (2, 2.5)]).bytes().to_vec();
        bytes[3] = 9;
        let out: Vec<_> = ChunkIter::new(&bytes).unwrap().collect();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], Err(ChunkError::Corrupt(2)));
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            (-1000i64..1000).prop_map(|i| i as f64),
            (-100_000i64..100_000, 0u32..5).prop_map(|(i, s)| i as f64 / 10f64.powi(s as i32)),
            (-1000i64..1000, 0u32..20).prop_map(|(i, s)| (i << s) as f64),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(-0.0),
            Just(f64::INFINITY),
        ]
    }

    fn samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
        (
            any::<i64>(),
            prop::collection::vec(
                (
                    prop_oneof![
                        1u64..3,
                        Just(15_000),
                        14_990u64..15_010,
                        1u64..u64::MAX / 200
                    ],
                    value(),
                ),
                0..200,
            ),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                let mut out = Vec::new();
                for (step, v) in steps {
                    if out.is_empty() {
                        out.push((t, v));
                        continue;
                    }
                    match t.checked_add_unsigned(step) {
                        Some(next) => t = next,
                        None => break,
                    }
                    out.push((t, v));
                }
                out
            })
    }

    proptest! {
        #[test]
        fn round_trip_is_bit_exact(s in samples()) {
            let c = encode(&s);
            prop_assert_eq!(usize::from(c.len()), s.len());
            prop_assert_eq!(decode(c.bytes()), bits(&s));
            let finished = c.finish();
            prop_assert_eq!(decode(&finished), bits(&s));
        }

        #[test]
        fn seek_finds_first_at_or_after(s in samples(), at in any::<i64>()) {
            let c = encode(&s);
            let mut it = ChunkIter::new(c.bytes()).unwrap();
            let want = s.iter().find(|x| x.0 >= at).map(|&(t, v)| (t, v.to_bits()));
            prop_assert_eq!(it.seek(at).unwrap().map(|(t, v)| (t, v.to_bits())), want);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(it) = ChunkIter::new(&bytes) {
                let mut last = None;
                for s in it {
                    let Ok((t, _)) = s else { break };
                    prop_assert!(last.is_none_or(|l| t > l));
                    last = Some(t);
                }
            }
        }
    }
}
