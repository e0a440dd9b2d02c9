//! Arbitrary cookie names and values into `Session::open`, with and without
//! keys: never panics; anything that opens re-encodes and re-opens
//! identically; anything freshly encoded opens.
#![no_main]

use arbitrary::Arbitrary;
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sticky_canary::session::{Opened, Origin, SealKey, Session};
use sticky_canary_fuzz::checks::{self, MAX_NOW};
use sticky_canary_fuzz::gen::pool;

#[derive(Arbitrary, Debug)]
enum Value {
    /// Any text.
    Raw(String),
    /// A marker and any text.
    Marked(bool, String),
    /// Bytes, made text as the adapter would see them.
    Bytes(Vec<u8>),
    /// A real cookie, maybe damaged.
    Encoded {
        key: [u8; 16],
        version_id: u32,
        rule: bool,
        expiry: u32,
        endpoint: Option<String>,
        /// Which key seals: index into keys, or none (plain).
        seal: Option<u8>,
        nonce: [u8; 24],
        flip: Option<(u16, u8)>,
        cut: Option<u16>,
        append: Option<String>,
    },
}

/// The input: the cookie value, then optionally NUL and control bytes:
/// the first picks the keys (0 none, 1 golden `[7; 32]`, 2 golden rotated
/// `[8; 32], [7; 32]`, 3 from the rest), the second the cookie name from
/// the pool, the rest is `Control`. So real cookie values are seeds as
/// they are (tests/golden.rs: `<value>\0\x01\x00` opens the sealed one).
#[derive(Arbitrary, Debug, Default)]
struct Control {
    now: Option<u64>,
    keys: Vec<[u8; 32]>,
    name: Option<String>,
    value: Option<Value>,
}

fuzz_target!(|data: &[u8]| {
    let (raw, ks, keys, name, rest) = checks::cookie_open_input(data, pool::COOKIE);
    let ctl = Control::arbitrary_take_rest(Unstructured::new(rest)).unwrap_or_default();
    let name = ctl.name.clone().unwrap_or(name);
    let keys: Vec<SealKey> = if ks == 3 {
        ctl.keys.iter().take(9).map(|k| SealKey(*k)).collect()
    } else {
        keys
    };
    let now = ctl.now.unwrap_or(1_800_000_000) % (MAX_NOW + 1);
    let raw_value = Value::Raw(raw);
    let value_in = ctl.value.as_ref().unwrap_or(&raw_value);
    let (value, fresh) = match value_in {
        Value::Raw(s) => (s.clone(), None),
        Value::Marked(sealed, s) => (format!("{}{s}", if *sealed { '2' } else { '1' }), None),
        Value::Bytes(b) => (String::from_utf8_lossy(b).into_owned(), None),
        Value::Encoded {
            key,
            version_id,
            rule,
            expiry,
            endpoint,
            seal,
            nonce,
            flip,
            cut,
            append,
        } => {
            let s = Session {
                key: *key,
                version_id: *version_id,
                origin: if *rule { Origin::Rule } else { Origin::Weight },
                expiry: *expiry,
                endpoint: endpoint.clone(),
            };
            let (seal_keys, index) = match seal {
                Some(i) if !keys.is_empty() => {
                    let i = usize::from(*i) % keys.len();
                    (vec![keys[i].clone()], Some(i))
                }
                _ => (Vec::new(), None),
            };
            let mut v = s.encode(&name, &seal_keys, nonce).into_bytes();
            let intact = flip.is_none() && cut.is_none() && append.is_none();
            if let Some((i, x)) = flip {
                let i = usize::from(*i) % v.len();
                v[i] ^= x | 1;
            }
            if let Some(c) = cut {
                v.truncate(usize::from(*c) % (v.len() + 1));
            }
            if let Some(a) = append {
                v.extend_from_slice(a.as_bytes());
            }
            let v = String::from_utf8_lossy(&v).into_owned();
            // What must open: intact, current, sealed under one of the keys
            // given to open (or plain when none are), endpoint as encoded.
            let ep_kept = endpoint
                .as_ref()
                .is_none_or(|e| !e.is_empty() && e.len() <= 64);
            let opens = intact
                && u64::from(*expiry) > now
                && (index.is_some() || keys.is_empty())
                && ep_kept;
            let want = Session {
                endpoint: endpoint.clone().filter(|e| !e.is_empty() && e.len() <= 64),
                ..s
            };
            (v, opens.then_some(want))
        }
    };
    let got = checks::check_cookie_open(&value, &name, &keys, now);
    if let Some(want) = fresh {
        assert_eq!(got.as_ref(), Some(&want), "a fresh cookie opens: {value}");
        match Session::open(&value, &name, &keys, now) {
            Opened::Valid { session, .. } => assert_eq!(session, want),
            Opened::Invalid => panic!("fresh cookie invalid"),
        }
    }
});
