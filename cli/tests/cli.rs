//! The built `sticky-canary` binary, run as users run it: exact output
//! lines and exit statuses, checked against the filter's core called
//! directly (compile errors, buckets, hashes, cookie contents).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use sticky_canary::compile_json;
use sticky_canary::hash::{bucket, derive_key, fnv32, pod_hash};
use sticky_canary::session::{Origin, SealKey, Session};

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

const BIN: &str = env!("CARGO_BIN_EXE_sticky-canary");
/// 2027-01-15T08:00:00Z
const NOW: u64 = 1_800_000_000;
const T: &str = "2027-01-15T08:00:00Z";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn run_in(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the binary");
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(b) = stdin {
            pipe.write_all(b).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Out {
    run_in(args, None, &[])
}

/// A file under the target tmp dir; every call gets its own name, so
/// tests running in parallel never read each other's half-written files.
fn file(name: &str, text: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = dir.join(format!("{}-{n}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A config keyed on a user-id header, so hashes and buckets are known.
const HEADER_KEYED: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","weight":30}],
 "rules":[{"cookie":"canary","value":"yes","version":"canary"},{"header":"x-canary","version":"canary"}],
 "session":{"key":{"from":"header","name":"x-user"},"cookie":{"name":"sc","max_age":3600}},
 "routes":[{"name":"static","match":{"path_prefix":"/static/"},"enabled":false},
           {"name":"api","match":{"path_prefix":"/api/"},"session":{"cookie":{"name":"sc-api"}}}]}"#;

/// Cookie-keyed, plain cookies.
const COOKIE_KEYED: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0}],
 "rules":[{"cookie":"canary","value":"yes","version":"canary"}],
 "session":{"cookie":{"name":"sc","max_age":3600,"secure":true,"same_site":"Lax"}}}"#;

fn sealed_config(keys: &[[u8; 32]]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{}\"", b64url(k))).collect();
    format!(
        r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":50}}],
        "session":{{"mode":"persistent","secrets":[{}],"cookie":{{"name":"sealed"}}}}}}"#,
        list.join(",")
    )
}

fn session(version: &str, origin: Origin, expiry: u64, endpoint: Option<&str>) -> Session {
    Session {
        key: *b"0123456789abcdef",
        version_id: fnv32(version.as_bytes()),
        origin,
        expiry: expiry as u32,
        endpoint: endpoint.map(str::to_owned),
    }
}

// ---------------------------------------------------------------- check

#[test]
fn check_valid_json_prints_a_summary() {
    let p = file("header.json", HEADER_KEYED);
    let out = run(&["check", &p]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.lines(),
        [
            "ok",
            "  route static [0] (path_prefix /static/): disabled (pass-through)",
            "  route api [1] (path_prefix /api/): versions stable 70 (default: the rest), canary 30 of 100; 2 rules; sticky; balanced; key header x-user; cookie sc-api (plain, ttl 1h)",
            "    rule 0: cookie canary = \"yes\" -> canary",
            "    rule 1: header x-canary = \"always\" -> canary, \"never\" -> stable",
            "  global: versions stable 70 (default: the rest), canary 30 of 100; 2 rules; sticky; balanced; key header x-user; cookie sc (plain, ttl 1h)",
            "    rule 0: cookie canary = \"yes\" -> canary",
            "    rule 1: header x-canary = \"always\" -> canary, \"never\" -> stable",
        ]
    );
}

#[test]
fn check_prints_the_filters_own_error_line() {
    for bad in [
        r#"{"versions":[{"name":"a"},{"name":"b","weight":120}]}"#,
        r#"{"versions":[{"name":"a"}],"rules":[{"header":"x","version":"nope"}]}"#,
        r#"{"versions":[{"name":"a"}],"bogus":1}"#,
        r#"{"versions":[{"name":"a"}],"session":{"secrets":["c2hvcnQ="]}}"#,
        "{not json",
        "[1]",
    ] {
        let want = compile_json(bad).unwrap_err();
        let out = run_in(&["check", "-"], Some(bad.as_bytes()), &[]);
        assert_eq!(out.code, 1, "{bad}");
        assert_eq!(out.stdout, format!("{want}\n"), "{bad}");
        assert!(out.stdout.starts_with("invalid plugin config: "), "{bad}");
        assert!(
            out.stderr.contains("keeps serving the last good config"),
            "{}",
            out.stderr
        );
        // JSON: the same three parts.
        let j = run_in(
            &["check", "-", "--format", "json"],
            Some(bad.as_bytes()),
            &[],
        );
        assert_eq!(j.code, 1);
        let v = j.json();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["path"], want.path.as_str());
        assert_eq!(v["error"]["value"], want.value.as_str());
        assert_eq!(v["error"]["reason"], want.reason.as_str());
        assert_eq!(v["on_invalid_config"], "pass_through");
    }
    // The secret is never echoed.
    let out = run_in(
        &["check", "-"],
        Some(br#"{"versions":[{"name":"a"}],"session":{"secrets":["c2hvcnQ="]}}"#),
        &[],
    );
    assert_eq!(
        out.stdout,
        "invalid plugin config: session.secrets[0] = <8 characters, not shown>: must be base64 of exactly 32 random bytes (openssl rand -base64 32)\n"
    );
}

