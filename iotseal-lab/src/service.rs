//! Legitimate traffic measured while an attack runs. An honest device takes readings at a
//! steady rate and delivers them through a session ([`drive`]); what opening a session and
//! delivering readings mean is target specific ([`Honest`]: iotseal's in `attacks`, the legacy
//! design's in `legacy::attacks`). What it records, and how the attack and the devices run
//! side by side, is shared here.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::outcome::{SERVICE_DEADLINE_MS, Service};

/// How often an honest device takes readings (a busy device, not a flood).
pub(crate) const PACE: Duration = Duration::from_millis(300);
/// Readings it takes each time.
pub(crate) const READINGS_PER_TICK: usize = 2;
/// How long it waits before trying again after a refusal (Busy) or no answer.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Honest devices running at once (each opening sessions and sending readings), so the
/// verdict rests on more than a lucky request or two.
pub(crate) const DEVICES: usize = 4;

/// The deadline for one session or request.
pub(crate) fn deadline() -> Duration {
    Duration::from_millis(SERVICE_DEADLINE_MS)
}

/// What the honest device saw, as it goes.
#[derive(Debug)]
pub(crate) struct Meter {
    t0: Instant,
    latencies_ms: Vec<f64>,
    s: Service,
    /// (device id, message id) of every reading acknowledged while the attack ran.
    pub(crate) acknowledged: BTreeSet<(String, u64)>,
}

impl Meter {
    pub(crate) fn new() -> Self {
        Self {
            t0: Instant::now(),
            latencies_ms: Vec::new(),
            s: Service::default(),
            acknowledged: BTreeSet::new(),
        }
    }

    /// The device sets out to open a session.
    pub(crate) fn session_started(&mut self) {
        self.s.handshakes_attempted += 1;
    }

    /// It opened one, `took` after setting out.
    pub(crate) fn session_opened(&mut self, took: Duration) {
        self.s.handshakes_completed += 1;
        self.latency(took);
    }

    /// It gave up on opening one, `took` after setting out.
    pub(crate) fn session_failed(&mut self, took: Duration) {
        self.latency(took);
    }

    /// A request was refused or not answered.
    pub(crate) fn refused(&mut self, why: impl Into<String>) {
        self.s.requests_refused += 1;
        *self.s.refusals.entry(why.into()).or_default() += 1;
    }

    /// Readings it set out to deliver.
    pub(crate) fn sent(&mut self, n: usize) {
        self.s.readings_sent += n as u64;
    }

    /// A reading was acknowledged (or given up on), `took` after it was taken.
    pub(crate) fn latency(&mut self, took: Duration) {
        self.latencies_ms.push(took.as_secs_f64() * 1000.0);
    }

    /// Readings acknowledged.
    pub(crate) fn acked(&mut self, device: &str, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.acknowledged.insert((device.to_string(), id));
        }
    }

    /// Adds what another device saw.
    pub(crate) fn merge(&mut self, other: Self) {
        self.t0 = self.t0.min(other.t0);
        self.latencies_ms.extend(other.latencies_ms);
        self.acknowledged.extend(other.acknowledged);
        let (a, b) = (&mut self.s, other.s);
        a.handshakes_attempted += b.handshakes_attempted;
        a.handshakes_completed += b.handshakes_completed;
        a.requests_refused += b.requests_refused;
        a.readings_sent += b.readings_sent;
        for (k, v) in b.refusals {
            *a.refusals.entry(k).or_default() += v;
        }
    }

    /// The measurement; `stored`: how many acknowledged readings were found in storage as
    /// sent.
    pub(crate) fn finish(mut self, stored: u64) -> Service {
        self.s.secs = self.t0.elapsed().as_secs_f64();
        self.s.readings_stored = stored;
        let mut v = self.latencies_ms;
        v.sort_by(f64::total_cmp);
        self.s.median_latency_ms = v.get(v.len() / 2).copied().unwrap_or(0.0);
        self.s.worst_latency_ms = v.last().copied().unwrap_or(0.0);
        self.s
    }
}

/// Runs `attack` and `honest` side by side; `stop` is set when the attack is over (the honest
/// device finishes what it is doing, then stops).
pub(crate) async fn alongside<A, H>(
    stop: &AtomicBool,
    attack: A,
    honest: H,
) -> (A::Output, H::Output)
where
    A: Future,
    H: Future,
{
    let attack = async {
        let out = attack.await;
        stop.store(true, Ordering::SeqCst);
        out
    };
    tokio::join!(attack, honest)
}

/// How refusals of a device's requests to open a session are labelled in
/// [`Service::refusals`](crate::Service::refusals).
pub const OPENING_A_SESSION: &str = "opening a session";
/// How refusals of its requests of readings through an open session are labelled.
pub const SENDING_READINGS: &str = "sending readings";

