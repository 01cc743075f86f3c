//! `iotseal gateway run`, but with SQLite `synchronous=NORMAL` instead of the default `FULL`
//! (or another storage option), for the load comparison in docs/performance.md only.
//!
//! With NORMAL a commit is not fsynced: it is still atomic and survives a crash of the process
//! (`kill -9`), but commits acknowledged just before a power loss or kernel crash may be lost.
//! The gateway has no setting for it; this example exists to measure what the per-commit
//! fsync costs.
//!
//! Usage: `gateway_sync_normal CONFIG [LISTEN] [--max-batch N]`; prints `listening on URL`,
//! stops on SIGINT/SIGTERM.

use std::sync::Arc;

use iotseal_gateway::settings::StorageSpec;
use iotseal_gateway::storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_gateway::{Gateway, Settings};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let config = args
        .get(1)
        .ok_or("usage: gateway_sync_normal CONFIG [LISTEN]")?;
    let mut settings = Settings::load(config.as_ref())?;
    if let Some(l) = args.get(2).filter(|a| !a.starts_with("--")) {
        settings.set("listen", l)?;
    }
    settings.set("limits.handshake_rate_per_ip", "100000")?;
    settings.set("limits.handshake_burst_per_ip", "100000")?;
    let mut options = SqliteOptions {
        synchronous_full: false,
        ..SqliteOptions::default()
    };
    if let Some(i) = args.iter().position(|a| a == "--max-batch") {
        options.max_batch = args.get(i + 1).ok_or("--max-batch N")?.parse()?;
    }
    let StorageSpec::Sqlite(path) = settings.storage_spec()? else {
        return Err("storage must be sqlite:PATH".into());
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let storage = Arc::new(SqliteStorage::open(&path, options)?);
        let gw = Gateway::start_with_storage(settings, storage).await?;
        println!("listening on {}", gw.url());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        gw.stop().await?;
        Ok(())
    })
}
