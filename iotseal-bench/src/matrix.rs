//! The crypto matrix behind `iotseal bench crypto`: what each cryptographic choice costs.
//!
//! The matrix is provider × key exchange × signature × record protection (2 × 4 × 4 × 4 = 128
//! combinations), but no cost depends on all four, so it is measured in three factored parts:
//!
//! - **handshakes** depend on provider × key exchange × signature (the record protection only
//!   encrypts a few hundred bytes of handshake with one AEAD call per side): every pair is
//!   measured with AES-256-GCM, each side timed separately, with the bytes of each message;
//! - **records** depend on provider × record protection only: seal and open time and throughput
//!   per payload size, overhead bytes, memory per established session; plus the
//!   no-encryption baseline ([`crate::baseline`]), which isolates the protocol's own cost;
//! - the **ciphertext analysis** (entropy, chi-square, bit flips) also depends on provider ×
//!   record protection only.
//!
//! The cost of a full suite on a provider is its handshake row plus its record row.
//!
//! [`run`] returns a [`CryptoReport`], which serializes to the `crypto.json` that
//! `iotseal report` reads (schema [`SCHEMA`]).

use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use iotseal_proto::crypto::TAG_LEN;
use iotseal_proto::record::header::MAX_HEADER_LEN;
use iotseal_proto::record::{ContentType, Header, MAX_SEQ, Session};
use iotseal_proto::{AeadId, CryptoProvider, KemId, SigAlg, Suite};
use serde::{Deserialize, Serialize};

use crate::baseline::{BASELINE_AEAD_NAME, insecure_no_encryption_provider};
use crate::stats::{Summary, bits_differing, chi_square_uniform, entropy_bits_per_byte};
use crate::{NOW, Setup, mem};

/// Schema name and version of [`CryptoReport`] as JSON.
pub const SCHEMA: &str = "iotseal.bench.crypto/1";

/// What the factored structure of the matrix means, repeated in the output.
pub const STRUCTURE_NOTE: &str = "The matrix is provider x key exchange x signature x record \
protection, measured in factored parts: handshake costs depend only on provider x key exchange x \
signature (measured with aes256gcm for the handshake's own encryption), record costs and the \
ciphertext analysis only on provider x record protection. A suite's cost on a provider is its \
handshake row plus its record row.";

/// The handshake suites whose per-iteration samples are kept (for latency CDFs).
pub const SAMPLE_SUITES: [(KemId, SigAlg); 5] = [
    (KemId::X25519, SigAlg::Ed25519),
    (KemId::P256, SigAlg::EcdsaP256),
    (KemId::MlKem768, SigAlg::MlDsa65),
    (KemId::X25519MlKem768, SigAlg::Ed25519),
    (KemId::X25519MlKem768, SigAlg::Ed25519MlDsa65),
];

/// What to measure and how often.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Whether this is the `--quick` configuration.
    pub quick: bool,
    /// Providers, by name (`aws-lc`, `rustcrypto`).
    pub providers: Vec<String>,
    /// Key exchanges for the handshake part.
    pub kems: Vec<String>,
    /// Signature algorithms for the handshake part.
    pub sigs: Vec<String>,
    /// Record protection algorithms for the record part.
    pub aeads: Vec<String>,
    /// Whether to measure the no-encryption baseline.
    pub baseline: bool,
    /// Timed handshakes per suite and provider (each side timed in each).
    pub handshake_iterations: usize,
    /// Untimed handshakes first.
    pub handshake_warmup: usize,
    /// Payload sizes of the record part, bytes.
    pub record_sizes: Vec<usize>,
    /// Timed batches per size (the statistic is the median over batches of the mean per record).
    pub record_batches: usize,
    /// Plaintext bytes per batch (records per batch = this / size, at least 16, at most 1024).
    pub record_batch_bytes: usize,
    /// Records timed one by one at 1 KiB (samples for the latency CDF).
    pub record_samples: usize,
    /// Established sessions held to estimate memory per session.
    pub memory_sessions: usize,
    /// Ciphertext bytes for the entropy and chi-square analysis.
    pub analysis_bytes: usize,
    /// Single-bit flips for the flip analysis.
    pub flip_trials: usize,
    /// What was cut short compared with the full configuration.
    pub notes: Vec<String>,
}