#[test]
fn check_says_when_the_filter_refuses() {
    let bad = r#"{"on_invalid_config":"refuse","versions":[{"name":"a"},{"name":"a"}]}"#;
    let out = run_in(&["check", "-"], Some(bad.as_bytes()), &[]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, format!("{}\n", compile_json(bad).unwrap_err()));
    assert!(
        out.stderr.contains("Envoy rejects the filter config"),
        "{}",
        out.stderr
    );
    let j = run_in(
        &["check", "-", "--format", "json"],
        Some(bad.as_bytes()),
        &[],
    );
    assert_eq!(j.json()["on_invalid_config"], "refuse");
}

#[test]
fn check_not_utf8_is_the_filters_line() {
    let out = run_in(&["check", "-"], Some(b"{\"versions\": \xff}"), &[]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "invalid plugin config: $: not UTF-8 text\n");
}

#[test]
fn check_json_summary_of_a_valid_config() {
    let p = file("header2.json", HEADER_KEYED);
    let v = run(&["check", &p, "--format", "json"]).json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["global"]["versions"][1]["name"], "canary");
    assert_eq!(v["global"]["versions"][1]["weight"], 30);
    assert_eq!(v["global"]["versions"][0]["weight"], 70);
    assert_eq!(v["global"]["cookie"]["name"], "sc");
    assert_eq!(v["routes"][0]["name"], "static");
    assert_eq!(v["routes"][0]["enabled"], false);
    assert_eq!(v["routes"][1]["cookie"]["name"], "sc-api");
}

#[test]
fn check_shows_ramps_at_a_time() {
    let p = file(
        "ramp.json",
        r#"{"versions":[{"name":"a"},{"name":"b","ramp":{"start":"2027-01-15T08:00:00Z","duration":7200,"to":50,"steps":4}}]}"#,
    );
    let out = run(&["check", &p, "--time", "2027-01-15T09:00:00Z"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.lines()[1],
        "  global: versions a 75 (default: the rest), b 25 (ramp 0 -> 50 in 4 steps, 2027-01-15T08:00:00Z .. 2027-01-15T10:00:00Z) of 100; 0 rules; sticky; balanced; key cookie; cookie sticky-canary (plain, ttl 1d)"
    );
}

#[test]
fn check_reads_the_shipped_envoy_and_istio_files() {
    for f in [
        "envoy-config/envoy-local.yaml",
        "envoy-config/envoy.yaml",
        "istio/gateway/wasmplugin.yaml",
        "istio/sidecar/wasmplugin.yaml",
        "istio/trafficextension/trafficextension.yaml",
    ] {
        let out = run(&["check", &repo(f)]);
        assert_eq!(out.code, 0, "{f}: {}{}", out.stdout, out.stderr);
        assert!(out.stdout.starts_with("ok\n"), "{f}: {}", out.stdout);
    }
}

#[test]
fn check_finds_configs_in_manifests_and_labels_several() {
    let yaml = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
metadata: {name: canary, namespace: shop}
spec:
  wasm:
  - name: sticky-canary
    config:
      versions: [{name: v1}, {name: v2, weight: 10}]
  - name: second
    config:
      versions: [{name: v1}, {name: v2, weight: 101}]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: sc, namespace: istio-system}
spec:
  pluginConfig:
    versions: [{name: a}, {name: b, weight: 1}]
"#;
    let p = file("multi.yaml", yaml);
    let out = run(&["check", &p]);
    assert_eq!(out.code, 1);
    let lines = out.lines();
    assert_eq!(
        lines[0],
        "EnvoyExtensionPolicy shop/canary wasm[0] sticky-canary: ok"
    );
    assert_eq!(
        lines[2],
        "EnvoyExtensionPolicy shop/canary wasm[1] second: invalid plugin config: versions[1].weight = 101: over weight_total 100"
    );
    assert_eq!(lines[3], "WasmPlugin istio-system/sc: ok");
    let j = run(&["check", &p, "--format", "json"]).json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["configs"].as_array().unwrap().len(), 3);
    assert_eq!(j["configs"][1]["error"]["path"], "versions[1].weight");
    assert_eq!(j["configs"][2]["source"], "WasmPlugin istio-system/sc");
}

