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
//!
//! # Pipelining
//!
//! Storing readings is one statement with data-modifying CTEs: insert the readings (`ON
//! CONFLICT DO NOTHING RETURNING`), insert the values of those inserted, move the device
//! counters. The writer first stores the readings of *every* call of the batch with one such
//! statement, in one savepoint, and splits the outcome per call (a message in two calls counts
//! as inserted by the first, as if they had run one after the other). Only if that fails
//! (one call names an unknown device...) is it rolled back, and the calls are run one by one.
//!
//! The other requests (and the calls, when run one by one) are one statement each but
//! registrations. The writer sends `SAVEPOINT`, the statement and `RELEASE` of each without
//! waiting for answers (the protocol's pipelining), then reads the answers. If request `k`
//! fails, the server ignores everything after it until the writer rolls back to `k`'s
//! savepoint; the requests after `k` are then sent again. A batch thus costs a few round trips
//! plus its `COMMIT`, whatever the number of requests in it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::schema::Target;

use super::{pg, schema};
use crate::{StorageError, StoreOutcome};

/// Times a request is run again after a deadlock or a serialization failure.
const RETRIES: u32 = 3;

/// A reading checked and converted for PostgreSQL (all integers fit in i64).
pub(super) struct ReadingRow {
    pub(super) device_id: Arc<str>,
    pub(super) msg_id: i64,
    pub(super) device_time_ms: i64,
    pub(super) received_ms: i64,
    pub(super) payload: bytes::Bytes,
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
    store: Statement,
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
            // Inserted readings are returned; the counters move by the number inserted per device, and last_seen_ms to the latest
            // receive time of the call (duplicates included).
            store: c
                .prepare(
                    "WITH ins AS ( \
                         INSERT INTO readings (device_id, msg_id, device_time_ms, received_ms, \
                             payload) \
                         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], \
                             $4::bigint[], $5::bytea[]) \
                         ON CONFLICT (device_id, msg_id) DO NOTHING \
                         RETURNING device_id, msg_id), \
                     counters AS ( \
                         UPDATE devices d SET \
                             readings = d.readings + \
                                 (SELECT count(*) FROM ins WHERE ins.device_id = d.id), \
                             last_seen_ms = greatest(d.last_seen_ms, u.last) \
                         FROM unnest($6::text[], $7::bigint[]) AS u (id, last) \
                         WHERE d.id = u.id) \
                     SELECT device_id, msg_id FROM ins",
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
    config: Target,
    conn: Option<(Client, Statements)>,
}

impl Writer {
    /// Connects, migrates and prepares.
    pub(super) async fn open(config: Target) -> Result<Self, StorageError> {
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
    /// Only this request: its savepoint is (or is to be) rolled back.
    Request(StorageError),
    /// As `Request`, but the request may succeed if run again (deadlock, serialization).
    Retry(StorageError),
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

/// Deadlocks and serialization failures: worth running the request again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// The message for a request's database error.
fn request_error(request: &Request, e: tokio_postgres::Error) -> StorageError {
    if let Request::Store(_) = request
        && e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
    {
        // "Key (device_id)=(ghost) is not present in table "devices"."
        let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or("");
        let id = detail
            .split_once(")=(")
            .and_then(|(_, rest)| rest.rsplit_once(") is not present"))
            .map(|(id, _)| id);
        return match id {
            Some(id) => StorageError(format!("unknown device {id:?}")),
            None => StorageError(format!("unknown device ({})", pg(e).0)),
        };
    }
    pg(e)
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
    let n = ops.len();
    let t0 = std::time::Instant::now();
    let mut results: Vec<Option<Result<Answer, StorageError>>> = (0..n).map(|_| None).collect();
    let mut attempts = vec![0u32; n];
    let mut fatal: Option<StorageError> = client.batch_execute("BEGIN").await.err().map(pg);

    // First, optimistically: every call storing readings at once, in one statement.
    let stores: Vec<usize> = (0..n)
        .filter(|&i| matches!(ops[i].request, Request::Store(_)))
        .collect();
    if fatal.is_none() && stores.len() > 1 {
        let calls: Vec<&[ReadingRow]> = stores
            .iter()
            .map(|&i| match &ops[i].request {
                Request::Store(readings) => readings.as_slice(),
                _ => &[],
            })
            .collect();
        match store_together(client, stmts, &calls).await {
            Ok(outcomes) => {
                for (&i, o) in stores.iter().zip(outcomes) {
                    results[i] = Some(Ok(Answer::Stored(o)));
                }
            }
            // One of them fails on its own (an unknown device...): rolled back; each is run
            // in its own savepoint below, so that only its caller gets the error.
            Err(Failure::Request(_) | Failure::Retry(_)) => {}
            Err(Failure::Fatal(e)) => fatal = Some(e),
        }
    }

    // Then every request not done yet, in order: pipelined runs between registrations.
    let todo: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
    let mut p = 0;
    while p < todo.len() && fatal.is_none() {
        let i = todo[p];
        if let Request::AddDevice(_) = ops[i].request {
            match run_request(client, stmts, &ops[i].request).await {
                Ok(a) => results[i] = Some(Ok(a)),
                Err(Failure::Request(e) | Failure::Retry(e)) => results[i] = Some(Err(e)),
                Err(Failure::Fatal(e)) => fatal = Some(e),
            }
            p += 1;
            continue;
        }
        let end = (p..todo.len())
            .find(|&q| matches!(ops[todo[q]].request, Request::AddDevice(_)))
            .unwrap_or(todo.len());
        let requests: Vec<&Request> = todo[p..end].iter().map(|&i| &ops[i].request).collect();
        let (answers, stop) = pipeline(client, stmts, &requests).await;
        let done = answers.len();
        for (q, a) in answers.into_iter().enumerate() {
            results[todo[p + q]] = Some(Ok(a));
        }
        let Some(stop) = stop else {
            p = end;
            continue;
        };
        let k = p + done;
        let retry = matches!(stop, Failure::Retry(_));
        match stop {
            Failure::Fatal(e) => fatal = Some(e),
            Failure::Request(e) | Failure::Retry(e) if client.is_closed() => fatal = Some(e),
            Failure::Request(e) | Failure::Retry(e) => {
                // Request k failed: undo it; the server ignored everything after it.
                if let Err(e) = client
                    .batch_execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
                    .await
                {
                    fatal = Some(pg(e));
                } else if retry && attempts[todo[k]] < RETRIES {
                    attempts[todo[k]] += 1;
                    tracing::debug!(
                        attempt = attempts[todo[k]],
                        "postgres: write request retried"
                    );
                    p = k;
                } else {
                    results[todo[k]] = Some(Err(e));
                    p = k + 1;
                }
            }
        }
    }
    let t1 = t0.elapsed();
    if fatal.is_none()
        && let Err(e) = client.batch_execute("COMMIT").await
    {
        fatal = Some(pg(e));
    }
    tracing::trace!(
        requests = n,
        work_us = t1.as_micros() as u64,
        total_us = t0.elapsed().as_micros() as u64,
        failed = fatal.is_some(),
        "postgres: write batch"
    );
    let Some(err) = fatal else {
        for (op, r) in ops.into_iter().zip(results) {
            let r = r.unwrap_or_else(|| Err(StorageError("postgres: request not run".into())));
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
    tracing::warn!(requests = n, "postgres: write batch failed: {err}");
    for op in ops {
        let _ = op.reply.send(Err(StorageError(err.0.clone())));
    }
}

/// A boxed future of one request's pipelined statements.
type Step<'a> = Pin<
    Box<
        dyn Future<
                Output = (
                    Result<(), tokio_postgres::Error>,
                    Result<Answer, ExecError>,
                    Result<(), tokio_postgres::Error>,
                ),
            > + Send
            + 'a,
    >,
>;

/// Sends `SAVEPOINT`, the statement and `RELEASE` of every request without waiting, then
/// collects the answers. Returns the answers of the requests that succeeded before the first
/// failure, and that failure (its savepoint still to be rolled back if it is not
/// [`Failure::Fatal`]).
async fn pipeline(
    c: &Client,
    s: &Statements,
    requests: &[&Request],
) -> (Vec<Answer>, Option<Failure>) {
    let mut steps: Vec<Option<Step<'_>>> = requests
        .iter()
        .map(|&request| -> Option<Step<'_>> {
            if let Request::Flush = request {
                return None;
            }
            Some(Box::pin(async move {
                // Polled in this order, each sends its message when first polled.
                tokio::join!(
                    biased;
                    c.batch_execute("SAVEPOINT op"),
                    execute(c, s, request),
                    c.batch_execute("RELEASE SAVEPOINT op"),
                )
            }))
        })
        .collect();
    let mut outputs: Vec<Option<_>> = (0..steps.len()).map(|_| None).collect();
    // Poll every step in order (so the messages go out in order) until all are done.
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (step, out) in steps.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = step {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *step = None;
                    }
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

    let mut answers = Vec::with_capacity(requests.len());
    for (request, out) in requests.iter().zip(outputs) {
        let Some((savepoint, result, release)) = out else {
            answers.push(Answer::Done); // Flush
            continue;
        };
        if let Err(e) = savepoint {
            return (answers, Some(Failure::Fatal(pg(e))));
        }
        match result {
            Ok(answer) => {
                if let Err(e) = release {
                    return (answers, Some(Failure::Fatal(pg(e))));
                }
                answers.push(answer);
            }
            Err(ExecError::Invalid(e)) => return (answers, Some(Failure::Request(e))),
            Err(ExecError::Db(e)) => {
                let failure = if retryable(&e) {
                    Failure::Retry(request_error(request, e))
                } else {
                    Failure::Request(request_error(request, e))
                };
                return (answers, Some(failure));
            }
        }
    }
    (answers, None)
}

/// Runs one request inside its savepoint, waiting for each statement (registrations, which
/// check before they insert), retrying deadlocks and serialization failures.
async fn run_request(c: &Client, s: &Statements, request: &Request) -> Result<Answer, Failure> {
    let fatal = |e: tokio_postgres::Error| Failure::Fatal(pg(e));
    let mut attempt = 0;
    loop {
        c.batch_execute("SAVEPOINT op").await.map_err(fatal)?;
        let result = match request {
            Request::AddDevice(d) => add_device(c, s, d).await.map(|()| Answer::Done),
            other => execute(c, s, other).await,
        };
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
            Err(ExecError::Db(e)) if attempt < RETRIES && retryable(&e) => {
                attempt += 1;
                tracing::debug!(attempt, "postgres: write request retried: {}", pg(e));
            }
            Err(ExecError::Db(e)) => return Err(Failure::Request(request_error(request, e))),
            Err(ExecError::Invalid(e)) => return Err(Failure::Request(e)),
            Ok(_) => unreachable!("handled above"),
        }
    }
}

/// One statement (registrations excepted: see [`add_device`]).
async fn execute(c: &Client, s: &Statements, request: &Request) -> Result<Answer, ExecError> {
    match request {
        Request::Store(readings) => store(c, s, readings).await.map(Answer::Stored),
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
        Request::AddDevice(_) => Err(ExecError::Invalid(StorageError(
            "postgres: a registration cannot be pipelined".into(),
        ))),
        Request::Flush => Ok(Answer::Done),
    }
}

/// Several calls' readings in one statement, inside one savepoint: the outcome of each call
/// as if they had run one after the other. On a failure the savepoint is rolled back.
async fn store_together(
    c: &Client,
    s: &Statements,
    calls: &[&[ReadingRow]],
) -> Result<Vec<StoreOutcome>, Failure> {
    let (savepoint, result, release) = tokio::join!(
        biased;
        c.batch_execute("SAVEPOINT op"),
        store_many(c, s, calls),
        c.batch_execute("RELEASE SAVEPOINT op"),
    );
    if let Err(e) = savepoint {
        return Err(Failure::Fatal(pg(e)));
    }
    match result {
        Ok(outcomes) => match release {
            Ok(()) => Ok(outcomes),
            Err(e) => Err(Failure::Fatal(pg(e))),
        },
        Err(e) => {
            let e = match e {
                ExecError::Db(e) => pg(e),
                ExecError::Invalid(e) => e,
            };
            if c.is_closed() {
                return Err(Failure::Fatal(e));
            }
            c.batch_execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
                .await
                .map_err(|e| Failure::Fatal(pg(e)))?;
            Err(Failure::Request(e))
        }
    }
}

/// Stores a call's readings with one statement (sent when the future is first polled).
async fn store(
    c: &Client,
    s: &Statements,
    readings: &[ReadingRow],
) -> Result<StoreOutcome, ExecError> {
    let outcomes = store_many(c, s, &[readings]).await?;
    Ok(outcomes.into_iter().next().unwrap_or_default())
}

/// Stores the readings of `calls` with one statement (sent when the future is first polled).
/// A message sent twice, in one call or in two, is stored once, counted as inserted by the
/// first call that has it and as a duplicate by the others.
async fn store_many(
    c: &Client,
    s: &Statements,
    calls: &[&[ReadingRow]],
) -> Result<Vec<StoreOutcome>, ExecError> {
    // Per device: latest receive time (duplicates included).
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    // The first copy of each message, and the call it belongs to.
    let mut first: HashMap<(&str, i64), usize> = HashMap::new();
    let mut unique: Vec<&ReadingRow> = Vec::new();
    // Each call's devices in the order of their first reading, and (call, device) → index.
    let mut outcomes = vec![StoreOutcome::default(); calls.len()];
    let mut slot: HashMap<(usize, &str), usize> = HashMap::new();
    for (call, readings) in calls.iter().enumerate() {
        for r in *readings {
            let t = last.entry(&*r.device_id).or_insert(r.received_ms);
            *t = (*t).max(r.received_ms);
            if let Entry::Vacant(v) = slot.entry((call, &*r.device_id)) {
                v.insert(outcomes[call].per_device.len());
                outcomes[call]
                    .per_device
                    .push((Arc::clone(&r.device_id), 0));
            }
            if let Entry::Vacant(v) = first.entry((&*r.device_id, r.msg_id)) {
                v.insert(call);
                unique.push(r);
            }
        }
    }
    let device_ids: Vec<&str> = unique.iter().map(|r| &*r.device_id).collect();
    let msg_ids: Vec<i64> = unique.iter().map(|r| r.msg_id).collect();
    let times: Vec<i64> = unique.iter().map(|r| r.device_time_ms).collect();
    let received: Vec<i64> = unique.iter().map(|r| r.received_ms).collect();
    let payloads: Vec<&[u8]> = unique.iter().map(|r| &r.payload[..]).collect();
    let ids: Vec<&str> = last.keys().copied().collect();
    let lasts: Vec<i64> = last.values().copied().collect();
    let rows = c
        .query(
            &s.store,
            &[
                &device_ids,
                &msg_ids,
                &times,
                &received,
                &payloads,
                &ids,
                &lasts,
            ],
        )
        .await?;
    for row in &rows {
        let device_id: &str = row.try_get(0)?;
        let msg_id: i64 = row.try_get(1)?;
        let found = first
            .get(&(device_id, msg_id))
            .and_then(|&call| Some((call, *slot.get(&(call, device_id))?)));
        let Some((call, i)) = found else {
            return Err(ExecError::Invalid(StorageError(format!(
                "postgres: the server reports an insert that was not asked for: \
                 ({device_id:?}, {msg_id})"
            ))));
        };
        outcomes[call].inserted += 1;
        outcomes[call].per_device[i].1 += 1;
    }
    for (o, readings) in outcomes.iter_mut().zip(calls) {
        o.duplicates = readings.len() - o.inserted;
    }
    Ok(outcomes)
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