fn names<T: std::fmt::Display>(v: &[T]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

impl Config {
    /// The full configuration.
    pub fn full() -> Self {
        Self {
            quick: false,
            providers: vec!["aws-lc".into(), "rustcrypto".into()],
            kems: names(KemId::ALL),
            sigs: names(SigAlg::ALL),
            aeads: names(AeadId::ALL),
            baseline: true,
            handshake_iterations: 101,
            handshake_warmup: 5,
            record_sizes: vec![64, 256, 1024, 16384],
            record_batches: 31,
            record_batch_bytes: 256 * 1024,
            record_samples: 2000,
            memory_sessions: 5000,
            analysis_bytes: 1 << 20,
            flip_trials: 256,
            notes: Vec::new(),
        }
    }

    /// `--quick`: the same matrix with fewer iterations (well under a minute on 2 cores).
    pub fn quick() -> Self {
        Self {
            quick: true,
            handshake_iterations: 21,
            handshake_warmup: 2,
            record_batches: 9,
            record_batch_bytes: 64 * 1024,
            record_samples: 300,
            memory_sessions: 1000,
            analysis_bytes: 128 * 1024,
            flip_trials: 64,
            notes: vec![
                "quick: 21 handshakes per suite (full: 101), 9 record batches of 64 KiB per size \
                 (full: 31 of 256 KiB), 300 per-record samples (full: 2000), 1000 sessions for \
                 the memory estimate (full: 5000), 128 KiB of ciphertext analysed (full: 1 MiB), \
                 64 bit flips (full: 256); every suite, provider and payload size is still \
                 measured"
                    .into(),
            ],
            ..Self::full()
        }
    }
    /// What `iotseal demo` runs: every provider, suite and record protection, each measured
    /// briefly (0.6 s in a release build on 2 cores, measured). No memory estimate: it needs a
    /// process of its own (memory the demo's gateway and threat lab freed would be reused by
    /// new sessions without growing the resident set, hiding their cost).
    pub fn demo() -> Self {
        Self {
            quick: true,
            handshake_iterations: 7,
            handshake_warmup: 1,
            record_sizes: vec![64, 1024, 16384],
            record_batches: 3,
            record_batch_bytes: 32 * 1024,
            record_samples: 100,
            memory_sessions: 0,
            analysis_bytes: 32 * 1024,
            flip_trials: 32,
            notes: vec![
                "demo pass (`iotseal demo`): 7 handshakes per suite (full: 101), 3 record \
                 batches of 32 KiB at 64 B, 1 KiB and 16 KiB (full: 31 of 256 KiB, four sizes), \
                 100 per-record samples (full: 2000), 32 KiB of ciphertext analysed (full: 1 \
                 MiB), 32 bit flips (full: 256), no memory estimate; every suite, provider and \
                 record protection is measured, medians of few runs: run `iotseal bench crypto` \
                 for figures to quote"
                    .into(),
            ],
            ..Self::full()
        }
    }
}

/// The machine the run was on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// CPU features that matter here (aes, pclmulqdq, avx2, avx512f, vaes, sha_ni).
    pub features: Vec<String>,
}

impl Machine {
    /// Reads what it can from procfs.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let features = ["aes", "pclmulqdq", "avx2", "avx512f", "vaes", "sha_ni"]
            .iter()
            .filter(|f| flags.split_whitespace().any(|x| x == **f))
            .map(|f| f.to_string())
            .collect();
        Self {
            cpu: field("model name").unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            features,
        }
    }
}

/// One key exchange × signature on one provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandshakeResult {
    /// Provider (both ends).
    pub provider: String,
    /// Key exchange.
    pub kem: String,
    /// Signature algorithm.
    pub sig: String,
    /// The suite measured (`kem/sig/aes256gcm`).
    pub suite: String,
    /// Whether the key exchange is post-quantum (or hybrid).
    pub pq_kem: bool,
    /// Whether the signature is post-quantum (or hybrid).
    pub pq_sig: bool,
    /// Device CPU time per handshake (start + finish), µs.
    pub device_us: Summary,
    /// Gateway CPU time per handshake (hello + finish), µs.
    pub gateway_us: Summary,
    /// Median of the device's first step (ephemeral key, M1), µs.
    pub device_start_us: f64,
    /// Median of the device's second step (M2 → M3), µs.
    pub device_finish_us: f64,
    /// Median of the gateway's first step (M1 → M2), µs.
    pub gateway_hello_us: f64,
    /// Median of the gateway's second step (M3 → session), µs.
    pub gateway_finish_us: f64,
    /// M1 bytes (device → gateway).
    pub m1_bytes: usize,
    /// M2 bytes (gateway → device).
    pub m2_bytes: usize,
    /// M3 bytes (device → gateway).
    pub m3_bytes: usize,
    /// The acknowledgement record answering M3 (gateway → device).
    pub ack_bytes: usize,
    /// Device → gateway: M1 + M3.
    pub device_to_gateway_bytes: usize,
    /// Gateway → device: M2 + the acknowledgement.
    pub gateway_to_device_bytes: usize,
}

/// One payload size of a record row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordSize {
    /// Plaintext bytes.
    pub bytes: usize,
    /// Bytes of the record on the wire (first record of a session).
    pub wire_bytes: usize,
    /// Records per timed batch.
    pub records_per_batch: usize,
    /// `Session::seal` per record, ns (summary over batches).
    pub seal_ns: Summary,
    /// `Session::open` + `Session::accept` per record, ns.
    pub open_ns: Summary,
    /// Plaintext throughput of seal at the median, MB/s (10^6 bytes/s).
    pub seal_mb_s: f64,
    /// Plaintext throughput of open at the median, MB/s.
    pub open_mb_s: f64,
    /// The provider's raw `RecordKey::seal` of the same size with a 13-byte AAD, per call, ns
    /// (no header, nonce or window: what `openssl speed -evp` measures).
    #[serde(default)]
    pub raw_seal_ns: Summary,
    /// Throughput of the raw seal at the median, MB/s.
    #[serde(default)]
    pub raw_seal_mb_s: f64,
}

