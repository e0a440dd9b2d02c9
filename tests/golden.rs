//! Golden vectors: fixed inputs -> exact bucket numbers, pod hashes, version
//! ids, cookie values and Set-Cookie headers.
//!
//! The numbers were computed once natively (x86_64) and hard-coded. The same
//! file runs inside wasm32-wasip1 (`cargo test --target wasm32-wasip1
//! --tests`), so a pass there proves the filter Envoy loads puts every user
//! in the same bucket and on the same pod as any other replica, and reads
//! cookies that any replica wrote. If one of these changes, every user in
//! production is reshuffled or loses their session: that is a breaking
//! change, never a test to update casually.
//!
//! It also runs on wasm32-unknown-unknown under wasm-bindgen-test
//! (`tests/support/wasm-bindgen-test.sh`, which runs `cargo test --target
//! wasm32-unknown-unknown --test golden` with `wasm-bindgen-test-runner` in
//! Node). There libtest's `#[test]` is not run at all, so each test carries
//! `#[wasm_bindgen_test]` on that target and `#[test]` everywhere else
//! (wasm-bindgen-test's own `unsupported = test` only falls back to
//! `#[test]` off wasm, which would leave wasm32-wasip1 with no tests).

// Test code: failing loudly is the point, and the tables of tuples are the
// tests. (clippy.toml's allow-*-in-tests covers #[test] functions only, not
// the helpers and tables beside them.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use common::*;
use sticky_canary::hash;
use sticky_canary::session::{Opened, Origin, SealKey, Session};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (identity, derive_key, bucket/100, bucket/1000, bucket/7,
///  bucket/100 with seed "spring-sale", bucket/1000000, pod hash)
type UserRow = (
    &'static str,
    &'static str,
    u32,
    u32,
    u32,
    u32,
    u32,
    &'static str,
);

#[rustfmt::skip]
const USERS: &[UserRow] = &[
    ("alice", "38bd300a4c59624a0f0a767962471fbb", 78, 788, 5, 89, 788239, "f93e10b266a9d4c0"),
    ("bob", "87806ff5203210751f2e68c709377720", 90, 902, 6, 56, 902401, "772a7a461104e65e"),
    ("carol", "d13e613072d745071c6f4c2e7f41c8c6", 94, 947, 6, 2, 947157, "8fbe78f1fd781ffb"),
    ("dave", "ee7503b550bb5c4002c98d41af2e34b3", 44, 445, 3, 89, 445174, "def9464e7d5b1c6c"),
    ("erin", "8c7adbc10c143eb632b38d3af0fde525", 85, 854, 5, 89, 854732, "5912245d8b5b0a44"),
    ("frank", "f82b5d93059dfcdad5d4a093fbfcb987", 76, 762, 5, 37, 762308, "8d7fd3050082e72d"),
    ("user-1", "a5758728e9f325e3211ed7822b204958", 77, 772, 5, 46, 772412, "13192c001b074b36"),
    ("user-2", "a5758828e9f32796211eda822b204e71", 93, 931, 6, 50, 931204, "952cd62d989601f9"),
    ("user-42", "19e491858831bc0a67c2962f47eb281f", 54, 542, 3, 55, 542436, "c0da1cdb04acdccc"),
    ("10.0.0.1", "9d184ee8a630790251f329281f057611", 46, 467, 3, 91, 467953, "01f75a361e651fe1"),
    ("2001:db8::1", "89453dc20dc4c9124b7059ea50d66463", 14, 144, 1, 76, 144235, "6a7c9913c7f751af"),
    ("", "1053a726f45be40a10504126f45900e1", 31, 319, 2, 55, 319582, "d034b1b1b7eca913"),
    ("ünïcödé", "1f5e499ad7c5adeb861051d90622d96e", 89, 893, 6, 89, 893112, "98f8664072de536e"),
];

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn derived_keys_buckets_and_pod_hashes() {
    for (id, key_hex, b100, b1000, b7, seeded, b1m, pod) in USERS {
        let key = hash::derive_key(id.as_bytes());
        assert_eq!(hex(&key), *key_hex, "derive_key({id:?})");
        assert_eq!(hash::bucket(b"", &key, 100), *b100, "{id:?} /100");
        assert_eq!(hash::bucket(b"", &key, 1000), *b1000, "{id:?} /1000");
        assert_eq!(hash::bucket(b"", &key, 7), *b7, "{id:?} /7");
        assert_eq!(
            hash::bucket(b"spring-sale", &key, 100),
            *seeded,
            "{id:?} seeded"
        );
        assert_eq!(hash::bucket(b"", &key, 1_000_000), *b1m, "{id:?} /1e6");
        assert_eq!(hash::bucket(b"", &key, 1), 0);
        assert_eq!(
            String::from_utf8(hash::pod_hash(&key).to_vec()).unwrap(),
            *pod,
            "pod_hash({id:?})"
        );
    }
}

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn raw_keys() {
    #[rustfmt::skip]
    let rows: &[([u8; 16], u32, u32, &str)] = &[
        ([0; 16], 35, 354510, "f95c4b52b8e61ee7"),
        ([0xff; 16], 59, 599897, "98728495a08a9ad7"),
        (*b"0123456789abcdef", 73, 733317, "cd9b33f0fd2d703b"),
    ];
    for (key, b100, b1m, pod) in rows {
        assert_eq!(hash::bucket(b"", key, 100), *b100);
        assert_eq!(hash::bucket(b"", key, 1_000_000), *b1m);
        assert_eq!(&hash::pod_hash(key), pod.as_bytes());
    }
}

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn version_ids_and_fnv() {
    for (name, id) in [
        ("v1", 0x944a_4668u32),
        ("v2", 0x974a_4b21),
        ("stable", 0xbc9c_b896),
        ("canary", 0x1c60_4159),
        ("canary-v2", 0x26f0_ab04),
    ] {
        assert_eq!(hash::fnv32(name.as_bytes()), id, "{name}");
    }
    let p = plugin(&two_versions(1, 100, ""));
    let ids: Vec<u32> = global(&p).versions().iter().map(|v| v.id()).collect();
    assert_eq!(ids, [0xbc9c_b896, 0x1c60_4159]);
    assert_eq!(hash::fnv64(&[b"sticky-canary"]), 0xbe88_c3b4_5bd4_29c9);
    assert_eq!(hash::fnv64(&[b"sticky-", b"canary"]), 0xbe88_c3b4_5bd4_29c9);
}

/// 10,000 sequential user ids in one number: catches any drift cheaply.
#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn ten_thousand_users_fingerprint() {
    let mut acc = 0u64;
    let mut hist = [0u32; 10];
    for i in 0..10_000u32 {
        let b = hash::bucket(b"", &hash::derive_key(format!("user-{i}").as_bytes()), 1000);
        acc = acc.wrapping_mul(31).wrapping_add(u64::from(b));
        hist[(b / 100) as usize] += 1;
    }
    assert_eq!(acc, 0xcc8f_b141_1da8_5807);
    assert_eq!(hist, [988, 990, 963, 1016, 1001, 976, 1040, 979, 999, 1048]);
}

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn the_test_rng_is_the_same_everywhere() {
    assert_eq!(
        hex(&TestRng(42).peek16()),
        "956eeb2f2632d7bd03f166b233e3ef28"
    );
}

