//! `sticky-canary`: the command-line companion of the filter, built natively
//! from the same host-free core.

fn main() {
    eprintln!("sticky-canary: no subcommands yet");
    std::process::exit(2);
}
