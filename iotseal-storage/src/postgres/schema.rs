//! Connecting, and the versioned schema.
//!
//! The schema version is the `version` column of the one-row table `schema_version`: the
//! number of [`MIGRATIONS`] applied. Its `application` column says the schema is iotseal's, so
//! that another application's tables are refused instead of being "migrated".

use std::str::FromStr;

use tokio_postgres::{Client, Config, NoTls};

use super::tls::{self, MakeRustls};
use super::{PgOptions, pg};
use crate::StorageError;

/// `schema_version.application` of iotseal gateway schemas.
pub(super) const APPLICATION: &str = "iotseal-gateway";

/// The advisory lock held while migrating ("IOTS", plus a hash of the schema name).
const MIGRATION_LOCK: i32 = 0x494F_5453;

/// The migrations, in order, numbered as the SQLite backend's (`sqlite/schema.rs`): script
/// `i` takes the schema from version `i` to `i + 1`, in the same transaction as the
/// `schema_version` update. Never edit a released script: append a new one (to both backends).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: devices, readings, parsed values, session audit trail.
    r"
    CREATE TABLE devices (
        id           text    NOT NULL PRIMARY KEY,
        alg          text    NOT NULL,
        public_key   bytea   NOT NULL UNIQUE,
        revoked      boolean NOT NULL DEFAULT false,
        created_ms   bigint  NOT NULL,
        last_seen_ms bigint,
        readings     bigint  NOT NULL DEFAULT 0
    );

    CREATE TABLE readings (
        device_id      text   NOT NULL REFERENCES devices (id),
        msg_id         bigint NOT NULL,
        device_time_ms bigint NOT NULL,
        received_ms    bigint NOT NULL,
        payload        bytea  NOT NULL,
        PRIMARY KEY (device_id, msg_id)
    );
    -- Time-range queries, ordered by (device_time_ms, msg_id) without a sort.
    CREATE INDEX readings_device_time ON readings (device_id, device_time_ms, msg_id);

    -- One row per parsed value, in payload order (idx). value NULL stands for NaN, as in the
    -- SQLite backend.
    CREATE TABLE reading_values (
        device_id text    NOT NULL,
        msg_id    bigint  NOT NULL,
        idx       integer NOT NULL,
        sensor    text    NOT NULL,
        value     double precision,
        PRIMARY KEY (device_id, msg_id, idx),
        FOREIGN KEY (device_id, msg_id) REFERENCES readings (device_id, msg_id) ON DELETE CASCADE
    );

    -- Audit trail. device_id is not a foreign key: refused sessions may name unknown devices.
    CREATE TABLE session_events (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms      bigint NOT NULL,
        device_id  text,
        session_id bigint NOT NULL,
        event      text   NOT NULL,
        suite      text   NOT NULL
    );
    CREATE INDEX session_events_at ON session_events (at_ms);
    CREATE INDEX session_events_device ON session_events (device_id, at_ms);
    ",
    // 2: as SQLite's version 2 for what SQL users see: `devices` gains its integer `key`;
    // `readings` and `reading_values` keep their columns. SQLite stores readings in
    // `reading_rows` (values as JSON) behind views of those names; PostgreSQL keeps the
    // tables, whose inserts it spreads over its own processes (docs/decisions.md D10).
    r"
    ALTER TABLE devices ADD COLUMN key bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
    ",
    // 3: nothing to change. SQLite's version 3 stores readings in chunks behind the same
    // views (docs/decisions.md D11); PostgreSQL keeps one row per reading, inserted by
    // several connections at once. The number moves so that both backends' versions name the
    // same data model.
    r"
    SELECT 1;
    ",
    // 4: nothing to change. SQLite's version 4 adds an inbox for short runs of readings
    // behind the same views (docs/decisions.md D14).
    r"
    SELECT 1;
    ",
    // 5: the device counters recomputed from the readings stored (docs/decisions.md D17):
    // `devices.readings` is the number of rows, after deduplication by message id. Counted
    // on the primary key's index, one device at a time; only the rows that differ are written.
    r"
    UPDATE devices d SET readings = c.n
    FROM (SELECT id, (SELECT count(*) FROM readings r WHERE r.device_id = devices.id) AS n
          FROM devices) AS c
    WHERE c.id = d.id AND d.readings <> c.n;
    ",
    // 6: values stored once (docs/decisions.md D37): `reading_values` was a second copy of
    // what each payload (bytea, the encoded reading as received) holds. The function
    // `iotseal_reading_values(payload)` decodes a payload's values (docs/protocol.md §8.12:
    // two varints, a count, then (kind, big-endian f32) pairs); the migration checks that it
    // answers every stored value (a difference aborts it), drops the table and puts a view of
    // the same name and columns in its place. A value is the f32's shortest decimal form as a
    // double precision (21.3, as before), NaN NULL (as before).
    r"
    CREATE FUNCTION iotseal_reading_values(payload bytea)
    RETURNS TABLE (idx integer, sensor text, value double precision)
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$
        WITH h AS (
            SELECT (1 << (get_byte(payload, 0) >> 6)) AS a
        ), o AS (
            SELECT a + (1 << (get_byte(payload, a) >> 6)) AS n FROM h
        ), v AS (
            SELECT i,
                   get_byte(payload, n + 1 + 5 * i) AS kind,
                   (get_byte(payload, n + 2 + 5 * i)::bigint << 24)
                   | (get_byte(payload, n + 3 + 5 * i) << 16)
                   | (get_byte(payload, n + 4 + 5 * i) << 8)
                   | get_byte(payload, n + 5 + 5 * i) AS bits
            FROM o, generate_series(0, get_byte(payload, n) - 1) AS i
        )
        SELECT i,
               CASE kind
                      WHEN 1 THEN 'temperature'
                      WHEN 2 THEN 'humidity'
                      WHEN 3 THEN 'pressure'
                      WHEN 4 THEN 'latitude'
                      WHEN 5 THEN 'longitude'
                      WHEN 6 THEN 'accel_x'
                      WHEN 7 THEN 'accel_y'
                      WHEN 8 THEN 'accel_z'
                      WHEN 9 THEN 'heart_rate'
                      WHEN 10 THEN 'power'
                      WHEN 11 THEN 'energy'
                      WHEN 12 THEN 'battery'
                      ELSE 'other_' || kind
               END,
               CASE
                   WHEN (bits >> 23) & 255 = 255 THEN
                       CASE WHEN bits & 8388607 <> 0 THEN NULL
                            WHEN bits >> 31 = 1 THEN '-Infinity'::float8
                            ELSE 'Infinity'::float8 END
                   ELSE ((CASE WHEN bits >> 31 = 1 THEN -1::float8 ELSE 1::float8 END)
                         * CASE WHEN (bits >> 23) & 255 = 0
                                THEN (bits & 8388607)::float8 * 2::float8 ^ -149
                                ELSE ((bits & 8388607) + 8388608)::float8
                                     * 2::float8 ^ (((bits >> 23) & 255) - 150)::float8
                           END)::real::text::float8
               END
        FROM v ORDER BY i
    $f$;

    DO $check$
    DECLARE bad bigint;
    BEGIN
        SELECT count(*) INTO bad FROM (
            SELECT device_id, msg_id, idx, sensor, value FROM reading_values
            EXCEPT ALL
            SELECT r.device_id, r.msg_id, v.idx, v.sensor, v.value
            FROM readings r, iotseal_reading_values(r.payload) v
        ) d;
        IF bad = 0 THEN
            SELECT count(*) INTO bad FROM (
                SELECT r.device_id, r.msg_id, v.idx, v.sensor, v.value
                FROM readings r, iotseal_reading_values(r.payload) v
                EXCEPT ALL
                SELECT device_id, msg_id, idx, sensor, value FROM reading_values
            ) d;
        END IF;
        IF bad > 0 THEN
            RAISE EXCEPTION '% stored values differ from what their payloads decode to; refusing to drop them', bad;
        END IF;
    END
    $check$;

    DROP TABLE reading_values;
    CREATE VIEW reading_values AS
        SELECT r.device_id, r.msg_id, v.idx, v.sensor, v.value
        FROM readings r, iotseal_reading_values(r.payload) v;
    ",
];

