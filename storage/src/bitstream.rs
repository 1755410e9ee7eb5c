//! Bit-granular writing and reading, most significant bit first.
//!
//! The chunk codec packs fields of 1 to 64 bits back to back. [`BitWriter`]
//! appends them to a byte vector; [`BitReader`] reads them back from a byte
//! slice.
//!
//! Invariants:
//! * a writer's `bytes` hold every written bit; the unused low bits of the
//!   last byte (`free` of them) are zero;
//! * a reader never reads past `limit_bits` and reports the attempt as
//!   `None` instead of panicking, so corrupt input cannot crash a decoder.

/// Appends bit fields to a byte vector.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Unused low bits in the last byte (0 when the last byte is full).
    free: u32,
}

impl BitWriter {
    /// A writer that starts after `prefix`, byte aligned.
    pub fn with_prefix(prefix: &[u8], capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity.max(prefix.len()));
        bytes.extend_from_slice(prefix);
        BitWriter { bytes, free: 0 }
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Mutable access to whole bytes already written (for fixed headers).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Heap bytes reserved by the writer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Releases spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
    }

    /// Starts a new byte. Growth is by a quarter (at least 16 bytes)
    /// rather than doubling: a head keeps one open chunk per series, and
    /// doubling would leave a third of that memory unused on average.
    #[inline]
    fn new_byte(&mut self) {
        if self.bytes.len() == self.bytes.capacity() {
            self.bytes.reserve_exact((self.bytes.len() / 4).max(16));
        }
        self.bytes.push(0);
        self.free = 8;
    }

    /// Writes one bit.
    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.new_byte();
        }
        self.free -= 1;
        if bit {
            // `bytes` is non-empty: a byte was pushed above if none had room.
            if let Some(last) = self.bytes.last_mut() {
                *last |= 1 << self.free;
            }
        }
    }

    /// Writes the low `n` bits of `v` (`n <= 64`), most significant first.
    #[inline]
    pub fn write_bits(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64);
        let mut left = n;
        while left > 0 {
            if self.free == 0 {
                self.new_byte();
            }
            let take = left.min(self.free);
            let chunk = ((v >> (left - take)) & ((1u64 << take) - 1)) as u8;
            self.free -= take;
            if let Some(last) = self.bytes.last_mut() {
                *last |= chunk << self.free;
            }
            left -= take;
        }
    }

    /// Writes an unsigned LEB128 varint as 8-bit groups.
    pub fn write_uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.write_bits((v & 0x7f) | 0x80, 8);
            v >>= 7;
        }
        self.write_bits(v, 8);
    }

    /// Writes a signed varint (zigzag, then LEB128).
    pub fn write_varint(&mut self, v: i64) {
        self.write_uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
}

/// Reads bit fields from a byte slice.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit_bits: usize,
}

impl<'a> BitReader<'a> {
    /// A reader over `bytes`, starting at byte `start`.
    pub fn new(bytes: &'a [u8], start: usize) -> Self {
        BitReader {
            bytes,
            pos: start * 8,
            limit_bits: bytes.len() * 8,
        }
    }

    /// Reads one bit.
    #[inline]
    pub fn read_bit(&mut self) -> Option<bool> {
        if self.pos >= self.limit_bits {
            return None;
        }
        let b = self.bytes[self.pos / 8] >> (7 - (self.pos % 8)) & 1;
        self.pos += 1;
        Some(b == 1)
    }

    /// Reads `n <= 64` bits as the low bits of a `u64`.
    #[inline]
    pub fn read_bits(&mut self, n: u32) -> Option<u64> {
        debug_assert!(n <= 64);
        if self.pos + n as usize > self.limit_bits {
            return None;
        }
        let mut out = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.bytes[self.pos / 8];
            let avail = 8 - (self.pos % 8) as u32;
            let take = left.min(avail);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            // `take <= 8`: the shift is always in range.
            out = (out << take) | bits;
            self.pos += take as usize;
            left -= take;
        }
        Some(out)
    }

    /// Reads an unsigned LEB128 varint written by [`BitWriter::write_uvarint`].
    pub fn read_uvarint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.read_bits(8)?;
            out |= (byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(out);
            }
        }
        None
    }

    /// Reads a signed varint written by [`BitWriter::write_varint`].
    pub fn read_varint(&mut self) -> Option<i64> {
        let u = self.read_uvarint()?;
        Some((u >> 1) as i64 ^ -((u & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Field {
        Bits(u64, u32),
        Uvar(u64),
        Var(i64),
    }

    fn field() -> impl Strategy<Value = Field> {
        prop_oneof![
            (any::<u64>(), 0u32..=64).prop_map(|(v, n)| {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                Field::Bits(v & mask, n)
            }),
            any::<u64>().prop_map(Field::Uvar),
            any::<i64>().prop_map(Field::Var),
        ]
    }

    proptest! {
        #[test]
        fn fields_round_trip(prefix in prop::collection::vec(any::<u8>(), 0..4),
                             fields in prop::collection::vec(field(), 0..64)) {
            let mut w = BitWriter::with_prefix(&prefix, 0);
            for f in &fields {
                match *f {
                    Field::Bits(v, n) => w.write_bits(v, n),
                    Field::Uvar(v) => w.write_uvarint(v),
                    Field::Var(v) => w.write_varint(v),
                }
            }
            let bytes = w.into_bytes();
            prop_assert_eq!(&bytes[..prefix.len()], &prefix[..]);
            let mut r = BitReader::new(&bytes, prefix.len());
            for f in &fields {
                match *f {
                    Field::Bits(v, n) => prop_assert_eq!(r.read_bits(n), Some(v)),
                    Field::Uvar(v) => prop_assert_eq!(r.read_uvarint(), Some(v)),
                    Field::Var(v) => prop_assert_eq!(r.read_varint(), Some(v)),
                }
            }
        }
    }

    #[test]
    fn reading_past_the_end_is_none() {
        let mut w = BitWriter::default();
        w.write_bit(true);
        w.write_bits(0b101, 3);
        let bytes = w.into_bytes();
        assert_eq!(bytes, [0b1101_0000]);
        let mut r = BitReader::new(&bytes, 0);
        assert_eq!(r.read_bits(4), Some(0b1101));
        assert_eq!(r.read_bits(5), None);
        assert_eq!(r.read_bits(4), Some(0));
        assert_eq!(r.read_bit(), None);
        assert_eq!(BitReader::new(&[0xff; 3], 0).read_uvarint(), None);
    }
}