/// One primitive operation on one provider (the parts a handshake is made of).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimitiveResult {
    /// Provider.
    pub provider: String,
    /// Algorithm (`x25519`, `mlkem768`, `ed25519`, …).
    pub alg: String,
    /// Operation: `keygen` (device key share), `respond` (gateway: encapsulation or key share
    /// + DH), `complete` (device: decapsulation or DH), `sign`, `verify`.
    pub op: String,
    /// Time per operation, µs.
    pub us: Summary,
}

/// One record protection algorithm on one provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordResult {
    /// Provider.
    pub provider: String,
    /// Record protection, or [`BASELINE_AEAD_NAME`].
    pub aead: String,
    /// Whether this is the no-encryption baseline.
    pub baseline: bool,
    /// Per payload size.
    pub sizes: Vec<RecordSize>,
    /// Header + tag bytes of a session's first record (1-byte sequence and time varints).
    pub overhead_bytes: usize,
    /// The most header + tag bytes a record can have (4-byte varints).
    pub overhead_bytes_max: usize,
    /// Memory per established session: RSS delta over `memory_sessions` gateway sessions,
    /// bytes per session (`None` without procfs).
    pub session_rss_bytes: Option<f64>,
    /// Sessions held for the memory estimate.
    pub memory_sessions: usize,
}

/// Ciphertext analysis of one record protection algorithm on one provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalysisResult {
    /// Provider.
    pub provider: String,
    /// Record protection, or [`BASELINE_AEAD_NAME`].
    pub aead: String,
    /// Whether this is the no-encryption baseline.
    pub baseline: bool,
    /// Description of the plaintext.
    pub plaintext: String,
    /// Bytes analysed (plaintext and ciphertext each; record payloads without header and tag).
    pub bytes: usize,
    /// Byte entropy of the plaintext, bits per byte (8 = uniform).
    pub plaintext_entropy: f64,
    /// Byte entropy of the ciphertext, bits per byte.
    pub ciphertext_entropy: f64,
    /// Chi-square statistic of the plaintext's bytes against uniform (255 degrees of freedom).
    pub plaintext_chi2: f64,
    /// Its p-value.
    pub plaintext_p: f64,
    /// Chi-square statistic of the ciphertext's bytes.
    pub ciphertext_chi2: f64,
    /// Its p-value (uniform bytes: anywhere in (0, 1), not near 0).
    pub ciphertext_p: f64,
    /// Plaintext bytes per flip trial.
    pub flip_message_bytes: usize,
    /// Flip trials.
    pub flip_trials: usize,
    /// Same key and nonce, one plaintext bit flipped: fraction of ciphertext bits that change.
    pub same_nonce_ciphertext_bits_changed: f64,
    /// Same: mean number of ciphertext bits that change per flip (1 for CTR-based modes).
    pub same_nonce_ciphertext_bits_changed_count: f64,
    /// Same: fraction of tag bits that change (≈ 0.5 for a good MAC).
    pub same_nonce_tag_bits_changed: f64,
    /// The next record of a session (fresh nonce), one plaintext bit flipped: fraction of
    /// ciphertext bits that change (≈ 0.5).
    pub next_record_ciphertext_bits_changed: f64,
}

/// Per-iteration samples, for latency distributions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleSet {
    /// What was timed: `handshake_device`, `handshake_gateway` or `record_seal_open`.
    pub kind: String,
    /// Provider.
    pub provider: String,
    /// Suite (handshakes) or record protection (records).
    pub label: String,
    /// Plaintext bytes (records), 0 for handshakes.
    pub bytes: usize,
    /// Unit of the values.
    pub unit: String,
    /// One value per iteration, in measurement order.
    pub values: Vec<f64>,
}

/// Everything `iotseal bench crypto` measured: the `crypto.json` format.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CryptoReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// When the run started, UTC (RFC 3339).
    pub started_utc: String,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// The configuration.
    pub config: Config,
    /// [`STRUCTURE_NOTE`].
    pub structure: String,
    /// `size_of::<Session>()`: the inline part of a session (keys live on the heap).
    pub session_size_of: usize,
    /// Handshakes, per provider × key exchange × signature.
    pub handshakes: Vec<HandshakeResult>,
    /// Records, per provider × record protection (+ baseline).
    pub records: Vec<RecordResult>,
    /// Ciphertext analysis, per provider × record protection (+ baseline).
    pub analysis: Vec<AnalysisResult>,
    /// Per-iteration samples for a few suites and every record protection at 1 KiB.
    pub samples: Vec<SampleSet>,
    /// The basic key exchanges and signatures, per provider (for comparisons with other
    /// libraries, such as `openssl speed`).
    #[serde(default)]
    pub primitives: Vec<PrimitiveResult>,
}

/// Progress of a run.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
    /// What runs now.
    pub what: String,
}

