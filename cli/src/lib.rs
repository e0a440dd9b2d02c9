//! `sticky-canary`: the command-line companion of the filter, built natively
//! from the same host-free core, so its answers are the filter's: every
//! decision, format and derived value it prints comes from the
//! `sticky-canary` library; this crate reads arguments and files, and words
//! the answers for people.
//!
//! One module per subcommand; each has `Args` (clap derive) and
//! `run(args, io) -> Result<u8, Fatal>`, writing to the [`Io`] it is given.
//! [`run`] parses arguments and runs a command; the binary (`main.rs`)
//! passes the process's streams, tests and the fuzz target pass buffers
//! ([`run_captured`]). `migrate` is the exception: it reads and writes the
//! process's own streams and files (`migrate::migrate` is its pure core).
//!
//! Exit status: 0 success; 1 a negative answer (`check`: the config is
//! invalid; `cookie decode`: the filter would not accept the cookie); 2 the
//! command could not do its job (bad arguments, unreadable file).

pub mod check;
pub mod common;
pub mod cookie;
pub mod explain;
pub mod keygen;
pub mod migrate;
pub mod simulate;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::{Read, Write};

/// The command line.
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
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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

/// Where a command reads standard input from and writes its output to.
pub struct Io<'a> {
    /// Standard input (a config given as `-`).
    pub stdin: &'a mut dyn Read,
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
}

/// Run a parsed command; returns the exit status.
pub fn execute(command: Command, io: &mut Io<'_>) -> u8 {
    let result = match command {
        Command::Check(a) => check::run(a, io),
        Command::Explain(a) => explain::run(a, io),
        Command::Cookie(c) => cookie::run(c, io),
        Command::Keygen(a) => keygen::run(a, io),
        Command::Simulate(a) => simulate::run(a, io),
        Command::Migrate(a) => Ok(u8::try_from(migrate::run(&a)).unwrap_or(2)),
    };
    match result {
        Ok(code) => code,
        Err(common::Fatal(msg)) => {
            // Nowhere left to report a failed write of the error itself.
            let _ = writeln!(io.err, "sticky-canary: error: {msg}");
            2
        }
    }
}

/// Parse `args` (the program name first) and run the command; a usage
/// error, `--help` and `--version` are written as clap words them, without
/// colour. Returns the exit status.
pub fn run<I, T>(args: I, io: &mut Io<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => execute(cli.command, io),
        Err(e) => {
            let text = e.render().to_string();
            let sink: &mut dyn Write = if e.use_stderr() { io.err } else { io.out };
            let _ = sink.write_all(text.as_bytes());
            u8::try_from(e.exit_code()).unwrap_or(2)
        }
    }
}

/// What a command printed, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit status.
    pub code: u8,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// [`run`] with `stdin` as standard input and both outputs captured.
///
/// ```
/// let out = sticky_canary_cli::run_captured(["sticky-canary", "cookie", "decode", "éAAAA"], b"");
/// assert_eq!(out.code, 1);
/// assert!(String::from_utf8_lossy(&out.stdout).contains("does not open: garbled"));
/// ```
pub fn run_captured<I, T>(args: I, stdin: &[u8]) -> Output
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let (mut input, mut stdout, mut stderr) = (stdin, Vec::new(), Vec::new());
    let code = run(
        args,
        &mut Io {
            stdin: &mut input,
            out: &mut stdout,
            err: &mut stderr,
        },
    );
    Output {
        code,
        stdout,
        stderr,
    }
}
