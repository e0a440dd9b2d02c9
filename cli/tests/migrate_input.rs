//! `sticky-canary migrate` on input it cannot migrate as given: a clear
//! message and a non-zero exit, never a panic. Exit 2: nothing usable
//! (YAML that does not parse, no v1 Ingress, only canaries, template
//! placeholders, bytes that are not text); exit 1: migrated, but something
//! the user must look at (LOSSY: an old Ingress API version skipped, an
//! annotation ingress-nginx does not know).

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn migrate(input: &[u8], target: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(["migrate", "--target", target])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked") && run.code != 101,
        "a panic: {}",
        run.stderr
    );
    run
}

fn on_every_target(input: &str, check: impl Fn(&Run)) {
    for t in ["envoy", "istio", "envoy-gateway"] {
        check(&migrate(input.as_bytes(), t));
    }
}

const MAIN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

fn canary(annotations: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web-canary
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
{annotations}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web-next, port: {{number: 80}}}}}}}}
"#
    )
}

#[test]
fn a_canary_without_any_main_ingress_is_an_error() {
    let input = canary("    nginx.ingress.kubernetes.io/canary-weight: \"20\"");
    on_every_target(&input, |r| {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("only canary Ingresses in the input (Ingress shop/web-canary)")
                && r.stderr.contains("give the main Ingresses' files too"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty());
    });
}

#[test]
fn old_ingress_api_versions_are_reported_and_skipped() {
    let old = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old, namespace: shop}\nspec:\n  backend: {serviceName: web, servicePort: 80}\n";
    // Alone: nothing to migrate.
    on_every_target(old, |r| {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("LOSSY  Ingress shop/old  apiVersion  extensions/v1beta1: not read")
                && r.stderr
                    .contains("no networking.k8s.io/v1 Ingress in the input"),
            "{}",
            r.stderr
        );
    });
    // Beside a v1 Ingress: migrated, the old one reported, exit 1.
    on_every_target(&format!("{MAIN}---\n{old}"), |r| {
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r
            .stderr
            .contains("apiVersion  extensions/v1beta1: not read"));
        assert!(r.stdout.contains("shop.example.com"), "{}", r.stdout);
    });
}

#[test]
fn unknown_annotations_are_lossy_with_a_hint() {
    let input = format!(
        "{MAIN}---\n{}",
        canary("    nginx.ingress.kubernetes.io/canary-wieght: \"20\"")
    );
    on_every_target(&input, |r| {
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("LOSSY  Ingress shop/web-canary  canary-wieght  not an ingress-nginx annotation (did you mean canary-weight?)"),
            "{}",
            r.stderr
        );
    });
}

#[test]
fn template_placeholders_are_errors() {
    for (what, input) in [
        (
            "annotation",
            format!(
                "{MAIN}---\n{}",
                canary("    nginx.ingress.kubernetes.io/canary-weight: \"${WEIGHT}\"")
            ),
        ),
        ("host", MAIN.replace("shop.example.com", "${HOST}")),
        (
            "service",
            MAIN.replace("name: web,", "name: \"{{ .Values.service }}\","),
        ),
    ] {
        on_every_target(&input, |r| {
            assert_eq!(r.code, 2, "{what}: {}", r.stderr);
            assert!(
                r.stderr
                    .contains("looks like an unrendered template placeholder")
                    && r.stderr.contains("render the manifests first"),
                "{what}: {}",
                r.stderr
            );
            assert!(r.stdout.is_empty(), "{what}");
        });
    }
}

#[test]
fn yaml_that_does_not_parse_is_an_error() {
    on_every_target(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: [x\n",
        |r| {
            assert_eq!(r.code, 2);
            assert!(
                r.stderr.contains("stdin: document 1: not valid YAML"),
                "{}",
                r.stderr
            );
        },
    );
    // Not text at all.
    for t in ["envoy", "istio", "envoy-gateway"] {
        let r = migrate(&[0xff, 0xfe, 0x00, b'a'], t);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("sticky-canary migrate: stdin:"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn lists_are_read_and_an_empty_or_broken_list_is_an_error() {
    let item = MAIN.trim().replace('\n', "\n  ");
    let list = format!("apiVersion: v1\nkind: List\nitems:\n- {item}\n");
    on_every_target(&list, |r| {
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("shop.example.com"));
    });
    on_every_target("apiVersion: v1\nkind: List\nitems: []\n", |r| {
        assert_eq!(r.code, 2);
        assert!(
            r.stderr
                .contains("no networking.k8s.io/v1 Ingress in the input"),
            "{}",
            r.stderr
        );
    });
    on_every_target("apiVersion: v1\nkind: IngressList\nitems: {a: 1}\n", |r| {
        assert_eq!(r.code, 2);
        assert!(
            r.stderr.contains("a IngressList whose items is not a list"),
            "{}",
            r.stderr
        );
    });
}

#[test]
fn an_unknown_path_type_is_an_error() {
    on_every_target(&MAIN.replace("pathType: Prefix", "pathType: Regex"), |r| {
        assert_eq!(r.code, 2);
        assert!(
            r.stderr.contains("pathType \"Regex\" of path \"/\": Kubernetes knows Exact, Prefix and ImplementationSpecific"),
            "{}",
            r.stderr
        );
    });
}

#[test]
fn a_bad_sha256_is_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args([
            "migrate",
            "--target",
            "envoy-gateway",
            "--wasm-sha256",
            "sha256:abc",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(MAIN.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--wasm-sha256 \"sha256:abc\": expected 64 hex digits"));
}

/// Fields Kubernetes would have refused (found by the cli fuzz target):
/// the Ingress is named, the field and the rule, exit 2 on every target.
#[test]
fn a_relative_path_or_a_host_that_is_no_host_name_is_the_ingress_s_error() {
    let refused = |yaml: &str, error: &str| {
        on_every_target(yaml, |r| {
            assert_eq!(r.code, 2, "{}", r.stderr);
            assert!(r.stderr.contains(error), "{}", r.stderr);
        })
    };
    refused(
        &MAIN.replace("{path: /,", "{path: web,"),
        "Ingress shop/web: path \"web\" does not start with '/'",
    );
    refused(
        &MAIN.replace("shop.example.com", "\"shop.exa'mple.com\""),
        "Ingress shop/web: host \"shop.exa'mple.com\" is not a host name",
    );
    // A wildcard host is a host name.
    let wildcard = MAIN.replace("shop.example.com", "\"*.example.com\"");
    on_every_target(&wildcard, |r| assert_eq!(r.code, 0, "{}", r.stderr));
}
