//! Availability attacks from many source addresses (issue 19): a connection hog, a flood of
//! fresh valid hellos from 250 addresses, and a drain of the per-address handshake budget
//! behind a shared layer-4 proxy. Loopback has a whole /8 of local addresses, so one process
//! can be many sources: every attacker socket is bound to its own 127.x.y.z address. Each
//! attack is judged by the legitimate traffic served while it runs ([`service::drive`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_proto::handshake::PinnedKey;
use iotseal_proto::handshake::messages::Cookie;
use iotseal_proto::{CryptoProvider, Suite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::LabError;
use crate::attacks::{BoxFut, Ctx, SMALL, hello_for, honest_traffic, suite, wire_now};
use crate::net::{HttpClient, connect_raw_from};
use crate::outcome::{Findings, Service};
use crate::service;
use crate::target::{Delta, GatewaySpec, Gw};

type R<T> = Result<T, LabError>;

/// Connections the hog tries to hold at once (the burst), at most.
pub(crate) const HOG_CONNECTIONS: usize = 10_000;

/// How many connections the hog tries to hold: [`HOG_CONNECTIONS`], or fewer where this
/// process's descriptor limit would not leave room for everything else. Against a server in
/// this process each connection takes two descriptors, and the lab's tests run the iotseal and
/// the legacy lab side by side in one process: there it gets an eighth of the limit, against a
/// gateway elsewhere half.
pub(crate) fn hog_target(server_in_process: bool) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    let share = if server_in_process {
        limit / 8
    } else {
        limit / 2
    };
    share.min(HOG_CONNECTIONS)
}
/// Sources of the hello flood.
pub(crate) const FLOOD_SOURCES: u8 = 250;
/// How long the hog runs.
pub(crate) const HOG_SECS: Duration = Duration::from_secs(8);
/// A legitimate device must be served within this while one address hogs connections.
const HOG_DEADLINE_MS: f64 = 2000.0;

/// The hog's address.
pub(crate) fn hog_source() -> IpAddr {
    source(2, 2)
}

/// `127.0.x.y`: the `i`-th attacker source of attack `net` (each attack its own /16's worth,
/// never 127.0.0.1, which the honest devices' proxy uses).
fn source(net: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, 1, i.max(1)))
}