#[test]
fn check_an_envoy_yaml_with_a_bad_plugin() {
    let yaml = std::fs::read_to_string(repo("envoy-config/envoy-local.yaml")).unwrap();
    let bad = yaml.replace(r#""weight":20"#, r#""weight":200"#);
    assert_ne!(bad, yaml);
    let out = run_in(&["check", "-"], Some(bad.as_bytes()), &[]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "invalid plugin config: routes[0].versions[1].weight = 200: over weight_total 100\n"
    );
}

#[test]
fn check_usage_errors_exit_2() {
    let out = run(&["check", "/nonexistent/x.json"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("sticky-canary: error: cannot read /nonexistent/x.json"),
        "{}",
        out.stderr
    );
    let out = run(&["check"]);
    assert_eq!(out.code, 2);
}

#[test]
fn check_reads_secrets_env_from_the_environment() {
    let cfg = r#"{"versions":[{"name":"a"},{"name":"b","weight":1}],"session":{"secrets_env":"SC_TEST_KEYS"}}"#;
    let missing = run_in(&["check", "-"], Some(cfg.as_bytes()), &[]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stdout,
        format!("{}\n", compile_json(cfg).unwrap_err())
    );
    let key = b64url(&[7; 32]);
    let ok = run_in(
        &["check", "-"],
        Some(cfg.as_bytes()),
        &[("SC_TEST_KEYS", &key)],
    );
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert!(
        ok.stdout.contains("(sealed, 1 secret, ttl 1d)"),
        "{}",
        ok.stdout
    );
}

#[test]
fn check_a_plugin_config_written_in_yaml() {
    let yaml = "versions:\n- name: v1\n- name: v2\n  weight: 5\nsession:\n  cookie: {name: c}\n";
    let out = run_in(&["check", "-"], Some(yaml.as_bytes()), &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("versions v1 95 (default: the rest), v2 5 of 100"),
        "{}",
        out.stdout
    );
    let bad = "versions:\n- name: v1\n- name: v2\n  weight: -5\n";
    let out = run_in(&["check", "-"], Some(bad.as_bytes()), &[]);
    assert_eq!(out.code, 1);
    let json = r#"{"versions":[{"name":"v1"},{"name":"v2","weight":-5}]}"#;
    assert_eq!(out.stdout, format!("{}\n", compile_json(json).unwrap_err()));
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_client_ip_key_and_no_global_policy() {
    let cfg = r#"{"routes":[{"name":"shop","match":{"authority":"*.example.com"},
        "versions":[{"name":"a"},{"name":"b","weight":50}],
        "session":{"key":{"from":"client_ip","xff_trusted_hops":1}}}]}"#;
    let p = file("ip.json", cfg);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "--authority",
        "shop.example.com:8443",
        "-H",
        "x-forwarded-for: 203.0.113.9, 10.0.0.1",
        "--time",
        T,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key = derive_key(b"10.0.0.1");
    let hash = String::from_utf8(pod_hash(&key).to_vec()).unwrap();
    assert_eq!(
        out.lines()[0],
        "policy: route entry shop (authority *.example.com)"
    );
    assert_eq!(
        out.lines()[3],
        format!("sticky hash: {hash} (key from X-Forwarded-For entry 1 from the right)")
    );
    let b = bucket(b"", &key, 100);
    assert_eq!(
        out.lines()[1],
        format!("version: {}", if b < 50 { "b" } else { "a" })
    );
    // Another host: no route entry, no global policy.
    let out = run(&["explain", "--config", &p, "--authority", "other.test"]);
    assert_eq!(
        out.lines()[0],
        "policy: none (pass-through: no route entry matches and there is no global policy)"
    );
    assert_eq!(out.lines()[2], "removed headers: none");
}

#[test]
fn explain_weight_with_a_header_key_matches_the_core() {
    let p = file("h-explain.json", HEADER_KEYED);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-H",
        "x-user: alice",
        "--time",
        T,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key = derive_key(b"alice");
    let b = bucket(b"", &key, 100);
    let hash = String::from_utf8(pod_hash(&key).to_vec()).unwrap();
    let want_version = if b < 30 { "canary" } else { "stable" };
    let lines = out.lines();
    assert_eq!(lines[0], "policy: global");
    assert_eq!(lines[1], format!("version: {want_version}"));
    assert_eq!(
        lines[2],
        format!("reason: weight: bucket {b} of 0..99; canary 0..29, stable 30..99 (default)")
    );
    assert_eq!(
        lines[3],
        format!("sticky hash: {hash} (key from header x-user)")
    );
    assert_eq!(
        lines[4],
        "endpoint: none (balanced mode: the consistent hash picks the pod)"
    );
    assert_eq!(lines[5], "session cookie: absent");
    assert_eq!(lines[6], "cookie action: new");
    assert!(lines[7].starts_with("set-cookie: sc=1"), "{}", lines[7]);
    assert!(
        lines[7].ends_with("; Path=/; Max-Age=3600; HttpOnly"),
        "{}",
        lines[7]
    );
    assert_eq!(
        lines[8],
        format!("request header: x-canary-version: {want_version}")
    );
    assert_eq!(lines[9], format!("request header: x-sticky-hash: {hash}"));
    // Several users: the version follows the core's bucket every time.
    for user in ["bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
        let v = run(&[
            "explain",
            "--config",
            &p,
            "-H",
            &format!("x-user: {user}"),
            "--time",
            T,
            "--format",
            "json",
        ])
        .json();
        let key = derive_key(user.as_bytes());
        let b = bucket(b"", &key, 100);
        assert_eq!(v["bucket"], b);
        assert_eq!(v["version"], if b < 30 { "canary" } else { "stable" });
        assert_eq!(
            v["hash"],
            String::from_utf8(pod_hash(&key).to_vec()).unwrap()
        );
        assert_eq!(v["reason"]["kind"], "weight");
    }
}

