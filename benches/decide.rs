//! Micro-benchmark of the host-free core (no Envoy): natively with
//! `cargo bench --bench decide` (needs `harness = false` in Cargo.toml), or
//! as wasm32-wasip1 under Node's V8 with `cargo bench --bench decide
//! --target wasm32-wasip1` (the runner in .cargo/config.toml).
//!
//! Per case, the config is compiled once, then every iteration does what the
//! adapter does for one request minus the host calls: pick the policy
//! and decide (`pipeline::on_request`), then the response phase
//! (`Exchange::upstream_answered` and, when a cookie is due,
//! `Exchange::set_cookie`): the adapter's own steps.
//!
//! Prints a markdown table: ns per request, median and range of `--repeats`
//! timed loops of `--iters` requests each. Options (after `--`):
//! `--iters N` (default 1000000), `--repeats N` (default 5), `--case TEXT`
//! (only the cases whose name contains TEXT). Run without `--bench` (as
//! `cargo test --all-targets` does), it checks the cases and times only
//! 1000 requests each.
//!
//! In Envoy the same logic runs as wasm under V8, and the host calls around
//! it cost about as much as the logic itself: tests/bench/instr.py counts
//! Envoy's instructions per request for the same cases, and prices single
//! host calls.

use std::hint::black_box;
use std::time::Instant;
use sticky_canary::pipeline::{self, Exchange, Upstream};
use sticky_canary::request::Header;
use sticky_canary::session::NONCE_LEN;
use sticky_canary::{compile_json, decide, Entropy, Plugin, Request};

/// Fixed clock: the same instant for priming and the timed loop.
const NOW: u64 = 1_800_000_000;

/// A fast deterministic RNG (xorshift64); the filter uses WASI random_get.
struct XorShift(u64);

impl Entropy for XorShift {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
        true
    }
}

/// One request through the core; returns something to keep the optimiser honest.
fn one(plugin: &Plugin, headers: &[Header], upstream: Option<&str>, rng: &mut XorShift) -> usize {
    let req = Request {
        headers,
        route_name: None,
        virtual_host: None,
        client_address: None,
        now: NOW,
    };
    let plan = pipeline::on_request(plugin, &req, rng);
    let mut n = plan.set.len() + plan.count.len();
    let Some(mut ex) = plan.exchange else {
        return n;
    };
    let d = &ex.decision;
    n += d.version + usize::from(d.hash.as_bytes()[0]) + d.endpoint.as_ref().map_or(0, String::len);
    let up = Upstream {
        address: upstream,
        ..Upstream::default()
    };
    if ex.upstream_answered(&up) {
        let mut nonce = [0u8; NONCE_LEN];
        if ex.needs_nonce() {
            rng.fill(&mut nonce);
        }
        if let Some(c) = ex.set_cookie([], &nonce) {
            n += c.header.len();
        }
    }
    n
}

/// The `name=value` of the cookie the filter would set for these headers
/// (in persistent mode, pinned to `upstream`, the pod that answered).
fn prime(plugin: &Plugin, headers: &[Header], upstream: Option<&str>) -> String {
    let req = Request {
        headers,
        route_name: None,
        virtual_host: None,
        client_address: None,
        now: NOW,
    };
    let Some(policy) = plugin.select(&req) else {
        return String::new();
    };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let d = decide(policy, &req, &mut rng);
    let mut ex = Exchange::new(std::rc::Rc::clone(policy), d, &req);
    ex.upstream_answered(&Upstream {
        address: upstream,
        ..Upstream::default()
    });
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce);
    format!(
        "{}={}",
        policy.cookie().name(),
        ex.decision
            .session
            .encode(policy.cookie().name(), policy.seal_keys(), &nonce)
    )
}

/// A header that lives as long as the bench (its cases are built once).
fn h(k: &str, v: &str) -> Header<'static> {
    let leak = |s: &str| -> &'static [u8] { Box::leak(s.as_bytes().to_vec().into_boxed_slice()) };
    (leak(k), leak(v))
}

