//! `iotseal report`: one self-contained HTML file (inline SVG charts, PNG copies beside it)
//! from a directory of measurements and, optionally, a gateway database for the sensor time
//! series. The page is built by [`iotseal_bench::report`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use iotseal_bench::report::{ReportInput, SensorSeries, write_report};
use iotseal_gateway::storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_gateway::storage::{ReadingQuery, Storage};
use iotseal_proto::reading::SensorKind;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory with the measurements: crypto.json (`bench crypto --out`), load.json,
    /// attacks.json, simulation.json; each optional.
    #[arg(long, value_name = "DIR")]
    input: PathBuf,
    /// The HTML file to write; each chart is also written as `<name>-<chart>.png` beside it.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
    /// A gateway's SQLite database, for the time series of the stored sensor readings.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Most devices read from the database (those with the most readings).
    #[arg(long, default_value_t = 8)]
    max_devices: usize,
    /// Most readings per device (the oldest first).
    #[arg(long, default_value_t = 5000)]
    max_readings: u32,
}

pub(crate) fn run(a: Args) -> Result<()> {
    if !a.input.is_dir() {
        bail!("{} is not a directory", a.input.display());
    }
    let mut input = ReportInput::load_dir(&a.input)?;
    if let Some(db) = &a.db {
        input.series = Some(read_series(db, a.max_devices, a.max_readings)?);
        input.sources.push(db.display().to_string());
    }
    let out = write_report(&input, &a.out)?;
    println!(
        "wrote {} ({} charts, PNGs beside it)",
        out.html.display(),
        out.charts.len()
    );
    if !out.missing.is_empty() {
        println!("not measured in this run: {}", out.missing.join(", "));
    }
    Ok(())
}

/// The unit of a stored sensor name (`temperature` → `°C`).
fn unit_of(sensor: &str) -> &'static str {
    (1..=u8::MAX)
        .map(SensorKind::from_code)
        .find(|k| !matches!(k, SensorKind::Other(_)) && k.name() == sensor)
        .map_or("", |k| k.unit())
}

/// Reads the sensor time series of up to `max_devices` devices from a gateway database.
pub(crate) fn read_series(
    db: &Path,
    max_devices: usize,
    max_readings: u32,
) -> Result<Vec<SensorSeries>> {
    if !db.is_file() {
        bail!("{}: no such database", db.display());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let storage = SqliteStorage::open(db, SqliteOptions::default())
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("{}", db.display()))?;
        let mut devices = storage.devices().await.map_err(|e| anyhow!("{e}"))?;
        devices.retain(|d| d.readings > 0);
        devices.sort_by(|a, b| b.readings.cmp(&a.readings).then(a.id.cmp(&b.id)));
        devices.truncate(max_devices);
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = Vec::new();
        for d in devices {
            let readings = storage
                .readings(ReadingQuery {
                    device_id: d.id.clone(),
                    from_ms: None,
                    to_ms: None,
                    limit: Some(max_readings),
                })
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let mut by_sensor: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
            for r in readings {
                for (sensor, value) in r.values {
                    by_sensor
                        .entry(sensor)
                        .or_default()
                        .push((r.device_time_ms, f64::from(value)));
                }
            }
            for (sensor, mut points) in by_sensor {
                points.sort_by_key(|p| p.0);
                out.push(SensorSeries {
                    device: d.id.clone(),
                    unit: unit_of(&sensor).to_string(),
                    sensor,
                    points,
                });
            }
        }
        storage.flush().await.map_err(|e| anyhow!("{e}"))?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotseal_gateway::storage::{DeviceRecord, NewReading};
    use iotseal_proto::SigAlg;

    #[test]
    fn units_by_sensor_name() {
        assert_eq!(unit_of("temperature"), "°C");
        assert_eq!(unit_of("humidity"), "%");
        assert_eq!(unit_of("nonsense"), "");
    }

    #[test]
    fn series_from_a_gateway_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gateway.db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = SqliteStorage::open(&db, SqliteOptions::default()).unwrap();
            for (i, id) in ["dev-a", "dev-b", "dev-empty"].iter().enumerate() {
                s.add_device(DeviceRecord {
                    id: id.to_string(),
                    alg: SigAlg::Ed25519,
                    public_key_hex: format!("{i:064x}"),
                    revoked: false,
                    created_ms: 0,
                    last_seen_ms: None,
                    readings: 0,
                })
                .await
                .unwrap();
            }
            let readings = ["dev-a", "dev-b"]
                .iter()
                .flat_map(|id| {
                    (0..10u64).map(move |m| {
                        // Storage keeps the payload and decodes the values from it (D37).
                        let mut payload = Vec::new();
                        iotseal_proto::reading::Reading {
                            msg_id: m,
                            time_ms: 1_000 * m,
                            values: vec![
                                (SensorKind::Temperature, 20.0 + m as f32),
                                (SensorKind::Humidity, 40.0),
                            ],
                            extra: Vec::new(),
                        }
                        .encode(&mut payload);
                        NewReading {
                            device_id: (*id).into(),
                            msg_id: m,
                            device_time_ms: 1_000 * m,
                            received_ms: 1_000 * m + 5,
                            payload: payload.into(),
                        }
                    })
                })
                .collect();
            s.store_readings(readings).await.unwrap();
            s.flush().await.unwrap();
        });
        let series = read_series(&db, 8, 100).unwrap();
        assert_eq!(series.len(), 4, "2 devices × 2 sensors");
        let t = series
            .iter()
            .find(|s| s.device == "dev-a" && s.sensor == "temperature")
            .unwrap();
        assert_eq!(t.unit, "°C");
        assert_eq!(t.points.len(), 10);
        assert_eq!(t.points[3], (3000, 23.0));
        // At most one device: the first by reading count, then by id.
        let one = read_series(&db, 1, 100).unwrap();
        assert!(one.iter().all(|s| s.device == "dev-a"));
        assert!(read_series(&dir.path().join("missing.db"), 8, 100).is_err());
    }
}
