//! The `cli` fuzz target (fuzz/fuzz_targets/cli.rs) replayed natively with
//! its own checks (fuzz/src/cli_checks.rs): every input it failed on
//! (fuzz/regressions/cli/) and its seeds (fuzz/corpus/cli/), so `cargo test`
//! (and `make test`) keep them passing without a fuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/cli_checks.rs"]
mod cli_checks;

use std::path::Path;

/// Replay the files of `fuzz/<rel>`: with `bug` None those not named
/// `bug-*`, else those named `bug-<bug>-*` (in strict mode).
fn replay_dir(rel: &str, bug: Option<&str>) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(rel);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            match bug {
                None => !name.starts_with("bug-"),
                Some(id) => name.starts_with(&format!("bug-{id}")),
            }
        })
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| {
            cli_checks::set_strict(bug.is_some());
            cli_checks::check_cli(&data)
        });
        match result {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{}: no mode byte the target knows", f.display()),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{}: {msg}", f.display());
            }
        }
    }
    files.len()
}

#[test]
fn cli_regressions_stay_fixed() {
    assert!(replay_dir("regressions/cli", None) >= 1);
}

#[test]
fn cli_seeds_pass() {
    assert!(replay_dir("corpus/cli", None) >= 20);
}

/// The bug the issue names: `cookie decode éAAAA` aborted with a panic.
#[test]
fn cookie_decode_e_acute_exits_1() {
    let ran = cli_checks::check_cli("c\u{0}éAAAA".as_bytes()).unwrap();
    assert_eq!((ran.mode, ran.code), (b'c', 1));
    assert!(
        ran.stdout.contains("does not open: garbled"),
        "{}",
        ran.stdout
    );
}
