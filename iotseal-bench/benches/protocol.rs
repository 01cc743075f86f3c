//! Criterion benchmarks (docs/performance.md): record seal+open vs the provider's raw AEAD,
//! handshakes per suite (device side and gateway side separately), and the primitive
//! operations a handshake is made of, to compare a handshake with the sum of its parts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iotseal_bench::{NOW, Setup, providers};
use iotseal_proto::record::ContentType;
use iotseal_proto::{AeadId, KemId, SigAlg, Suite};

const SIZES: [usize; 4] = [64, 256, 1024, 16384];

fn records(c: &mut Criterion) {
    for (pname, p) in providers() {
        for aead in AeadId::ALL {
            let mut g = c.benchmark_group(format!("record/{pname}/{aead}"));
            g.measurement_time(Duration::from_secs(2))
                .warm_up_time(Duration::from_millis(500));
            let key = p
                .aead(*aead)
                .unwrap()
                .key(&vec![7u8; aead.key_len()])
                .unwrap();
            let suite = Suite {
                kem: KemId::X25519,
                sig: SigAlg::Ed25519,
                aead: *aead,
            };
            let mut setup = Setup::new(suite, p, p);
            let (mut dev, mut gw) = setup.handshake();
            for size in SIZES {
                g.throughput(Throughput::Bytes(size as u64));
                let msg = vec![0x42u8; size];
                let mut buf = msg.clone();
                let mut seq = 0u64;
                g.bench_with_input(
                    BenchmarkId::new("raw_aead_seal_open", size),
                    &size,
                    |b, _| {
                        b.iter(|| {
                            seq += 1;
                            let mut nonce = [0u8; 12];
                            nonce[4..].copy_from_slice(&seq.to_be_bytes());
                            buf.copy_from_slice(&msg);
                            let tag = key.seal(&nonce, b"hdr-13-bytes!", &mut buf).unwrap();
                            key.open(&nonce, b"hdr-13-bytes!", &mut buf, &tag).unwrap();
                            black_box(&buf);
                        })
                    },
                );
                let mut out = Vec::with_capacity(size + 64);
                g.bench_with_input(BenchmarkId::new("record_seal_open", size), &size, |b, _| {
                    b.iter(|| {
                        out.clear();
                        let s = dev.seal(NOW, ContentType::Data, &msg, &mut out).unwrap();
                        let o = gw.open(NOW, &mut out).unwrap();
                        black_box(o.plaintext);
                        gw.accept(s).unwrap();
                    })
                });
            }
            g.finish();
        }
    }
}

fn bench_suites() -> Vec<Suite> {
    [
        "x25519/ed25519/aes256gcm",
        "p256/ecdsa-p256/aes256gcm",
        "mlkem768/mldsa65/aes256gcm",
        "x25519mlkem768/ed25519/aes256gcm",
        "x25519mlkem768/ed25519+mldsa65/aes256gcm",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn handshakes(c: &mut Criterion) {
    for (pname, p) in providers() {
        let mut g = c.benchmark_group(format!("handshake/{pname}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(30);
        for suite in bench_suites() {
            let mut setup = Setup::new(suite, p, p);
            let id = suite.to_string();
            g.bench_function(BenchmarkId::new("device", &id), |b| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let s0 = Instant::now();
                        let (hs, m1) = setup.device_start();
                        t += s0.elapsed();
                        let m2 = setup.gateway_hello(&m1);
                        let s1 = Instant::now();
                        let (d, m3) = Setup::device_finish(hs, &m2);
                        t += s1.elapsed();
                        black_box((d, m3));
                    }
                    t
                })
            });
            g.bench_function(BenchmarkId::new("gateway", &id), |b| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let (hs, m1) = setup.device_start();
                        let s0 = Instant::now();
                        let m2 = setup.gateway_hello(&m1);
                        t += s0.elapsed();
                        let (_d, m3) = Setup::device_finish(hs, &m2);
                        let s1 = Instant::now();
                        black_box(setup.gateway_finish(&m3));
                        t += s1.elapsed();
                    }
                    t
                })
            });
        }
        g.finish();
    }
}

/// The primitive operations of each side of a handshake, one at a time.
fn primitives(c: &mut Criterion) {
    for (pname, p) in providers() {
        let mut g = c.benchmark_group(format!("primitive/{pname}"));
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300))
            .sample_size(30);
        for kem in KemId::ALL {
            let k = p.kem(*kem).unwrap();
            g.bench_function(BenchmarkId::new("kem_start", kem.name()), |b| {
                b.iter(|| black_box(k.start(p.random).unwrap()))
            });
            let share = k.start(p.random).unwrap().share().to_vec();
            g.bench_function(BenchmarkId::new("kem_respond", kem.name()), |b| {
                b.iter(|| black_box(k.respond(&share, p.random).unwrap()))
            });
            g.bench_function(BenchmarkId::new("kem_complete", kem.name()), |b| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let a = k.start(p.random).unwrap();
                        let r = k.respond(a.share(), p.random).unwrap();
                        let s = Instant::now();
                        black_box(a.complete(&r.share).unwrap());
                        t += s.elapsed();
                    }
                    t
                })
            });
        }
        for sig in SigAlg::ALL {
            let s = p.signature(*sig).unwrap();
            let key = s.generate(p.random).unwrap();
            let msg = [0x5a; 60];
            let sg = key.sign(&msg, p.random).unwrap();
            let pk = key.public_key();
            g.bench_function(BenchmarkId::new("sign", sig.name()), |b| {
                b.iter(|| black_box(key.sign(&msg, p.random).unwrap()))
            });
            g.bench_function(BenchmarkId::new("verify", sig.name()), |b| {
                b.iter(|| s.verify(&pk, &msg, &sg).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, records, handshakes, primitives);
criterion_main!(benches);
