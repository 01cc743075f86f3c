//! Checking a public identity key before it is registered: an all-zero, small-order,
//! non-canonical or off-curve key is refused up front (a gateway would otherwise register a
//! key no honest device holds, or one whose signatures some verifiers accept and others do not).

use core::fmt;

use iotseal_proto::SigAlg;

/// Why a public key is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeakKey {
    /// Not the algorithm's length (§3.1 of the protocol).
    Length {
        /// The length expected.
        expected: usize,
    },
    /// Ed25519: not the encoding of a curve point; P-256: not an uncompressed point on the
    /// curve (or the point at infinity).
    NotOnCurve,
    /// Ed25519: a point of small order (the identity included): any signature by it can be
    /// forged by anyone.
    SmallOrder,
    /// Ed25519: a non-canonical encoding (y ≥ p, or x = 0 with the sign bit set): verifiers
    /// disagree on such keys (docs/protocol.md §3.3).
    NonCanonical,
}

impl fmt::Display for WeakKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { expected } => write!(f, "must be {expected} bytes"),
            Self::NotOnCurve => f.write_str("not a valid point on the curve"),
            Self::SmallOrder => f.write_str("a point of small order (a weak key)"),
            Self::NonCanonical => f.write_str("a non-canonical point encoding"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WeakKey {}

fn ed25519(public: &[u8]) -> Result<(), WeakKey> {
    let bytes: &[u8; 32] = public
        .try_into()
        .map_err(|_| WeakKey::Length { expected: 32 })?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| WeakKey::NotOnCurve)?;
    if key.is_weak() {
        return Err(WeakKey::SmallOrder);
    }
    if key.to_edwards().compress().as_bytes() != bytes {
        return Err(WeakKey::NonCanonical);
    }
    Ok(())
}

fn p256(public: &[u8]) -> Result<(), WeakKey> {
    if public.len() != 65 {
        return Err(WeakKey::Length { expected: 65 });
    }
    // Uncompressed SEC 1 only; on the curve; the identity has no such encoding.
    crate::kx::parse_p256_point(public)
        .map(|_| ())
        .map_err(|_| WeakKey::NotOnCurve)
}

fn mldsa65(public: &[u8]) -> Result<(), WeakKey> {
    // FIPS 204 pkDecode accepts every byte string of the right length (ρ and 10-bit t1
    // coefficients): the length is all there is to check.
    let expected = SigAlg::MlDsa65.public_key_len();
    if public.len() != expected {
        return Err(WeakKey::Length { expected });
    }
    Ok(())
}

/// Checks a public identity key of `alg` (the encodings of §3.1; the composite
/// `ed25519+mldsa65` is the Ed25519 key followed by the ML-DSA-65 key, each part checked).
///
/// # Errors
/// The first weakness found.
pub fn check_public_key(alg: SigAlg, public: &[u8]) -> Result<(), WeakKey> {
    match alg {
        SigAlg::Ed25519 => ed25519(public),
        SigAlg::EcdsaP256 => p256(public),
        SigAlg::MlDsa65 => mldsa65(public),
        SigAlg::Ed25519MlDsa65 => {
            let expected = alg.public_key_len();
            if public.len() != expected {
                return Err(WeakKey::Length { expected });
            }
            let (a, b) = public.split_at(32);
            ed25519(a)?;
            mldsa65(b)
        }
        _ => Err(WeakKey::Length { expected: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{EcdsaP256, Ed25519, MlDsa65};
    use crate::test_util::hex;
    use iotseal_proto::crypto::SignatureAlgorithm;

    /// The eight small-order points of edwards25519 (RFC 8032 §5.1.3 encodings; the
    /// identity is `01 00…00`).
    const SMALL_ORDER: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];

    #[test]
    fn real_keys_pass() {
        let rng = crate::test_util::TestRng::new(b"pubkey-7");
        for alg in [&Ed25519 as &dyn SignatureAlgorithm, &EcdsaP256, &MlDsa65] {
            let k = alg.generate(&rng).unwrap();
            assert_eq!(
                check_public_key(alg.id(), &k.public_key()),
                Ok(()),
                "{:?}",
                alg.id()
            );
        }
        let a = Ed25519.generate(&rng).unwrap().public_key();
        let b = MlDsa65.generate(&rng).unwrap().public_key();
        let composite = [a.as_slice(), b.as_slice()].concat();
        assert_eq!(check_public_key(SigAlg::Ed25519MlDsa65, &composite), Ok(()));
    }

    #[test]
    fn weak_ed25519_keys_are_refused() {
        for p in SMALL_ORDER {
            let r = check_public_key(SigAlg::Ed25519, &hex(p));
            // "0000…0080" (x = 0 with the sign bit) is also non-canonical; either refusal will do.
            assert!(
                matches!(
                    r,
                    Err(WeakKey::SmallOrder | WeakKey::NonCanonical | WeakKey::NotOnCurve)
                ),
                "{p}: {r:?}"
            );
        }
        assert_eq!(
            check_public_key(SigAlg::Ed25519, &[0; 32]),
            Err(WeakKey::SmallOrder)
        );
        // y = p + 1 (non-canonical encoding of the y = 1 identity... small order first) and
        // y = p + 4 (a non-canonical encoding of a point with y = 4, if on the curve).
        let mut noncanonical =
            hex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        noncanonical[0] = 0xee; // y = p + 1
        assert!(check_public_key(SigAlg::Ed25519, &noncanonical).is_err());
        // Not a point: y = 2 has no x on edwards25519.
        let mut two = [0u8; 32];
        two[0] = 2;
        assert_eq!(
            check_public_key(SigAlg::Ed25519, &two),
            Err(WeakKey::NotOnCurve)
        );
        assert_eq!(
            check_public_key(SigAlg::Ed25519, &[1; 31]),
            Err(WeakKey::Length { expected: 32 })
        );
        // The composite's Ed25519 half is checked too.
        let b = MlDsa65
            .generate(&crate::test_util::TestRng::new(b"pubkey-1"))
            .unwrap()
            .public_key();
        let composite = [&[0u8; 32][..], b.as_slice()].concat();
        assert_eq!(
            check_public_key(SigAlg::Ed25519MlDsa65, &composite),
            Err(WeakKey::SmallOrder)
        );
    }

    #[test]
    fn bad_p256_keys_are_refused() {
        let good = EcdsaP256
            .generate(&crate::test_util::TestRng::new(b"pubkey-3"))
            .unwrap()
            .public_key();
        let mut off = good.clone();
        off[64] ^= 1; // y changed: off the curve
        assert_eq!(
            check_public_key(SigAlg::EcdsaP256, &off),
            Err(WeakKey::NotOnCurve)
        );
        let mut zero = [0u8; 65];
        zero[0] = 4;
        assert_eq!(
            check_public_key(SigAlg::EcdsaP256, &zero),
            Err(WeakKey::NotOnCurve)
        );
        let mut compressed = good[..33].to_vec();
        compressed[0] = 2;
        assert_eq!(
            check_public_key(SigAlg::EcdsaP256, &compressed),
            Err(WeakKey::Length { expected: 65 })
        );
        let mut wrong_tag = good;
        wrong_tag[0] = 6;
        assert_eq!(
            check_public_key(SigAlg::EcdsaP256, &wrong_tag),
            Err(WeakKey::NotOnCurve)
        );
    }
}
