//! A gateway in this process and a device driven by the protocol core over HTTPS, exactly
//! like `iotseal-test/src/pair.rs` but over the network.

use std::sync::Arc;

use iotseal_gateway::client::{Client, Connection, Response};
use iotseal_gateway::clock::ManualClock;
use iotseal_gateway::keys::GatewayPublic;
use iotseal_gateway::storage::memory::MemoryStorage;
use iotseal_gateway::{Gateway, GatewayHandle, Settings};
use iotseal_proto::handshake::{
    DeviceConfig, DeviceEstablished, DeviceHandshake, DeviceNext, PinnedKey,
};
use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{SigAlg, Suite};

use crate::{
    device_key, lay_out_gateway_dir, now, provider, registration_json, root_trusting_config,
};

/// A gateway in this process (127.0.0.1:0, a temporary directory) and an HTTPS client of it.
/// The gateway stops on drop.
pub struct Env {
    /// The gateway's directory.
    pub dir: tempfile::TempDir,
    /// The gateway (taken by tests that stop it).
    pub gw: Option<GatewayHandle>,
    /// Its storage (with [`Env::start`]; an unused one with [`Env::start_on_sqlite`]).
    pub storage: Arc<MemoryStorage>,
    /// The admin token.
    pub token: String,
    /// What devices pin.
    pub public: GatewayPublic,
    /// The gateway's self-signed certificate.
    pub cert_pem: String,
    /// `https://127.0.0.1:PORT` (or `http://` with `plain_http`).
    pub url: String,
    /// An HTTPS client that trusts the certificate.
    pub client: Client,
}

impl Env {
    /// A gateway with an identity per algorithm in `algs`, in-memory storage, and settings
    /// edited by `edit`.
    pub async fn start(algs: &[SigAlg], edit: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with_clock(algs, edit, None).await
    }

    /// As [`Env::start`], the gateway reading time from `clock` (a test advances it instead
    /// of sleeping; the system clock without one).
    pub async fn start_with_clock(
        algs: &[SigAlg],
        edit: impl FnOnce(&mut Settings),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = provider();
        let laid = lay_out_gateway_dir(dir.path(), &p, algs).unwrap();
        let mut settings = laid.settings;
        edit(&mut settings);
        let storage = Arc::new(MemoryStorage::default());
        let mut builder = Gateway::builder(settings.clone()).storage(storage.clone());
        if let Some(c) = clock {
            builder = builder.clock(c);
        }
        let gw = builder.start().await.unwrap();
        let url = gw.url().to_string();
        let cert_pem = laid.public.tls_cert_pem.clone();
        let client = if settings.plain_http {
            Client::new(&url, None).unwrap()
        } else {
            Client::new(&url, Some(root_trusting_config(&cert_pem))).unwrap()
        };
        Self {
            dir,
            gw: Some(gw),
            storage,
            token: laid.admin_token,
            public: laid.public,
            cert_pem,
            url,
            client,
        }
    }

    /// A gateway with one Ed25519 identity and SQLite storage in its directory (`gw.db`);
    /// also returns its settings (to restart it). `storage` is then an unused memory store.
    pub async fn start_on_sqlite() -> (Self, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let laid = lay_out_gateway_dir(dir.path(), &provider(), &[SigAlg::Ed25519]).unwrap();
        let mut settings = laid.settings;
        settings.storage = format!("sqlite:{}", dir.path().join("gw.db").display());
        let gw = Gateway::start(settings.clone()).await.unwrap();
        let url = gw.url().to_string();
        let cert_pem = laid.public.tls_cert_pem.clone();
        let client = Client::new(&url, Some(root_trusting_config(&cert_pem))).unwrap();
        let env = Self {
            dir,
            gw: Some(gw),
            storage: Default::default(),
            token: laid.admin_token,
            public: laid.public,
            cert_pem,
            url,
            client,
        };
        (env, settings)
    }

    /// The running gateway.
    pub fn gw(&self) -> &GatewayHandle {
        self.gw.as_ref().unwrap()
    }

    /// A new keep-alive connection.
    pub async fn conn(&self) -> Connection {
        self.client.connect().await.unwrap()
    }

    /// The `authorization` header's value.
    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// An admin API request with the token and a JSON body.
    pub async fn admin(&self, method: hyper::Method, path: &str, body: &str) -> Response {
        let auth = self.auth();
        self.client
            .request(
                method,
                path,
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body.as_bytes().to_vec(),
            )
            .await
            .unwrap()
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .client
            .request(hyper::Method::GET, "/metrics", &[], vec![])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    }

    /// A device of `suite`, registered through the admin API.
    pub async fn device(&self, id: &str, suite: Suite) -> Device {
        self.device_pinning(id, suite, 0).await
    }

