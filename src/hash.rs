//! Stable hashing: FNV-1a over bytes, identical on every platform.
//!
//! Everything that must agree between proxy replicas (the user's bucket, the
//! sticky hash, version ids in the cookie) is derived here from bytes only,
//! never from `usize` or platform-dependent `Hash` impls.

use core::hash::Hasher;
use fnv::FnvHasher;

/// Domain separators, so one key gives independent values for each use.
const DOMAIN_BUCKET: &[u8] = b"sticky-canary/bucket\0";
const DOMAIN_POD: &[u8] = b"sticky-canary/pod\0";
const DOMAIN_KEY: &[u8] = b"sticky-canary/key\0";

/// 64-bit FNV-1a of the concatenation of `parts`.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h = FnvHasher::default();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// 32-bit FNV-1a of `bytes` (version ids in the cookie).
pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The user's bucket in `0..total`: FNV-1a of the seed and the session key.
///
/// `total` must be at least 1. The 64-bit hash is reduced with a
/// multiply-shift, which is as uniform as `%` and cheaper.
pub fn bucket(seed: &[u8], key: &[u8], total: u32) -> u32 {
    let h = fnv64(&[DOMAIN_BUCKET, seed, b"\0", key]);
    // FNV's low bits are weak for short inputs; fold the high half in.
    let mixed = h ^ (h >> 29) ^ (h >> 47);
    ((u128::from(mixed) * u128::from(total.max(1))) >> 64) as u32
}

/// The sticky-hash header value: 16 lowercase hex digits, independent of the
/// bucket, so the pod choice inside a version is uncorrelated with it.
pub fn pod_hash(key: &[u8]) -> [u8; 16] {
    hex16(fnv64(&[DOMAIN_POD, key]))
}

/// A 16-byte session key derived from an external identity (a header, a
/// query parameter, a client address).
pub fn derive_key(source: &[u8]) -> [u8; 16] {
    let a = fnv64(&[DOMAIN_KEY, b"a\0", source]);
    let b = fnv64(&[DOMAIN_KEY, b"b\0", source]);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `v` as 16 lowercase hex digits.
pub fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// `bytes` as lowercase hex, two digits a byte (a session key for people).
///
/// ```
/// assert_eq!(sticky_canary::hash::hex(b"\x00\xff01"), "00ff3031");
/// ```
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(&[b"foo"]), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv32(b""), 0x811c_9dc5);
        assert_eq!(fnv32(b"a"), 0xe40c_292c);
        assert_eq!(fnv32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn parts_concatenate() {
        assert_eq!(fnv64(&[b"fo", b"o"]), fnv64(&[b"foo"]));
    }

    #[test]
    fn bucket_in_range() {
        for total in [1u32, 2, 7, 100, 1000, 1_000_000] {
            for i in 0u32..2000 {
                assert!(bucket(b"", &i.to_be_bytes(), total) < total);
            }
        }
    }

    #[test]
    fn hex16_formats() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex16(0), b"0000000000000000");
    }
}
