//! `iotseal keygen`: an identity key pair in a TOML file (mode 0600).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use iotseal_proto::SigAlg;

use crate::providers;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Signature algorithm: ed25519, ecdsa-p256, mldsa65, ed25519+mldsa65.
    #[arg(long, default_value = "ed25519")]
    alg: SigAlg,
    /// Output file (private key; written with mode 0600). The public key is printed.
    #[arg(long)]
    out: PathBuf,
    /// Crypto provider.
    #[arg(long, default_value = "aws-lc")]
    provider: String,
}

pub(crate) fn run(a: Args) -> Result<()> {
    let p = providers::by_name(&a.provider)?;
    let key = p.signature(a.alg)?.generate(p.random)?;
    let public = hex::encode(key.public_key());
    let text = format!(
        "# iotseal identity key. Keep this file secret.\nalg = \"{}\"\nprivate_key = \"{}\"\npublic_key = \"{}\"\n",
        a.alg,
        hex::encode(key.private_bytes().as_bytes()),
        public
    );
    write_private(&a.out, text.as_bytes())?;
    println!("{} public key: {public}", a.alg);
    Ok(())
}

/// Writes a file readable only by its owner.
pub(crate) fn write_private(path: &PathBuf, data: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
