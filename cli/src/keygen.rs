//! `sticky-canary keygen`: new cookie secrets.

use crate::common::{self, Fatal, Format};
use std::process::ExitCode;

/// Print new cookie secrets (base64 of 32 random bytes) for session.secrets.
#[derive(clap::Args)]
#[command(
    long_about = "Print new cookie secrets: base64 of 32 random bytes from the \
    operating system, the format of session.secrets (and of each entry of the \
    session.secrets_env variable). To rotate, put the new secret first and keep the old \
    one after it until the old cookies have expired: the first seals, all open."
)]
pub struct Args {
    /// How many secrets.
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    count: u32,
    /// Print them on one line, comma-separated (the value of a secrets_env variable).
    #[arg(long)]
    comma: bool,
    /// Output format (json: a list ready for session.secrets).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Run it.
pub fn run(a: Args) -> Result<ExitCode, Fatal> {
    let mut keys = Vec::new();
    for _ in 0..a.count {
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k).map_err(|e| Fatal(format!("no OS randomness: {e}")))?;
        keys.push(common::base64_std(&k));
    }
    match (a.format, a.comma) {
        (Format::Json, _) => println!("{}", serde_json::json!(keys)),
        (Format::Text, true) => println!("{}", keys.join(",")),
        (Format::Text, false) => keys.iter().for_each(|k| println!("{k}")),
    }
    Ok(ExitCode::SUCCESS)
}
