//! The session cookie: one versioned format for the remembered version, the
//! session key, the pinned endpoint, an expiry and its protection.
//!
//! # Wire format
//!
//! The cookie value is one marker character followed by unpadded base64url:
//!
//! | marker | meaning | body |
//! |---|---|---|
//! | `1` | format 1, **plain** (no secret configured) | `payload ‖ check` where `check` is 8 bytes of FNV-1a over the cookie name and payload: it catches corruption, not forgery |
//! | `2` | format 1, **sealed** (secrets configured) | `nonce(24) ‖ XChaCha20-Poly1305(payload) ‖ tag(16)`, with the cookie name as associated data |
//!
//! The payload (format 1), all integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format = 1 |
//! | 1 | flags: bit 0 = version chosen by a rule, bit 1 = endpoint present |
//! | 4 | expiry, Unix seconds |
//! | 4 | version id: FNV-1a 32 of the version name |
//! | 16 | session key |
//! | 1 + n | endpoint, `ip:port` text, n <= 64 (only with bit 1) |
//!
//! Any other marker, a bad length, a failed check or tag, an unknown format
//! byte or a past expiry makes the cookie absent, and a new one replaces it.
//! A later format takes a new marker, so this one stays readable.

use crate::hash::fnv64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Longest cookie value the filter will try to read; anything longer is
/// treated as absent without being decoded.
pub const MAX_COOKIE_VALUE: usize = 256;
/// Longest endpoint text (`[ipv6]:port` fits easily).
pub const MAX_ENDPOINT: usize = 64;

const FORMAT: u8 = 1;
const FLAG_RULE: u8 = 1;
const FLAG_ENDPOINT: u8 = 2;
const FIXED: usize = 1 + 1 + 4 + 4 + 16;
const CHECK: usize = 8;
/// The longest payload: the fixed part, the endpoint's length byte and
/// the longest endpoint.
const MAX_PAYLOAD: usize = FIXED + 1 + MAX_ENDPOINT;
const NONCE: usize = 24;
const TAG: usize = 16;
const AAD_PREFIX: &[u8] = b"sticky-canary/cookie/1\0";

/// Why a session cookie was not used (`cause` label of
/// `sticky_canary_cookie_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a cookie of ours at all: bad marker, base64, length or format.
    Garbled,
    /// Its check or seal does not verify under any configured key (edited,
    /// sealed under a retired key, or plain where sealing is on).
    Forged,
    /// Past its expiry.
    Expired,
    /// Made for another identity than the configured key source gives.
    OtherKey,
    /// Sent in copies that disagree, or in too many copies.
    Duplicated,
}

impl Rejection {
    /// Every cause, in label order.
    pub const ALL: [Rejection; 5] = [
        Rejection::Garbled,
        Rejection::Forged,
        Rejection::Expired,
        Rejection::OtherKey,
        Rejection::Duplicated,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Garbled => "garbled",
            Rejection::Forged => "forged",
            Rejection::Expired => "expired",
            Rejection::OtherKey => "other_key",
            Rejection::Duplicated => "duplicated",
        }
    }
}

/// Why the version in a session was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// By the weighted bucket: it follows the bucket when weights change.
    Weight,
    /// By an explicit rule: it stays until a rule says otherwise.
    Rule,
}

impl Origin {
    /// `weight` or `rule`.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Weight => "weight",
            Origin::Rule => "rule",
        }
    }
}

/// The content of a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session key: random for generated sessions, derived otherwise.
    pub key: [u8; 16],
    /// Id of the remembered version ([`crate::hash::fnv32`] of its name).
    pub version_id: u32,
    /// How the remembered version was chosen.
    pub origin: Origin,
    /// Unix seconds after which the session is void.
    pub expiry: u32,
    /// The pinned endpoint (`ip:port`), persistent mode only.
    pub endpoint: Option<String>,
}

/// A key that seals and opens cookies (32 bytes).
#[derive(Clone)]
pub struct SealKey(pub [u8; 32]);

impl core::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// What came out of reading a cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Valid and current. `stale_key` is set when a key other than the first
    /// opened it, so the cookie should be re-sealed.
    Valid {
        /// The session.
        session: Session,
        /// Opened with a rotated-out key.
        stale_key: bool,
    },
    /// Not a usable cookie (garbled, forged, unsigned where signing is on,
    /// expired, or too long).
    Invalid,
}

/// Characters of unpadded base64 for `n` bytes.
fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

