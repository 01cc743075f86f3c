//! `iotseal bench`: `crypto`, what each cryptographic choice costs (this module, on
//! [`iotseal_bench::matrix`]), and `load`, a running gateway under load (`cmd/load.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use iotseal_bench::matrix::{self, Config};
use iotseal_bench::report::CRYPTO_FILE;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The crypto matrix: provider × key exchange × signature × record protection (plus a
    /// no-encryption baseline): handshake time per side and bytes on the wire, record seal/open
    /// time and throughput at 64 B–16 KiB, overhead and memory per session, and an analysis of
    /// the ciphertext (entropy, chi-square, bit flips).
    Crypto(CryptoArgs),
    /// Load a running gateway with sealed readings over HTTPS keep-alive, or through an MQTT
    /// broker (--transport mqtt).
    Load(Box<super::load::LoadArgs>),
}

/// Arguments of `bench crypto`.
#[derive(Debug, clap::Args)]
pub(crate) struct CryptoArgs {
    /// Fewer iterations (the whole matrix still): under a minute on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object (the crypto.json format) instead of the tables.
    #[arg(long)]
    json: bool,
    /// Also write crypto.json into this directory (the input of `iotseal report`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only these providers (comma-separated: aws-lc, rustcrypto).
    #[arg(long, value_delimiter = ',')]
    provider: Vec<String>,
    /// Timed handshakes per suite (default: 101, or 21 with --quick).
    #[arg(long)]
    iterations: Option<usize>,
}

pub(crate) fn run(a: Args) -> Result<()> {
    match a.command {
        BenchCommand::Crypto(c) => crypto(c),
        BenchCommand::Load(l) => super::load::run(*l),
    }
}

fn crypto(a: CryptoArgs) -> Result<()> {
    let mut config = if a.quick {
        Config::quick()
    } else {
        Config::full()
    };
    if !a.provider.is_empty() {
        for p in &a.provider {
            crate::providers::by_name(p)?;
        }
        config.providers = a.provider.clone();
    }
    if let Some(n) = a.iterations {
        config.handshake_iterations = n.max(1);
    }
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .expect("template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = matrix::run(&config, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.what.clone());
    });
    bar.finish_and_clear();
    let report = report?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let path = dir.join(CRYPTO_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("{}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.write_table(&mut std::io::stdout().lock())?;
    }
    Ok(())
}
