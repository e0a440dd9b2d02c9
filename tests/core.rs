//! Integration tests of the host-free core through its public API:
//! `compile_json` -> `Plugin::select` -> `decide` -> the response steps of
//! `sticky_canary::pipeline`, the same code the proxy-wasm adapter runs.
//!
//! Every test is host-free and cheap, so the same file runs natively
//! (`cargo test`) and inside wasm (`cargo test --target wasm32-wasip1
//! --tests`, through tests/support/wasi-runner.mjs). Randomness comes from a
//! seeded `TestRng`, so every expectation is exact.

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
use sticky_canary::cookies as setcookie;
use sticky_canary::pipeline::{Exchange, Upstream};
use sticky_canary::policy::{KeySource, Weight};
use sticky_canary::request::Lookup;
use sticky_canary::session::{Opened, SealKey, Session};
use sticky_canary::{decide, hash, Basis, CookieState, Request};

/// Session key from the `x-user` header.
const USER_KEY: &str = r#","session":{"key":{"from":"header","name":"x-user"}}"#;

fn bucket_of(user: &str, seed: &[u8], total: u32) -> u32 {
    hash::bucket(seed, &hash::derive_key(user.as_bytes()), total)
}

/// A generator whose next 16 bytes (the next generated session key) land in
/// a bucket that satisfies `pred`.
fn rng_with_bucket(seed: &[u8], total: u32, pred: impl Fn(u32) -> bool) -> TestRng {
    (0u64..100_000)
        .map(TestRng)
        .find(|r| pred(hash::bucket(seed, &r.peek16(), total)))
        .expect("some seed lands in the bucket range")
}

fn hex_of(b: [u8; 16]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

// ======================================================================
// Rules: every kind, every sentinel, first match wins
// ======================================================================

/// Canary weights are 0, so anything that is not a rule lands on `v1`.
const RULES: &str = r#"{
    "versions": [{"name": "v1"}, {"name": "v2", "weight": 0}, {"name": "v3", "weight": 0}],
    "rules": [
        {"header": "X-Canary", "value": "v2", "version": "v2"},
        {"header": "x-beta", "regex": "^(alice|bob)@example\\.com$", "version": "v3"},
        {"header": "x-force", "version": "v3"},
        {"cookie": "canary", "value": "yes", "version": "v2"},
        {"cookie": "force", "version": "v2"},
        {"query": "ver", "value": "v 3", "version": "v3"}
    ]
}"#;

#[test]
fn rules_table() {
    let p = plugin(RULES);
    let policy = global(&p);
    use Basis::{Rule, Weight as W};
    #[rustfmt::skip]
    let rows: &[(&str, &[(&str, &str)], &str, Basis)] = &[
        ("no rule input", &[], "v1", W),
        // header, exact value
        ("header exact", &[("x-canary", "v2")], "v2", Rule(0)),
        ("header name case-insensitive", &[("X-CANARY", "v2")], "v2", Rule(0)),
        ("header value is case-sensitive", &[("x-canary", "V2")], "v1", W),
        ("header other value falls through", &[("x-canary", "v3")], "v1", W),
        ("header value with a space", &[("x-canary", "v2 ")], "v1", W),
        ("duplicated header is absent", &[("x-canary", "v2"), ("x-canary", "v2")], "v1", W),
        // header, regex
        ("regex match", &[("x-beta", "alice@example.com")], "v3", Rule(1)),
        ("regex second alternative", &[("x-beta", "bob@example.com")], "v3", Rule(1)),
        ("regex miss", &[("x-beta", "mallory@example.com")], "v1", W),
        ("regex anchored", &[("x-beta", "xalice@example.com")], "v1", W),
        ("regex dot is literal", &[("x-beta", "alice@exampleXcom")], "v1", W),
        // header, sentinels
        ("header always", &[("x-force", "always")], "v3", Rule(2)),
        ("header never -> default", &[("x-force", "never")], "v1", Rule(2)),
        ("header sentinel is case-sensitive", &[("x-force", "Always")], "v1", W),
        ("header other sentinel value", &[("x-force", "yes")], "v1", W),
        ("header empty sentinel value", &[("x-force", "")], "v1", W),
        // cookie, exact value
        ("cookie exact", &[("cookie", "canary=yes")], "v2", Rule(3)),
        ("cookie among others", &[("cookie", "a=1; canary=yes; b=2")], "v2", Rule(3)),
        ("cookie quoted value", &[("cookie", "canary=\"yes\"")], "v2", Rule(3)),
        ("cookie across two headers", &[("cookie", "a=1"), ("cookie", "canary=yes")], "v2", Rule(3)),
        ("cookie other value", &[("cookie", "canary=no")], "v1", W),
        ("cookie name is exact", &[("cookie", "Canary=yes; canary2=yes")], "v1", W),
        ("duplicated cookie, one header", &[("cookie", "canary=yes; canary=yes")], "v1", W),
        ("duplicated cookie, two headers", &[("cookie", "canary=yes"), ("cookie", "canary=yes")], "v1", W),
        // cookie, sentinels
        ("cookie always", &[("cookie", "force=always")], "v2", Rule(4)),
        ("cookie never -> default", &[("cookie", "force=never")], "v1", Rule(4)),
        ("cookie other sentinel value", &[("cookie", "force=maybe")], "v1", W),
        // query, exact value after percent-decoding
        ("query plus as space", &[(":path", "/x?ver=v+3")], "v3", Rule(5)),
        ("query percent-encoded", &[(":path", "/x?ver=v%203")], "v3", Rule(5)),
        ("query name percent-encoded", &[(":path", "/x?%76er=v+3")], "v3", Rule(5)),
        ("query among others, fragment cut", &[(":path", "/x?a=1&ver=v+3#top")], "v3", Rule(5)),
        ("query other value", &[(":path", "/x?ver=v3")], "v1", W),
        ("query duplicated", &[(":path", "/x?ver=v+3&ver=v+3")], "v1", W),
        ("query badly encoded", &[(":path", "/x?ver=v%zz")], "v1", W),
        ("query name without value", &[(":path", "/x?ver")], "v1", W),
        // first match wins
        ("rule 0 before rule 2", &[("x-force", "always"), ("x-canary", "v2")], "v2", Rule(0)),
        ("rule 0 misses, rule 2 hits", &[("x-canary", "nope"), ("x-force", "always")], "v3", Rule(2)),
        ("never in rule 2 beats rule 3", &[("x-force", "never"), ("cookie", "canary=yes")], "v1", Rule(2)),
        ("cookie rule 3 beats query rule 5", &[("cookie", "canary=yes"), (":path", "/?ver=v+3")], "v2", Rule(3)),
    ];
    for (what, extra, want, reason) in rows {
        let mut h = headers(extra);
        if !extra.iter().any(|(k, _)| *k == ":path") {
            h.push((b":path", b"/"));
        }
        let d = decide(policy, &request(&h, NOW), &mut TestRng(1));
        assert_eq!(
            (vname(policy, &d).as_str(), d.basis),
            (*want, *reason),
            "{what}"
        );
        // A rule-assigned version is recorded as such in the cookie.
        let from_rule = matches!(d.basis, Basis::Rule(_));
        assert_eq!(
            d.session.origin == sticky_canary::session::Origin::Rule,
            from_rule,
            "{what}"
        );
    }
}

#[test]
fn query_inside_the_fragment_is_not_a_query() {
    let p = plugin(RULES);
    let policy = global(&p);
    let h = headers(&[(":path", "/x#?ver=v+3")]);
    let d = decide(policy, &request(&h, NOW), &mut TestRng(1));
    assert_eq!((vname(policy, &d).as_str(), d.basis), ("v1", Basis::Weight));
}

#[test]
fn long_urls_keep_their_path_and_query() {
    let pad = "x".repeat(1100);
    // A query parameter of 2 bytes in a long URL is not "longer than 1024 bytes".
    let value = format!("/api/orders?ver=v+3&utm={pad}");
    let h = headers(&[(":path", &value)]);
    let req = request(&h, NOW);
    assert_eq!(req.query("ver").as_deref(), Some("v 3"));
    let p = plugin(RULES);
    let d = decide(global(&p), &req, &mut TestRng(1));
    assert_eq!(d.basis, Basis::Rule(5));
    // Route entries match the path prefix whatever the query's length.
    let p = plugin(ROUTES);
    assert_eq!(p.select(&req).map(|pol| pol.scope()), Some("api"));
    let p = plugin(&two_versions(
        10,
        100,
        r#","routes":[{"match":{"path_prefix":"/healthz"},"enabled":false}]"#,
    ));
    let value = format!("/healthz?probe={pad}");
    let h = headers(&[(":path", &value)]);
    assert!(
        p.select(&request(&h, NOW)).is_none(),
        "a disabled route must pass long URLs through too"
    );
}

