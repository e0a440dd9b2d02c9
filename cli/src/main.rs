//! The `sticky-canary` binary: parse the arguments (clap prints help and
//! usage errors, in colour on a terminal) and run the command on the
//! process's streams. Everything else is the library (`lib.rs`).

use clap::Parser;
use std::process::ExitCode;
use sticky_canary_cli::{execute, Cli, Io};

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
    // Standard input is not locked for the whole run: `migrate` reads it
    // itself (its lock is not reentrant; standard output's is).
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let code = execute(
        cli.command,
        &mut Io {
            stdin: &mut std::io::stdin(),
            out: &mut stdout.lock(),
            err: &mut stderr.lock(),
        },
    );
    ExitCode::from(code)
}