#[test]
fn explain_rules_and_route_entries() {
    let p = file("h-rules.json", HEADER_KEYED);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        "canary=yes",
        "-H",
        "x-user: alice",
        "--time",
        T,
    ]);
    assert_eq!(out.lines()[1], "version: canary");
    assert_eq!(
        out.lines()[2],
        "reason: rule 0: cookie canary = \"yes\" -> canary"
    );
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-H",
        "x-canary: never",
        "--time",
        T,
        "--random-seed",
        "1",
    ]);
    assert_eq!(out.lines()[1], "version: stable");
    assert_eq!(
        out.lines()[2],
        "reason: rule 1: header x-canary = \"never\" -> stable (the default version)"
    );
    assert_eq!(
        out.lines()[3].split(" (").nth(1),
        Some("header x-user is missing: new random key)")
    );
    let out = run(&[
        "explain",
        "--config",
        &p,
        "--path",
        "/api/items?x=1",
        "-H",
        "x-canary: always",
        "--time",
        T,
        "--random-seed",
        "1",
    ]);
    assert_eq!(
        out.lines()[0],
        "policy: route entry api (path_prefix /api/)"
    );
    assert_eq!(
        out.lines()[2],
        "reason: rule 1: header x-canary = \"always\" -> canary"
    );
    assert!(out.stdout.contains("set-cookie: sc-api="), "{}", out.stdout);
}

#[test]
fn explain_pass_through() {
    let p = file("h-pass.json", HEADER_KEYED);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "--path",
        "/static/app.css",
        "-H",
        "x-canary-version: canary",
    ]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.lines(),
        [
            "policy: none (pass-through: route entry static (path_prefix /static/) matches and is disabled)",
            "version: none (the request is not touched)",
            "removed headers: x-canary-version (a client's copy never steers a route)",
        ]
    );
}

#[test]
fn explain_remembered_renewed_switched_and_draining() {
    let p = file("c-explain.json", COOKIE_KEYED);
    // A rule-placed canary user whose session is current: remembered, no cookie.
    let fresh = session("canary", Origin::Rule, NOW + 3000, None);
    let v = fresh.encode("sc", &[], &[0; 24]);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sc={v}"),
        "--time",
        T,
    ]);
    let lines = out.lines();
    assert_eq!(lines[1], "version: canary");
    assert_eq!(
        lines[2],
        "reason: remembered: the session cookie holds canary (placed by rule); canary has weight 0: the user stays until the cookie expires at 2027-01-15T08:50:00Z (drain)"
    );
    assert_eq!(
        lines[5],
        "session cookie: valid (canary, placed by rule, expires 2027-01-15T08:50:00Z)"
    );
    assert_eq!(lines[6], "cookie action: none (draining: never renewed)");
    let hash = String::from_utf8(pod_hash(b"0123456789abcdef").to_vec()).unwrap();
    assert_eq!(
        lines[3],
        format!("sticky hash: {hash} (key from the session cookie)")
    );

    // A weight-placed stable user past half the ttl: renewed.
    let old = session("stable", Origin::Weight, NOW + 1000, None);
    let v = old.encode("sc", &[], &[0; 24]);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sc={v}"),
        "--time",
        T,
    ]);
    let lines = out.lines();
    assert_eq!(lines[1], "version: stable");
    assert!(
        lines[2].ends_with("; a returning user placed by weight follows their bucket"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[6], "cookie action: renewed");
    assert!(lines[7].starts_with("set-cookie: sc=1"));
    assert!(
        lines[7].ends_with("; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"),
        "{}",
        lines[7]
    );

    // The same user opts in: switched.
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sc={v}"),
        "-b",
        "canary=yes",
        "--time",
        T,
    ]);
    assert_eq!(
        out.lines()[6],
        "cookie action: switched from stable to canary"
    );

    // Current and not due: nothing.
    let cur = session("stable", Origin::Weight, NOW + 3500, None);
    let v = cur.encode("sc", &[], &[0; 24]);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sc={v}"),
        "--time",
        T,
    ]);
    assert_eq!(
        out.lines()[6],
        "cookie action: none (the session is current)"
    );
    assert_eq!(out.lines().len(), 9, "{}", out.stdout);
}

#[test]
fn explain_says_why_a_cookie_is_invalid() {
    let p = file("c-invalid.json", COOKIE_KEYED);
    let expired = session("stable", Origin::Weight, NOW - 60, None).encode("sc", &[], &[0; 24]);
    let other = session("stable", Origin::Weight, NOW + 60, None).encode("other", &[], &[0; 24]);
    let sealed = session("stable", Origin::Weight, NOW + 60, None).encode(
        "sc",
        &[SealKey([1; 32])],
        &[0; 24],
    );
    for (value, why) in [
        (expired.as_str(), "expired at 2027-01-15T07:59:00Z (1m ago)"),
        ("1@@@@", "garbled: not base64url"),
        ("9AAAA", "garbled: format marker \"9\" is not 1 (plain) or 2 (sealed); not a sticky-canary cookie, or a newer format"),
        (other.as_str(), "the check does not match: altered, or issued under another cookie name (the name is part of the check)"),
        (sealed.as_str(), "a sealed cookie, but this config has no secrets (give the config that seals, or --keys-env)"),
    ] {
        let out = run(&["explain", "--config", &p, "-b", &format!("sc={value}"), "--time", T, "--random-seed", "2"]);
        assert_eq!(out.lines()[5], format!("session cookie: invalid: {why}"), "{value}");
        assert_eq!(out.lines()[6], "cookie action: new", "{value}");
    }
    // Two valid copies that disagree.
    let a = session("stable", Origin::Weight, NOW + 3500, None).encode("sc", &[], &[0; 24]);
    let mut s = session("canary", Origin::Rule, NOW + 3500, None);
    s.key = *b"fedcba9876543210";
    let b = s.encode("sc", &[], &[0; 24]);
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sc={a}"),
        "-b",
        &format!("sc={b}"),
        "--time",
        T,
    ]);
    assert_eq!(
        out.lines()[5],
        "session cookie: conflicting: 2 copies open but disagree (stable by weight, key 30313233..; canary by rule, key 66656463..); none is trusted"
    );
    assert_eq!(
        out.lines()[6],
        "cookie action: none (conflicting copies: writing one would change the placement)"
    );
    assert!(out.lines()[3].ends_with("(key derived from every conflicting session copy)"));
}

