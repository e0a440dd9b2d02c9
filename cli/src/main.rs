//! `sticky-canary`: the command-line companion of the filter, built natively
//! from the same host-free core.

use clap::{Parser, Subcommand};

mod migrate;

/// The sticky-canary command-line companion.
#[derive(Parser, Debug)]
#[command(name = "sticky-canary", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert ingress-nginx canary and affinity annotations to the plugin
    /// config and the routing for Istio, Envoy Gateway or plain Envoy.
    Migrate(migrate::MigrateArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Migrate(args) => migrate::run(args),
    };
    std::process::exit(code);
}