const PLAIN: &str = "1AQFrSyOAHGBBWTAxMjM0NTY3ODlhYmNkZWZWxT1VrqKukw";
const SEALED: &str = "2CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJv3CJwV8qZQK1SzgNWkAz3hzEj6MhA_6Fw-sVbeMIY3WyBHfh6ruNZGIDMJLxikpRvYYSCcb-I-A";

fn sample() -> Session {
    Session {
        key: *b"0123456789abcdef",
        version_id: hash::fnv32(b"canary"),
        origin: Origin::Rule,
        expiry: 1_800_086_400,
        endpoint: None,
    }
}

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn cookie_values_encode_exactly() {
    assert_eq!(sample().encode("sticky-canary", &[], &[0; 24]), PLAIN);
    assert_eq!(PLAIN.len(), 47, "marker + 46 base64url characters");
    let pinned = Session {
        origin: Origin::Weight,
        endpoint: Some("10.0.0.7:8080".into()),
        ..sample()
    };
    assert_eq!(
        pinned.encode("sticky-canary", &[SealKey([7; 32])], &[9; 24]),
        SEALED
    );
    assert_eq!(SEALED.len(), 108);
    let v6 = Session {
        endpoint: Some("[2001:db8::1234:5678]:65535".into()),
        ..pinned
    };
    assert_eq!(
        v6.encode("sticky-canary", &[SealKey([7; 32])], &[9; 24])
            .len(),
        127
    );
}