impl Session {
    /// The payload in `buf` (on the stack: no allocation per cookie);
    /// returns its length. `buf` leaves room for the plain check after it.
    fn payload_into(&self, buf: &mut [u8; MAX_PAYLOAD + CHECK]) -> usize {
        let ep = self
            .endpoint
            .as_deref()
            .filter(|e| !e.is_empty() && e.len() <= MAX_ENDPOINT);
        let mut flags = 0;
        if self.origin == Origin::Rule {
            flags |= FLAG_RULE;
        }
        if ep.is_some() {
            flags |= FLAG_ENDPOINT;
        }
        let mut n = 0usize;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = buf.get_mut(n..n + bytes.len()) {
                dst.copy_from_slice(bytes);
                n += bytes.len();
            }
        };
        put(&[FORMAT, flags]);
        put(&self.expiry.to_be_bytes());
        put(&self.version_id.to_be_bytes());
        put(&self.key);
        if let Some(ep) = ep {
            put(&[ep.len() as u8]);
            put(ep.as_bytes());
        }
        n
    }

    fn from_payload(p: &[u8]) -> Option<Session> {
        if p.len() < FIXED || p[0] != FORMAT {
            return None;
        }
        let flags = p[1];
        if flags & !(FLAG_RULE | FLAG_ENDPOINT) != 0 {
            return None;
        }
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_be_bytes(p.get(i..i + 4)?.try_into().ok()?))
        };
        let expiry = u32_at(2)?;
        let version_id = u32_at(6)?;
        let key: [u8; 16] = p.get(10..26)?.try_into().ok()?;
        let endpoint = if flags & FLAG_ENDPOINT != 0 {
            let len = usize::from(*p.get(FIXED)?);
            let text = p.get(FIXED + 1..FIXED + 1 + len)?;
            if len == 0 || len > MAX_ENDPOINT || p.len() != FIXED + 1 + len {
                return None;
            }
            Some(String::from_utf8(text.to_vec()).ok()?)
        } else {
            if p.len() != FIXED {
                return None;
            }
            None
        };
        let origin = if flags & FLAG_RULE != 0 {
            Origin::Rule
        } else {
            Origin::Weight
        };
        Some(Session {
            key,
            version_id,
            origin,
            expiry,
            endpoint,
        })
    }

    /// Encode as a cookie value: sealed under `keys[0]` when keys are given
    /// (`nonce` must be fresh random bytes), plain otherwise.
    pub fn encode(&self, cookie_name: &str, keys: &[SealKey], nonce: &[u8; NONCE]) -> String {
        let mut out = String::new();
        self.encode_into(cookie_name, keys, nonce, &mut out);
        out
    }

    /// [`Session::encode`], appended to `out` (the `Set-Cookie` being
    /// rendered: no separate value string).
    pub fn encode_into(
        &self,
        cookie_name: &str,
        keys: &[SealKey],
        nonce: &[u8; NONCE],
        out: &mut String,
    ) {
        let mut buf = [0u8; MAX_PAYLOAD + CHECK];
        let n = self.payload_into(&mut buf);
        let (payload, rest) = buf.split_at_mut(n);
        let payload: &[u8] = payload;
        match keys.first() {
            None => {
                let check = fnv64(&[AAD_PREFIX, cookie_name.as_bytes(), b"\0", payload]);
                if let Some(dst) = rest.get_mut(..CHECK) {
                    dst.copy_from_slice(&check.to_be_bytes());
                }
                let body = buf.get(..n + CHECK).unwrap_or_default();
                out.reserve(1 + base64_len(body.len()));
                out.push('1');
                URL_SAFE_NO_PAD.encode_string(body, out);
            }
            Some(key) => {
                let aad = aad(cookie_name);
                let cipher = XChaCha20Poly1305::new((&key.0).into());
                // Encryption of a short buffer with a valid key cannot fail;
                // if it ever did, an empty value is simply treated as absent.
                let sealed = cipher
                    .encrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: payload,
                            aad: &aad,
                        },
                    )
                    .unwrap_or_default();
                let mut body = Vec::with_capacity(NONCE + sealed.len());
                body.extend_from_slice(nonce);
                body.extend_from_slice(&sealed);
                out.reserve(1 + base64_len(body.len()));
                out.push('2');
                URL_SAFE_NO_PAD.encode_string(&body, out);
            }
        }
    }

    /// Read a cookie value. With `keys` empty only plain cookies are
    /// accepted; with keys only sealed ones (any key opens, the first is
    /// current). Expired sessions (`expiry <= now`) are invalid.
    pub fn open(value: &str, cookie_name: &str, keys: &[SealKey], now: u64) -> Opened {
        match Self::open_why(value, cookie_name, keys, now) {
            Ok((session, stale_key)) => Opened::Valid { session, stale_key },
            Err(_) => Opened::Invalid,
        }
    }

    /// Like [`Session::open`], saying why a cookie is not usable: what the
    /// filter does with every copy of the session cookie. The `bool` is
    /// set when a key other than the first opened it (re-seal it).
    pub fn open_why(
        value: &str,
        cookie_name: &str,
        keys: &[SealKey],
        now: u64,
    ) -> Result<(Session, bool), Defect> {
        let read = Self::read(value, cookie_name, keys)?;
        if u64::from(read.session.expiry) <= now {
            return Err(Defect::Expired(read.session.expiry));
        }
        Ok((read.session, read.key.is_some_and(|k| k > 0)))
    }

    /// Open a cookie value without judging its expiry: the session, its
    /// format and the key that opened it, or the first [`Defect`] found.
    /// [`Session::open_why`] is this plus the expiry; the command-line tool
    /// calls it to say what a cookie holds and why it does not open.
    ///
    /// ```
    /// use sticky_canary::session::{Defect, Format, Origin, SealKey, Session};
    ///
    /// let s = Session { key: [7; 16], version_id: 1, origin: Origin::Weight, expiry: 60, endpoint: None };
    /// let keys = [SealKey([1; 32]), SealKey([2; 32])];
    /// let sealed = s.encode("sc", &keys[1..], &[0; 24]);
    /// let read = Session::read(&sealed, "sc", &keys).unwrap();
    /// assert_eq!((read.format, read.key), (Format::Sealed, Some(1)));
    /// assert_eq!(Session::read(&sealed, "sc", &[]).err(), Some(Defect::SealedWherePlain));
    /// assert_eq!(Session::read("éAAAA", "sc", &[]).err(), Some(Defect::UnknownFormat));
    /// assert_eq!(Session::open_why(&sealed, "sc", &keys, 60).err(), Some(Defect::Expired(60)));
    /// ```
    pub fn read(value: &str, cookie_name: &str, keys: &[SealKey]) -> Result<Read, Defect> {
        if value.len() > MAX_COOKIE_VALUE {
            return Err(Defect::TooLong);
        }
        if value.len() < 2 {
            return Err(Defect::TooShort);
        }
        // The marker is one ASCII byte, so the body starts at byte 1; a
        // value that starts otherwise (a character of several bytes too:
        // slicing it at 1 panicked, found by fuzzing) is not ours.
        let format = match value.as_bytes().first() {
            Some(b'1') => Format::Plain,
            Some(b'2') => Format::Sealed,
            _ => return Err(Defect::UnknownFormat),
        };
        let body = value.get(1..).ok_or(Defect::UnknownFormat)?;
        // Decoded on the stack: MAX_COOKIE_VALUE base64 characters are at
        // most 3/4 as many bytes.
        let mut buf = [0u8; MAX_COOKIE_VALUE];
        let n = URL_SAFE_NO_PAD
            .decode_slice(body, &mut buf)
            .map_err(|_| Defect::NotBase64)?;
        let body = buf.get(..n).ok_or(Defect::NotBase64)?;
        match (format, keys.is_empty()) {
            (Format::Plain, true) => {
                let split = body.len().checked_sub(CHECK).ok_or(Defect::Malformed)?;
                if split < FIXED {
                    return Err(Defect::Malformed);
                }
                let (payload, check) = body.split_at(split);
                let want = fnv64(&[AAD_PREFIX, cookie_name.as_bytes(), b"\0", payload]);
                if check != want.to_be_bytes() {
                    return Err(Defect::CheckFails);
                }
                let session = Self::from_payload(payload).ok_or(Defect::Malformed)?;
                Ok(Read {
                    session,
                    format,
                    key: None,
                })
            }
            (Format::Sealed, false) => {
                if body.len() < NONCE + TAG + FIXED {
                    return Err(Defect::Malformed);
                }
                let (nonce, sealed) = body.split_at(NONCE);
                let aad = aad(cookie_name);
                keys.iter()
                    .enumerate()
                    .find_map(|(i, key)| {
                        let cipher = XChaCha20Poly1305::new((&key.0).into());
                        let payload = cipher
                            .decrypt(
                                XNonce::from_slice(nonce),
                                Payload {
                                    msg: sealed,
                                    aad: &aad,
                                },
                            )
                            .ok()?;
                        Some(Read {
                            session: Self::from_payload(&payload)?,
                            format,
                            key: Some(i),
                        })
                    })
                    .ok_or(Defect::NoKeyOpens)
            }
            (Format::Plain, false) => Err(Defect::PlainWhereSealed),
            (Format::Sealed, true) => Err(Defect::SealedWherePlain),
        }
    }
}

