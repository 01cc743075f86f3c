//! Algorithm identifiers and cipher suites, with their wire codes and names.

use core::fmt;
use core::str::FromStr;

macro_rules! registry {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every algorithm of this kind, in registry order.
            pub const ALL: &'static [Self] = &[ $( Self::$variant ),+ ];

            /// The one-byte wire code.
            pub const fn code(self) -> u8 {
                match self { $( Self::$variant => $code ),+ }
            }

            /// The algorithm for a wire code, if known.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code { $( $code => Some(Self::$variant), )+ _ => None }
            }

            /// The name used in configuration files and on the command line.
            pub const fn name(self) -> &'static str {
                match self { $( Self::$variant => $text ),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = UnknownAlgorithm;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $( $text => Ok(Self::$variant), )+ _ => Err(UnknownAlgorithm) }
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <alloc::string::String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(|_| serde::de::Error::custom("unknown algorithm name"))
            }
        }
    };
}

registry! {
    /// Key exchange, seen as a KEM: the device sends a share, the gateway answers with one.
    KemId {
        /// X25519 Diffie-Hellman (RFC 7748).
        X25519 = 0x01, "x25519",
        /// ECDH on NIST P-256 with uncompressed points (SEC 1).
        P256 = 0x02, "p256",
        /// ML-KEM-768 (FIPS 203).
        MlKem768 = 0x03, "mlkem768",
        /// ML-KEM-768 + X25519 hybrid, combined as draft-ietf-tls-ecdhe-mlkem's X25519MLKEM768.
        X25519MlKem768 = 0x04, "x25519mlkem768",
    }
}

registry! {
    /// Identity signature algorithms.
    SigAlg {
        /// Ed25519 (RFC 8032) with strict verification.
        Ed25519 = 0x01, "ed25519",
        /// ECDSA on P-256 with SHA-256, 64-byte r||s signatures.
        EcdsaP256 = 0x02, "ecdsa-p256",
        /// ML-DSA-65 (FIPS 204), hedged signing, empty context.
        MlDsa65 = 0x03, "mldsa65",
        /// Composite Ed25519 + ML-DSA-65: both must verify.
        Ed25519MlDsa65 = 0x04, "ed25519+mldsa65",
    }
}

registry! {
    /// Record protection algorithms.
    AeadId {
        /// AES-128-GCM.
        Aes128Gcm = 0x01, "aes128gcm",
        /// AES-256-GCM.
        Aes256Gcm = 0x02, "aes256gcm",
        /// ChaCha20-Poly1305 (RFC 8439).
        ChaCha20Poly1305 = 0x03, "chacha20poly1305",
        /// AES-256-CTR then HMAC-SHA256 truncated to 16 bytes (encrypt-then-MAC).
        Aes256CtrHmacSha256 = 0x04, "aes256ctr-hmacsha256",
    }
}

/// A name that matches no algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownAlgorithm;

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown algorithm name")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownAlgorithm {}

impl KemId {
    /// Whether this key exchange resists a quantum adversary.
    pub const fn is_post_quantum(self) -> bool {
        matches!(self, Self::MlKem768 | Self::X25519MlKem768)
    }

    /// Length of the device's (initiator's) key share.
    pub const fn initiator_share_len(self) -> usize {
        match self {
            Self::X25519 => 32,
            Self::P256 => 65,
            Self::MlKem768 => 1184,
            Self::X25519MlKem768 => 1184 + 32,
        }
    }

    /// Length of the gateway's (responder's) key share or ciphertext.
    pub const fn responder_share_len(self) -> usize {
        match self {
            Self::X25519 => 32,
            Self::P256 => 65,
            Self::MlKem768 => 1088,
            Self::X25519MlKem768 => 1088 + 32,
        }
    }
}

impl SigAlg {
    /// Whether this signature resists a quantum adversary.
    pub const fn is_post_quantum(self) -> bool {
        matches!(self, Self::MlDsa65 | Self::Ed25519MlDsa65)
    }

