//! The admin API and its OpenAPI 3.1 document (issue 16).
//!
//! - `docs/openapi.json` is regenerated and compared byte for byte (set
//!   `IOTSEAL_REGEN_OPENAPI=1` to rewrite it after an intended change).
//! - The document is complete: the operations are exactly the admin routes, each needs the
//!   bearer token and answers 401 without it, every error answer but 401 has the `{"error"}`
//!   body, every parameter and every field of every schema is described.
//! - Over a running gateway: every documented operation is routed and behind the token (401
//!   without it; a path the router does not know would be 404), every other method of a
//!   documented path is 405; `GET /v1/openapi.json` needs the token and serves the document;
//!   the answers carry exactly the fields their schemas name; `GET /v1/cluster` too (against
//!   the machine's NATS and PostgreSQL: `IOTSEAL_TEST_NATS`, `IOTSEAL_TEST_PG`).
//! - A device's `readings` counts the rows stored, not the readings received: the same
//!   reading in three records counts once (docs/decisions.md D17).
//! - Readings JSON (issue 19): `msg_id` is a decimal string, exact above 2^53; NaN and
//!   ±infinity as names: in iotseal-e2e/tests/admin_readings.rs (the SDK's admin client reads
//!   them back).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Env, acked, framed, open_acks, provider, root_trusting_config, seal_records};
use hyper::Method;
use iotseal_gateway::client::Client;
use iotseal_gateway::{Gateway, Settings};
use iotseal_proto::reading::{Reading, SensorKind, decode_batch};
use iotseal_proto::{SigAlg, Suite};
use iotseal_testkit::lay_out_gateway_dir;
use serde_json::Value;

/// The admin routes (issue 16): the document must describe exactly these.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/cluster"),
    ("get", "/v1/devices"),
    ("post", "/v1/devices"),
    ("get", "/v1/devices/{id}"),
    ("get", "/v1/devices/{id}/readings"),
    ("post", "/v1/devices/{id}/revoke"),
    ("get", "/v1/openapi.json"),
];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

fn stored_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn document() -> Value {
    serde_json::from_str(&iotseal_gateway::openapi_json().unwrap()).unwrap()
}

/// (method, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

/// The component schema a `$ref` names.
fn component<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("not a schema reference: {reference}"));
    &doc["components"]["schemas"][name]
}

/// The property names of a component schema.
fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let path = stored_path();
    let fresh = iotseal_gateway::openapi_json().unwrap();
    if std::env::var_os("IOTSEAL_REGEN_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with IOTSEAL_REGEN_OPENAPI=1)", path.display()));
    assert!(
        stored == fresh,
        "{} differs from the document the code generates (run with IOTSEAL_REGEN_OPENAPI=1 \
         after an intended change)",
        path.display()
    );
}

#[test]
fn the_document_describes_every_admin_route_and_nothing_else() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let expected: BTreeSet<(String, String)> = ADMIN_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected);
    // The binary endpoints are pointed to, not described.
    let description = doc["info"]["description"].as_str().unwrap();
    for s in [
        "/v1/handshake",
        "/v1/records",
        "docs/protocol.md",
        "HTTP binding",
    ] {
        assert!(description.contains(s), "the description does not name {s}");
    }
}

#[test]
fn every_operation_needs_the_token_and_documents_its_answers() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["admin_token"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{"admin_token": []}]));
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let what = format!("{method} {path}");
        assert!(op["summary"].is_string(), "{what}: no summary");
        assert!(op["operationId"].is_string(), "{what}: no operationId");
        // Operation-level security would override the global one.
        assert!(op.get("security").is_none(), "{what}: its own security");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("401"), "{what}: no 401");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success"
        );
        for (status, r) in responses {
            assert!(
                r["description"].is_string(),
                "{what} {status}: no description"
            );
            let error = status.starts_with('4') || status.starts_with('5');
            if status == "401" {
                assert!(r.get("content").is_none(), "{what}: 401 has no body");
                assert!(r["headers"]["WWW-Authenticate"].is_object(), "{what}");
            } else if error {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{what} {status}: the error body"
                );
            } else {
                assert!(r["content"].is_object(), "{what} {status}: no body");
            }
        }
        // Every parameter is described, and `{id}` wherever the path has it.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for p in &params {
            assert!(p["description"].is_string(), "{what}: parameter {p}");
        }
        let has_id = params
            .iter()
            .any(|p| p["name"] == "id" && p["in"] == "path");
        assert_eq!(has_id, path.contains("{id}"), "{what}: the id parameter");
    }
    let q: BTreeSet<String> = doc["paths"]["/v1/devices/{id}/readings"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        q,
        ["format", "from", "limit", "to"].map(String::from).into()
    );
}

