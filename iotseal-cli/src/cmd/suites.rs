//! `iotseal suites`: algorithms and suites with their wire sizes.

use iotseal_proto::{AeadId, KemId, SigAlg, Suite};
use serde_json::json;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Handshake bytes of a suite: (M1, M2, M3), computed from the layout in docs/protocol.md.
pub(crate) fn handshake_sizes(s: Suite) -> (usize, usize, usize) {
    let m1 = 1 + 1 + 1 + 3 + 4 + 16 + 2 + s.kem.initiator_share_len() + 1 + 16;
    let m2 = 1 + 4 + 3 + 4 + 2 + s.kem.responder_share_len() + 8 + s.sig.signature_len() + 16 + 16;
    let m3 = 1 + 4 + 2 + 1 + 32 + s.sig.signature_len() + 16 + 16;
    (m1, m2, m3)
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let rows: Vec<_> = KemId::ALL
        .iter()
        .flat_map(|&kem| {
            SigAlg::ALL.iter().map(move |&sig| Suite {
                kem,
                sig,
                aead: AeadId::Aes256Gcm,
            })
        })
        .map(|s| {
            let (m1, m2, m3) = handshake_sizes(s);
            (s, m1, m2, m3)
        })
        .collect();
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(s, m1, m2, m3)| {
                json!({"kem": s.kem.name(), "sig": s.sig.name(), "m1": m1, "m2": m2, "m3": m3,
                       "total": m1 + m2 + m3, "post_quantum": s.kem.is_post_quantum()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "kems": KemId::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "signatures": SigAlg::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "aeads": AeadId::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "default": Suite::DEFAULT.to_string(),
                "handshake_bytes": v,
            }))?
        );
        return Ok(());
    }
    println!("Default suite: {}", Suite::DEFAULT);
    println!(
        "Record protection (any suite): {}",
        AeadId::ALL
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "{:<16} {:<16} {:>6} {:>6} {:>6} {:>7}",
        "kem", "signature", "M1", "M2", "M3", "total"
    );
    for (s, m1, m2, m3) in rows {
        println!(
            "{:<16} {:<16} {:>6} {:>6} {:>6} {:>7}",
            s.kem.name(),
            s.sig.name(),
            m1,
            m2,
            m3,
            m1 + m2 + m3
        );
    }
    Ok(())
}