/// The schema version this build creates and understands.
pub(super) const LATEST: u32 = MIGRATIONS.len() as u32;

/// Parses a `postgres://` URL and fills in defaults (connect timeout, application name).
/// A connection's configuration and its TLS connector (None for `sslmode=disable`).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: Config,
    pub(super) tls: Option<MakeRustls>,
}

pub(super) fn config(url: &str, options: &PgOptions) -> Result<Target, StorageError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StorageError(
            "postgres: expected a postgres:// or postgresql:// URL".into(),
        ));
    }
    // sslmode=verify-ca|verify-full and sslrootcert, which tokio-postgres's parser refuses.
    let parsed = tls::parse(url)?;
    // The error of the parser never contains the URL (and so no password).
    let mut config = Config::from_str(&parsed.url)
        .map_err(|e| StorageError(format!("postgres: invalid URL: {}", pg(e).0)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION);
    }
    let tls = tls::client_config(parsed.mode, parsed.root_cert.as_deref())?;
    Ok(Target { config, tls })
}

/// Opens a connection and drives it on the current runtime.
pub(super) async fn connect(target: &Target) -> Result<Client, StorageError> {
    let cannot = |e| StorageError(format!("postgres: cannot connect: {}", pg(e).0));
    let (client, connection) = match &target.tls {
        Some(tls) => {
            let (client, connection) = target.config.connect(tls.clone()).await.map_err(cannot)?;
            (client, futures_util::future::Either::Left(connection))
        }
        None => {
            let (client, connection) = target.config.connect(NoTls).await.map_err(cannot)?;
            (client, futures_util::future::Either::Right(connection))
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres: connection ended: {}", pg(e));
        }
    });
    Ok(client)
}