/// Every property of every schema (nested ones included) has a description.
#[test]
fn every_field_of_every_schema_is_described() {
    fn walk(v: &Value, at: &str) {
        let Some(props) = v.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, p) in props {
            let described = p["description"].is_string()
                || p["$ref"].is_string()
                || p["oneOf"].as_array().is_some_and(|o| {
                    o.iter().any(|s| s["$ref"].is_string()) && p["description"].is_string()
                });
            assert!(described, "{at}.{name} has no description: {p}");
            walk(p, &format!("{at}.{name}"));
        }
    }
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.len() >= 7, "{:?}", schemas.keys());
    for (name, s) in schemas {
        assert!(
            s["properties"].is_object(),
            "{name}: an object schema expected"
        );
        walk(s, name);
    }
}

#[test]
fn the_documented_limits_are_the_code_s() {
    let doc = document();
    let readings = &doc["paths"]["/v1/devices/{id}/readings"]["get"];
    let limit = readings["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["default"], 1000);
    let text = limit["description"].as_str().unwrap();
    assert!(text.contains("100000"), "{text}");
    let info = &doc["components"]["schemas"]["DeviceInfo"]["properties"];
    assert_eq!(info["id"]["maxLength"], 32);
    assert_eq!(info["id"]["minLength"], 1);
    let algs: Vec<&str> = info["alg"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let names: Vec<&str> = SigAlg::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(algs, names);
    // The CSV example starts with the header the gateway writes.
    let csv = readings["responses"]["200"]["content"]["text/csv"]["example"]
        .as_str()
        .unwrap();
    assert!(
        csv.starts_with("device_id,msg_id,device_time_ms,received_ms,payload_hex,values\n"),
        "{csv}"
    );
}

/// The examples' `payload_hex` is a real reading's encoding: the one the CSV example's line
/// describes (a batch of one is `01` followed by it).
#[test]
fn the_payload_examples_are_real_encodings() {
    let doc = document();
    let reading = Reading {
        msg_id: 17,
        time_ms: 1_767_225_600_000,
        values: vec![
            (SensorKind::Temperature, 21.5),
            (SensorKind::Humidity, 40.0),
        ],
        extra: vec![],
    };
    let mut encoded = Vec::new();
    reading.encode(&mut encoded);
    let hex = hex::encode(&encoded);
    let example = &doc["components"]["schemas"]["StoredReading"]["properties"]["payload_hex"];
    assert_eq!(example["example"], hex.as_str());
    let decoded = decode_batch(&[&[1u8][..], &encoded].concat()).unwrap();
    assert_eq!(decoded, [reading]);
    let csv =
        doc["paths"]["/v1/devices/{id}/readings"]["get"]["responses"]["200"]["content"]["text/csv"]
            ["example"]
            .as_str()
            .unwrap();
    let line =
        format!("sensor-0042,17,1767225600000,1767225600412,{hex},temperature=21.5;humidity=40\n");
    assert!(csv.ends_with(&line), "{csv}\n{line}");
}

/// The document's `{id}` paths, for a device that exists.
fn concrete(path: &str, id: &str) -> String {
    path.replace("{id}", id)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_routed_behind_the_token() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    env.device("dev-1", Suite::DEFAULT).await;
    let doc = document();
    let ops = operations(&doc);
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    let auth = env.auth();
    for path in paths {
        let url = concrete(path, "dev-1");
        for method in METHODS {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // The token is checked first, whatever the method.
            let r = env
                .client
                .request(m.clone(), &url, &[], vec![])
                .await
                .unwrap();
            assert_eq!(r.status, 401, "{method} {url} without the token");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert!(r.body.is_empty(), "{method} {url}: a 401 has no body");
            let wrong = [("authorization", "Bearer not-the-admin-token")];
            let r = env
                .client
                .request(m.clone(), &url, &wrong, vec![])
                .await
                .unwrap();
            assert_eq!(r.status, 401, "{method} {url} with another token");
            let with = [("authorization", auth.as_str())];
            let r = env.client.request(m, &url, &with, vec![]).await.unwrap();
            if ops.contains(&(method.to_string(), path.clone())) {
                assert!(
                    ![401, 404, 405].contains(&r.status) || url == "/v1/cluster",
                    "{method} {url}: {}",
                    r.status
                );
            } else {
                assert_eq!(r.status, 405, "{method} {url}: not documented, not routed");
            }
        }
    }
    // A path the router does not know is 404 before any token check: the 401s above show
    // the documented paths are routed.
    let r = env
        .client
        .request(Method::GET, "/v1/devices/dev-1/nothing", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_openapi_json_needs_the_token_and_serves_the_document() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let r = env
        .client
        .request(Method::GET, "/v1/openapi.json", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    let r = env.admin(Method::GET, "/v1/openapi.json", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let stored = std::fs::read(stored_path()).unwrap();
    assert!(
        r.body == stored,
        "the served document is not docs/openapi.json"
    );
    assert_eq!(
        r.body,
        iotseal_gateway::openapi_json().unwrap().into_bytes()
    );
}

/// The JSON answers carry exactly the fields of their documented schemas.
#[tokio::test(flavor = "multi_thread")]
async fn answers_carry_the_fields_of_their_schemas() {
    let doc = document();
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("dev-1", Suite::DEFAULT).await;
    let mut conn = env.conn().await;
    let sent = dev.handshake(&mut conn, 2).await.sent;

    let json = |r: iotseal_gateway::client::Response| -> Value {
        serde_json::from_slice(&r.body).unwrap()
    };
    let device_ref = |path: &str, method: &str, status: &str| -> String {
        let c = &doc["paths"][path][method]["responses"][status]["content"]["application/json"];
        let s = &c["schema"];
        s["$ref"]
            .as_str()
            .or_else(|| s["items"]["$ref"].as_str())
            .unwrap()
            .to_string()
    };
    let schema_keys = |reference: &str| keys(&component(&doc, reference)["properties"]);

    let one = json(env.admin(Method::GET, "/v1/devices/dev-1", "").await);
    assert_eq!(
        keys(&one),
        schema_keys(&device_ref("/v1/devices/{id}", "get", "200"))
    );
    let all = json(env.admin(Method::GET, "/v1/devices", "").await);
    assert_eq!(
        keys(&all[0]),
        schema_keys(&device_ref("/v1/devices", "get", "200"))
    );
    let rows = json(
        env.admin(Method::GET, "/v1/devices/dev-1/readings", "")
            .await,
    );
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let reading_ref = device_ref("/v1/devices/{id}/readings", "get", "200");
    assert_eq!(keys(&rows[0]), schema_keys(&reading_ref));
    // `values` is a list of [name, value] pairs.
    let pair = &rows[0]["values"][0];
    assert!(pair[0].is_string() && pair[1].is_number(), "{pair}");
    // `msg_id` is a decimal string (issue 19).
    assert_eq!(rows[0]["msg_id"], sent[0].msg_id.to_string().as_str());
    // payload_hex is the reading's encoding as sent, without the batch's count: a batch of
    // one (count 1) around it decodes to the reading.
    for (row, reading) in rows.as_array().unwrap().iter().zip(&sent) {
        let payload = hex::decode(row["payload_hex"].as_str().unwrap()).unwrap();
        let one = decode_batch(&[&[1u8][..], &payload].concat()).unwrap();
        assert_eq!(&one, std::slice::from_ref(reading));
    }

    let err = json(env.admin(Method::GET, "/v1/devices/nobody", "").await);
    assert_eq!(keys(&err), properties(&doc, "ErrorBody"));
    let revoked = json(
        env.admin(Method::POST, "/v1/devices/dev-1/revoke", "")
            .await,
    );
    assert_eq!(
        keys(&revoked),
        schema_keys(&device_ref("/v1/devices/{id}/revoke", "post", "200"))
    );
    // A single gateway: /v1/cluster is routed and behind the token, and answers 404.
    let r = env.admin(Method::GET, "/v1/cluster", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(keys(&json(r)), properties(&doc, "ErrorBody"));
    // An id that is not UTF-8 once percent-decoded: the JSON 400.
    let r = env.admin(Method::GET, "/v1/devices/%FF", "").await;
    assert_eq!(r.status, 400);
    assert_eq!(keys(&json(r)), properties(&doc, "ErrorBody"));
}

/// A gateway on SQLite in a fresh directory (`Env` with its files, whose in-memory storage
/// is unused), and its settings (to start it again on the same file).
async fn env_on_sqlite() -> (Env, Settings) {
    Env::start_on_sqlite().await
}

/// (readings, records_accepted) of a device.
async fn counters(env: &Env, id: &str) -> (u64, u64) {
    let r = env
        .admin(Method::GET, &format!("/v1/devices/{id}"), "")
        .await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (
        v["readings"].as_u64().unwrap(),
        v["records_accepted"].as_u64().unwrap(),
    )
}

/// `readings` counts rows stored: the same reading sent in three records is one row and
/// counts once; a second distinct reading makes 2; sending them again (another session,
/// beside another device's reading with the same message id) adds nothing, and after a
/// restart the count (now the storage's) is the same.
#[tokio::test(flavor = "multi_thread")]
async fn device_readings_count_rows_stored_not_readings_received() {
    let (mut env, settings) = env_on_sqlite().await;
    let mut a = env.device("dev-a", Suite::DEFAULT).await;
    let mut b = env.device("dev-b", Suite::DEFAULT).await;
    let mut conn = env.conn().await;
    let mut ha = a.handshake(&mut conn, 0).await;
    let mut hb = b.handshake(&mut conn, 0).await;

    // The same reading in three records of one request: all three accepted, one row.
    let r1 = a.readings(1);
    let records = seal_records(&mut ha.session, &[r1.clone(), r1.clone(), r1.clone()]);
    let answer = conn
        .post_binary("/v1/records", framed(&records))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let acks = open_acks(&mut ha.session, &answer.body);
    assert!((0..=2).all(|s| acked(&acks[0], s)), "{acks:?}");
    assert_eq!(counters(&env, "dev-a").await, (1, 3));

    // A second, distinct reading (in two records): 2.
    let r2 = a.readings(1);
    let records = seal_records(&mut ha.session, &[r2.clone(), r2.clone()]);
    let answer = conn
        .post_binary("/v1/records", framed(&records))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(counters(&env, "dev-a").await, (2, 5));

    // Both again in one record of a new session, in the same request as two records of b
    // holding one reading whose message id is r1's (ids are per device): a stays at 2, b has 1.
    let mut conn2 = env.conn().await;
    let mut ha2 = a.handshake(&mut conn2, 0).await;
    let mut rb = b.readings(1);
    rb[0].msg_id = r1[0].msg_id;
    let mut records = seal_records(&mut ha2.session, &[[r1.clone(), r2.clone()].concat()]);
    records.extend(seal_records(&mut hb.session, &[rb.clone(), rb]));
    let answer = conn2
        .post_binary("/v1/records", framed(&records))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(counters(&env, "dev-a").await, (2, 6));
    assert_eq!(counters(&env, "dev-b").await, (1, 2));
    drop((conn, conn2));

    // After a restart: the storage's count, the same.
    env.gw.take().unwrap().stop().await.unwrap();
    let gw = Gateway::start(settings).await.unwrap();
    env.url = gw.url().to_string();
    env.client = Client::new(&env.url, Some(root_trusting_config(&env.cert_pem))).unwrap();
    env.gw = Some(gw);
    assert_eq!(counters(&env, "dev-a").await, (2, 0));
    assert_eq!(counters(&env, "dev-b").await, (1, 0));
}

/// In cluster mode the cluster layer answers `GET /v1/cluster`: behind the token, with the
/// fields of `ClusterStatus` and, per member, of `ClusterNode`.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_carries_the_fields_of_its_schema() {
    let (Ok(nats), Ok(pg)) = (
        std::env::var("IOTSEAL_TEST_NATS"),
        std::env::var("IOTSEAL_TEST_PG"),
    ) else {
        eprintln!("skipped: set IOTSEAL_TEST_NATS and IOTSEAL_TEST_PG");
        return;
    };
    let run = hex::encode(provider().random_vec(5).unwrap());
    let schema = format!("adminapi_{run}");
    let (c, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if pg.contains('?') { '&' } else { '?' };
    let dir = tempfile::tempdir().unwrap();
    let laid = lay_out_gateway_dir(dir.path(), &provider(), &[SigAlg::Ed25519]).unwrap();
    let mut s = laid.settings.clone();
    s.storage = format!("{pg}{sep}options=-c%20search_path%3D{schema}");
    s.cluster.url = nats;
    s.cluster.node_id = "node-1".into();
    s.cluster.prefix = format!("aa{run}");
    let gw = Gateway::start(s).await.unwrap();
    let client = Client::new(
        gw.url(),
        Some(root_trusting_config(&laid.public.tls_cert_pem)),
    )
    .unwrap();
    let r = client
        .request(Method::GET, "/v1/cluster", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {}", laid.admin_token);
    let r = client
        .request(
            Method::GET,
            "/v1/cluster",
            &[("authorization", auth.as_str())],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let doc = document();
    assert_eq!(keys(&v), properties(&doc, "ClusterStatus"));
    let members = v["members"].as_array().unwrap();
    assert!(!members.is_empty());
    for m in members {
        assert_eq!(keys(m), properties(&doc, "ClusterNode"));
    }
    gw.stop().await.unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Registration refuses ids that could pass for another (bidi and format characters,
/// separators, blank) and weak keys (small-order or all-zero Ed25519, off-curve P-256, the
/// composite's Ed25519 half), each with a 400 that says why; a good key still registers.
#[tokio::test]
async fn registration_refuses_deceptive_ids_and_weak_keys() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let p = provider();
    let good_ed = iotseal_testkit::device_key(&p, SigAlg::Ed25519).public_key();
    let register = |id: &str, alg: &str, pk: &[u8]| {
        serde_json::json!({"id": id, "alg": alg, "public_key": hex::encode(pk)}).to_string()
    };
    for id in [
        "evil\u{202e}gnp",
        "\u{feff}sensor",
        "a\u{2028}b",
        "   ",
        " sensor",
        "zw\u{200d}j",
    ] {
        let r = env
            .admin(
                Method::POST,
                "/v1/devices",
                &register(id, "ed25519", &good_ed),
            )
            .await;
        assert_eq!(r.status, 400, "{id:?}");
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(e["error"].as_str().unwrap().starts_with("id: "), "{e}");
    }
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let order_8 =
        hex::decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a").unwrap();
    let good_p256 = iotseal_testkit::device_key(&p, SigAlg::EcdsaP256).public_key();
    let mut off_curve = good_p256.clone();
    off_curve[64] ^= 1;
    let mldsa = iotseal_testkit::device_key(&p, SigAlg::MlDsa65).public_key();
    let composite_weak = [&[0u8; 32][..], &mldsa].concat();
    for (alg, pk) in [
        ("ed25519", vec![0u8; 32]),
        ("ed25519", identity.to_vec()),
        ("ed25519", order_8),
        ("ecdsa-p256", off_curve),
        ("ed25519+mldsa65", composite_weak),
    ] {
        let r = env
            .admin(Method::POST, "/v1/devices", &register("weak", alg, &pk))
            .await;
        assert_eq!(r.status, 400, "{alg}");
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            e["error"].as_str().unwrap().contains("key refused"),
            "{alg}: {e}"
        );
    }
    let r = env
        .admin(
            Method::POST,
            "/v1/devices",
            &register("Gewächshaus 3", "ed25519", &good_ed),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = env
        .admin(
            Method::POST,
            "/v1/devices",
            &register("meter-1", "ecdsa-p256", &good_p256),
        )
        .await;
    assert_eq!(r.status, 201);
}
