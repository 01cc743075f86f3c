//! Opening connections and the versioned schema.
//!
//! The schema version is `PRAGMA user_version`: the number of [`MIGRATIONS`] applied. The file
//! is also stamped with `PRAGMA application_id` = [`APPLICATION_ID`] so that another
//! application's SQLite file is refused instead of being "migrated".

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{chunk, db};
use crate::{StorageError, decode_payload, sensor_name};

/// `PRAGMA application_id` of iotseal gateway databases ("IOTS").
pub(super) const APPLICATION_ID: i32 = 0x494F_5453;

/// The migrations, in order. Script `i` takes the schema from version `i` to `i + 1`; each is
/// applied in the same transaction as the `user_version` update. Never edit a released script:
/// append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: devices, readings, parsed values, session audit trail.
    r"
    CREATE TABLE devices (
        id           TEXT    NOT NULL PRIMARY KEY,
        alg          TEXT    NOT NULL,
        public_key   BLOB    NOT NULL UNIQUE,
        revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER,
        readings     INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE readings (
        device_id      TEXT    NOT NULL REFERENCES devices (id),
        msg_id         INTEGER NOT NULL,
        device_time_ms INTEGER NOT NULL,
        received_ms    INTEGER NOT NULL,
        payload        BLOB    NOT NULL,
        PRIMARY KEY (device_id, msg_id)
    ) STRICT;
    -- Time-range queries, ordered by (device_time_ms, msg_id) without a sort.
    CREATE INDEX readings_device_time ON readings (device_id, device_time_ms, msg_id);

    -- One row per parsed value, in payload order (idx). value NULL stands for NaN, which
    -- SQLite cannot store as a REAL.
    CREATE TABLE reading_values (
        device_id TEXT    NOT NULL,
        msg_id    INTEGER NOT NULL,
        idx       INTEGER NOT NULL,
        sensor    TEXT    NOT NULL,
        value     REAL,
        PRIMARY KEY (device_id, msg_id, idx),
        FOREIGN KEY (device_id, msg_id) REFERENCES readings (device_id, msg_id) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;

    -- Audit trail. device_id is not a foreign key: refused sessions may name unknown devices.
    CREATE TABLE session_events (
        id         INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        device_id  TEXT,
        session_id INTEGER NOT NULL,
        event      TEXT    NOT NULL,
        suite      TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX session_events_at ON session_events (at_ms);
    CREATE INDEX session_events_device ON session_events (device_id, at_ms);
    ",
    // 2: the write path's layout (docs/performance.md). Integer device keys; one row per
    // reading, without a rowid table behind its primary key, its parsed values in a JSON
    // column (`[[sensor, value], ...]`, NaN as null) instead of one row per value: two B-tree
    // entries per reading instead of five. `readings` and `reading_values` stay, as views.
    r"
    CREATE TABLE devices_v2 (
        key          INTEGER PRIMARY KEY,
        id           TEXT    NOT NULL UNIQUE,
        alg          TEXT    NOT NULL,
        public_key   BLOB    NOT NULL UNIQUE,
        revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER,
        readings     INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    INSERT INTO devices_v2 (id, alg, public_key, revoked, created_ms, last_seen_ms, readings)
        SELECT id, alg, public_key, revoked, created_ms, last_seen_ms, readings FROM devices
        ORDER BY created_ms, id;

    CREATE TABLE reading_rows (
        device         INTEGER NOT NULL REFERENCES devices_v2 (key),
        msg_id         INTEGER NOT NULL,
        device_time_ms INTEGER NOT NULL,
        received_ms    INTEGER NOT NULL,
        payload        BLOB    NOT NULL,
        vals           TEXT    NOT NULL CHECK (json_valid(vals)),
        PRIMARY KEY (device, msg_id)
    ) STRICT, WITHOUT ROWID;
    -- Time-range queries, ordered by (device_time_ms, msg_id) without a sort.
    CREATE INDEX reading_rows_time ON reading_rows (device, device_time_ms, msg_id);
    INSERT INTO reading_rows (device, msg_id, device_time_ms, received_ms, payload, vals)
        SELECT d.key, r.msg_id, r.device_time_ms, r.received_ms, r.payload,
            coalesce((SELECT json_group_array(json_array(v.sensor, v.value))
                      FROM (SELECT sensor, value FROM reading_values
                            WHERE device_id = r.device_id AND msg_id = r.msg_id
                            ORDER BY idx) AS v), '[]')
        FROM readings r JOIN devices_v2 d ON d.id = r.device_id;

    DROP TABLE reading_values;
    DROP TABLE readings;
    DROP TABLE devices;
    ALTER TABLE devices_v2 RENAME TO devices;

    CREATE VIEW readings AS
        SELECT d.id AS device_id, r.msg_id, r.device_time_ms, r.received_ms, r.payload
        FROM reading_rows r JOIN devices d ON d.key = r.device;
    CREATE VIEW reading_values AS
        SELECT d.id AS device_id, r.msg_id, j.key AS idx, j.value ->> 0 AS sensor,
               j.value ->> 1 AS value
        FROM reading_rows r JOIN devices d ON d.key = r.device, json_each(r.vals) AS j;
    ",
    // 3: readings in chunks (docs/decisions.md D11). One row per run of consecutive message
    // ids of one device (at most CHUNK_MAX_READINGS readings, device times within
    // CHUNK_SPAN_MS): B-tree work per chunk, not per reading. `body` is a JSON array with one
    // `[msg_id, device_time_ms, received_ms, payload_hex, [[sensor, value], ...]]` per reading,
    // in message id order. Chunks of a device never share a message id, so the chunk with the
    // largest first_msg <= m is the only one that can hold m. Version 2's rows become one chunk
    // each; the views keep their names and columns.
    r"
    CREATE TABLE reading_chunks (
        id        INTEGER PRIMARY KEY,
        device    INTEGER NOT NULL REFERENCES devices (key),
        first_msg INTEGER NOT NULL,
        last_msg  INTEGER NOT NULL,
        t_min     INTEGER NOT NULL,
        t_max     INTEGER NOT NULL,
        body      TEXT    NOT NULL,
        CHECK (last_msg >= first_msg AND t_max >= t_min)
    ) STRICT;
    INSERT INTO reading_chunks (device, first_msg, last_msg, t_min, t_max, body)
        SELECT device, msg_id, msg_id, device_time_ms, device_time_ms,
            json_array(json_array(msg_id, device_time_ms, received_ms, lower(hex(payload)),
                                  json(vals)))
        FROM reading_rows ORDER BY device, msg_id;
    -- Deduplication and the message-id lookups.
    CREATE UNIQUE INDEX reading_chunks_msg ON reading_chunks (device, first_msg);
    -- Time-range queries: chunks by their earliest device time.
    CREATE INDEX reading_chunks_time ON reading_chunks (device, t_min);

    DROP VIEW reading_values;
    DROP VIEW readings;
    DROP TABLE reading_rows;

    CREATE VIEW readings AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, r.value ->> 1 AS device_time_ms,
               r.value ->> 2 AS received_ms, unhex(r.value ->> 3) AS payload
        FROM reading_chunks c JOIN devices d ON d.key = c.device, json_each(c.body) AS r;
    CREATE VIEW reading_values AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, v.key AS idx,
               v.value ->> 0 AS sensor, v.value ->> 1 AS value
        FROM reading_chunks c JOIN devices d ON d.key = c.device, json_each(c.body) AS r,
             json_each(r.value, '$[4]') AS v;
    ",
    // 4: the inbox (docs/decisions.md D14). Small runs (fewer than INBOX_BELOW readings) are
    // appended here, in arrival order, without a secondary index: a commit of one-reading
    // records from many devices writes a few pages at the end of one B-tree instead of one
    // leaf of each index per device. The writer moves inbox rows into reading_chunks in large
    // steps, merging each device's consecutive runs into one chunk, and keeps the inbox's id
    // ranges in memory for deduplication. Same columns and invariants as reading_chunks; no
    // chunk of a device, in either table, shares an id with another. The views cover both.
    r"
    CREATE TABLE reading_inbox (
        id        INTEGER PRIMARY KEY,
        device    INTEGER NOT NULL REFERENCES devices (key),
        first_msg INTEGER NOT NULL,
        last_msg  INTEGER NOT NULL,
        t_min     INTEGER NOT NULL,
        t_max     INTEGER NOT NULL,
        body      TEXT    NOT NULL,
        CHECK (last_msg >= first_msg AND t_max >= t_min)
    ) STRICT;

    DROP VIEW reading_values;
    DROP VIEW readings;
    CREATE VIEW readings AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, r.value ->> 1 AS device_time_ms,
               r.value ->> 2 AS received_ms, unhex(r.value ->> 3) AS payload
        FROM (SELECT device, body FROM reading_chunks
              UNION ALL SELECT device, body FROM reading_inbox) AS c
        JOIN devices d ON d.key = c.device, json_each(c.body) AS r;
    CREATE VIEW reading_values AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, v.key AS idx,
               v.value ->> 0 AS sensor, v.value ->> 1 AS value
        FROM (SELECT device, body FROM reading_chunks
              UNION ALL SELECT device, body FROM reading_inbox) AS c
        JOIN devices d ON d.key = c.device, json_each(c.body) AS r,
             json_each(r.value, '$[4]') AS v;
    ",
    // 5: the device counters recomputed from the readings stored (docs/decisions.md D17):
    // `devices.readings` is the number of rows, after deduplication by message id. A chunk
    // (either table) holds the consecutive ids first_msg..=last_msg, each once, and no id of a
    // device is in two chunks, so its readings are last_msg - first_msg + 1; the bodies are
    // not read.
    r"
    UPDATE devices SET readings = 0;
    UPDATE devices SET readings = c.n
    FROM (SELECT device, sum(last_msg - first_msg + 1) AS n
          FROM (SELECT device, first_msg, last_msg FROM reading_chunks
                UNION ALL SELECT device, first_msg, last_msg FROM reading_inbox)
          GROUP BY device) AS c
    WHERE c.device = devices.key;
    ",
    // 6: payloads as bytes, values once (docs/decisions.md D37). A chunk body (both tables) is
    // a BLOB of elements, one per reading: its payload (the encoded reading as received, which
    // holds the message id, device time and values) and its receive time (see the `chunk`
    // module); no hex, no second copy of the values as JSON. The bodies of version 5 are
    // converted by `convert_v5_bodies` (Rust, in the same transaction), which checks that each
    // stored value is the one its payload decodes to. The views keep their names and columns,
    // over `iotseal_chunk_json(body)`, a function every connection of the storage registers.
    r"
    DROP VIEW reading_values;
    DROP VIEW readings;
    DROP INDEX reading_chunks_msg;
    DROP INDEX reading_chunks_time;
    ALTER TABLE reading_chunks RENAME TO reading_chunks_v5;
    ALTER TABLE reading_inbox RENAME TO reading_inbox_v5;

    CREATE TABLE reading_chunks (
        id        INTEGER PRIMARY KEY,
        device    INTEGER NOT NULL REFERENCES devices (key),
        first_msg INTEGER NOT NULL,
        last_msg  INTEGER NOT NULL,
        t_min     INTEGER NOT NULL,
        t_max     INTEGER NOT NULL,
        body      BLOB    NOT NULL,
        CHECK (last_msg >= first_msg AND t_max >= t_min)
    ) STRICT;
    CREATE UNIQUE INDEX reading_chunks_msg ON reading_chunks (device, first_msg);
    CREATE INDEX reading_chunks_time ON reading_chunks (device, t_min);
    CREATE TABLE reading_inbox (
        id        INTEGER PRIMARY KEY,
        device    INTEGER NOT NULL REFERENCES devices (key),
        first_msg INTEGER NOT NULL,
        last_msg  INTEGER NOT NULL,
        t_min     INTEGER NOT NULL,
        t_max     INTEGER NOT NULL,
        body      BLOB    NOT NULL,
        CHECK (last_msg >= first_msg AND t_max >= t_min)
    ) STRICT;

    CREATE VIEW readings AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, r.value ->> 1 AS device_time_ms,
               r.value ->> 2 AS received_ms, unhex(r.value ->> 3) AS payload
        FROM (SELECT device, body FROM reading_chunks
              UNION ALL SELECT device, body FROM reading_inbox) AS c
        JOIN devices d ON d.key = c.device, json_each(iotseal_chunk_json(c.body)) AS r;
    CREATE VIEW reading_values AS
        SELECT d.id AS device_id, r.value ->> 0 AS msg_id, v.key AS idx,
               v.value ->> 0 AS sensor, v.value ->> 1 AS value
        FROM (SELECT device, body FROM reading_chunks
              UNION ALL SELECT device, body FROM reading_inbox) AS c
        JOIN devices d ON d.key = c.device, json_each(iotseal_chunk_json(c.body)) AS r,
             json_each(r.value, '$[4]') AS v;
    ",
];

/// Runs of fewer readings than this go to the inbox of schema version 4; longer ones straight
/// to `reading_chunks` (moving them later would write them twice).
pub(super) const INBOX_BELOW: usize = 32;

/// Inserts one chunk into `reading_chunks` (?1 device, ?2 first_msg, ?3 last_msg, ?4 t_min,
/// ?5 t_max, ?6 body).
pub(super) const INSERT_CHUNK: &str = "INSERT INTO reading_chunks \
    (device, first_msg, last_msg, t_min, t_max, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// [`INSERT_CHUNK`] for the inbox.
pub(super) const INSERT_INBOX: &str = "INSERT INTO reading_inbox \
    (device, first_msg, last_msg, t_min, t_max, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Most readings in one chunk of schema version 3.
pub(super) const CHUNK_MAX_READINGS: usize = 1024;
/// Widest spread of device times in one chunk of schema version 3, ms (10 minutes). A chunk
/// holding a reading at time t has `t_min >= t - CHUNK_SPAN_MS`, which bounds the index range
/// a time query scans. Part of the file format: changing it needs a migration.
pub(super) const CHUNK_SPAN_MS: i64 = 600_000;

/// The schema version this build creates and understands.
pub(super) const LATEST: u32 = MIGRATIONS.len() as u32;

/// Opens the write connection: creates the file, WAL, synchronous, foreign keys, migrations.
pub(super) fn open_writer(
    path: &Path,
    synchronous_full: bool,
    busy_timeout: Duration,
) -> Result<Connection, StorageError> {
    // No SQLITE_OPEN_URI: a path is a path, even if it starts with "file:".
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StorageError(format!("sqlite: cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(busy_timeout).map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError(format!(
            "sqlite: {} cannot use WAL journal mode (got {mode:?})",
            path.display()
        )));
    }
    let sync = if synchronous_full { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync).map_err(db)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
    let fk: bool = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .map_err(db)?;
    if !fk {
        return Err(StorageError(
            "sqlite: foreign key enforcement is unavailable".into(),
        ));
    }

    chunk::register_functions(&conn)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection (WAL: readers never block the writer, and see every commit
/// made before their read transaction starts).
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StorageError(format!("sqlite: cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(busy_timeout).map_err(db)?;
    conn.set_prepared_statement_cache_capacity(16);
    chunk::register_functions(&conn)?;
    Ok(conn)
}

/// Brings the schema to [`LATEST`] in one immediate transaction (so two processes opening the
/// same file do not both migrate). Refuses files from a newer build and foreign files.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    let app_id: i64 = tx
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(db)?;

    if version == 0 {
        let objects: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if objects > 0 || (app_id != 0 && app_id != i64::from(APPLICATION_ID)) {
            return Err(StorageError(format!(
                "sqlite: {} is an SQLite database that iotseal did not create; refusing to use it",
                path.display()
            )));
        }
    } else if app_id != i64::from(APPLICATION_ID) {
        return Err(StorageError(format!(
            "sqlite: {} is not an iotseal database (application_id {app_id:#x})",
            path.display()
        )));
    }
    let Ok(version) = u32::try_from(version) else {
        return Err(StorageError(format!(
            "sqlite: {} has an invalid schema version {version}",
            path.display()
        )));
    };
    if version > LATEST {
        return Err(StorageError(format!(
            "sqlite: {} has schema version {version}, newer than this build supports \
             ({LATEST}); use a newer iotseal gateway",
            path.display()
        )));
    }
    if version == LATEST {
        // Nothing to do: the transaction only read.
        return tx.commit().map_err(db);
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(script)
            .map_err(|e| StorageError(format!("sqlite: migration to version {}: {e}", i + 1)))?;
        if i + 1 == 6 {
            convert_v5_bodies(&tx)
                .map_err(|e| StorageError(format!("sqlite: migration to version 6: {}", e.0)))?;
        }
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(db)?;
    tx.pragma_update(None, "user_version", LATEST).map_err(db)?;
    tx.commit().map_err(db)?;
    tracing::info!(
        path = %path.display(),
        from = version,
        to = LATEST,
        "sqlite schema migrated"
    );
    Ok(())
}

/// Chunks converted per query of [`convert_v5_bodies`] (bounds the memory it holds: a chunk of
/// version 5 is at most ~1,024 JSON elements).
const CONVERT_STEP: i64 = 64;

/// Version 6's conversion: every chunk of `reading_chunks_v5` and `reading_inbox_v5` (JSON
/// bodies, payloads in hex, values as JSON) into the new tables (binary bodies, see the
/// `chunk` module), same ids and columns; then drops the old tables. Refuses (and so rolls the
/// migration back) a reading whose payload does not decode to its message id, device time,
/// sensors and values: a value would otherwise read differently after the migration.
fn convert_v5_bodies(tx: &rusqlite::Transaction<'_>) -> Result<(), StorageError> {
    for (from, to) in [
        ("reading_chunks_v5", "reading_chunks"),
        ("reading_inbox_v5", "reading_inbox"),
    ] {
        let mut after = i64::MIN;
        let mut select = tx
            .prepare(&format!(
                "SELECT id, device, first_msg, last_msg, t_min, t_max, body FROM {from} \
                 WHERE id > ?1 ORDER BY id LIMIT {CONVERT_STEP}"
            ))
            .map_err(db)?;
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO {to} (id, device, first_msg, last_msg, t_min, t_max, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .map_err(db)?;
        loop {
            type V5Chunk = (i64, i64, i64, i64, i64, i64, String);
            let rows: Vec<V5Chunk> = select
                .query_map([after], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            for (id, device, first, last, t_min, t_max, json) in rows {
                let body = convert_v5_body(tx, &json)
                    .map_err(|e| StorageError(format!("chunk {id} of {from}: {}", e.0)))?;
                insert
                    .execute(rusqlite::params![
                        id, device, first, last, t_min, t_max, body
                    ])
                    .map_err(db)?;
            }
        }
    }
    tx.execute_batch("DROP TABLE reading_chunks_v5; DROP TABLE reading_inbox_v5;")
        .map_err(db)
}

/// One version-5 body, converted and checked (see [`convert_v5_bodies`]); SQLite's JSON
/// functions read it (as the version-5 reader did: 9e999 is an infinity, null a NaN).
fn convert_v5_body(tx: &rusqlite::Transaction<'_>, json: &str) -> Result<Vec<u8>, StorageError> {
    let mut items = tx
        .prepare_cached(
            "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value -> 4 \
             FROM json_each(?1) ORDER BY key",
        )
        .map_err(db)?;
    let mut values = tx
        .prepare_cached("SELECT value ->> 0, value ->> 1 FROM json_each(?1) ORDER BY key")
        .map_err(db)?;
    let mut body = Vec::with_capacity(json.len() / 3);
    let mut scratch = Vec::new();
    let mut rows = items.query([json]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let msg_id: i64 = row.get(0).map_err(db)?;
        let time: i64 = row.get(1).map_err(db)?;
        let received: i64 = row.get(2).map_err(db)?;
        let payload_hex: String = row.get(3).map_err(db)?;
        let vals: String = row.get(4).map_err(db)?;
        let old: Vec<(String, Option<f64>)> = values
            .query_map([vals], |v| Ok((v.get(0)?, v.get(1)?)))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        let payload = hex::decode(&payload_hex)
            .map_err(|e| StorageError(format!("reading {msg_id}: payload is not hex: {e}")))?;
        let r = decode_payload(&mut scratch, &payload)
            .map_err(|e| StorageError(format!("reading {msg_id}: {}", e.0)))?;
        let same_values = r.values().len() == old.len()
            && r.values().zip(&old).all(|((kind, v), (name, old))| {
                *sensor_name(kind) == **name
                    && match old {
                        // NaN was stored as null.
                        None => v.is_nan(),
                        // The f32's shortest decimal form read as an f64: its nearest f32 is
                        // the f32 itself.
                        Some(old) => (*old as f32).to_bits() == v.to_bits() || f64::from(v) == *old,
                    }
            });
        if i64::try_from(r.msg_id) != Ok(msg_id)
            || i64::try_from(r.time_ms) != Ok(time)
            || !same_values
        {
            return Err(StorageError(format!(
                "reading {msg_id}: the stored values or ids differ from what its payload \
                 decodes to; refusing to drop them"
            )));
        }
        chunk::push_element(&mut body, &payload, time, received);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotseal_proto::reading::{Reading, SensorKind};

    /// A version-1 file with data migrates to the latest version without losing or changing a
    /// reading, its values (NaN, infinities, order, duplicates of a sensor) or a device.
    #[test]
    fn version_1_data_survives_the_migration() {
        let dir = std::env::temp_dir().join(format!("iotseal-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            let payload = |msg_id, time_ms, values: Vec<(SensorKind, f32)>| {
                let mut out = Vec::new();
                Reading {
                    msg_id,
                    time_ms,
                    values,
                    extra: Vec::new(),
                }
                .encode(&mut out);
                hex::encode(out)
            };
            let p1 = payload(
                1,
                1000,
                vec![
                    (SensorKind::Temperature, 21.5),
                    (SensorKind::Humidity, f32::NAN),
                    (SensorKind::Temperature, -3.25),
                ],
            );
            let p2 = payload(2, 2000, vec![(SensorKind::Power, f32::INFINITY)]);
            let p3 = payload(3, 3000, vec![]);
            c.execute_batch(&format!(
                "INSERT INTO devices VALUES ('b', 'ed25519', x'02', 1, 20, NULL, 0);
                 INSERT INTO devices VALUES ('a', 'ed25519', x'01', 0, 10, 99, 3);
                 INSERT INTO readings VALUES ('a', 1, 1000, 1001, x'{p1}');
                 INSERT INTO readings VALUES ('a', 2, 2000, 2001, x'{p2}');
                 INSERT INTO readings VALUES ('a', 3, 3000, 3001, x'{p3}');
                 INSERT INTO reading_values VALUES ('a', 1, 0, 'temperature', 21.5);
                 INSERT INTO reading_values VALUES ('a', 1, 1, 'humidity', NULL);
                 INSERT INTO reading_values VALUES ('a', 1, 2, 'temperature', -3.25);
                 INSERT INTO reading_values VALUES ('a', 2, 0, 'power', 9e999);",
            ))
            .unwrap();
        }
        let mut c = open_writer(&path, true, Duration::from_secs(1)).unwrap();
        let version: u32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, LATEST);
        let devices: Vec<(String, bool, i64, Option<i64>, i64)> = c
            .prepare(
                "SELECT id, revoked, created_ms, last_seen_ms, readings FROM devices ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            devices,
            vec![
                ("a".into(), false, 10, Some(99), 3),
                ("b".into(), true, 20, None, 0)
            ]
        );
        let readings: Vec<(String, i64, i64, i64, Vec<u8>)> = c
            .prepare("SELECT * FROM readings ORDER BY msg_id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(readings.len(), 3);
        assert_eq!(readings[1].0, "a");
        assert_eq!(
            (readings[1].1, readings[1].2, readings[1].3),
            (2, 2000, 2001)
        );
        assert_eq!(readings[1].4[..3], [2, 0x47, 0xd0]);
        let values: Vec<(i64, i64, String, Option<f64>)> = c
            .prepare("SELECT msg_id, idx, sensor, value FROM reading_values ORDER BY msg_id, idx")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            values,
            vec![
                (1, 0, "temperature".into(), Some(21.5)),
                (1, 1, "humidity".into(), None),
                (1, 2, "temperature".into(), Some(-3.25)),
                (2, 0, "power".into(), Some(f64::INFINITY)),
            ]
        );
        // Reading 3 had no values: an empty array, not a missing row.
        let vals: String = c
            .query_row(
                "SELECT iotseal_chunk_json(body) ->> '$[0][4]' FROM reading_chunks \
                 WHERE first_msg = 3",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(vals, "[]");
        // Foreign keys still hold, and name the renamed table.
        let broken: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(broken, 0);
        assert!(
            c.execute(
                "INSERT INTO reading_chunks (device, first_msg, last_msg, t_min, t_max, body) \
                 VALUES (999, 1, 1, 1, 1, x'')",
                []
            )
            .is_err()
        );
        // Opening again is a no-op.
        migrate(&mut c, &path).unwrap();
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Version 6's migration on a file of the previous version, written as version 5's writer
/// wrote it (chunks and inbox, JSON bodies, hex payloads, values as the f32's shortest
/// decimal form): every reading and value reads back as before, the views answer the same
/// rows, and a file whose values differ from its payloads is refused, unchanged.
#[cfg(test)]
mod migration_6 {
    use iotseal_proto::reading::{Reading, SensorKind};
    use rusqlite::Connection;

    use super::{APPLICATION_ID, MIGRATIONS};
    use crate::sqlite::{SqliteOptions, SqliteStorage};
    use crate::{ReadingQuery, Storage, sensor_name};

    /// The f32's shortest decimal form read as an f64: what version 5 stored.
    fn shortest_f64(v: f32) -> f64 {
        if v.is_finite() {
            format!("{v:e}").parse().unwrap()
        } else {
            f64::from(v)
        }
    }

    /// A version-5 chunk-body element, as that writer wrote it.
    fn v5_element(r: &Reading, received_ms: u64) -> (String, Vec<u8>) {
        let mut payload = Vec::new();
        r.encode(&mut payload);
        let vals: Vec<String> = r
            .values
            .iter()
            .map(|(k, v)| {
                let v = shortest_f64(*v);
                let v = if v.is_nan() {
                    "null".to_string()
                } else if v.is_infinite() {
                    format!("{}9e999", if v < 0.0 { "-" } else { "" })
                } else {
                    format!("{v}")
                };
                format!("[\"{}\",{v}]", sensor_name(*k))
            })
            .collect();
        let json = format!(
            "[{},{},{received_ms},\"{}\",[{}]]",
            r.msg_id,
            r.time_ms,
            hex::encode(&payload),
            vals.join(",")
        );
        (json, payload)
    }

    fn readings() -> Vec<Reading> {
        (1..=40u64)
            .map(|i| Reading {
                msg_id: i,
                time_ms: 1_700_000_000_000 + 1000 * i,
                values: vec![
                    (SensorKind::Temperature, 21.3 + i as f32 / 10.0),
                    (SensorKind::Humidity, if i == 3 { f32::NAN } else { 40.5 }),
                    (
                        SensorKind::Power,
                        if i == 4 { f32::NEG_INFINITY } else { 0.1 },
                    ),
                    (SensorKind::from_code(200), 1e-7 * i as f32),
                ],
                extra: if i == 5 { b"app".to_vec() } else { Vec::new() },
            })
            .collect()
    }

    /// A version-5 file: readings 1..=32 in a chunk, 33..=40 in the inbox (one row each).
    fn v5_file(path: &std::path::Path, tamper: bool) {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        for script in &MIGRATIONS[..5] {
            c.execute_batch(script).unwrap();
        }
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 5).unwrap();
        c.execute(
            "INSERT INTO devices (id, alg, public_key, revoked, created_ms, readings) \
             VALUES ('dev', 'ed25519', x'01', 0, 1, 40)",
            [],
        )
        .unwrap();
        let rs = readings();
        let element = |r: &Reading| v5_element(r, r.time_ms + 7).0;
        let mut chunk: Vec<String> = rs[..32].iter().map(element).collect();
        if tamper {
            chunk[1] = chunk[1].replace("21.5", "21.6");
        }
        c.execute(
            "INSERT INTO reading_chunks (device, first_msg, last_msg, t_min, t_max, body) \
             VALUES (1, 1, 32, ?1, ?2, ?3)",
            rusqlite::params![
                rs[0].time_ms as i64,
                rs[31].time_ms as i64,
                format!("[{}]", chunk.join(","))
            ],
        )
        .unwrap();
        for r in &rs[32..] {
            c.execute(
                "INSERT INTO reading_inbox (device, first_msg, last_msg, t_min, t_max, body) \
                 VALUES (1, ?1, ?1, ?2, ?2, ?3)",
                rusqlite::params![
                    r.msg_id as i64,
                    r.time_ms as i64,
                    format!("[{}]", element(r))
                ],
            )
            .unwrap();
        }
    }

    type ValueRow = (String, i64, i64, String, Option<f64>);

    fn view_rows(c: &Connection) -> Vec<ValueRow> {
        c.prepare("SELECT * FROM reading_values ORDER BY msg_id, idx")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_version_5_file_reads_the_same_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        v5_file(&path, false);
        let (before_rows, before_payloads): (Vec<ValueRow>, Vec<Vec<u8>>) = {
            let c = Connection::open(&path).unwrap();
            let p = c
                .prepare("SELECT payload FROM readings ORDER BY msg_id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (view_rows(&c), p)
        };
        assert_eq!(before_rows.len(), 160);

        let s = SqliteStorage::open(&path, SqliteOptions::default()).unwrap();
        let got = s
            .readings(ReadingQuery {
                device_id: "dev".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 40);
        for (g, r) in got.iter().zip(readings()) {
            let (_, payload) = v5_element(&r, 0);
            assert_eq!(
                (g.msg_id, g.device_time_ms, g.received_ms),
                (r.msg_id, r.time_ms, r.time_ms + 7)
            );
            assert_eq!(g.payload_hex, hex::encode(&payload));
            assert_eq!(g.values.len(), r.values.len());
            for ((name, v), (k, want)) in g.values.iter().zip(&r.values) {
                assert_eq!(*name, sensor_name(*k));
                assert_eq!(v.to_bits(), want.to_bits());
            }
            // The admin API's JSON: what version 5 served (its f64s) and the f32 now agree.
            let json = serde_json::to_string(g).unwrap();
            let old = serde_json::to_string(&shortest_f64(r.values[0].1)).unwrap();
            let t = format!("[\"temperature\",{old}]");
            assert!(json.contains(&t), "{t} not in {json}");
        }
        drop(s);

        let c = Connection::open(&path).unwrap();
        SqliteStorage::register_sql_functions(&c).unwrap();
        let version: u32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 6);
        assert_eq!(view_rows(&c), before_rows);
        let after_payloads: Vec<Vec<u8>> = c
            .prepare("SELECT payload FROM readings ORDER BY msg_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(after_payloads, before_payloads);
        let old_tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%_v5'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_tables, 0);
        // Opening again is a no-op.
        drop(SqliteStorage::open(&path, SqliteOptions::default()).unwrap());
    }

    /// Schema version 5 recomputes every device's `readings` from the rows stored, in the
    /// chunks and in the inbox (docs/decisions.md D17): a version-4 file whose counters are off
    /// opens with counters equal to its rows (and its bodies converted by version 6).
    #[tokio::test(flavor = "multi_thread")]
    async fn version_5_recounts_the_device_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            for script in &MIGRATIONS[..4] {
                c.execute_batch(script).unwrap();
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            c.pragma_update(None, "user_version", 4).unwrap();
            for (key, id) in [(1, "a"), (2, "b"), (3, "idle")] {
                c.execute(
                    "INSERT INTO devices (key, id, alg, public_key, created_ms, readings) \
                     VALUES (?1, ?2, 'ed25519', ?3, 1, 1000 + ?1)",
                    rusqlite::params![key, id, vec![key as u8]],
                )
                .unwrap();
            }
            let r = |m: u64| Reading {
                msg_id: m,
                time_ms: m,
                values: vec![(SensorKind::Temperature, m as f32 / 10.0)],
                extra: Vec::new(),
            };
            let body = |ids: std::ops::RangeInclusive<u64>| {
                let e: Vec<String> = ids.map(|m| v5_element(&r(m), m + 5).0).collect();
                format!("[{}]", e.join(","))
            };
            // "a": a chunk of 40 and an inbox row; "b": two inbox rows.
            for (table, device, first, last) in [
                ("reading_chunks", 1, 1, 40),
                ("reading_inbox", 1, 100, 100),
                ("reading_inbox", 2, 1, 1),
                ("reading_inbox", 2, 5, 7),
            ] {
                c.execute(
                    &format!(
                        "INSERT INTO {table} (device, first_msg, last_msg, t_min, t_max, body) \
                         VALUES (?1, ?2, ?3, ?2, ?3, ?4)"
                    ),
                    rusqlite::params![device, first, last, body(first as u64..=last as u64)],
                )
                .unwrap();
            }
        }
        let s = SqliteStorage::open(&path, SqliteOptions::default()).unwrap();
        let counters: Vec<(String, u64)> = s
            .devices()
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.readings))
            .collect();
        assert_eq!(
            counters,
            [("a".into(), 41), ("b".into(), 4), ("idle".into(), 0)]
        );
        for (id, rows) in &counters {
            let q = ReadingQuery {
                device_id: id.clone(),
                ..Default::default()
            };
            assert_eq!(s.readings(q).await.unwrap().len() as u64, *rows, "{id}");
        }
        assert_eq!(s.count_readings().await.unwrap(), 45);
    }

    #[test]
    fn values_that_differ_from_their_payload_stop_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        v5_file(&path, true);
        let err = SqliteStorage::open(&path, SqliteOptions::default()).unwrap_err();
        assert!(err.0.contains("refusing"), "{err}");
        // Rolled back: still version 5, the old body in place.
        let c = Connection::open(&path).unwrap();
        let version: u32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 5);
        let n: i64 = c
            .query_row("SELECT count(*) FROM reading_chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