#[test]
fn overlong_values_are_absent() {
    let p = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":0}],
            "rules":[{"header":"x-long","regex":"^a+$","version":"v2"}]}"#,
    );
    let policy = global(&p);
    let run = |h: Vec<Header>| vname(policy, &decide(policy, &request(&h, NOW), &mut TestRng(1)));
    let max = "a".repeat(1024);
    let over = "a".repeat(1025);
    assert_eq!(run(headers(&[("x-long", &max)])), "v2");
    assert_eq!(run(headers(&[("x-long", &over)])), "v1");
    // The same limit for cookies and query parameters, through the lookups
    // the rules use.
    let cookie = format!("a={max}; b={over}");
    let h = headers(&[("cookie", &cookie), (":path", "/?a=1&b=2")]);
    let req = request(&h, NOW);
    assert_eq!(req.cookie("a"), Lookup::One(max.as_str()));
    // The lookup itself returns any length (an oversized session cookie is
    // invalid, not absent); cookie rules apply the limit.
    assert_eq!(req.cookie("b"), Lookup::One(over.as_str()));
    let pc = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":0}],
            "rules":[{"cookie":"c","version":"v2"}]}"#,
    );
    let pol = global(&pc);
    let h = headers(&[("cookie", "c=always")]);
    assert_eq!(
        vname(pol, &decide(pol, &request(&h, NOW), &mut TestRng(1))),
        "v2"
    );
    let value = format!("c={over}");
    let h = headers(&[("cookie", &value)]);
    assert_eq!(
        vname(pol, &decide(pol, &request(&h, NOW), &mut TestRng(1))),
        "v1"
    );
    assert_eq!(req.cookie("c"), Lookup::Absent);
    let short = "a".repeat(500);
    let value = format!("/?a={short}&b={}", "b".repeat(510));
    let h = headers(&[(":path", &value)]);
    assert_eq!(request(&h, NOW).query("a").as_deref(), Some(short.as_str()));
    let h = headers(&[("x-a", "1"), ("X-A", "2")]);
    assert_eq!(request(&h, NOW).header("x-a"), Lookup::Many);
}

// ======================================================================
// Weights: exact bucket layout, totals other than 100
// ======================================================================

#[test]
fn weights_assign_exactly_by_bucket() {
    // (canary weight, weight_total)
    for (w, total) in [
        (0, 100),
        (1, 100),
        (10, 100),
        (50, 100),
        (99, 100),
        (100, 100),
        (1, 1000),
        (999, 1000),
        (0, 7),
        (3, 7),
        (7, 7),
        (1, 1),
    ] {
        let p = plugin(&two_versions(w, total, USER_KEY));
        let policy = global(&p);
        let mut canary = 0;
        for i in 0..2000 {
            let user = format!("user-{i}");
            let h = headers(&[(":path", "/"), ("x-user", &user)]);
            let d = decide(policy, &request(&h, NOW), &mut TestRng(i));
            let b = bucket_of(&user, b"", total);
            let want = if b < w { "canary" } else { "stable" };
            assert_eq!(vname(policy, &d), want, "w={w}/{total} {user} bucket {b}");
            assert_eq!(d.basis, Basis::Weight);
            assert!(!d.key_fallback);
            canary += usize::from(want == "canary");
        }
        if w == 0 {
            assert_eq!(canary, 0, "weight 0 gets no weighted traffic");
        }
        if w == total {
            assert_eq!(canary, 2000, "weight = total gets every new user");
        }
    }
}

#[test]
fn abn_layout_and_zero_weight_middle_version() {
    // a (default) 60, b 30, c 10: b owns [0,30), c [30,40), a the rest.
    let p = plugin(&format!(
        r#"{{"versions":[{{"name":"a"}},{{"name":"b","weight":30}},{{"name":"c","weight":10}}]{USER_KEY}}}"#
    ));
    let policy = global(&p);
    assert_eq!(policy.weights_at(NOW), [60, 30, 10]);
    // z has weight 0 between two weighted versions: it never gets traffic.
    let pz = plugin(&format!(
        r#"{{"versions":[{{"name":"a"}},{{"name":"z","weight":0}},{{"name":"c","weight":10}}]{USER_KEY}}}"#
    ));
    let policy_z = global(&pz);
    for i in 0..2000 {
        let user = format!("user-{i}");
        let h = headers(&[("x-user", &user)]);
        let b = bucket_of(&user, b"", 100);
        let want = match b {
            0..=29 => "b",
            30..=39 => "c",
            _ => "a",
        };
        assert_eq!(
            vname(policy, &decide(policy, &request(&h, NOW), &mut TestRng(0))),
            want,
            "{user} bucket {b}"
        );
        let want_z = if b < 10 { "c" } else { "a" };
        assert_eq!(
            vname(
                policy_z,
                &decide(policy_z, &request(&h, NOW), &mut TestRng(0))
            ),
            want_z,
            "{user} bucket {b}"
        );
    }
}

#[test]
fn seed_reshuffles_buckets() {
    let plain = plugin(&two_versions(50, 100, USER_KEY));
    let seeded = plugin(&two_versions(
        50,
        100,
        &format!(r#",{}"#, &format!(r#""seed":"spring-sale"{USER_KEY}"#)),
    ));
    let (p, s) = (global(&plain), global(&seeded));
    assert_eq!(s.seed(), b"spring-sale");
    let mut differ = 0;
    for i in 0..1000 {
        let user = format!("user-{i}");
        let h = headers(&[("x-user", &user)]);
        let dp = decide(p, &request(&h, NOW), &mut TestRng(0));
        let ds = decide(s, &request(&h, NOW), &mut TestRng(0));
        let want = if bucket_of(&user, b"spring-sale", 100) < 50 {
            "canary"
        } else {
            "stable"
        };
        assert_eq!(vname(s, &ds), want);
        differ += usize::from(dp.version != ds.version);
        // The pod hash does not depend on the seed.
        assert_eq!(dp.hash, ds.hash);
    }
    // Independent 50/50 splits disagree for about half the users.
    assert!((350..650).contains(&differ), "{differ}");
}

#[test]
fn default_weight_given_explicitly_is_the_remainder() {
    let p = plugin(
        r#"{"weight_total":1000,"versions":[{"name":"a","weight":700},{"name":"b","weight":200},{"name":"c","weight":100}]}"#,
    );
    let policy = global(&p);
    assert_eq!(policy.total(), 1000);
    assert_eq!(policy.weights_at(NOW), [700, 200, 100]);
    assert_eq!(
        policy.versions()[0].weight(),
        Weight::Fixed(0),
        "the default's weight is derived, not stored"
    );
}

// ======================================================================
// Memory: rule > memory > weight, drain, rollback, removed version, legacy
// ======================================================================

#[test]
fn weight_assigned_user_follows_the_bucket() {
    let mut rng = rng_with_bucket(b"", 100, |b| b == 30);
    let (p10, p20, p40) = (
        plugin(&two_versions(10, 100, "")),
        plugin(&two_versions(20, 100, "")),
        plugin(&two_versions(40, 100, "")),
    );
    let mut c = Client::new();
    let steps = [
        (global(&p10), "stable", true, CookieState::Absent),
        (global(&p20), "stable", false, CookieState::Valid),
        (global(&p40), "canary", true, CookieState::Valid), // 30 < 40: moved up
        (global(&p40), "canary", false, CookieState::Valid),
        (global(&p20), "stable", true, CookieState::Valid), // lowered: back
        (global(&p20), "stable", false, CookieState::Valid),
    ];
    let mut hash = None;
    for (i, (policy, want, write, state)) in steps.into_iter().enumerate() {
        let v = c.visit(policy, &[], NOW + i as u64, &mut rng);
        assert_eq!(
            (v.version.as_str(), v.basis, v.write, v.state),
            (want, Basis::Weight, write, state),
            "step {i}"
        );
        // Same key throughout: the pod hash never changes.
        assert_eq!(*hash.get_or_insert(v.hash.clone()), v.hash);
    }
}

#[test]
fn drain_keeps_remembered_users_and_rollback_moves_them() {
    let mut rng = rng_with_bucket(b"", 100, |b| b == 5);
    let p10 = plugin(&two_versions(10, 100, ""));
    let p0 = plugin(&two_versions(0, 100, ""));
    let p0_rollback = plugin(&two_versions(0, 100, r#","rollback":true"#));
    let mut c = Client::new();
    let v = c.visit(global(&p10), &[], NOW, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("canary", Basis::Weight));
    // Weight 0 without rollback: the user stays (drain), nothing rewritten.
    let v = c.visit(global(&p0), &[], NOW + 1, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("canary", Basis::Remembered, false)
    );
    // A new user never gets the drained version.
    let v = Client::new().visit(
        global(&p0),
        &[],
        NOW,
        &mut rng_with_bucket(b"", 100, |b| b == 5),
    );
    assert_eq!(v.version, "stable");
    // Rollback: reassigned by weight, cookie rewritten.
    let v = c.visit(global(&p0_rollback), &[], NOW + 2, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Weight, true)
    );
    // Once moved, the user stays on stable even without rollback.
    let v = c.visit(global(&p0), &[], NOW + 3, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Weight, false)
    );
}

#[test]
fn the_default_version_never_drains() {
    // Canary at weight_total: the default has weight 0, and every user who
    // got it by weight moves to the canary (weight = total receives all).
    let mut rng = rng_with_bucket(b"", 100, |b| b == 50);
    let mut c = Client::new();
    let v = c.visit(
        global(&plugin(&two_versions(10, 100, SENTINEL))),
        &[],
        NOW,
        &mut rng,
    );
    assert_eq!(v.version, "stable");
    let v = c.visit(
        global(&plugin(&two_versions(100, 100, SENTINEL))),
        &[],
        NOW + 1,
        &mut rng,
    );
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("canary", Basis::Weight, true)
    );
    // A user a rule sent to the default (`never`) stays there: rule memory
    // is not weight, and rollback only concerns canaries.
    for extra in ["", r#","rollback":true"#] {
        let mut c = Client::new();
        let p100 = plugin(&two_versions(100, 100, &format!("{SENTINEL}{extra}")));
        let v = c.visit(global(&p100), &[("x-canary", "never")], NOW, &mut rng);
        assert_eq!((v.version.as_str(), v.basis), ("stable", Basis::Rule(0)));
        let v = c.visit(global(&p100), &[], NOW + 1, &mut rng);
        assert_eq!(
            (v.version.as_str(), v.basis, v.write),
            ("stable", Basis::Remembered, false),
            "{extra}"
        );
    }
}