/// What Envoy shows the filter for a `wrk` request.
fn plain(path: &str) -> Vec<Header<'static>> {
    vec![
        h(":authority", "127.0.0.1:10000"),
        h(":path", path),
        h(":method", "GET"),
        h(":scheme", "http"),
        h("x-forwarded-proto", "http"),
        h("x-request-id", "6f1d2c3b-4a59-4e87-9a6b-2c1d0e9f8a7b"),
    ]
}

/// A browser-like request: 18 headers, about 1 KB.
fn browser(path: &str) -> Vec<Header<'static>> {
    let mut v = plain(path);
    v.extend([
        h("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        h("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        h("accept-language", "en-US,en;q=0.9,de;q=0.8"),
        h("accept-encoding", "gzip, deflate, br, zstd"),
        h("referer", "https://shop.example.com/catalog/shoes?color=blue&size=42"),
        h("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
        h("sec-ch-ua-mobile", "?0"),
        h("sec-ch-ua-platform", "\"Linux\""),
        h("sec-fetch-dest", "document"),
        h("sec-fetch-mode", "navigate"),
        h("sec-fetch-site", "same-origin"),
        h("upgrade-insecure-requests", "1"),
    ]);
    v
}

const BROWSER_COOKIES: &str = "_ga=GA1.1.1234567890.1732190000; _gid=GA1.1.987654321.1732190000; session_id=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark";

/// Two cookies a site sets beside the session cookie (as tests/bench/instr.py).
const OTHER_COOKIES: &str = "_ga=GA1.1.1234567890.1732190000; theme=dark";

/// 20 rules and 10 route entries, none of which match a request for `/`
/// without those headers, cookies or query parameters (as tests/bench/instr.py):
/// every entry and every rule is tried, then the cookie decides.
fn large_config() -> String {
    let mut rules = Vec::new();
    for i in 0..8 {
        rules.push(format!(
            r#"{{"header": "x-team-{i}", "value": "beta", "version": "v2"}}"#
        ));
    }
    rules.push(
        r#"{"header": "x-beta-user", "regex": "^(alice|bob|carol)-[0-9]+$", "version": "v2"}"#
            .to_owned(),
    );
    rules.push(r#"{"header": "x-tester", "regex": "^qa-", "version": "v2"}"#.to_owned());
    for i in 0..5 {
        rules.push(format!(
            r#"{{"cookie": "canary-{i}", "value": "always", "version": "v2"}}"#
        ));
    }
    for i in 0..5 {
        rules.push(format!(
            r#"{{"query": "canary{i}", "value": "v2", "version": "v2"}}"#
        ));
    }
    let routes: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"name": "app{i}", "match": {{"path_prefix": "/app{i}/"}},
                    "versions": [{{"name": "v1"}}, {{"name": "v2", "weight": {}}}]}}"#,
                5 * (i + 1)
            )
        })
        .collect();
    format!(
        r#"{{"versions": [{{"name": "v1"}}, {{"name": "v2", "weight": 10}}],
            "rules": [{}], "routes": [{}]}}"#,
        rules.join(", "),
        routes.join(", ")
    )
}

fn with(mut headers: Vec<Header<'static>>, extra: &[(&str, &str)]) -> Vec<Header<'static>> {
    headers.extend(extra.iter().map(|(k, v)| h(k, v)));
    headers
}

/// What a case must do: `None` passes through; else the reason label, whether
/// a Set-Cookie is due, and the scope of the policy that applies.
type Expect = Option<(&'static str, bool, &'static str)>;

/// One benchmark case.
struct Case<'a> {
    name: &'static str,
    plugin: &'a Plugin,
    headers: Vec<Header<'static>>,
    expect: Expect,
    /// The pod that answered (persistent mode's response phase).
    upstream: Option<&'static str>,
}

