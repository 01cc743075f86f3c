//! Test support for the workspace's integration tests (publish = false): what the gateway's
//! tests and the end-to-end tests (`iotseal-e2e`) share.
//!
//! - [`Env`]: a gateway in this process on 127.0.0.1:0 (memory or SQLite storage) in a
//!   temporary directory, an HTTPS client that trusts its certificate, and a [`Device`] driven
//!   by the protocol core over it.
//! - [`lay_out_gateway_dir`]: identity keys, a self-signed certificate and an admin token
//!   written into a directory, with settings pointing at them.
//! - [`local_gateway`]: `iotseal_gateway::local::start_local` in a fresh temporary directory.
//! - [`mqtt::TestBroker`]: the broker `IOTSEAL_TEST_MQTT` names, or a Mosquitto started for
//!   the test; [`mqtt::TestClient`], a plain MQTT v5 client of it.
//! - [`device_key`] and [`registration_json`]: device keys and their admin API registration.
//!
//! It does not depend on `iotseal-device` (the SDK): the gateway's tests use it without
//! building the SDK. Tests that need both live in `iotseal-e2e`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dir;
mod env;
pub mod mqtt;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iotseal_gateway::Settings;
use iotseal_gateway::local::{LocalGateway, start_local};
use iotseal_proto::crypto::SigningKey;
use iotseal_proto::{CryptoProvider, SigAlg, Time};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use dir::{GatewayDir, lay_out_gateway_dir};
pub use env::{Device, Env, Handshake, acked, framed, open_acks, seal_records};

/// The provider tests use (aws-lc).
pub fn provider() -> CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

/// The system time as the protocol's [`Time`].
pub fn now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64,
    )
}

/// `n` random bytes as hex (unique names: topic prefixes, schemas, device ids).
pub fn random_hex(n: usize) -> String {
    hex::encode(provider().random_vec(n).expect("random bytes"))
}

/// A new directory `iotseal-NAME-<random>` under the system's temporary directory (left for
/// the test to remove: a gateway restarted on it keeps its files).
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotseal-{name}-{}", random_hex(6)));
    std::fs::create_dir_all(&d).expect("temporary directory");
    d
}

/// A gateway in this process in a fresh temporary directory ([`temp_dir`]), started by
/// `iotseal_gateway::local::start_local` (an identity per signature algorithm, SQLite storage
/// there, the per-address handshake limit raised); `tweak` edits its settings first.
pub async fn local_gateway(name: &str, tweak: impl FnOnce(&mut Settings)) -> LocalGateway {
    start_local(&temp_dir(name), tweak)
        .await
        .expect("local gateway starts")
}

/// A new device key of `alg` on `p`.
pub fn device_key(p: &CryptoProvider, alg: SigAlg) -> Box<dyn SigningKey> {
    p.signature(alg)
        .expect("algorithm in the provider")
        .generate(p.random)
        .expect("key generation")
}

/// The admin API's registration body (`POST /v1/devices`) of a device with public key `pk`.
pub fn registration_json(id: &str, alg: SigAlg, pk: &[u8]) -> String {
    format!(
        r#"{{"id":"{id}","alg":"{alg}","public_key":"{}"}}"#,
        hex::encode(pk)
    )
}

/// A client config that verifies the gateway's certificate the standard way (webpki, the
/// self-signed certificate as the only root, server name 127.0.0.1), TLS 1.3, ALPN http/1.1.
pub fn root_trusting_config(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots
            .add(c.expect("PEM certificate"))
            .expect("a usable root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(iotseal_gateway::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// The value of the first Prometheus line of `text` starting with `line_prefix` (0 if none).
pub fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
