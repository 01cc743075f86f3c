//! The writer: group commit over the single write connection.
//!
//! Requests arrive over a bounded channel. The writer takes one request (waiting), then every
//! request already waiting, up to `max_batch` readings, and runs them all in one transaction,
//! each inside its own savepoint:
//!
//! - a request that fails (unknown device, duplicate registration, a constraint) is rolled back
//!   to its savepoint and only its caller gets the error; the others still commit;
//! - a request that hits a deadlock or serialization failure (several gateways writing the same
//!   rows) is rolled back to its savepoint and run again, a few times;
//! - a failure that ends the transaction (a `COMMIT` that fails, a deferred constraint, a lost
//!   connection) rolls back everything and every caller of the batch gets the error.
//!
//! Replies are sent only after `COMMIT` returned, so a caller that got `Ok` holds a committed
//! write, and a caller that got `Err` wrote nothing (or, if the connection was lost during the
//! `COMMIT`, possibly everything: the readings are then deduplicated when retransmitted).

use std::collections::{BTreeMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Statement};

use super::{pg, schema};
use crate::storage::{StorageError, StoreOutcome};

/// Times a request is run again after a deadlock or a serialization failure.
const RETRIES: u32 = 3;

/// A reading checked and converted for PostgreSQL (all integers fit in i64).
pub(super) struct ReadingRow {
    pub(super) device_id: String,
    pub(super) msg_id: i64,
    pub(super) device_time_ms: i64,
    pub(super) received_ms: i64,
    pub(super) payload: Vec<u8>,
    pub(super) values: Vec<(String, f64)>,
}

/// A device checked and converted for PostgreSQL.
pub(super) struct DeviceRow {
    pub(super) id: String,
    pub(super) alg: &'static str,
    pub(super) public_key: Vec<u8>,
    pub(super) revoked: bool,
    pub(super) created_ms: i64,
    pub(super) last_seen_ms: Option<i64>,
}

/// A session event converted for PostgreSQL.
pub(super) struct EventRow {
    pub(super) at_ms: i64,
    pub(super) device_id: Option<String>,
    pub(super) session_id: i64,
    pub(super) event: String,
    pub(super) suite: String,
}

/// What a request asks for.
pub(super) enum Request {
    Store(Vec<ReadingRow>),
    AddDevice(DeviceRow),
    Revoke(String),
    Touch(String, i64),
    Event(EventRow),
    /// Answers once everything queued before it is committed.
    Flush,
}

/// What a request got.
#[derive(Debug)]
pub(super) enum Answer {
    Stored(StoreOutcome),
    Changed(bool),
    Done,
}

/// One request to the writer and where its answer goes.
pub(super) struct Op {
    pub(super) request: Request,
    pub(super) reply: oneshot::Sender<Result<Answer, StorageError>>,
}

impl Op {
    /// Share of the `max_batch` budget.
    fn weight(&self) -> usize {
        match &self.request {
            Request::Store(readings) => readings.len().max(1),
            _ => 1,
        }
    }
}

