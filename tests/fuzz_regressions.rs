//! Every input a fuzz target (fuzz/, `make fuzz`) failed on, replayed
//! natively with the targets' own checks (fuzz/src/checks.rs), plus the
//! seed corpora whose form needs no fuzzer.
//!
//! Inputs live in fuzz/regressions/<target>/. Files named `bug-<id>-...`
//! reproduce a bug that is still open in src/: each id has an `#[ignore]`d
//! test below naming the bug; remove the `#[ignore]` once it is fixed. All
//! other files must pass.

// Helpers outside #[test] fns: clippy.toml's in-tests allowances do not reach them.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::path::{Path, PathBuf};

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(rel)
}

/// The files of `fuzz/<rel>`: with `bug` None those not named `bug-*`,
/// else those named `bug-<bug>-*`.
fn inputs(rel: &str, bug: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let d = dir(rel);
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let keep = match bug {
                None => !name.starts_with("bug-") && !name.starts_with('.'),
                Some(id) => name.starts_with(&format!("bug-{id}-")),
            };
            keep.then(|| (name, fs::read(&p).expect("readable input")))
        })
        .collect();
    out.sort();
    out
}

/// Replay one input of `target` through the target's checks.
fn replay(target: &str, data: &[u8]) {
    match target {
        "compile_raw" => {
            let _ = checks::check_compile_raw(data);
        }
        "compile_structured" => {
            let text = String::from_utf8(data.to_vec()).expect("configs are text");
            let _ = checks::check_compile_text(&text, &[], &[]);
        }
        "decide" => {
            let plugins = checks::decide_plugins();
            let (i, case) = checks::parse_text_case(data, &plugins)
                .expect("decide inputs are in the text form (H<config>...)");
            let _ = checks::check_request(&plugins[i], &case);
        }
        "cookie_open" => {
            let (value, _, keys, name, _) = checks::cookie_open_input(data, checks::COOKIE_NAMES);
            let _ = checks::check_cookie_open(&value, &name, &keys, 1_800_000_000);
        }
        "set_cookie" => {
            let text = String::from_utf8(data.to_vec()).expect("configs are text");
            let s = checks::sample_session();
            for ua in [None, Some("curl/8.5.0")] {
                let _ = checks::check_cookie_config(&text, &s, &[9; 24], 1_800_000_000, ua);
            }
        }
        other => panic!("unknown target {other}"),
    }
}

const TARGETS: &[&str] = &[
    "compile_raw",
    "compile_structured",
    "decide",
    "cookie_open",
    "set_cookie",
];

/// Replay every file of `rel` (one target), naming the one that fails.
fn replay_all(target: &str, rel: &str, bug: Option<&str>) -> usize {
    let files = inputs(rel, bug);
    for (name, data) in &files {
        let result = std::panic::catch_unwind(|| {
            checks::set_strict(bug.is_some() || rel.starts_with("regressions"));
            replay(target, data);
        });
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("fuzz/{rel}/{name}: {msg}");
        }
    }
    files.len()
}

#[test]
fn fixed_regressions_stay_fixed() {
    for t in TARGETS {
        replay_all(t, &format!("regressions/{t}"), None);
    }
}

/// The seeds in a form that needs no fuzzer replay too (known bugs are
/// stepped around here, as while fuzzing).
#[test]
fn seed_corpora_pass() {
    for t in ["compile_raw", "decide", "cookie_open"] {
        let n = replay_all(t, &format!("corpus/{t}"), None);
        assert!(n >= 5, "only {n} seeds for {t}");
    }
}

/// The decide configs themselves compile and pass the plugin checks.
#[test]
fn decide_configs_are_sound() {
    for p in checks::decide_plugins() {
        checks::check_plugin(&p);
    }
}

fn replay_bug(id: &str) {
    let mut n = 0;
    for t in TARGETS {
        n += replay_all(t, &format!("regressions/{t}"), Some(id));
    }
    assert!(n > 0, "no inputs for bug {id}");
}

#[test]
fn bug_open_non_ascii() {
    replay_bug("open-non-ascii");
}

#[test]
fn bug_error_newline() {
    replay_bug("error-newline");
}

#[test]
fn bug_path_trailing_space() {
    replay_bug("path-trailing-space");
}

#[test]
fn bug_cookie_prefix() {
    replay_bug("cookie-prefix");
}

#[test]
fn bug_same_site_none_http() {
    replay_bug("same-site-none-http");
}
