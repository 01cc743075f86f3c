//! Storage write throughput, without HTTP, TLS or the protocol: `C` concurrent callers each
//! store batches of `B` readings (three values each, as the simulator's weather sensor) in a
//! loop for `D` seconds, through the same `Storage` trait the gateway uses.
//!
//! ```sh
//! cargo run --release -p iotseal-storage --example storage_throughput -- \
//!     [sqlite|sqlite-normal|memory] [callers=64] [batch=100] [seconds=5]
//! ```
//!
//! Prints one line: backend, callers, batch, readings/s, store calls/s, and the median and
//! p99 latency of a call (ms). Used for docs/performance.md (where the write path's time goes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iotseal_proto::SigAlg;
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_storage::memory::MemoryStorage;
use iotseal_storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_storage::{DeviceRecord, NewReading, Storage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().map_or("sqlite", String::as_str).to_string();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let callers = num(1, 64);
    let batch = num(2, 100);
    let secs = num(3, 5);

    let dir = tempfile::tempdir()?;
    let storage: Arc<dyn Storage> = match backend.as_str() {
        "sqlite" | "sqlite-normal" => Arc::new(SqliteStorage::open(
            &dir.path().join("bench.db"),
            SqliteOptions {
                synchronous_full: backend == "sqlite",
                ..Default::default()
            },
        )?),
        "memory" => Arc::new(MemoryStorage::default()),
        other => return Err(format!("unknown backend {other:?}").into()),
    };
    for c in 0..callers {
        storage
            .add_device(DeviceRecord {
                id: format!("dev-{c:05}"),
                alg: SigAlg::Ed25519,
                public_key_hex: format!("{:064x}", c + 1),
                revoked: false,
                created_ms: 1,
                last_seen_ms: None,
                readings: 0,
            })
            .await?;
    }

    let stored = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..callers {
        let storage = storage.clone();
        let stored = stored.clone();
        tasks.push(tokio::spawn(async move {
            let device_id: Arc<str> = format!("dev-{c:05}").into();
            let mut lat = Vec::new();
            let mut msg = 0u64;
            while Instant::now() < deadline {
                let readings = (0..batch)
                    .map(|_| {
                        msg += 1;
                        weather(&device_id, msg)
                    })
                    .collect();
                let t0 = Instant::now();
                let out = storage.store_readings(readings).await.expect("store");
                lat.push(t0.elapsed());
                stored.fetch_add(out.inserted as u64, Ordering::Relaxed);
            }
            lat
        }));
    }
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let n = stored.load(Ordering::Relaxed);
    assert_eq!(
        storage.count_readings().await?,
        n,
        "every inserted reading is counted"
    );
    println!(
        "{backend} callers={callers} batch={batch} readings/s={:.0} calls/s={:.0} p50_ms={:.2} p99_ms={:.2}",
        n as f64 / elapsed,
        lat.len() as f64 / elapsed,
        q(0.5),
        q(0.99)
    );
    Ok(())
}

/// A weather sensor's reading (three values), as the gateway builds it from a record.
fn weather(device_id: &Arc<str>, msg: u64) -> NewReading {
    let time = 1_700_000_000_000 + msg * 1000;
    let r = Reading {
        msg_id: msg,
        time_ms: time,
        values: vec![
            (SensorKind::Temperature, 21.5 + (msg % 7) as f32),
            (SensorKind::Humidity, 40.25),
            (SensorKind::Pressure, 1013.2),
        ],
        extra: Vec::new(),
    };
    let mut payload = Vec::new();
    r.encode(&mut payload);
    NewReading {
        device_id: device_id.clone(),
        msg_id: msg,
        device_time_ms: time,
        received_ms: time,
        payload: payload.into(),
    }
}
