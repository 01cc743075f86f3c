//! A gateway directory for tests: identity keys, a self-signed certificate, an admin token.

use std::path::{Path, PathBuf};

use iotseal_gateway::keys::{GatewayPublic, IdentityKeyFile, self_signed_cert};
use iotseal_gateway::{GatewayError, Settings};
use iotseal_proto::{CryptoProvider, SigAlg};

/// The files of a gateway directory laid out by [`lay_out_gateway_dir`].
#[derive(Debug)]
pub struct GatewayDir {
    /// Settings pointing at the files (listen 127.0.0.1:0, storage in memory).
    pub settings: Settings,
    /// The admin token.
    pub admin_token: String,
    /// What devices pin.
    pub public: GatewayPublic,
    /// The certificate path.
    pub cert_path: PathBuf,
}

/// Writes an identity key per algorithm in `algs`, a self-signed certificate and an admin
/// token into `dir`; returns settings for them (listen on 127.0.0.1:0, memory storage).
pub fn lay_out_gateway_dir(
    dir: &Path,
    p: &CryptoProvider,
    algs: &[SigAlg],
) -> Result<GatewayDir, GatewayError> {
    let mut key_files = Vec::new();
    let mut keys = Vec::new();
    for (i, alg) in algs.iter().enumerate() {
        let k = IdentityKeyFile::generate(p, *alg)?;
        let name = PathBuf::from(format!("identity-{}.key", i + 1));
        std::fs::write(dir.join(&name), k.to_toml())?;
        key_files.push(name);
        keys.push(k);
    }
    let cert = self_signed_cert(&[])?;
    std::fs::write(dir.join("tls-cert.pem"), &cert.cert_pem)?;
    std::fs::write(dir.join("tls-key.pem"), &cert.key_pem)?;
    let token = hex::encode(
        p.random_vec(32)
            .map_err(|e| GatewayError::Key(e.to_string()))?,
    );
    std::fs::write(dir.join("admin.token"), &token)?;
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        storage: "memory:".into(),
        identity_keys: key_files,
        base_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    let public = GatewayPublic::new(p, "https://127.0.0.1:0".into(), &keys, &cert.cert_pem)?;
    Ok(GatewayDir {
        settings,
        admin_token: token,
        public,
        cert_path: dir.join("tls-cert.pem"),
    })
}
