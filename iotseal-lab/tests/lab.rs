//! The whole lab in-process: every attack against iotseal is blocked with nothing forged in
//! storage, floods and exhaustion attacks included (judged by the honest devices served while
//! they run); against the legacy design the lab really detects successful attacks.

use iotseal_lab::{ATTACKS, Judged, LabOptions, Target, criterion, run_all, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iotseal_blocks_every_attack() {
    let out = run_all(Target::Iotseal, &LabOptions::default()).await;
    println!("{}", table(&out));
    assert_eq!(out.len(), ATTACKS.len());
    for o in &out {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
        assert!(o.applicable, "{}", o.name);
        assert!(o.attempts > 0, "{}: no attempt", o.name);
        assert_eq!(o.stored_forgeries, 0, "{}", o.name);
        assert_eq!(o.criterion, criterion(&o.name), "{}", o.name);
        assert_eq!(o.blocked, Some(true), "{} not blocked: {o:#?}", o.name);
        assert!(
            o.checks.iter().all(|c| c.held),
            "{}: {:?}",
            o.name,
            o.checks
        );
    }
    // Slow clients: judged by honest devices running meanwhile, which were served.
    let slow = out.iter().find(|o| o.name == "slow-client").unwrap();
    assert_eq!(slow.judged_by, Judged::Service);
    let s = slow.service.as_ref().expect("measured");
    assert!(
        s.served() && s.handshakes_attempted > 0 && s.readings_sent > 0,
        "{s:#?}"
    );
    // The floods of valid hellos and the connection hog: judged by the honest devices, which
    // were served (checked above with every criterion); the floods really flooded.
    for name in ["handshake-flood", "hello-flood-addresses", "connection-hog"] {
        let o = out.iter().find(|o| o.name == name).unwrap();
        assert_eq!(o.judged_by, Judged::Service, "{name}");
        let s = o.service.as_ref().expect("measured");
        assert!(s.served() && s.handshakes_completed > 0, "{name}: {s:#?}");
        assert!(o.attempts > 1000, "{name}: {o:#?}");
    }
    let flood = out.iter().find(|o| o.name == "handshake-flood").unwrap();
    assert!(
        flood
            .evidence
            .iter()
            .any(|e| e.contains("answered with M2")),
        "{flood:#?}"
    );
    // Attacks from other addresses: the connection hog and the drain of the per-address
    // handshake budget behind a shared PROXY-protocol proxy are blocked (checked above), and
    // the drain really drained the attacker's own budget.
    let drain = out.iter().find(|o| o.name == "proxy-bucket-drain").unwrap();
    assert!(
        drain
            .checks
            .iter()
            .any(|c| c.held && c.what.contains("answered 429")),
        "{drain:#?}"
    );
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
    // Judged the same way as iotseal: the same criterion, and for the flood and slow clients
    // an honest device measured during the attack. Slow connections are never cut off by the
    // legacy server (no timeouts), so slow-client is not blocked though the device is served.
    for o in &out {
        assert_eq!(o.criterion, criterion(&o.name), "{}", o.name);
    }
    let flood = get("handshake-flood");
    assert_eq!(flood.judged_by, Judged::Service);
    assert!(
        flood.service.as_ref().is_some_and(|s| s.served()),
        "{flood:#?}"
    );
    let slow = get("slow-client");
    assert!(
        slow.service.as_ref().is_some_and(|s| s.served()),
        "{slow:#?}"
    );
    assert_eq!(slow.blocked, Some(false), "{slow:#?}");
}
