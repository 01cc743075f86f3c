//! Shared helpers of the gateway tests: an in-process gateway on 127.0.0.1:0, a TLS client
//! that trusts its self-signed certificate, and a device driven by the core exactly like
//! `iotseal-test/src/pair.rs`, over HTTPS.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iotseal_gateway::client::{Client, Connection, Response};
use iotseal_gateway::keys::GatewayPublic;
use iotseal_gateway::testing::{MemoryStorage, lay_out_gateway_dir};
use iotseal_gateway::{Gateway, GatewayHandle, Settings};
use iotseal_proto::handshake::{
    DeviceConfig, DeviceEstablished, DeviceHandshake, DeviceNext, PinnedKey,
};
use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{CryptoProvider, SigAlg, Suite, Time};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub fn provider() -> CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

pub fn now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub gw: Option<GatewayHandle>,
    pub storage: Arc<MemoryStorage>,
    pub token: String,
    pub public: GatewayPublic,
    pub cert_pem: String,
    pub url: String,
    pub client: Client,
}

/// A client config that verifies the gateway's certificate the standard way (webpki, the
/// self-signed certificate as the only root, server name 127.0.0.1).
pub fn root_trusting_config(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(iotseal_gateway::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

impl Env {
    pub async fn start(algs: &[SigAlg], edit: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = provider();
        let laid = lay_out_gateway_dir(dir.path(), &p, algs).unwrap();
        let mut settings = laid.settings;
        edit(&mut settings);
        let storage = Arc::new(MemoryStorage::default());
        let gw = Gateway::start_with_storage(settings.clone(), storage.clone())
            .await
            .unwrap();
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

    pub fn gw(&self) -> &GatewayHandle {
        self.gw.as_ref().unwrap()
    }

    pub async fn conn(&self) -> Connection {
        self.client.connect().await.unwrap()
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

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
        let key = p.signature(suite.sig).unwrap().generate(p.random).unwrap();
        let pk = hex::encode(key.public_key());
        let body = format!(
            r#"{{"id":"{id}","alg":"{}","public_key":"{pk}"}}"#,
            suite.sig
        );
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

pub struct Device {
    pub cfg: Arc<DeviceConfig>,
    pub id: String,
    pub next_msg: u64,
}

/// What a handshake over HTTP produced.
pub struct Handshake {
    pub session: Session,
    pub m1: Vec<u8>,
    pub m2: Vec<u8>,
    pub flight: Vec<u8>,
    pub answer: Vec<u8>,
    /// Readings sent with M3.
    pub sent: Vec<Reading>,
}

impl Device {
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

pub fn acked(ranges: &[(u64, u64)], seq: u64) -> bool {
    ranges.iter().any(|&(a, b)| a <= seq && seq <= b)
}

pub fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
