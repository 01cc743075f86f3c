//! Cluster mode: several gateway nodes behind a load balancer, sharing the work through NATS
//! JetStream (see `docs/cluster.md` for the design, its failure modes and its limits).
//!
//! - The session-id space is cut into `partitions` (`session_id % partitions`). A node owns a
//!   partition while it holds its **lease**: the key `p<N>` of the JetStream KV bucket
//!   `<prefix>_owners`, whose entries expire `lease_ms` after their last write (the bucket's
//!   `max_age`). Owners renew with compare-and-set; others claim with create-if-absent. A node
//!   stops treating a partition as its own `lease_ms` minus a margin after the *start* of its
//!   last successful renewal, so it never serves a partition that another node may already
//!   have claimed (clocks may differ; their rates are assumed to be about equal).
//! - Every session lives on the owner of its id's partition: a node answering M1 draws the new
//!   session id inside a partition it owns (the core's `SessionIdPolicy::Partitioned`, set
//!   from the owned partitions before each hello). M1 itself goes to the owner of the partition of
//!   `H(first M1)` (a retried hello carries that hash in its cookie), so retransmissions meet
//!   the same answer cache, nonce cache and cookie secret.
//! - A request that reaches a node that does not own its partition is **forwarded** over NATS
//!   request/reply to the subject `<prefix>.part.<N>`, which only the owner subscribes to. The
//!   payload is the device's bytes as received (sealed records, M1, M3), the answer is the
//!   owner's HTTP answer; session keys never leave the owner.
//! - Device registrations and revocations are broadcast on `<prefix>.registry`, and every node
//!   re-reads the whole registry from the shared storage every 30 s.
//! - Membership: each node answers pings on `<prefix>.members`; each tick a node pings and
//!   counts the answers (a dead node's connection is gone, so it does not answer). The number
//!   of live nodes sets each node's share, `ceil(partitions / nodes)`. The answers describe
//!   each node (name, address, owned partitions, forwarding counters): the nodes view of
//!   `GET /v1/cluster` and the dashboard ([`Cluster::nodes`]).
//! - MQTT: the nodes share the broker's subscription (`$share/<prefix>/...`), so each request
//!   reaches one node, which forwards it like an HTTP request when another node owns it
//!   (header `Iotseal-Binding: mqtt`: the owner runs it through its MQTT handshake server).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use iotseal_proto::handshake::messages::{Cookie, Hello, decode_alert};
use iotseal_proto::handshake::{SessionIdPolicy, SourceKey};
use iotseal_proto::record::{Header, batch};
use iotseal_proto::{CryptoProvider, Refusal};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::pipeline::{Answer, Binding, Kind, Pipeline, Request, Route, SessionIds};
use crate::settings::ClusterSettings;
use crate::storage::BoxFuture;
use crate::{GatewayError, Settings};

const PATH_HEADER: &str = "Iotseal-Path";
const PEER_HEADER: &str = "Iotseal-Peer";
/// A forwarded hello's source key (hex, docs/protocol.md §17): the owner checks and issues
/// Address cookies for the same source as the receiving node would.
const SOURCE_HEADER: &str = "Iotseal-Source";
/// The owner's answer: `bytes` (the payload is the answer), `refused` (the payload is the
/// alert) or `rate_limited`; each binding turns it into its transport's answer.
const ANSWER_HEADER: &str = "Iotseal-Answer";
/// Which binding a forwarded request came in on: `http` or `mqtt`.
const BINDING_HEADER: &str = "Iotseal-Binding";
/// How often every node re-reads the device registry from the shared storage.
const REGISTRY_RESYNC: Duration = Duration::from_secs(30);
/// Most members remembered (the nodes view); the longest-unseen are dropped first.
const MAX_MEMBERS: usize = 256;
/// A member not seen for this many lease periods is forgotten.
const FORGET_AFTER_LEASES: u32 = 10;

/// Where a device request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Handled here whoever owns what (malformed requests, not a device route).
    Here,
    /// M1: the owner of this partition (by the hash of the first hello).
    Hello(u32),
    /// M3 or records: the owner of the partition of this session id.
    Session(u32),
}

#[derive(Default)]
struct Counters {
    forwarded_out: AtomicU64,
    forwarded_in: AtomicU64,
    no_owner: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    claimed: AtomicU64,
    /// MQTT requests the broker delivered here, processed here.
    mqtt_here: AtomicU64,
    /// MQTT requests the broker delivered here, forwarded to their owner.
    mqtt_forwarded: AtomicU64,
}