/// The statements of the write connection, prepared once per connection.
struct Statements {
    known_devices: Statement,
    insert_readings: Statement,
    insert_values: Statement,
    update_devices: Statement,
    device_exists: Statement,
    device_by_key: Statement,
    insert_device: Statement,
    revoke: Statement,
    touch: Statement,
    insert_event: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            known_devices: c
                .prepare("SELECT id FROM devices WHERE id = ANY($1::text[])")
                .await?,
            insert_readings: c
                .prepare(
                    "INSERT INTO readings (device_id, msg_id, device_time_ms, received_ms, payload) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                     $5::bytea[]) ON CONFLICT (device_id, msg_id) DO NOTHING \
                     RETURNING device_id, msg_id",
                )
                .await?,
            insert_values: c
                .prepare(
                    "INSERT INTO reading_values (device_id, msg_id, idx, sensor, value) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::text[], \
                     $5::double precision[])",
                )
                .await?,
            // Ids in order, so that gateways sharing the database lock the rows in one order.
            update_devices: c
                .prepare(
                    "UPDATE devices d SET readings = d.readings + u.n, \
                     last_seen_ms = greatest(d.last_seen_ms, u.last) \
                     FROM (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
                     AS t (id, n, last) ORDER BY id) u WHERE d.id = u.id",
                )
                .await?,
            device_exists: c.prepare("SELECT 1 FROM devices WHERE id = $1").await?,
            device_by_key: c
                .prepare("SELECT id FROM devices WHERE public_key = $1")
                .await?,
            insert_device: c
                .prepare(
                    "INSERT INTO devices (id, alg, public_key, revoked, created_ms, \
                     last_seen_ms, readings) VALUES ($1, $2, $3, $4, $5, $6, 0)",
                )
                .await?,
            revoke: c
                .prepare("UPDATE devices SET revoked = true WHERE id = $1")
                .await?,
            touch: c
                .prepare(
                    "UPDATE devices SET last_seen_ms = greatest(last_seen_ms, $2) WHERE id = $1",
                )
                .await?,
            insert_event: c
                .prepare(
                    "INSERT INTO session_events (at_ms, device_id, session_id, event, suite) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?,
        })
    }
}

/// The write connection (reopened when it breaks).
pub(super) struct Writer {
    config: Config,
    conn: Option<(Client, Statements)>,
}

impl Writer {
    /// Connects, migrates and prepares.
    pub(super) async fn open(config: Config) -> Result<Self, StorageError> {
        let mut client = schema::connect(&config).await?;
        schema::migrate(&mut client).await?;
        let stmts = Statements::prepare(&client).await.map_err(pg)?;
        Ok(Self {
            config,
            conn: Some((client, stmts)),
        })
    }

    /// The connection, reopened if it was lost.
    async fn connection(&mut self) -> Result<&(Client, Statements), StorageError> {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = schema::connect(&self.config).await?;
            let stmts = Statements::prepare(&client).await.map_err(pg)?;
            tracing::info!("postgres: write connection reopened");
            self.conn = Some((client, stmts));
        }
        Ok(self.conn.as_ref().expect("connected above"))
    }
}

/// The writer's body: runs until every sender is gone and the queue is drained.
pub(super) async fn run(mut w: Writer, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut carry: Option<Op> = None;
    loop {
        let first = match carry.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => break,
            },
        };
        let mut weight = first.weight();
        let mut batch = vec![first];
        while weight < max_batch {
            let Ok(op) = rx.try_recv() else { break };
            let w = op.weight();
            if weight + w > max_batch {
                carry = Some(op);
                break;
            }
            weight += w;
            batch.push(op);
        }
        run_batch(&mut w, batch).await;
    }
}

/// How a request failed.
enum Failure {
    /// Only this request: its savepoint was rolled back.
    Request(StorageError),
    /// The transaction (or the connection) is gone.
    Fatal(StorageError),
}

