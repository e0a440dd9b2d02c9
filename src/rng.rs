//! Randomness for session keys and cookie nonces, cheaply: a ChaCha20
//! keystream seeded from the host's randomness (WASI `random_get`) and
//! reseeded every [`RESEED_AFTER`] fills.
//!
//! Why: in Envoy one `random_get` costs about 5,100 instructions (measured
//! by the bench's probe filter), as much as the rest of a new user's
//! decision; a new user needs a key, a sealed cookie a nonce too. ChaCha20
//! is the generator of Linux's and the BSDs' kernels; 16 bytes of keystream
//! cost a few hundred instructions.
//!
//! What the values need: keys only have to differ between users (they
//! pick a bucket; a client can send any plain cookie it likes anyway) and
//! nonces only have to be unique under a key (XChaCha20-Poly1305's 24
//! bytes). A keystream seeded with 256 bits from the host gives both. The
//! seed is drawn on the first fill, so every VM (Envoy runs one per
//! worker, each with fresh memory) draws its own.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

/// Randomness for new session keys and cookie nonces.
pub trait Entropy {
    /// Fill `buf` with random bytes; `false` if no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// Fills between two seeds from the host.
pub const RESEED_AFTER: u32 = 1 << 16;

/// A [`ChaCha20`] keystream over a host source of randomness.
pub struct Reseeding<S: FnMut(&mut [u8]) -> bool> {
    source: S,
    cipher: Option<ChaCha20>,
    left: u32,
}

impl<S: FnMut(&mut [u8]) -> bool> Reseeding<S> {
    /// A generator that seeds itself from `source` (which fills a buffer
    /// with random bytes or says `false`) on first use.
    pub fn new(source: S) -> Self {
        Reseeding {
            source,
            cipher: None,
            left: 0,
        }
    }

    fn reseed(&mut self) -> bool {
        let mut seed = [0u8; 44];
        let ok = (self.source)(&mut seed);
        self.cipher = ok.then(|| {
            let (key, nonce) = seed.split_at(32);
            ChaCha20::new(key.into(), nonce.into())
        });
        seed.fill(0);
        self.left = RESEED_AFTER;
        ok
    }
}

impl<S: FnMut(&mut [u8]) -> bool> Entropy for Reseeding<S> {
    /// `false` (and nothing written that counts) when the host gives no
    /// randomness: the caller's fallback applies, as with `random_get`.
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        if (self.left == 0 || self.cipher.is_none()) && !self.reseed() {
            return false;
        }
        self.left = self.left.saturating_sub(1);
        buf.fill(0);
        match self.cipher.as_mut().map(|c| c.try_apply_keystream(buf)) {
            Some(Ok(())) => true,
            // The keystream ran out (2^38 bytes; unreachable between
            // reseeds): take a fresh seed.
            _ => {
                buf.fill(0);
                self.reseed()
                    && self
                        .cipher
                        .as_mut()
                        .is_some_and(|c| c.try_apply_keystream(buf).is_ok())
            }
        }
    }
}

/// Deterministic randomness: SplitMix64 from a seed, the same bytes on
/// every platform. For simulations and repeatable explanations (the
/// command-line tool's `--random-seed` and `--seed`) and for tests; never
/// for real sessions, whose keys must not be guessable ([`Reseeding`]).
///
/// ```
/// use sticky_canary::rng::{Entropy, SplitMix64};
///
/// let (mut a, mut b) = (SplitMix64(7), SplitMix64(7));
/// let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
/// assert!(a.fill(&mut x) && b.fill(&mut y));
/// assert_eq!(x, y);
/// assert!((0.0..1.0).contains(&a.unit()));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Entropy for SplitMix64 {
    /// Eight bytes of each [`SplitMix64::next_u64`], little-endian.
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn counting(calls: Rc<Cell<u32>>, byte: u8) -> impl FnMut(&mut [u8]) -> bool {
        move |b: &mut [u8]| {
            calls.set(calls.get() + 1);
            b.fill(byte.wrapping_add(calls.get() as u8));
            true
        }
    }

    #[test]
    fn seeds_once_then_reseeds_after_the_limit() {
        let calls = Rc::new(Cell::new(0));
        let mut r = Reseeding::new(counting(calls.clone(), 1));
        assert_eq!(calls.get(), 0, "no seed before the first fill");
        let mut seen = std::collections::HashSet::new();
        let mut b = [0u8; 16];
        for _ in 0..RESEED_AFTER {
            assert!(r.fill(&mut b));
            assert!(seen.insert(b), "a repeated value");
        }
        assert_eq!(calls.get(), 1);
        assert!(r.fill(&mut b));
        assert!(seen.insert(b));
        assert_eq!(calls.get(), 2, "a fresh seed after RESEED_AFTER fills");
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let (a, b) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (mut x, mut y) = (
            Reseeding::new(counting(a, 1)),
            Reseeding::new(counting(b, 2)),
        );
        let (mut p, mut q) = ([0u8; 24], [0u8; 24]);
        assert!(x.fill(&mut p) && y.fill(&mut q));
        assert_ne!(p, q);
        assert_ne!(p, [0u8; 24]);
    }

    #[test]
    fn no_host_randomness_is_reported() {
        let mut r = Reseeding::new(|_: &mut [u8]| false);
        let mut b = [0u8; 16];
        assert!(!r.fill(&mut b));
        assert!(!r.fill(&mut b), "and retried on the next fill");
    }
}