#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn golden_cookies_open_everywhere() {
    let now = 1_800_000_000;
    assert_eq!(
        Session::open(PLAIN, "sticky-canary", &[], now),
        Opened::Valid {
            session: sample(),
            stale_key: false
        }
    );
    let pinned = Session {
        origin: Origin::Weight,
        endpoint: Some("10.0.0.7:8080".into()),
        ..sample()
    };
    assert_eq!(
        Session::open(SEALED, "sticky-canary", &[SealKey([7; 32])], now),
        Opened::Valid {
            session: pinned.clone(),
            stale_key: false
        }
    );
    assert_eq!(
        Session::open(
            SEALED,
            "sticky-canary",
            &[SealKey([8; 32]), SealKey([7; 32])],
            now
        ),
        Opened::Valid {
            session: pinned,
            stale_key: true
        }
    );
    assert_eq!(
        Session::open(SEALED, "sticky-canary", &[SealKey([8; 32])], now),
        Opened::Invalid
    );
    assert_eq!(
        Session::open(PLAIN, "sticky-canary", &[], 1_800_086_400),
        Opened::Invalid,
        "expired"
    );
}

/// Whole visits: a fixed entropy stream gives a fixed Set-Cookie header.
#[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), wasm_bindgen_test)]
#[cfg_attr(not(all(target_arch = "wasm32", target_os = "unknown")), test)]
fn end_to_end_visits() {
    let p = plugin(&two_versions(50, 100, ""));
    let v = Client::new().visit(global(&p), &[], NOW, &mut TestRng(42));
    assert_eq!(
        (v.version.as_str(), v.hash.as_str()),
        ("canary", "80d4c4c39f5fe967")
    );
    assert_eq!(
        v.set_cookie.as_deref(),
        Some("sticky-canary=1AQBrSyOAHGBBWZVu6y8mMte9A_FmsjPj7yiFyOFIdt8PrA; Path=/; HttpOnly")
    );

    let p = plugin(&two_versions(
        50,
        100,
        r#","session":{"secrets":["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="],"cookie":{"secure":true,"same_site":"Lax","max_age":3600}}"#,
    ));
    let v = Client::new().visit(global(&p), &[], NOW, &mut TestRng(42));
    assert_eq!(
        (v.version.as_str(), v.hash.as_str()),
        ("canary", "80d4c4c39f5fe967")
    );
    assert_eq!(
        v.set_cookie.as_deref(),
        Some("sticky-canary=2Up8PE1dnUkeU40oO_-EcWPIjSCRaWLwJ5k3UVL_oBh6inDLhd1H8yoT_TUGftWiXDGWY0DrE61auHOcbVD1tH2Cx; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax")
    );

    let p = plugin(&two_versions(
        50,
        100,
        r#","session":{"key":{"from":"header","name":"x-user"}}"#,
    ));
    #[rustfmt::skip]
    let users = [
        ("alice", "stable", "f93e10b266a9d4c0"),
        ("dave", "canary", "def9464e7d5b1c6c"),
        ("user-42", "stable", "c0da1cdb04acdccc"),
        ("2001:db8::1", "canary", "6a7c9913c7f751af"),
    ];
    for (user, version, pod) in users {
        let v = Client::new().visit(global(&p), &[("x-user", user)], NOW, &mut TestRng(42));
        assert_eq!(
            (v.version.as_str(), v.hash.as_str()),
            (version, pod),
            "{user}"
        );
    }
}
