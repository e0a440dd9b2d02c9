//! Property tests (proptest) of the rollout guarantees, over thousands of
//! random session keys and random weight sequences.
//!
//! Tolerances: shares are checked against the configured share `p` with
//! |observed - p| <= 5 * sqrt(p * (1 - p) / n) + 1 / n, i.e. five binomial
//! standard deviations (plus one user of rounding). For a fair hash a case
//! fails by chance with probability < 1e-6, so over all cases of a run a
//! spurious failure is below 1e-4. With n = 4000 users and p = 0.5 that is
//! about +-4.0 percentage points; with p = 0.1, +-2.4.
//!
//! Everything else (who moves when a weight changes, drain, rollback, ramp
//! monotonicity, cookie round trips) is exact, not statistical.
//!
//! proptest runs natively and, as it needs nothing but std, also inside
//! wasm32-wasip1 under the WASI runner (fewer cases there: an unoptimised
//! wasm build is several times slower). Failure persistence is off so no test writes
//! files.

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
use proptest::prelude::*;
use sticky_canary::policy::{Policy, Weight};
use sticky_canary::session::{Opened, Origin, SealKey, Session};
use sticky_canary::{compile_json, hash, Basis, Plugin};

/// Cases per property: enough natively, affordable inside wasm.
const CASES: u32 = if cfg!(target_family = "wasm") { 16 } else { 48 };

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Five-sigma binomial tolerance for a share `p` over `n` draws.
fn tolerance(p: f64, n: usize) -> f64 {
    let n = n as f64;
    5.0 * (p * (1.0 - p) / n).sqrt() + 1.0 / n
}

fn two(w: u32, total: u32, extra: &str) -> Plugin {
    compile_json(&two_versions(w, total, extra)).unwrap()
}

/// A population of users with a generated cookie key each, after a first
/// visit under `policy`: (browser, entropy, bucket, version after visit 1).
struct User {
    client: Client,
    rng: TestRng,
    bucket: u32,
    version: String,
}

fn population(seed: u64, n: usize, policy: &Rc<Policy>, extra: &[(&str, &str)]) -> Vec<User> {
    (0..n as u64)
        .map(|i| {
            let mut rng = TestRng(seed.wrapping_mul(0x1_0000_0001).wrapping_add(i));
            let mut client = Client::new();
            let v = client.visit(policy, extra, NOW, &mut rng);
            let bucket = hash::bucket(policy.seed(), &v.decision.session.key, policy.total());
            User {
                client,
                rng,
                bucket,
                version: v.version,
            }
        })
        .collect()
}

fn canary_share(users: &[User]) -> f64 {
    users.iter().filter(|u| u.version == "canary").count() as f64 / users.len() as f64
}