fn provider_by_name(name: &str) -> anyhow::Result<CryptoProvider> {
    Ok(match name {
        "aws-lc" => iotseal_crypto_awslc::default_provider(),
        "rustcrypto" => iotseal_crypto_rustcrypto::default_provider(),
        other => anyhow::bail!("unknown provider {other:?}"),
    })
}

fn parse_all<T: std::str::FromStr>(v: &[String], what: &str) -> anyhow::Result<Vec<T>> {
    v.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| anyhow::anyhow!("unknown {what} {s:?}"))
        })
        .collect()
}

/// A record-protection row to measure: provider name, provider, AEAD, whether baseline.
struct AeadCell {
    provider: String,
    p: CryptoProvider,
    aead: AeadId,
    baseline: bool,
}

impl AeadCell {
    fn label(&self) -> String {
        if self.baseline {
            BASELINE_AEAD_NAME.to_string()
        } else {
            self.aead.to_string()
        }
    }
}

/// Runs the matrix, calling `progress` after each step.
pub fn run(config: &Config, progress: &mut dyn FnMut(&Progress)) -> anyhow::Result<CryptoReport> {
    let t0 = Instant::now();
    let started_utc = utc_now();
    let providers: Vec<(String, CryptoProvider)> = config
        .providers
        .iter()
        .map(|n| Ok((n.clone(), provider_by_name(n)?)))
        .collect::<anyhow::Result<_>>()?;
    let kems: Vec<KemId> = parse_all(&config.kems, "key exchange")?;
    let sigs: Vec<SigAlg> = parse_all(&config.sigs, "signature")?;
    let aeads: Vec<AeadId> = parse_all(&config.aeads, "record protection")?;

    let mut cells = Vec::new();
    for (name, p) in &providers {
        for &aead in &aeads {
            cells.push(AeadCell {
                provider: name.clone(),
                p: *p,
                aead,
                baseline: false,
            });
        }
    }
    if config.baseline {
        // One baseline row: the first provider's hash and HKDF, no record protection.
        if let Some((name, p)) = providers.first() {
            cells.push(AeadCell {
                provider: name.clone(),
                p: insecure_no_encryption_provider(*p),
                aead: AeadId::Aes256Gcm,
                baseline: true,
            });
        }
    }

    let hs_cells = providers.len() * kems.len() * sigs.len();
    // Per record cell: memory, each size, samples, analysis.
    let total = (cells.len() * (3 + config.record_sizes.len()) + hs_cells + providers.len()) as u64;
    let mut done = 0u64;
    let mut step = |what: String, progress: &mut dyn FnMut(&Progress)| {
        progress(&Progress { done, total, what });
        done += 1;
    };

    // Memory first: later phases free memory that new sessions would reuse without growing
    // the resident set, which would hide their cost.
    // Every cell's sessions stay alive until all are measured, so no cell reuses memory
    // another one freed.
    let mut memory = Vec::new();
    let mut held = Vec::new();
    for c in &cells {
        step(
            format!(
                "memory: {} sessions, {} {}",
                config.memory_sessions,
                c.provider,
                c.label()
            ),
            progress,
        );
        let (per_session, sessions) = memory_per_session(c, config.memory_sessions);
        memory.push(per_session);
        held.push(sessions);
    }
    drop(held);

    let mut samples = Vec::new();
    let mut handshakes = Vec::new();
    for (name, p) in &providers {
        for &kem in &kems {
            for &sig in &sigs {
                let suite = Suite {
                    kem,
                    sig,
                    aead: AeadId::Aes256Gcm,
                };
                step(format!("handshake: {name} {suite}"), progress);
                let (row, dev, gw) = measure_handshake(name, *p, suite, config);
                if SAMPLE_SUITES.contains(&(kem, sig)) {
                    for (kind, values) in [("handshake_device", dev), ("handshake_gateway", gw)] {
                        samples.push(SampleSet {
                            kind: kind.into(),
                            provider: name.clone(),
                            label: suite.to_string(),
                            bytes: 0,
                            unit: "us".into(),
                            values,
                        });
                    }
                }
                handshakes.push(row);
            }
        }
    }

    let mut primitives = Vec::new();
    for (name, p) in &providers {
        step(format!("primitives: {name}"), progress);
        primitives.extend(measure_primitives(
            name,
            *p,
            config.handshake_iterations.max(1),
        ));
    }

    let mut records = Vec::new();
    for (c, session_rss_bytes) in cells.iter().zip(memory) {
        let mut sizes = Vec::new();
        let mut overhead = 0;
        for &size in &config.record_sizes {
            step(
                format!("records: {} {} {} B", c.provider, c.label(), size),
                progress,
            );
            let (row, first_overhead) = measure_records(c, size, config);
            overhead = first_overhead;
            sizes.push(row);
        }
        step(
            format!("records: {} {} samples", c.provider, c.label()),
            progress,
        );
        samples.push(SampleSet {
            kind: "record_seal_open".into(),
            provider: c.provider.clone(),
            label: c.label(),
            bytes: 1024,
            unit: "ns".into(),
            values: record_samples(c, 1024, config.record_samples),
        });
        records.push(RecordResult {
            provider: c.provider.clone(),
            aead: c.label(),
            baseline: c.baseline,
            sizes,
            overhead_bytes: overhead,
            overhead_bytes_max: MAX_HEADER_LEN + TAG_LEN,
            session_rss_bytes,
            memory_sessions: config.memory_sessions,
        });
    }

    let mut analysis = Vec::new();
    for c in &cells {
        step(
            format!("ciphertext analysis: {} {}", c.provider, c.label()),
            progress,
        );
        analysis.push(analyse(c, config));
    }
    progress(&Progress {
        done: total,
        total,
        what: "done".into(),
    });

    Ok(CryptoReport {
        schema: SCHEMA.into(),
        started_utc,
        elapsed_secs: t0.elapsed().as_secs_f64(),
        machine: Machine::detect(),
        config: config.clone(),
        structure: STRUCTURE_NOTE.into(),
        session_size_of: size_of::<Session>(),
        handshakes,
        records,
        analysis,
        samples,
        primitives,
    })
}

