//! The filter's side of the config-schema contract (the schema's side is
//! tests/schema/test_config_schema.py): every config in tests/schema/good/
//! and tests/schema/stricter/ compiles, every config in tests/schema/bad/ and
//! tests/schema/filter-only/ is rejected.

// Helpers outside #[test] fns: clippy.toml's in-tests allowances do not reach them.
#![allow(clippy::panic, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn configs(dir: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schema")
        .join(dir);
    let mut out: Vec<(PathBuf, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, text)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no configs in {}", dir.display());
    out
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn all_accepted(dir: &str) {
    let failures: Vec<String> = configs(dir)
        .into_iter()
        .filter_map(|(p, text)| {
            sticky_canary::compile_json(&text)
                .err()
                .map(|e| format!("{}: {e}", name(&p)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "rejected by the filter:\n{}",
        failures.join("\n")
    );
}

fn all_rejected(dir: &str) {
    let mut accepted = Vec::new();
    for (p, text) in configs(dir) {
        match sticky_canary::compile_json(&text) {
            Ok(_) => accepted.push(name(&p)),
            // The error names a field path and a reason: never an empty message.
            Err(e) => assert!(
                !e.path.is_empty() && !e.reason.is_empty(),
                "{}: {e:?}",
                name(&p)
            ),
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted by the filter but listed as bad:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn good_configs_compile() {
    all_accepted("good");
}

#[test]
fn configs_the_schema_is_stricter_about_compile() {
    all_accepted("stricter");
}

#[test]
fn bad_configs_are_rejected() {
    all_rejected("bad");
}

#[test]
fn filter_only_configs_are_rejected() {
    all_rejected("filter-only");
}
