//! Ratios measured side by side, so that a shared, noisy machine affects both terms alike:
//! each iteration times a handshake side and then the primitive operations it is made of
//! (or a record seal+open and the raw AEAD seal+open); the table shows the median of the
//! per-iteration ratios. Run: `cargo bench -p iotseal-bench --bench ratios`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use iotseal_bench::{NOW, Setup, providers};
use iotseal_proto::record::ContentType;
use iotseal_proto::{CryptoProvider, Suite};

const ITERS: usize = 300;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// (device handshake, device primitives, gateway handshake, gateway primitives), µs each.
fn handshake_iteration(
    setup: &mut Setup,
    p: &CryptoProvider,
    suite: Suite,
    keys: &Keys,
) -> [f64; 4] {
    let t = Instant::now();
    let (hs, m1) = setup.device_start();
    let d1 = t.elapsed();
    let t = Instant::now();
    let m2 = setup.gateway_hello(&m1);
    let g1 = t.elapsed();
    let t = Instant::now();
    let (_d, m3) = Setup::device_finish(hs, &m2);
    let d2 = t.elapsed();
    let t = Instant::now();
    black_box(setup.gateway_finish(&m3));
    let g2 = t.elapsed();

    // The same primitive operations, one by one.
    let kem = p.kem(suite.kem).unwrap();
    let sig = p.signature(suite.sig).unwrap();
    let t = Instant::now();
    let a = kem.start(p.random).unwrap();
    let pd1 = t.elapsed();
    let t = Instant::now();
    let r = kem.respond(a.share(), p.random).unwrap();
    let pg1 = t.elapsed();
    let t = Instant::now();
    black_box(a.complete(&r.share).unwrap());
    let pd2 = t.elapsed();
    let t = Instant::now();
    let gs = keys.gateway.sign(&[1; 61], p.random).unwrap();
    let pg2 = t.elapsed();
    let t = Instant::now();
    sig.verify(&keys.gateway_pub, &[1; 61], &gs).unwrap();
    let pd3 = t.elapsed();
    let t = Instant::now();
    let ds = keys.device.sign(&[2; 60], p.random).unwrap();
    let pd4 = t.elapsed();
    let t = Instant::now();
    sig.verify(&keys.device_pub, &[2; 60], &ds).unwrap();
    let pg3 = t.elapsed();
    [
        us(d1 + d2),
        us(pd1 + pd2 + pd3 + pd4),
        us(g1 + g2),
        us(pg1 + pg2 + pg3),
    ]
}

struct Keys {
    gateway: Box<dyn iotseal_proto::crypto::SigningKey>,
    gateway_pub: Vec<u8>,
    device: Box<dyn iotseal_proto::crypto::SigningKey>,
    device_pub: Vec<u8>,
}

fn main() {
    println!(
        "Handshake vs the sum of its primitive operations (median of {ITERS} paired iterations)"
    );
    println!(
        "{:<12} {:<42} {:>10} {:>10} {:>6} {:>10} {:>10} {:>6}",
        "provider", "suite", "device µs", "prims µs", "ratio", "gateway µs", "prims µs", "ratio"
    );
    for (name, p) in providers() {
        for s in [
            "x25519/ed25519/aes256gcm",
            "p256/ecdsa-p256/aes256gcm",
            "mlkem768/mldsa65/aes256gcm",
            "x25519mlkem768/ed25519/aes256gcm",
            "x25519mlkem768/ed25519+mldsa65/aes256gcm",
        ] {
            let suite: Suite = s.parse().unwrap();
            let mut setup = Setup::new(suite, p, p);
            let sig = p.signature(suite.sig).unwrap();
            let gateway = sig.generate(p.random).unwrap();
            let device = sig.generate(p.random).unwrap();
            let keys = Keys {
                gateway_pub: gateway.public_key(),
                gateway,
                device_pub: device.public_key(),
                device,
            };
            for _ in 0..20 {
                handshake_iteration(&mut setup, &p, suite, &keys);
            }
            let runs: Vec<[f64; 4]> = (0..ITERS)
                .map(|_| handshake_iteration(&mut setup, &p, suite, &keys))
                .collect();
            let col = |i: usize| median(runs.iter().map(|r| r[i]).collect());
            let ratio = |a: usize, b: usize| median(runs.iter().map(|r| r[a] / r[b]).collect());
            println!(
                "{:<12} {:<42} {:>10.1} {:>10.1} {:>6.2} {:>10.1} {:>10.1} {:>6.2}",
                name,
                s,
                col(0),
                col(1),
                ratio(0, 1),
                col(2),
                col(3),
                ratio(2, 3)
            );
        }
    }

    println!();
    println!(
        "Record seal+open vs raw AEAD seal+open of the same size (median of paired batches of 1000)"
    );
    println!(
        "{:<12} {:<22} {:>7} {:>10} {:>10} {:>6}",
        "provider", "aead", "bytes", "raw ns", "record ns", "ratio"
    );
    for (name, p) in providers() {
        for aead in iotseal_proto::AeadId::ALL {
            let suite = Suite {
                aead: *aead,
                ..Suite::DEFAULT
            };
            let mut setup = Setup::new(suite, p, p);
            let (mut dev, mut gw) = setup.handshake();
            let key = p
                .aead(*aead)
                .unwrap()
                .key(&vec![7u8; aead.key_len()])
                .unwrap();
            for size in [64usize, 256, 1024, 16384] {
                let msg = vec![0x42u8; size];
                let mut buf = msg.clone();
                let mut out = Vec::with_capacity(size + 64);
                let mut seq = 0u64;
                let mut raw = Vec::new();
                let mut rec = Vec::new();
                let n = if size > 4096 { 100 } else { 1000 };
                for _ in 0..60 {
                    let t = Instant::now();
                    for _ in 0..n {
                        seq += 1;
                        let mut nonce = [0u8; 12];
                        nonce[4..].copy_from_slice(&seq.to_be_bytes());
                        buf.copy_from_slice(&msg);
                        let tag = key.seal(&nonce, b"hdr-13-bytes!", &mut buf).unwrap();
                        key.open(&nonce, b"hdr-13-bytes!", &mut buf, &tag).unwrap();
                        black_box(&buf);
                    }
                    raw.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
                    let t = Instant::now();
                    for _ in 0..n {
                        out.clear();
                        let s = dev.seal(NOW, ContentType::Data, &msg, &mut out).unwrap();
                        let o = gw.open(NOW, &mut out).unwrap();
                        black_box(o.plaintext);
                        gw.accept(s).unwrap();
                    }
                    rec.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
                }
                let ratios: Vec<f64> = rec.iter().zip(&raw).map(|(a, b)| a / b).collect();
                println!(
                    "{:<12} {:<22} {:>7} {:>10.0} {:>10.0} {:>6.3}",
                    name,
                    aead.name(),
                    size,
                    median(raw),
                    median(rec),
                    median(ratios)
                );
            }
        }
    }
}