impl<'a> From<(&'static str, &'a Plugin, Vec<Header<'static>>, Expect)> for Case<'a> {
    fn from(
        (name, plugin, headers, expect): (&'static str, &'a Plugin, Vec<Header<'static>>, Expect),
    ) -> Self {
        Case {
            name,
            plugin,
            headers,
            expect,
            upstream: None,
        }
    }
}

/// The pod that answers in the persistent-mode cases.
const POD: &str = "10.0.3.17:8080";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--case TEXT`: only the cases whose name contains TEXT.
fn case_filter() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--case")
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn compile(json: &str) -> Plugin {
    match compile_json(json) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench config rejected: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`,
    // `--all-targets`) run a quick smoke pass: the checks, a few loops.
    let full = std::env::args().any(|a| a == "--bench");
    let iters = arg("--iters", if full { 1_000_000 } else { 1_000 }).max(1);
    let repeats = arg("--repeats", if full { 5 } else { 1 }).max(1);

    let base = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}]}"#;
    let rules = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}],
        "rules": [{"header": "x-canary", "value": "v2", "version": "v2"}]}"#;
    let regex = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}],
        "rules": [{"cookie": "canary", "value": "always", "version": "v2"},
                  {"header": "x-beta-user", "regex": "^(alice|bob|carol)-[0-9]+$", "version": "v2"}]}"#;
    let sealed = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}],
        "session": {"secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]}}"#;
    let routes = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}],
        "routes": [{"name": "shop", "match": {"path_prefix": "/shop"}, "versions": [{"name": "v1"}, {"name": "v2", "weight": 20}]},
                   {"name": "api", "match": {"path_prefix": "/api"}, "versions": [{"name": "v1"}, {"name": "v2", "weight": 50}]}]}"#;

    let persistent = r#"{"versions": [{"name": "v1"}, {"name": "v2", "weight": 10}],
        "session": {"mode": "persistent", "secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]}}"#;
    let large = large_config();

    let t = Instant::now();
    let n = 1000;
    for _ in 0..n {
        black_box(compile(black_box(routes)));
    }
    let compile_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let p_base = compile(base);
    let p_rules = compile(rules);
    let p_regex = compile(regex);
    let p_sealed = compile(sealed);
    let p_routes = compile(routes);
    let p_pass = compile("{}");
    let p_persist = compile(persistent);
    let p_large = compile(&large);

    let c_base = prime(&p_base, &plain("/"), None);
    let c_rule = prime(&p_rules, &with(plain("/"), &[("x-canary", "v2")]), None);
    let c_regex = prime(
        &p_regex,
        &with(plain("/"), &[("x-beta-user", "carol-42")]),
        None,
    );
    let c_sealed = prime(&p_sealed, &plain("/"), None);
    let c_routes = prime(&p_routes, &plain("/api/items?page=2"), None);
    let c_persist = prime(&p_persist, &plain("/"), Some(POD));
    let c_large = prime(&p_large, &plain("/"), None);
    // The Cookie header of tests/bench/instr.py: about 100 bytes.
    let site_cookie = format!("{OTHER_COOKIES}; {c_base}");
    let browser_cookie = format!("{BROWSER_COOKIES}; {c_base}");

    let mut cases: Vec<Case<'_>> = [
        ("pass-through (no versions)", &p_pass, plain("/"), None),
        (
            "new session (Set-Cookie)",
            &p_base,
            plain("/"),
            Some(("weight", true, "global")),
        ),
        (
            "valid cookie (steady state)",
            &p_base,
            with(plain("/"), &[("cookie", &c_base)]),
            Some(("weight", false, "global")),
        ),
        (
            "header rule hit + cookie",
            &p_rules,
            with(plain("/"), &[("x-canary", "v2"), ("cookie", &c_rule)]),
            Some(("rule", false, "global")),
        ),
        (
            "regex rule hit (2nd rule) + cookie",
            &p_regex,
            with(
                plain("/"),
                &[("x-beta-user", "carol-42"), ("cookie", &c_regex)],
            ),
            Some(("rule", false, "global")),
        ),
        (
            "sealed, new session (Set-Cookie)",
            &p_sealed,
            plain("/"),
            Some(("weight", true, "global")),
        ),
        (
            "sealed, valid cookie",
            &p_sealed,
            with(plain("/"), &[("cookie", &c_sealed)]),
            Some(("weight", false, "global")),
        ),
        (
            "route entry by path prefix + cookie",
            &p_routes,
            with(plain("/api/items?page=2"), &[("cookie", &c_routes)]),
            Some(("weight", false, "api")),
        ),
        (
            "browser headers (18, 1 KB) + cookie",
            &p_base,
            with(browser("/"), &[("cookie", &browser_cookie)]),
            Some(("weight", false, "global")),
        ),
        (
            "valid cookie + 2 site cookies (106-byte Cookie header)",
            &p_base,
            with(plain("/"), &[("cookie", &site_cookie)]),
            Some(("weight", false, "global")),
        ),
        (
            "20 rules + 10 route entries (none match) + cookie",
            &p_large,
            with(plain("/"), &[("cookie", &c_large)]),
            Some(("weight", false, "global")),
        ),
        (
            "persistent, new session (pins the pod)",
            &p_persist,
            plain("/"),
            Some(("weight", true, "global")),
        ),
        (
            "persistent, pinned pod answering",
            &p_persist,
            with(plain("/"), &[("cookie", &c_persist)]),
            Some(("weight", false, "global")),
        ),
    ]
    .into_iter()
    .map(Case::from)
    .collect();
    for c in cases.iter_mut() {
        if c.name.starts_with("persistent") {
            c.upstream = Some(POD);
        }
    }
    for Case {
        name,
        plugin,
        headers,
        expect,
        upstream,
    } in &cases
    {
        let req = Request {
            headers,
            route_name: None,
            virtual_host: None,
            client_address: None,
            now: NOW,
        };
        let got = plugin.select(&req).map(|policy| {
            let d = decide(policy, &req, &mut XorShift(1));
            let label = d.basis.label();
            let mut ex = Exchange::new(std::rc::Rc::clone(policy), d, &req);
            let up = Upstream {
                address: *upstream,
                ..Upstream::default()
            };
            (label, ex.upstream_answered(&up), policy.scope())
        });
        if got != *expect {
            eprintln!("bench case {name:?} does not do what it says: got {got:?}, want {expect:?}");
            std::process::exit(1);
        }
    }

    let (target, flag) = if cfg!(target_arch = "wasm32") {
        ("wasm32-wasip1 under Node", " --target wasm32-wasip1")
    } else {
        ("native", "")
    };
    println!("Core, {target}, `cargo bench --bench decide{flag}`: {iters} requests per loop, {repeats} loops per case.");
    println!();
    println!("| Core case ({target}) | ns/request, median | range |");
    println!("|---|---:|---:|");
    let only = case_filter();
    for Case {
        name,
        plugin,
        headers,
        upstream,
        ..
    } in &cases
    {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        // Warm-up.
        let mut sink = 0usize;
        for _ in 0..iters.min(10_000) {
            sink = sink.wrapping_add(one(plugin, headers, *upstream, &mut rng));
        }
        let mut ns = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            for _ in 0..iters {
                sink = sink.wrapping_add(one(
                    black_box(plugin),
                    black_box(headers),
                    black_box(*upstream),
                    &mut rng,
                ));
            }
            ns.push(t.elapsed().as_secs_f64() * 1e9 / iters as f64);
        }
        black_box(sink);
        ns.sort_by(f64::total_cmp);
        let med = ns[ns.len() / 2];
        println!(
            "| {name} | {med:.0} | {:.0}-{:.0} |",
            ns[0],
            ns[ns.len() - 1]
        );
    }
    println!();
    println!("compile_json of a config with 2 route entries: {compile_us:.1} us (once per VM, in on_configure).");
}