struct Owned {
    revision: u64,
    subscription: tokio::task::JoinHandle<()>,
}

/// What a node tells about itself when it answers a membership ping.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct MemberInfo {
    node: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    owned: Vec<u32>,
    #[serde(default)]
    forwarded_out: u64,
    #[serde(default)]
    forwarded_in: u64,
}

/// A member as this node last saw it.
#[derive(Clone, Debug)]
struct Member {
    info: MemberInfo,
    /// Unix time of its last answer, ms.
    last_seen_ms: u64,
    /// Whether it answered the latest ping round.
    alive: bool,
}

/// One node of the cluster as `GET /v1/cluster` and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    /// The node's name.
    pub node: String,
    /// The URL it serves devices at (as it reports it).
    pub address: String,
    /// The partitions it owned at its last answer.
    pub owned: Vec<u32>,
    /// Unix time of its last heartbeat answer, ms.
    pub last_heartbeat_ms: u64,
    /// Whether it answered the latest heartbeat round.
    pub alive: bool,
    /// Whether this is the node answering.
    pub this_node: bool,
    /// Requests it forwarded to owners, as it last reported.
    pub forwarded_out: u64,
    /// Requests it served for other nodes, as it last reported.
    pub forwarded_in: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The answer of a forwarded request.
enum Forwarded {
    /// The owner answered.
    Answer(Answer),
    /// Nobody subscribes to the partition's subject now.
    NoOwner,
    /// A timeout or a NATS error: the device should retry.
    Failed,
}

