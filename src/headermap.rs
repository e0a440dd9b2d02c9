//! The proxy-wasm serialised header map, parsed as bytes.
//!
//! `proxy_get_header_map_pairs` returns `count: u32`, then `count` pairs of
//! `(name_len: u32, value_len: u32)`, then each name and each value followed
//! by a NUL byte, all little-endian. The SDK's own parser unwraps UTF-8 and
//! slices without bounds checks; this one takes names and values as bytes
//! and returns `None` for anything malformed.

/// Header names and values as bytes, in the host's order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Parse a serialised header map; `None` if it is malformed.
pub fn parse(b: &[u8]) -> Option<Pairs> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |i: usize| -> Option<usize> {
        let s: [u8; 4] = b.get(i..i.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(s)).ok()
    };
    let count = u32_at(0)?;
    let mut p = count.checked_mul(8)?.checked_add(4)?;
    if p > b.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let name_len = u32_at(4 + n * 8)?;
        let value_len = u32_at(8 + n * 8)?;
        let name = b.get(p..p.checked_add(name_len)?)?.to_vec();
        p = p.checked_add(name_len)?.checked_add(1)?;
        let value = b.get(p..p.checked_add(value_len)?)?.to_vec();
        p = p.checked_add(value_len)?.checked_add(1)?;
        out.push((name, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_bytes_and_rejects_truncation() {
        let mut b = Vec::new();
        for n in [2u32, 1, 2, 0, 1] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(b"a\0\xe9\xff\0\0z\0");
        assert_eq!(
            parse(&b),
            Some(vec![
                (b"a".to_vec(), b"\xe9\xff".to_vec()),
                (Vec::new(), b"z".to_vec())
            ])
        );
        for cut in 1..b.len() - 1 {
            assert_eq!(parse(&b[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse(&[]), Some(Vec::new()));
    }
}
