//! `storage = "postgres://..."` in the gateway's settings opens the PostgreSQL backend (the
//! backends' own tests are in iotseal-storage/tests). Needs `IOTSEAL_TEST_PG`; without it the
//! test prints "skipped: IOTSEAL_TEST_PG not set" and passes.

use iotseal_gateway::storage::{DeviceRecord, NewReading};
use iotseal_proto::SigAlg;
use iotseal_proto::reading::Reading;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread")]
async fn settings_select_postgres() {
    let Ok(base) = std::env::var("IOTSEAL_TEST_PG") else {
        eprintln!("skipped: IOTSEAL_TEST_PG not set");
        return;
    };
    let schema = format!("iotseal_settings_{}", std::process::id());
    let (admin, conn) = tokio_postgres::connect(&base, NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");

    let settings = iotseal_gateway::Settings {
        storage: url,
        ..Default::default()
    };
    let s = iotseal_gateway::open_storage(&settings).await.unwrap();
    s.add_device(DeviceRecord {
        id: "dev".into(),
        alg: SigAlg::Ed25519,
        public_key_hex: hex::encode([1; 32]),
        revoked: false,
        created_ms: 1,
        last_seen_ms: None,
        readings: 0,
    })
    .await
    .unwrap();
    let mut payload = Vec::new();
    Reading {
        msg_id: 1,
        time_ms: 1,
        values: Vec::new(),
        extra: Vec::new(),
    }
    .encode(&mut payload);
    let r = NewReading {
        device_id: "dev".into(),
        msg_id: 1,
        device_time_ms: 1,
        received_ms: 2,
        payload: payload.into(),
    };
    assert_eq!(s.store_readings(vec![r]).await.unwrap().inserted, 1);
    s.flush().await.unwrap();
    drop(s);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