/// Times each basic key exchange and signature operation `n` times.
fn measure_primitives(provider: &str, p: CryptoProvider, n: usize) -> Vec<PrimitiveResult> {
    let mut out = Vec::new();
    let mut push = |alg: &str, op: &str, v: &[f64]| {
        out.push(PrimitiveResult {
            provider: provider.into(),
            alg: alg.into(),
            op: op.into(),
            us: Summary::of(v),
        })
    };
    for kem in [KemId::X25519, KemId::P256, KemId::MlKem768] {
        let Ok(k) = p.kem(kem) else { continue };
        let (mut kg, mut rs, mut cp) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n + 2 {
            let t = Instant::now();
            let a = k.start(p.random).unwrap();
            let t1 = t.elapsed();
            let t = Instant::now();
            let r = k.respond(a.share(), p.random).unwrap();
            let t2 = t.elapsed();
            let t = Instant::now();
            black_box(a.complete(&r.share).unwrap());
            let t3 = t.elapsed();
            if i >= 2 {
                kg.push(us(t1));
                rs.push(us(t2));
                cp.push(us(t3));
            }
        }
        push(kem.name(), "keygen", &kg);
        push(kem.name(), "respond", &rs);
        push(kem.name(), "complete", &cp);
    }
    for sig in [SigAlg::Ed25519, SigAlg::EcdsaP256, SigAlg::MlDsa65] {
        let Ok(s) = p.signature(sig) else { continue };
        let key = s.generate(p.random).unwrap();
        let public = key.public_key();
        let msg = [0x5a; 64];
        let (mut sg, mut vf) = (Vec::new(), Vec::new());
        for i in 0..n + 2 {
            let t = Instant::now();
            let signature = key.sign(&msg, p.random).unwrap();
            let t1 = t.elapsed();
            let t = Instant::now();
            s.verify(&public, &msg, &signature).unwrap();
            let t2 = t.elapsed();
            if i >= 2 {
                sg.push(us(t1));
                vf.push(us(t2));
            }
        }
        push(sig.name(), "sign", &sg);
        push(sig.name(), "verify", &vf);
    }
    out
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `iterations` handshakes; returns the row and the per-iteration device and gateway
/// times (µs).
fn measure_handshake(
    provider: &str,
    p: CryptoProvider,
    suite: Suite,
    config: &Config,
) -> (HandshakeResult, Vec<f64>, Vec<f64>) {
    let mut setup = Setup::new(suite, p, p);
    let mut sizes = (0, 0, 0, 0);
    let mut parts: [Vec<f64>; 4] = Default::default();
    let n = config.handshake_iterations.max(1);
    for i in 0..config.handshake_warmup + n {
        let t = Instant::now();
        let (hs, m1) = setup.device_start();
        let d1 = t.elapsed();
        let t = Instant::now();
        let m2 = setup.gateway_hello(&m1);
        let g1 = t.elapsed();
        let t = Instant::now();
        let (d, m3) = Setup::device_finish(hs, &m2);
        let d2 = t.elapsed();
        let t = Instant::now();
        let mut g = setup.gateway_finish(&m3);
        let g2 = t.elapsed();
        if i == 0 {
            let mut ack = Vec::new();
            g.seal_ack(NOW, &mut ack).unwrap();
            sizes = (m1.len(), m2.len(), m3.len(), ack.len());
        }
        black_box((d, g));
        if i >= config.handshake_warmup {
            for (v, x) in parts.iter_mut().zip([d1, d2, g1, g2]) {
                v.push(us(x));
            }
        }
    }
    let dev: Vec<f64> = parts[0].iter().zip(&parts[1]).map(|(a, b)| a + b).collect();
    let gw: Vec<f64> = parts[2].iter().zip(&parts[3]).map(|(a, b)| a + b).collect();
    let med = |v: &[f64]| Summary::of(v).median;
    let (m1, m2, m3, ack) = sizes;
    let row = HandshakeResult {
        provider: provider.into(),
        kem: suite.kem.to_string(),
        sig: suite.sig.to_string(),
        suite: suite.to_string(),
        pq_kem: suite.kem.is_post_quantum(),
        pq_sig: suite.sig.is_post_quantum(),
        device_us: Summary::of(&dev),
        gateway_us: Summary::of(&gw),
        device_start_us: med(&parts[0]),
        device_finish_us: med(&parts[1]),
        gateway_hello_us: med(&parts[2]),
        gateway_finish_us: med(&parts[3]),
        m1_bytes: m1,
        m2_bytes: m2,
        m3_bytes: m3,
        ack_bytes: ack,
        device_to_gateway_bytes: m1 + m3,
        gateway_to_device_bytes: m2 + ack,
    };
    (row, dev, gw)
}

/// A low-entropy plaintext of `len` bytes: one sensor reading as JSON, repeated.
pub fn sensor_json_plaintext(len: usize) -> Vec<u8> {
    let reading = br#"{"device":"greenhouse-0042","temperature_c":21.5,"humidity_pct":40.2,"battery_pct":87}"#;
    reading.iter().copied().cycle().take(len).collect()
}

/// Description of [`sensor_json_plaintext`].
pub const PLAINTEXT_DESCRIPTION: &str =
    "one sensor reading as JSON (85 bytes) repeated, the same 1 KiB in every record";

/// A session pair for the cell's record protection.
fn session_pair(c: &AeadCell) -> (Session, Session) {
    let suite = Suite {
        kem: KemId::X25519,
        sig: SigAlg::Ed25519,
        aead: c.aead,
    };
    Setup::new(suite, c.p, c.p).handshake()
}

/// Seal and open times per record at `size`; returns the row and the first record's overhead.
fn measure_records(c: &AeadCell, size: usize, config: &Config) -> (RecordSize, usize) {
    let (mut dev, mut gw) = session_pair(c);
    let msg = sensor_json_plaintext(size);
    let n = (config.record_batch_bytes / size.max(1)).clamp(16, 1024);
    let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(size + 64)).collect();
    let mut seal = Vec::new();
    let mut open = Vec::new();
    let mut raw = Vec::new();
    let mut first_len = 0;
    let raw_key =
        c.p.aead(c.aead)
            .expect("provider has the record protection")
            .key(&vec![7u8; c.aead.key_len()])
            .unwrap();
    let mut raw_buf = msg.clone();
    let mut raw_seq = 0u64;
    for batch in 0..config.record_batches.max(1) + 1 {
        for b in &mut bufs {
            b.clear();
        }
        let t = Instant::now();
        for b in &mut bufs {
            dev.seal(NOW, ContentType::Data, &msg, b).unwrap();
        }
        let ts = t.elapsed();
        if batch == 0 {
            first_len = bufs[0].len();
        }
        let t = Instant::now();
        for b in &mut bufs {
            let o = gw.open(NOW, b).unwrap();
            let seq = o.seq;
            black_box(o.plaintext);
            gw.accept(seq).unwrap();
        }
        let to = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            raw_seq += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&raw_seq.to_be_bytes());
            black_box(
                raw_key
                    .seal(&nonce, b"hdr-13-bytes!", &mut raw_buf)
                    .unwrap(),
            );
        }
        let tr = t.elapsed();
        // Batch 0 warms caches and the allocator up.
        if batch > 0 {
            seal.push(ts.as_secs_f64() * 1e9 / n as f64);
            open.push(to.as_secs_f64() * 1e9 / n as f64);
            raw.push(tr.as_secs_f64() * 1e9 / n as f64);
        }
        if dev.next_seq() + n as u64 > MAX_SEQ {
            (dev, gw) = session_pair(c);
        }
    }
    let seal = Summary::of(&seal);
    let open = Summary::of(&open);
    let raw = Summary::of(&raw);
    let mb_s = |ns: f64| {
        if ns > 0.0 {
            size as f64 * 1e3 / ns
        } else {
            0.0
        }
    };
    let row = RecordSize {
        bytes: size,
        wire_bytes: first_len,
        records_per_batch: n,
        seal_mb_s: mb_s(seal.median),
        open_mb_s: mb_s(open.median),
        raw_seal_mb_s: mb_s(raw.median),
        seal_ns: seal,
        open_ns: open,
        raw_seal_ns: raw,
    };
    (row, first_len - size)
}

