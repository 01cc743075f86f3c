//! `iotseal report` from a fixture directory: every chart is inline SVG in one HTML file and a
//! PNG beside it; missing inputs are shown as "not measured in this run".

use std::path::{Path, PathBuf};

use iotseal_bench::report::{ReportInput, SensorSeries, write_report};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report-in")
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn series() -> Vec<SensorSeries> {
    let t0 = 1_767_225_600_000u64;
    (0..3)
        .flat_map(|d| {
            [("temperature", "°C", 20.0), ("humidity", "%", 45.0)]
                .into_iter()
                .map(move |(sensor, unit, base)| SensorSeries {
                    device: format!("sim-greenhouse-{d}"),
                    sensor: sensor.into(),
                    unit: unit.into(),
                    points: (0..60)
                        .map(|i| {
                            let t = t0 + i * 1000 + d * 170;
                            (t, base + d as f64 + (i as f64 / 9.0).sin())
                        })
                        .collect(),
                })
        })
        .collect()
}

#[test]
fn report_from_fixture_has_every_chart_as_svg_and_png() {
    let mut input = ReportInput::load_dir(&fixture()).unwrap();
    assert!(input.crypto.is_some() && input.load.is_some());
    assert!(input.attacks.is_some() && input.simulation.is_some());
    assert_eq!(input.sources.len(), 4);
    input.series = Some(series());
    let dir = out_dir("report-full");
    let out = write_report(&input, &dir.join("report.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();

    let ids: Vec<&str> = out.charts.iter().map(|c| c.id.as_str()).collect();
    for id in [
        "handshake-aws-lc",
        "handshake-bytes",
        "throughput-seal",
        "throughput-open",
        "overhead",
        "memory",
        "entropy",
        "bitflip",
        "cdf-handshake-device",
        "cdf-handshake-gateway",
        "cdf-record",
        "load-throughput",
        "load-latency",
        "threats",
        "simulation-latency",
        "series-humidity",
        "series-temperature",
    ] {
        assert!(ids.contains(&id), "no chart {id} in {ids:?}");
    }
    // One inline SVG per chart, each inside its figure with a title and a caption.
    assert_eq!(html.matches("<svg").count(), out.charts.len());
    for c in &out.charts {
        let fig = format!("<figure id=\"chart-{}\"><svg", c.id);
        assert!(html.contains(&fig), "{fig}");
        assert!(!c.caption.is_empty() && !c.title.is_empty());
        let png = std::fs::read(&c.png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", c.png.display());
        assert!(png.len() > 5_000, "{} is nearly empty", c.png.display());
        assert_eq!(c.png.parent().unwrap(), dir);
    }
    assert!(out.missing.is_empty(), "{:?}", out.missing);
    assert!(!html.contains("Not measured in this run"));
    // Self-contained: no scripts, stylesheets or images from anywhere (the only URLs are
    // the SVG namespace names).
    for bad in ["<script", "<link", "<img", "src=", "href=\"http", "url("] {
        assert!(!html.contains(bad), "{bad}");
    }
    // Axis labels with units.
    assert!(html.contains("CPU time per handshake (µs"));
    assert!(html.contains("throughput (MB/s"));
    // The threat-lab table compares both targets.
    assert!(html.contains("accepted (no sequence numbers)"));
}

#[test]
fn missing_inputs_are_said_not_omitted() {
    let empty = out_dir("report-empty-in");
    let input = ReportInput::load_dir(&empty).unwrap();
    let dir = out_dir("report-empty");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(out.charts.is_empty());
    assert_eq!(
        html.matches("Not measured in this run").count(),
        out.missing.len()
    );
    for section in [
        "Handshake cost per suite",
        "Memory per session",
        "Ciphertext analysis",
        "Latency distributions",
        "Gateway load test",
        "Threat lab",
        "Device simulation",
        "Simulated sensor data",
    ] {
        assert!(html.contains(section), "{section}");
    }
    assert_eq!(out.missing.len(), 9);
}

#[test]
fn malformed_input_is_an_error() {
    let d = out_dir("report-bad-in");
    std::fs::write(d.join("load.json"), "{not json").unwrap();
    assert!(ReportInput::load_dir(&d).is_err());
}

#[test]
fn attacks_by_target_with_counts() {
    let d = out_dir("report-flat-in");
    std::fs::write(
        d.join("attacks.json"),
        r#"{"iotseal": [{"name":"replay","attempts":5,"blocked":5,"reason":"Replay","stored_forgeries":0}],
            "legacy": [{"name":"replay","attempts":5,"blocked":0,"reason":"accepted","stored_forgeries":5}]}"#,
    )
    .unwrap();
    let input = ReportInput::load_dir(&d).unwrap();
    let a = input.attacks.unwrap();
    assert_eq!(a.iotseal.len(), 1);
    assert_eq!(a.iotseal[0].blocked, 5);
    assert_eq!(a.legacy.unwrap()[0].stored_forgeries, 5);
}

#[test]
fn attacks_as_iotseal_attack_prints_them() {
    // The fixture: two `iotseal attack --json` outputs (iotseal, then legacy) one after the other.
    let a = ReportInput::load_dir(&fixture()).unwrap().attacks.unwrap();
    assert_eq!(a.iotseal.len(), 4);
    let legacy = a.legacy.unwrap();
    assert_eq!(legacy.len(), 3);
    assert_eq!(a.iotseal[0].blocked, 100);
    assert_eq!(a.iotseal[0].stopped, Some(true));
    assert!(!a.iotseal[3].applicable);
    assert_eq!(legacy[0].stopped, Some(false));
    assert_eq!(legacy[0].blocked, 0);
}

#[test]
fn load_in_every_documented_shape() {
    let one = r#"{"mode":"sealed","readings_per_s":10.0,"connections":8,"batch":1}"#;
    let shapes = [
        one.to_string(),
        format!("[{one},{one}]"),
        format!("{{\"runs\":[{one}]}}"),
        format!("{one}\n{one}\n"),
        format!(
            "{{\"label\":\"gateway b1 c8\",\"report\":{one}}}\n{{\"label\":\"x\",\"report\":{one}}}"
        ),
    ];
    for (i, text) in shapes.iter().enumerate() {
        let d = out_dir(&format!("report-load-{i}"));
        std::fs::write(d.join("load.json"), text).unwrap();
        let runs = ReportInput::load_dir(&d).unwrap().load.unwrap();
        assert!(!runs.is_empty(), "{text}");
        assert_eq!(runs[0].readings_per_s, Some(10.0));
        if i == 4 {
            assert_eq!(runs[0].label.as_deref(), Some("gateway b1 c8"));
        }
    }
}

#[test]
fn load_table_has_a_transport_column() {
    let d = out_dir("report-load-transport-in");
    std::fs::write(
        d.join("load.json"),
        r#"[{"mode":"sealed","transport":"http","readings_per_s":900.0,"connections":8,"batch":1},
            {"mode":"sealed","transport":"mqtt","readings_per_s":300.0,"connections":8,"batch":1},
            {"mode":"sealed","readings_per_s":800.0,"connections":8,"batch":1}]"#,
    )
    .unwrap();
    let input = ReportInput::load_dir(&d).unwrap();
    let runs = input.load.as_ref().unwrap();
    assert_eq!(runs[1].transport(), Some("mqtt".into()));
    // Runs recorded before the transport existed were HTTPS.
    assert_eq!(runs[2].transport(), Some("http".into()));
    let dir = out_dir("report-load-transport");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(html.contains(">transport</th>"), "transport column");
    assert!(html.contains("<td class=\"l\">mqtt</td>"), "an mqtt row");
    assert!(
        html.contains("sealed mqtt 8 conn × batch 1"),
        "run named by transport"
    );
}

#[test]
fn mqtt_attacks_appear_in_the_threat_lab_table() {
    // `iotseal attack --json` and `iotseal attack --mqtt --json` concatenated, plus the legacy
    // target (which has no MQTT binding).
    let d = out_dir("report-mqtt-attacks-in");
    let http = r#"[{"name":"replay-immediate","target":"iotseal","attempts":24,"blocked_attempts":24,"blocked":true,"applicable":true,"reason":"refusals at the gateway: replay×16","stored_forgeries":0}]"#;
    let mqtt = r#"[{"name":"mqtt-replay","target":"iotseal","attempts":24,"blocked_attempts":24,"blocked":true,"applicable":true,"reason":"answers to the replays: refused Replay×8","stored_forgeries":0}]"#;
    let legacy = r#"[{"name":"replay-immediate","target":"legacy","attempts":24,"blocked_attempts":0,"blocked":false,"applicable":true,"reason":"stored","stored_forgeries":12}]"#;
    std::fs::write(
        d.join("attacks.json"),
        format!("{http}\n{mqtt}\n{legacy}\n"),
    )
    .unwrap();
    let input = ReportInput::load_dir(&d).unwrap();
    let a = input.attacks.as_ref().unwrap();
    assert_eq!(a.iotseal.len(), 2);
    assert_eq!(a.iotseal[1].name, "mqtt-replay");
    let dir = out_dir("report-mqtt-attacks");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(html.contains("mqtt-replay"));
    assert!(html.contains("24/24 — stopped"));
}
