//! `iotseal demo`: handshakes and sealed readings for a mix of suites, the device on one
//! provider and the gateway on the other, everything verified end to end, in memory.
//!
//! (The networked demo with a gateway over TLS and a device simulator extends this.)

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice,
};
use iotseal_proto::record::{ContentType, batch};
use iotseal_proto::{CryptoProvider, Suite, Time};
use serde_json::json;

use crate::providers;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Readings per suite.
    #[arg(long, default_value_t = 200)]
    readings: u32,
    /// Suites to run (`kem/sig/aead`); default: a mix of classical, hybrid and post-quantum.
    #[arg(long = "suite")]
    suites: Vec<Suite>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn default_suites() -> Vec<Suite> {
    [
        "x25519mlkem768/ed25519/aes256gcm",
        "x25519/ed25519/chacha20poly1305",
        "p256/ecdsa-p256/aes128gcm",
        "mlkem768/mldsa65/aes256ctr-hmacsha256",
        "x25519mlkem768/ed25519+mldsa65/aes256gcm",
    ]
    .iter()
    .map(|s| s.parse().expect("valid suite"))
    .collect()
}

fn now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

struct Outcome {
    suite: Suite,
    device_provider: &'static str,
    gateway_provider: &'static str,
    handshake_bytes: usize,
    handshake_us: u128,
    sent: u32,
    stored: u32,
    verified: u32,
}

fn run_suite(s: Suite, dp: CryptoProvider, gp: CryptoProvider, readings: u32) -> Result<Outcome> {
    let gkey = gp.signature(s.sig)?.generate(gp.random)?;
    let dkey = dp.signature(s.sig)?.generate(dp.random)?;
    let device_id = b"demo-sensor-1".to_vec();
    let registered = RegisteredDevice {
        alg: s.sig,
        public_key: dkey.public_key(),
        revoked: false,
        policy: None,
    };
    let registry = move |id: &[u8]| (id == b"demo-sensor-1").then(|| registered.clone());
    let mut dc = DeviceConfig::new(
        dp,
        device_id,
        dkey,
        vec![PinnedKey {
            alg: s.sig,
            public_key: gkey.public_key(),
        }],
    );
    dc.offers = vec![s];
    let mut server = HandshakeServer::new(GatewayConfig::new(
        gp,
        vec![GatewayIdentity::new(&gp, gkey)],
    )?);

    let t = now();
    let start = Instant::now();
    let (hs, m1) = DeviceHandshake::start(Arc::new(dc), t)?;
    let m2 = match server.handle_hello(t, &m1, &|_| false)? {
        HelloReply::GatewayHello { bytes, .. } => bytes,
        HelloReply::Retry { .. } => bail!("unexpected retry"),
    };
    let DeviceNext::Established(est) = hs.handle(t, &m2)? else {
        bail!("unexpected retry")
    };
    let mut dev = est.session;
    let mut gw = server.handle_finish(t, &est.finish, &registry)?.session;
    let handshake_us = start.elapsed().as_micros();
    let handshake_bytes = m1.len() + m2.len() + est.finish.len();

    let mut stored: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..readings {
        let reading = format!(
            "{{\"id\":{i},\"temperature\":{:.2}}}",
            20.0 + f64::from(i % 50) / 10.0
        )
        .into_bytes();
        let mut body = Vec::new();
        let mut rec = Vec::new();
        dev.seal(t, ContentType::Data, &reading, &mut rec)?;
        batch::push(&mut body, &rec);
        sent.push(reading);
        for r in batch::split(&body).context("batch")? {
            let mut r = r.to_vec();
            let o = gw.open(t, &mut r)?;
            let seq = o.seq;
            stored.push(o.plaintext.to_vec());
            gw.accept(seq)?;
        }
    }
    let mut ack = Vec::new();
    gw.seal_ack(t, &mut ack)?;
    let o = dev.open(t, &mut ack)?;
    let ranges = dev.parse_ack(o.plaintext)?;
    let acked: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let verified = sent.iter().zip(&stored).filter(|(a, b)| a == b).count() as u32;
    if acked != u64::from(readings) {
        bail!("{s}: {acked} of {readings} acknowledged");
    }
    Ok(Outcome {
        suite: s,
        device_provider: dp.name,
        gateway_provider: gp.name,
        handshake_bytes,
        handshake_us,
        sent: readings,
        stored: stored.len() as u32,
        verified,
    })
}

pub(crate) fn run(a: Args) -> Result<()> {
    let suites = if a.suites.is_empty() {
        default_suites()
    } else {
        a.suites
    };
    let rc = providers::by_name("rustcrypto")?;
    let aws = providers::by_name("aws-lc")?;
    let mut out = Vec::new();
    for s in &suites {
        out.push(run_suite(*s, rc, aws, a.readings)?);
    }
    let sent: u32 = out.iter().map(|o| o.sent).sum();
    let stored: u32 = out.iter().map(|o| o.stored).sum();
    let verified: u32 = out.iter().map(|o| o.verified).sum();
    let lost = sent - verified;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "readings_sent": sent, "readings_stored": stored, "readings_verified": verified,
                "lost": lost, "duplicates": stored.saturating_sub(sent),
                "suites": out.iter().map(|o| json!({
                    "suite": o.suite.to_string(), "device_provider": o.device_provider,
                    "gateway_provider": o.gateway_provider, "handshake_bytes": o.handshake_bytes,
                    "handshake_us": o.handshake_us as u64,
                })).collect::<Vec<_>>(),
                "attacks": [], "report": null, "data_dir": null,
            }))?
        );
    } else {
        println!(
            "{:<42} {:>11} {:>9} {:>9} {:>6} {:>8}",
            "suite (device rustcrypto -> gateway aws-lc)",
            "hs bytes",
            "hs µs",
            "readings",
            "stored",
            "verified"
        );
        for o in &out {
            println!(
                "{:<42} {:>11} {:>9} {:>9} {:>6} {:>8}",
                o.suite.to_string(),
                o.handshake_bytes,
                o.handshake_us,
                o.sent,
                o.stored,
                o.verified
            );
        }
        println!("\n{sent} readings sent, {verified} verified byte for byte, {lost} lost.");
    }
    if lost > 0 {
        bail!("{lost} readings lost");
    }
    Ok(())
}
