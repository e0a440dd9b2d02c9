//! The proxy-wasm serialised header map, parsed as bytes.
//!
//! `proxy_get_header_map_pairs` returns `count: u32`, then `count` pairs of
//! `(name_len: u32, value_len: u32)`, then each name and each value followed
//! by a NUL byte, all little-endian. The SDK's own parser unwraps UTF-8 and
//! slices without bounds checks; this one borrows names and values as
//! bytes and reads a malformed map as no headers at all.

use crate::request::Header;
use smallvec::SmallVec;

/// A request's headers, borrowed from its serialised map: inline up to 32
/// pairs (no heap allocation for a usual request), on the heap beyond.
pub type Map<'b> = SmallVec<[Header<'b>; 32]>;

/// Call `f` with every `(name, value)` of a serialised header map, borrowed
/// from it, in order; `None` if it is malformed (then `f` may have seen a
/// prefix of the pairs).
pub fn walk<'b>(b: &'b [u8], mut f: impl FnMut(&'b [u8], &'b [u8])) -> Option<()> {
    if b.is_empty() {
        return Some(());
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
    for n in 0..count {
        let name_len = u32_at(4 + n * 8)?;
        let value_len = u32_at(8 + n * 8)?;
        let name = b.get(p..p.checked_add(name_len)?)?;
        p = p.checked_add(name_len)?.checked_add(1)?;
        let value = b.get(p..p.checked_add(value_len)?)?;
        p = p.checked_add(value_len)?.checked_add(1)?;
        f(name, value);
    }
    Some(())
}

/// Fill `out` with the headers of a serialised map, borrowed from it. A
/// malformed map leaves `out` empty (never a prefix): the request is then
/// served as one without headers, as when the host cannot give them. Into
/// the caller's map, not returned: the inline map is 0.5 KB to move.
pub fn read_into<'b>(b: &'b [u8], out: &mut Map<'b>) {
    out.clear();
    if walk(b, |k, v| out.push((k, v))).is_none() {
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{read_into, walk, Map};

    /// The headers of `b` as the filter reads them, `None` if it is
    /// malformed.
    fn parse(b: &[u8]) -> Option<Map<'_>> {
        walk(b, |_, _| {})?;
        let mut m = Map::new();
        read_into(b, &mut m);
        Some(m)
    }

    #[test]
    fn parses_bytes_and_rejects_truncation() {
        let mut b = Vec::new();
        for n in [2u32, 1, 2, 0, 1] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(b"a\0\xe9\xff\0\0z\0");
        let want: [(&[u8], &[u8]); 2] = [(b"a", b"\xe9\xff"), (b"", b"z")];
        assert_eq!(parse(&b).as_deref(), Some(&want[..]));
        for cut in 1..b.len() - 1 {
            assert_eq!(parse(&b[..cut]), None, "cut at {cut}");
            let mut m = Map::new();
            read_into(&b[..cut], &mut m);
            assert!(m.is_empty(), "never a prefix (cut at {cut})");
        }
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse(&[]).as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_large_map_spills_to_the_heap_whole() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..100u32)
            .map(|i| (format!("h{i}").into_bytes(), i.to_string().into_bytes()))
            .collect();
        let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in &pairs {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &pairs {
            for part in [k, v] {
                b.extend_from_slice(part);
                b.push(0);
            }
        }
        let got = parse(&b).unwrap_or_default();
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], (&b"h99"[..], &b"99"[..]));
    }
}