/// An error of a request's own work.
enum ExecError {
    /// Refused before touching the database as the caller asked.
    Invalid(StorageError),
    /// The database said no.
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ExecError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// One transaction for the whole batch; a savepoint per request.
async fn run_batch(w: &mut Writer, ops: Vec<Op>) {
    let (client, stmts) = match w.connection().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(requests = ops.len(), "postgres: write batch failed: {e}");
            for op in ops {
                let _ = op.reply.send(Err(StorageError(e.0.clone())));
            }
            return;
        }
    };
    let mut results: Vec<Result<Answer, StorageError>> = Vec::with_capacity(ops.len());
    let mut fatal: Option<StorageError> = client.batch_execute("BEGIN").await.err().map(pg);
    for op in &ops {
        if fatal.is_some() {
            break;
        }
        match run_request(client, stmts, &op.request).await {
            Ok(a) => results.push(Ok(a)),
            Err(Failure::Request(e)) => results.push(Err(e)),
            Err(Failure::Fatal(e)) => fatal = Some(e),
        }
    }
    if fatal.is_none()
        && let Err(e) = client.batch_execute("COMMIT").await
    {
        fatal = Some(pg(e));
    }
    let Some(err) = fatal else {
        for (op, r) in ops.into_iter().zip(results) {
            // The caller may have gone away: its loss.
            let _ = op.reply.send(r);
        }
        return;
    };
    let err = if client.is_closed() {
        StorageError(format!(
            "{} (connection lost: the write transaction was rolled back or, if the loss \
             happened during its COMMIT, possibly committed)",
            err.0
        ))
    } else {
        // After a failed COMMIT the server has already rolled back: this only warns.
        if let Err(e) = client.batch_execute("ROLLBACK").await {
            tracing::error!(
                "postgres: rollback after a failed write batch failed: {}",
                pg(e)
            );
        }
        StorageError(format!("{} (write transaction rolled back)", err.0))
    };
    tracing::warn!(requests = ops.len(), "postgres: write batch failed: {err}");
    for op in ops {
        let _ = op.reply.send(Err(StorageError(err.0.clone())));
    }
}

/// Runs one request inside its savepoint, retrying deadlocks and serialization failures.
async fn run_request(c: &Client, s: &Statements, request: &Request) -> Result<Answer, Failure> {
    let fatal = |e: tokio_postgres::Error| Failure::Fatal(pg(e));
    if matches!(request, Request::Flush) {
        return Ok(Answer::Done);
    }
    let mut attempt = 0;
    loop {
        c.batch_execute("SAVEPOINT op").await.map_err(fatal)?;
        let result = execute(c, s, request).await;
        if let Ok(answer) = result {
            c.batch_execute("RELEASE SAVEPOINT op")
                .await
                .map_err(fatal)?;
            return Ok(answer);
        }
        if c.is_closed() {
            let e = match result {
                Err(ExecError::Db(e)) => pg(e),
                Err(ExecError::Invalid(e)) => e,
                Ok(_) => unreachable!("handled above"),
            };
            return Err(Failure::Fatal(e));
        }
        c.batch_execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
            .await
            .map_err(fatal)?;
        match result {
            Err(ExecError::Db(e))
                if attempt < RETRIES
                    && matches!(
                        e.code(),
                        Some(
                            &SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE
                        )
                    ) =>
            {
                attempt += 1;
                tracing::debug!(attempt, "postgres: write request retried: {}", pg(e));
            }
            Err(ExecError::Db(e)) => return Err(Failure::Request(pg(e))),
            Err(ExecError::Invalid(e)) => return Err(Failure::Request(e)),
            Ok(_) => unreachable!("handled above"),
        }
    }
}

async fn execute(c: &Client, s: &Statements, request: &Request) -> Result<Answer, ExecError> {
    match request {
        Request::Store(readings) => store(c, s, readings).await.map(Answer::Stored),
        Request::AddDevice(d) => add_device(c, s, d).await.map(|()| Answer::Done),
        Request::Revoke(id) => Ok(Answer::Changed(c.execute(&s.revoke, &[id]).await? > 0)),
        Request::Touch(id, at_ms) => {
            c.execute(&s.touch, &[id, at_ms]).await?;
            Ok(Answer::Done)
        }
        Request::Event(e) => {
            c.execute(
                &s.insert_event,
                &[&e.at_ms, &e.device_id, &e.session_id, &e.event, &e.suite],
            )
            .await?;
            Ok(Answer::Done)
        }
        Request::Flush => Ok(Answer::Done),
    }
}