/// `count` records of `size` bytes sealed and opened one at a time: ns each.
fn record_samples(c: &AeadCell, size: usize, count: usize) -> Vec<f64> {
    let (mut dev, mut gw) = session_pair(c);
    let msg = sensor_json_plaintext(size);
    let mut buf = Vec::with_capacity(size + 64);
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 20 {
        buf.clear();
        let t = Instant::now();
        dev.seal(NOW, ContentType::Data, &msg, &mut buf).unwrap();
        let o = gw.open(NOW, &mut buf).unwrap();
        let seq = o.seq;
        black_box(o.plaintext);
        gw.accept(seq).unwrap();
        let e = t.elapsed();
        if i >= 20 {
            out.push(e.as_secs_f64() * 1e9);
        }
    }
    out
}

/// RSS delta of holding `n` established gateway sessions, bytes per session; returns the
/// sessions too, for the caller to drop when every measurement is done.
fn memory_per_session(c: &AeadCell, n: usize) -> (Option<f64>, Vec<Session>) {
    let mut held = Vec::with_capacity(n);
    if n == 0 {
        return (None, held);
    }
    let suite = Suite {
        kem: KemId::X25519,
        sig: SigAlg::Ed25519,
        aead: c.aead,
    };
    let mut setup = Setup::new(suite, c.p, c.p);
    let mut now = NOW;
    // Warm the allocator and the provider up.
    for _ in 0..50 {
        black_box(setup.handshake_at(now));
    }
    now = now.plus_millis(600_000);
    setup.expire(now);
    let before = mem::rss_bytes();
    for i in 0..n {
        // Expire handshake state now and then, so the nonce cache does not grow with n.
        if i % 250 == 249 {
            now = now.plus_millis(600_000);
            setup.expire(now);
        }
        let (d, g) = setup.handshake_at(now);
        drop(d);
        held.push(g);
    }
    now = now.plus_millis(600_000);
    setup.expire(now);
    let after = mem::rss_bytes();
    let per = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    (per, held)
}

