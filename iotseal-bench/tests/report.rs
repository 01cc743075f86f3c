//! `iotseal report` from a fixture directory: every chart is inline SVG in one HTML file and a
//! PNG beside it; the page opens with results, and inputs that are missing are listed once, at
//! its end, under "Not measured in this run".

use std::path::{Path, PathBuf};

use iotseal_bench::matrix::{self, Config};
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
    // The threat-lab table compares both targets, and says what "blocked" means.
    assert!(html.contains("accepted (no sequence numbers)"));
    assert!(html.contains(">blocked means</th>"));
    assert!(html.contains("no replayed message accepted, nothing stored twice"));
    // The chart shows verdicts, not a share of the attacker's packets: a flood is judged by the
    // honest device's traffic.
    let threats = out.charts.iter().find(|c| c.id == "threats").unwrap();
    assert!(!threats.svg.contains("(%)"), "no percentage axis");
    for text in [
        "blocked means",
        "not blocked",
        "does not apply",
        "handshake-flood *",
        "honest devices: 70 requests",
        "refused; 15/15 sessions,",
        "100/100 attempts stopped",
        "100 forged stored",
    ] {
        assert!(threats.svg.contains(text), "{text} in the threat chart");
    }
    assert!(
        threats
            .caption
            .contains("iotseal blocked 3 of 4 applicable attacks")
    );
    assert!(threats.caption.contains("legacy design blocked 2 of 4"));
    assert!(threats.svg.contains("72/72 sessions, 136/136 stored"));
    assert!(html.contains(
        "honest device: sessions 15/15, readings 134/134 stored, worst 3465 ms, 70 requests refused"
    ));
    assert!(html.contains("NOT blocked — 100 forged readings stored; 0/100 attempts stopped"));
    // The page starts with a result and lists nothing as not measured; above the sections,
    // one line per section with its main result.
    assert_first_section_is_a_result(&html);
    let top = html.split("<section").next().unwrap();
    for line in [
        "<a href=\"#handshakes\">Handshakes</a>: the cheapest suite (x25519 / ed25519) costs",
        "<a href=\"#load\">Load</a>: best",
        "<a href=\"#threats\">Threat lab</a>: iotseal blocked 3 of 4 applicable attacks and stored 0",
        "<a href=\"#simulation\">Simulation</a>:",
    ] {
        assert!(top.contains(line), "{line} in {top}");
    }
}

/// The ids of the sections that show results.
const RESULT_SECTIONS: [&str; 9] = [
    "handshakes",
    "records",
    "memory",
    "analysis",
    "latency",
    "load",
    "threats",
    "simulation",
    "series",
];

/// The sections of the page in order: (id, its HTML).
fn sections(html: &str) -> Vec<(String, String)> {
    html.split("<section id=\"")
        .skip(1)
        .map(|s| {
            let id = s.split('"').next().unwrap().to_string();
            let body = s.split("</section>").next().unwrap().to_string();
            (id, body)
        })
        .collect()
}

fn assert_first_section_is_a_result(html: &str) {
    let s = sections(html);
    let (id, body) = s.first().expect("at least one section");
    assert!(RESULT_SECTIONS.contains(&id.as_str()), "first section {id}");
    assert!(
        body.contains("<figure") || body.contains("<table"),
        "the first section ({id}) shows a chart or a table"
    );
    // Nothing before it but the title, the generation note and the navigation.
    let before = html.split("<section").next().unwrap();
    assert!(!before.contains("Not measured in this run"), "{before}");
    assert!(!before.contains("class=\"missing\""), "{before}");
    // Every result section has something to show.
    for (id, body) in &s {
        if id != "not-measured" {
            assert!(
                body.contains("<figure") || body.contains("<table") || body.contains("<p>"),
                "{id} is empty"
            );
        }
    }
}

