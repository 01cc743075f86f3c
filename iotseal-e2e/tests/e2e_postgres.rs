//! End to end on PostgreSQL: simulated devices over real HTTPS against a gateway (in this
//! process) configured with `storage = "postgres://..."`; every reading checked in storage
//! byte for byte through the gateway, and counted once in the database itself.
//!
//! The server is found through `IOTSEAL_TEST_PG` (a `postgres://` URL); without it the tests
//! print "skipped: set IOTSEAL_TEST_PG" and pass. Each test works in a schema of its own,
//! dropped at the end.

use std::time::Duration;

use iotseal_device::GatewayPins;
use iotseal_device::sim::{Impairments, Scenario, Simulation, Summary};
use iotseal_gateway::local::{LocalGateway, restart, start_local};
use iotseal_testkit::temp_dir;
use tokio_postgres::{Client, NoTls};

const ENV: &str = "IOTSEAL_TEST_PG";

/// A schema of the test's own, dropped (with its tables) on drop.
struct TestSchema {
    base: String,
    name: String,
    url: String,
}

impl TestSchema {
    async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(ENV) else {
            eprintln!("skipped: set {ENV}");
            return None;
        };
        let p = iotseal_crypto_awslc::default_provider();
        let name = format!(
            "iotseal_e2e_{test}_{}",
            hex::encode(p.random_vec(6).unwrap())
        );
        raw(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Self { base, name, url })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (c, conn) = tokio_postgres::connect(&base, NoTls).await?;
                tokio::spawn(conn);
                c.batch_execute(&sql).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {}", self.name);
        }
    }
}

async fn raw(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn pins(gw: &LocalGateway) -> GatewayPins {
    toml::from_str(&gw.public.to_toml().unwrap()).unwrap()
}

/// Everything sent was verified through the gateway, and the database holds each reading
/// exactly once, with the device counters in step.
async fn assert_stored_once(s: &Summary, t: &TestSchema) {
    assert!(s.readings_sent > 0);
    assert_eq!(s.lost, 0, "{s:#?}");
    assert_eq!(s.duplicates, 0, "{s:#?}");
    assert_eq!(s.readings_verified, s.readings_sent, "{s:#?}");
    assert_eq!(s.readings_stored, s.readings_sent, "{s:#?}");

    let c = raw(&t.url).await;
    let rows = count(&c, "SELECT count(*) FROM readings").await;
    let retries: u64 = s.groups.iter().map(|g| g.retries).sum();
    eprintln!(
        "{} readings sent, {retries} retried requests, {rows} rows in PostgreSQL",
        s.readings_sent
    );
    assert_eq!(rows as u64, s.readings_sent);
    let distinct = count(
        &c,
        "SELECT count(*) FROM (SELECT DISTINCT device_id, msg_id FROM readings) d",
    )
    .await;
    assert_eq!(distinct, rows);
    assert_eq!(
        count(&c, "SELECT coalesce(sum(readings), 0)::bigint FROM devices").await,
        rows
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM devices d WHERE readings <> \
             (SELECT count(*) FROM readings r WHERE r.device_id = d.id)"
        )
        .await,
        0
    );
}

/// Lost requests and lost answers (the gateway stored the readings but the device never
/// heard, so it sends them again): every reading stored exactly once in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_impaired_network_stores_everything_once() {
    let Some(t) = TestSchema::new("lossy").await else {
        return;
    };
    let dir = temp_dir("lossy");
    let url = t.url.clone();
    let gw = start_local(&dir, |s| s.storage = url).await.unwrap();
    let mut sc = Scenario::mixed(2, 4.0, 11);
    sc.groups.truncate(2);
    // Many small requests, so that many answers are lost and retransmitted.
    for g in &mut sc.groups {
        g.rate_hz = 20.0;
        g.batch = 4;
    }
    sc.network = Impairments {
        latency_ms: 5,
        jitter_ms: 10,
        drop_request: 0.1,
        drop_response: 0.2,
        disconnect: 0.1,
    };
    let sim = Simulation::new(sc, pins(&gw), &gw.token, "").unwrap();
    let s = sim.run().await.unwrap();
    let retries: u64 = s.groups.iter().map(|g| g.retries).sum();
    assert!(retries > 0, "the impairments must cause retries: {s:#?}");
    gw.handle.stop().await.unwrap();
    assert_stored_once(&s, &t).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The gateway restarts in the middle of a run (sessions and caches gone, PostgreSQL kept):
/// devices re-handshake and retransmit; nothing is lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gateway_restart_mid_run_loses_nothing() {
    let Some(t) = TestSchema::new("restart").await else {
        return;
    };
    let dir = temp_dir("restart");
    let url = t.url.clone();
    let gw = start_local(&dir, |s| s.storage = url).await.unwrap();
    let mut sc = Scenario::mixed(2, 6.0, 13);
    sc.groups.truncate(2);
    for g in &mut sc.groups {
        g.rate_hz = 10.0;
    }
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
    let handshakes: u64 = s.groups.iter().map(|g| g.handshakes).sum();
    assert!(
        handshakes >= 8,
        "every device handshook again after the restart: {handshakes}"
    );
    gw.handle.stop().await.unwrap();
    assert_stored_once(&s, &t).await;
    let _ = std::fs::remove_dir_all(dir);
}