/// One node's membership in a cluster.
pub struct Cluster {
    node_id: String,
    partitions: u32,
    prefix: String,
    lease: Duration,
    forward_timeout: Duration,
    client: async_nats::Client,
    owners: kv::Store,
    provider: CryptoProvider,
    epoch: Instant,
    /// Per partition: owned until this many ms after `epoch` (0: not owned).
    deadlines: Vec<AtomicU64>,
    owned: Mutex<HashMap<u32, Owned>>,
    live_nodes: AtomicU64,
    counters: Counters,
    /// The URL this node serves devices at (shown to the other nodes).
    address: String,
    /// The members seen by the heartbeats (this node included).
    members: Mutex<HashMap<String, Member>>,
    /// The task answering membership pings (ended when the node leaves).
    members_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The engine forwarded requests enter (weak: the engine holds the cluster as its
    /// router and session-id source).
    pipeline: OnceLock<std::sync::Weak<Pipeline>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("partitions", &self.partitions)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn cfg_err(m: impl std::fmt::Display) -> GatewayError {
    GatewayError::Config(format!("cluster: {m}"))
}

/// FNV-1a: a stable, cheap hash to spread partitions over nodes (no security role).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

async fn bucket(
    js: &async_nats::jetstream::Context,
    name: String,
    max_age: Duration,
) -> Result<kv::Store, GatewayError> {
    use async_nats::jetstream::stream;
    // The KV bucket's stream, made here rather than by `create_key_value`, whose account
    // query does not parse the answers of NATS servers before 2.10 (Debian 12 ships 2.9).
    let cfg = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    if let Err(e) = js.get_or_create_stream(cfg).await {
        return Err(cfg_err(format!("bucket {name}: {e}")));
    }
    js.get_key_value(name.clone())
        .await
        .map_err(|e| cfg_err(format!("bucket {name}: {e}")))
}

impl Cluster {
    /// Connects to NATS and opens (or creates) the cluster's buckets. `address` is the URL
    /// this node serves devices at, shown in the nodes view.
    pub async fn connect(settings: &Settings, address: &str) -> Result<Arc<Self>, GatewayError> {
        let c: &ClusterSettings = &settings.cluster;
        let provider = iotseal_crypto_awslc::default_provider();
        let node_id = if c.node_id.is_empty() {
            let r = provider
                .random_vec(6)
                .map_err(|e| GatewayError::Key(e.to_string()))?;
            format!("node-{}", hex::encode(r))
        } else {
            c.node_id.clone()
        };
        let forward_timeout = Duration::from_millis(c.forward_timeout_ms);
        let client = async_nats::ConnectOptions::new()
            .name(format!("iotseal-gateway {node_id}"))
            .request_timeout(Some(forward_timeout))
            .connect(c.url.as_str())
            .await
            .map_err(|e| cfg_err(format!("connecting to {}: {e}", c.url)))?;
        let js = async_nats::jetstream::new(client.clone());
        let lease = Duration::from_millis(c.lease_ms);
        let owners = bucket(&js, format!("{}_owners", c.prefix), lease).await?;
        let cluster = Arc::new(Self {
            node_id,
            partitions: c.partitions,
            prefix: c.prefix.clone(),
            lease,
            forward_timeout,
            client,
            owners,
            provider,
            epoch: Instant::now(),
            deadlines: (0..c.partitions).map(|_| AtomicU64::new(0)).collect(),
            owned: Mutex::new(HashMap::new()),
            live_nodes: AtomicU64::new(1),
            counters: Counters::default(),
            address: address.to_string(),
            members: Mutex::new(HashMap::new()),
            members_task: Mutex::new(None),
            pipeline: OnceLock::new(),
        });
        // Answer membership pings.
        let mut members = cluster
            .client
            .subscribe(format!("{}.members", c.prefix))
            .await
            .map_err(|e| cfg_err(format!("subscribing: {e}")))?;
        let weak = Arc::downgrade(&cluster);
        *cluster
            .members_task
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tokio::spawn(async move {
            while let Some(m) = members.next().await {
                let Some(c) = weak.upgrade() else { break };
                if let Some(reply) = m.reply {
                    let me = serde_json::to_vec(&c.self_info()).unwrap_or_default();
                    let _ = c.client.publish(reply, me.into()).await;
                }
            }
        }));
        cluster.heartbeat().await;
        info!(node = %cluster.node_id, partitions = c.partitions, url = %c.url, "joined the cluster");
        Ok(cluster)
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Partitions this node owns now, in order.
    pub fn owned_partitions(&self) -> Vec<u32> {
        // One clock read for the whole scan (this runs before every hello).
        let now = self.now_ms();
        (0..self.partitions)
            .filter(|p| {
                self.deadlines
                    .get(*p as usize)
                    .is_some_and(|d| d.load(Ordering::Relaxed) > now)
            })
            .collect()
    }

    /// Live nodes as last seen (this one included).
    pub fn live_nodes(&self) -> u64 {
        self.live_nodes.load(Ordering::Relaxed)
    }

    /// Requests this node forwarded to an owner, and requests it served for other nodes.
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.counters.forwarded_out.load(Ordering::Relaxed),
            self.counters.forwarded_in.load(Ordering::Relaxed),
        )
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn owns(&self, p: u32) -> bool {
        self.deadlines
            .get(p as usize)
            .is_some_and(|d| d.load(Ordering::Relaxed) > self.now_ms())
    }

    /// Whether a session id falls in a partition this node owns.
    pub fn owns_session(&self, session_id: u32) -> bool {
        self.owns(session_id % self.partitions)
    }

    /// The core's session-id policy for this node now: draw only inside the partitions it
    /// owns. An error (`NoOwnedPartition`) while it owns none.
    pub fn session_id_policy(&self) -> Result<SessionIdPolicy, iotseal_proto::Error> {
        SessionIdPolicy::partitioned(self.partitions, self.owned_partitions())
    }

    fn key(p: u32) -> String {
        format!("p{p}")
    }

    fn subject(&self, p: u32) -> String {
        format!("{}.part.{p}", self.prefix)
    }

    fn registry_subject(&self) -> String {
        format!("{}.registry", self.prefix)
    }

    /// Where a device request goes.
    fn target(&self, kind: Kind, body: &[u8]) -> Target {
        let part = |h: &[u8]| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[..4]);
            u32::from_be_bytes(b) % self.partitions
        };
        match (kind, body.first()) {
            (Kind::Handshake, Some(0x01)) => match Hello::decode(body) {
                Ok(h) => match h.cookie.map(Cookie::decode) {
                    Some(Ok(c)) => Target::Hello(part(&c.hello_hash)),
                    Some(Err(_)) => Target::Here,
                    None => Target::Hello(part(&self.provider.hash.hash(body))),
                },
                Err(_) => Target::Here,
            },
            (Kind::Handshake, Some(0x04)) if body.len() >= 5 => {
                let id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
                Target::Session(id % self.partitions)
            }
            (Kind::Records, _) => match batch::split(body) {
                Ok(recs) => match recs.first().map(|r| Header::peek_session_id(r)) {
                    Some(Ok(id)) => Target::Session(id % self.partitions),
                    _ => Target::Here,
                },
                Err(_) => Target::Here,
            },
            _ => Target::Here,
        }
    }

    // -----------------------------------------------------------------------------------
    // Start

    /// Starts the lease keeper, the forwarded request servers and the registry sync for
    /// `pipeline` (whose router and session-id source this cluster is). They stop when
    /// `shutdown` turns true (the leases are then released, so other nodes take the
    /// partitions over at once).
    pub(crate) fn start(
        self: &Arc<Self>,
        pipeline: &Arc<Pipeline>,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = self.pipeline.set(Arc::downgrade(pipeline));
        tokio::spawn(
            self.clone()
                .lease_keeper(pipeline.clone(), shutdown.clone()),
        );
        tokio::spawn(self.clone().registry_sync(pipeline.clone(), shutdown));
    }

    // -----------------------------------------------------------------------------------
    // Leases

    async fn heartbeat(&self) {
        // Ping the members and count the answers for a short while.
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return;
        };
        let subject = format!("{}.members", self.prefix);
        if self
            .client
            .publish_with_reply(subject, inbox, Bytes::new())
            .await
            .is_err()
        {
            return;
        }
        let mut seen: HashMap<String, MemberInfo> = HashMap::new();
        let wait = (self.lease / 20).max(Duration::from_millis(100));
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
            if let Some(info) = parse_member(&m.payload, self.partitions)
                && seen.len() < MAX_MEMBERS
            {
                seen.insert(info.node.clone(), info);
            }
        }
        let _ = sub.unsubscribe().await;
        if !seen.is_empty() {
            self.live_nodes.store(seen.len() as u64, Ordering::Relaxed);
            self.note_members(seen, unix_ms());
        }
    }

    /// Records a heartbeat round: who answered is alive; who did not stays listed as not
    /// alive until it is forgotten.
    fn note_members(&self, seen: HashMap<String, MemberInfo>, now_ms: u64) {
        let forget = (self.lease * FORGET_AFTER_LEASES).as_millis() as u64;
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        note_members(&mut m, seen, now_ms, forget);
    }

    /// What this node tells the others about itself.
    fn self_info(&self) -> MemberInfo {
        let (out, inn) = self.forwarded();
        MemberInfo {
            node: self.node_id.clone(),
            address: self.address.clone(),
            owned: self.owned_partitions(),
            forwarded_out: out,
            forwarded_in: inn,
        }
    }

    /// Every node this node knows of, by name: the live ones as of the latest heartbeat
    /// round, and the ones that stopped answering (`alive: false`) until they are forgotten
    /// (ten lease periods). This node is always listed with its current state.
    pub fn nodes(&self) -> Vec<NodeView> {
        let me = self.self_info();
        let mut v: Vec<NodeView> = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| m.info.node != me.node)
            .map(|m| NodeView {
                node: m.info.node.clone(),
                address: m.info.address.clone(),
                owned: m.info.owned.clone(),
                last_heartbeat_ms: m.last_seen_ms,
                alive: m.alive,
                this_node: false,
                forwarded_out: m.info.forwarded_out,
                forwarded_in: m.info.forwarded_in,
            })
            .collect();
        v.push(NodeView {
            node: me.node,
            address: me.address,
            owned: me.owned,
            last_heartbeat_ms: unix_ms(),
            alive: true,
            this_node: true,
            forwarded_out: me.forwarded_out,
            forwarded_in: me.forwarded_in,
        });
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    async fn lease_keeper(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let every = self.lease / 3;
        // Let the other nodes' heartbeats show before claiming a share.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut shutdown) => {}
        }
        let mut taken: HashMap<u32, Instant> = HashMap::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.tick(&pipeline, &mut taken).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        self.release_all().await;
    }

    /// Rendezvous score: each node prefers different partitions, so claims rarely collide.
    fn score(&self, p: u32) -> u64 {
        fnv(&[self.node_id.as_bytes(), &p.to_be_bytes()])
    }

    async fn tick(self: &Arc<Self>, pipeline: &Pipeline, taken: &mut HashMap<u32, Instant>) {
        let op = self.lease / 4;
        // Stop serving before anybody else may claim: the lease counts from the start of the
        // renewal, minus a margin for timer slack.
        let valid = self.lease.saturating_sub(self.lease / 5);
        self.heartbeat().await;
        let share = self.partitions.div_ceil(self.live_nodes() as u32) as usize;

        // Renew.
        let mine: Vec<(u32, u64)> = {
            let o = self.owned.lock().unwrap_or_else(|e| e.into_inner());
            o.iter().map(|(p, x)| (*p, x.revision)).collect()
        };
        for (p, rev) in mine {
            let t0 = self.now_ms();
            let r = tokio::time::timeout(
                op,
                self.owners
                    .update(Self::key(p), self.node_id.clone().into(), rev),
            )
            .await;
            match r {
                Ok(Ok(rev)) => {
                    self.deadlines[p as usize]
                        .store(t0 + valid.as_millis() as u64, Ordering::Relaxed);
                    if let Some(o) = self
                        .owned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&p)
                    {
                        o.revision = rev;
                    }
                }
                Ok(Err(e)) => {
                    warn!(node = %self.node_id, partition = p, error = %e, "lease lost");
                    self.lose(pipeline, p);
                }
                Err(_) => {
                    // NATS is slow or away: keep serving until the lease runs out.
                    if !self.owns(p) {
                        warn!(node = %self.node_id, partition = p, "lease expired unrenewed");
                        self.lose(pipeline, p);
                    }
                }
            }
        }

        let mut count = self.owned.lock().unwrap_or_else(|e| e.into_inner()).len();
        // Too many (a node joined): give back the ones we prefer least.
        if count > share {
            let mut mine: Vec<(u32, u64)> = {
                let o = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                o.iter().map(|(p, x)| (*p, x.revision)).collect()
            };
            mine.sort_by_key(|(p, _)| self.score(*p));
            for (p, rev) in mine.into_iter().take(count - share) {
                self.lose(pipeline, p);
                let _ = tokio::time::timeout(
                    op,
                    self.owners.delete_expect_revision(Self::key(p), Some(rev)),
                )
                .await;
                info!(node = %self.node_id, partition = p, "partition released (rebalance)");
            }
            count = share;
        }

        // Too few: claim free partitions, the ones we prefer most first.
        if count < share {
            let now = Instant::now();
            taken.retain(|_, t| *t > now);
            let mut cand: Vec<u32> = (0..self.partitions)
                .filter(|p| !self.is_held(*p) && !taken.contains_key(p))
                .collect();
            cand.sort_by_key(|p| std::cmp::Reverse(self.score(*p)));
            for p in cand {
                if count >= share {
                    break;
                }
                let t0 = self.now_ms();
                let r = tokio::time::timeout(
                    op,
                    self.owners
                        .create(Self::key(p), self.node_id.clone().into()),
                )
                .await;
                match r {
                    Ok(Ok(rev)) => {
                        if self.gain(p, rev, t0 + valid.as_millis() as u64).await {
                            count += 1;
                        }
                    }
                    Ok(Err(e)) => {
                        if !matches!(e.kind(), kv::CreateErrorKind::AlreadyExists) {
                            warn!(node = %self.node_id, partition = p, error = %e, "claim failed");
                        }
                        // Held by another node: do not ask again for a while.
                        taken.insert(p, now + self.lease / 2);
                    }
                    Err(_) => {
                        taken.insert(p, now + self.lease / 2);
                    }
                }
            }
        }
    }

    fn is_held(&self, p: u32) -> bool {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&p)
    }

    /// Takes a partition: subscribes to its subject, then serves it.
    async fn gain(self: &Arc<Self>, p: u32, revision: u64, deadline: u64) -> bool {
        let sub = match self.client.subscribe(self.subject(p)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(partition = p, error = %e, "subscribing failed");
                return false;
            }
        };
        let _ = self.client.flush().await;
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut sub = sub;
            while let Some(msg) = sub.next().await {
                tokio::spawn(me.clone().serve_forwarded(msg));
            }
        });
        self.owned.lock().unwrap_or_else(|e| e.into_inner()).insert(
            p,
            Owned {
                revision,
                subscription: task,
            },
        );
        self.deadlines[p as usize].store(deadline, Ordering::Relaxed);
        self.counters.claimed.fetch_add(1, Ordering::Relaxed);
        debug!(node = %self.node_id, partition = p, "partition claimed");
        true
    }

    /// Stops serving a partition. Its sessions are no longer reachable (requests for them go
    /// to the new owner, which answers UnknownSession); they expire here with the idle
    /// timeout.
    fn lose(&self, pipeline: &Pipeline, p: u32) {
        self.deadlines[p as usize].store(0, Ordering::Relaxed);
        if let Some(o) = self
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&p)
        {
            o.subscription.abort();
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        pipeline.refresh_gauges();
    }

    async fn release_all(&self) {
        // A stopped node no longer answers membership pings (the others show it as not
        // alive), even if something still holds this value.
        if let Some(t) = self
            .members_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        let mine: Vec<(u32, Owned)> = self
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (p, o) in mine {
            self.deadlines[p as usize].store(0, Ordering::Relaxed);
            o.subscription.abort();
            let _ = tokio::time::timeout(
                self.lease / 4,
                self.owners
                    .delete_expect_revision(Self::key(p), Some(o.revision)),
            )
            .await;
        }
        info!(node = %self.node_id, "left the cluster");
    }

    // -----------------------------------------------------------------------------------
    // Forwarding

    /// Sends a request to the owner of partition `p` over NATS request/reply.
    async fn forward(&self, p: u32, req: &Request) -> Forwarded {
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            PATH_HEADER,
            match req.kind {
                Kind::Handshake => "/v1/handshake",
                Kind::Records => "/v1/records",
            },
        );
        h.insert(BINDING_HEADER, req.binding.as_str());
        if let Some(peer) = req.peer {
            h.insert(PEER_HEADER, peer.to_string());
        }
        if let Some(s) = req.source {
            h.insert(SOURCE_HEADER, hex::encode(s.0));
        }
        let body = req.body.clone();
        self.counters.forwarded_out.fetch_add(1, Ordering::Relaxed);
        let r = tokio::time::timeout(
            self.forward_timeout,
            self.client.request_with_headers(self.subject(p), h, body),
        )
        .await;
        let msg = match r {
            Ok(Ok(m)) => m,
            Ok(Err(e))
                if matches!(e.kind(), async_nats::client::RequestErrorKind::NoResponders) =>
            {
                self.counters.no_owner.fetch_add(1, Ordering::Relaxed);
                return Forwarded::NoOwner;
            }
            Ok(Err(e)) if matches!(e.kind(), async_nats::client::RequestErrorKind::TimedOut) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                return Forwarded::Failed;
            }
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                return Forwarded::Failed;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "forwarding failed");
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Forwarded::Failed;
            }
        };
        let hv = |n: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(n))
                .map(|v| v.as_str().to_string())
        };
        let answer = match hv(ANSWER_HEADER).as_deref() {
            Some("bytes") => Answer::Bytes(msg.payload),
            Some("rate_limited") => Answer::RateLimited,
            Some("refused") => Answer::Refused(decode_alert(&msg.payload).unwrap_or(Refusal::Busy)),
            _ => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Forwarded::Failed;
            }
        };
        Forwarded::Answer(answer)
    }

    /// Where a request is served: `None` here, else the owner's answer (or the refusal when
    /// it cannot be reached or nobody owns the partition).
    async fn route_request(&self, req: &Request) -> Option<Answer> {
        let target = self.target(req.kind, &req.body);
        let here = |c: &Self| {
            if req.binding == Binding::Mqtt {
                c.counters.mqtt_here.fetch_add(1, Ordering::Relaxed);
            }
            None
        };
        let p = match target {
            Target::Here => return here(self),
            Target::Hello(p) | Target::Session(p) if self.owns(p) => return here(self),
            Target::Hello(p) | Target::Session(p) => p,
        };
        let r = self.forward(p, req).await;
        if req.binding == Binding::Mqtt && !matches!(r, Forwarded::NoOwner) {
            self.counters.mqtt_forwarded.fetch_add(1, Ordering::Relaxed);
        }
        match r {
            Forwarded::Answer(a) => Some(a),
            Forwarded::Failed => Some(Answer::Refused(Refusal::Busy)),
            // Nobody owns the partition right now (a node died, its lease has not run out).
            Forwarded::NoOwner => match target {
                // Any owner can answer a hello (it draws the session id in its partitions).
                Target::Hello(_) if !self.owned_partitions().is_empty() => here(self),
                Target::Hello(_) => Some(Answer::Refused(Refusal::Busy)),
                // The session died with its node: the device handshakes again.
                _ => Some(Answer::Refused(Refusal::UnknownSession)),
            },
        }
    }

    /// Serves a request forwarded by another node: it enters this node's pipeline as if it
    /// had arrived here over its binding, and the answer goes back.
    async fn serve_forwarded(self: Arc<Self>, msg: async_nats::Message) {
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        self.counters.forwarded_in.fetch_add(1, Ordering::Relaxed);
        let hv = |n: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(n))
                .map(|v| v.as_str().to_string())
        };
        let kind = match hv(PATH_HEADER).as_deref() {
            Some("/v1/handshake") => Kind::Handshake,
            Some("/v1/records") => Kind::Records,
            _ => return,
        };
        let binding = match hv(BINDING_HEADER).as_deref() {
            Some("mqtt") => Binding::Mqtt,
            _ => Binding::Http,
        };
        let Some(pipeline) = self.pipeline.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        // The hello's source key and the peer, as the receiving node saw them.
        let source = hv(SOURCE_HEADER)
            .and_then(|v| hex::decode(v).ok())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(SourceKey);
        let peer = hv(PEER_HEADER).and_then(|p| p.parse::<SocketAddr>().ok());
        let req = Request {
            binding,
            kind,
            peer,
            source,
            body: msg.payload.clone(),
        };
        let answer = if req.body.len() > pipeline.settings.limits.max_body {
            Answer::Refused(Refusal::Malformed)
        } else {
            pipeline.handle_local(req).await
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            ANSWER_HEADER,
            match answer {
                Answer::Bytes(_) => "bytes",
                Answer::Refused(_) => "refused",
                Answer::RateLimited => "rate_limited",
            },
        );
        if let Err(e) = self
            .client
            .publish_with_headers(reply, h, answer.to_payload())
            .await
        {
            debug!(error = %e, "answering a forwarded request failed");
        }
    }

    // -----------------------------------------------------------------------------------
    // Registry

    /// Tells the other nodes that device `id` was registered or revoked here.
    pub(crate) async fn announce_device(&self, id: &str) {
        let _ = self
            .client
            .publish(self.registry_subject(), Bytes::from(id.to_string()))
            .await;
    }

    async fn registry_sync(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sub = match self.client.subscribe(self.registry_subject()).await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "subscribing to registry changes failed");
                None
            }
        };
        let mut iv = tokio::time::interval(REGISTRY_RESYNC);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = iv.tick() => {
                    if let Ok(all) = pipeline.storage.devices().await {
                        for d in &all {
                            pipeline.apply_device(d);
                        }
                    }
                }
                Some(m) = async { match sub.as_mut() { Some(s) => s.next().await, None => None } } => {
                    let id = String::from_utf8_lossy(&m.payload).to_string();
                    if let Ok(Some(d)) = pipeline.storage.device(id).await {
                        pipeline.apply_device(&d);
                    }
                }
            }
        }
    }

    /// This node's cluster state for one scrape of `GET /metrics`.
    pub(crate) fn metrics(&self) -> crate::metrics::ClusterMetrics {
        let c = &self.counters;
        crate::metrics::ClusterMetrics {
            node: self.node_id.clone(),
            partitions_owned: self.owned_partitions().len() as u64,
            live_nodes: self.live_nodes(),
            forwarded_out: c.forwarded_out.load(Ordering::Relaxed),
            forwarded_in: c.forwarded_in.load(Ordering::Relaxed),
            no_owner: c.no_owner.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            claimed: c.claimed.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            mqtt_here: c.mqtt_here.load(Ordering::Relaxed),
            mqtt_forwarded: c.mqtt_forwarded.load(Ordering::Relaxed),
        }
    }

    /// This node's cluster state as JSON (`GET /v1/cluster`).
    pub(crate) fn status_json(&self) -> serde_json::Value {
        let (out, inn) = self.forwarded();
        serde_json::json!({
            "node": self.node_id,
            "address": self.address,
            "nodes": self.live_nodes(),
            "partitions": self.partitions,
            "owned": self.owned_partitions(),
            "forwarded_out": out,
            "forwarded_in": inn,
            "members": self.nodes(),
        })
    }
}

