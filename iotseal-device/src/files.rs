//! The files a device uses: the gateway's public material it pins (`gateway.pub.toml`, written
//! by `iotseal gateway init`) and its own identity (`iotseal device keygen`).

use std::path::Path;

use iotseal_proto::handshake::{DeviceConfig, PinnedKey};
use iotseal_proto::{CryptoProvider, SigAlg, Suite};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One pinned gateway identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedIdentity {
    /// Its algorithm.
    pub alg: SigAlg,
    /// Public key, hex.
    pub public_key: String,
    /// Key id, hex (informative; recomputed from the key).
    #[serde(default)]
    pub key_id: String,
}

/// What a device pins: the gateway's identity keys and TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPins {
    /// The gateway's URL, e.g. `https://127.0.0.1:8443`.
    pub url: String,
    /// The gateway's TLS certificate (PEM); the device trusts exactly this certificate.
    pub tls_cert_pem: String,
    /// SHA-256 of the certificate (DER), hex.
    pub tls_cert_sha256: String,
    /// Identity keys (several during a rotation; the first keys the hello MAC).
    pub identity: Vec<PinnedIdentity>,
}

impl GatewayPins {
    /// Reads a `gateway.pub.toml`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }

    /// The identity keys as the core wants them.
    pub fn core_pins(&self) -> Result<Vec<PinnedKey>, Error> {
        self.identity
            .iter()
            .map(|i| {
                Ok(PinnedKey {
                    alg: i.alg,
                    public_key: hex::decode(&i.public_key)?,
                })
            })
            .collect()
    }
}

/// A device identity file (TOML, mode 0600).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFile {
    /// Device identifier.
    pub id: String,
    /// Signature algorithm.
    pub alg: SigAlg,
    /// Private key, hex (seed or scalar; see docs/protocol.md §3.5).
    pub private_key: String,
    /// Public key, hex.
    pub public_key: String,
}

impl IdentityFile {
    /// Generates a new identity.
    pub fn generate(p: &CryptoProvider, id: &str, alg: SigAlg) -> Result<Self, Error> {
        let key = p.signature(alg)?.generate(p.random)?;
        Ok(Self {
            id: id.to_string(),
            alg,
            private_key: hex::encode(key.private_bytes().as_bytes()),
            public_key: hex::encode(key.public_key()),
        })
    }

    /// Reads an identity file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }

    /// Writes it with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path)?;
        f.write_all(b"# iotseal device identity. Keep this file secret.\n")?;
        f.write_all(toml::to_string(self)?.as_bytes())?;
        Ok(())
    }

    /// The core configuration: this identity, the pins, and `offers` (default: the default
    /// suite with this identity's algorithm). Uses the aws-lc provider.
    pub fn device_config(
        &self,
        pins: &GatewayPins,
        offers: Option<Vec<Suite>>,
    ) -> Result<DeviceConfig, Error> {
        self.device_config_with(iotseal_crypto_awslc::default_provider(), pins, offers)
    }

    /// As [`Self::device_config`] with a chosen provider.
    pub fn device_config_with(
        &self,
        p: CryptoProvider,
        pins: &GatewayPins,
        offers: Option<Vec<Suite>>,
    ) -> Result<DeviceConfig, Error> {
        let key = p
            .signature(self.alg)?
            .load(&hex::decode(&self.private_key)?)?;
        let mut c = DeviceConfig::new(p, self.id.as_bytes().to_vec(), key, pins.core_pins()?);
        if let Some(o) = offers {
            c.offers = o;
        }
        c.validate()?;
        Ok(c)
    }
}