/// Brings the schema to [`LATEST`] in one transaction, holding an advisory lock so that
/// gateways starting together do not migrate twice. Refuses newer and foreign schemas.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StorageError> {
    let tx = client.transaction().await.map_err(pg)?;
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(pg)?
        .get(0);
    let Some(schema) = schema else {
        return Err(StorageError(
            "postgres: no schema to use: none of the search_path exists (create it first)".into(),
        ));
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(pg)?;

    let has_version: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = 'schema_version')",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let version: i64 = if has_version {
        let rows = tx
            .query("SELECT application, version FROM schema_version", &[])
            .await
            .map_err(|e| {
                StorageError(format!(
                    "postgres: schema {schema:?} has a schema_version table that iotseal did \
                     not create; refusing to use it ({})",
                    pg(e).0
                ))
            })?;
        let [row] = rows.as_slice() else {
            return Err(StorageError(format!(
                "postgres: schema {schema:?}: schema_version must hold one row, it holds {}",
                rows.len()
            )));
        };
        let application: String = row.try_get(0).map_err(pg)?;
        if application != APPLICATION {
            return Err(StorageError(format!(
                "postgres: schema {schema:?} belongs to {application:?}, not iotseal; \
                 refusing to use it"
            )));
        }
        i64::from(row.try_get::<_, i32>(1).map_err(pg)?)
    } else {
        let objects: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if objects > 0 {
            return Err(StorageError(format!(
                "postgres: schema {schema:?} holds tables that iotseal did not create; refusing \
                 to use it (give the gateway a schema of its own)"
            )));
        }
        0
    };
    let Ok(version) = u32::try_from(version) else {
        return Err(StorageError(format!(
            "postgres: schema {schema:?} has an invalid schema version {version}"
        )));
    };
    if version > LATEST {
        return Err(StorageError(format!(
            "postgres: schema {schema:?} has schema version {version}, newer than this build \
             supports ({LATEST}); use a newer iotseal gateway"
        )));
    }
    if version == LATEST {
        // Nothing to do: the transaction only read.
        return tx.commit().await.map_err(pg);
    }
    if !has_version {
        tx.batch_execute(
            "CREATE TABLE schema_version (
                 singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                 application text    NOT NULL,
                 version     integer NOT NULL
             )",
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_version (application, version) VALUES ($1, 0)",
            &[&APPLICATION],
        )
        .await
        .map_err(pg)?;
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(script).await.map_err(|e| {
            StorageError(format!(
                "postgres: migration to version {}: {}",
                i + 1,
                pg(e).0
            ))
        })?;
    }
    let latest = LATEST as i32;
    tx.execute("UPDATE schema_version SET version = $1", &[&latest])
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    tracing::info!(
        schema,
        from = version,
        to = LATEST,
        "postgres schema migrated"
    );
    Ok(())
}