/// A membership answer: a JSON self-description, or the bare node name older nodes send.
/// Bounded whatever a peer sends: a name of 1 to 128 bytes (else `None`), an address of at
/// most 256 bytes (else dropped), only partitions below `partitions`.
fn parse_member(payload: &[u8], partitions: u32) -> Option<MemberInfo> {
    let mut info = serde_json::from_slice::<MemberInfo>(payload).unwrap_or_else(|_| MemberInfo {
        node: String::from_utf8_lossy(payload).into_owned(),
        ..MemberInfo::default()
    });
    info.owned.retain(|p| *p < partitions);
    info.owned.sort_unstable();
    info.owned.dedup();
    if info.address.len() > 256 {
        info.address.clear();
    }
    (!info.node.is_empty() && info.node.len() <= 128).then_some(info)
}

/// A heartbeat round into the member table: who answered is alive (and seen now); the others
/// are not alive, and forgotten `forget_ms` after they were last seen; at most
/// [`MAX_MEMBERS`] are kept (the longest-unseen dead ones go first).
fn note_members(
    m: &mut HashMap<String, Member>,
    seen: HashMap<String, MemberInfo>,
    now_ms: u64,
    forget_ms: u64,
) {
    for v in m.values_mut() {
        v.alive = false;
    }
    for (node, info) in seen {
        m.insert(
            node,
            Member {
                info,
                last_seen_ms: now_ms,
                alive: true,
            },
        );
    }
    m.retain(|_, v| v.alive || now_ms.saturating_sub(v.last_seen_ms) <= forget_ms);
    while m.len() > MAX_MEMBERS {
        let Some(oldest) = m
            .iter()
            .filter(|(_, v)| !v.alive)
            .min_by_key(|(_, v)| v.last_seen_ms)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        m.remove(&oldest);
    }
}