fn header_len(record: &[u8]) -> usize {
    Header::decode(record).map_or(0, |(_, len)| len)
}

fn analyse(c: &AeadCell, config: &Config) -> AnalysisResult {
    const RECORD: usize = 1024;
    let plaintext = sensor_json_plaintext(RECORD);
    let records = config.analysis_bytes.div_ceil(RECORD).max(1);

    // Entropy and chi-square over the payloads of `records` records of the same plaintext.
    let (mut dev, _gw) = session_pair(c);
    let mut pt_all = Vec::with_capacity(records * RECORD);
    let mut ct_all = Vec::with_capacity(records * RECORD);
    let mut rec = Vec::with_capacity(RECORD + 64);
    for _ in 0..records {
        rec.clear();
        dev.seal(NOW, ContentType::Data, &plaintext, &mut rec)
            .unwrap();
        let h = header_len(&rec);
        ct_all.extend_from_slice(&rec[h..rec.len() - TAG_LEN]);
        pt_all.extend_from_slice(&plaintext);
    }
    let (pt_chi2, pt_p) = chi_square_uniform(&pt_all);
    let (ct_chi2, ct_p) = chi_square_uniform(&ct_all);

    // One plaintext bit flipped under the same key and nonce (raw record key).
    let mut ct_bits = 0u64;
    let mut tag_bits = 0u64;
    let trials = config.flip_trials.max(1);
    let rp =
        c.p.aead(c.aead)
            .expect("provider has the record protection");
    let aad = [0x80u8, 0, 0, 0, 1, 2, 3];
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        // splitmix64: positions of the flipped bits (no need for secure randomness here).
        rng_state = rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for _ in 0..trials {
        let key = rp.key(&c.p.random_vec(c.aead.key_len()).unwrap()).unwrap();
        let mut nonce = [0u8; 12];
        c.p.random.fill(&mut nonce).unwrap();
        let bit = (next() % (RECORD as u64 * 8)) as usize;
        let mut a = plaintext.clone();
        let mut b = plaintext.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let ta = key.seal(&nonce, &aad, &mut a).unwrap();
        let tb = key.seal(&nonce, &aad, &mut b).unwrap();
        ct_bits += bits_differing(&a, &b);
        tag_bits += bits_differing(&ta, &tb);
    }

    // The same flip in the next record of a session: a fresh nonce.
    let mut next_bits = 0u64;
    for _ in 0..trials {
        let bit = (next() % (RECORD as u64 * 8)) as usize;
        let mut flipped = plaintext.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let mut r1 = Vec::new();
        let mut r2 = Vec::new();
        dev.seal(NOW, ContentType::Data, &plaintext, &mut r1)
            .unwrap();
        dev.seal(NOW, ContentType::Data, &flipped, &mut r2).unwrap();
        let (h1, h2) = (header_len(&r1), header_len(&r2));
        next_bits += bits_differing(&r1[h1..r1.len() - TAG_LEN], &r2[h2..r2.len() - TAG_LEN]);
    }
    let msg_bits = (trials * RECORD * 8) as f64;
    AnalysisResult {
        provider: c.provider.clone(),
        aead: c.label(),
        baseline: c.baseline,
        plaintext: PLAINTEXT_DESCRIPTION.into(),
        bytes: ct_all.len(),
        plaintext_entropy: entropy_bits_per_byte(&pt_all),
        ciphertext_entropy: entropy_bits_per_byte(&ct_all),
        plaintext_chi2: pt_chi2,
        plaintext_p: pt_p,
        ciphertext_chi2: ct_chi2,
        ciphertext_p: ct_p,
        flip_message_bytes: RECORD,
        flip_trials: trials,
        same_nonce_ciphertext_bits_changed: ct_bits as f64 / msg_bits,
        same_nonce_ciphertext_bits_changed_count: ct_bits as f64 / trials as f64,
        same_nonce_tag_bits_changed: tag_bits as f64 / (trials * TAG_LEN * 8) as f64,
        next_record_ciphertext_bits_changed: next_bits as f64 / msg_bits,
    }
}