proptest! {
    #![proptest_config(config())]

    /// Raising the canary weight from w1 to w2 moves exactly the users whose
    /// bucket is in [w1, w2), all from stable to canary; nobody moves back.
    #[test]
    fn raising_moves_exactly_the_new_buckets(seed in any::<u64>(), w1 in 0u32..=100, dw in 0u32..=100) {
        let w2 = (w1 + dw).min(100);
        let (p1, p2) = (two(w1, 100, ""), two(w2, 100, ""));
        let mut users = population(seed, 1000, global(&p1), &[]);
        for u in &mut users {
            prop_assert_eq!(u.version == "canary", u.bucket < w1);
            let v = u.client.visit(global(&p2), &[], NOW + 1, &mut u.rng);
            let moved = v.version != u.version;
            prop_assert_eq!(moved, (w1..w2).contains(&u.bucket), "bucket {} {}->{}", u.bucket, w1, w2);
            if moved {
                prop_assert_eq!((u.version.as_str(), v.version.as_str()), ("stable", "canary"));
                prop_assert!(v.write, "a moved user gets a new cookie");
            } else {
                prop_assert!(!v.write, "an unmoved user gets no Set-Cookie");
            }
        }
    }

    /// Lowering the canary weight from w1 > 0 to w2 > 0 moves exactly the
    /// canary users with bucket in [w2, w1) back to stable.
    #[test]
    fn lowering_moves_only_canary_to_stable(seed in any::<u64>(), w1 in 1u32..=100, w2 in 1u32..=100) {
        let (w1, w2) = (w1.max(w2), w1.min(w2));
        let (p1, p2) = (two(w1, 100, ""), two(w2, 100, ""));
        let mut users = population(seed, 1000, global(&p1), &[]);
        for u in &mut users {
            let v = u.client.visit(global(&p2), &[], NOW + 1, &mut u.rng);
            let moved = v.version != u.version;
            prop_assert_eq!(moved, (w2..w1).contains(&u.bucket), "bucket {} {}->{}", u.bucket, w1, w2);
            if moved {
                prop_assert_eq!((u.version.as_str(), v.version.as_str()), ("canary", "stable"));
            }
        }
    }

    /// At weight 0: with rollback every user goes to the default, including
    /// those a rule sent to the canary; without it every user who remembers
    /// the canary stays (drain) and nobody new arrives there.
    #[test]
    fn weight_zero_drains_or_rolls_back(seed in any::<u64>(), w in 1u32..=100, rule_every in 2usize..6) {
        let rule = r#","rules":[{"header":"x-canary","version":"canary"}]"#;
        let p = two(w, 100, rule);
        let drain = two(0, 100, rule);
        let rollback = two(0, 100, &format!(r#"{rule},"rollback":true"#));
        let mut users: Vec<User> = (0..800)
            .map(|i| {
                let extra: &[(&str, &str)] = if i % rule_every == 0 { &[("x-canary", "always")] } else { &[] };
                population(seed ^ (i as u64) << 20, 1, global(&p), extra).pop().unwrap()
            })
            .collect();
        let remembered_canary = users.iter().filter(|u| u.version == "canary").count();
        prop_assert!(remembered_canary >= 800 / rule_every);
        for u in &mut users {
            let mut c = u.client.clone();
            let v = c.visit(global(&drain), &[], NOW + 1, &mut u.rng);
            prop_assert_eq!(&v.version, &u.version, "drain keeps everyone where they were");
            prop_assert!(!v.write);
            if v.version == "canary" {
                prop_assert_eq!(v.basis, Basis::Remembered);
            }
            let v = u.client.visit(global(&rollback), &[], NOW + 1, &mut u.rng);
            prop_assert_eq!(v.version.as_str(), "stable", "rollback empties the canary");
            prop_assert_eq!(v.write, u.version == "canary");
        }
        // New users never reach a weight-0 canary.
        let fresh = population(seed.wrapping_add(1), 500, global(&drain), &[]);
        prop_assert_eq!(canary_share(&fresh), 0.0);
    }

    /// Any sequence of weight changes, with or without rollback: every user
    /// is exactly where a simple model says. The model: a user remembering
    /// the canary at weight 0 stays there unless rollback; otherwise the
    /// version is canary iff bucket < weight.
    #[test]
    fn weight_sequences_follow_the_model(
        seed in any::<u64>(),
        weights in prop::collection::vec(prop_oneof![Just(0u32), Just(100u32), 0u32..=100], 2..8),
        rollback in any::<bool>(),
    ) {
        let extra = if rollback { r#","rollback":true"# } else { "" };
        let plugins: Vec<Plugin> = weights.iter().map(|w| two(*w, 100, extra)).collect();
        let mut users = population(seed, 400, global(&plugins[0]), &[]);
        for (step, (w, p)) in weights.iter().zip(&plugins).enumerate().skip(1) {
            for u in &mut users {
                let drained = *w == 0 && !rollback && u.version == "canary";
                let want = if drained || u.bucket < *w { "canary" } else { "stable" };
                let v = u.client.visit(global(p), &[], NOW + step as u64, &mut u.rng);
                prop_assert_eq!(v.version.as_str(), want, "step {} weights {:?} bucket {}", step, &weights, u.bucket);
                prop_assert_eq!(v.write, v.version != u.version);
                u.version = v.version;
            }
        }
    }

    /// Fairness: over a mix of returning and new users the canary's share is
    /// within five sigma of w / total, for generated keys and for sequential
    /// user ids from a header.
    #[test]
    fn shares_match_the_weights(seed in any::<u64>(), w in 1u32..1000, total_is_1000 in any::<bool>()) {
        let (w, total) = if total_is_1000 { (w, 1000) } else { (w % 99 + 1, 100) };
        let p = two(w, total, "");
        let policy = global(&p);
        let share = f64::from(w) / f64::from(total);
        // 2000 returning users (second visit, with their cookie) + 2000 new ones.
        let mut returning = population(seed, 2000, policy, &[]);
        for u in &mut returning {
            let v = u.client.visit(policy, &[], NOW + 3600, &mut u.rng);
            prop_assert_eq!(&v.version, &u.version);
        }
        let new = population(seed ^ 0xdead_beef, 2000, policy, &[]);
        let all: Vec<User> = returning.into_iter().chain(new).collect();
        let got = canary_share(&all);
        prop_assert!((got - share).abs() <= tolerance(share, all.len()), "share {} for {}/{}", got, w, total);

        // Sequential ids through a header key (user-<offset+i>).
        let hp = two(w, total, r#","session":{"key":{"from":"header","name":"x-user"}}"#);
        let hpol = global(&hp);
        let offset = seed % 1_000_000;
        let n = 4000;
        let canary = (0..n)
            .filter(|i| {
                let id = format!("user-{}", offset + i);
                Client::new().visit(hpol, &[("x-user", &id)], NOW, &mut NoEntropy).version == "canary"
            })
            .count();
        let got = canary as f64 / n as f64;
        prop_assert!((got - share).abs() <= tolerance(share, n as usize), "header share {} for {}/{}", got, w, total);
    }

    /// A/B/n: 60/30/10 over random keys, each share within five sigma.
    #[test]
    fn abn_shares(seed in any::<u64>()) {
        let p = compile_json(r#"{"versions":[{"name":"a"},{"name":"b","weight":30},{"name":"c","weight":10}]}"#).unwrap();
        let policy = global(&p);
        let n = 6000;
        let mut counts = [0usize; 3];
        let mut rng = TestRng(seed);
        for _ in 0..n {
            let d = sticky_canary::decide(policy, &request(&[], NOW), &mut rng);
            counts[d.version] += 1;
        }
        for (i, want) in [0.6, 0.3, 0.1].into_iter().enumerate() {
            let got = counts[i] as f64 / n as f64;
            prop_assert!((got - want).abs() <= tolerance(want, n), "version {} share {} want {}", i, got, want);
        }
    }

    /// Ramps never go back: for t1 <= t2 the weight moves only towards `to`,
    /// stays between `from` and `to`, and hits both ends exactly.
    #[test]
    fn ramps_are_monotonic(
        from in 0u32..=1000,
        to in 0u32..=1000,
        steps in prop_oneof![Just(0u32), 1u32..=100, Just(10_000u32)],
        start in 0u64..4_000_000_000,
        span in 1u64..=10_000_000,
        a in any::<u64>(),
        b in any::<u64>(),
    ) {
        let w = Weight::Ramp { start, end: start + span, from, to, steps };
        let (t1, t2) = {
            let lo = start.saturating_sub(span / 4);
            let range = span + span / 2 + 1;
            let (x, y) = (lo + a % range, lo + b % range);
            (x.min(y), x.max(y))
        };
        let (w1, w2) = (w.at(t1), w.at(t2));
        let (min, max) = (from.min(to), from.max(to));
        prop_assert!((min..=max).contains(&w1) && (min..=max).contains(&w2));
        if to >= from { prop_assert!(w1 <= w2, "{} at {} then {} at {}", w1, t1, w2, t2); }
        else { prop_assert!(w1 >= w2, "{} at {} then {} at {}", w1, t1, w2, t2); }
        prop_assert_eq!(w.at(start), from);
        prop_assert_eq!(w.at(start + span), to);
    }

    /// A ramping config: the canary's users only ever grow while it ramps
    /// up (nobody who reached the canary by weight is moved back).
    #[test]
    fn users_only_join_an_upward_ramp(seed in any::<u64>(), to in 1u32..=100, steps in prop_oneof![Just(0u32), 1u32..=20]) {
        let steps_json = if steps == 0 { String::new() } else { format!(r#","steps":{steps}"#) };
        let p = compile_json(&format!(
            r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","ramp":{{"start":{NOW},"duration":3600,"to":{to}{steps_json}}}}}]}}"#
        )).unwrap();
        let policy = global(&p);
        let mut users = population(seed, 300, policy, &[]);
        for t in (0..=3600).step_by(300) {
            for u in &mut users {
                let v = u.client.visit(policy, &[], NOW + t, &mut u.rng);
                prop_assert!(!(u.version == "canary" && v.version == "stable"), "moved back at +{}s", t);
                prop_assert_eq!(v.version == "canary", u.bucket < policy.versions()[1].weight().at(NOW + t));
                u.version = v.version;
            }
        }
        prop_assert_eq!(users.iter().filter(|u| u.version == "canary").count(), users.iter().filter(|u| u.bucket < to).count());
    }

    /// Every session survives a cookie round trip, plain and sealed, and a
    /// garbled cookie never opens as some other valid session.
    #[test]
    fn cookies_round_trip_and_resist_garbling(
        key in any::<[u8; 16]>(),
        version_id in any::<u32>(),
        rule in any::<bool>(),
        expiry in 1_800_000_001u32..,
        endpoint in prop::option::of("[0-9.:]{1,40}"),
        secret in any::<[u8; 32]>(),
        nonce in any::<[u8; 24]>(),
        flip_at in any::<prop::sample::Index>(),
        flip_to in "[A-Za-z0-9_-]",
    ) {
        let s = Session { key, version_id, origin: if rule { Origin::Rule } else { Origin::Weight }, expiry, endpoint };
        let keys = [SealKey(secret)];
        for ks in [&keys[..0], &keys[..]] {
            let v = s.encode("c", ks, &nonce);
            prop_assert!(v.len() <= 256);
            let opened = Session::open(&v, "c", ks, NOW);
            // Plain cookies carry no endpoint only if none was given; both
            // formats return exactly what was encoded.
            prop_assert_eq!(opened, Opened::Valid { session: s.clone(), stale_key: false });
            let i = flip_at.index(v.len() - 1) + 1; // keep the marker
            let mut garbled = v.clone().into_bytes();
            garbled[i] = flip_to.as_bytes()[0];
            let garbled = String::from_utf8(garbled).unwrap();
            match Session::open(&garbled, "c", ks, NOW) {
                Opened::Invalid => {}
                Opened::Valid { session, .. } => {
                    prop_assert_eq!(&garbled, &v, "a changed cookie opened");
                    prop_assert_eq!(session, s.clone());
                }
            }
        }
    }

    /// Buckets are always inside 0..total, whatever the key, seed and total.
    #[test]
    fn buckets_stay_in_range(seed in ".{0,20}", key in any::<[u8; 16]>(), total in 1u32..=1_000_000) {
        prop_assert!(hash::bucket(seed.as_bytes(), &key, total) < total);
    }
}
