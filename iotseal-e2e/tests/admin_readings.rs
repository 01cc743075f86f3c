//! Readings JSON (issue 19) read back by the SDK's admin client: `msg_id` is a decimal string,
//! exact above 2^53; NaN and ±infinity come back as `"NaN"`, `"Infinity"`, `"-Infinity"`,
//! never `null`; `iotseal_device::StoredReadingJson` reads both back. (Moved from the gateway's
//! admin API tests: it needs both the gateway and the SDK.)

use hyper::Method;
use iotseal_proto::Suite;
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_testkit::{Env, framed, seal_records};
use serde_json::Value;

async fn env_on_sqlite() -> Env {
    Env::start_on_sqlite().await.0
}

/// A reading with NaN and ±infinity values and a message id above 2^53, sent over the
/// protocol and stored in SQLite, comes back exact: `msg_id` as a decimal string, the
/// non-finite values as their names (JSON and CSV), and the admin client reads them back.
#[tokio::test(flavor = "multi_thread")]
async fn non_finite_values_and_large_message_ids_come_back_exact() {
    let env = env_on_sqlite().await;
    let mut dev = env.device("dev-nan", Suite::DEFAULT).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;
    // 2^62 − 1 (the largest varint) and 2^53 + 1 (the first integer a double cannot hold).
    let big = (1u64 << 62) - 1;
    let odd = (1u64 << 53) + 1;
    let time_ms = iotseal_testkit::now().as_millis();
    let sent = vec![
        Reading {
            msg_id: big,
            time_ms,
            values: vec![
                (SensorKind::Temperature, f32::NAN),
                (SensorKind::Power, f32::INFINITY),
                (SensorKind::Energy, f32::NEG_INFINITY),
                (SensorKind::Humidity, 21.3),
            ],
            extra: vec![],
        },
        Reading {
            msg_id: odd,
            time_ms: time_ms + 1,
            values: vec![(SensorKind::Pressure, -0.5)],
            extra: vec![],
        },
    ];
    let records = seal_records(&mut hs.session, std::slice::from_ref(&sent));
    let answer = conn
        .post_binary("/v1/records", framed(&records))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    let r = env
        .admin(Method::GET, "/v1/devices/dev-nan/readings", "")
        .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(!text.contains("null"), "{text}");
    let rows: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rows[0]["msg_id"], big.to_string().as_str(), "{text}");
    assert_eq!(rows[1]["msg_id"], odd.to_string().as_str(), "{text}");
    assert_eq!(
        rows[0]["values"],
        serde_json::json!([
            ["temperature", "NaN"],
            ["power", "Infinity"],
            ["energy", "-Infinity"],
            ["humidity", 21.3]
        ]),
        "{text}"
    );
    assert_eq!(rows[1]["values"], serde_json::json!([["pressure", -0.5]]));

    // The admin client reads them back exactly.
    let back: Vec<iotseal_device::StoredReadingJson> = serde_json::from_str(&text).unwrap();
    assert_eq!(back[0].msg_id, big);
    assert_eq!(back[1].msg_id, odd);
    let v = &back[0].values;
    assert!(v[0].1.is_nan());
    assert_eq!(v[1].1, f64::INFINITY);
    assert_eq!(v[2].1, f64::NEG_INFINITY);
    assert_eq!(v[3], ("humidity".to_string(), 21.3));

    // CSV: the same names.
    let r = env
        .admin(Method::GET, "/v1/devices/dev-nan/readings?format=csv", "")
        .await;
    let csv = String::from_utf8(r.body).unwrap();
    assert!(
        csv.contains(&format!("dev-nan,{big},{time_ms},",))
            && csv.contains(",temperature=NaN;power=Infinity;energy=-Infinity;humidity=21.3\n"),
        "{csv}"
    );
}