/// The two forms of a session cookie value, told apart by its first
/// character (the format marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Marker `1`: readable, with an integrity check (no secrets configured).
    Plain,
    /// Marker `2`: sealed with XChaCha20-Poly1305 (secrets configured).
    Sealed,
}

impl Format {
    /// The format of a cookie value, by its marker; `None` for a marker
    /// the filter does not know (another cookie, or a newer format).
    pub fn of(value: &str) -> Option<Format> {
        value.chars().next().and_then(Format::of_marker)
    }

    fn of_marker(c: char) -> Option<Format> {
        match c {
            '1' => Some(Format::Plain),
            '2' => Some(Format::Sealed),
            _ => None,
        }
    }

    /// The marker character.
    pub fn marker(self) -> char {
        match self {
            Format::Plain => '1',
            Format::Sealed => '2',
        }
    }

    /// `plain` or `sealed`.
    pub fn label(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Sealed => "sealed",
        }
    }
}

/// A cookie value that opened, its expiry not yet judged (see
/// [`Session::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// What it holds.
    pub session: Session,
    /// Plain or sealed.
    pub format: Format,
    /// The index of the key that opened it (`None`: plain, no key).
    pub key: Option<usize>,
}

/// Why a cookie value does not open (see [`Session::read`]); each maps to
/// the `cause` label the filter counts it under ([`Defect::rejection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Longer than [`MAX_COOKIE_VALUE`]: not even decoded.
    TooLong,
    /// Shorter than two bytes.
    TooShort,
    /// The first character is not a format marker the filter knows: not a
    /// cookie of ours, or a newer format.
    UnknownFormat,
    /// The rest is not unpadded base64url.
    NotBase64,
    /// It decodes, but not to a session of this format (a bad length,
    /// unknown flags or format byte, a bad endpoint).
    Malformed,
    /// A plain cookie where the policy seals cookies (issued before
    /// secrets were configured, or made up).
    PlainWhereSealed,
    /// A sealed cookie where the policy has no secrets.
    SealedWherePlain,
    /// A plain cookie whose check does not match: altered, or issued
    /// under another cookie name (the name is part of the check).
    CheckFails,
    /// A sealed cookie that none of the keys opens: sealed with another
    /// key, under another cookie name (sealed in), or altered.
    NoKeyOpens,
    /// It opens, but expired at these Unix seconds.
    Expired(u32),
}

