//! A gateway in this process on a free loopback port, in a fresh data directory with fresh
//! keys: what `iotseal demo` and end-to-end tests run against.

use std::path::{Path, PathBuf};

use iotseal_proto::SigAlg;

use crate::GatewayError;
use crate::keys::{GatewayPublic, IdentityKeyFile, self_signed_cert};
use crate::server::{Gateway, GatewayHandle};
use crate::settings::Settings;

/// A running local gateway and what clients need to reach it.
#[derive(Debug)]
pub struct LocalGateway {
    /// The running gateway.
    pub handle: GatewayHandle,
    /// What devices pin (also written to `DIR/gateway.pub.toml`).
    pub public: GatewayPublic,
    /// The admin token (also in `DIR/admin.token`).
    pub token: String,
    /// The data directory.
    pub dir: PathBuf,
    /// The settings it runs with (restart with [`restart`]).
    pub settings: Settings,
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), GatewayError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    Ok(())
}

/// Creates keys (one identity per signature algorithm, so every suite can be served), a
/// self-signed certificate and an admin token in `dir`, and starts a gateway on
/// 127.0.0.1:0 with SQLite storage there. `tweak` adjusts the settings first (the per-IP
/// handshake rate limit is raised by default: every local device connects from 127.0.0.1).
pub async fn start_local(
    dir: &Path,
    tweak: impl FnOnce(&mut Settings),
) -> Result<LocalGateway, GatewayError> {
    std::fs::create_dir_all(dir)?;
    let p = iotseal_crypto_awslc::default_provider();
    let mut keys = Vec::new();
    let mut key_files = Vec::new();
    for (i, alg) in SigAlg::ALL.iter().enumerate() {
        let k = IdentityKeyFile::generate(&p, *alg)?;
        let path = dir.join(format!("identity-{}.key", i + 1));
        write_private(&path, k.to_toml().as_bytes())?;
        key_files.push(path);
        keys.push(k);
    }
    let cert = self_signed_cert(&[])?;
    std::fs::write(dir.join("tls-cert.pem"), &cert.cert_pem)?;
    write_private(&dir.join("tls-key.pem"), cert.key_pem.as_bytes())?;
    let token = hex::encode(
        p.random_vec(32)
            .map_err(|e| GatewayError::Key(e.to_string()))?,
    );
    write_private(&dir.join("admin.token"), token.as_bytes())?;

    let mut s = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        identity_keys: key_files,
        base_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    s.limits.handshake_rate_per_ip = 100_000.0;
    s.limits.handshake_burst_per_ip = 100_000.0;
    tweak(&mut s);
    let handle = Gateway::start(s.clone()).await?;
    let public = GatewayPublic::new(&p, handle.url().to_string(), &keys, &cert.cert_pem)?;
    std::fs::write(dir.join("gateway.pub.toml"), public.to_toml()?)?;
    Ok(LocalGateway {
        handle,
        public,
        token,
        dir: dir.to_path_buf(),
        settings: s,
    })
}

/// Stops `gw` and starts it again on the same address with the same keys and data (a
/// gateway restart: sessions and caches are gone, stored readings stay).
pub async fn restart(gw: LocalGateway) -> Result<LocalGateway, GatewayError> {
    let LocalGateway {
        handle,
        public,
        token,
        dir,
        settings,
    } = gw;
    let addr = handle.local_addr();
    handle.stop().await?;
    let mut s = settings;
    s.listen = addr;
    // The port may linger briefly; retry the bind for a while.
    let mut last = None;
    for _ in 0..50 {
        match Gateway::start(s.clone()).await {
            Ok(handle) => {
                return Ok(LocalGateway {
                    handle,
                    public,
                    token,
                    dir,
                    settings: s,
                });
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| GatewayError::Config("restart failed".into())))
}