const SENTINEL: &str = r#","rules":[{"header":"x-canary","version":"canary"}]"#;

#[test]
fn rule_assigned_version_is_remembered_and_rules_beat_memory() {
    // Weight 50 and a user whose bucket says stable.
    let mut rng = rng_with_bucket(b"", 100, |b| b >= 50);
    let p = plugin(&two_versions(50, 100, SENTINEL));
    let policy = global(&p);
    let mut c = Client::new();
    let v = c.visit(policy, &[("x-canary", "always")], NOW, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("canary", Basis::Rule(0), true)
    );
    // No rule now: the remembered rule choice beats the bucket.
    let v = c.visit(policy, &[], NOW + 1, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("canary", Basis::Remembered, false)
    );
    // A matching rule beats memory and is recorded.
    let v = c.visit(policy, &[("x-canary", "never")], NOW + 2, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Rule(0), true)
    );
    let v = c.visit(policy, &[], NOW + 3, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Remembered, false)
    );
    // A rule giving the same version again changes nothing in the cookie.
    let v = c.visit(policy, &[("x-canary", "never")], NOW + 4, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Rule(0), false)
    );
    // A non-sentinel value falls through to memory.
    let v = c.visit(policy, &[("x-canary", "maybe")], NOW + 5, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("stable", Basis::Remembered));
}

#[test]
fn rule_beats_a_drained_weight_memory() {
    let mut rng = rng_with_bucket(b"", 100, |b| b < 10);
    let mut c = Client::new();
    c.visit(
        global(&plugin(&two_versions(10, 100, SENTINEL))),
        &[],
        NOW,
        &mut rng,
    );
    let p0 = plugin(&two_versions(0, 100, SENTINEL));
    assert_eq!(
        c.visit(global(&p0), &[], NOW + 1, &mut rng).basis,
        Basis::Remembered
    );
    let v = c.visit(global(&p0), &[("x-canary", "never")], NOW + 2, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Rule(0), true)
    );
    // Back at weight 10 the bucket says canary, but the rule choice sticks.
    let v = c.visit(
        global(&plugin(&two_versions(10, 100, SENTINEL))),
        &[],
        NOW + 3,
        &mut rng,
    );
    assert_eq!((v.version.as_str(), v.basis), ("stable", Basis::Remembered));
}

#[test]
fn rule_memory_at_weight_zero_drains_or_rolls_back() {
    let mut rng = TestRng(3);
    let p0 = plugin(&two_versions(0, 100, SENTINEL));
    let p0_rb = plugin(&two_versions(
        0,
        100,
        &format!(r#"{SENTINEL},"rollback":true"#),
    ));
    let mut c = Client::new();
    assert_eq!(
        c.visit(global(&p0), &[("x-canary", "always")], NOW, &mut rng)
            .version,
        "canary"
    );
    let v = c.visit(global(&p0), &[], NOW + 1, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("canary", Basis::Remembered));
    let v = c.visit(global(&p0_rb), &[], NOW + 2, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("stable", Basis::Weight, true)
    );
    // With rollback on, the rule itself still wins.
    let v = c.visit(global(&p0_rb), &[("x-canary", "always")], NOW + 3, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("canary", Basis::Rule(0)));
}

#[test]
fn removed_version_in_the_cookie_is_reassigned_by_weight() {
    let mut rng = TestRng(11);
    let three = plugin(
        r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0},{"name":"beta","weight":0}],
                           "rules":[{"header":"x-beta","version":"beta"}]}"#,
    );
    let two = plugin(&two_versions(0, 100, ""));
    let mut c = Client::new();
    assert_eq!(
        c.visit(global(&three), &[("x-beta", "always")], NOW, &mut rng)
            .version,
        "beta"
    );
    let v = c.visit(global(&two), &[], NOW + 1, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write, v.state),
        ("stable", Basis::Weight, true, CookieState::Valid)
    );
    let v = c.visit(global(&two), &[], NOW + 2, &mut rng);
    assert_eq!((v.version.as_str(), v.write), ("stable", false));
}