impl Defect {
    /// The `cause` label the filter counts this under.
    pub fn rejection(self) -> Rejection {
        match self {
            Defect::TooLong
            | Defect::TooShort
            | Defect::UnknownFormat
            | Defect::NotBase64
            | Defect::Malformed => Rejection::Garbled,
            Defect::PlainWhereSealed
            | Defect::SealedWherePlain
            | Defect::CheckFails
            | Defect::NoKeyOpens => Rejection::Forged,
            Defect::Expired(_) => Rejection::Expired,
        }
    }
}

/// Sealed cookie values that opened recently, for one policy (a bounded,
/// per-VM cache). A returning user sends the same value on every request
/// until it is renewed, and opening it costs an AEAD decryption; a hit
/// costs a hash lookup. Only values that opened are stored, so a client
/// cannot fill it with garbage, and the expiry is still checked on every
/// hit. When full it is emptied.
#[derive(Debug, Default, Clone)]
pub struct OpenedCache {
    map: std::cell::RefCell<fnv::FnvHashMap<Box<str>, (Session, bool)>>,
}

impl OpenedCache {
    /// How many opened values one policy keeps.
    pub const CAPACITY: usize = 1024;

    /// [`Session::open_why`], through the cache when `keys` seal (plain
    /// cookies are cheap to check and are not cached).
    pub fn open(
        &self,
        value: &str,
        cookie_name: &str,
        keys: &[SealKey],
        now: u64,
    ) -> Result<(Session, bool), Defect> {
        let sealed = !keys.is_empty();
        if sealed {
            if let Ok(map) = self.map.try_borrow() {
                if let Some((session, stale)) = map.get(value) {
                    return if u64::from(session.expiry) > now {
                        Ok((session.clone(), *stale))
                    } else {
                        Err(Defect::Expired(session.expiry))
                    };
                }
            }
        }
        let opened = Session::open_why(value, cookie_name, keys, now)?;
        if sealed {
            if let Ok(mut map) = self.map.try_borrow_mut() {
                if map.len() >= Self::CAPACITY {
                    map.clear();
                }
                map.insert(value.into(), opened.clone());
            }
        }
        Ok(opened)
    }

