//! SHA-256 (sha2), HMAC-SHA256 (hmac) and HKDF-SHA256 (hkdf).

use alloc::boxed::Box;

use hmac::{KeyInit, Mac};
use iotseal_proto::crypto::{CryptoError, HASH_LEN, Hash, HashContext, Hkdf, Hmac, Secret};
use sha2::Digest;
use zeroize::Zeroize;

type HmacState = hmac::Hmac<sha2::Sha256>;

/// SHA-256.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha256;

/// HMAC-SHA256, any key length.
#[derive(Clone, Copy, Debug, Default)]
pub struct HmacSha256;

/// HKDF-SHA256 (RFC 5869).
///
/// `extract` with an empty salt equals extract with 32 zero bytes (HMAC pads the key with
/// zeros). `expand` refuses an output longer than 255 × 32 bytes and, as RFC 5869 §2.3
/// requires, a PRK shorter than 32 bytes, both with [`CryptoError::InvalidLength`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HkdfSha256;

struct Sha256Context(sha2::Sha256);

impl HashContext for Sha256Context {
    fn update(&mut self, data: &[u8]) {
        Digest::update(&mut self.0, data);
    }

    fn fork_finish(&self) -> [u8; HASH_LEN] {
        self.0.clone().finalize().into()
    }

    fn fork(&self) -> Box<dyn HashContext> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> [u8; HASH_LEN] {
        self.0.finalize().into()
    }
}

impl Hash for Sha256 {
    fn start(&self) -> Box<dyn HashContext> {
        Box::new(Sha256Context(sha2::Sha256::new()))
    }

    fn hash(&self, data: &[u8]) -> [u8; HASH_LEN] {
        sha2::Sha256::digest(data).into()
    }
}

fn hmac_key(key: &[u8]) -> HmacState {
    // HMAC hashes a long key and zero-pads a short one: every length is accepted.
    <HmacState as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

impl Hmac for HmacSha256 {
    fn mac(&self, key: &[u8], data: &[&[u8]]) -> [u8; HASH_LEN] {
        let mut mac = hmac_key(key);
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl Hkdf for HkdfSha256 {
    fn extract(&self, salt: &[u8], ikm: &[u8]) -> Secret {
        let (mut prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(salt), ikm);
        let out = Secret::from_slice(&prk);
        prk.as_mut_slice().zeroize();
        out
    }

    fn expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        let hkdf =
            hkdf::Hkdf::<sha2::Sha256>::from_prk(prk).map_err(|_| CryptoError::InvalidLength)?;
        hkdf.expand_multi_info(info, out)
            .map_err(|_| CryptoError::InvalidLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    #[test]
    fn sha256_abc_and_fork() {
        let abc = hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Sha256.hash(b"abc").as_slice(), abc);
        let mut ctx = Sha256.start();
        ctx.update(b"a");
        ctx.update(b"b");
        let ab = ctx.fork_finish();
        assert_eq!(ab, Sha256.hash(b"ab"));
        let mut forked = ctx.fork();
        ctx.update(b"c");
        forked.update(b"x");
        assert_eq!(ctx.finish().as_slice(), abc);
        assert_eq!(forked.finish(), Sha256.hash(b"abx"));
        assert_eq!(
            Sha256.start().finish().as_slice(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    /// RFC 4231 test cases 2 (short key) and 6 (key longer than the block).
    #[test]
    fn hmac_rfc4231() {
        assert_eq!(
            HmacSha256
                .mac(b"Jefe", &[b"what do ya want ", b"for nothing?"])
                .as_slice(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            HmacSha256
                .mac(
                    &[0xaa; 131],
                    &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
                )
                .as_slice(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
        assert_eq!(HmacSha256.mac(b"", &[]), HmacSha256.mac(&[0; 64], &[b""]));
    }

    #[test]
    fn hkdf_rfc5869_test_case_1() {
        let prk = HkdfSha256.extract(&hex("000102030405060708090a0b0c"), &[0x0b; 22]);
        assert_eq!(
            prk.as_bytes(),
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        HkdfSha256
            .expand(prk.as_bytes(), &[&info[..3], &info[3..]], &mut okm)
            .unwrap();
        assert_eq!(
            okm.as_slice(),
            hex(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf
                 34007208d5b887185865"
            )
        );
    }

    /// RFC 5869 test case 3: empty salt and info; an empty salt is 32 zero bytes.
    #[test]
    fn hkdf_rfc5869_test_case_3() {
        let prk = HkdfSha256.extract(b"", &[0x0b; 22]);
        assert_eq!(
            prk.as_bytes(),
            hex("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04")
        );
        assert_eq!(prk, HkdfSha256.extract(&[0; 32], &[0x0b; 22]));
        let mut okm = [0u8; 42];
        HkdfSha256.expand(prk.as_bytes(), &[], &mut okm).unwrap();
        assert_eq!(
            okm.as_slice(),
            hex(
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d
                 9d201395faa4b61a96c8"
            )
        );
    }

    #[test]
    fn hkdf_expand_limits() {
        let prk = [7u8; 32];
        let mut max = alloc::vec![0u8; 255 * 32];
        HkdfSha256.expand(&prk, &[b"info"], &mut max).unwrap();
        let mut over = alloc::vec![0u8; 255 * 32 + 1];
        assert_eq!(
            HkdfSha256.expand(&prk, &[b"info"], &mut over),
            Err(CryptoError::InvalidLength)
        );
        let mut empty = [0u8; 0];
        HkdfSha256.expand(&prk, &[], &mut empty).unwrap();
        // A PRK shorter than the hash is refused (RFC 5869 §2.3); longer is fine.
        let mut out = [0u8; 16];
        assert_eq!(
            HkdfSha256.expand(&[7; 31], &[], &mut out),
            Err(CryptoError::InvalidLength)
        );
        HkdfSha256.expand(&[7; 64], &[], &mut out).unwrap();
    }
}
