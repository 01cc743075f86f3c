//! The whole lab in-process: every attack against iotseal is blocked with nothing forged in
//! storage; against the legacy design the lab really detects successful attacks.

use iotseal_lab::{ATTACKS, LabOptions, Target, run_all, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iotseal_blocks_every_attack() {
    let out = run_all(Target::Iotseal, &LabOptions::default()).await;
    println!("{}", table(&out));
    assert_eq!(out.len(), ATTACKS.len());
    for o in &out {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
        assert!(o.applicable, "{}", o.name);
        assert!(o.attempts > 0, "{}: no attempt", o.name);
        assert_eq!(o.blocked, Some(true), "{} not blocked: {o:#?}", o.name);
        assert_eq!(o.stored_forgeries, 0, "{}", o.name);
        assert!(
            o.checks.iter().all(|c| c.held),
            "{}: {:?}",
            o.name,
            o.checks
        );
    }
    // The verdicts come from what the gateway counted.
    let replay = out.iter().find(|o| o.name == "replay-immediate").unwrap();
    assert!(
        replay.refusals.get("replay").copied().unwrap_or(0) > 0,
        "{replay:#?}"
    );
    let mitm = out
        .iter()
        .find(|o| o.name == "mitm-key-substitution")
        .unwrap();
    assert!(
        mitm.device_errors
            .keys()
            .any(|k| k.contains("BadSignature")),
        "the full relay must be stopped by the gateway's signature: {mitm:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_design_falls_to_mitm_and_replays() {
    let out = run_all(Target::Legacy, &LabOptions::default()).await;
    println!("{}", table(&out));
    assert_eq!(out.len(), ATTACKS.len());
    let get = |n: &str| out.iter().find(|o| o.name == n).unwrap();
    for o in &out {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
    }
    let mitm = get("mitm-key-substitution");
    assert_eq!(mitm.blocked, Some(false), "{mitm:#?}");
    assert!(
        mitm.stored_forgeries > 0,
        "altered readings were stored: {mitm:#?}"
    );
    let replay = get("replay-immediate");
    assert_eq!(replay.blocked, Some(false), "{replay:#?}");
    assert!(replay.stored_forgeries > 0, "{replay:#?}");
    // Tampering without the key is caught by the HMAC.
    assert_eq!(get("tamper").blocked, Some(true), "{:#?}", get("tamper"));
    for n in ["mitm-tls", "replay-handshake", "downgrade"] {
        let o = get(n);
        assert!(!o.applicable && o.blocked.is_none(), "{o:#?}");
    }
}
