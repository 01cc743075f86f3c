//! The dashboard in a real browser: headless Chromium, driven over WebDriver by chromedriver,
//! against a gateway in this process with a simulated fleet sending readings. Checks that the
//! page shows live numbers that change without a reload, draws its charts (rate, latency
//! histogram, bars, one sparkline per sensor), shows junk as refusals as it arrives, shows a
//! hostile device id as text, and that the CSP blocked nothing. Saves a screenshot.
//!
//! Ignored by default: it needs Debian's `chromium` and `chromium-driver`. Run it with
//! `scripts/dashboard-browser-test.sh` (what `.ci/run` does). `CHROMIUM` and `CHROMEDRIVER`
//! override the binaries; `DASHBOARD_SCREENSHOT` is where the PNG goes (default
//! `target/dashboard.png`); `DASHBOARD_LINGER_SECS` waits that long before the screenshot
//! (probing with junk now and then) so the charts have more history (for `docs/`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use iotseal_device::sim::{Scenario, Simulation};
use iotseal_device::{AdminClient, DeviceClient, DeviceOptions, GatewayPins, HttpsTransport};
use iotseal_device::{IdentityFile, IdentityFileExt};
use iotseal_gateway::Gateway;
use iotseal_gateway::client::Client;
use iotseal_gateway::local::start_local;
use iotseal_gateway::storage::memory::MemoryStorage;
use iotseal_proto::SigAlg;
use iotseal_proto::reading::SensorKind;
use iotseal_testkit::lay_out_gateway_dir;
use serde_json::{Value, json};

/// A device id that would run script if it were ever parsed as HTML.
const HOSTILE_ID: &str = "<img src=x onerror=__xss=1>";

fn binary(var: &str, default: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        p.exists(),
        "{} not found: install Debian's chromium and chromium-driver (or set {var})",
        p.display()
    );
    p
}

/// A minimal WebDriver client over plain HTTP to chromedriver.
struct WebDriver {
    http: Client,
    session: String,
}

