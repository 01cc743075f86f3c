//! The whole lab in-process: every attack against iotseal is blocked with nothing forged in
//! storage, except that a flood of valid hellos from 250 addresses can still make an honest
//! device's hello wait (a known limitation, pinned here); against the legacy design the lab
//! really detects successful attacks.

use iotseal_lab::{
    ATTACKS, Judged, LabOptions, OPENING_A_SESSION, Target, criterion, run_all, table,
};

/// The floods of valid hellos that can still refuse an honest device's hello. The flood from
/// one address (`handshake-flood`) is blocked since the per-source cap and the fair eviction
/// of the half-open table (docs/decisions.md D32): it is checked with the others above. From
/// 250 addresses, the lab's honest devices share one address (127.0.0.1), so their source can
/// be the largest holder of the table and one of their hellos may get Busy.
const NOT_YET_BLOCKED: &[&str] = &["hello-flood-addresses"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iotseal_blocks_every_attack_but_the_flood_of_new_sessions() {
    let out = run_all(Target::Iotseal, &LabOptions::default()).await;
    println!("{}", table(&out));
    assert_eq!(out.len(), ATTACKS.len());
    for o in &out {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
        assert!(o.applicable, "{}", o.name);
        assert!(o.attempts > 0, "{}: no attempt", o.name);
        assert_eq!(o.stored_forgeries, 0, "{}", o.name);
        assert_eq!(o.criterion, criterion(&o.name), "{}", o.name);
        if NOT_YET_BLOCKED.contains(&o.name.as_str()) {
            continue;
        }
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
    // The flood of valid hellos from many addresses (a known limitation, docs/security.md):
    // while the half-open table is full, a hello of the honest devices' shared address can be
    // refused with Busy. What does hold: the flood opens no session, stores nothing, stays
    // within the half-open cap and memory, and requests through sessions already open are
    // never refused. When the gateway serves every new session under such a flood, this turns
    // into `blocked` and this test fails: update it then.
    for name in NOT_YET_BLOCKED {
        let flood = out.iter().find(|o| o.name == *name).unwrap();
        assert_eq!(flood.judged_by, Judged::Service);
        assert_eq!(flood.blocked, Some(false), "{flood:#?}");
        let s = flood.service.as_ref().expect("measured");
        assert!(s.requests_refused > 0, "{s:#?}");
        assert!(
            s.refusals
                .keys()
                .all(|k| k.starts_with(&format!("{OPENING_A_SESSION}: gateway refused: Busy"))),
            "only new sessions refused, only with Busy: {s:#?}"
        );
        assert!(
            s.handshakes_completed > 0 && s.readings_stored > 0,
            "{s:#?}"
        );
        let failed: Vec<_> = flood.checks.iter().filter(|c| !c.held).collect();
        assert_eq!(failed.len(), 1, "only the service check fails: {failed:#?}");
        assert!(
            failed[0].what.starts_with("honest devices were served"),
            "{failed:#?}"
        );
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