/// Why a request of an honest device was not served.
#[derive(Debug)]
pub(crate) struct NotServed {
    /// `gateway refused: Busy`, `no answer: timeout`, `HTTP 403`, ...
    pub(crate) why: String,
    /// Whether a device tries the same again (Busy, no answer), rather than giving up on the
    /// session.
    pub(crate) retry: bool,
}

/// An honest device of one target.
pub(crate) trait Honest: Send {
    /// An open session (for the legacy design: a fetched server key).
    type Session: Send;
    /// A reading as the target encodes it.
    type Reading: Clone + Send + Sync;
    /// Requests of readings sent through a session before the device opens a new one.
    const REQUESTS_PER_SESSION: usize;
    /// The device id.
    fn id(&self) -> String;
    /// `n` new readings with their message ids (written to the ledger: the device sends them).
    fn take(&mut self, n: usize) -> Vec<(u64, Self::Reading)>;
    /// Opens a session.
    fn open(&mut self) -> impl Future<Output = Result<Self::Session, NotServed>> + Send;
    /// Delivers readings through `s` (sealed anew on each call); Ok once acknowledged.
    fn deliver(
        &mut self,
        s: &mut Self::Session,
        readings: &[Self::Reading],
    ) -> impl Future<Output = Result<(), NotServed>> + Send;
}

/// Runs an honest device until `stop` is set, then until what it queued is delivered or
/// [`deadline`] old and the session it set out to open is opened or given up. It takes [`READINGS_PER_TICK`] readings every [`PACE`], whether or not
/// it has a session (a device keeps measuring: readings wait in its queue); while it has none
/// it opens one, retrying on Busy or no answer; with one, it sends everything queued in one
/// request, and after `REQUESTS_PER_SESSION` requests opens the next session.
pub(crate) async fn drive<D: Honest>(d: &mut D, stop: &AtomicBool) -> Meter {
    let mut m = Meter::new();
    let id = d.id();
    let mut queue: Vec<(u64, D::Reading, Instant)> = Vec::new();
    let mut session: Option<D::Session> = None;
    let mut opening: Option<Instant> = None;
    let mut requests = 0usize;
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if over(stop) {
            // The attack is over: deliver what is queued while it is still in time.
            queue.retain(|(_, _, t)| {
                let fresh = t.elapsed() < deadline();
                if !fresh {
                    m.latency(t.elapsed());
                }
                fresh
            });
            // A session it set out to open is still tried until its deadline.
            if queue.is_empty() && opening.is_none() {
                break;
            }
        } else {
            while next <= now {
                let taken = d.take(READINGS_PER_TICK);
                m.sent(taken.len());
                queue.extend(taken.into_iter().map(|(i, r)| (i, r, next)));
                next += PACE;
            }
        }
        match session.as_mut() {
            None => {
                let t0 = *opening.get_or_insert_with(|| {
                    m.session_started();
                    Instant::now()
                });
                match d.open().await {
                    Ok(s) => {
                        m.session_opened(t0.elapsed());
                        opening = None;
                        session = Some(s);
                        requests = 0;
                    }
                    Err(e) => {
                        m.refused(format!("{OPENING_A_SESSION}: {}", e.why));
                        if !e.retry || t0.elapsed() >= deadline() {
                            m.session_failed(t0.elapsed());
                            opening = None;
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            Some(_) if queue.is_empty() => {
                tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
            }
            Some(s) => {
                let readings: Vec<D::Reading> = queue.iter().map(|q| q.1.clone()).collect();
                match d.deliver(s, &readings).await {
                    Ok(()) => {
                        for (i, _, t) in queue.drain(..) {
                            m.latency(t.elapsed());
                            m.acked(&id, [i]);
                        }
                        requests += 1;
                        if requests >= D::REQUESTS_PER_SESSION {
                            session = None;
                        }
                    }
                    Err(e) => {
                        m.refused(format!("{SENDING_READINGS}: {}", e.why));
                        if !e.retry {
                            session = None;
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    }
    m
}

/// Runs `one(i)` for each of the [`DEVICES`] honest devices at once and merges what they saw.
pub(crate) async fn fleet<'a, F, Fut, T>(one: F) -> Result<(Meter, Vec<T>), crate::LabError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(Meter, T), crate::LabError>> + 'a,
{
    let mut running: Vec<Pin<Box<Fut>>> = (0..DEVICES).map(|i| Box::pin(one(i))).collect();
    let mut done: Vec<Option<Fut::Output>> = (0..DEVICES).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in running.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    let mut m = Meter::new();
    let mut extra = Vec::new();
    for r in done.into_iter().flatten() {
        let (x, t) = r?;
        m.merge(x);
        extra.push(t);
    }
    Ok((m, extra))
}

/// Whether the attack is over.
pub(crate) fn over(stop: &AtomicBool) -> bool {
    stop.load(Ordering::SeqCst)
}
