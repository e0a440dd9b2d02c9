//! Golden tests of `sticky-canary migrate`: every `tests/fixtures/<case>/
//! input.yaml` is migrated to each target, and the files written must equal
//! `tests/fixtures/<case>/expected/<target>/` (plugin.json, the manifests,
//! report.txt, and exit.txt with the exit status). Every plugin config must
//! compile with the filter's own `compile_json`, and the manifests must
//! carry exactly that config.
//!
//! Regenerate the expected files after an intended change with
//! `STICKY_CANARY_REGEN=1 cargo test -p sticky-canary-cli --test migrate_golden`
//! and review the diff.

// Test code: failing loudly is the point (clippy.toml's allow-*-in-tests
// covers #[test] functions only, not the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: &[(&str, &str)] = &[
    ("envoy", "envoy.yaml"),
    ("istio", "istio.yaml"),
    ("envoy-gateway", "envoy-gateway.yaml"),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.join("input.yaml").is_file());
    v.sort();
    v
}

fn migrate(input: &Path, target: &str, out: &Path) -> i32 {
    let status = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(["migrate", "--target", target, "-o"])
        .arg(out)
        .arg(input)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// The plugin config a manifest carries (parsed), for each target.
fn embedded_plugin(target: &str, manifests: &str) -> serde_json::Value {
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(manifests)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    match target {
        "envoy" => {
            let filters = &docs[0]["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["http_filters"];
            let text = filters[0]["typed_config"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap();
            serde_json::from_str(text).unwrap()
        }
        "istio" => {
            docs.iter().find(|d| d["kind"] == "WasmPlugin").unwrap()["spec"]["pluginConfig"].clone()
        }
        _ => docs
            .iter()
            .find(|d| d["kind"] == "EnvoyExtensionPolicy")
            .unwrap()["spec"]["wasm"][0]["config"]
            .clone(),
    }
}

#[test]
fn migrations_match_the_golden_files() {
    let regen = std::env::var_os("STICKY_CANARY_REGEN").is_some();
    let cases = cases();
    assert!(cases.len() >= 4, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        for (target, manifest) in TARGETS {
            let tmp = std::env::temp_dir().join(format!(
                "sticky-canary-golden-{}-{}-{target}",
                std::process::id(),
                case.file_name().unwrap().to_string_lossy()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            let code = migrate(&case.join("input.yaml"), target, &tmp);
            std::fs::write(tmp.join("exit.txt"), format!("{code}\n")).unwrap();
            let expected = case.join("expected").join(target);
            for file in ["plugin.json", manifest, "report.txt", "exit.txt"] {
                let got = std::fs::read_to_string(tmp.join(file)).unwrap_or_default();
                if regen {
                    std::fs::create_dir_all(&expected).unwrap();
                    std::fs::write(expected.join(file), &got).unwrap();
                    continue;
                }
                let want = std::fs::read_to_string(expected.join(file)).unwrap_or_default();
                if got != want {
                    failures.push(format!(
                        "{}/{target}/{file} differs (got {} bytes, want {}); regenerate with STICKY_CANARY_REGEN=1 and review",
                        case.display(),
                        got.len(),
                        want.len()
                    ));
                }
            }
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_generated_config_compiles_and_is_the_one_in_the_manifests() {
    if std::env::var_os("STICKY_CANARY_REGEN").is_some() {
        return; // the files are being rewritten; the next plain run checks them
    }
    // Persistent mode names the keys' variable; set it for compile_json.
    std::env::set_var(
        "STICKY_CANARY_KEYS",
        "Q1lG7l18ymBfHj+aouEhmFQVKqbdmDCszs+N7gTOhAo=",
    );
    for case in cases() {
        for (target, manifest) in TARGETS {
            let dir = case.join("expected").join(target);
            let plugin = std::fs::read_to_string(dir.join("plugin.json")).unwrap();
            if let Err(e) = sticky_canary::compile_json(&plugin) {
                panic!("{}: {e}", dir.display());
            }
            let parsed: serde_json::Value = serde_json::from_str(&plugin).unwrap();
            let manifests = std::fs::read_to_string(dir.join(manifest)).unwrap();
            assert_eq!(
                embedded_plugin(target, &manifests),
                parsed,
                "{}",
                dir.display()
            );
        }
    }
}

#[test]
fn lossy_input_exits_1_unless_allowed() {
    let input = fixtures().join("lossy").join("input.yaml");
    let tmp = std::env::temp_dir().join(format!("sticky-canary-lossy-{}", std::process::id()));
    assert_eq!(migrate(&input, "envoy", &tmp), 1);
    let status = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(["migrate", "--target", "envoy", "--allow-lossy", "-o"])
        .arg(&tmp)
        .arg(&input)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn reads_stdin_and_prints_the_manifests() {
    use std::io::Write as _;
    let input = std::fs::read(fixtures().join("pair-header").join("input.yaml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(["migrate", "--target", "envoy"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let want = std::fs::read(fixtures().join("pair-header/expected/envoy/envoy.yaml")).unwrap();
    assert_eq!(out.stdout, want);
    let report = String::from_utf8(out.stderr).unwrap();
    assert!(
        report.starts_with("# sticky-canary migrate: 0 lossy"),
        "{report}"
    );
}