#[test]
fn explain_persistent_mode_pins_the_upstream() {
    let p = file("sealed.json", &sealed_config(&[[1; 32]]));
    let out = run(&[
        "explain",
        "--config",
        &p,
        "--time",
        T,
        "--random-seed",
        "5",
        "--upstream",
        "10.0.0.7:8080",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.lines()[4], "endpoint: none pinned yet");
    assert_eq!(out.lines()[6], "cookie action: new");
    let sc = out.lines()[7].strip_prefix("set-cookie: sealed=").unwrap();
    let value = sc.split(';').next().unwrap();
    // The cookie it would send opens in the core with the pin.
    match Session::open(value, "sealed", &[SealKey([1; 32])], NOW) {
        sticky_canary::session::Opened::Valid { session, .. } => {
            assert_eq!(session.endpoint.as_deref(), Some("10.0.0.7:8080"))
        }
        other => panic!("{other:?}"),
    }
    // Sent back: the pin goes to Envoy in the endpoint header.
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sealed={value}"),
        "--time",
        T,
    ]);
    assert_eq!(out.lines()[4], "endpoint: 10.0.0.7:8080");
    assert_eq!(
        out.lines()[6],
        "cookie action: none (the session is current)"
    );
    assert_eq!(
        out.lines()[9],
        "request header: x-sticky-endpoint: 10.0.0.7:8080"
    );
    // Another pod answers in one attempt (the pinned one is gone): re-pinned.
    let out = run(&[
        "explain",
        "--config",
        &p,
        "-b",
        &format!("sealed={value}"),
        "--time",
        T,
        "--upstream",
        "10.0.0.8:8080",
    ]);
    assert_eq!(
        out.lines()[6],
        "cookie action: re-pinned from 10.0.0.7:8080 to 10.0.0.8:8080"
    );
}

#[test]
fn explain_json_shape() {
    let p = file("h-json.json", HEADER_KEYED);
    let v = run(&[
        "explain",
        "--config",
        &p,
        "-H",
        "x-user: alice",
        "--time",
        T,
        "--format",
        "json",
    ])
    .json();
    assert_eq!(v["policy"], "global");
    assert_eq!(v["pass_through"], false);
    assert_eq!(v["session_cookie"]["state"], "absent");
    assert_eq!(v["cookie_action"]["action"], "new");
    assert_eq!(v["weights"][1]["buckets"]["first"], 0);
    assert_eq!(v["weights"][1]["buckets"]["last"], 29);
    assert_eq!(v["request_headers"]["x-sticky-hash"], v["hash"]);
}