    /// A device whose first pin is the gateway's identity number `first_pin`.
    pub async fn device_pinning(&self, id: &str, suite: Suite, first_pin: usize) -> Device {
        let p = provider();
        let key = device_key(&p, suite.sig);
        let body = registration_json(id, suite.sig, &key.public_key());
        let r = self.admin(hyper::Method::POST, "/v1/devices", &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let mut pins: Vec<PinnedKey> = self
            .public
            .identity
            .iter()
            .map(|i| PinnedKey {
                alg: i.alg,
                public_key: hex::decode(&i.public_key).unwrap(),
            })
            .collect();
        pins.rotate_left(first_pin);
        let mut cfg = DeviceConfig::new(p, id.as_bytes().to_vec(), key, pins);
        cfg.offers = vec![suite];
        Device {
            cfg: Arc::new(cfg),
            id: id.to_string(),
            next_msg: 1,
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown();
        }
    }
}

/// A device driven by the protocol core (registered by [`Env::device`]).
pub struct Device {
    /// Its configuration (identity, pins, the one suite it offers).
    pub cfg: Arc<DeviceConfig>,
    /// Its id.
    pub id: String,
    /// The next message id [`Device::readings`] uses.
    pub next_msg: u64,
}

/// What a handshake over HTTP produced.
pub struct Handshake {
    /// The device's session.
    pub session: Session,
    /// M1 as sent.
    pub m1: Vec<u8>,
    /// M2 as received (the last one, after a retry).
    pub m2: Vec<u8>,
    /// M3 and the piggybacked record as sent.
    pub flight: Vec<u8>,
    /// The gateway's answer to M3.
    pub answer: Vec<u8>,
    /// Readings sent with M3.
    pub sent: Vec<Reading>,
}

impl Device {
    /// `n` new readings (two values each, message ids from [`Device::next_msg`]).
    pub fn readings(&mut self, n: usize) -> Vec<Reading> {
        (0..n)
            .map(|i| {
                let id = self.next_msg;
                self.next_msg += 1;
                Reading {
                    msg_id: id,
                    time_ms: now().as_millis(),
                    values: vec![
                        (SensorKind::Temperature, 20.5 + i as f32),
                        (SensorKind::Humidity, 40.25),
                    ],
                    extra: vec![id as u8; 3],
                }
            })
            .collect()
    }

    /// Runs the handshake; M3 carries one record with `piggyback` readings (if any).
    pub async fn handshake(&mut self, conn: &mut Connection, piggyback: usize) -> Handshake {
        let (hs, m1) = DeviceHandshake::start(self.cfg.clone(), now()).unwrap();
        let r = conn.post_binary("/v1/handshake", m1.clone()).await.unwrap();
        assert_eq!(r.status, 200, "M1 answer {:?}", r.body);
        let mut m2 = r.body;
        let mut next = hs.handle(now(), &m2).unwrap();
        let est: DeviceEstablished = loop {
            match next {
                DeviceNext::Retry { handshake, hello } => {
                    let r = conn.post_binary("/v1/handshake", hello).await.unwrap();
                    assert_eq!(r.status, 200);
                    m2 = r.body;
                    next = handshake.handle(now(), &m2).unwrap();
                }
                DeviceNext::Established(e) => break *e,
            }
        };
        let mut session = est.session;
        let mut flight = est.finish.clone();
        let sent = if piggyback > 0 {
            let rs = self.readings(piggyback);
            let mut rec = Vec::new();
            session
                .seal(now(), ContentType::Data, &encode_batch(&rs), &mut rec)
                .unwrap();
            batch::push(&mut flight, &rec);
            rs
        } else {
            Vec::new()
        };
        let r = conn
            .post_binary("/v1/handshake", flight.clone())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "M3 answer {:?}", r.body);
        Handshake {
            session,
            m1,
            m2,
            flight,
            answer: r.body,
            sent,
        }
    }
}

/// Seals one data record per reading group.
pub fn seal_records(session: &mut Session, groups: &[Vec<Reading>]) -> Vec<Vec<u8>> {
    groups
        .iter()
        .map(|rs| {
            let mut rec = Vec::new();
            session
                .seal(now(), ContentType::Data, &encode_batch(rs), &mut rec)
                .unwrap();
            rec
        })
        .collect()
}

/// Records framed into one request body.
pub fn framed(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        batch::push(&mut out, r);
    }
    out
}

/// Opens the ack records of an answer; returns the acknowledged ranges of each.
pub fn open_acks(session: &mut Session, answer: &[u8]) -> Vec<Vec<(u64, u64)>> {
    batch::split(answer)
        .unwrap()
        .into_iter()
        .map(|r| {
            let mut buf = r.to_vec();
            let o = session.open(now(), &mut buf).unwrap();
            assert_eq!(o.content_type, ContentType::Ack);
            let seq = o.seq;
            let ranges = session.parse_ack(o.plaintext).unwrap();
            session.accept(seq).unwrap();
            ranges
        })
        .collect()
}

/// Whether `seq` is in the acknowledged `ranges`.
pub fn acked(ranges: &[(u64, u64)], seq: u64) -> bool {
    ranges.iter().any(|&(a, b)| a <= seq && seq <= b)
}
