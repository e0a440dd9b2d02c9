//! `sticky-canary migrate`: ingress-nginx canary and affinity annotations to
//! the filter's plugin config plus the routing for Istio, Envoy Gateway or
//! plain Envoy, with a report of everything not carried over exactly.
//!
//! Steps: [`ingress::parse`] reads the manifests, [`plan::build`] parses the
//! annotations ([`annotations`]) and pairs canaries with main Ingresses,
//! [`plugin::build`] writes the plugin config, and [`envoy`], [`istio`] and
//! [`gateway`] write the routing. [`report::Report`] collects the findings.

pub mod annotations;
pub mod envoy;
pub mod gateway;
pub mod ingress;
pub mod istio;
pub mod plan;
pub mod plugin;
pub mod report;

use std::io::Read as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Gateway, VirtualService, DestinationRule, WasmPlugin.
    Istio,
    /// Gateway, HTTPRoute, EnvoyExtensionPolicy, BackendTrafficPolicy.
    EnvoyGateway,
    /// One complete envoy.yaml.
    Envoy,
}

/// `sticky-canary migrate`: convert ingress-nginx canary and affinity
/// annotations.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Ingress manifests: YAML or JSON, several documents, `List`s
    /// (`kubectl get ingress -A -o yaml`). `-` or nothing reads stdin.
    pub files: Vec<PathBuf>,
    /// What to generate.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Write `plugin.json`, the manifests (`envoy.yaml`, `istio.yaml` or
    /// `envoy-gateway.yaml`) and `report.txt` into this directory instead of
    /// printing the manifests.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Exit 0 even when something could not be carried over exactly.
    #[arg(long)]
    pub allow_lossy: bool,
    /// Envoy: where Envoy finds the .wasm.
    #[arg(long, default_value = "/etc/envoy/sticky_canary.wasm")]
    pub wasm_path: String,
    /// Envoy: the listener address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Envoy: the endpoints of a Service's cluster instead of its cluster
    /// DNS name, e.g. `shop/web=10.0.0.7:8080` (repeat for more pods or
    /// Services).
    #[arg(long = "endpoint", value_name = "NS/SERVICE=HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Istio: the WasmPlugin url (the placeholder registry is what `make
    /// oci REGISTRY=...` and `istio/oci.py --pin` replace).
    #[arg(long, default_value = concat!("oci://REGISTRY.example/REPLACE-ME/sticky-canary:", env!("CARGO_PKG_VERSION")))]
    pub wasm_url: String,
    /// Envoy Gateway: the Wasm OCI image (no oci:// prefix).
    #[arg(long, default_value = concat!("REGISTRY.example/REPLACE-ME/sticky-canary:", env!("CARGO_PKG_VERSION")))]
    pub wasm_image: String,
    /// Istio and Envoy Gateway: the image's manifest digest (64 hex
    /// digits, what `make oci` prints). Envoy Gateway gets a placeholder
    /// that `istio/oci.py --pin` fills when it is not given.
    #[arg(long, value_name = "HEX")]
    pub wasm_sha256: Option<String>,
    /// Envoy Gateway: `failOpen: false`, so the routes answer 500 when the
    /// image cannot be fetched or does not match its sha256 (default: they
    /// are served without the filter, everyone on the main version).
    #[arg(long)]
    pub fail_closed: bool,
    /// Envoy Gateway: the GatewayClass of the generated Gateway.
    #[arg(long, default_value = "eg")]
    pub gateway_class: String,
    /// Envoy Gateway: the namespace of the Gateway and the
    /// EnvoyExtensionPolicy.
    #[arg(long, default_value = "default")]
    pub gateway_namespace: String,
    /// The annotation prefix ingress-nginx was run with
    /// (`--annotations-prefix`).
    #[arg(long, default_value = annotations::DEFAULT_PREFIX)]
    pub annotation_prefix: String,
}

impl MigrateArgs {
    /// The `--endpoint` addresses given for `namespace/service`.
    pub fn endpoints_of(&self, namespace: &str, service: &str) -> Vec<(String, u32)> {
        let want = format!("{namespace}/{service}=");
        self.endpoints
            .iter()
            .filter_map(|e| e.strip_prefix(&want))
            .filter_map(|a| {
                let (h, p) = a.rsplit_once(':')?;
                Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?))
            })
            .collect()
    }
}

/// Settings the generators read.
pub type Options = MigrateArgs;

impl MigrateArgs {
    /// `--listen` split into address and port.
    pub fn listen_parts(&self) -> (String, u16) {
        match self.listen.rsplit_once(':') {
            Some((a, p)) => (
                a.trim_matches(['[', ']']).to_owned(),
                p.parse().unwrap_or(8080),
            ),
            None => (self.listen.clone(), 8080),
        }
    }
}

/// Everything a migration produces.
pub struct Output {
    /// The plugin config.
    pub plugin: Value,
    /// The manifests, as YAML text.
    pub manifests: String,
    /// The manifests' file name.
    pub file_name: &'static str,
    /// The findings.
    pub report: report::Report,
}

fn yaml_docs(docs: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(d).map_err(|e| format!("cannot write YAML: {e}"))?);
    }
    Ok(out)
}