/// The "Not measured in this run" list: once, last, naming each of `what`.
fn assert_listed_once_at_the_end(html: &str, what: &[&str]) {
    assert_eq!(html.matches("Not measured in this run").count(), 1);
    let s = sections(html);
    let (id, body) = s.last().unwrap();
    assert_eq!(id, "not-measured", "the list is the last section");
    assert_eq!(
        s.iter().filter(|(i, _)| i == "not-measured").count(),
        1,
        "listed once"
    );
    for w in what {
        assert_eq!(body.matches(w).count(), 1, "{w} listed once in {body}");
    }
    assert_eq!(body.matches("<li>").count(), what.len(), "{body}");
}

#[test]
fn missing_inputs_are_listed_once_at_the_end() {
    let empty = out_dir("report-empty-in");
    let input = ReportInput::load_dir(&empty).unwrap();
    let dir = out_dir("report-empty");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(out.charts.is_empty());
    // No empty sections: the only one is the list.
    let s = sections(&html);
    assert_eq!(
        s.len(),
        1,
        "{:?}",
        s.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    assert_listed_once_at_the_end(
        &html,
        &[
            "crypto benchmarks",
            "gateway load test",
            "threat lab",
            "device simulation",
            "sensor time series",
        ],
    );
    // Each with the command that measures it.
    for how in [
        "<code>iotseal bench crypto --out DIR</code>",
        "<code>iotseal bench load --json</code>",
        "<code>iotseal attack --json &gt; DIR/attacks.json</code>",
        "<code>iotseal simulate --json &gt; DIR/simulation.json</code>",
        "<code>iotseal report --db gateway.db</code>",
    ] {
        assert!(html.contains(how), "{how}");
    }
    for section in [
        "Handshake cost per suite",
        "Memory per session",
        "Ciphertext analysis",
        "Latency distributions",
    ] {
        assert!(
            html.to_lowercase().contains(&section.to_lowercase()),
            "{section}"
        );
    }
    assert_eq!(out.missing.len(), 5, "{:?}", out.missing);
}

#[test]
fn a_demo_report_opens_with_results() {
    // What `iotseal demo` writes before its crypto pass existed: simulation and threat lab,
    // no crypto, no load. The page must open with a result, not with boxes saying what is
    // missing.
    let d = out_dir("report-demo-in");
    let fx = fixture();
    for f in ["attacks.json", "simulation.json"] {
        std::fs::copy(fx.join(f), d.join(f)).unwrap();
    }
    let mut input = ReportInput::load_dir(&d).unwrap();
    input.series = Some(series());
    let dir = out_dir("report-demo");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert_first_section_is_a_result(&html);
    assert_eq!(sections(&html)[0].0, "threats");
    assert_listed_once_at_the_end(&html, &["crypto benchmarks", "gateway load test"]);
    assert_eq!(out.missing.len(), 2);
    // The navigation links only to what is there.
    assert!(!html.contains("href=\"#handshakes\""));
    assert!(html.contains("href=\"#threats\""));
    assert!(html.contains("href=\"#not-measured\""));
}

#[test]
fn the_demo_crypto_pass_fills_the_crypto_sections() {
    let t = std::time::Instant::now();
    let c = matrix::run(&Config::demo(), &mut |_| {}).unwrap();
    println!("demo crypto pass: {:.2} s", t.elapsed().as_secs_f64());
    // Every provider and suite, no memory estimate.
    assert_eq!(c.handshakes.len(), 2 * 4 * 4);
    assert!(c.records.iter().all(|r| r.session_rss_bytes.is_none()));
    let input = ReportInput {
        crypto: Some(c),
        ..ReportInput::default()
    };
    let dir = out_dir("report-demo-crypto");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert_first_section_is_a_result(&html);
    let ids: Vec<String> = sections(&html).into_iter().map(|s| s.0).collect();
    assert_eq!(
        ids,
        [
            "handshakes",
            "records",
            "analysis",
            "latency",
            "not-measured"
        ]
    );
    // Memory is listed at the end with why, once.
    assert_listed_once_at_the_end(
        &html,
        &[
            "memory per session",
            "gateway load test",
            "threat lab",
            "device simulation",
            "sensor time series",
        ],
    );
    assert!(html.contains("it needs a process of its own"));
    assert!(html.contains("demo pass"));
    assert!(html.contains(
        "<a href=\"#handshakes\">Handshakes</a>: the default suite (x25519mlkem768 / ed25519) costs"
    ));
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
    assert_eq!(a.iotseal.len(), 5);
    let legacy = a.legacy.unwrap();
    assert_eq!(legacy.len(), 4);
    assert_eq!(a.iotseal[0].blocked, 100);
    assert_eq!(a.iotseal[0].stopped, Some(true));
    assert_eq!(
        a.iotseal[0].criterion,
        "no replayed message accepted, nothing stored twice"
    );
    assert!(!a.iotseal[3].applicable);
    assert_eq!(a.iotseal[3].verdict(), None);
    assert_eq!(legacy[0].stopped, Some(false));
    assert_eq!(legacy[0].blocked, 0);
    // The flood: judged by the honest devices' traffic, not by the share of the flood's own
    // hellos refused: 70 of their requests were refused, so it is not blocked (as measured).
    let flood = &a.iotseal[4];
    assert!(flood.judged_by_service());
    assert_eq!(flood.verdict(), Some(false));
    let s = flood.service.as_ref().unwrap();
    assert_eq!((s.handshakes_completed, s.requests_refused), (15, 70));
    assert_eq!(flood.failed_checks.len(), 1);
    assert_eq!(legacy[3].verdict(), Some(true));
}

#[test]
fn verdicts_from_counts_only() {
    // Inputs without the lab's verdict: blocked when every attempt was and nothing was forged.
    let d = out_dir("report-counts-in");
    std::fs::write(
        d.join("attacks.json"),
        r#"{"iotseal": [{"name":"a","attempts":5,"blocked":5,"stored_forgeries":0},
                        {"name":"b","attempts":5,"blocked":4,"stored_forgeries":0},
                        {"name":"c","attempts":0,"blocked":0}]}"#,
    )
    .unwrap();
    let a = ReportInput::load_dir(&d).unwrap().attacks.unwrap();
    let v: Vec<_> = a.iotseal.iter().map(|x| x.verdict()).collect();
    assert_eq!(v, [Some(true), Some(false), None]);
    assert!(
        a.iotseal[0]
            .criterion_or_default()
            .contains("from the counts")
    );
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
    assert!(
        html.contains("<td class=\"l w\">blocked — 24/24 attempts stopped; answers to the replays")
    );
}