/// Completes once shutdown was requested.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Route for Cluster {
    fn route<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Option<Answer>> {
        Box::pin(self.route_request(req))
    }
}

impl SessionIds for Cluster {
    fn policy(&self) -> Result<SessionIdPolicy, iotseal_proto::Error> {
        self.session_id_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(names: &[&str]) -> HashMap<String, MemberInfo> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    MemberInfo {
                        node: n.to_string(),
                        ..MemberInfo::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn members_go_quiet_then_are_forgotten() {
        let mut m = HashMap::new();
        note_members(&mut m, seen(&["a", "b", "c"]), 1000, 5000);
        assert!(m.values().all(|v| v.alive && v.last_seen_ms == 1000));
        // b stops answering: listed, not alive, last seen at 1000.
        note_members(&mut m, seen(&["a", "c"]), 2000, 5000);
        assert_eq!(m.len(), 3);
        assert!(!m["b"].alive);
        assert_eq!(m["b"].last_seen_ms, 1000);
        assert!(m["a"].alive && m["a"].last_seen_ms == 2000);
        // Still listed at exactly the limit, gone after it.
        note_members(&mut m, seen(&["a", "c"]), 6000, 5000);
        assert!(m.contains_key("b"));
        note_members(&mut m, seen(&["a", "c"]), 6001, 5000);
        assert!(!m.contains_key("b"));
        // It comes back: alive again.
        note_members(&mut m, seen(&["a", "b"]), 7000, 5000);
        assert!(m["b"].alive && !m["c"].alive);
    }

    #[test]
    fn the_member_table_is_bounded() {
        let mut m = HashMap::new();
        let many: Vec<String> = (0..MAX_MEMBERS).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        note_members(&mut m, seen(&refs), 1000, u64::MAX);
        // Others answer later; the first ones stop: the table keeps MAX_MEMBERS, dropping the
        // longest-unseen dead ones, never a live one.
        note_members(&mut m, seen(&["x", "y"]), 2000, u64::MAX);
        assert_eq!(m.len(), MAX_MEMBERS);
        assert!(m["x"].alive && m["y"].alive);
    }

    #[test]
    fn membership_answers_are_parsed_and_bounded() {
        // Older nodes answer with their bare name.
        let old = parse_member(b"gw-old", 8).unwrap();
        assert_eq!((old.node.as_str(), old.owned.len()), ("gw-old", 0));
        let v = parse_member(
            br#"{"node":"n1","address":"https://a","owned":[3,1,1,9,200],"forwarded_in":4}"#,
            8,
        )
        .unwrap();
        assert_eq!(v.node, "n1");
        assert_eq!(v.address, "https://a");
        assert_eq!(
            v.owned,
            [1, 3],
            "out-of-range and repeated partitions dropped"
        );
        assert_eq!(v.forwarded_in, 4);
        assert!(parse_member(b"", 8).is_none());
        assert!(parse_member(&[b'x'; 129], 8).is_none());
        let long = format!(r#"{{"node":"n","address":"{}"}}"#, "é".repeat(200));
        assert_eq!(parse_member(long.as_bytes(), 8).unwrap().address, "");
    }
}
