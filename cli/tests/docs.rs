//! Every transcript in docs/cli.md is re-run: each `$ command` line of a
//! ```console block runs in bash from the repository root, with the built
//! binary first on PATH (stderr merged into stdout, as a terminal shows
//! them), and must print exactly the lines that follow it.
//!
//! After a deliberate change of output, refresh the transcripts with
//! `STICKY_CANARY_UPDATE_DOCS=1 cargo test -p sticky-canary-cli --test docs`
//! and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sticky-canary");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &str) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{{ {cmd}\n}} 2>&1"))
        .current_dir(root())
        .env("PATH", path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docs_cli_transcripts_are_current() {
    let doc_path = root().join("docs/cli.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut out = String::new();
    let mut failures = Vec::new();
    let mut in_console = false;
    let mut expected: Option<(String, String)> = None; // (command, text so far)
    let mut commands = 0;
    let finish = |exp: &mut Option<(String, String)>, out: &mut String, fails: &mut Vec<String>| {
        if let Some((cmd, want)) = exp.take() {
            let got = run(&cmd);
            if got != want {
                fails.push(format!(
                    "$ {cmd}\n--- docs/cli.md says:\n{want}--- it prints:\n{got}"
                ));
            }
            out.push_str(&got);
        }
    };
    for line in doc.split_inclusive('\n') {
        if in_console {
            if line.trim_end() == "```" {
                finish(&mut expected, &mut out, &mut failures);
                in_console = false;
                out.push_str(line);
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                finish(&mut expected, &mut out, &mut failures);
                out.push_str(line);
                expected = Some((cmd.trim_end().to_owned(), String::new()));
                commands += 1;
            } else if let Some((_, want)) = expected.as_mut() {
                want.push_str(line);
            } else {
                out.push_str(line);
            }
        } else {
            if line.trim_end() == "```console" {
                in_console = true;
            }
            out.push_str(line);
        }
    }
    assert!(commands >= 10, "only {commands} transcripts found");
    if std::env::var_os("STICKY_CANARY_UPDATE_DOCS").is_some() {
        std::fs::write(&doc_path, out).unwrap();
        return;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