/// The current time as RFC 3339 UTC.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-26T14:02:00Z`).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl CryptoReport {
    /// Writes the human-readable tables.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        let m = &self.machine;
        writeln!(
            w,
            "iotseal bench crypto{} — {} ({} CPUs), started {}, {:.1} s",
            if self.config.quick { " --quick" } else { "" },
            m.cpu,
            m.cpus,
            self.started_utc,
            self.elapsed_secs
        )?;
        writeln!(w, "{}", self.structure)?;
        for n in &self.config.notes {
            writeln!(w, "note: {n}")?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "Handshakes (median of {} per suite; µs of CPU per side; bytes on the wire)",
            self.config.handshake_iterations
        )?;
        writeln!(
            w,
            "{:<11} {:<15} {:<16} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>4} {:>7} {:>7}",
            "provider",
            "kem",
            "signature",
            "device",
            "dev p90",
            "gateway",
            "gw p90",
            "M1",
            "M2",
            "M3",
            "ack",
            "D→G",
            "G→D"
        )?;
        for h in &self.handshakes {
            writeln!(
                w,
                "{:<11} {:<15} {:<16} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>6} {:>6} {:>4} {:>7} {:>7}",
                h.provider,
                h.kem,
                h.sig,
                h.device_us.median,
                h.device_us.p90,
                h.gateway_us.median,
                h.gateway_us.p90,
                h.m1_bytes,
                h.m2_bytes,
                h.m3_bytes,
                h.ack_bytes,
                h.device_to_gateway_bytes,
                h.gateway_to_device_bytes
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "Records (median over {} batches; ns per record; MB/s = 10^6 plaintext bytes/s)",
            self.config.record_batches
        )?;
        writeln!(
            w,
            "{:<11} {:<22} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "provider",
            "record protection",
            "bytes",
            "wire",
            "seal ns",
            "open ns",
            "seal MB/s",
            "open MB/s",
            "raw MB/s"
        )?;
        for r in &self.records {
            for s in &r.sizes {
                writeln!(
                    w,
                    "{:<11} {:<22} {:>6} {:>6} {:>10.0} {:>10.0} {:>10.1} {:>10.1} {:>10.1}",
                    r.provider,
                    r.aead,
                    s.bytes,
                    s.wire_bytes,
                    s.seal_ns.median,
                    s.open_ns.median,
                    s.seal_mb_s,
                    s.open_mb_s,
                    s.raw_seal_mb_s
                )?;
            }
        }
        writeln!(
            w,
            "raw MB/s: the provider's RecordKey::seal alone (no header, nonce or window)."
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "Primitive operations (median of {}, µs)",
            self.config.handshake_iterations
        )?;
        writeln!(
            w,
            "{:<11} {:<12} {:<9} {:>10} {:>10}",
            "provider", "algorithm", "op", "µs", "p90"
        )?;
        for p in &self.primitives {
            writeln!(
                w,
                "{:<11} {:<12} {:<9} {:>10.1} {:>10.1}",
                p.provider, p.alg, p.op, p.us.median, p.us.p90
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "Overhead and memory per session (size_of::<Session>() = {} B inline)",
            self.session_size_of
        )?;
        writeln!(
            w,
            "{:<11} {:<22} {:>14} {:>14} {:>18}",
            "provider", "record protection", "overhead B", "overhead max B", "RSS B/session"
        )?;
        for r in &self.records {
            writeln!(
                w,
                "{:<11} {:<22} {:>14} {:>14} {:>18}",
                r.provider,
                r.aead,
                r.overhead_bytes,
                r.overhead_bytes_max,
                r.session_rss_bytes.map_or("n/a".into(), |b| format!(
                    "{b:.0} ({} held)",
                    r.memory_sessions
                ))
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "Ciphertext analysis ({}; {} flips)",
            PLAINTEXT_DESCRIPTION, self.config.flip_trials
        )?;
        writeln!(
            w,
            "{:<11} {:<22} {:>8} {:>8} {:>9} {:>9} {:>11} {:>11} {:>8} {:>9}",
            "provider",
            "record protection",
            "H(pt)",
            "H(ct)",
            "p(pt)",
            "p(ct)",
            "ct bits Δ",
            "ct frac Δ",
            "tag Δ",
            "next rec"
        )?;
        for a in &self.analysis {
            writeln!(
                w,
                "{:<11} {:<22} {:>8.4} {:>8.4} {:>9.2e} {:>9.3} {:>11.2} {:>11.6} {:>8.3} {:>9.3}",
                a.provider,
                a.aead,
                a.plaintext_entropy,
                a.ciphertext_entropy,
                a.plaintext_p,
                a.ciphertext_p,
                a.same_nonce_ciphertext_bits_changed_count,
                a.same_nonce_ciphertext_bits_changed,
                a.same_nonce_tag_bits_changed,
                a.next_record_ciphertext_bits_changed
            )?;
        }
        writeln!(
            w,
            "H = byte entropy, bits/byte; p = chi-square p-value against uniform bytes (255 dof); \
             ct bits Δ / frac Δ / tag Δ: same key and nonce, one plaintext bit flipped; \
             next rec: the next record of the session (fresh nonce), one bit flipped."
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }
}