#[test]
fn explain_bad_arguments_exit_2() {
    let p = file("h-bad.json", HEADER_KEYED);
    let out = run(&["explain", "--config", &p, "-H", "no-colon"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "sticky-canary: error: --header \"no-colon\": give `name: value`\n"
    );
    let out = run(&["explain", "--config", &p, "--time", "yesterday"]);
    assert_eq!(out.code, 2);
    let bad = file("bad.json", r#"{"versions":[]}"#);
    let out = run(&["explain", "--config", &bad]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("invalid plugin config: versions"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------- cookie decode

#[test]
fn cookie_decode_plain() {
    let p = file("c-decode.json", COOKIE_KEYED);
    let v = session("canary", Origin::Rule, NOW + 3600, None).encode("sc", &[], &[0; 24]);
    let out = run(&["cookie", "decode", &v, "--config", &p, "--time", T]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let hash = String::from_utf8(pod_hash(b"0123456789abcdef").to_vec()).unwrap();
    let b = bucket(b"", b"0123456789abcdef", 100);
    assert_eq!(
        out.lines(),
        [
            "cookie: sc (global)".to_owned(),
            "format: 1 (plain: readable, an integrity check but no secret)".into(),
            "opened with: none needed (plain)".into(),
            format!("version: canary (id {:08x})", fnv32(b"canary")),
            "placed by: rule (remembered even when the weights change)".into(),
            "expires: 2027-01-15T09:00:00Z (valid for 1h more)".into(),
            "session key: 30313233343536373839616263646566".into(),
            format!("sticky hash: {hash}"),
            format!("bucket: {b} of 0..99"),
            "pinned endpoint: none".into(),
            "accepted by the filter: yes".into(),
        ]
    );
    // `name=value` as copied from a Cookie header; expired an hour later.
    let out = run(&[
        "cookie",
        "decode",
        &format!("sc={v}"),
        "--config",
        &p,
        "--time",
        "2027-01-15T10:00:00Z",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("expires: 2027-01-15T09:00:00Z (expired 1h ago)\n"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .ends_with("accepted by the filter: no: expired (the filter starts a new session)\n"));
}

#[test]
fn cookie_decode_sealed_with_rotation_and_env_keys() {
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    let p = file("sealed2.json", &sealed_config(&[k2, k1]));
    let v = session("canary", Origin::Weight, NOW + 600, Some("10.0.0.7:8080")).encode(
        "sealed",
        &[SealKey(k1)],
        &[3; 24],
    );
    let out = run(&["cookie", "decode", &v, "--config", &p, "--time", T]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let lines = out.lines();
    assert_eq!(lines[1], "format: 2 (sealed: XChaCha20-Poly1305)");
    assert_eq!(
        lines[2],
        "opened with: config secret 2 of 2 (an older one: the filter re-seals it with the first)"
    );
    assert_eq!(
        lines[4],
        "placed by: weight (follows the bucket as the weights change)"
    );
    assert_eq!(lines[9], "pinned endpoint: 10.0.0.7:8080");
    // Without a config, keys from the environment.
    let keys = format!("{},{}", b64url(&k2), b64url(&k1));
    let out = run_in(
        &[
            "cookie",
            "decode",
            &format!("sealed={v}"),
            "--keys-env",
            "SUPPORT_KEYS",
            "--time",
            T,
        ],
        None,
        &[("SUPPORT_KEYS", &keys)],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.lines()[0], "cookie: sealed (no config)");
    assert_eq!(
        out.lines()[2],
        "opened with: key 2 of --keys-env SUPPORT_KEYS"
    );
    assert_eq!(
        out.lines()[3],
        format!(
            "version: id {:08x} (give --config to name it)",
            fnv32(b"canary")
        )
    );
    // Wrong key.
    let other = run_in(
        &[
            "cookie",
            "decode",
            &format!("sealed={v}"),
            "--keys-env",
            "SUPPORT_KEYS",
            "--time",
            T,
        ],
        None,
        &[("SUPPORT_KEYS", &b64url(&[9; 32]))],
    );
    assert_eq!(other.code, 1);
    assert_eq!(
        other.lines(),
        [
            "format: 2 (sealed: XChaCha20-Poly1305)",
            "does not open: does not open with the 1 secret(s): sealed with another key (rotated out?), under another cookie name (the name is sealed in), or altered",
            "accepted by the filter: no",
        ]
    );
    // Another cookie name of the same config.
    let p2 = file("h-decode.json", HEADER_KEYED);
    let api = session("stable", Origin::Weight, NOW + 600, None).encode("sc-api", &[], &[0; 24]);
    let out = run(&[
        "cookie",
        "decode",
        &format!("sc={api}"),
        "--config",
        &p2,
        "--time",
        T,
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.lines()[1],
        "does not open: another cookie: it opens as cookie sc-api"
    );
    let out = run(&["cookie", "decode", &api, "--config", &p2, "--time", T]);
    assert_eq!(out.code, 0);
    assert_eq!(out.lines()[0], "cookie: sc-api (route entry api)");
}

#[test]
fn cookie_decode_plain_cookie_under_a_sealing_config() {
    let p = file("sealed3.json", &sealed_config(&[[1; 32]]));
    let v = session("stable", Origin::Weight, NOW + 60, None).encode("sealed", &[], &[0; 24]);
    let out = run(&["cookie", "decode", &v, "--config", &p, "--time", T]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.lines()[1],
        "does not open: a plain cookie, but this config seals cookies (issued before secrets were set)"
    );
}

#[test]
fn cookie_decode_json_and_garbage() {
    let p = file("c-decode2.json", COOKIE_KEYED);
    let v = session("stable", Origin::Weight, NOW + 60, None).encode("sc", &[], &[0; 24]);
    let j = run(&[
        "cookie", "decode", &v, "--config", &p, "--time", T, "--format", "json",
    ])
    .json();
    assert_eq!(j["opens"], true);
    assert_eq!(j["version"], "stable");
    assert_eq!(j["origin"], "weight");
    assert_eq!(j["expires_unix"], NOW + 60);
    assert_eq!(j["session_key"], "30313233343536373839616263646566");
    assert_eq!(j["accepted"], true);
    let out = run(&["cookie", "decode", "not a cookie", "--config", &p]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("does not open: garbled"),
        "{}",
        out.stdout
    );
}

/// The fuzzer found `split_at(1)` panicking on a first character of more
/// than one byte in the core (fixed there); the CLI re-parsed the format
/// and panicked on the same input until it called the core.
#[test]
fn cookie_decode_never_panics_on_odd_values() {
    let out = run(&["cookie", "decode", "éAAAA"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.lines(),
        [
            "format: unknown",
            "does not open: garbled: format marker \"é\" is not 1 (plain) or 2 (sealed); not a sticky-canary cookie, or a newer format",
            "accepted by the filter: no",
        ]
    );
    let p = file("c-odd.json", COOKIE_KEYED);
    for value in [
        "é",
        "",
        "=",
        "-",
        "--x",
        "1",
        "sc=",
        "sc=\"\"",
        "2AAAAAAAA",
        "1AAAA",
    ] {
        for extra in [&[][..], &["--config", &p][..], &["--format", "json"][..]] {
            let mut args = vec!["cookie", "decode", value];
            args.extend_from_slice(extra);
            let out = run(&args);
            assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
            assert!(out.stderr.is_empty(), "{args:?}: {}", out.stderr);
        }
    }
    // A cookie name the config has no policy for: not accepted, exit 1.
    let out = run(&["cookie", "decode", "other=1AAAA", "--config", &p]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.lines()[1],
        "does not open: no policy of the config reads cookie other (it reads: sc)"
    );
}

#[cfg(unix)]
#[test]
fn cookie_decode_of_bytes_that_are_not_utf8_exits_1() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN)
        .args(["cookie", "decode"])
        .arg(std::ffi::OsStr::from_bytes(b"1\xff\xfeAAAA"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "format: unknown\ndoes not open: not UTF-8 text: the filter skips such a cookie\naccepted by the filter: no\n"
    );
}

/// One definition of draining: a returning user kept on a canary at
/// weight 0, placed there by a rule or by weight. `explain` says "(drain)"
/// for exactly the users the filter counts as reason="drain", and the
/// default version, at weight 0 too, never drains.
#[test]
fn explain_drains_whom_the_filter_counts_as_drain() {
    use sticky_canary::{decide, Reason, Request};
    let cfg = |canary: u32| {
        format!(
            r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":{canary}}}],
                "rules":[{{"header":"x-canary","version":"canary"}}],
                "session":{{"cookie":{{"name":"sc"}},"ttl":3600}}}}"#
        )
    };
    let cases = [
        (0, "canary", Origin::Rule, true),
        (0, "canary", Origin::Weight, true),
        (100, "stable", Origin::Rule, false),
        (50, "canary", Origin::Rule, false),
    ];
    for (weight, version, origin, drains) in cases {
        let text = cfg(weight);
        let p = file("drain.json", &text);
        let v = session(version, origin, NOW + 600, None).encode("sc", &[], &[0; 24]);
        let cookie = format!("sc={v}");
        let args = [
            "explain", "--config", &p, "-b", &cookie, "--time", T, "--format", "json",
        ];
        let out = run(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let j = out.json();
        let what = format!("{version} at weight {weight}, placed by {origin:?}");
        assert_eq!(j["version"], version, "{what}");
        assert_eq!(j["reason"]["kind"], "remembered", "{what}");
        assert_eq!(
            j["reason"]["text"].as_str().unwrap().ends_with("(drain)"),
            drains,
            "{what}: {}",
            j["reason"]["text"]
        );
        let action = j["cookie_action"]["text"].as_str().unwrap();
        assert_eq!(
            action == "none (draining: never renewed)",
            drains,
            "{what}: {action}"
        );
        // The filter's own counter for the same request.
        let plugin = compile_json(&text).unwrap();
        let headers: [sticky_canary::Header<'_>; 2] =
            [(b":path", b"/"), (b"cookie", cookie.as_bytes())];
        let req = Request {
            headers: &headers,
            route_name: None,
            virtual_host: None,
            client_address: None,
            now: NOW,
        };
        let d = decide(
            plugin.global.as_ref().unwrap(),
            &req,
            &mut sticky_canary::rng::SplitMix64(1),
        );
        assert_eq!(d.reason == Reason::Drain, drains, "{what}");
        assert_eq!(j["reason"]["counted_as"], d.reason.label(), "{what}");
    }
    // simulate counts the same users: rule-placed canary users drain too.
    let p = file("drain-sim.json", &cfg(50));
    let args = [
        "simulate",
        "--config",
        &p,
        "--start",
        T,
        "--format",
        "json",
        "--users",
        "200",
        "--steps",
        "50,0",
        "--visit-rate",
        "1",
    ];
    let v = run(&args).json();
    let s = &v["steps"][1];
    assert_eq!(s["draining"], s["counts"]["canary"]);
    assert!(s["draining"].as_u64().unwrap() > 0);
}

// ---------------------------------------------------------------- keygen

#[test]
fn keygen_prints_secrets_the_filter_accepts() {
    let out = run(&["keygen", "--count", "3"]);
    assert_eq!(out.code, 0);
    let keys: Vec<&str> = out.lines();
    assert_eq!(keys.len(), 3);
    for k in &keys {
        assert_eq!(k.len(), 44, "{k}");
        assert!(sticky_canary::compile::decode_secret(k).is_some(), "{k}");
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2]);
    let cfg = format!(
        r#"{{"versions":[{{"name":"a"}},{{"name":"b","weight":1}}],"session":{{"secrets":["{}","{}"]}}}}"#,
        keys[0], keys[1]
    );
    assert_eq!(
        compile_json(&cfg)
            .unwrap()
            .global
            .unwrap()
            .seal_keys()
            .len(),
        2
    );
    let one = run(&["keygen", "-n", "2", "--comma"]);
    assert_eq!(one.lines().len(), 1);
    assert_eq!(one.stdout.matches(',').count(), 1);
    let j = run(&["keygen", "--format", "json"]).json();
    assert_eq!(j.as_array().map(Vec::len), Some(1));
    assert_eq!(run(&["keygen", "--count", "0"]).code, 2);
}

// ---------------------------------------------------------------- simulate

fn sim(cfg: &str, extra: &[&str]) -> Value {
    let p = file("sim.json", cfg);
    let mut args = vec!["simulate", "--config", &p, "--start", T, "--format", "json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

const SIM: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0}]}"#;

#[test]
fn simulate_a_plan_moves_users_one_way_with_shares_near_the_weights() {
    let v = sim(SIM, &["--users", "2000", "--steps", "5,25,50"]);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (s, w) in steps.iter().zip([5.0f64, 25.0, 50.0]) {
        let visits = s["visits"].as_u64().unwrap() as f64;
        let canary = s["counts"]["canary"].as_u64().unwrap() as f64;
        let stable = s["counts"]["stable"].as_u64().unwrap() as f64;
        assert_eq!(canary + stable, visits);
        assert_eq!(s["weights"]["canary"], w as u64);
        // 5 standard deviations of a binomial share.
        let p = w / 100.0;
        let sd = (p * (1.0 - p) / visits).sqrt();
        assert!(((canary / visits) - p).abs() < 5.0 * sd + 1e-9, "{s}");
        // Raising the weight only moves users to the canary.
        for m in s["moved"].as_array().unwrap() {
            assert_eq!(m["from"], "stable");
            assert_eq!(m["to"], "canary");
        }
        assert_eq!(s["draining"], 0);
    }
    assert_eq!(steps[0]["new"], steps[0]["visits"]);
    assert!(steps[2]["returning"].as_u64().unwrap() > 0);
    // Deterministic for a seed; another seed gives other numbers.
    assert_eq!(v, sim(SIM, &["--users", "2000", "--steps", "5,25,50"]));
    assert_ne!(
        v,
        sim(
            SIM,
            &["--users", "2000", "--steps", "5,25,50", "--seed", "7"]
        )
    );
}

#[test]
fn simulate_drain_and_rollback() {
    // Drain: canary users stay at weight 0 until their cookie expires.
    let v = sim(
        SIM,
        &["--users", "500", "--steps", "50,0", "--visit-rate", "1"],
    );
    let s = &v["steps"][1];
    assert_eq!(s["draining"], s["counts"]["canary"]);
    assert_eq!(s["drained"], 0);
    assert_eq!(s["counts"]["canary"], v["steps"][0]["counts"]["canary"]);
    // Rollback: they move back at once.
    let rb = r#"{"rollback":true,"versions":[{"name":"stable"},{"name":"canary","weight":0}]}"#;
    let v = sim(
        rb,
        &["--users", "500", "--steps", "50,0", "--visit-rate", "1"],
    );
    let s = &v["steps"][1];
    assert_eq!(s["counts"]["canary"], 0);
    assert_eq!(s["drained"], v["steps"][0]["counts"]["canary"]);
    assert_eq!(v["users_changed_version"], s["drained"]);
}

#[test]
fn simulate_the_configs_ramp_and_write_a_chart() {
    let cfg = r#"{"versions":[{"name":"stable"},{"name":"canary","ramp":{"start":"2027-01-15T08:00:00Z","duration":7200,"to":50,"steps":4}}]}"#;
    let p = file("sim-ramp.json", cfg);
    let svg_path = file("sim.svg", "");
    let out = run(&[
        "simulate", "--config", &p, "--users", "300", "--every", "30m", "--svg", &svg_path,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.lines();
    assert_eq!(
        lines[0],
        "step 0 at 2027-01-15T08:00:00Z (+0s): weights stable 100, canary 0"
    );
    assert_eq!(
        lines[5],
        "step 1 at 2027-01-15T08:30:00Z (+30m): weights stable 88, canary 12"
    );
    // 5 steps through the ramp and one after its end.
    assert_eq!(lines.iter().filter(|l| l.starts_with("step ")).count(), 6);
    assert!(lines.last().unwrap().starts_with("users who visited: "));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "share and weight per version"
    );
    assert!(svg.contains(">stable</text>") && svg.contains(">canary</text>"));
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn simulate_errors() {
    let p = file("sim-err.json", SIM);
    let out = run(&["simulate", "--config", &p, "--steps", "50,120"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "sticky-canary: error: --steps \"120\": weights add up to 120, over weight_total 100\n"
    );
    let out = run(&["simulate", "--config", &p]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no timed ramps"), "{}", out.stderr);
}

// ---------------------------------------------------------------- help

#[test]
fn every_subcommand_has_help() {
    for (args, phrase) in [
        (vec!["--help"], "Usage: sticky-canary <COMMAND>"),
        (vec!["check", "--help"], "the line the filter logs"),
        (vec!["explain", "--help"], "--random-seed"),
        (vec!["cookie", "decode", "--help"], "--keys-env"),
        (vec!["keygen", "--help"], "base64 of 32 random bytes"),
        (vec!["simulate", "--help"], "--visit-rate"),
    ] {
        let out = run(&args);
        assert_eq!(out.code, 0, "{args:?}");
        assert!(out.stdout.contains(phrase), "{args:?}: {}", out.stdout);
    }
}
