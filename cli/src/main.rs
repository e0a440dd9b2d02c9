//! `sticky-canary`: the command-line companion of the filter, built natively
//! from the same host-free core, so its answers are the filter's.
//!
//! One module per subcommand; each has `Args` (clap derive) and
//! `run(args) -> Result<ExitCode, Fatal>`.
//!
//! Exit status: 0 success; 1 a negative answer (`check`: the config is
//! invalid; `cookie decode`: the filter would not accept the cookie); 2 the
//! command could not do its job (bad arguments, unreadable file).

mod check;
mod common;
mod cookie;
mod explain;
mod keygen;
mod migrate;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sticky-canary",
    version,
    about = "Check, explain and simulate sticky-canary configs, with the filter's own code",
    long_about = "Check, explain and simulate sticky-canary configs.\n\n\
        Built from the same host-free core as the Envoy filter: `check` runs the \
        filter's own compile, `explain` its own decision, `cookie decode` its own \
        cookie format. Exit status: 0 ok, 1 a negative answer (invalid config, \
        cookie the filter would not accept), 2 a usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Each subcommand's help text is on its Args struct (doc comment and
    // long_about), so variants carry no doc comment of their own.
    Check(check::Args),
    Explain(explain::Args),
    /// Session cookies: what one holds.
    #[command(subcommand)]
    Cookie(cookie::Command),
    Keygen(keygen::Args),
    Simulate(simulate::Args),
    /// Convert ingress-nginx canary and affinity annotations to the plugin
    /// config and the routing for Istio, Envoy Gateway or plain Envoy.
    Migrate(migrate::MigrateArgs),
}

// `sticky-canary ... | head` should end quietly, as Unix tools do, rather
// than fail on the closed pipe: restore SIGPIPE's default action (Rust
// ignores it at start-up). Declared here to avoid a libc dependency for one
// call; 13 is SIGPIPE and 0 is SIG_DFL on Linux and macOS.
#[cfg(unix)]
extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at start-up, before
    // any thread exists.
    unsafe {
        signal(13, 0);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Cookie(c) => cookie::run(c),
        Command::Keygen(a) => keygen::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Migrate(a) => Ok(ExitCode::from(u8::try_from(migrate::run(&a)).unwrap_or(2))),
    };
    match result {
        Ok(code) => code,
        Err(common::Fatal(msg)) => {
            eprintln!("sticky-canary: error: {msg}");
            ExitCode::from(2)
        }
    }
}