impl WebDriver {
    async fn call(http: &Client, method: Method, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = http
            .request(
                method,
                path,
                &[("content-type", "application/json; charset=utf-8")],
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"));
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(r.status, 200, "chromedriver {path}: {v}");
        v["value"].clone()
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        Self::call(&self.http, method, &p, body).await
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn js(&self, script: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` until it returns true.
    async fn wait_for(&self, what: &str, script: &str, limit: Duration) {
        let t0 = Instant::now();
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if t0.elapsed() > limit {
                let state = self
                    .js("return {state: document.body.dataset.state, updates: document.body.dataset.updates, url: location.href, text: document.body.innerText.slice(0, 600)};")
                    .await;
                panic!("timed out after {limit:?} waiting for {what}; page: {state:#}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().take_while(|&&c| c != b'=').count();
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().take(n).enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n.max(1)]);
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One device with a hostile id, sending a reading every 400 ms until aborted.
async fn hostile_device(pins: GatewayPins, token: String) {
    let p = iotseal_crypto_awslc::default_provider();
    let ident = IdentityFile::generate(&p, HOSTILE_ID, SigAlg::Ed25519).unwrap();
    let admin = AdminClient::new(&pins, &token).unwrap();
    admin
        .add_device(HOSTILE_ID, SigAlg::Ed25519, &ident.public_key)
        .await
        .unwrap();
    let cfg = ident.device_config(&pins, None).unwrap();
    let transport = HttpsTransport::new(&pins).unwrap();
    let mut dev = DeviceClient::new(cfg, transport, DeviceOptions::default());
    // A reading every 400 ms: the device's cadence (a periodic timer, not a wait).
    let mut every = tokio::time::interval(Duration::from_millis(400));
    for i in 0u32.. {
        every.tick().await;
        let x = i as f32 / 4.0;
        let _ = dev.push(
            vec![(SensorKind::Battery, 90.0 - x / 10.0 + x.sin())],
            Vec::new(),
        );
        let _ = dev.flush().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: scripts/dashboard-browser-test.sh"]
async fn dashboard_in_headless_chromium() {
    let started = Instant::now();
    let chromium = binary("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
    let shot = std::env::var("DASHBOARD_SCREENSHOT").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png"),
        PathBuf::from,
    );

    let linger: u64 = std::env::var("DASHBOARD_LINGER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir().unwrap();
    let gw = start_local(&dir.path().join("gw"), |_| {}).await.unwrap();
    let pins: GatewayPins = toml::from_str(&gw.public.to_toml().unwrap()).unwrap();
    let url = gw.handle.url().to_string();

    // The fleet: five groups (classical, hybrid and post-quantum suites), two devices each,
    // for longer than the test needs; and one device with a hostile id.
    let sim = Simulation::new(
        Scenario::mixed(2, 60.0 + linger as f64, 3),
        pins.clone(),
        &gw.token,
        "",
    )
    .unwrap();
    let fleet = tokio::spawn(async move { sim.run().await });
    let hostile = tokio::spawn(hostile_device(pins, gw.token.clone()));

    let (mut driver, wd, _browser) = open_browser(
        &chromium,
        &chromedriver,
        &dir.path().join("chromium-profile"),
    )
    .await;
    let gw_client = Client::new(
        &url,
        Some(iotseal_testkit::root_trusting_config(
            &gw.public.tls_cert_pem,
        )),
    )
    .unwrap();
    let r = gw_client
        .request(Method::GET, "/dashboard", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 401, "the gateway serves the dashboard");

    // Sign in with ?token= once: the page lands on /dashboard without the token in the URL,
    // and the cookie is out of the script's reach.
    wd.cmd(
        Method::POST,
        "/url",
        Some(json!({ "url": format!("{url}/dashboard?token={}", gw.token) })),
    )
    .await;
    let loc = wd.js("return location.pathname + location.search;").await;
    let page = wd
        .js("return location.href + ': ' + document.body.innerText.slice(0, 300);")
        .await;
    assert_eq!(loc, "/dashboard", "{page}");
    assert_eq!(
        wd.js("return document.cookie.includes('iotseal_dashboard');")
            .await,
        false,
        "HttpOnly cookie"
    );
    wd.wait_for(
        "live updates with readings",
        "return document.body.dataset.state === 'live' && Number(document.body.dataset.updates) >= 2 \
         && Number(document.getElementById('readings-total').dataset.value) > 0;",
        Duration::from_secs(30),
    )
    .await;

    // The whole fleet on the page: eleven cards with sparklines, five suites, latency bars.
    wd.wait_for(
        "every device and suite",
        "const q = s => Array.from(document.querySelectorAll(s)); \
         return q('#devices .card').length >= 11 && q('#suites .bar-row').length >= 5 \
         && q('#latency-chart rect.bar').some(r => Number(r.getAttribute('height')) > 0) \
         && Number(document.getElementById('online').dataset.value) >= 11;",
        Duration::from_secs(60),
    )
    .await;

    // Live: the numbers change on the same page (no reload: the marker survives).
    wd.js("window.__marker = 42; return true;").await;
    let read = "const v = id => document.getElementById(id).dataset.value; \
                return {updates: Number(document.body.dataset.updates), readings: Number(v('readings-total')), \
                        online: Number(v('online')), rate: document.getElementById('rate').textContent, \
                        sessions: Number(v('sessions'))};";
    let first = wd.js(read).await;
    wd.wait_for(
        "the readings count to grow",
        &format!(
            "return Number(document.getElementById('readings-total').dataset.value) > {} \
             && Number(document.body.dataset.updates) >= {};",
            first["readings"],
            first["updates"].as_u64().unwrap() + 2
        ),
        Duration::from_secs(15),
    )
    .await;
    let second = wd.js(read).await;
    assert_eq!(
        wd.js("return window.__marker;").await,
        42,
        "the page reloaded"
    );
    assert!(second["online"].as_u64().unwrap() >= 11, "{second}");
    assert!(second["sessions"].as_u64().unwrap() >= 11, "{second}");
    let rate: f64 = second["rate"]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{second}");

    // Charts drawn: throughput lines, latency bars, bars by suite, a sparkline per sensor.
    wd.wait_for(
        "the throughput chart",
        "return (document.querySelector('#rate-chart path.line.readings')?.getAttribute('d') || '').split('L').length >= 3;",
        Duration::from_secs(15),
    )
    .await;
    let charts = wd
        .js(
            "const q = s => Array.from(document.querySelectorAll(s)); \
             return { \
               latencyBars: q('#latency-chart rect.bar').filter(r => Number(r.getAttribute('height')) > 0).length, \
               suites: q('#suites .bar-row').length, \
               cards: q('#devices .card').length, \
               sparks: q('#devices path.spark').filter(p => (p.getAttribute('d') || '').split('L').length >= 3).length, \
               sparkAll: q('#devices path.spark').length, \
               online: document.getElementById('online').textContent, \
               csp: document.body.dataset.cspViolations };",
        )
        .await;
    assert!(charts["latencyBars"].as_u64().unwrap() >= 1, "{charts}");
    assert!(charts["suites"].as_u64().unwrap() >= 5, "{charts}");
    assert!(charts["cards"].as_u64().unwrap() >= 11, "{charts}");
    // greenhouse, truck, meter, station: 2 to 5 sensors each; wearable and hostile: 1.
    assert!(charts["sparks"].as_u64().unwrap() >= 25, "{charts}");
    assert_eq!(charts["sparks"], charts["sparkAll"], "{charts}");
    assert!(
        charts["online"].as_str().unwrap().parse::<u64>().unwrap() >= 11,
        "{charts}"
    );

    // An attack shows up live: junk records and handshakes become refusals on the page.
    for _ in 0..5 {
        let r = gw_client
            .request(Method::POST, "/v1/records", &[], vec![0xff; 40])
            .await
            .unwrap();
        assert!(r.status >= 400);
    }
    wd.wait_for(
        "the refusals to show",
        "const row = Array.from(document.querySelectorAll('#refusals .bar-row')).find(r => r.dataset.key === 'malformed'); \
         return !!row && row.classList.contains('hot') && Number(row.querySelector('.bar-count').dataset.value) >= 5 \
         && document.getElementById('refusal-tile').classList.contains('alarm');",
        Duration::from_secs(10),
    )
    .await;

    // The hostile id is shown as text: no element was created from it, nothing ran.
    wd.wait_for(
        "the hostile device's card",
        &format!(
            "return Array.from(document.querySelectorAll('#devices .dev-id')).some(e => e.textContent === {});",
            json!(HOSTILE_ID)
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        wd.js("return document.querySelectorAll('main img').length;")
            .await,
        0
    );
    assert_eq!(wd.js("return typeof window.__xss;").await, "undefined");
    assert_eq!(
        wd.js("return document.body.dataset.cspViolations;").await,
        "0",
        "the CSP blocked something"
    );

    // More history for the screenshot, if asked: an attacker probing now and then.
    let t0 = Instant::now();
    // Every 7 s (the attacker's cadence: a periodic timer, not a wait).
    let mut every = tokio::time::interval(Duration::from_secs(7));
    every.tick().await;
    while t0.elapsed() < Duration::from_secs(linger) {
        every.tick().await;
        for _ in 0..3 {
            let _ = gw_client
                .request(Method::POST, "/v1/handshake", &[], vec![0x42; 12])
                .await;
        }
    }

    // A screenshot of the whole page.
    let height = wd
        .js("return document.documentElement.scrollHeight;")
        .await
        .as_u64()
        .unwrap();
    wd.cmd(
        Method::POST,
        "/window/rect",
        Some(json!({ "width": 1440, "height": height.clamp(800, 4000) + 90 })),
    )
    .await;
    // One more update, laid out.
    let updates = wd.js("return Number(document.body.dataset.updates);").await;
    wd.wait_for(
        "one more update after the resize",
        &format!("return Number(document.body.dataset.updates) > {updates};"),
        Duration::from_secs(10),
    )
    .await;
    let png = base64_decode(
        wd.cmd(Method::GET, "/screenshot", None)
            .await
            .as_str()
            .unwrap(),
    );
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 30_000, "a blank page? {} bytes", png.len());
    if let Some(d) = shot.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&shot, &png).unwrap();
    println!(
        "dashboard screenshot: {} ({} bytes); browser test took {:.1} s",
        shot.display(),
        png.len(),
        started.elapsed().as_secs_f64()
    );

    drop(_browser);
    let _ = driver.kill().await;
    hostile.abort();
    fleet.abort();
    gw.handle.stop().await.unwrap();
}

/// Starts chromedriver on a free port and a headless Chromium session through it.
async fn open_browser(
    chromium: &Path,
    chromedriver: &Path,
    profile: &Path,
) -> (tokio::process::Child, WebDriver, EndSession) {
    let port = free_port();
    let driver = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting chromedriver");
    let http = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.request(Method::GET, "/status", &[], Vec::new()).await
            && r.status == 200
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--ignore-certificate-errors", "--hide-scrollbars",
                    "--force-device-scale-factor=1", "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }},
    });
    let session = WebDriver::call(&http, Method::POST, "/session", Some(caps)).await;
    let wd = WebDriver {
        http: http.clone(),
        session: session["sessionId"].as_str().unwrap().to_string(),
    };
    let end = EndSession {
        port,
        session: wd.session.clone(),
    };
    (driver, wd, end)
}

/// Cluster mode: two nodes (in this process, memory storage each, one NATS prefix); the page
/// of the first shows both in its nodes table, as text, alive, itself marked. Needs NATS
/// (`IOTSEAL_TEST_NATS`) besides the browser; prints "skipped" without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: scripts/dashboard-browser-test.sh"]
async fn dashboard_in_headless_chromium_shows_cluster_nodes() {
    let Ok(nats) = std::env::var("IOTSEAL_TEST_NATS") else {
        println!("skipped: set IOTSEAL_TEST_NATS for the cluster nodes view");
        return;
    };
    let chromium = binary("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
    let dir = tempfile::tempdir().unwrap();
    let p = iotseal_crypto_awslc::default_provider();
    let laid = lay_out_gateway_dir(dir.path(), &p, &[SigAlg::Ed25519]).unwrap();
    let prefix = format!("dash{}", hex::encode(p.random_vec(5).unwrap()));
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let mut s = laid.settings.clone();
        s.cluster.url = nats.clone();
        s.cluster.node_id = name.to_string();
        s.cluster.prefix = prefix.clone();
        s.cluster.partitions = 8;
        s.cluster.lease_ms = 1500;
        let storage = std::sync::Arc::new(MemoryStorage::default());
        nodes.push(Gateway::start_with_storage(s, storage).await.unwrap());
    }
    let url = nodes[0].url().to_string();
    let (mut driver, wd, browser) = open_browser(
        &chromium,
        &chromedriver,
        &dir.path().join("chromium-profile"),
    )
    .await;
    wd.cmd(
        Method::POST,
        "/url",
        Some(json!({ "url": format!("{url}/dashboard?token={}", laid.admin_token) })),
    )
    .await;
    wd.wait_for(
        "both nodes alive in the nodes table",
        "const rows = Array.from(document.querySelectorAll('#nodes tr')); \
         return !document.getElementById('nodes-panel').hidden && rows.length === 2 \
         && rows.every(r => r.classList.contains('alive')) \
         && rows.every(r => r.children[2].textContent.trim().length > 0 && !r.children[2].textContent.startsWith('0'));",
        Duration::from_secs(30),
    )
    .await;
    let rows = wd
        .js(
            "return Array.from(document.querySelectorAll('#nodes tr')).map(r => ({ \
               node: r.dataset.node, self: r.classList.contains('self'), \
               address: r.children[1].textContent, state: r.children[5].textContent }));",
        )
        .await;
    assert_eq!(rows[0]["node"], "node-a", "{rows}");
    assert_eq!(rows[1]["node"], "node-b", "{rows}");
    assert_eq!(rows[0]["self"], true, "{rows}");
    assert_eq!(rows[1]["self"], false, "{rows}");
    assert_eq!(rows[0]["address"], url.as_str(), "{rows}");
    assert_eq!(rows[1]["address"], nodes[1].url(), "{rows}");
    assert_eq!(rows[0]["state"], "alive", "{rows}");
    assert_eq!(
        wd.js("return document.body.dataset.cspViolations;").await,
        "0",
        "the CSP blocked something"
    );
    // A screenshot of the table, next to the main test's.
    let shot = std::env::var("DASHBOARD_NODES_SCREENSHOT").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-nodes.png"),
        PathBuf::from,
    );
    wd.js("document.getElementById('nodes-panel').scrollIntoView(); return true;")
        .await;
    let png = base64_decode(
        wd.cmd(Method::GET, "/screenshot", None)
            .await
            .as_str()
            .unwrap(),
    );
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    if let Some(d) = shot.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&shot, &png).unwrap();
    println!("nodes screenshot: {}", shot.display());
    drop(browser);
    let _ = driver.kill().await;
    for n in nodes {
        n.stop().await.unwrap();
    }
}

/// Ends the browser even when an assertion fails: deleting the WebDriver session closes
/// Chromium (killing chromedriver alone would leave it running).
struct EndSession {
    port: u16,
    session: String,
}

impl Drop for EndSession {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session, self.port
            );
            // Read the answer (chromedriver keeps the connection open): head, then body.
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(head) = text.find("\r\n\r\n") {
                    let len = text[..head]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= head + 4 + len {
                        break;
                    }
                }
            }
        }
    }
}