/// Opens TLS connections to `url` from one address, as many as it can up to `target` at once,
/// re-opening those the server closes, for `run_for`; then closes them all. Each open
/// connection has a task waiting for the server to close it, so "held" is what is open now.
pub(crate) async fn hog(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    from: IpAddr,
    target: usize,
    run_for: Duration,
) -> HogReport {
    let held = Arc::new(AtomicUsize::new(0));
    let max_held = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let openers = 64usize;
    let mut tasks = Vec::new();
    for _ in 0..openers {
        let (url, tls) = (url.to_string(), tls.clone());
        let (held, max_held, attempts, opened) = (
            held.clone(),
            max_held.clone(),
            attempts.clone(),
            opened.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            while t0.elapsed() < run_for {
                if held.load(Ordering::Relaxed) >= target {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                attempts.fetch_add(1, Ordering::Relaxed);
                let conn = tokio::time::timeout(
                    Duration::from_secs(2),
                    connect_raw_from(&url, tls.clone(), Some(from)),
                )
                .await;
                let Ok(Ok(mut s)) = conn else {
                    // Refused (the per-address cap closes it before TLS) or timed out.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let h = held.fetch_add(1, Ordering::Relaxed) + 1;
                max_held.fetch_max(h, Ordering::Relaxed);
                let held = held.clone();
                open.spawn(async move {
                    // Sends nothing; the server's close (idle timeout) ends the read.
                    let mut b = [0u8; 64];
                    while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                    held.fetch_sub(1, Ordering::Relaxed);
                });
            }
            // Dropping the set closes what is still open.
            open.shutdown().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    HogReport {
        attempts: attempts.load(Ordering::Relaxed),
        opened: opened.load(Ordering::Relaxed),
        max_held: max_held.load(Ordering::Relaxed),
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// What the hog saw.
#[derive(Debug, Default)]
pub(crate) struct HogReport {
    pub(crate) attempts: u64,
    pub(crate) opened: u64,
    pub(crate) max_held: usize,
    pub(crate) secs: f64,
}

impl HogReport {
    pub(crate) fn describe(&self, from: IpAddr) -> String {
        format!(
            "{} connection attempts from {from} in {:.1} s: {} opened (TLS; the gateway closes idle ones), at most {} open at once",
            self.attempts, self.secs, self.opened, self.max_held
        )
    }
}

/// `connection-hog`: one address tries to hold [`hog_target`] TLS connections while the
/// honest devices (another address) send readings.
pub(crate) fn connection_hog(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let from = hog_source();
        let run_for = HOG_SECS;
        let rss0 = crate::rss_kib();
        let before = ctx.gw.metrics().await?;
        let stop = AtomicBool::new(false);
        let target = hog_target(ctx.gw.local.is_some());
        let attack = hog(ctx.gw.url(), ctx.gw.http.tls(), from, target, run_for);
        let (rep, honest) = service::alongside(&stop, attack, honest_traffic(ctx, &stop)).await;
        let honest = honest?;
        let after = ctx.gw.metrics().await?;
        let d = Delta::between(&before, &after);
        let cap = ctx.gw.limits.max_connections_per_ip;
        f.saw(format!("{} (trying to hold {target})", rep.describe(from)));
        f.saw(format!(
            "refused at the gateway: {} per-address, {} global",
            d.refusals.get("limit_per_ip").copied().unwrap_or(0),
            d.refusals.get("limit").copied().unwrap_or(0)
        ));
        if let (Some(a), Some(b)) = (rss0, crate::rss_kib()) {
            f.saw(format!("lab process RSS {a} KiB before, {b} KiB after"));
        }
        for _ in 0..rep.attempts {
            f.attempt(true);
        }
        // Counted from outside: a connection the gateway closed (idle timeout) may still count
        // as open here for the moment its close takes to arrive, while its freed slot is
        // already taken again; 1% of the cap covers that.
        f.check(
            format!(
                "the hog held about the per-address cap at most ({} open at once, cap {cap})",
                rep.max_held
            ),
            rep.max_held <= cap + cap / 100,
        );
        f.check(
            format!(
                "another address served within {HOG_DEADLINE_MS} ms (worst {:.0} ms)",
                honest.worst_latency_ms
            ),
            honest.worst_latency_ms <= HOG_DEADLINE_MS,
        );
        f.served(honest, "while one address hogged connections");
        Ok(f)
    })
}

/// What every flooding source shares.
#[derive(Clone)]
struct Flooder {
    gw_url: String,
    pin_sha: String,
    p: CryptoProvider,
    pin: PinnedKey,
    suite: Suite,
    /// Answers by kind.
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Flooder {
    fn new(ctx: &Ctx) -> Self {
        Self {
            gw_url: ctx.gw.url().to_string(),
            pin_sha: ctx.gw.pins.tls_cert_sha256.clone(),
            p: ctx.p,
            pin: ctx.pin(),
            suite: suite(SMALL),
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One flooding source: fresh valid hellos back to back over a keep-alive connection from
/// `from`, following a Retry once (its cookie echoed, as a real device would) and never
/// finishing. Counts answers by kind.
async fn flood_source(a: Flooder, from: IpAddr, until: Instant) {
    let Flooder {
        gw_url,
        pin_sha,
        p,
        pin,
        suite: s,
        counts,
    } = a;
    let Ok(http) = HttpClient::from_source(&pin_sha, Some(from)) else {
        return;
    };
    let url = format!("{gw_url}/v1/handshake");
    let count = |k: &str| {
        *counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(k.to_string())
            .or_default() += 1;
    };
    while Instant::now() < until {
        let Ok(h) = hello_for(&p, &pin, s, wire_now(), None) else {
            return;
        };
        let Ok(a) = http.post(&url, h).await else {
            count("no answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match (a.status, a.body.first()) {
            (200, Some(0x02)) => {
                count("Retry");
                let Ok(c) = Cookie::from_retry_message(&a.body) else {
                    continue;
                };
                let Ok(h) = hello_for(&p, &pin, s, c.time, Some(c.encode().to_vec())) else {
                    return;
                };
                match http.post(&url, h).await {
                    Ok(a) if a.status == 200 && a.body.first() == Some(&0x03) => {
                        count("M2 after a cookie");
                    }
                    Ok(a) => count(&format!("HTTP {} after a cookie", a.status)),
                    Err(_) => count("no answer"),
                }
            }
            (200, Some(0x03)) => count("M2"),
            (st, _) => {
                count(&format!("HTTP {st}"));
                if st == 429 || st == 503 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// `hello-flood-addresses`: [`FLOOD_SOURCES`] addresses send fresh valid hellos at full speed.
pub(crate) fn hello_flood_addresses(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let run_for = Duration::from_secs((ctx.gw.limits.skew_secs * 2 + 1).clamp(3, 30));
        let before = ctx.gw.metrics().await?;
        let flooder = Flooder::new(ctx);
        let stop = AtomicBool::new(false);
        let until = Instant::now() + run_for;
        let flood = async {
            let mut tasks = Vec::new();
            for i in 1..=FLOOD_SOURCES {
                tasks.push(tokio::spawn(flood_source(
                    flooder.clone(),
                    source(3, i),
                    until,
                )));
            }
            for t in tasks {
                let _ = t.await;
            }
        };
        let ((), honest) = service::alongside(&stop, flood, honest_traffic(ctx, &stop)).await;
        let honest = honest?;
        let after = ctx.gw.metrics().await?;
        let d = Delta::between(&before, &after);
        let counts = flooder.counts();
        let sent: u64 = counts.values().sum();
        for (k, n) in &counts {
            for _ in 0..*n {
                f.attempt(!k.starts_with("M2"));
            }
        }
        f.saw(format!(
            "{sent} hellos from {FLOOD_SOURCES} addresses in {:.1} s: {}",
            run_for.as_secs_f64(),
            crate::outcome::tally(&counts)
        ));
        f.saw(format!(
            "gateway refusals: {}",
            crate::outcome::tally(&d.refusals)
        ));
        let by_flood = d.established.saturating_sub(honest.handshakes_completed);
        f.check(
            format!("the flood opened no session ({by_flood})"),
            by_flood == 0,
        );
        f.served(honest, "during the flood from many addresses");
        Ok(f)
    })
}

/// A layer-4 proxy that speaks PROXY protocol v2 upstream, like HAProxy with
/// `send-proxy-v2`: every accepted connection is relayed to `upstream` after a header naming
/// its real source address. Dropped: stops accepting (relayed connections end with theirs).
struct ProxyV2Relay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyV2Relay {
    async fn start(upstream: SocketAddr) -> R<Self> {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| LabError(format!("relay: {e}")))?;
        let addr = l
            .local_addr()
            .map_err(|e| LabError(format!("relay: {e}")))?;
        let task = tokio::spawn(async move {
            while let Ok((mut client, peer)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let Ok(header) = ppp::v2::Builder::with_addresses(
                        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                        ppp::v2::Protocol::Stream,
                        (peer, upstream),
                    )
                    .build() else {
                        return;
                    };
                    if up.write_all(&header).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for ProxyV2Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `proxy-bucket-drain`: a gateway behind a shared layer-4 proxy (PROXY protocol v2 on, the
/// gateway's default per-address handshake rate); an attacker behind the same proxy sends
/// hellos far above that rate from its own address, trying to use up the budget the honest
/// devices (another address, same proxy) need.
pub(crate) fn proxy_bucket_drain(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let defaults = iotseal_gateway::Settings::default();
        let rate = defaults.limits.handshake_rate_per_ip;
        let burst = defaults.limits.handshake_burst_per_ip;
        let mut gw = Gw::open_with(&GatewaySpec::InProcess { data_dir: None }, |s| {
            s.proxy_protocol = true;
            s.limits.handshake_rate_per_ip = rate;
            s.limits.handshake_burst_per_ip = burst;
        })
        .await?;
        let upstream: SocketAddr = {
            let (host, port, _) = crate::net::host_port(gw.url())?;
            format!("{host}:{port}")
                .parse()
                .map_err(|e| LabError(format!("gateway address: {e}")))?
        };
        let relay = ProxyV2Relay::start(upstream).await?;
        // Everything reaches this gateway through the relay, the lab's admin client included.
        gw.pins.url = format!("https://{}", relay.addr);
        let sub = Ctx::with_gateway(gw, &format!("{}px", ctx.run), ctx.p).await?;
        let res = drain(&sub, rate, burst, &mut f).await;
        sub.close().await;
        drop(relay);
        res?;
        Ok(f)
    })
}

async fn drain(ctx: &Ctx, rate: f64, burst: f64, f: &mut Findings) -> R<()> {
    let before = ctx.gw.metrics().await?;
    let from = source(4, 4);
    let flooder = Flooder::new(ctx);
    let run_for = Duration::from_secs(5);
    let stop = AtomicBool::new(false);
    let until = Instant::now() + run_for;
    let attack = async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(flood_source(flooder.clone(), from, until)));
        }
        for t in tasks {
            let _ = t.await;
        }
    };
    let ((), honest) = service::alongside(&stop, attack, honest_traffic(ctx, &stop)).await;
    let honest: Service = honest?;
    let after = ctx.gw.metrics().await?;
    let d = Delta::between(&before, &after);
    let counts = flooder.counts();
    let limited = counts.get("HTTP 429").copied().unwrap_or(0);
    for (k, n) in &counts {
        for _ in 0..*n {
            f.attempt(!k.starts_with("M2"));
        }
    }
    f.saw(format!(
        "the attacker ({from}, behind the proxy) sent {} hellos in {:.0} s against a budget of {rate}/s (burst {burst}) per address: {}",
        counts.values().sum::<u64>(),
        run_for.as_secs_f64(),
        crate::outcome::tally(&counts)
    ));
    f.saw(format!(
        "gateway refusals: {}",
        crate::outcome::tally(&d.refusals)
    ));
    f.check(
        format!("the attacker drained its own budget ({limited} hellos answered 429)"),
        limited > 0,
    );
    f.served(honest, "behind the same proxy while its budget was drained");
    Ok(())
}
