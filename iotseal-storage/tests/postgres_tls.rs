//! PgStorage over TLS: `sslmode` against a real PostgreSQL server (`IOTSEAL_TEST_PG`; without it
//! each test prints "skipped: IOTSEAL_TEST_PG not set" and passes). The tests ask the server
//! first (`SHOW ssl`, over a plain connection) and check whichever behaviour it offers.

use std::sync::atomic::{AtomicU32, Ordering};

use iotseal_storage::postgres::{PgOptions, PgStorage};
use tokio_postgres::{Client, NoTls};

const ENV: &str = "IOTSEAL_TEST_PG";

/// A schema of the test's own, dropped at the end (even when the test fails).
struct Db {
    base: String,
    schema: String,
    admin: Client,
    ssl_on: bool,
}

impl Db {
    async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(ENV) else {
            eprintln!("skipped: {ENV} not set");
            return None;
        };
        let (admin, conn) = tokio_postgres::connect(&base, NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        static N: AtomicU32 = AtomicU32::new(0);
        let mut schema = format!(
            "iotseal_tls{}_{}_{test}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        schema.truncate(63);
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Some(Self {
            base,
            schema,
            admin,
            ssl_on: ssl == "on",
        })
    }

    /// The base URL with the test's schema, its own application name and `extra` parameters.
    fn url(&self, extra: &str) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}options=-c%20search_path%3D{s}&application_name={s}&{extra}",
            self.base,
            s = self.schema
        )
    }

    /// Whether the storage's connections (found by application name) use TLS.
    async fn storage_uses_tls(&self) -> bool {
        let rows = self
            .admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&self.schema],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "no connection of the storage found");
        let ssl: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
        assert!(
            ssl.iter().all(|s| *s == ssl[0]),
            "mixed connections: {ssl:?}"
        );
        ssl[0]
    }

    async fn connect(&self, extra: &str) -> Result<PgStorage, String> {
        PgStorage::connect(&self.url(extra), PgOptions::default())
            .await
            .map_err(|e| e.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (c, conn) = tokio_postgres::connect(&base, NoTls).await?;
                tokio::spawn(conn);
                c.batch_execute(&sql).await
            })
        })
        .join();
    }
}

/// A CA the server's certificate was not issued by.
fn wrong_ca() -> tempfile::NamedTempFile {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["not-the-server-ca".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), cert.pem()).unwrap();
    file
}

#[tokio::test]
async fn tls_sslmode_require_prefer_disable() {
    let Some(db) = Db::new("modes").await else {
        return;
    };
    if db.ssl_on {
        let s = db.connect("sslmode=require").await.expect("require");
        assert!(
            db.storage_uses_tls().await,
            "require: connected without TLS"
        );
        drop(s);
        // Wait for the storage's connections to close before the next storage.
        wait_gone(&db).await;
        let s = db.connect("sslmode=prefer").await.expect("prefer");
        assert!(db.storage_uses_tls().await, "prefer: the server offers TLS");
        drop(s);
        wait_gone(&db).await;
        let s = db.connect("sslmode=disable").await.expect("disable");
        assert!(!db.storage_uses_tls().await, "disable: connected over TLS");
        drop(s);
    } else {
        let e = db
            .connect("sslmode=require")
            .await
            .expect_err("require must refuse a server without TLS");
        assert!(e.contains("cannot connect"), "{e}");
        assert!(e.to_lowercase().contains("tls") || e.contains("ssl"), "{e}");
        let s = db
            .connect("sslmode=prefer")
            .await
            .expect("prefer falls back");
        assert!(!db.storage_uses_tls().await);
        drop(s);
    }
}

#[tokio::test]
async fn tls_verify_full_with_a_wrong_ca_fails() {
    let Some(db) = Db::new("wrongca").await else {
        return;
    };
    let ca = wrong_ca();
    let path = ca.path().to_str().unwrap().replace('/', "%2F");
    for mode in ["verify-full", "verify-ca"] {
        let e = db
            .connect(&format!("sslmode={mode}&sslrootcert={path}"))
            .await
            .expect_err("a certificate from another CA must be refused");
        eprintln!("sslmode={mode} with a wrong CA: {e}");
        assert!(e.starts_with("postgres: cannot connect"), "{mode}: {e}");
        if db.ssl_on {
            assert!(e.contains("certificate"), "{mode}: {e}");
        }
    }
}

#[tokio::test]
async fn tls_bad_sslmode_or_rootcert_is_a_clear_error() {
    let Some(db) = Db::new("badparams").await else {
        return;
    };
    let e = db.connect("sslmode=sometimes").await.expect_err("bad mode");
    assert!(e.contains("sslmode"), "{e}");
    let e = db
        .connect("sslmode=verify-full&sslrootcert=%2Fnonexistent%2Fca.pem")
        .await
        .expect_err("missing root certificate");
    assert!(e.contains("sslrootcert"), "{e}");
}

async fn wait_gone(db: &Db) {
    for _ in 0..100 {
        let n: i64 = db
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&db.schema],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the storage's connections did not close");
}
