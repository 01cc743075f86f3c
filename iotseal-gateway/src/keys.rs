//! Key and certificate files: gateway identity keys (the `iotseal keygen` format), the public
//! file devices pin (`gateway.pub.toml`), and a self-signed TLS certificate.

use std::path::Path;

use iotseal_proto::crypto::SigningKey;
use iotseal_proto::handshake::{GatewayIdentity, key_id};
use iotseal_proto::{CryptoProvider, SigAlg};
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// An identity key file: TOML with `alg`, `private_key` and `public_key` (hex), mode 0600.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityKeyFile {
    /// Signature algorithm.
    pub alg: SigAlg,
    /// Private key, hex (formats of docs/protocol.md §3.5).
    pub private_key: String,
    /// Public key, hex.
    pub public_key: String,
}

impl IdentityKeyFile {
    /// A new key pair.
    pub fn generate(p: &CryptoProvider, alg: SigAlg) -> Result<Self, GatewayError> {
        let key = p
            .signature(alg)
            .and_then(|s| s.generate(p.random))
            .map_err(|e| GatewayError::Key(format!("generating a {alg} key: {e}")))?;
        Ok(Self {
            alg,
            private_key: hex::encode(key.private_bytes().as_bytes()),
            public_key: hex::encode(key.public_key()),
        })
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        format!(
            "# iotseal identity key. Keep this file secret.\nalg = \"{}\"\nprivate_key = \"{}\"\npublic_key = \"{}\"\n",
            self.alg, self.private_key, self.public_key
        )
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Key(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| GatewayError::Key(format!("{}: {e}", path.display())))
    }

    /// The signing key; checks that the stored public key matches.
    pub fn signing_key(&self, p: &CryptoProvider) -> Result<Box<dyn SigningKey>, GatewayError> {
        let private = hex::decode(self.private_key.trim())
            .map_err(|_| GatewayError::Key("private_key is not hex".into()))?;
        let key = p
            .signature(self.alg)
            .and_then(|s| s.load(&private))
            .map_err(|e| GatewayError::Key(format!("loading a {} key: {e}", self.alg)))?;
        if hex::encode(key.public_key()) != self.public_key.trim().to_ascii_lowercase() {
            return Err(GatewayError::Key(
                "public_key does not match private_key".into(),
            ));
        }
        Ok(key)
    }

    /// The key id (hex) devices see: `H(alg || public key)[0..8]`.
    pub fn key_id_hex(&self, p: &CryptoProvider) -> Result<String, GatewayError> {
        let pk = hex::decode(self.public_key.trim())
            .map_err(|_| GatewayError::Key("public_key is not hex".into()))?;
        Ok(hex::encode(key_id(p, self.alg, &pk)))
    }
}

/// Loads the identity keys for the core.
pub fn load_identities(
    p: &CryptoProvider,
    files: &[std::path::PathBuf],
) -> Result<Vec<GatewayIdentity>, GatewayError> {
    files
        .iter()
        .map(|f| {
            let k = IdentityKeyFile::load(f)?
                .signing_key(p)
                .map_err(|e| GatewayError::Key(format!("{}: {e}", f.display())))?;
            Ok(GatewayIdentity::new(p, k))
        })
        .collect()
}

/// One pinned gateway identity in `gateway.pub.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// Algorithm.
    pub alg: SigAlg,
    /// Public key, hex.
    pub public_key: String,
    /// Key id, hex.
    pub key_id: String,
}

/// `gateway.pub.toml`: what a device pins (and what `iotseal device` uses to reach the
/// admin API): identity public keys, the TLS certificate and its SHA-256, the URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPublic {
    /// The gateway URL, e.g. `https://127.0.0.1:8443`.
    pub url: String,
    /// The TLS certificate (PEM); clients trust exactly this certificate.
    pub tls_cert_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub tls_cert_sha256: String,
    /// Identity keys; the first keys the hello MAC.
    pub identity: Vec<PublicIdentity>,
}

impl GatewayPublic {
    /// Builds it from identity key files and the certificate PEM.
    pub fn new(
        p: &CryptoProvider,
        url: String,
        keys: &[IdentityKeyFile],
        cert_pem: &str,
    ) -> Result<Self, GatewayError> {
        let der = first_cert_der(cert_pem)?;
        let identity = keys
            .iter()
            .map(|k| {
                Ok(PublicIdentity {
                    alg: k.alg,
                    public_key: k.public_key.clone(),
                    key_id: k.key_id_hex(p)?,
                })
            })
            .collect::<Result<_, GatewayError>>()?;
        Ok(Self {
            url,
            tls_cert_pem: cert_pem.to_string(),
            tls_cert_sha256: hex::encode(p.hash.hash(&der)),
            identity,
        })
    }

    /// The file's text.
    pub fn to_toml(&self) -> Result<String, GatewayError> {
        let body = toml::to_string(self).map_err(|e| GatewayError::Config(e.to_string()))?;
        Ok(format!(
            "# What a device pins to talk to this gateway (public; share freely).\n{body}"
        ))
    }

    /// Reads a `gateway.pub.toml`.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
    }

    /// The pinned certificate's DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, GatewayError> {
        first_cert_der(&self.tls_cert_pem)
    }
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, GatewayError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| GatewayError::Tls("no certificate in PEM".into()))?
        .map_err(|e| GatewayError::Tls(format!("certificate PEM: {e}")))?;
    Ok(cert.to_vec())
}

/// A self-signed TLS certificate and its private key, both PEM.
#[derive(Debug)]
pub struct SelfSigned {
    /// Certificate PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses),
/// default `localhost`, `127.0.0.1`, `::1`.
pub fn self_signed_cert(names: &[String]) -> Result<SelfSigned, GatewayError> {
    let names = if names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        names.to_vec()
    };
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| GatewayError::Tls(format!("certificate names: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "iotseal gateway");
    // A bounded validity (397 days, the CA/Browser Forum maximum is 398) rather than rcgen's
    // default of centuries; devices pin the certificate by its SHA-256 and do not depend on
    // the dates, browsers and curl do.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| GatewayError::Tls(format!("certificate validity: {e}")))
    };
    params.not_before = at(now - 3600)?;
    params.not_after = at(now + 397 * 86_400)?;
    let key = rcgen::KeyPair::generate().map_err(|e| GatewayError::Tls(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip_and_public_file() {
        let p = iotseal_crypto_awslc::default_provider();
        let k = IdentityKeyFile::generate(&p, SigAlg::Ed25519).unwrap();
        let back: IdentityKeyFile = toml::from_str(&k.to_toml()).unwrap();
        assert_eq!(back, k);
        let sk = back.signing_key(&p).unwrap();
        assert_eq!(hex::encode(sk.public_key()), k.public_key);
        let cert = self_signed_cert(&[]).unwrap();
        let pubf =
            GatewayPublic::new(&p, "https://127.0.0.1:8443".into(), &[k], &cert.cert_pem).unwrap();
        let text = pubf.to_toml().unwrap();
        let again: GatewayPublic = toml::from_str(&text).unwrap();
        assert_eq!(again, pubf);
        assert_eq!(again.identity[0].key_id.len(), 16);
        assert_eq!(again.tls_cert_sha256.len(), 64);
    }
}
