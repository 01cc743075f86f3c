//! Opening connections and the versioned schema.
//!
//! The schema version is `PRAGMA user_version`: the number of [`MIGRATIONS`] applied. The file
//! is also stamped with `PRAGMA application_id` = [`APPLICATION_ID`] so that another
//! application's SQLite file is refused instead of being "migrated".

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::db;
use crate::StorageError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
            c.execute_batch(
                "INSERT INTO devices VALUES ('b', 'ed25519', x'02', 1, 20, NULL, 0);
                 INSERT INTO devices VALUES ('a', 'ed25519', x'01', 0, 10, 99, 3);
                 INSERT INTO readings VALUES ('a', 1, 1000, 1001, x'aa');
                 INSERT INTO readings VALUES ('a', 2, 2000, 2001, x'bb');
                 INSERT INTO readings VALUES ('a', 3, 3000, 3001, x'cc');
                 INSERT INTO reading_values VALUES ('a', 1, 0, 'temperature', 21.5);
                 INSERT INTO reading_values VALUES ('a', 1, 1, 'humidity', NULL);
                 INSERT INTO reading_values VALUES ('a', 1, 2, 'temperature', -3.25);
                 INSERT INTO reading_values VALUES ('a', 2, 0, 'power', 9e999);",
            )
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
        assert_eq!(readings[1], ("a".into(), 2, 2000, 2001, vec![0xbb]));
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
                "SELECT body ->> '$[0][4]' FROM reading_chunks WHERE first_msg = 3",
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
                 VALUES (999, 1, 1, 1, 1, '[]')",
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
