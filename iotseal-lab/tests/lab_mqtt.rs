//! The broker-side attacker against live MQTT traffic: a gateway in this process with its MQTT
//! binding on a real broker (`IOTSEAL_TEST_MQTT`, or a `mosquitto` on PATH started on a free
//! port; skipped otherwise), honest SDK devices over MQTT, and an attacker client of the same
//! broker. Every case must be blocked with nothing forged in storage.

use iotseal_lab::{LabOptions, MQTT_ATTACKS, run_mqtt, table};
use iotseal_testkit::mqtt::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_side_attacks_are_all_blocked() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let out = run_mqtt(&LabOptions::default(), &broker.addr).await;
    println!("{}", table(&out));
    assert_eq!(out.len(), MQTT_ATTACKS.len());
    for o in &out {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
        assert!(o.applicable, "{}", o.name);
        assert!(o.attempts > 0, "{}: no attempt", o.name);
        assert_eq!(o.blocked, Some(true), "{} not blocked: {o:#?}", o.name);
        assert_eq!(o.blocked_attempts, o.attempts, "{o:#?}");
        assert_eq!(o.stored_forgeries, 0, "{}", o.name);
        assert!(
            o.checks.iter().all(|c| c.held),
            "{}: {:?}",
            o.name,
            o.checks
        );
    }
    let get = |n: &str| out.iter().find(|o| o.name == n).unwrap();
    // The eavesdropper saw the whole exchange, and only ciphertext.
    let eav = get("mqtt-eavesdrop");
    assert!(eav.attempts >= 6, "{eav:#?}");
    assert!(
        eav.checks
            .iter()
            .any(|c| c.held && c.what.contains("ciphertext only")),
        "{eav:#?}"
    );
    // The verdicts come from what the gateway counted.
    for n in ["mqtt-inject", "mqtt-cross-device"] {
        let o = get(n);
        assert!(
            o.refusals.values().sum::<u64>() > 0,
            "{n}: refusals counted at the gateway: {o:#?}"
        );
    }
    let cross = get("mqtt-cross-device");
    assert!(
        cross.refusals.get("tamper").copied().unwrap_or(0) > 0,
        "A's records relabelled as B's session fail authentication: {cross:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_unknown_attack_name_is_an_error_not_a_pass() {
    let opts = LabOptions {
        only: vec!["mqtt-nonsense".into()],
        ..LabOptions::default()
    };
    // No broker is contacted for an unknown name alone.
    let out = run_mqtt(&opts, "127.0.0.1:1").await;
    assert_eq!(out.len(), 1);
    assert!(out[0].error.is_some());
    assert_ne!(out[0].blocked, Some(true));
}
