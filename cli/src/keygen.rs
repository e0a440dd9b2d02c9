//! `sticky-canary keygen`: new cookie secrets.

use crate::common::{Fatal, Format};
use crate::Io;
use sticky_canary::compile::encode_secret;
use sticky_canary::session::SealKey;

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
pub fn run(a: Args, io: &mut Io<'_>) -> Result<u8, Fatal> {
    let mut keys = Vec::new();
    for _ in 0..a.count {
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k).map_err(|e| Fatal(format!("no OS randomness: {e}")))?;
        keys.push(encode_secret(&SealKey(k)));
    }
    match (a.format, a.comma) {
        (Format::Json, _) => writeln!(io.out, "{}", serde_json::json!(keys))?,
        (Format::Text, true) => writeln!(io.out, "{}", keys.join(","))?,
        (Format::Text, false) => {
            for k in &keys {
                writeln!(io.out, "{k}")?;
            }
        }
    }
    Ok(0)
}