    /// Length of a public key.
    pub const fn public_key_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
            Self::EcdsaP256 => 65,
            Self::MlDsa65 => 1952,
            Self::Ed25519MlDsa65 => 32 + 1952,
        }
    }

    /// Length of a signature.
    pub const fn signature_len(self) -> usize {
        match self {
            Self::Ed25519 => 64,
            Self::EcdsaP256 => 64,
            Self::MlDsa65 => 3309,
            Self::Ed25519MlDsa65 => 64 + 3309,
        }
    }

    /// Length of the stored private key (a seed or scalar).
    pub const fn private_key_len(self) -> usize {
        match self {
            Self::Ed25519 | Self::EcdsaP256 | Self::MlDsa65 => 32,
            Self::Ed25519MlDsa65 => 64,
        }
    }
}

impl AeadId {
    /// Key length in bytes (for encrypt-then-MAC: encryption key then MAC key).
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm | Self::ChaCha20Poly1305 => 32,
            Self::Aes256CtrHmacSha256 => 64,
        }
    }

    /// Maximum records sealed under one key before a key update is mandatory.
    ///
    /// AES-GCM: 2^24.5 full-size records (RFC 9147 §4.5.3, from AEBounds); we use 2^24.
    /// ChaCha20-Poly1305 and AES-CTR+HMAC have no practical limit at our record sizes; the
    /// 2^32 here is above the per-session sequence cap (2^30), so for them only the
    /// configured key-update policy triggers updates.
    pub const fn confidentiality_limit(self) -> u64 {
        match self {
            Self::Aes128Gcm | Self::Aes256Gcm => 1 << 24,
            Self::ChaCha20Poly1305 | Self::Aes256CtrHmacSha256 => 1 << 32,
        }
    }

    /// Maximum failed record authentications under one session before it is closed:
    /// 2^36 for AES-GCM and ChaCha20-Poly1305 (RFC 9147 §4.5.3); we apply the same bound to
    /// HMAC-SHA256-128.
    pub const fn integrity_limit(self) -> u64 {
        1 << 36
    }
}

/// A cipher suite: key exchange, identity signature and record protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Suite {
    /// Key exchange.
    pub kem: KemId,
    /// Identity signatures (both sides use this algorithm).
    pub sig: SigAlg,
    /// Record protection.
    pub aead: AeadId,
}

impl Suite {
    /// The default: hybrid post-quantum key exchange, Ed25519, AES-256-GCM.
    pub const DEFAULT: Self = Self {
        kem: KemId::X25519MlKem768,
        sig: SigAlg::Ed25519,
        aead: AeadId::Aes256Gcm,
    };

    /// Three wire bytes: kem, sig, aead.
    pub const fn to_bytes(self) -> [u8; 3] {
        [self.kem.code(), self.sig.code(), self.aead.code()]
    }

    /// Parses three wire bytes; `None` if any code is unknown.
    pub const fn from_bytes(b: [u8; 3]) -> Option<Self> {
        match (
            KemId::from_code(b[0]),
            SigAlg::from_code(b[1]),
            AeadId::from_code(b[2]),
        ) {
            (Some(kem), Some(sig), Some(aead)) => Some(Self { kem, sig, aead }),
            _ => None,
        }
    }

    /// Every combination of the known algorithms.
    pub fn all() -> impl Iterator<Item = Self> {
        KemId::ALL.iter().flat_map(|&kem| {
            SigAlg::ALL
                .iter()
                .flat_map(move |&sig| AeadId::ALL.iter().map(move |&aead| Self { kem, sig, aead }))
        })
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kem, self.sig, self.aead)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Suite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Suite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <alloc::string::String as serde::Deserialize>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("unknown suite (kem/sig/aead)"))
    }
}

impl FromStr for Suite {
    type Err = UnknownAlgorithm;
    /// Parses `kem/sig/aead`, for example `x25519mlkem768/ed25519/aes256gcm`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut it = s.split('/');
        let (Some(k), Some(g), Some(a), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(UnknownAlgorithm);
        };
        Ok(Self {
            kem: k.parse()?,
            sig: g.parse()?,
            aead: a.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn suite_names_round_trip() {
        for s in Suite::all() {
            assert_eq!(s.to_string().parse::<Suite>(), Ok(s));
            assert_eq!(Suite::from_bytes(s.to_bytes()), Some(s));
        }
        assert_eq!(Suite::all().count(), 64);
        assert!("x25519/ed25519".parse::<Suite>().is_err());
        assert!("x25519/ed25519/aes256gcm/x".parse::<Suite>().is_err());
        assert_eq!(Suite::from_bytes([9, 1, 1]), None);
    }
}