#[test]
fn renamed_version_is_a_removed_version() {
    // The cookie stores fnv32(name): renaming a version forgets its users.
    let mut rng = TestRng(12);
    let mut c = Client::new();
    let before = plugin(&format!(
        r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":0}}]{SENTINEL}}}"#
    ));
    let after = plugin(r#"{"versions":[{"name":"stable"},{"name":"canary-2","weight":0}]}"#);
    assert_eq!(
        c.visit(global(&before), &[("x-canary", "always")], NOW, &mut rng)
            .version,
        "canary"
    );
    let v = c.visit(global(&after), &[], NOW + 1, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("stable", Basis::Weight));
}

#[test]
fn legacy_stickiness_has_no_memory() {
    let mut rng = rng_with_bucket(b"", 100, |b| b < 10);
    let legacy = |w| {
        plugin(&two_versions(
            w,
            100,
            &format!(r#"{SENTINEL},"stickiness":"legacy""#),
        ))
    };
    let (l0, l10) = (legacy(0), legacy(10));
    assert!(!global(&l0).sticky());
    let mut c = Client::new();
    // Weighted: the bucket decides, every time.
    assert_eq!(c.visit(global(&l10), &[], NOW, &mut rng).version, "canary");
    let v = c.visit(global(&l10), &[], NOW + 1, &mut rng);
    assert_eq!(
        (v.version.as_str(), v.basis, v.write),
        ("canary", Basis::Weight, false)
    );
    // No drain: weight 0 moves the user at once.
    assert_eq!(
        c.visit(global(&l0), &[], NOW + 2, &mut rng).version,
        "stable"
    );
    // A rule applies to its request only.
    assert_eq!(
        c.visit(global(&l0), &[("x-canary", "always")], NOW + 3, &mut rng)
            .version,
        "canary"
    );
    let v = c.visit(global(&l0), &[], NOW + 4, &mut rng);
    assert_eq!((v.version.as_str(), v.basis), ("stable", Basis::Weight));
}

// ======================================================================
// Session keys: generated, header, query, client IP, fallback
// ======================================================================

#[test]
fn generated_key_comes_from_entropy_and_is_kept() {
    let p = plugin(&two_versions(50, 100, ""));
    let policy = global(&p);
    let mut rng = TestRng(7);
    let key = rng.peek16();
    let mut c = Client::new();
    let v1 = c.visit(policy, &[], NOW, &mut rng);
    assert_eq!(v1.decision.session.key, key);
    assert_eq!(v1.hash, hex_of(hash::pod_hash(&key)));
    assert!(!v1.fallback && v1.write);
    assert_eq!(v1.state, CookieState::Absent);
    let v2 = c.visit(policy, &[], NOW + 60, &mut rng);
    assert_eq!(
        (v2.hash, v2.write, v2.state),
        (v1.hash, false, CookieState::Valid)
    );
    assert_eq!(v2.decision.session.key, key);
}

#[test]
fn without_entropy_the_key_is_derived_from_the_request() {
    let p = plugin(&two_versions(50, 100, ""));
    let policy = global(&p);
    let h = headers(&[("x-request-id", "req-1")]);
    let d = decide(policy, &request(&h, NOW), &mut NoEntropy);
    assert_eq!(
        d.session.key,
        hash::derive_key(format!("req-1/{NOW}").as_bytes())
    );
    let d = decide(policy, &request(&[], NOW), &mut NoEntropy);
    assert_eq!(
        d.session.key,
        hash::derive_key(format!("/{NOW}").as_bytes())
    );
}

#[test]
fn header_key_source() {
    let p = plugin(&two_versions(50, 100, USER_KEY));
    let policy = global(&p);
    assert_eq!(*policy.key_source(), KeySource::Header("x-user".into()));
    let alice = hash::derive_key(b"alice");
    // (request headers, expected key: Some(user) or None for a fallback)
    #[rustfmt::skip]
    let rows: &[(&[(&str, &str)], Option<&str>)] = &[
        (&[("x-user", "alice")], Some("alice")),
        (&[("X-User", "alice")], Some("alice")),
        (&[("x-user", "Alice")], Some("Alice")),
        (&[], None),
        (&[("x-user", "")], None),
        (&[("x-user", "alice"), ("x-user", "bob")], None),
    ];
    for (extra, user) in rows {
        let mut rng = TestRng(5);
        let generated = rng.peek16();
        let d = decide(policy, &request(&headers(extra), NOW), &mut rng);
        match user {
            Some(u) => {
                assert_eq!(d.session.key, hash::derive_key(u.as_bytes()), "{extra:?}");
                assert!(!d.key_fallback);
            }
            None => {
                assert_eq!(d.session.key, generated, "{extra:?}");
                assert!(d.key_fallback, "{extra:?}");
            }
        }
    }
    // Same user, same bucket, same pod hash, from any machine: no cookie needed.
    let a = decide(
        policy,
        &request(&headers(&[("x-user", "alice")]), NOW),
        &mut TestRng(1),
    );
    let b = decide(
        policy,
        &request(&headers(&[("x-user", "alice")]), NOW + 99),
        &mut TestRng(2),
    );
    assert_eq!((a.version, a.hash), (b.version, b.hash));
    assert_eq!(a.hash.as_bytes(), hash::pod_hash(&alice));

    // The cookie then follows the header's identity.
    let mut c = Client::new();
    let mut rng = TestRng(9);
    let v = c.visit(policy, &[("x-user", "alice")], NOW, &mut rng);
    assert!(v.write && !v.fallback);
    // Header missing: the cookie's key (alice's) is used, still a fallback.
    let v = c.visit(policy, &[], NOW + 1, &mut rng);
    assert_eq!(
        (v.decision.session.key, v.fallback, v.write),
        (alice, true, false)
    );
    // Another user behind the same browser: the old cookie is ignored.
    let v = c.visit(policy, &[("x-user", "bob")], NOW + 2, &mut rng);
    assert_eq!(
        (v.state, v.write, v.fallback),
        (CookieState::Invalid, true, false)
    );
    assert_eq!(v.decision.session.key, hash::derive_key(b"bob"));
}

#[test]
fn query_key_source() {
    let p = plugin(&two_versions(
        50,
        100,
        r#","session":{"key":{"from":"query","name":"uid"}}"#,
    ));
    let policy = global(&p);
    for (path, user) in [
        ("/p?uid=u%201", Some("u 1")),
        ("/p?a=b&uid=u+1", Some("u 1")),
        ("/p?uid=", None),
        ("/p?uid=a&uid=b", None),
        ("/p", None),
        ("/p?uid=%zz", None),
    ] {
        let d = decide(
            policy,
            &request(&headers(&[(":path", path)]), NOW),
            &mut TestRng(5),
        );
        assert_eq!(d.key_fallback, user.is_none(), "{path}");
        if let Some(u) = user {
            assert_eq!(d.session.key, hash::derive_key(u.as_bytes()), "{path}");
        }
    }
}

#[test]
fn client_ip_key_source() {
    // (xff_trusted_hops, X-Forwarded-For, client address, expected IP)
    #[rustfmt::skip]
    let rows: &[(u32, Option<&str>, Option<&str>, Option<&str>)] = &[
        (0, None, Some("10.1.2.3:5555"), Some("10.1.2.3")),
        (0, None, Some("[2001:db8::1]:443"), Some("2001:db8::1")),
        (0, None, Some("10.1.2.3"), Some("10.1.2.3")),
        (0, Some("9.9.9.9"), Some("10.1.2.3:5555"), Some("10.1.2.3")), // hops 0 ignores XFF
        (0, None, None, None),
        (1, Some("1.1.1.1, 2.2.2.2,3.3.3.3"), Some("10.1.2.3:5555"), Some("3.3.3.3")),
        (2, Some("1.1.1.1, 2.2.2.2,3.3.3.3"), None, Some("2.2.2.2")),
        (3, Some("1.1.1.1, 2.2.2.2,3.3.3.3"), None, Some("1.1.1.1")),
        (4, Some("1.1.1.1, 2.2.2.2,3.3.3.3"), Some("10.1.2.3:5555"), None), // fewer entries than hops
        (1, None, Some("10.1.2.3:5555"), None), // hops > 0 never uses the socket address
        (2, Some("1.1.1.1, ,3.3.3.3"), None, None), // empty entry
        (1, Some("2001:db8::7"), None, Some("2001:db8::7")),
    ];
    for (hops, xff, addr, want) in rows {
        let p = plugin(&two_versions(
            50,
            100,
            &format!(r#","session":{{"key":{{"from":"client_ip","xff_trusted_hops":{hops}}}}}"#),
        ));
        let policy = global(&p);
        assert!(policy.needs_client_address());
        let mut h = headers(&[(":path", "/")]);
        if let Some(x) = xff {
            h.push((b"x-forwarded-for", x.as_bytes()));
        }
        let req = Request {
            headers: &h,
            route_name: None,
            virtual_host: None,
            client_address: *addr,
            now: NOW,
        };
        let mut rng = TestRng(5);
        let generated = rng.peek16();
        let d = decide(policy, &req, &mut rng);
        let label = format!("hops {hops}, xff {xff:?}, addr {addr:?}");
        match want {
            Some(ip) => {
                assert_eq!(d.session.key, hash::derive_key(ip.as_bytes()), "{label}");
                assert!(!d.key_fallback, "{label}");
            }
            None => {
                assert_eq!(d.session.key, generated, "{label}");
                assert!(d.key_fallback, "{label}");
            }
        }
    }
}

#[test]
fn client_ip_over_two_xff_headers() {
    let p = plugin(&two_versions(
        50,
        100,
        r#","session":{"key":{"from":"client_ip","xff_trusted_hops":2}}"#,
    ));
    let policy = global(&p);
    let h = headers(&[
        ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
        ("x-forwarded-for", "3.3.3.3"),
    ]);
    let d = decide(policy, &request(&h, NOW), &mut TestRng(5));
    assert!(!d.key_fallback);
    assert_eq!(d.session.key, hash::derive_key(b"2.2.2.2"));
}

// ======================================================================
// The session cookie: when it is written, and what is invalid
// ======================================================================

#[test]
fn invalid_cookies_start_a_new_session() {
    let p = plugin(&two_versions(50, 100, r#","session":{"ttl":3600}"#));
    let policy = global(&p);
    let mut c = Client::new();
    c.visit(policy, &[], NOW, &mut TestRng(1));
    let good = c.jar.clone().unwrap();
    let old_key = TestRng(1).peek16();
    let flipped = {
        let mut b = good.clone().into_bytes();
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let other_name = match Session::open(&good, "sticky-canary", &[], NOW) {
        Opened::Valid { session, .. } => session.encode("other", &[], &[0; 24]),
        Opened::Invalid => unreachable!(),
    };
    let sealed = match Session::open(&good, "sticky-canary", &[], NOW) {
        Opened::Valid { session, .. } => {
            session.encode("sticky-canary", &[SealKey([3; 32])], &[4; 24])
        }
        Opened::Invalid => unreachable!(),
    };
    let oversized = format!("{good}{}", "A".repeat(300 - good.len()));
    // (label, Cookie headers, now)
    let rows: Vec<(&str, Vec<String>, u64)> = vec![
        ("garbled", vec!["sticky-canary=1garbage!".into()], NOW),
        ("empty", vec!["sticky-canary=".into()], NOW),
        (
            "unknown marker",
            vec![format!("sticky-canary=3{}", &good[1..])],
            NOW,
        ),
        (
            "bit flip (forged)",
            vec![format!("sticky-canary={flipped}")],
            NOW,
        ),
        (
            "truncated",
            vec![format!("sticky-canary={}", &good[..good.len() - 2])],
            NOW,
        ),
        ("expired", vec![format!("sticky-canary={good}")], NOW + 3600),
        (
            "nine copies (more than the filter opens)",
            vec![vec![format!("sticky-canary={good}"); 9].join("; ")],
            NOW,
        ),
        ("oversized", vec![format!("sticky-canary={oversized}")], NOW),
        (
            "made for another cookie name",
            vec![format!("sticky-canary={other_name}")],
            NOW,
        ),
        (
            "sealed, but no secrets configured",
            vec![format!("sticky-canary={sealed}")],
            NOW,
        ),
    ];
    for (what, cookies, now) in rows {
        let mut h = headers(&[(":path", "/")]);
        h.extend(cookies.iter().map(|v| header("cookie", v)));
        let mut rng = TestRng(77);
        let fresh = rng.peek16();
        let d = decide(policy, &request(&h, now), &mut rng);
        assert_eq!(d.cookie_state, CookieState::Invalid, "{what}");
        assert!(d.write_cookie, "{what}");
        assert_eq!(d.session.key, fresh, "{what}: a new session");
        assert_ne!(d.session.key, old_key, "{what}");
    }
    // The good cookie itself is fine, just before its expiry.
    let value = format!("sticky-canary={good}");
    let h = headers(&[("cookie", &value)]);
    let d = decide(policy, &request(&h, NOW + 3599), &mut TestRng(77));
    assert_eq!(
        (d.cookie_state, d.session.key),
        (CookieState::Valid, old_key)
    );
}

#[test]
fn cookie_written_only_when_new_changed_or_due_for_renewal() {
    let p = plugin(&two_versions(
        50,
        100,
        &format!(r#"{SENTINEL},"session":{{"ttl":3600}}"#),
    ));
    let policy = global(&p);
    assert_eq!(policy.ttl(), 3600);
    let mut rng = rng_with_bucket(b"", 100, |b| b >= 50);
    let mut c = Client::new();
    let v = c.visit(policy, &[], NOW, &mut rng);
    assert!(v.write);
    assert_eq!(
        v.decision.session.expiry,
        u32::try_from(NOW + 3600).unwrap()
    );
    let first = c.jar.clone();
    for dt in [1, 60, 1799] {
        let v = c.visit(policy, &[], NOW + dt, &mut rng);
        assert!(!v.write, "+{dt}s: nothing changed, no Set-Cookie");
        assert_eq!(
            v.decision.session.expiry,
            u32::try_from(NOW + 3600).unwrap(),
            "expiry kept"
        );
        assert_eq!(c.jar, first);
    }
    // Less than ttl/2 left: renewed with a fresh expiry.
    let v = c.visit(policy, &[], NOW + 1801, &mut rng);
    assert!(v.write);
    assert_eq!(
        v.decision.session.expiry,
        u32::try_from(NOW + 1801 + 3600).unwrap()
    );
    // A content change (a rule moves the user) is written at once.
    let v = c.visit(policy, &[("x-canary", "always")], NOW + 1802, &mut rng);
    assert!(v.write);
    // Expired: a new session.
    let v = c.visit(policy, &[], NOW + 1802 + 3600, &mut rng);
    assert_eq!((v.state, v.write), (CookieState::Invalid, true));
}

#[test]
fn ttl_defaults_from_max_age_then_expires() {
    let ttl = |session: &str| {
        global(&plugin(&two_versions(
            1,
            100,
            &format!(r#","session":{session}"#),
        )))
        .ttl()
    };
    assert_eq!(ttl(r#"{}"#), 86_400);
    assert_eq!(ttl(r#"{"cookie":{"max_age":600}}"#), 600);
    assert_eq!(ttl(r#"{"cookie":{"expires":900}}"#), 900);
    assert_eq!(ttl(r#"{"cookie":{"max_age":600,"expires":900}}"#), 600);
    assert_eq!(ttl(r#"{"ttl":60,"cookie":{"max_age":600}}"#), 60);
}

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 x 0x01
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 x 0x02

#[test]
fn sealed_cookies_and_key_rotation() {
    let sealed = |secrets: &str| {
        plugin(&two_versions(
            50,
            100,
            &format!(r#","session":{{"secrets":{secrets}}}"#),
        ))
    };
    let (p1, p21, p2) = (
        sealed(&format!(r#"["{K1}"]"#)),
        sealed(&format!(r#"["{K2}","{K1}"]"#)),
        sealed(&format!(r#"["{K2}"]"#)),
    );
    assert_eq!(global(&p1).seal_keys().len(), 1);
    assert_eq!(global(&p1).seal_keys()[0].0, [1; 32]);
    let mut rng = TestRng(21);
    let mut c = Client::new();
    let v1 = c.visit(global(&p1), &[], NOW, &mut rng);
    let under_k1 = c.jar.clone().unwrap();
    assert!(under_k1.starts_with('2'), "{under_k1}");
    assert!(!c.visit(global(&p1), &[], NOW + 1, &mut rng).write);
    // Rotation: K2 first, K1 still opens. Valid, but re-sealed under K2.
    let v = c.visit(global(&p21), &[], NOW + 2, &mut rng);
    assert_eq!(
        (v.state, v.write, v.hash.as_str(), v.version.as_str()),
        (
            CookieState::Valid,
            true,
            v1.hash.as_str(),
            v1.version.as_str()
        )
    );
    let under_k2 = c.jar.clone().unwrap();
    assert_ne!(under_k2, under_k1);
    assert!(matches!(
        Session::open(&under_k2, "sticky-canary", global(&p2).seal_keys(), NOW + 3),
        Opened::Valid {
            stale_key: false,
            ..
        }
    ));
    assert!(!c.visit(global(&p21), &[], NOW + 3, &mut rng).write);
    // K1 retired: the K1 cookie is now invalid.
    let value = format!("sticky-canary={under_k1}");
    let h = headers(&[("cookie", &value)]);
    assert_eq!(
        decide(global(&p2), &request(&h, NOW + 4), &mut TestRng(0)).cookie_state,
        CookieState::Invalid
    );
    // A plain cookie is not accepted once secrets are on (no downgrade).
    let mut plain = Client::new();
    plain.visit(
        global(&plugin(&two_versions(50, 100, ""))),
        &[],
        NOW,
        &mut rng,
    );
    let value = format!("sticky-canary={}", plain.jar.unwrap());
    let h = headers(&[("cookie", &value)]);
    assert_eq!(
        decide(global(&p1), &request(&h, NOW), &mut TestRng(0)).cookie_state,
        CookieState::Invalid
    );
}

// ======================================================================
// Persistent mode: the endpoint learnt from the response
// ======================================================================

#[test]
fn persistent_mode_pins_the_endpoint() {
    let persistent = |extra: &str| {
        plugin(&two_versions(
            50,
            100,
            &format!(r#"{SENTINEL},"session":{{"mode":"persistent","secrets":["{K1}"]{extra}}}"#),
        ))
    };
    let p = persistent("");
    let policy = global(&p);
    assert!(policy.change_on_failure());
    let mut rng = rng_with_bucket(b"", 100, |b| b >= 50);
    let mut c = Client::new();
    let visit =
        |c: &mut Client,
         policy,
         extra: &[(&str, &str)],
         upstream: Option<&str>,
         t: u64,
         rng: &mut TestRng| { c.visit_full(policy, extra, None, upstream, NOW + t, rng) };
    let v = visit(&mut c, policy, &[], Some("10.0.0.5:8080"), 0, &mut rng);
    assert_eq!((v.endpoint, v.write), (None, true));
    assert_eq!(
        v.decision.session.endpoint.as_deref(),
        Some("10.0.0.5:8080")
    );
    // Pinned: sent to Envoy, nothing to write while the same pod answers.
    let v = visit(&mut c, policy, &[], Some("10.0.0.5:8080"), 1, &mut rng);
    assert_eq!(
        (v.endpoint.as_deref(), v.write),
        (Some("10.0.0.5:8080"), false)
    );
    // Another pod answered (the pinned one failed): re-pinned.
    let v = visit(&mut c, policy, &[], Some("10.0.0.6:8080"), 2, &mut rng);
    assert_eq!(
        (v.endpoint.as_deref(), v.write),
        (Some("10.0.0.5:8080"), true)
    );
    let v = visit(&mut c, policy, &[], None, 3, &mut rng);
    assert_eq!(
        (v.endpoint.as_deref(), v.write),
        (Some("10.0.0.6:8080"), false)
    );
    // The pin belongs to the version: a rule moving the user drops it.
    let v = visit(
        &mut c,
        policy,
        &[("x-canary", "always")],
        Some("10.0.1.9:8080"),
        4,
        &mut rng,
    );
    assert_eq!(
        (v.version.as_str(), v.endpoint, v.write),
        ("canary", None, true)
    );
    assert_eq!(
        v.decision.session.endpoint.as_deref(),
        Some("10.0.1.9:8080")
    );

    // An upstream address that cannot be a pin (empty, over 64 bytes) is
    // not learnt.
    let long = format!("[{}]:8080", "f".repeat(60));
    for bad in ["", long.as_str()] {
        let v = visit(
            &mut c,
            policy,
            &[("x-canary", "always")],
            Some(bad),
            5,
            &mut rng,
        );
        assert_eq!(
            (v.endpoint.as_deref(), v.write),
            (Some("10.0.1.9:8080"), false),
            "{bad:?}"
        );
    }

    // change_on_failure false: the pin stays whoever answers.
    let p = persistent(r#","change_on_failure":false"#);
    let policy = global(&p);
    let mut c = Client::new();
    visit(&mut c, policy, &[], Some("10.0.0.5:8080"), 0, &mut rng);
    let v = visit(&mut c, policy, &[], Some("10.0.0.6:8080"), 1, &mut rng);
    assert_eq!(
        (v.endpoint.as_deref(), v.write),
        (Some("10.0.0.5:8080"), false)
    );
    assert_eq!(
        v.decision.session.endpoint.as_deref(),
        Some("10.0.0.5:8080")
    );
}

#[test]
fn balanced_mode_ignores_the_upstream() {
    let p = plugin(&two_versions(50, 100, ""));
    let policy = global(&p);
    let mut c = Client::new();
    let mut rng = TestRng(4);
    c.visit_full(policy, &[], None, Some("10.0.0.5:8080"), NOW, &mut rng);
    let cookie = format!("sticky-canary={}", c.jar.clone().unwrap());
    let h = headers(&[("cookie", &cookie)]);
    let req = request(&h, NOW + 1);
    let d = decide(policy, &req, &mut rng);
    assert_eq!(d.endpoint, None);
    let mut ex = Exchange::new(Rc::clone(policy), d, &req);
    assert!(!ex.upstream_answered(&Upstream {
        address: Some("10.0.0.6:8080"),
        ..Upstream::default()
    }));
    assert_eq!(ex.decision.session.endpoint, None);
}

// ======================================================================
// Set-Cookie rendering: exact strings
// ======================================================================

const OLD_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36";
const NEW_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IOS12: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1";

#[test]
fn set_cookie_exact_strings() {
    #[rustfmt::skip]
    let rows: &[(&str, Option<&str>, &str)] = &[
        ("{}", None, "sticky-canary=VAL; Path=/; HttpOnly"),
        (r#"{"http_only":false}"#, None, "sticky-canary=VAL; Path=/"),
        (r#"{"name":"sc","same_site":"Lax"}"#, None, "sc=VAL; Path=/; HttpOnly; SameSite=Lax"),
        (r#"{"same_site":"strict","secure":true}"#, None, "sticky-canary=VAL; Path=/; Secure; HttpOnly; SameSite=Strict"),
        (r#"{"path":"/shop","domain":"example.com","max_age":3600}"#, None,
         "sticky-canary=VAL; Path=/shop; Domain=example.com; Max-Age=3600; HttpOnly"),
        // Expires is now + expires, as an IMF-fixdate (NOW = 2027-01-15 08:00:00 UTC)
        (r#"{"expires":7200}"#, None, "sticky-canary=VAL; Path=/; Expires=Fri, 15 Jan 2027 10:00:00 GMT; HttpOnly"),
        (r#"{"name":"sc","path":"/app","domain":".example.com","max_age":3600,"expires":7200,"secure":true,"http_only":false,"same_site":"None"}"#, None,
         "sc=VAL; Path=/app; Domain=.example.com; Max-Age=3600; Expires=Fri, 15 Jan 2027 10:00:00 GMT; Secure; SameSite=None"),
        // compat: SameSite=None left out for browsers that mishandle it
        (r#"{"secure":true,"same_site":"None","same_site_none_compat":true}"#, Some(OLD_CHROME), "sticky-canary=VAL; Path=/; Secure; HttpOnly"),
        (r#"{"secure":true,"same_site":"None","same_site_none_compat":true}"#, Some(IOS12), "sticky-canary=VAL; Path=/; Secure; HttpOnly"),
        (r#"{"secure":true,"same_site":"None","same_site_none_compat":true}"#, Some(NEW_CHROME), "sticky-canary=VAL; Path=/; Secure; HttpOnly; SameSite=None"),
        (r#"{"secure":true,"same_site":"None","same_site_none_compat":true}"#, None, "sticky-canary=VAL; Path=/; Secure; HttpOnly; SameSite=None"),
        // without compat the user agent is not consulted
        (r#"{"secure":true,"same_site":"None"}"#, Some(OLD_CHROME), "sticky-canary=VAL; Path=/; Secure; HttpOnly; SameSite=None"),
    ];
    for (cookie, ua, want) in rows {
        let p = plugin(&two_versions(
            10,
            100,
            &format!(r#","session":{{"cookie":{cookie}}}"#),
        ));
        let spec = &global(&p).cookie();
        assert_eq!(
            setcookie::render(spec, "VAL", NOW, *ua),
            *want,
            "{cookie} {ua:?}"
        );
    }
}

#[test]
fn set_cookie_through_a_visit() {
    let p = plugin(&two_versions(
        10,
        100,
        r#","session":{"cookie":{"name":"sc","max_age":600,"secure":true}}"#,
    ));
    let policy = global(&p);
    let mut c = Client::new();
    let v = c.visit(policy, &[("user-agent", OLD_CHROME)], NOW, &mut TestRng(2));
    let value = c.jar.clone().unwrap();
    assert_eq!(
        v.set_cookie.unwrap(),
        format!("sc={value}; Path=/; Max-Age=600; Secure; HttpOnly")
    );
    assert!(value.starts_with('1') && value.len() < 60, "{value}");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{value}"
    );
    assert_eq!(
        c.visit(policy, &[], NOW + 1, &mut TestRng(2)).set_cookie,
        None
    );
}

// ======================================================================
// Per-route entries: selection, merge precedence, pass-through
// ======================================================================

const ROUTES: &str = r#"{
    "versions": [{"name": "stable"}, {"name": "canary", "weight": 0}],
    "session": {"cookie": {"name": "g", "secure": true, "same_site": "Lax"}, "ttl": 600},
    "rules": [{"header": "x-canary", "version": "canary"}],
    "routes": [
        {"name": "api", "match": {"path_prefix": ["/api/", "/v2/api/"]},
         "session": {"cookie": {"name": "api"}},
         "versions": [{"name": "blue"}, {"name": "green", "weight": 100}],
         "rules": []},
        {"name": "shop", "match": {"authority": "*.shop.example.com"}, "rollback": true,
         "versions": [{"name": "stable"}, {"name": "canary", "weight": 25}]},
        {"name": "admin", "match": {"route_name": "admin-route"}, "enabled": false},
        {"name": "both", "match": {"virtual_host": ["vh1", "vh2"], "path_prefix": "/both"},
         "weight_total": 1000, "versions": [{"name": "stable"}, {"name": "canary", "weight": 1}]},
        {"match": {"path_prefix": "/api/"}, "stickiness": "legacy"}
    ]
}"#;

fn scope<'a>(
    p: &'a sticky_canary::Plugin,
    pairs: &[(&str, &str)],
    route: Option<&str>,
    vhost: Option<&str>,
) -> Option<&'a str> {
    let h = headers(pairs);
    let req = Request {
        headers: &h,
        route_name: route,
        virtual_host: vhost,
        client_address: None,
        now: NOW,
    };
    p.select(&req).map(|pol| pol.scope())
}

#[test]
fn route_selection() {
    let p = plugin(ROUTES);
    assert!(p.needs_route_name && p.needs_virtual_host);
    assert_eq!(p.routes.len(), 5);
    assert_eq!(
        p.routes[4].name, "routes[4]",
        "an unnamed entry is named by its index"
    );
    #[rustfmt::skip]
    let rows: &[(&[(&str, &str)], Option<&str>, Option<&str>, Option<&str>)] = &[
        (&[(":path", "/")], None, None, Some("global")),
        (&[(":path", "/api/users")], None, None, Some("api")),
        (&[(":path", "/api/users?x=1")], None, None, Some("api")),
        (&[(":path", "/v2/api/x")], None, None, Some("api")),
        (&[(":path", "/apix")], None, None, Some("global")),
        (&[(":path", "/API/users")], None, None, Some("global")),     // prefixes are case-sensitive
        (&[(":path", "/x?/api/")], None, None, Some("global")),       // the query is not the path
        (&[(":authority", "www.shop.example.com:8443")], None, None, Some("shop")),
        (&[(":authority", "WWW.Shop.Example.COM")], None, None, Some("shop")),
        (&[("host", "a.b.shop.example.com")], None, None, Some("shop")), // Host when :authority is absent
        (&[(":authority", "shop.example.com")], None, None, Some("global")),
        (&[(":authority", "evilshop.example.com")], None, None, Some("global")),
        (&[(":path", "/")], Some("admin-route"), None, None),           // disabled: pass-through
        (&[(":path", "/api/x")], Some("admin-route"), None, Some("api")), // first match wins
        (&[(":path", "/both/x")], None, Some("vh2"), Some("both")),
        (&[(":path", "/other")], None, Some("vh1"), Some("global")),  // every field must match
        (&[(":path", "/both/x")], None, None, Some("global")),
        (&[(":path", "/both/x")], None, Some("vh3"), Some("global")),
    ];
    for (pairs, route, vhost, want) in rows {
        assert_eq!(
            scope(&p, pairs, *route, *vhost),
            *want,
            "{pairs:?} route {route:?} vhost {vhost:?}"
        );
    }
}

#[test]
fn route_entries_deep_merge_over_the_global_object() {
    let p = plugin(ROUTES);
    let g = global(&p);
    let api = p.routes[0].policy.as_ref().unwrap();
    let shop = p.routes[1].policy.as_ref().unwrap();
    let both = p.routes[3].policy.as_ref().unwrap();
    let shadow = p.routes[4].policy.as_ref().unwrap();
    assert!(p.routes[2].policy.is_none());
    // Objects merge key by key: the entry's cookie name, the global rest.
    assert_eq!(
        (g.cookie().name(), api.cookie().name(), shop.cookie().name()),
        ("g", "api", "g")
    );
    assert!(
        api.cookie().secure() == sticky_canary::cookies::Secure::Always
            && api.cookie().same_site() == g.cookie().same_site()
    );
    assert_eq!((api.ttl(), shop.ttl()), (600, 600));
    // Arrays are replaced whole.
    let names = |pol: &sticky_canary::Policy| {
        pol.versions()
            .iter()
            .map(|v| v.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(api), ["blue", "green"]);
    assert_eq!(api.weights_at(NOW), [0, 100]);
    assert!(api.rules().is_empty());
    assert_eq!(shop.rules().len(), 1, "rules not overridden are inherited");
    assert_eq!(shop.weights_at(NOW), [75, 25]);
    // Scalars: the entry's value, else the global one.
    assert!(shop.rollback() && !g.rollback() && !api.rollback());
    assert_eq!((both.total(), g.total()), (1000, 100));
    assert!(g.sticky() && !shadow.sticky());
    assert_eq!(
        names(shadow),
        ["stable", "canary"],
        "inherited from the global object"
    );
    // And decisions use the entry's policy.
    let h = headers(&[(":path", "/api/orders")]);
    let req = request(&h, NOW);
    let d = decide(p.select(&req).unwrap(), &req, &mut TestRng(0));
    assert_eq!(vname(api, &d), "green");
}

#[test]
fn pass_through() {
    for config in ["", "{}", r#"{"session":{"cookie":{"name":"x"}}}"#] {
        let p = plugin(config);
        assert!(p.global.is_none() && p.routes.is_empty(), "{config}");
        assert!(
            p.select(&request(&headers(&[(":path", "/")]), NOW))
                .is_none(),
            "{config}"
        );
    }
    // Without global versions only matching entries are active.
    let p = plugin(
        r#"{"session":{"cookie":{"name":"shared"}},
            "rules":[{"header":"x-canary","version":"canary"}],
            "routes":[{"name":"a","match":{"path_prefix":"/a"},
                       "versions":[{"name":"stable"},{"name":"canary","weight":5}]}]}"#,
    );
    assert_eq!(scope(&p, &[(":path", "/a/1")], None, None), Some("a"));
    assert_eq!(scope(&p, &[(":path", "/b")], None, None), None);
    let a = p.routes[0].policy.as_ref().unwrap();
    assert_eq!((a.cookie().name(), a.rules().len()), ("shared", 1));
    assert!(!p.needs_route_name && !p.needs_virtual_host);
    // A disabled entry passes its routes through even with a global policy.
    let p = plugin(&two_versions(
        10,
        100,
        r#","routes":[{"match":{"path_prefix":"/healthz"},"enabled":false}]"#,
    ));
    assert_eq!(scope(&p, &[(":path", "/healthz")], None, None), None);
    assert_eq!(scope(&p, &[(":path", "/")], None, None), Some("global"));
}

// ======================================================================
// Timed ramps
// ======================================================================

#[test]
fn ramp_weights_over_time() {
    // start = NOW (2027-01-15T08:00:00Z), 1000 s, 0 -> 100, smooth.
    let p = plugin(
        r#"{"versions":[{"name":"stable"},{"name":"canary","ramp":{"start":"2027-01-15T08:00:00Z","duration":1000,"to":100}}]}"#,
    );
    let w = &global(&p).versions()[1].weight();
    assert_eq!(
        *w,
        Weight::Ramp {
            start: NOW,
            end: NOW + 1000,
            from: 0,
            to: 100,
            steps: 0
        }
    );
    for (t, want) in [
        (0, 0),
        (NOW - 1, 0),
        (NOW, 0),
        (NOW + 9, 0),
        (NOW + 10, 1),
        (NOW + 500, 50),
        (NOW + 999, 99),
        (NOW + 1000, 100),
        (u64::MAX, 100),
    ] {
        assert_eq!(w.at(t), want, "t = {t}");
    }
    assert_eq!(global(&p).weights_at(NOW + 250), [75, 25]);

    // Stepped ramp down, end given as Unix seconds, with an offset start.
    let p = plugin(&format!(
        r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","ramp":{{"start":"2027-01-15T09:00:00+01:00","end":{},"from":90,"to":10,"steps":4}}}}]}}"#,
        NOW + 1000
    ));
    let w = &global(&p).versions()[1].weight();
    for (dt, want) in [
        (0, 90),
        (249, 90),
        (250, 70),
        (499, 70),
        (500, 50),
        (750, 30),
        (999, 30),
        (1000, 10),
        (5000, 10),
    ] {
        assert_eq!(w.at(NOW + dt), want, "+{dt}s");
    }
}

#[test]
fn ramp_moves_users_as_time_passes() {
    let p = plugin(&format!(
        r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","ramp":{{"start":{NOW},"duration":100,"to":100}}}}]{USER_KEY}}}"#
    ));
    let policy = global(&p);
    for i in 0..200 {
        let user = format!("user-{i}");
        let b = u64::from(bucket_of(&user, b"", 100));
        let h = headers(&[("x-user", &user)]);
        let at = |t: u64| vname(policy, &decide(policy, &request(&h, t), &mut TestRng(0)));
        // weight(t) = t - NOW here: the user moves once the weight passes the bucket.
        assert_eq!(at(NOW + b), "stable", "{user} bucket {b}");
        assert_eq!(at(NOW + b + 1), "canary", "{user} bucket {b}");
    }
}

#[test]
fn ramps_are_monotonic() {
    for (from, to, steps, span) in [
        (0, 100, 0, 1000),
        (100, 0, 0, 1000),
        (5, 95, 7, 3601),
        (80, 20, 3, 10),
        (0, 100, 10_000, 86_400),
        (0, 1_000_000, 0, 7),
    ] {
        let w = Weight::Ramp {
            start: NOW,
            end: NOW + span,
            from,
            to,
            steps,
        };
        let mut prev = w.at(NOW - 1);
        assert_eq!(prev, from);
        for t in (NOW..=NOW + span + 1).step_by(usize::try_from((span / 997).max(1)).unwrap()) {
            let cur = w.at(t);
            if to >= from {
                assert!(
                    cur >= prev && cur <= to,
                    "{from}->{to}/{steps} at +{}: {prev} then {cur}",
                    t - NOW
                );
            } else {
                assert!(
                    cur <= prev && cur >= to,
                    "{from}->{to}/{steps} at +{}: {prev} then {cur}",
                    t - NOW
                );
            }
            prev = cur;
        }
        assert_eq!(w.at(NOW + span), to);
    }
}

#[test]
fn ramp_steps_are_equal() {
    let w = Weight::Ramp {
        start: 0,
        end: 10,
        from: 0,
        to: 100,
        steps: 4,
    };
    let seen: Vec<u32> = (0..=10).map(|t| w.at(t)).collect();
    for v in &seen {
        assert!([0, 25, 50, 75, 100].contains(v), "{seen:?}");
    }
}

#[test]
fn route_entry_replaces_the_key_source_whole() {
    let p = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":50}],
            "session":{"key":{"from":"header","name":"x-user-id"}},
            "routes":[{"name":"ip","match":{"path_prefix":"/ip"},
                       "session":{"key":{"from":"client_ip","xff_trusted_hops":1}}}]}"#,
    );
    let entry = p.routes[0].policy.as_ref().unwrap();
    assert_eq!(
        *entry.key_source(),
        sticky_canary::policy::KeySource::ClientIp { hops: 1 }
    );
    let global = p.global.as_ref().unwrap();
    assert_eq!(
        *global.key_source(),
        sticky_canary::policy::KeySource::Header("x-user-id".into())
    );
}

#[test]
fn secrets_from_the_environment() {
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let other = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    std::env::set_var("STICKY_CANARY_TEST_KEYS", format!("{key}, {other}"));
    let p = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],
            "session":{"mode":"persistent","secrets_env":"STICKY_CANARY_TEST_KEYS"}}"#,
    );
    let g = p.global.as_ref().unwrap();
    assert_eq!(g.seal_keys().len(), 2);
    assert_eq!(g.seal_keys()[0].0, [1u8; 32]);
    assert_eq!(g.seal_keys()[1].0, [2u8; 32]);
    std::env::set_var("STICKY_CANARY_TEST_KEYS_BAD", "not-a-key");
    let e = sticky_canary::compile_json(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":1}],
            "session":{"secrets_env":"STICKY_CANARY_TEST_KEYS_BAD"}}"#,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "invalid plugin config: session.secrets_env[0] = <9 characters, not shown>: \
         must be base64 of exactly 32 random bytes (openssl rand -base64 32)"
    );
}

#[test]
fn draining_users_are_not_renewed() {
    // ttl 100: a canary user at t0, then weight 0 without rollback.
    let on = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":100}],
            "session":{"ttl":100}}"#,
    );
    let off = plugin(
        r#"{"versions":[{"name":"v1"},{"name":"v2","weight":0}],
            "session":{"ttl":100}}"#,
    );
    let (pon, poff) = (global(&on), global(&off));
    let d0 = decide(pon, &request(&headers(&[]), NOW), &mut TestRng(7));
    assert_eq!(vname(pon, &d0), "v2");
    let cookie = format!(
        "sticky-canary={}",
        d0.session.encode("sticky-canary", &[], &[0; 24])
    );
    // Late in the session's life, still on the canary, but no renewal.
    let h = headers(&[("cookie", cookie.as_str())]);
    let d1 = decide(poff, &request(&h, NOW + 90), &mut TestRng(8));
    assert_eq!(
        (vname(poff, &d1), d1.basis),
        ("v2".to_string(), Basis::Remembered)
    );
    assert!(!d1.write_cookie);
    assert_eq!(d1.session.expiry, d0.session.expiry);
    // Past the expiry the user is a new user: never the weight-0 canary.
    let d2 = decide(poff, &request(&h, NOW + 100), &mut TestRng(9));
    assert_eq!(
        (vname(poff, &d2), d2.basis),
        ("v1".to_string(), Basis::Weight)
    );
    // Not draining (canary still weighted): renewed in the second half.
    let d3 = decide(pon, &request(&h, NOW + 90), &mut TestRng(8));
    assert!(d3.write_cookie);
    assert_eq!(u64::from(d3.session.expiry), NOW + 90 + 100);
}

/// One definition of draining (`policy::drains`), counted by the filter as
/// `reason="drain"`: every user the session remembers on a canary at weight
/// 0, placed by a rule or by weight, stays and is not renewed. The default
/// version never drains: a `never` user kept on it at weight 0 is
/// returning, and renewed.
#[test]
fn draining_is_one_thing_for_rule_and_weight_users_and_never_the_default() {
    use sticky_canary::session::{Origin, Session};
    use sticky_canary::Reason;
    let cfg = |canary: u32, extra: &str| {
        plugin(&format!(
            r#"{{"versions":[{{"name":"v1"}},{{"name":"v2","weight":{canary}}}],
                "rules":[{{"header":"x-canary","version":"v2"}}],
                "session":{{"ttl":100}}{extra}}}"#
        ))
    };
    let (at0, at100, rollback) = (cfg(0, ""), cfg(100, ""), cfg(0, r#","rollback":true"#));
    let cookie = |version: &str, origin: Origin| {
        let s = Session {
            key: *b"0123456789abcdef",
            version_id: hash::fnv32(version.as_bytes()),
            origin,
            expiry: (NOW + 100) as u32,
            endpoint: None,
        };
        format!("sticky-canary={}", s.encode("sticky-canary", &[], &[0; 24]))
    };
    // Late in the session (less than half the ttl left): renewal is due
    // unless the user drains.
    let late = NOW + 90;
    for origin in [Origin::Rule, Origin::Weight] {
        let value = cookie("v2", origin);
        let h = headers(&[("cookie", &value)]);
        let p = global(&at0);
        let d = decide(p, &request(&h, late), &mut TestRng(1));
        assert_eq!(
            (vname(p, &d).as_str(), d.basis, d.reason),
            ("v2", Basis::Remembered, Reason::Drain),
            "{origin:?}"
        );
        assert!(d.draining() && !d.write_cookie, "{origin:?}: not renewed");
        let p = global(&rollback);
        let d = decide(p, &request(&h, late), &mut TestRng(1));
        assert_eq!(
            (vname(p, &d).as_str(), d.reason, d.write_cookie),
            ("v1", Reason::Rollback, true),
            "{origin:?}"
        );
    }
    // `never` put this user on v1; v2 now holds the whole total, so v1 is
    // at weight 0, and the user stays there: returning, and renewed.
    let value = cookie("v1", Origin::Rule);
    let h = headers(&[("cookie", &value)]);
    let p = global(&at100);
    assert_eq!(p.weights_at(late), [0, 100]);
    let d = decide(p, &request(&h, late), &mut TestRng(1));
    assert_eq!(
        (vname(p, &d).as_str(), d.basis, d.reason),
        ("v1", Basis::Remembered, Reason::Returning)
    );
    assert!(!d.draining() && d.write_cookie, "the default never drains");
    assert_eq!(u64::from(d.session.expiry), late + 100);
}

/// Browsers send two copies of a cookie after its Path or Domain changed,
/// and a second cookie can be planted beside the user's own. Copies that
/// agree keep the session; copies that disagree are not trusted, and the
/// user is placed by weight with a key derived from every copy: stable,
/// and not picked by any one copy.
#[test]
fn duplicate_session_cookies() {
    let p = plugin(&two_versions(
        50,
        100,
        &format!(r#"{SENTINEL},"session":{{"ttl":3600}}"#),
    ));
    let policy = global(&p);
    let mut rng = TestRng(5);
    // A weight-placed user, and a rule-placed canary user (the attacker).
    let mut user = Client::new();
    let first = user.visit(policy, &[], NOW, &mut rng);
    let mut attacker = Client::new();
    let planted = attacker.visit(policy, &[("x-canary", "always")], NOW, &mut rng);
    assert_eq!(planted.version, "canary");
    let (mine, theirs) = (user.jar.clone().unwrap(), attacker.jar.clone().unwrap());
    // The same user's session issued again later (new expiry).
    let mut later = user.clone();
    let renewed = later.visit(policy, &[], NOW + 3000, &mut rng);
    assert!(renewed.write, "renewed after half the ttl");
    let mine_later = later.jar.clone().unwrap();
    assert_ne!(mine, mine_later);

    let run = |cookies: &[String], now: u64| {
        let mut h = headers(&[(":path", "/")]);
        h.extend(cookies.iter().map(|c| header("cookie", c)));
        decide(policy, &request(&h, now), &mut TestRng(99))
    };
    let c = |v: &str| format!("sticky-canary={v}");
    // Agreeing copies, in one header or two: the session stays.
    for cookies in [
        vec![format!("{}; {}", c(&mine), c(&mine))],
        vec![c(&mine), c(&mine)],
        vec![c(&mine_later), c(&mine)],
        vec![format!("{}; {}", c(&mine), c("1garbage"))],
        vec![c("2AAAA"), c(&mine)],
    ] {
        let d = run(&cookies, NOW + 3100);
        assert_eq!(d.cookie_state, CookieState::Valid, "{cookies:?}");
        assert_eq!(d.session.key, first.decision.session.key, "{cookies:?}");
        assert_eq!(vname(policy, &d), first.version, "{cookies:?}");
    }
    // The latest expiry counts: no renewal is due with the later copy.
    let d = run(&[c(&mine_later), c(&mine)], NOW + 3100);
    assert!(!d.write_cookie);

    // Conflicting copies: the planted rule-canary cookie does not steer.
    let a = run(&[c(&theirs), c(&mine)], NOW + 10);
    let b = run(&[c(&mine), c(&theirs)], NOW + 20);
    for d in [&a, &b] {
        assert_eq!(d.cookie_state, CookieState::Conflicting);
        assert_eq!(d.basis, Basis::Weight, "never remembered");
        assert!(!d.write_cookie, "no Set-Cookie while the copies conflict");
        assert_ne!(d.session.key, first.decision.session.key);
        assert_ne!(d.session.key, planted.decision.session.key);
    }
    assert_eq!(a.session.key, b.session.key, "the same key in any order");
    assert_eq!((a.version, a.hash), (b.version, b.hash), "stable placement");
    // The derived key is the one the bucket uses.
    let mut concat = [first.decision.session.key, planted.decision.session.key];
    concat.sort_unstable();
    assert_eq!(
        a.session.key,
        sticky_canary::hash::derive_key(&concat.concat())
    );
}

/// ingress-nginx parity: a route entry matched by one literal path (of any
/// type) scopes its cookie to that path unless a path is set; `"secure": "auto"` follows the
/// request's scheme; the SameSite=None compatibility switch is accepted
/// with Lax.
#[test]
fn ingress_nginx_cookie_defaults() {
    let p = plugin(
        r#"{"session":{"cookie":{"name":"sc","secure":"auto","same_site":"Lax","same_site_none_compat":true}},
            "routes":[
              {"name":"shop","match":{"path_prefix":"/shop/"},"versions":[{"name":"a"},{"name":"b","weight":0}]},
              {"name":"two","match":{"path_prefix":["/x/","/y/"]},"versions":[{"name":"a"},{"name":"b","weight":0}]},
              {"name":"set","match":{"path_prefix":"/z/"},"versions":[{"name":"a"},{"name":"b","weight":0}],
               "session":{"cookie":{"path":"/"}}}]}"#,
    );
    let paths: Vec<&str> = p
        .routes
        .iter()
        .map(|r| r.policy.as_ref().unwrap().cookie().path())
        .collect();
    assert_eq!(paths, ["/shop/", "/", "/"]);
    // The other path types: the cookie follows the location path as the
    // Ingress wrote it (ingress-nginx's `location_path`); a regex is no
    // cookie path, so `/`.
    let typed = plugin(
        r#"{"session":{"cookie":{"name":"sc"}},
            "routes":[
              {"name":"exact","match":{"path_exact":"/login"},"versions":[{"name":"a"},{"name":"b","weight":0}]},
              {"name":"sep","match":{"authority":"a.example","path_separated_prefix":"/foo/bar"},"versions":[{"name":"a"},{"name":"b","weight":0}]},
              {"name":"re","match":{"path_regex":"(?i)^/foo/.*"},"versions":[{"name":"a"},{"name":"b","weight":0}]},
              {"name":"both","match":{"path_exact":"/a","path_separated_prefix":"/a"},"versions":[{"name":"a"},{"name":"b","weight":0}]}]}"#,
    );
    let paths: Vec<&str> = typed
        .routes
        .iter()
        .map(|r| r.policy.as_ref().unwrap().cookie().path())
        .collect();
    assert_eq!(paths, ["/login", "/foo/bar", "/", "/"]);
    let global_path = plugin(
        r#"{"session":{"cookie":{"path":"/app"}},
            "routes":[{"match":{"path_prefix":"/shop/"},"versions":[{"name":"a"},{"name":"b","weight":0}]}]}"#,
    );
    assert_eq!(
        global_path.routes[0]
            .policy
            .as_ref()
            .unwrap()
            .cookie()
            .path(),
        "/app"
    );
    let shop = p.routes[0].policy.as_ref().unwrap();
    let render = |https| setcookie::render_for(shop.cookie(), "V", NOW, None, https);
    assert_eq!(
        render(true),
        "sc=V; Path=/shop/; Secure; HttpOnly; SameSite=Lax"
    );
    assert_eq!(render(false), "sc=V; Path=/shop/; HttpOnly; SameSite=Lax");
    for (h, https) in [
        (vec![(":scheme", "https")], true),
        (vec![(":scheme", "http")], false),
        (
            vec![(":scheme", "http"), ("x-forwarded-proto", "HTTPS")],
            true,
        ),
        (vec![], false),
    ] {
        let h = headers(&h);
        assert_eq!(request(&h, NOW).is_https(), https, "{h:?}");
    }
}

/// The debug header and filter state explain the decision without secrets
/// or endpoint addresses; both are off unless configured.
#[test]
fn decision_extras_never_carry_secrets_or_endpoints() {
    let p = plugin(
        r#"{"versions":[{"name":"a"},{"name":"b","weight":0}],"filter_state":true,"debug_header":"x-debug",
            "session":{"mode":"persistent","secrets":["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]}}"#,
    );
    let policy = global(&p);
    let mut c = Client::new();
    let mut rng = TestRng(3);
    c.visit_full(policy, &[], None, Some("10.0.0.5:8080"), NOW, &mut rng);
    let cookie = format!("sticky-canary={}", c.jar.clone().unwrap());
    let h = headers(&[("cookie", &cookie)]);
    let req = request(&h, NOW + 1);
    let d = decide(policy, &req, &mut rng);
    let ex = Exchange::new(Rc::clone(policy), d, &req);
    let extras = ex.extras(None);
    let [(name, value)] = extras.headers.as_slice() else {
        panic!("{extras:?}")
    };
    assert_eq!(name, "x-debug");
    assert_eq!(
        value,
        "route=global; version=a; reason=returning; cookie=valid; session=none; pinned=yes"
    );
    // The pin goes to filter state (for the operator's access log), never
    // into the client-visible header.
    assert_eq!(
        extras.properties,
        [
            ("sticky_canary.session", b"none".to_vec()),
            ("sticky_canary.endpoint", b"10.0.0.5:8080".to_vec())
        ]
    );
    let off = plugin(&two_versions(0, 100, ""));
    let req = request(&h, NOW);
    let d = decide(global(&off), &req, &mut rng);
    assert_eq!(
        Exchange::new(Rc::clone(global(&off)), d, &req).extras(None),
        Default::default()
    );
}

// ======================================================================
// The route cache
// ======================================================================

#[test]
fn the_plan_asks_for_a_route_cache_clear_exactly_when_it_changes_request_headers() {
    use sticky_canary::pipeline::on_request;
    let p = plugin(
        r#"{"routes":[{"name":"a","match":{"authority":["a.example"]},
             "versions":[{"name":"stable"},{"name":"canary","weight":50}]}]}"#,
    );
    // Covered: the version and hash headers are set.
    let h = headers(&[(":authority", "a.example"), (":path", "/")]);
    let plan = on_request(&p, &request(&h, NOW), &mut TestRng(0));
    assert_eq!(plan.set.len(), 2);
    assert!(plan.clears_route_cache());
    // Not covered, and the client sent none of our headers: nothing changes,
    // the route Envoy chose stands.
    let h = headers(&[(":authority", "b.example"), (":path", "/")]);
    let plan = on_request(&p, &request(&h, NOW), &mut TestRng(0));
    assert!(plan.set.is_empty() && plan.remove.is_empty());
    assert!(!plan.clears_route_cache());
    // Not covered, but the client sent x-canary-version: it is removed, and
    // the route it may have picked must be matched again without it.
    let h = headers(&[
        (":authority", "b.example"),
        (":path", "/"),
        ("x-canary-version", "canary"),
    ]);
    let plan = on_request(&p, &request(&h, NOW), &mut TestRng(0));
    assert_eq!(plan.remove, ["x-canary-version"]);
    assert!(plan.clears_route_cache());
}
