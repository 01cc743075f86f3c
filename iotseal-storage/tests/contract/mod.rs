//! The storage contract: what every [`Storage`] does, written once and run on each backend
//! (`tests/sqlite.rs`, `tests/postgres.rs`, `tests/memory.rs`) by [`contract_suite!`], the way
//! rustls runs its API suite once per provider.
//!
//! A backend test file implements [`Backend`] (a fresh, empty store per test) and invokes
//! `contract_suite!(TheBackend);`. Backend-specific behaviour (batching, the SQLite inbox,
//! migrations, reconnection, crash safety) stays in the backend's own file.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use iotseal_proto::SigAlg;
use iotseal_proto::codec::VARINT_MAX;
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_storage::{
    DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StoreOutcome, StoredReading,
};

/// A backend under test.
pub trait Backend: Sized + Send + Sync + 'static {
    /// The store.
    type S: Storage;
    /// Whether storing a reading of an unregistered device fails (the databases: a foreign
    /// key; the in-memory store accepts it).
    const CHECKS_DEVICES: bool;
    /// A fresh, empty store for `test`; None (after printing why) when the backend is not
    /// available here.
    fn fresh(test: &str) -> impl Future<Output = Option<Self>> + Send;
    /// The store.
    fn storage(&self) -> &Arc<Self::S>;
    /// The newest `limit` session events, newest first.
    fn events(&self, limit: u32) -> impl Future<Output = Vec<SessionEvent>> + Send;
    /// Closes the store (after what it accepted is committed) and opens it again; None for a
    /// store that does not survive being closed.
    fn reopen(&mut self) -> impl Future<Output = Option<()>> + Send;
}

/// One `#[tokio::test]` per contract test, for `$backend`.
#[macro_export]
macro_rules! contract_suite {
    ($backend:ty) => {
        $crate::contract_suite!(@tests $backend;
            devices_add_duplicate_revoke,
            concurrent_duplicate_registrations_one_wins,
            store_and_dedup,
            store_reports_the_rows_written_per_device,
            overlapping_and_scattered_ids_are_stored_once,
            time_queries_match_a_full_sort,
            store_refuses_unknown_devices_and_ids_out_of_range,
            store_refuses_payloads_that_are_not_the_reading,
            concurrent_stores_all_committed_and_counted,
            readings_by_time_range_and_limit,
            long_payloads_round_trip_as_lowercase_hex,
            values_are_decoded_from_the_payload,
            touch_and_session_events,
            data_survives_reopen,
        );
    };
    (@tests $backend:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                contract::$name::<$backend>().await
            }
        )*
    };
}

/// Starts a contract test: the backend, or return (skipped).
macro_rules! fresh {
    ($b:ty, $name:literal) => {
        match <$b>::fresh($name).await {
            Some(b) => b,
            None => return,
        }
    };
}

pub fn device(id: &str, key_byte: u8) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        alg: SigAlg::Ed25519,
        public_key_hex: hex::encode([key_byte; 32]),
        revoked: false,
        created_ms: 1_700_000_000_000,
        last_seen_ms: None,
        readings: 0,
    }
}

/// The payload of a reading: its encoding (docs/protocol.md §8.12).
pub fn payload(msg_id: u64, time_ms: u64, values: &[(SensorKind, f32)], extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Reading {
        msg_id,
        time_ms,
        values: values.to_vec(),
        extra: extra.to_vec(),
    }
    .encode(&mut out);
    out
}

/// A reading with the given values and extra bytes, received 5 ms after its device time.
pub fn reading_with(
    device_id: &str,
    msg_id: u64,
    device_time_ms: u64,
    values: &[(SensorKind, f32)],
    extra: &[u8],
) -> NewReading {
    NewReading {
        device_id: device_id.into(),
        msg_id,
        device_time_ms,
        received_ms: device_time_ms + 5,
        payload: payload(msg_id, device_time_ms, values, extra).into(),
        // Not stored (D37): what the gateway's constructor fills in today.
    }
}

