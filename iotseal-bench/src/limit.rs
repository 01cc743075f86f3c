//! The gateway's handshake ceiling from its primitive costs: how many full handshakes per
//! second `cores` cores could complete if they did nothing but the gateway's public-key work
//! of each handshake (`limit_per_s = cores / median cost`), measured in process with the
//! aws-lc provider (`iotseal_crypto_awslc::default_provider()`, the gateway's).
//!
//! # What is counted
//!
//! Per handshake (one full handshake of the suite, no retry), exactly these three operations,
//! timed back to back in one iteration and summed:
//!
//! 1. **KEM respond**: `Kem::respond` of the suite's key exchange to a fresh device share
//!    (X25519 / P-256: an ephemeral key pair and the DH; ML-KEM-768: the encapsulation key
//!    check and encapsulation; the hybrid: both), with its randomness.
//! 2. **Gateway signature**: `SigningKey::sign` of the gateway's identity key over what M2's
//!    signature covers (the signature context and a 32-byte transcript hash).
//! 3. **Device signature verification**: `Signature::verify` of a device signature over what
//!    M3's signature covers (its context and a 32-byte hash), with the device's public key.
//!
//! Not counted: the hello MAC, the cookie MAC, SHA-256 of the transcript and the identities,
//! the HKDF key schedule, the Finished MACs, the AEAD seal of M2 and open of M3, parsing,
//! the half-open table and caches, the registry, I/O and TLS. Their cost is not estimated
//! here; [`GatewayCost::full_handshake`] times the whole in-process gateway side
//! (`HandshakeServer::handle_hello` + `handle_finish`) in the same run, so the share the
//! three operations leave out can be read off the same report.
//!
//! Inputs (device shares, device signatures, keys) are made outside the timed region. A few
//! warm-up iterations run first and are not counted. The figure is the median over
//! `iterations`; it is a ceiling for a gateway that spends its cores on nothing else, not a
//! throughput measurement.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use iotseal_proto::handshake::{DEVICE_SIG_CONTEXT, GATEWAY_SIG_CONTEXT};
use iotseal_proto::{CryptoProvider, Suite};

use crate::Setup;
use crate::stats::median;

/// Iterations when the caller has no better idea (medians settle well before).
pub const DEFAULT_ITERATIONS: usize = 101;

/// The gateway's cost of one handshake of a suite: medians over the iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatewayCost {
    /// The suite.
    pub suite: Suite,
    /// Iterations measured (after warm-up).
    pub iterations: usize,
    /// Median of KEM respond.
    pub kem_respond: Duration,
    /// Median of the gateway's signature.
    pub sign: Duration,
    /// Median of the device signature's verification.
    pub verify: Duration,
    /// Median over iterations of the three summed: the cost [`limit_per_s`] divides by.
    pub primitives: Duration,
    /// For reference, not in the limit: median of the whole in-process gateway side of one
    /// handshake (`handle_hello` + `handle_finish`: the three operations and everything the
    /// module docs list as not counted, minus I/O and TLS).
    pub full_handshake: Duration,
}

impl GatewayCost {
    /// Handshakes per second `cores` cores could complete at this primitive cost.
    pub fn limit_per_s(&self, cores: usize) -> f64 {
        limit_per_s(self.primitives, cores)
    }
}

/// `cores / cost` in handshakes per second (infinite for a zero cost, which a measurement
/// does not give).
pub fn limit_per_s(cost: Duration, cores: usize) -> f64 {
    cores as f64 / cost.as_secs_f64()
}

/// The median primitive cost of the gateway side of one handshake of `suite` with the
/// aws-lc provider: KEM respond + gateway signature + device signature verification (see the
/// module docs). Errors if `iterations` is 0 or the provider lacks an algorithm of `suite`.
pub fn gateway_handshake_cost(suite: Suite, iterations: usize) -> anyhow::Result<Duration> {
    Ok(measure(suite, iterations)?.primitives)
}

/// The handshake ceiling of `cores` cores for `suite`: `cores / gateway_handshake_cost`.
pub fn limit_for(suite: Suite, cores: usize, iterations: usize) -> anyhow::Result<f64> {
    Ok(limit_per_s(
        gateway_handshake_cost(suite, iterations)?,
        cores,
    ))
}

/// Every figure of the measurement: each operation's median, their summed median and the
/// full in-process handshake for reference.
pub fn measure(suite: Suite, iterations: usize) -> anyhow::Result<GatewayCost> {
    measure_with(iotseal_crypto_awslc::default_provider(), suite, iterations)
}

