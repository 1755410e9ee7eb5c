//! LEB128 variable-length integers (Go's `binary.Uvarint` encoding), with
//! zig-zag for signed values: shared by the WAL records and block files.

/// Appends `v` as an unsigned varint.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zig-zag encoded as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Reads an unsigned varint at `*pos`, advancing it; `None` when the bytes
/// end first or the value overflows 64 bits.
pub(crate) fn get_uvarint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Reads a zig-zag varint at `*pos`, advancing it.
pub(crate) fn get_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let u = get_uvarint(b, pos)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut b = Vec::new();
            put_uvarint(&mut b, u);
            put_varint(&mut b, i);
            let mut pos = 0;
            prop_assert_eq!(get_uvarint(&b, &mut pos), Some(u));
            prop_assert_eq!(get_varint(&b, &mut pos), Some(i));
            prop_assert_eq!(pos, b.len());
            // Every strict prefix of the last value is torn.
            for cut in 0..b.len() {
                let mut p = 0;
                let first = get_uvarint(&b[..cut], &mut p);
                if first.is_some() {
                    prop_assert!(get_varint(&b[..cut], &mut p).is_none());
                }
            }
        }
    }
}