/// The three values of [`reading`].
pub fn three_values(msg_id: u64) -> [(SensorKind, f32); 3] {
    [
        (SensorKind::Temperature, msg_id as f32 / 10.0),
        (SensorKind::Humidity, 40.5),
        (SensorKind::Pressure, 1013.25),
    ]
}

/// A reading with three values.
pub fn reading(device_id: &str, msg_id: u64, device_time_ms: u64) -> NewReading {
    reading_with(
        device_id,
        msg_id,
        device_time_ms,
        &three_values(msg_id),
        &[],
    )
}

/// The outcome of a store call whose readings are all `device`'s.
pub fn outcome(device: &str, inserted: usize, duplicates: usize) -> StoreOutcome {
    StoreOutcome {
        inserted,
        duplicates,
        per_device: vec![(device.into(), inserted)],
    }
}

/// Every reading of a device (up to the default limit), oldest first.
pub async fn all_readings<S: Storage + ?Sized>(s: &S, device_id: &str) -> Vec<StoredReading> {
    s.readings(ReadingQuery {
        device_id: device_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub async fn devices_add_duplicate_revoke<B: Backend>() {
    let b = fresh!(B, "devices_add_duplicate_revoke");
    let s = b.storage();

    s.add_device(device("alpha", 1)).await.unwrap();
    s.add_device(device("beta", 2)).await.unwrap();

    let err = s.add_device(device("alpha", 3)).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert!(err.to_string().contains("alpha"), "{err}");

    let err = s.add_device(device("gamma", 2)).await.unwrap_err();
    assert!(
        err.to_string().contains("public key is already registered"),
        "{err}"
    );
    assert!(err.to_string().contains("beta"), "{err}");

    // Invalid input is refused without panicking.
    let mut bad = device("delta", 4);
    bad.public_key_hex = "zz".into();
    assert!(s.add_device(bad).await.is_err());
    assert!(s.add_device(device("", 5)).await.is_err());
    assert!(s.add_device(device(&"x".repeat(33), 6)).await.is_err());
    let mut bad = device("epsilon", 7);
    bad.created_ms = u64::MAX;
    assert!(s.add_device(bad).await.is_err());

    let alpha = s.device("alpha".into()).await.unwrap().unwrap();
    assert_eq!(alpha, device("alpha", 1));
    assert_eq!(s.device("nope".into()).await.unwrap(), None);
    let all = s.devices().await.unwrap();
    let ids: Vec<_> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);

    assert!(s.revoke_device("beta".into()).await.unwrap());
    assert!(s.revoke_device("beta".into()).await.unwrap());
    assert!(!s.revoke_device("nope".into()).await.unwrap());
    assert!(s.device("beta".into()).await.unwrap().unwrap().revoked);
    assert!(!s.device("alpha".into()).await.unwrap().unwrap().revoked);

    // Every algorithm name round-trips.
    for (i, alg) in SigAlg::ALL.iter().enumerate() {
        let mut d = device(&format!("alg{i}"), 100 + i as u8);
        d.alg = *alg;
        s.add_device(d.clone()).await.unwrap();
        assert_eq!(s.device(d.id.clone()).await.unwrap().unwrap(), d);
    }
}

/// Ten registrations of one id at once: one wins, each caller gets its own answer.
pub async fn concurrent_duplicate_registrations_one_wins<B: Backend>() {
    let b = fresh!(B, "concurrent_duplicate_registrations_one_wins");
    let tasks: Vec<_> = (0..10u8)
        .map(|i| {
            let s = Arc::clone(b.storage());
            tokio::spawn(async move { s.add_device(device("same", i)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(b.storage().devices().await.unwrap().len(), 1);
}

pub async fn store_and_dedup<B: Backend>() {
    let b = fresh!(B, "store_and_dedup");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();

    // The same message twice in one call: stored once.
    let out = s
        .store_readings(vec![
            reading("dev", 1, 1000),
            reading("dev", 2, 1001),
            reading("dev", 1, 1000),
        ])
        .await
        .unwrap();
    assert_eq!(out, outcome("dev", 2, 1));

    // Across calls.
    let out = s
        .store_readings(vec![reading("dev", 2, 1001), reading("dev", 3, 1002)])
        .await
        .unwrap();
    assert_eq!(out, outcome("dev", 1, 1));

    // A duplicate keeps the first version (same id, other bytes, a later receive time).
    let mut changed = reading_with("dev", 3, 1002, &[], b"other");
    changed.received_ms = 9999;
    let out = s.store_readings(vec![changed]).await.unwrap();
    assert_eq!(out, outcome("dev", 0, 1));

    assert_eq!(
        s.store_readings(vec![]).await.unwrap(),
        StoreOutcome::default()
    );

    assert_eq!(s.count_readings().await.unwrap(), 3);
    let d = s.device("dev".into()).await.unwrap().unwrap();
    assert_eq!(d.readings, 3);
    // The latest receive time, duplicates included.
    assert_eq!(d.last_seen_ms, Some(9999));

    let got = all_readings(&**s, "dev").await;
    let ids: Vec<_> = got.iter().map(|r| r.msg_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(got[2].device_time_ms, 1002);
    assert_eq!(got[2].received_ms, 1007);
    assert_eq!(
        got[2].payload_hex,
        hex::encode(payload(3, 1002, &three_values(3), &[]))
    );
}

/// A call's outcome counts the rows written per device (in the order of each device's first
/// reading; a device whose readings were all duplicates with 0), and the device counters add
/// exactly those: `readings` is the number of rows stored (docs/decisions.md D17).
pub async fn store_reports_the_rows_written_per_device<B: Backend>() {
    let b = fresh!(B, "store_reports_the_rows_written_per_device");
    let s = b.storage();
    s.add_device(device("a", 1)).await.unwrap();
    s.add_device(device("b", 2)).await.unwrap();

    // One reading three times (as three records of one request carry it): one row.
    let three = vec![reading("a", 1, 1000); 3];
    assert_eq!(s.store_readings(three).await.unwrap(), outcome("a", 1, 2));
    // Interleaved devices; b's message 1 is not a's.
    let out = s
        .store_readings(vec![
            reading("b", 1, 1000),
            reading("a", 1, 1000),
            reading("b", 2, 1001),
            reading("a", 2, 1001),
            reading("b", 1, 1000),
        ])
        .await
        .unwrap();
    let expected = StoreOutcome {
        inserted: 3,
        duplicates: 2,
        per_device: vec![("b".into(), 2), ("a".into(), 1)],
    };
    assert_eq!(out, expected);
    assert_eq!((out.inserted_for("a"), out.inserted_for("c")), (1, 0));
    // Nothing new for "a": listed with 0.
    let out = s
        .store_readings(vec![reading("a", 2, 1001), reading("b", 3, 1002)])
        .await
        .unwrap();
    assert_eq!(out.per_device, vec![("a".into(), 0), ("b".into(), 1)]);

    for (id, rows) in [("a", 2), ("b", 3)] {
        let d = s.device(id.into()).await.unwrap().unwrap();
        assert_eq!(d.readings, rows, "{id}");
        assert_eq!(all_readings(&**s, id).await.len() as u64, rows, "{id}");
    }
    assert_eq!(s.count_readings().await.unwrap(), 5);
}

/// Runs that overlap stored ones, gaps, reversed order, another device in the same call: each
/// (device, message id) stored once, the first version kept.
pub async fn overlapping_and_scattered_ids_are_stored_once<B: Backend>() {
    let b = fresh!(B, "overlapping_and_scattered_ids_are_stored_once");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    s.add_device(device("other", 2)).await.unwrap();
    let batch = |ids: &[u64], extra: &[u8]| -> Vec<NewReading> {
        ids.iter()
            .map(|&m| reading_with("dev", m, 1000 + m, &three_values(m), extra))
            .collect()
    };
    let ids = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<_>>();

    let out = s.store_readings(batch(&ids(10..=19), b"")).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (10, 0));
    // Covers the stored run and extends it on both sides; the stored ones keep their version.
    let out = s
        .store_readings(batch(&ids(5..=25), b"retransmitted"))
        .await
        .unwrap();
    assert_eq!((out.inserted, out.duplicates), (11, 10));
    // Gaps, reversed order, an id inside a stored chunk, another device in the same call.
    let mut mixed = batch(&[40, 3, 12, 31, 30, 2, 41], b"");
    mixed.push(reading("other", 12, 5));
    let out = s.store_readings(mixed).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (7, 1));
    // A call that is all duplicates.
    let mut again = ids(5..=20);
    again.extend([3, 2]);
    let out = s.store_readings(batch(&again, b"")).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 18));

    let got = all_readings(&**s, "dev").await;
    let mut want: Vec<u64> = vec![2, 3];
    want.extend(ids(5..=25));
    want.extend([30, 31, 40, 41]);
    assert_eq!(got.iter().map(|r| r.msg_id).collect::<Vec<_>>(), want);
    for r in &got {
        let retransmitted = !(10..=19).contains(&r.msg_id) && (5..=25).contains(&r.msg_id);
        let extra: &[u8] = if retransmitted { b"retransmitted" } else { b"" };
        let want = payload(r.msg_id, 1000 + r.msg_id, &three_values(r.msg_id), extra);
        assert_eq!(r.payload_hex, hex::encode(want), "msg {}", r.msg_id);
    }
    assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 27);
    assert_eq!(s.count_readings().await.unwrap(), 28);
}

/// Time queries with limits return exactly what sorting every reading would (device times
/// not monotonic, repeated, spread over hours).
pub async fn time_queries_match_a_full_sort<B: Backend>() {
    let b = fresh!(B, "time_queries_match_a_full_sort");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    // xorshift, fixed seed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut model: Vec<(u64, u64)> = Vec::new(); // (device time, msg id)
    let mut t: u64 = 1_700_000_000_000;
    let mut msg = 0;
    for call in 0..12 {
        let n = if call == 0 { 2500 } else { 1 + next() % 400 };
        let mut batch = Vec::new();
        for _ in 0..n {
            msg += 1;
            t = t + next() % 9_000 - 3_000 + u64::from(next() % 50 == 0) * 700_000;
            model.push((t, msg));
            batch.push(reading("dev", msg, t));
        }
        msg += next() % 3; // sometimes a gap
        s.store_readings(batch).await.unwrap();
    }
    model.sort();
    let (lo, hi) = (model[0].0, model[model.len() - 1].0);
    for i in 0..60 {
        let a = lo - 1000 + next() % (hi - lo + 2000);
        let b = a + next() % (if i % 3 == 0 { 20_000_000 } else { 900_000 });
        let from = (i % 5 != 0).then_some(a);
        let to = (i % 7 != 0).then_some(b);
        let limit = match i % 4 {
            0 => None,
            1 => Some(1),
            2 => Some((next() % 300) as u32),
            _ => Some(100_000),
        };
        let want: Vec<(u64, u64)> = model
            .iter()
            .filter(|(t, _)| from.is_none_or(|f| *t >= f) && to.is_none_or(|e| *t < e))
            .take(limit.unwrap_or(1000) as usize)
            .copied()
            .collect();
        let got: Vec<(u64, u64)> = s
            .readings(ReadingQuery {
                device_id: "dev".into(),
                from_ms: from,
                to_ms: to,
                limit,
            })
            .await
            .unwrap()
            .iter()
            .map(|r| (r.device_time_ms, r.msg_id))
            .collect();
        assert_eq!(
            got, want,
            "query {i}: from {from:?} to {to:?} limit {limit:?}"
        );
    }
}

pub async fn store_refuses_unknown_devices_and_ids_out_of_range<B: Backend>() {
    let b = fresh!(B, "store_refuses_unknown_devices_and_ids_out_of_range");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();

    if B::CHECKS_DEVICES {
        // The call is all-or-nothing: the known device's reading is not stored either.
        let err = s
            .store_readings(vec![reading("dev", 1, 1), reading("ghost", 1, 1)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unknown device"), "{err}");
        assert_eq!(s.count_readings().await.unwrap(), 0);
    }

    // Ids above 2^62 - 1 cannot be encoded (the payload disagrees with the reading).
    let err = s
        .store_readings(vec![reading("dev", 2, 1), reading("dev", u64::MAX, 1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("payload"), "{err}");
    assert_eq!(s.count_readings().await.unwrap(), 0);

    // The largest id and time the encoding has are fine.
    let out = s
        .store_readings(vec![reading("dev", VARINT_MAX, VARINT_MAX - 5)])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    let got = all_readings(&**s, "dev").await;
    assert_eq!(
        (got[0].msg_id, got[0].device_time_ms, got[0].received_ms),
        (VARINT_MAX, VARINT_MAX - 5, VARINT_MAX)
    );
}

/// A payload is stored instead of the values: one that does not decode, holds more than one
/// reading, or names another message or time is refused, and the whole call with it.
pub async fn store_refuses_payloads_that_are_not_the_reading<B: Backend>() {
    let b = fresh!(B, "store_refuses_payloads_that_are_not_the_reading");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    let good = reading("dev", 1, 10);
    let mut two = payload(2, 20, &[], &[]);
    two.extend(payload(3, 30, &[], &[]));
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good.payload[..good.payload.len() - 1].to_vec()),
        ("trailing bytes", [&good.payload[..], &[0]].concat()),
        ("two readings", two),
        ("another message", payload(9, 20, &[], &[])),
        ("another time", payload(2, 21, &[], &[])),
        ("33 values", {
            let mut p = payload(2, 20, &[], &[]);
            p[2] = 33;
            p
        }),
    ];
    for (what, p) in bad {
        let r = NewReading {
            payload: p.into(),
            ..reading("dev", 2, 20)
        };
        let err = s
            .store_readings(vec![good.clone(), r])
            .await
            .expect_err(what);
        assert!(err.to_string().contains("payload"), "{what}: {err}");
    }
    assert_eq!(s.count_readings().await.unwrap(), 0);
    assert!(all_readings(&**s, "dev").await.is_empty());
}

pub async fn concurrent_stores_all_committed_and_counted<B: Backend>() {
    let b = fresh!(B, "concurrent_stores_all_committed_and_counted");
    let s = b.storage();
    s.add_device(device("a", 1)).await.unwrap();
    s.add_device(device("b", 2)).await.unwrap();

    // 50 tasks x 200 readings in calls of 20; task t covers ids [100t, 100t + 200) of
    // device "a" (half overlaps the next task) and the same ids of "b" on odd tasks.
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let mut total = StoreOutcome::default();
            let dev = if t % 2 == 1 { "b" } else { "a" };
            for call in 0..10u64 {
                let batch: Vec<_> = (0..20)
                    .map(|i| {
                        let id = t * 100 + call * 20 + i;
                        reading(if i % 2 == 0 { "a" } else { dev }, id, id)
                    })
                    .collect();
                let out = s.store_readings(batch).await.unwrap();
                total.inserted += out.inserted;
                total.duplicates += out.duplicates;
            }
            total
        }));
    }
    let mut total = StoreOutcome::default();
    for t in tasks {
        let out = t.await.unwrap();
        total.inserted += out.inserted;
        total.duplicates += out.duplicates;
    }
    s.flush().await.unwrap();

    // Expected distinct keys, computed independently.
    let mut keys = HashSet::new();
    for t in 0..50u64 {
        let dev = if t % 2 == 1 { "b" } else { "a" };
        for id in t * 100..t * 100 + 200 {
            let d = if (id - t * 100) % 20 % 2 == 0 {
                "a"
            } else {
                dev
            };
            keys.insert((d, id));
        }
    }
    assert_eq!(total.inserted, keys.len());
    assert_eq!(total.inserted + total.duplicates, 50 * 200);
    assert_eq!(s.count_readings().await.unwrap() as usize, keys.len());
    for d in s.devices().await.unwrap() {
        let n = keys.iter().filter(|(k, _)| *k == d.id).count();
        assert_eq!(d.readings as usize, n, "device {}", d.id);
        let stored = s
            .readings(ReadingQuery {
                device_id: d.id.clone(),
                limit: Some(100_000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), n, "device {}", d.id);
    }
}

pub async fn readings_by_time_range_and_limit<B: Backend>() {
    let b = fresh!(B, "readings_by_time_range_and_limit");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    s.add_device(device("other", 2)).await.unwrap();
    // Stored out of time order; two readings share a time.
    let mut batch: Vec<_> = (0..1500u64)
        .rev()
        .map(|i| reading("dev", i, 10 * i))
        .collect();
    batch.push(reading("dev", 5000, 100));
    batch.push(reading("other", 1, 100));
    s.store_readings(batch).await.unwrap();

    let q = |from_ms, to_ms, limit| ReadingQuery {
        device_id: "dev".into(),
        from_ms,
        to_ms,
        limit,
    };
    let ids = |v: Vec<StoredReading>| v.into_iter().map(|r| r.msg_id).collect::<Vec<_>>();

    // [100, 150): times 100 (ids 10 and 5000), 110, 120, 130, 140; oldest first.
    let got = ids(s.readings(q(Some(100), Some(150), None)).await.unwrap());
    assert_eq!(got, [10, 5000, 11, 12, 13, 14]);
    let got = ids(s.readings(q(Some(100), Some(150), Some(3))).await.unwrap());
    assert_eq!(got, [10, 5000, 11]);
    let empty = [
        q(Some(100), Some(150), Some(0)),
        q(Some(150), Some(100), None),
        q(None, Some(0), None),
        q(Some(u64::MAX), None, None),
    ];
    for query in empty {
        assert!(
            s.readings(query.clone()).await.unwrap().is_empty(),
            "{query:?}"
        );
    }
    let got = ids(s
        .readings(q(Some(14_980), Some(u64::MAX), None))
        .await
        .unwrap());
    assert_eq!(got, [1498, 1499]);

    // Default limit 1000.
    assert_eq!(s.readings(q(None, None, None)).await.unwrap().len(), 1000);
    assert_eq!(
        s.readings(q(None, None, Some(u32::MAX)))
            .await
            .unwrap()
            .len(),
        1501
    );

    assert_eq!(ids(all_readings(&**s, "other").await), [1]);
    assert!(all_readings(&**s, "ghost").await.is_empty());
}

/// The payload comes back byte for byte, as lowercase hex (4,096 extra bytes: the largest).
pub async fn long_payloads_round_trip_as_lowercase_hex<B: Backend>() {
    let b = fresh!(B, "long_payloads_round_trip_as_lowercase_hex");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    let extra: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let r = reading_with("dev", 1, 10, &three_values(1), &extra);
    let want = hex::encode(&r.payload);
    s.store_readings(vec![r]).await.unwrap();
    let got = all_readings(&**s, "dev").await;
    assert_eq!(got[0].payload_hex, want);
}

/// The values are decoded from the stored payload: every kind's name (`other_<code>` for the
/// unknown ones), NaN and the infinities, order and repeats; in JSON each f32 in its shortest
/// decimal form (21.3, not 21.299999237060547), NaN and infinities as strings.
pub async fn values_are_decoded_from_the_payload<B: Backend>() {
    let b = fresh!(B, "values_are_decoded_from_the_payload");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    let mut values = vec![
        (SensorKind::Temperature, 21.3),
        (SensorKind::Temperature, -12.5),
        (SensorKind::Humidity, f32::NAN),
        (SensorKind::Pressure, f32::INFINITY),
        (SensorKind::AccelX, f32::NEG_INFINITY),
        (SensorKind::Battery, 0.0),
        (SensorKind::Energy, -0.0),
        (SensorKind::Power, f32::MAX),
        (SensorKind::Latitude, f32::MIN_POSITIVE / 4.0),
        (SensorKind::from_code(200), 0.1),
        (SensorKind::from_code(0), 1e-7),
    ];
    values.extend((1..=12).map(|c| (SensorKind::from_code(c), c as f32 + 0.7)));
    assert!(values.len() <= 32);
    let r1 = reading_with("dev", 1, 10, &values, b"app");
    let r2 = reading_with("dev", 2, 20, &[], &[]);
    s.store_readings(vec![r1, r2]).await.unwrap();

    let got = all_readings(&**s, "dev").await;
    assert_eq!(got.len(), 2);
    let want: Vec<(String, f32)> = values
        .iter()
        .map(|(k, v)| (iotseal_storage::sensor_name(*k).into_owned(), *v))
        .collect();
    assert_eq!(got[0].values.len(), want.len());
    for ((gs, gv), (ws, wv)) in got[0].values.iter().zip(&want) {
        assert_eq!(gs, ws);
        assert_eq!(gv.to_bits(), wv.to_bits(), "{gs}: {gv} != {wv}");
    }
    assert_eq!(got[0].values[9].0, "other_200");
    assert_eq!(got[0].values[10].0, "other_0");
    assert!(got[1].values.is_empty());

    // The text the admin API sends (serde_json writes an f32 as the f32's shortest form).
    let text = serde_json::to_string(&got[0]).unwrap();
    for part in [
        r#""msg_id":"1""#,
        r#"["temperature",21.3]"#,
        r#"["humidity","NaN"]"#,
        r#"["pressure","Infinity"]"#,
        r#"["accel_x","-Infinity"]"#,
        r#"["other_200",0.1]"#,
        r#"["other_0",1e-7]"#,
        r#"["temperature",1.7]"#,
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
}

pub async fn touch_and_session_events<B: Backend>() {
    let b = fresh!(B, "touch_and_session_events");
    let s = b.storage();
    s.add_device(device("dev", 1)).await.unwrap();
    s.touch_device("dev".into(), 5000).await.unwrap();
    s.touch_device("dev".into(), 4000).await.unwrap();
    s.touch_device("ghost".into(), 4000).await.unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );
    // Many at once (the sweeper's flush): forward only, unknown ids ignored.
    s.add_device(device("dev2", 2)).await.unwrap();
    s.touch_devices(vec![
        ("dev".into(), 4500),
        ("dev2".into(), 7000),
        ("ghost".into(), 1),
    ])
    .await
    .unwrap();
    s.touch_devices(Vec::new()).await.unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );
    assert_eq!(
        s.device("dev2".into()).await.unwrap().unwrap().last_seen_ms,
        Some(7000)
    );

    for (i, ev) in ["established", "closed"].into_iter().enumerate() {
        s.session_event(SessionEvent {
            at_ms: 100 + i as u64,
            device_id: Some("dev".into()),
            session_id: 7,
            event: ev.into(),
            suite: "x25519mlkem768-ed25519-aes256gcm".into(),
        })
        .await
        .unwrap();
    }
    let refused = SessionEvent {
        at_ms: 200,
        device_id: None,
        session_id: u32::MAX,
        event: "refused:unknown-device".into(),
        suite: String::new(),
    };
    s.session_event(refused.clone()).await.unwrap();
    let got = b.events(10).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], refused);
    assert_eq!(got[2].event, "established");
    assert_eq!(b.events(1).await.len(), 1);
}

/// What was acknowledged is there after a close and reopen (no flush before the close), and
/// reopening changes nothing.
pub async fn data_survives_reopen<B: Backend>() {
    let mut b = fresh!(B, "data_survives_reopen");
    {
        let s = b.storage();
        s.add_device(device("dev", 1)).await.unwrap();
        s.store_readings((0..100).map(|i| reading("dev", i, i)).collect())
            .await
            .unwrap();
    }
    let before = all_readings(&**b.storage(), "dev").await;
    for _ in 0..3 {
        if b.reopen().await.is_none() {
            eprintln!("skipped: this store does not survive being closed");
            return;
        }
        let s = b.storage();
        assert_eq!(s.count_readings().await.unwrap(), 100);
        assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 100);
        assert_eq!(all_readings(&**s, "dev").await, before);
        let out = s.store_readings(vec![reading("dev", 5, 5)]).await.unwrap();
        assert_eq!(out.duplicates, 1);
        s.flush().await.unwrap();
    }
}