async fn store(
    c: &Client,
    s: &Statements,
    readings: &[ReadingRow],
) -> Result<StoreOutcome, ExecError> {
    let mut outcome = StoreOutcome::default();
    // Per device: readings inserted, latest receive time (duplicates included).
    let mut per_device: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    // A message repeated within the call: the first copy is the one stored.
    let mut seen: HashSet<(&str, i64)> = HashSet::with_capacity(readings.len());
    let mut unique: Vec<&ReadingRow> = Vec::with_capacity(readings.len());
    for r in readings {
        let entry = per_device.entry(&r.device_id).or_insert((0, r.received_ms));
        entry.1 = entry.1.max(r.received_ms);
        if seen.insert((&r.device_id, r.msg_id)) {
            unique.push(r);
        } else {
            outcome.duplicates += 1;
        }
    }

    let ids: Vec<&str> = per_device.keys().copied().collect();
    let known: HashSet<String> = c
        .query(&s.known_devices, &[&ids])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if let Some(unknown) = ids.iter().find(|id| !known.contains(**id)) {
        return Err(ExecError::Invalid(StorageError(format!(
            "unknown device {unknown:?}"
        ))));
    }

    let device_ids: Vec<&str> = unique.iter().map(|r| r.device_id.as_str()).collect();
    let msg_ids: Vec<i64> = unique.iter().map(|r| r.msg_id).collect();
    let times: Vec<i64> = unique.iter().map(|r| r.device_time_ms).collect();
    let received: Vec<i64> = unique.iter().map(|r| r.received_ms).collect();
    let payloads: Vec<&[u8]> = unique.iter().map(|r| r.payload.as_slice()).collect();
    let rows = c
        .query(
            &s.insert_readings,
            &[&device_ids, &msg_ids, &times, &received, &payloads],
        )
        .await?;
    let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(rows.len());
    for row in &rows {
        inserted.insert((row.try_get(0)?, row.try_get(1)?));
    }
    outcome.inserted = inserted.len();
    outcome.duplicates += unique.len() - inserted.len();

    let (mut v_dev, mut v_msg, mut v_idx, mut v_sensor, mut v_value) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in &unique {
        if !inserted.contains(&(r.device_id.clone(), r.msg_id)) {
            continue;
        }
        per_device.entry(&r.device_id).or_default().0 += 1;
        for (idx, (sensor, value)) in (0_i32..).zip(&r.values) {
            v_dev.push(r.device_id.as_str());
            v_msg.push(r.msg_id);
            v_idx.push(idx);
            v_sensor.push(sensor.as_str());
            v_value.push((!value.is_nan()).then_some(*value));
        }
    }
    if !v_dev.is_empty() {
        c.execute(
            &s.insert_values,
            &[&v_dev, &v_msg, &v_idx, &v_sensor, &v_value],
        )
        .await?;
    }

    let counts: Vec<i64> = per_device.values().map(|v| v.0).collect();
    let lasts: Vec<i64> = per_device.values().map(|v| v.1).collect();
    c.execute(&s.update_devices, &[&ids, &counts, &lasts])
        .await?;
    Ok(outcome)
}

async fn add_device(c: &Client, s: &Statements, d: &DeviceRow) -> Result<(), ExecError> {
    let invalid = |msg: String| ExecError::Invalid(StorageError(msg));
    if c.query_opt(&s.device_exists, &[&d.id]).await?.is_some() {
        return Err(invalid(format!("device {:?} is already registered", d.id)));
    }
    if let Some(row) = c.query_opt(&s.device_by_key, &[&d.public_key]).await? {
        let owner: String = row.try_get(0)?;
        return Err(invalid(format!(
            "public key is already registered (device {owner:?})"
        )));
    }
    let inserted = c
        .execute(
            &s.insert_device,
            &[
                &d.id,
                &d.alg,
                &d.public_key,
                &d.revoked,
                &d.created_ms,
                &d.last_seen_ms,
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        // Another gateway registered the same id or key after the checks above.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            let what = match e.as_db_error().and_then(|d| d.constraint()) {
                Some(c) if c.contains("public_key") => "public key".to_string(),
                _ => format!("device {:?}", d.id),
            };
            Err(invalid(format!("{what} is already registered")))
        }
        Err(e) => Err(e.into()),
    }
}