/// A copy of `plugin` that compiles here: `secrets_env` names a variable of
/// the Wasm VM, not of this process, so it is replaced by a dummy key.
pub fn for_validation(plugin: &Value) -> Value {
    let mut v = plugin.clone();
    if let Some(Value::Array(routes)) = v.get_mut("routes") {
        for r in routes {
            if let Some(Value::Object(s)) = r.get_mut("session") {
                if s.remove("secrets_env").is_some() {
                    s.insert(
                        "secrets".into(),
                        serde_json::json!(["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]),
                    );
                }
            }
        }
    }
    v
}

/// Migrate `inputs` (`(source name, text)`).
pub fn migrate(inputs: &[(String, String)], opts: &Options) -> Result<Output, String> {
    let mut report = report::Report::default();
    let mut ingresses = Vec::new();
    for (source, text) in inputs {
        ingresses.extend(ingress::parse(text, source, &mut report)?);
    }
    if ingresses.is_empty() {
        // What was skipped, and why, before the error.
        let skipped = if report.findings.is_empty() {
            String::new()
        } else {
            report.render()
        };
        return Err(format!(
            "{skipped}sticky-canary migrate: no networking.k8s.io/v1 Ingress in the input"
        ));
    }
    if let Some(h) = &opts.wasm_sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("--wasm-sha256 {h:?}: expected 64 hex digits (the image's manifest digest, without sha256:)"));
        }
    }
    let plan = plan::build(&ingresses, &opts.annotation_prefix, &mut report)?;
    let plugin = plugin::build(&plan, &mut report);
    let text = serde_json::to_string(&for_validation(&plugin)).map_err(|e| e.to_string())?;
    if let Err(e) = sticky_canary::compile_json(&text) {
        return Err(format!("the generated plugin config is refused by the filter (a bug in migrate, please report it): {e}"));
    }
    for e in &opts.endpoints {
        let ok = e
            .split_once('=')
            .and_then(|(svc, addr)| {
                Some((
                    svc.split_once('/')?,
                    addr.rsplit_once(':')?.1.parse::<u32>().ok()?,
                ))
            })
            .is_some();
        if !ok {
            return Err(format!("--endpoint {e:?}: expected NS/SERVICE=HOST:PORT"));
        }
    }
    let (manifests, file_name) = match opts.target {
        Target::Envoy => {
            if plan.locations.iter().any(plan::Location::active) && opts.endpoints.is_empty() {
                report.note("-", "clusters", "each cluster resolves <service>.<namespace>.svc.cluster.local: point it at the pods (a headless Service) so the consistent hash can pick one");
            }
            let v = envoy::build(&plan, &plugin, opts, &mut report);
            let body =
                serde_norway::to_string(&v).map_err(|e| format!("cannot write YAML: {e}"))?;
            (
                format!("# Generated by `sticky-canary migrate --target envoy`.\n{body}"),
                "envoy.yaml",
            )
        }
        Target::Istio => {
            let body = yaml_docs(&istio::build(&plan, &plugin, opts, &mut report))?;
            let head = if plugin::any_persistent(&plan) {
                "# Generated by `sticky-canary migrate --target istio`.\n# Persistent mode needs istiod 1.27 or newer (the override_host EnvoyFilter;\n# retryIgnorePreviousHosts needs 1.26):\n# min-istio: 1.27\n"
            } else {
                "# Generated by `sticky-canary migrate --target istio`.\n"
            };
            (format!("{head}{body}"), "istio.yaml")
        }
        Target::EnvoyGateway => {
            let body = yaml_docs(&gateway::build(&plan, &plugin, opts, &mut report))?;
            // The placeholder digest, marked for people and for istio/oci.py.
            let body = body.replace(
                &format!("sha256: '{}'\n", gateway::PLACEHOLDER_SHA256),
                &format!(
                    "sha256: '{}'   # REPLACE-ME: the image's manifest digest (istio/oci.py --pin)\n",
                    gateway::PLACEHOLDER_SHA256
                ),
            );
            (
                format!(
                    "# Generated by `sticky-canary migrate --target envoy-gateway`.\n# Needs Envoy Gateway 1.6 or newer (BackendTrafficPolicy consistentHash type Headers;\n# endpointOverride for persistent mode since 1.5).\n{body}"
                ),
                "envoy-gateway.yaml",
            )
        }
    };
    Ok(Output {
        plugin,
        manifests,
        file_name,
        report,
    })
}

/// Run the subcommand; returns the exit status.
pub fn run(args: &MigrateArgs) -> i32 {
    let mut inputs = Vec::new();
    let files: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    for f in &files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("sticky-canary migrate: stdin: {e}");
                return 2;
            }
            ("stdin".to_owned(), s)
        } else {
            match std::fs::read_to_string(f) {
                Ok(s) => (f.display().to_string(), s),
                Err(e) => {
                    eprintln!("sticky-canary migrate: {}: {e}", f.display());
                    return 2;
                }
            }
        };
        inputs.push((name, text));
    }
    let out = match migrate(&inputs, args) {
        Ok(o) => o,
        Err(e) if e.contains("sticky-canary migrate: ") => {
            eprintln!("{e}");
            return 2;
        }
        Err(e) => {
            eprintln!("sticky-canary migrate: {e}");
            return 2;
        }
    };
    let report_text = out.report.render();
    match &args.out {
        Some(dir) => {
            let plugin = serde_json::to_string_pretty(&out.plugin).unwrap_or_default() + "\n";
            let writes = [
                ("plugin.json", plugin),
                (out.file_name, out.manifests.clone()),
                ("report.txt", report_text.clone()),
            ];
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("sticky-canary migrate: {}: {e}", dir.display());
                return 2;
            }
            for (name, body) in writes {
                if let Err(e) = std::fs::write(dir.join(name), body) {
                    eprintln!("sticky-canary migrate: {}: {e}", dir.join(name).display());
                    return 2;
                }
            }
        }
        None => print!("{}", out.manifests),
    }
    eprint!("{report_text}");
    if out.report.is_lossy() && !args.allow_lossy {
        eprintln!("sticky-canary migrate: some annotations were not carried over exactly (LOSSY above); re-run with --allow-lossy to accept");
        return 1;
    }
    0
}
