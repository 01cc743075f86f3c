//! On-disk size of a reading in the SQLite backend: stores `N` weather readings (three values,
//! as the simulator's sensor; a 29-byte payload) from 10 devices, in calls of `B` readings,
//! closes the storage (the inbox merged, the WAL checkpointed into the file) and prints the
//! file's size per reading. For docs/decisions.md D37 (before and after the payload and the
//! values were stored once, as bytes).
//!
//! ```sh
//! cargo run --release -p iotseal-storage --example bytes_per_reading -- [N=20000] [B=100]
//! ```

use std::sync::Arc;

use iotseal_proto::SigAlg;
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_storage::{DeviceRecord, NewReading, Storage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(20_000);
    let batch = args.get(1).copied().unwrap_or(100).max(1);
    let devices = 10u64;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("size.db");
    {
        let s = SqliteStorage::open(&path, SqliteOptions::default())?;
        for d in 0..devices {
            s.add_device(DeviceRecord {
                id: format!("sensor-{d:04}"),
                alg: SigAlg::Ed25519,
                public_key_hex: format!("{:064x}", d + 1),
                revoked: false,
                created_ms: 1,
                last_seen_ms: None,
                readings: 0,
            })
            .await?;
        }
        let empty = std::fs::metadata(&path)?.len();
        let per_device = n / devices;
        let mut calls = Vec::new();
        for d in 0..devices {
            let id: Arc<str> = format!("sensor-{d:04}").into();
            let mut call = Vec::new();
            for m in 1..=per_device {
                let time = 1_767_225_600_000 + m * 10_000 + d;
                let r = Reading {
                    msg_id: m,
                    time_ms: time,
                    values: vec![
                        (SensorKind::Temperature, 18.0 + (m % 97) as f32 / 10.0),
                        (SensorKind::Humidity, 40.0 + (m % 13) as f32 * 0.5),
                        (SensorKind::Pressure, 1013.2 - (m % 31) as f32 / 10.0),
                    ],
                    extra: Vec::new(),
                };
                let mut payload = Vec::new();
                r.encode(&mut payload);
                call.push(NewReading {
                    device_id: id.clone(),
                    msg_id: m,
                    device_time_ms: time,
                    received_ms: time + 412,
                    payload: payload.into(),
                });
                if call.len() as u64 == batch {
                    calls.push(std::mem::take(&mut call));
                }
            }
            if !call.is_empty() {
                calls.push(call);
            }
        }
        for c in calls {
            s.store_readings(c).await?;
        }
        s.flush().await?;
        println!("empty file: {empty} B");
    }
    let size = std::fs::metadata(&path)?.len();
    let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    let stored = devices * (n / devices);
    println!(
        "readings={stored} batch={batch} file={size} B wal={wal} B bytes/reading={:.1}",
        (size + wal) as f64 / stored as f64
    );
    Ok(())
}