#[test]
fn a_target_served_but_not_blocked_says_what_failed() {
    // The legacy server serves an honest device while slow connections are open, but never
    // cuts them off: the chart says which condition failed, not only the honest traffic.
    let d = out_dir("report-slow-in");
    let svc = r#"{"handshakes_attempted":35,"handshakes_completed":35,"readings_sent":70,"readings_stored":70,"worst_latency_ms":6.0}"#;
    std::fs::write(
        d.join("attacks.json"),
        format!(
            r#"[{{"name":"slow-client","target":"iotseal","attempts":9,"blocked_attempts":9,"blocked":true,"judged_by":"service","service":{svc},"criterion":"served; cut off"}},
               {{"name":"slow-client","target":"legacy","attempts":9,"blocked_attempts":0,"blocked":false,"judged_by":"service","service":{svc},"criterion":"served; cut off",
                 "checks":[{{"what":"every slow connection was cut off in time (0 of 9)","held":false}},{{"what":"an honest device was served","held":true}}]}}]"#
        ),
    )
    .unwrap();
    let input = ReportInput::load_dir(&d).unwrap();
    let l = &input.attacks.as_ref().unwrap().legacy.as_ref().unwrap()[0];
    assert_eq!(
        l.failed_checks,
        ["every slow connection was cut off in time (0 of 9)"]
    );
    let dir = out_dir("report-slow");
    let out = write_report(&input, &dir.join("r.html")).unwrap();
    let svg = &out.charts.iter().find(|c| c.id == "threats").unwrap().svg;
    assert!(svg.contains("failed: every slow connection"), "{svg}");
    assert!(
        svg.contains("35/35 sessions, 70/70 stored"),
        "iotseal's cell"
    );
    assert_eq!(
        svg.matches("35/35 sessions").count(),
        1,
        "not in legacy's cell"
    );
}
