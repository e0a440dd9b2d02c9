//! The proxy-wasm serialised header map, parsed as bytes.
//!
//! `proxy_get_header_map_pairs` returns `count: u32`, then `count` pairs of
//! `(name_len: u32, value_len: u32)`, then each name and each value followed
//! by a NUL byte, all little-endian. The SDK's own parser unwraps UTF-8 and
//! slices without bounds checks; this one takes names and values as bytes
//! and returns `None` for anything malformed.

/// Header names and values as bytes, in the host's order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

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

/// Parse a serialised header map; `None` if it is malformed.
pub fn parse(b: &[u8]) -> Option<Pairs> {
    let mut out = Vec::new();
    walk(b, |k, v| out.push((k.to_vec(), v.to_vec())))?;
    Some(out)
}

/// Parse a serialised header map into `pool`, reusing the buffers a
/// previous request left there: after the first requests, reading the
/// headers allocates nothing. Returns how many pairs of `pool` are this
/// map's (0 if it is malformed: then the request is served as one without
/// headers, as when the host cannot give them).
pub fn parse_into(b: &[u8], pool: &mut Pairs) -> usize {
    let mut n = 0usize;
    let ok = walk(b, |k, v| {
        match pool.get_mut(n) {
            Some((name, value)) => {
                name.clear();
                name.extend_from_slice(k);
                value.clear();
                value.extend_from_slice(v);
            }
            None => pool.push((k.to_vec(), v.to_vec())),
        }
        n += 1;
    });
    if ok.is_some() {
        n
    } else {
        0
    }
}

/// Largest buffer (name or value) and most pairs a pool keeps after a
/// request: an unusually large request does not keep its memory for the
/// life of the VM.
pub const POOL_KEEP_BYTES: usize = 16 * 1024;
/// See [`POOL_KEEP_BYTES`].
pub const POOL_KEEP_PAIRS: usize = 128;

/// Drop what [`parse_into`] grew beyond [`POOL_KEEP_BYTES`] and
/// [`POOL_KEEP_PAIRS`].
pub fn trim_pool(pool: &mut Pairs) {
    pool.truncate(POOL_KEEP_PAIRS);
    for (name, value) in pool.iter_mut() {
        for b in [name, value] {
            if b.capacity() > POOL_KEEP_BYTES {
                *b = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, parse_into, trim_pool, POOL_KEEP_BYTES, POOL_KEEP_PAIRS};

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

    fn map(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            for part in [k, v] {
                b.extend_from_slice(part);
                b.push(0);
            }
        }
        b
    }

    #[test]
    fn the_pool_is_reused_and_holds_only_this_map() {
        let mut pool = Vec::new();
        let big = map(&[(b"a", b"1"), (b"cookie", b"x=1"), (b"c", b"3")]);
        assert_eq!(parse_into(&big, &mut pool), 3);
        assert_eq!(pool[1], (b"cookie".to_vec(), b"x=1".to_vec()));
        let small = map(&[(b"cookie", b"y")]);
        assert_eq!(parse_into(&small, &mut pool), 1);
        assert_eq!(pool[0], (b"cookie".to_vec(), b"y".to_vec()));
        assert_eq!(Some(pool[..1].to_vec()), parse(&small));
        // Malformed: no headers at all, never a prefix.
        assert_eq!(parse_into(&big[..big.len() - 3], &mut pool), 0);
        assert_eq!(parse_into(&[], &mut pool), 0);
    }

    #[test]
    fn a_large_request_does_not_keep_its_memory() {
        let big = vec![b'x'; POOL_KEEP_BYTES + 1];
        let mut pairs: Vec<(&[u8], &[u8])> = vec![(b"cookie", &big)];
        pairs.extend(std::iter::repeat_n((b"a".as_slice(), b"1".as_slice()), 200));
        let mut pool = Vec::new();
        assert_eq!(parse_into(&map(&pairs), &mut pool), 201);
        trim_pool(&mut pool);
        assert_eq!(pool.len(), POOL_KEEP_PAIRS);
        assert_eq!(pool[0].1.capacity(), 0, "the large value's buffer is gone");
        assert_eq!(
            pool[1],
            (b"a".to_vec(), b"1".to_vec()),
            "small buffers stay"
        );
        // And the pool still serves the next request.
        assert_eq!(parse_into(&map(&[(b"cookie", b"y")]), &mut pool), 1);
        assert_eq!(pool[0], (b"cookie".to_vec(), b"y".to_vec()));
    }
}
