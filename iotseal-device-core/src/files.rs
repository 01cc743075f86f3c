//! The files a device uses (feature `files`): the gateway's public material it pins
//! (`gateway.pub.toml`, written by `iotseal gateway init`) and its own identity (`iotseal device
//! keygen`), read from a path or from memory (devices without a file system), and turned into
//! an [`EngineConfig`] or the core's [`DeviceConfig`]. The one reader of these formats: the
//! tokio SDK, the C library and the Python package all use it.
//!
//! `gateway.pub.toml`:
//! ```toml
//! url = "https://127.0.0.1:8443"
//! tls_cert_pem = "-----BEGIN CERTIFICATE-----\n..."
//! tls_cert_sha256 = "<64 hex digits: SHA-256 of the certificate's DER>"
//! [[identity]]
//! alg = "ed25519"
//! public_key = "<hex>"
//! key_id = "<hex, informative>"
//! ```
//! Device identity file: `id`, `alg`, `private_key` (hex, docs/protocol.md §3.5),
//! `public_key` (hex).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use std::path::Path;

use iotseal_proto::crypto::{CryptoProvider, SigningKey};
use iotseal_proto::handshake::{DeviceConfig, PinnedKey};
use iotseal_proto::{SigAlg, Suite};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::EngineConfig;

/// The largest file read (a pins file with a few ML-DSA keys and a certificate is ~20 KB).
pub const MAX_FILE_LEN: usize = 1 << 20;

/// Why a file could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read or written.
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// Larger than [`MAX_FILE_LEN`].
    TooLarge(usize),
    /// Not valid TOML of the expected shape.
    Parse(String),
    /// A field is not lowercase or uppercase hex, or has the wrong length.
    Field(&'static str),
    /// The identity's public key does not belong to its private key.
    KeyMismatch,
    /// The protocol core refused the key or the configuration.
    Core(iotseal_proto::Error),
    /// The provider lacks the algorithm, or could not load or make the key.
    Crypto(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{path}: {error}"),
            Self::TooLarge(n) => write!(f, "file of {n} bytes: at most {MAX_FILE_LEN}"),
            Self::Parse(m) => write!(f, "not a valid file: {m}"),
            Self::Field(name) => write!(f, "field `{name}`: not valid hex of the right length"),
            Self::KeyMismatch => {
                f.write_str("identity file: public_key does not match private_key")
            }
            Self::Core(e) => write!(f, "configuration: {e}"),
            Self::Crypto(m) => write!(f, "key: {m}"),
        }
    }
}

impl std::error::Error for FileError {}

fn read(path: &Path) -> Result<String, FileError> {
    let io = |error| FileError::Io {
        path: path.display().to_string(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_LEN as u64 {
        return Err(FileError::TooLarge(meta.len() as usize));
    }
    std::fs::read_to_string(path).map_err(io)
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, FileError> {
    if text.len() > MAX_FILE_LEN {
        return Err(FileError::TooLarge(text.len()));
    }
    toml::from_str(text).map_err(|e| FileError::Parse(e.message().to_string()))
}

fn unhex(field: &'static str, s: &str) -> Result<Vec<u8>, FileError> {
    hex::decode(s.trim()).map_err(|_| FileError::Field(field))
}

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
    /// SHA-256 of the certificate (DER), hex (docs/protocol.md §18.2).
    pub tls_cert_sha256: String,
    /// Identity keys (several during a rotation or for several algorithms; the first keys
    /// the hello MAC).
    pub identity: Vec<PinnedIdentity>,
}

impl GatewayPins {
    /// Reads a `gateway.pub.toml`.
    ///
    /// # Errors
    /// The file cannot be read, is too large, or is not a pins file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        Self::from_toml(&read(path)?)
    }

    /// Parses the contents of a `gateway.pub.toml`.
    ///
    /// # Errors
    /// Too large, or not a pins file.
    pub fn from_toml(text: &str) -> Result<Self, FileError> {
        parse(text)
    }

    /// The file's text.
    ///
    /// # Errors
    /// Never for a value read from a file; a hand-made value with unencodable text.
    pub fn to_toml(&self) -> Result<String, FileError> {
        toml::to_string(self).map_err(|e| FileError::Parse(e.to_string()))
    }

    /// The identity keys as the core wants them.
    ///
    /// # Errors
    /// A key is not hex.
    pub fn core_pins(&self) -> Result<Vec<PinnedKey>, FileError> {
        self.identity
            .iter()
            .map(|i| {
                Ok(PinnedKey {
                    alg: i.alg,
                    public_key: unhex("identity.public_key", &i.public_key)?,
                })
            })
            .collect()
    }

    /// The certificate pin: SHA-256 of the certificate's DER.
    ///
    /// # Errors
    /// `tls_cert_sha256` is not 32 bytes of hex.
    pub fn cert_sha256(&self) -> Result<[u8; 32], FileError> {
        unhex("tls_cert_sha256", &self.tls_cert_sha256)?
            .try_into()
            .map_err(|_| FileError::Field("tls_cert_sha256"))
    }
}

/// A device identity file (TOML, mode 0600). The private key is zeroized when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFile {
    /// Device identifier.
    pub id: String,
    /// Signature algorithm.
    pub alg: SigAlg,
    /// Private key, hex (seed or scalar; see docs/protocol.md §3.5).
    pub private_key: Zeroizing<String>,
    /// Public key, hex.
    pub public_key: String,
}

