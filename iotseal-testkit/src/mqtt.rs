//! MQTT brokers for tests: the one `IOTSEAL_TEST_MQTT` names, or a Mosquitto started for the
//! test on a free loopback port ([`TestBroker`]), and a plain MQTT v5 client of it
//! ([`TestClient`]).

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

/// A broker for tests: the one `IOTSEAL_TEST_MQTT` names (`host:port`), or a `mosquitto`
/// found on `PATH` (or in `/usr/sbin`) started on a free loopback port and stopped on drop.
#[derive(Debug)]
pub struct TestBroker {
    /// `host:port`.
    pub addr: String,
    child: Option<std::process::Child>,
    dir: Option<std::path::PathBuf>,
}

impl TestBroker {
    /// What tests print when they find no broker.
    pub const SKIPPED: &'static str = "skipped: no MQTT broker (set IOTSEAL_TEST_MQTT)";

    /// The broker to test against, or `None` (the test should print [`Self::SKIPPED`] and
    /// return). Panics if `IOTSEAL_TEST_MQTT` names a broker that does not answer: CI set it.
    pub fn find() -> Option<Self> {
        if let Ok(addr) = std::env::var("IOTSEAL_TEST_MQTT")
            && !addr.trim().is_empty()
        {
            let addr = addr.trim().trim_start_matches("mqtt://").to_string();
            assert!(
                wait_for_port(&addr, Duration::from_secs(5)),
                "IOTSEAL_TEST_MQTT={addr}: no broker answers there"
            );
            return Some(Self {
                addr,
                child: None,
                dir: None,
            });
        }
        let bin = find_mosquitto()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("iotseal-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            // TCP_NODELAY towards clients too (Mosquitto's default is off): request/response
            // latency would otherwise be bound by Nagle and delayed ACKs.
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
            ),
        )
        .ok()?;
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        let b = Self {
            addr,
            child: Some(child),
            dir: Some(dir),
        };
        wait_for_port(&b.addr, Duration::from_secs(5)).then_some(b)
    }

    /// `mqtt://host:port`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// A plain MQTT v5 client of this broker (no iotseal protocol) with client id
    /// `client_id` and maximum packet size `max_packet`, subscribed with QoS 1 to `topics`.
    /// Returns once the broker acknowledged each subscription; everything it receives from
    /// then on arrives in [`TestClient::received`]. Panics if the broker does not acknowledge
    /// a subscription within 5 s.
    pub async fn client(
        &self,
        client_id: String,
        max_packet: u32,
        topics: &[String],
    ) -> TestClient {
        let (host, port) = self.addr.rsplit_once(':').expect("host:port");
        let mut o = MqttOptions::new(client_id, host, port.parse().expect("a port"));
        o.set_max_packet_size(Some(max_packet));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, received) = mpsc::unbounded_channel();
        let (subbed_tx, mut subbed_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subbed_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for t in topics {
            client
                .subscribe(t.clone(), QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            tokio::time::timeout(Duration::from_secs(5), subbed_rx.recv())
                .await
                .expect("subscribed");
        }
        TestClient {
            client,
            received,
            task,
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A plain MQTT v5 client for tests, from [`TestBroker::client`]. Its event loop stops when it
/// is dropped.
#[derive(Debug)]
pub struct TestClient {
    /// The client, to publish with.
    pub client: AsyncClient,
    /// Every message received on the subscriptions, in order.
    pub received: mpsc::UnboundedReceiver<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// The next message received within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Publish> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find_mosquitto() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

fn wait_for_port(addr: &str, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