/// [`measure`] with another provider (for comparisons; the limit is defined on aws-lc).
pub fn measure_with(
    p: CryptoProvider,
    suite: Suite,
    iterations: usize,
) -> anyhow::Result<GatewayCost> {
    ensure!(iterations > 0, "at least one iteration");
    let kem = p.kem(suite.kem).context("key exchange")?;
    let sig = p.signature(suite.sig).context("signature")?;
    let gateway_key = sig.generate(p.random).context("gateway key")?;
    let device_key = sig.generate(p.random).context("device key")?;
    let device_public = device_key.public_key();
    let signed = |ctx: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut m = ctx.to_vec();
        m.extend_from_slice(&p.random_vec(32)?);
        Ok(m)
    };

    let warm_up = (iterations / 10).clamp(1, 10);
    let (mut kem_ns, mut sign_ns, mut verify_ns, mut sum_ns) = (
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    );
    for i in 0..warm_up + iterations {
        // Untimed inputs: the device's share and its signature over M3's content.
        let device_kx = kem.start(p.random).context("device share")?;
        let gateway_msg = signed(GATEWAY_SIG_CONTEXT)?;
        let device_msg = signed(DEVICE_SIG_CONTEXT)?;
        let device_sig = device_key
            .sign(&device_msg, p.random)
            .context("device signature")?;

        let t0 = Instant::now();
        let resp = kem
            .respond(device_kx.share(), p.random)
            .context("KEM respond")?;
        let t1 = Instant::now();
        let gateway_sig = gateway_key
            .sign(&gateway_msg, p.random)
            .context("gateway signature")?;
        let t2 = Instant::now();
        sig.verify(&device_public, &device_msg, &device_sig)
            .context("device signature verification")?;
        let t3 = Instant::now();
        std::hint::black_box((&resp, &gateway_sig));
        if i >= warm_up {
            kem_ns.push((t1 - t0).as_nanos() as f64);
            sign_ns.push((t2 - t1).as_nanos() as f64);
            verify_ns.push((t3 - t2).as_nanos() as f64);
            sum_ns.push((t3 - t0).as_nanos() as f64);
        }
    }

    // The whole gateway side in process, for reference.
    let mut setup = Setup::new(suite, p, p);
    let mut full_ns = Vec::with_capacity(iterations);
    for i in 0..warm_up + iterations {
        let (hs, m1) = setup.device_start();
        let t0 = Instant::now();
        let m2 = setup.gateway_hello(&m1);
        let d0 = t0.elapsed();
        let (_device, m3) = Setup::device_finish(hs, &m2);
        let t1 = Instant::now();
        let gateway = setup.gateway_finish(&m3);
        let d1 = t1.elapsed();
        std::hint::black_box(&gateway);
        if i >= warm_up {
            full_ns.push((d0 + d1).as_nanos() as f64);
        }
    }

    let ns = |v: &[f64]| Duration::from_nanos(median(v).round() as u64);
    Ok(GatewayCost {
        suite,
        iterations,
        kem_respond: ns(&kem_ns),
        sign: ns(&sign_ns),
        verify: ns(&verify_ns),
        primitives: ns(&sum_ns),
        full_handshake: ns(&full_ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotseal_proto::{AeadId, KemId, SigAlg};

    #[test]
    fn positive_finite_figures() {
        for suite in [
            Suite {
                kem: KemId::X25519,
                sig: SigAlg::Ed25519,
                aead: AeadId::Aes256Gcm,
            },
            Suite::DEFAULT,
        ] {
            let c = measure(suite, 5).unwrap();
            assert_eq!(c.iterations, 5);
            for d in [
                c.kem_respond,
                c.sign,
                c.verify,
                c.primitives,
                c.full_handshake,
            ] {
                assert!(d > Duration::ZERO, "{suite}: {c:?}");
            }
            assert!(c.primitives >= c.kem_respond.max(c.sign).max(c.verify));
            let limit = c.limit_per_s(2);
            eprintln!("{suite}: {c:?}, 2 cores: {limit:.0}/s");
            assert!(limit.is_finite() && limit > 0.0, "{suite}: {limit}");
            assert_eq!(limit, 2.0 / c.primitives.as_secs_f64());
            let alone = limit_for(suite, 1, 3).unwrap();
            assert!(alone.is_finite() && alone > 0.0);
        }
        assert!(gateway_handshake_cost(Suite::DEFAULT, 0).is_err());
        assert_eq!(limit_per_s(Duration::from_millis(1), 4), 4000.0);
    }
}
