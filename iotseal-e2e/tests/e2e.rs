//! End to end: simulated devices over real HTTPS against a real gateway (in this process,
//! SQLite in a temporary directory), every reading checked in storage byte for byte.

use std::time::Duration;

use iotseal_device::GatewayPins;
use iotseal_device::sim::{Impairments, Scenario, Simulation, Summary};
use iotseal_gateway::local::{LocalGateway, restart, start_local};
use iotseal_testkit::temp_dir;

fn pins(gw: &LocalGateway) -> GatewayPins {
    toml::from_str(&gw.public.to_toml().unwrap()).unwrap()
}

fn assert_complete(s: &Summary) {
    assert!(s.readings_sent > 0);
    assert_eq!(s.lost, 0, "{s:#?}");
    assert_eq!(s.duplicates, 0, "{s:#?}");
    assert_eq!(s.readings_verified, s.readings_sent, "{s:#?}");
    assert_eq!(s.readings_stored, s.readings_sent, "{s:#?}");
}

/// Five groups (classical, hybrid, post-quantum suites; both providers) at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_over_tls_stores_everything() {
    let dir = temp_dir("mixed");
    let gw = start_local(&dir, |_| {}).await.unwrap();
    let sim = Simulation::new(Scenario::mixed(3, 4.0, 1), pins(&gw), &gw.token, "").unwrap();
    let s = sim.run().await.unwrap();
    assert_complete(&s);
    assert_eq!(s.groups.len(), 5);
    for g in &s.groups {
        assert!(g.handshakes >= 3, "{g:?}");
    }
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Lost requests, lost answers (the gateway stored the readings but the device never heard),
/// latency and reboots: still every reading stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impaired_network_still_delivers_everything_once() {
    let dir = temp_dir("lossy");
    let gw = start_local(&dir, |_| {}).await.unwrap();
    let mut sc = Scenario::mixed(2, 4.0, 7);
    sc.groups.truncate(2);
    sc.network = Impairments {
        latency_ms: 5,
        jitter_ms: 10,
        drop_request: 0.15,
        drop_response: 0.15,
        disconnect: 0.1,
    };
    let sim = Simulation::new(sc, pins(&gw), &gw.token, "").unwrap();
    let s = sim.run().await.unwrap();
    assert_complete(&s);
    let retries: u64 = s.groups.iter().map(|g| g.retries).sum();
    assert!(
        retries > 0,
        "the impairments must have caused retries: {s:#?}"
    );
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The gateway restarts in the middle of a run (sessions and caches gone, SQLite kept):
/// devices re-handshake and retransmit; nothing is lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_mid_run_loses_nothing() {
    let dir = temp_dir("restart");
    let gw = start_local(&dir, |_| {}).await.unwrap();
    let mut sc = Scenario::mixed(2, 6.0, 9);
    sc.groups.truncate(2);
    let sim = Simulation::new(sc, pins(&gw), &gw.token, "").unwrap();
    // Mid-run: once the gateway has stored some of the devices' readings (a signal, not a
    // guess at how long that takes), it restarts under them.
    let mut stored = gw.handle.metrics().stored_readings();
    let run = tokio::spawn(async move { sim.run().await });
    tokio::time::timeout(Duration::from_secs(30), stored.wait_for(|n| *n >= 30))
        .await
        .expect("devices stored readings before the restart")
        .unwrap();
    let gw = restart(gw).await.unwrap();
    let s = run.await.unwrap().unwrap();
    assert_complete(&s);
    let handshakes: u64 = s.groups.iter().map(|g| g.handshakes).sum();
    assert!(
        handshakes >= 8,
        "every device handshook again after the restart: {handshakes}"
    );
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
