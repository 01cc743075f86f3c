//! The live dashboard over real HTTPS: authentication (token, cookie, sign-in form), its
//! CSP, live numbers while a simulated fleet runs, refusals appearing after junk, the event
//! stream, its bound and its end at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use iotseal_device::GatewayPins;
use iotseal_device::sim::{Scenario, Simulation};
use iotseal_gateway::client::{Client, Response};
use iotseal_gateway::dashboard::{CSP, MAX_STREAMS};
use iotseal_gateway::local::LocalGateway;
use iotseal_testkit::root_trusting_config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Dash {
    gw: LocalGateway,
    client: Client,
    tls: Arc<rustls::ClientConfig>,
}

impl Dash {
    async fn start(name: &str) -> Self {
        let gw = iotseal_testkit::local_gateway(&format!("dash-{name}"), |_| {}).await;
        let tls = root_trusting_config(&gw.public.tls_cert_pem);
        let client = Client::new(gw.handle.url(), Some(tls.clone())).unwrap();
        Self { gw, client, tls }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client
            .request(Method::GET, path, headers, Vec::new())
            .await
            .unwrap()
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.gw.token)
    }

    async fn data(&self) -> Value {
        let auth = self.bearer();
        let r = self
            .get("/dashboard/data", &[("authorization", auth.as_str())])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["content-security-policy"], CSP);
        serde_json::from_slice(&r.body).unwrap()
    }

    fn pins(&self) -> GatewayPins {
        toml::from_str(&self.gw.public.to_toml().unwrap()).unwrap()
    }

    async fn stop(self) {
        let dir = self.gw.dir.clone();
        self.gw.handle.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn refusals(v: &Value, reason: &str) -> u64 {
    v["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == reason)
        .map_or(0, |r| r["count"].as_u64().unwrap())
}

/// The cookie's `name=value` from a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_headers() {
    let d = Dash::start("auth").await;
    let token = d.gw.token.clone();

    // Without a token: 401, the sign-in form, the dashboard's CSP.
    for path in ["/dashboard", "/dashboard/data", "/dashboard/events"] {
        let r = d.get(path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(header(&r, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
    }
    let r = d.get("/dashboard", &[]).await;
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains(r#"action="/dashboard/login""#), "{html}");
    assert!(!html.contains(&token));
    let wrong = "Bearer 00000000000000000000000000000000";
    assert_eq!(
        d.get("/dashboard/data", &[("authorization", wrong)])
            .await
            .status,
        401
    );
    assert_eq!(d.get("/dashboard?token=nope", &[]).await.status, 401);

    // ?token= once: a cookie (HttpOnly, SameSite=Strict, Secure, only for /dashboard) and a
    // redirect that drops the token from the address bar.
    let r = d.get(&format!("/dashboard?token={token}"), &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(header(&r, "location"), "/dashboard");
    let sc = header(&r, "set-cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(sc.contains(attr), "{attr} in {sc}");
    }
    assert!(!sc.contains(&token), "the cookie is not the token");
    let cookie = cookie_pair(&sc);

    // The page with the cookie: no inline script or style, the dashboard's CSP.
    let r = d.get("/dashboard", &[("cookie", cookie.as_str())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "content-security-policy"), CSP);
    assert!(CSP.contains("script-src 'self'") && CSP.contains("frame-ancestors 'none'"));
    assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "cache-control"), "no-store");
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains(r#"<script src="/dashboard/assets/dashboard.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    assert!(!html.contains("style="), "no inline style");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing external"
    );
    let r = d
        .get("/dashboard/data", &[("cookie", cookie.as_str())])
        .await;
    assert_eq!(r.status, 200);
    // The cookie among others, and several Cookie headers.
    let many = format!("a=b; {cookie}; c=d");
    assert_eq!(
        d.get("/dashboard/data", &[("cookie", "x=y"), ("cookie", &many)])
            .await
            .status,
        200
    );

    // A forged or altered cookie is refused.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut parts = value.split('.');
    let (exp, sid, mac) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let later = format!(
        "{name}={}.{sid}.{mac}",
        exp.parse::<u64>().unwrap() + 86_400_000
    );
    let mut flipped = mac.to_string().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = format!("{name}={exp}.{sid}.{}", String::from_utf8(flipped).unwrap());
    let other_sid = format!("{name}={exp}.{}.{mac}", "00".repeat(16));
    for bad in [
        later.as_str(),
        flipped.as_str(),
        other_sid.as_str(),
        "iotseal_dashboard=1.00",
        "iotseal_dashboard=1.00.00",
        "iotseal_dashboard=",
    ] {
        let r = d.get("/dashboard/data", &[("cookie", bad)]).await;
        assert_eq!(r.status, 401, "{bad}");
    }

    // The sign-in form; sign out clears the cookie.
    let form = |t: &str| format!("token={t}").into_bytes();
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let r = d
        .client
        .request(Method::POST, "/dashboard/login", &[ct], form(&token))
        .await
        .unwrap();
    assert_eq!(r.status, 303);
    assert!(header(&r, "set-cookie").starts_with("iotseal_dashboard="));
    let r = d
        .client
        .request(Method::POST, "/dashboard/login", &[ct], form("wrong"))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(header(&r, "set-cookie").is_empty());
    let r = d
        .client
        .request(Method::POST, "/dashboard/logout", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 303);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
    // Signing out with the cookie revokes it on the gateway: a copy kept by the browser (or
    // stolen) no longer works, while another sign-in's cookie still does.
    let r = d
        .client
        .request(Method::POST, "/dashboard/login", &[ct], form(&token))
        .await
        .unwrap();
    let second = cookie_pair(&header(&r, "set-cookie"));
    assert_eq!(
        d.get("/dashboard/data", &[("cookie", cookie.as_str())])
            .await
            .status,
        200
    );
    let r = d
        .client
        .request(
            Method::POST,
            "/dashboard/logout",
            &[("cookie", cookie.as_str())],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(
        d.get("/dashboard/data", &[("cookie", cookie.as_str())])
            .await
            .status,
        401,
        "a signed-out cookie still works"
    );
    assert_eq!(
        d.get("/dashboard/data", &[("cookie", second.as_str())])
            .await
            .status,
        200
    );

    // The assets are public (no data in them), with their types and the CSP.
    let r = d.get("/dashboard/assets/dashboard.js", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&r, "content-security-policy"), CSP);
    let js = String::from_utf8(r.body).unwrap();
    assert!(!js.contains("innerHTML") && !js.contains("eval("));
    let r = d.get("/dashboard/assets/dashboard.css", &[]).await;
    assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");
    assert_eq!(
        d.get("/dashboard/assets/../admin.token", &[]).await.status,
        404
    );
    assert_eq!(d.get("/dashboard/assets/x.js", &[]).await.status, 404);

    // Every other route keeps the gateway's strict CSP.
    let r = d.get("/healthz", &[]).await;
    assert_eq!(
        header(&r, "content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    // Failed attempts count as refusals (snapshots are shared for up to a second).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let v = d.data().await;
    assert_eq!(refusals(&v, "unauthorized"), 14, "{}", v["refusals"]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_numbers_follow_a_simulated_fleet_and_junk_shows_up() {
    let d = Dash::start("live").await;
    let before = d.data().await;
    assert_eq!(before["readings_total"], 0);
    assert_eq!(before["devices"]["registered"], 0);
    assert!(before["device_list"].as_array().unwrap().is_empty());

    // Three groups (hybrid, classical, P-256), one device each, for three seconds.
    let mut sc = Scenario::mixed(1, 3.0, 11);
    sc.groups.truncate(3);
    let suites: Vec<String> = sc.groups.iter().map(|g| g.suite.to_string()).collect();
    let sim = Simulation::new(sc, d.pins(), &d.gw.token, "").unwrap();
    let run = tokio::spawn(async move { sim.run().await });

    // Mid-run: devices online, readings flowing.
    let t0 = Instant::now();
    let mid = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let v = d.data().await;
        if v["readings_total"].as_u64().unwrap() > 0 && v["devices"]["online"].as_u64() > Some(0) {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no live data: {v}");
    };
    assert!(mid["sessions"].as_u64().unwrap() >= 1, "{mid}");
    assert!(mid["readings_per_s"].as_f64().unwrap() > 0.0, "{mid}");
    let s = run.await.unwrap().unwrap();
    assert_eq!(s.readings_stored, s.readings_sent);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = d.data().await;
    assert!(after["t_ms"].as_u64() > mid["t_ms"].as_u64());
    assert_eq!(after["readings_total"].as_u64().unwrap(), s.readings_stored);
    assert!(after["readings_total"].as_u64() > mid["readings_total"].as_u64());
    assert_eq!(after["devices"]["registered"], 3);
    assert!(!after["rate_history"].as_array().unwrap().is_empty());
    let lat = &after["latency"];
    assert!(lat["total_count"].as_u64().unwrap() > 0, "{lat}");
    assert!(lat["p50_ms"].as_f64().unwrap() > 0.0, "{lat}");
    assert!(lat["p99_ms"].as_f64() >= lat["p50_ms"].as_f64(), "{lat}");
    let bucket_sum: u64 = lat["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["n"].as_u64().unwrap())
        .sum();
    assert_eq!(bucket_sum, lat["count"].as_u64().unwrap());
    // Handshakes by suite: every group's suite established at least once.
    let hs = after["handshakes"].as_array().unwrap();
    for suite in &suites {
        assert!(
            hs.iter()
                .any(|h| h["suite"] == suite.as_str() && h["established"].as_u64() >= Some(1)),
            "{suite} in {hs:?}"
        );
    }
    // Each device's latest readings, per sensor.
    let list = after["device_list"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["greenhouse-0", "meter-0", "truck-0"]);
    let gh = &list[0];
    let names: Vec<&str> = gh["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"temperature") && names.contains(&"humidity"),
        "{names:?}"
    );
    for sensor in gh["sensors"].as_array().unwrap() {
        let vals = sensor["values"].as_array().unwrap();
        assert!(vals.len() >= 2 && vals.len() <= 60, "{sensor}");
        assert_eq!(&sensor["last"], vals.last().unwrap());
    }
    assert_eq!(gh["alg"], "ed25519");
    assert!(gh["readings"].as_u64().unwrap() > 0);

    // Junk: refusals appear, counted by reason.
    let conn_junk = |path: &'static str, body: Vec<u8>| {
        let c = d.client.clone();
        async move { c.request(Method::POST, path, &[], body).await.unwrap() }
    };
    for _ in 0..3 {
        let r = conn_junk("/v1/records", vec![0xff; 48]).await;
        assert!(r.status >= 400);
        let r = conn_junk("/v1/handshake", vec![0x42; 10]).await;
        assert_eq!(r.status, 400);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let junk = d.data().await;
    assert!(
        refusals(&junk, "malformed") >= refusals(&after, "malformed") + 6,
        "{junk}"
    );
    assert!(junk["refusals_total"].as_u64() > after["refusals_total"].as_u64());
    assert!(junk["refusals_per_s"].as_f64().unwrap() > 0.0);
    d.stop().await;
}

/// An open event stream over TLS, read raw (the body never ends by itself).
struct Events {
    io: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
    pos: usize,
}

impl Events {
    async fn open(d: &Dash, auth: &str) -> (String, Self) {
        let tcp = tokio::net::TcpStream::connect(d.gw.handle.local_addr())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut io = tokio_rustls::TlsConnector::from(d.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let req = format!(
            "GET /dashboard/events HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\naccept: text/event-stream\r\n\r\n"
        );
        io.write_all(req.as_bytes()).await.unwrap();
        let mut ev = Self {
            io,
            buf: Vec::new(),
            pos: 0,
        };
        let head = loop {
            if let Some(i) = find(&ev.buf, b"\r\n\r\n", 0) {
                ev.pos = i + 4;
                break String::from_utf8_lossy(&ev.buf[..i]).to_lowercase();
            }
            assert!(ev.fill().await, "no response head");
        };
        (head, ev)
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(_) => panic!("event stream silent for 10 s"),
        }
    }

    /// The next snapshot, or None when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = find(&self.buf, b"event: snapshot\ndata: ", self.pos) {
                let start = i + "event: snapshot\ndata: ".len();
                if let Some(end) = find(&self.buf, b"\n\n", start) {
                    self.pos = end + 2;
                    return Some(serde_json::from_slice(&self.buf[start..end]).unwrap());
                }
            }
            if find(&self.buf, b"\r\n0\r\n\r\n", self.pos).is_some() {
                return None; // the last chunk
            }
            if !self.fill().await {
                return None;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_is_live_bounded_and_ends_at_shutdown() {
    let d = Dash::start("events").await;
    let auth = d.bearer();
    let (head, mut ev) = Events::open(&d, &auth).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(
        head.contains(&format!("content-security-policy: {}", CSP.to_lowercase())),
        "{head}"
    );
    let a = ev.next().await.unwrap();
    let b = ev.next().await.unwrap();
    assert!(b["t_ms"].as_u64().unwrap() >= a["t_ms"].as_u64().unwrap() + 800);

    // Junk between two events shows up in the next ones.
    let before = refusals(&b, "malformed");
    d.client
        .request(Method::POST, "/v1/records", &[], vec![0xff; 32])
        .await
        .unwrap();
    let mut seen = false;
    for _ in 0..3 {
        let v = ev.next().await.unwrap();
        if refusals(&v, "malformed") > before {
            seen = true;
            break;
        }
    }
    assert!(seen, "the refusal appeared in the stream");

    // Bounded: MAX_STREAMS at once, the next is told to come back later.
    let mut others = Vec::new();
    for _ in 1..MAX_STREAMS {
        let (h, e) = Events::open(&d, &auth).await;
        assert!(h.starts_with("http/1.1 200"), "{h}");
        others.push(e);
    }
    let (h, _) = Events::open(&d, &auth).await;
    assert!(h.starts_with("http/1.1 503"), "{h}");
    assert!(h.contains("retry-after: 10"), "{h}");
    // A closed stream frees its place.
    drop(others.pop());
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (h, e) = Events::open(&d, &auth).await;
        if h.starts_with("http/1.1 200") {
            others.push(e);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the place was not freed"
        );
    }

    // Shutdown ends every stream at once (well within the 30 s grace period).
    let t0 = Instant::now();
    let stop = tokio::spawn(async move { d.stop().await });
    while ev.next().await.is_some() {}
    for mut e in others {
        while e.next().await.is_some() {}
    }
    stop.await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        t0.elapsed()
    );
}