impl fmt::Debug for IdentityFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityFile")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl IdentityFile {
    /// Generates a new identity.
    ///
    /// # Errors
    /// The provider lacks `alg` or its randomness failed.
    pub fn generate(p: &CryptoProvider, id: &str, alg: SigAlg) -> Result<Self, FileError> {
        let key = p
            .signature(alg)
            .and_then(|s| s.generate(p.random))
            .map_err(|e| FileError::Crypto(e.to_string()))?;
        Ok(Self {
            id: id.to_string(),
            alg,
            private_key: Zeroizing::new(hex::encode(key.private_bytes().as_bytes())),
            public_key: hex::encode(key.public_key()),
        })
    }

    /// Reads an identity file.
    ///
    /// # Errors
    /// The file cannot be read, is too large, or is not an identity file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = Zeroizing::new(read(path)?);
        Self::from_toml(&text)
    }

    /// Parses the contents of an identity file.
    ///
    /// # Errors
    /// Too large, or not an identity file.
    pub fn from_toml(text: &str) -> Result<Self, FileError> {
        parse(text)
    }

    /// The file's text (with its "keep this secret" comment).
    ///
    /// # Errors
    /// A hand-made value with unencodable text.
    pub fn to_toml(&self) -> Result<Zeroizing<String>, FileError> {
        // Every buffer that holds the private key is wiped when dropped: the serialised body
        // and the file text (the header is copied first, so growing it moves no secret).
        let body =
            Zeroizing::new(toml::to_string(self).map_err(|e| FileError::Parse(e.to_string()))?);
        let header = "# iotseal device identity. Keep this file secret.\n";
        let mut text = Zeroizing::new(String::with_capacity(header.len() + body.len()));
        text.push_str(header);
        text.push_str(&body);
        Ok(text)
    }

    /// Writes it with mode 0600 (on Unix).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        use std::io::Write;
        let io = |error| FileError::Io {
            path: path.display().to_string(),
            error,
        };
        let text = self.to_toml()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)
    }

    /// The identity key, loaded with `p`, checked against the file's public key.
    ///
    /// # Errors
    /// Not hex, refused by the provider, or not matching `public_key`.
    pub fn signing_key(&self, p: &CryptoProvider) -> Result<Box<dyn SigningKey>, FileError> {
        let private = Zeroizing::new(unhex("private_key", &self.private_key)?);
        let key = p
            .signature(self.alg)
            .and_then(|s| s.load(&private))
            .map_err(|e| FileError::Crypto(e.to_string()))?;
        if key.public_key() != unhex("public_key", &self.public_key)? {
            return Err(FileError::KeyMismatch);
        }
        Ok(key)
    }

    /// The core's handshake configuration: this identity, the pins, and `offers` (default:
    /// the default suite with this identity's algorithm).
    ///
    /// # Errors
    /// A bad key or pin, or a configuration the core refuses.
    pub fn device_config_with(
        &self,
        p: CryptoProvider,
        pins: &GatewayPins,
        offers: Option<Vec<Suite>>,
    ) -> Result<DeviceConfig, FileError> {
        let key = self.signing_key(&p)?;
        let mut c = DeviceConfig::new(p, self.id.as_bytes().to_vec(), key, pins.core_pins()?);
        if let Some(o) = offers {
            c.offers = o;
        }
        c.validate().map_err(FileError::Core)?;
        Ok(c)
    }

    /// The engine's configuration with its defaults ([`EngineConfig::new`]): this identity
    /// and the pins. The caller may change any field before [`crate::Engine::new`].
    ///
    /// # Errors
    /// A bad key or pin.
    pub fn engine_config(
        &self,
        p: &CryptoProvider,
        pins: &GatewayPins,
    ) -> Result<EngineConfig, FileError> {
        Ok(EngineConfig::new(
            self.id.as_bytes().to_vec(),
            self.signing_key(p)?,
            pins.core_pins()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    const PINS: &str = r#"
url = "https://127.0.0.1:8443"
tls_cert_pem = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"
tls_cert_sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[identity]]
alg = "ed25519"
public_key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
"#;

    #[test]
    fn pins_parse_and_refuse_bad_fields() {
        let p = GatewayPins::from_toml(PINS).unwrap();
        assert_eq!(p.url, "https://127.0.0.1:8443");
        assert_eq!(p.cert_sha256().unwrap()[31], 0xff);
        assert_eq!(p.core_pins().unwrap()[0].public_key.len(), 32);
        let again = GatewayPins::from_toml(&p.to_toml().unwrap()).unwrap();
        assert_eq!(again, p);
        let bad = PINS.replace("3b6a", "zz6a");
        assert!(matches!(
            GatewayPins::from_toml(&bad).unwrap().core_pins(),
            Err(FileError::Field("identity.public_key"))
        ));
        let short = PINS.replace("eeff\"", "\"");
        assert!(matches!(
            GatewayPins::from_toml(&short).unwrap().cert_sha256(),
            Err(FileError::Field("tls_cert_sha256"))
        ));
        assert!(matches!(
            GatewayPins::from_toml("url = 3"),
            Err(FileError::Parse(_))
        ));
        let huge = " ".repeat(MAX_FILE_LEN + 1);
        assert!(matches!(
            GatewayPins::from_toml(&huge),
            Err(FileError::TooLarge(_))
        ));
    }

    #[test]
    fn identity_round_trips_and_is_checked() {
        let p = iotseal_crypto_rustcrypto::default_provider();
        let pins = GatewayPins::from_toml(PINS).unwrap();
        let id = IdentityFile::generate(&p, "sensor-1", SigAlg::Ed25519).unwrap();
        let text = id.to_toml().unwrap();
        assert!(text.starts_with("# iotseal device identity"));
        let back = IdentityFile::from_toml(&text).unwrap();
        assert_eq!(back, id);
        assert!(!format!("{back:?}").contains(back.private_key.as_str()));
        let cfg = back.engine_config(&p, &pins).unwrap();
        assert_eq!(cfg.device_id, b"sensor-1");
        back.device_config_with(p, &pins, None).unwrap();

        let mut wrong = back;
        wrong.public_key = pins.identity[0].public_key.clone();
        assert!(matches!(
            wrong.engine_config(&p, &pins),
            Err(FileError::KeyMismatch)
        ));
        let dir = std::env::temp_dir().join(format!("iotseal-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.key");
        id.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(IdentityFile::load(&path).unwrap(), id);
        assert!(matches!(
            IdentityFile::load(&dir.join("missing.key")),
            Err(FileError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