    /// How many values are cached.
    pub fn len(&self) -> usize {
        self.map.try_borrow().map_or(0, |m| m.len())
    }

    /// Is the cache empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn aad(cookie_name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + cookie_name.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(cookie_name.as_bytes());
    aad
}

/// Bytes of randomness [`Session::encode`] needs for a nonce.
pub const NONCE_LEN: usize = NONCE;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(endpoint: Option<&str>) -> Session {
        Session {
            key: *b"0123456789abcdef",
            version_id: 0xdead_beef,
            origin: Origin::Rule,
            expiry: 2_000_000_000,
            endpoint: endpoint.map(str::to_owned),
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn plain_roundtrip() {
        let s = sample(None);
        let v = s.encode("c", &[], &[0; 24]);
        assert!(v.starts_with('1'));
        assert_eq!(
            Session::open(&v, "c", &[], NOW),
            Opened::Valid {
                session: s,
                stale_key: false
            }
        );
    }

    #[test]
    fn plain_rejects_other_name_and_bitflips() {
        let v = sample(None).encode("c", &[], &[0; 24]);
        assert_eq!(Session::open(&v, "d", &[], NOW), Opened::Invalid);
        let mut bytes = v.into_bytes();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        let v = String::from_utf8(bytes).unwrap();
        assert_eq!(Session::open(&v, "c", &[], NOW), Opened::Invalid);
    }

    #[test]
    fn sealed_roundtrip_hides_endpoint_and_rotates() {
        let k1 = SealKey([1; 32]);
        let k2 = SealKey([2; 32]);
        let s = sample(Some("10.0.0.7:8080"));
        let v = s.encode("c", std::slice::from_ref(&k1), &[9; 24]);
        assert!(v.starts_with('2'));
        let raw = URL_SAFE_NO_PAD.decode(&v[1..]).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"10.0.0.7"));
        assert_eq!(
            Session::open(&v, "c", std::slice::from_ref(&k1), NOW),
            Opened::Valid {
                session: s.clone(),
                stale_key: false
            }
        );
        // Rotation: new key first, old key still opens, marked stale.
        assert_eq!(
            Session::open(&v, "c", &[k2.clone(), k1.clone()], NOW),
            Opened::Valid {
                session: s,
                stale_key: true
            }
        );
        assert_eq!(Session::open(&v, "c", &[k2], NOW), Opened::Invalid);
        // A sealed cookie is bound to its cookie name.
        assert_eq!(Session::open(&v, "other", &[k1], NOW), Opened::Invalid);
    }

    #[test]
    fn signing_mode_must_match() {
        let k = SealKey([1; 32]);
        let plain = sample(None).encode("c", &[], &[0; 24]);
        let sealed = sample(None).encode("c", std::slice::from_ref(&k), &[0; 24]);
        assert_eq!(Session::open(&plain, "c", &[k], NOW), Opened::Invalid);
        assert_eq!(Session::open(&sealed, "c", &[], NOW), Opened::Invalid);
    }

    #[test]
    fn expiry_is_checked() {
        let v = sample(None).encode("c", &[], &[0; 24]);
        assert_eq!(Session::open(&v, "c", &[], 2_000_000_000), Opened::Invalid);
        assert!(matches!(
            Session::open(&v, "c", &[], 1_999_999_999),
            Opened::Valid { .. }
        ));
    }

    #[test]
    fn garbage_is_invalid() {
        for v in [
            "",
            "1",
            "2",
            "x",
            "1!!!!",
            "3AAAA",
            &"1".repeat(300),
            "1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            // A first character of more than one byte (found by fuzzing:
            // split_at(1) panicked there).
            "éAAAA",
            "Ω",
        ] {
            assert_eq!(Session::open(v, "c", &[], NOW), Opened::Invalid, "{v}");
            assert_eq!(
                Session::open(v, "c", &[SealKey([0; 32])], NOW),
                Opened::Invalid,
                "{v}"
            );
        }
    }

    #[test]
    fn defects_say_why_and_map_to_the_counted_cause() {
        use Rejection::{Expired, Forged, Garbled};
        let k = SealKey([1; 32]);
        let plain = sample(None).encode("c", &[], &[0; 24]);
        let sealed = sample(None).encode("c", std::slice::from_ref(&k), &[0; 24]);
        let mut flipped = plain.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let long = "1".repeat(MAX_COOKIE_VALUE + 1);
        let no_key: &[SealKey] = &[];
        let cases: &[(&str, &[SealKey], u64, Defect, Rejection)] = &[
            (
                &plain,
                no_key,
                2_000_000_000,
                Defect::Expired(2_000_000_000),
                Expired,
            ),
            (&long, no_key, NOW, Defect::TooLong, Garbled),
            ("1", no_key, NOW, Defect::TooShort, Garbled),
            ("é", no_key, NOW, Defect::UnknownFormat, Garbled),
            ("", no_key, NOW, Defect::TooShort, Garbled),
            ("9AAAA", no_key, NOW, Defect::UnknownFormat, Garbled),
            ("éAAAA", no_key, NOW, Defect::UnknownFormat, Garbled),
            ("1!!!", no_key, NOW, Defect::NotBase64, Garbled),
            ("1AAAA", no_key, NOW, Defect::Malformed, Garbled),
            (
                "2AAAAAAAA",
                std::slice::from_ref(&k),
                NOW,
                Defect::Malformed,
                Garbled,
            ),
            (&flipped, no_key, NOW, Defect::CheckFails, Forged),
            (
                &plain,
                std::slice::from_ref(&k),
                NOW,
                Defect::PlainWhereSealed,
                Forged,
            ),
            (
                &sealed,
                &[SealKey([2; 32])],
                NOW,
                Defect::NoKeyOpens,
                Forged,
            ),
            (&sealed, no_key, NOW, Defect::SealedWherePlain, Forged),
        ];
        for (value, keys, now, defect, cause) in cases {
            let got = Session::open_why(value, "c", keys, *now).err();
            assert_eq!(got, Some(*defect), "{value}");
            assert_eq!(defect.rejection(), *cause, "{value}");
        }
        assert_eq!(Session::open_why(&plain, "c", &[], NOW).err(), None);
        assert_eq!(
            Session::read(&plain, "c", &[]).map(|r| (r.format, r.key)),
            Ok((Format::Plain, None))
        );
        assert_eq!(Format::of(&sealed), Some(Format::Sealed));
        assert_eq!(Format::of("éAAAA"), None);
    }

    #[test]
    fn the_cache_opens_like_open_and_checks_expiry() {
        let k = SealKey([1; 32]);
        let keys = std::slice::from_ref(&k);
        let v = sample(Some("10.0.0.1:80")).encode("c", keys, &[3; 24]);
        let cache = OpenedCache::default();
        for _ in 0..2 {
            assert_eq!(
                cache.open(&v, "c", keys, NOW),
                Session::open_why(&v, "c", keys, NOW)
            );
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.open(&v, "c", keys, 2_000_000_000),
            Err(Defect::Expired(2_000_000_000))
        );
        assert_eq!(
            cache.open("2AAAAAAAA", "c", keys, NOW),
            Err(Defect::Malformed)
        );
        assert_eq!(cache.len(), 1, "only values that opened are kept");
        for i in 0..OpenedCache::CAPACITY + 1 {
            let mut s = sample(None);
            s.key[0] = i as u8;
            s.key[1] = (i >> 8) as u8;
            let v = s.encode("c", keys, &[4; 24]);
            assert!(cache.open(&v, "c", keys, NOW).is_ok());
        }
        assert!(cache.len() <= OpenedCache::CAPACITY);
        let plain = sample(None).encode("c", &[], &[0; 24]);
        assert!(cache.open(&plain, "c", &[], NOW).is_ok());
    }

    #[test]
    fn cookie_stays_small() {
        let v =
            sample(Some("[2001:db8::1234:5678]:65535")).encode("c", &[SealKey([1; 32])], &[0; 24]);
        assert!(v.len() < 140, "{} bytes", v.len());
        assert!(sample(None).encode("c", &[], &[0; 24]).len() < 60);
    }
}
