//! The admin API through its router (no socket), with real components and a real
//! control-plane directory.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use floe::admin::{app, AdminState};
use floe::config::SandboxLimits;
use floe::control::{hash_key, ControlPlane};
use floe::transform::Runtime;
use floe_e2e::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const OPERATOR: &str = "operator-secret";
const LOAD_TIMEOUT: Duration = Duration::from_secs(240);

/// An empty WebAssembly component: valid, but it implements no world.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

struct Api {
    state: AdminState,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    fn new(dir: &Path) -> Api {
        let state = AdminState {
            control: Arc::new(ControlPlane::open(&dir.join("control")).expect("control plane")),
            operator_key_hash: Some(hash_key(OPERATOR)),
            runtime: Arc::new(Runtime::new(&dir.join("wasm-cache"), false).expect("runtime")),
            limits: SandboxLimits {
                max_component_mib: 1,
                ..SandboxLimits::default()
            },
            stats: None,
            broker: None,
            configured_tables: Arc::new(["configured".to_string()].into()),
        };
        Api {
            state,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let request = request.body(Body::from(body)).expect("request");
        self.runtime.block_on(async {
            let response = app(self.state.clone())
                .oneshot(request)
                .await
                .expect("response");
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, value)
        })
    }

    fn json(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(
            method,
            path,
            key,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    fn upload(&self, path: &str, key: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(key), "application/wasm", bytes)
    }

    fn create_tenant(&self, name: &str) -> String {
        let (status, body) = self.json(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR),
            json!({"name": name}),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["api_key"].as_str().expect("key").to_string()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn read(path: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each bad upload is refused with its own code and a message naming the problem, and
/// nothing is stored.
#[test]
fn bad_uploads_are_refused_with_their_own_error_and_nothing_is_stored() {
    let dir = scratch_dir("admin-uploads");
    let api = Api::new(&dir);
    let key = api.create_tenant("acme");
    let path = "/v1/tenants/acme/validators/orders";

    let (status, body) = api.upload(path, &key, b"MZ this is not wasm".to_vec());
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_component"),
        "{body}"
    );

    let (status, body) = api.upload(path, &key, vec![0u8; (1 << 20) + 10]);
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "component_too_large"),
        "{body}"
    );

    let (status, body) = api.upload(path, &key, read(guest("reads-files")));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "forbidden_import"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("wasi:filesystem"),
        "{body}"
    );

    let (status, body) = api.upload(path, &key, EMPTY_COMPONENT.to_vec());
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "wrong_world"),
        "{body}"
    );

    let (status, body) = api.call(
        Method::PUT,
        path,
        Some(&key),
        "application/json",
        read(guest("transactions-validator")),
    );
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        "{body}"
    );

    let (status, body) = api.call(
        Method::GET,
        "/v1/tenants/acme/validators",
        Some(&key),
        "",
        Vec::new(),
    );
    assert_eq!((status, body), (StatusCode::OK, json!({"validators": []})));
    let stored = std::fs::read_dir(dir.join("control/components"))
        .expect("components dir")
        .count();
    assert_eq!(stored, 0, "no refused component is stored");
    let artifacts = std::fs::read_dir(dir.join("wasm-cache")).map_or(0, |d| d.count());
    assert_eq!(
        artifacts, 0,
        "no refused component leaves a compiled artifact"
    );
}

/// Upload two versions, activate each, roll back; the state survives a reopen.
#[test]
fn versions_activate_roll_back_and_survive_a_restart() {
    let dir = scratch_dir("admin-lifecycle");
    let api = Api::new(&dir);
    let key = api.create_tenant("acme");
    let path = "/v1/tenants/acme/validators/orders";
    let v1 = read(guest("transactions-validator"));
    let v2 = read(guest("transactions-validator-chargebacks"));

    let (status, body) = api.upload(path, &key, v1.clone());
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(body["version"]["size"], v1.len());
    let (status, body) = api.upload(path, &key, v2);
    assert_eq!(
        (status, &body["version"]["version"]),
        (StatusCode::CREATED, &json!(2)),
        "{body}"
    );

    let activate = |version: u32| {
        api.json(
            Method::POST,
            &format!("{path}/activate"),
            Some(&key),
            json!({"version": version}),
        )
    };
    assert_eq!(activate(1).0, StatusCode::OK);
    assert_eq!(activate(2).1["active"], 2);
    let (status, body) = activate(7);
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "version_not_found")
    );

    let rollback = || {
        api.json(
            Method::POST,
            &format!("{path}/rollback"),
            Some(&key),
            json!({}),
        )
    };
    assert_eq!(rollback().1["active"], 1);
    let (status, body) = rollback();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "nothing_to_roll_back")
    );

    let (_, listed) = api.call(Method::GET, path, Some(&key), "", Vec::new());
    assert_eq!(listed["active"], 1);
    assert_eq!(listed["versions"].as_array().map(Vec::len), Some(2));

    let reopened = Api::new(&dir);
    let (status, again) = reopened.call(Method::GET, path, Some(&key), "", Vec::new());
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &listed),
        "the state survives a restart"
    );
    let hash = listed["versions"][0]["hash"].as_str().expect("hash");
    assert_eq!(
        read(dir.join(format!("control/components/{hash}.wasm"))),
        v1,
        "stored by content"
    );
}

/// The served OpenAPI document is the checked-in one, and every operation it describes
/// exists: public ones answer, the others ask for a key (never 404 or 405).
#[test]
fn the_openapi_document_describes_the_routes_that_exist() {
    let dir = scratch_dir("admin-openapi");
    let api = Api::new(&dir);
    let (status, served) = api.call(Method::GET, "/openapi.json", None, "", Vec::new());
    assert_eq!(status, StatusCode::OK);
    let checked_in: Value = serde_json::from_slice(&read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    ))
    .expect("docs/openapi.json is JSON");
    assert_eq!(served, checked_in);
    let paths = served["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{paths:?}");
    for (path, operations) in paths {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{name}", "orders")
            .replace("{table}", "transactions");
        for (method, operation) in operations.as_object().expect("operations") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, answer) = api.call(method.clone(), &concrete, None, "", Vec::new());
            let public = operation["security"]
                .as_array()
                .is_some_and(|s| s.is_empty());
            if public {
                assert!(
                    status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{method} {path}: {status}"
                );
            } else {
                assert_eq!(
                    (status, code(&answer)),
                    (StatusCode::UNAUTHORIZED, "unauthorized"),
                    "{method} {path}"
                );
            }
        }
    }
}

/// Every tenant route refuses a request without a key, with an unknown key, and with
/// another tenant's key; operator routes refuse tenant keys.
/// A 16 MiB upload without a key, or with another tenant's, is answered before a byte of
/// its body arrives: the body here never comes, and the answer must.
#[test]
fn an_upload_without_a_valid_key_is_refused_before_its_body_is_read() {
    let dir = scratch_dir("admin-auth-first");
    let api = Api::new(&dir);
    api.create_tenant("tenant-a");
    let b = api.create_tenant("tenant-b");
    for key in [None, Some("not-a-key"), Some(b.as_str())] {
        let mut request = Request::builder()
            .method(Method::PUT)
            .uri("/v1/tenants/tenant-a/validators/v")
            .header("content-type", "application/wasm")
            .header("content-length", (16u64 << 20).to_string());
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let never = tokio_stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let request = request.body(Body::from_stream(never)).expect("request");
        let status = api.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                app(api.state.clone()).oneshot(request),
            )
            .await
            .expect("answered without reading the body")
            .expect("response")
            .status()
        });
        let expected = if key == Some(b.as_str()) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected, "key {key:?}");
    }
}

#[test]
fn every_route_refuses_no_key_a_wrong_key_and_another_tenants_key() {
    let dir = scratch_dir("admin-auth");
    let api = Api::new(&dir);
    let a = api.create_tenant("tenant-a");
    let b = api.create_tenant("tenant-b");
    let (status, _) = api.upload(
        "/v1/tenants/tenant-a/validators/v",
        &a,
        read(guest("transactions-validator")),
    );
    assert_eq!(status, StatusCode::CREATED);

    let wasm = read(guest("transactions-validator"));
    let tenant_routes: Vec<(Method, &str, &str, Vec<u8>)> = vec![
        (Method::GET, "/v1/tenants/tenant-a", "", Vec::new()),
        (Method::POST, "/v1/tenants/tenant-a/keys", "", Vec::new()),
        (
            Method::GET,
            "/v1/tenants/tenant-a/validators",
            "",
            Vec::new(),
        ),
        (
            Method::PUT,
            "/v1/tenants/tenant-a/validators/v",
            "application/wasm",
            wasm,
        ),
        (
            Method::GET,
            "/v1/tenants/tenant-a/validators/v",
            "",
            Vec::new(),
        ),
        (
            Method::POST,
            "/v1/tenants/tenant-a/validators/v/activate",
            "application/json",
            br#"{"version":1}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/tenants/tenant-a/validators/v/rollback",
            "",
            Vec::new(),
        ),
        (
            Method::DELETE,
            "/v1/tenants/tenant-a/validators/v",
            "",
            Vec::new(),
        ),
    ];
    for (method, path, content_type, body) in &tenant_routes {
        let call =
            |key: Option<&str>| api.call(method.clone(), path, key, content_type, body.clone());
        let (status, answer) = call(None);
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{method} {path} without a key"
        );
        let (status, _) = call(Some("floe_not-a-key"));
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong key"
        );
        let (status, answer) = call(Some(&b));
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path} with another tenant's key"
        );
    }
    let operator_routes: Vec<(Method, &str, Value)> = vec![
        (Method::POST, "/v1/tenants", json!({"name": "tenant-c"})),
        (Method::GET, "/v1/tenants", json!({})),
        (
            Method::PUT,
            "/v1/tenants/tenant-a/limits",
            json!({"max_validators": 100}),
        ),
        (
            Method::PUT,
            "/v1/tenants/tenant-a/sink",
            json!({"topics": ["a"], "duckdb": {"path": "/tmp/a.duckdb"}}),
        ),
        (Method::DELETE, "/v1/tenants/tenant-a/sink", json!({})),
        (Method::DELETE, "/v1/tenants/tenant-b", json!({})),
    ];
    for (method, path, body) in &operator_routes {
        for key in [None, Some("floe_not-a-key")] {
            let (status, _) = api.json(method.clone(), path, key, body.clone());
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {key:?}"
            );
        }
        let (status, _) = api.json(method.clone(), path, Some(&a), body.clone());
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} with a tenant key"
        );
    }
    // Nothing above changed tenant-a's validator; its own key and the operator key work.
    let (status, own) = api.call(
        Method::GET,
        "/v1/tenants/tenant-a/validators/v",
        Some(&a),
        "",
        Vec::new(),
    );
    assert_eq!(
        (
            status,
            own["active"].clone(),
            own["versions"].as_array().map(Vec::len)
        ),
        (StatusCode::OK, Value::Null, Some(1))
    );
    let (status, _) = api.call(
        Method::GET,
        "/v1/tenants/tenant-a/validators/v",
        Some(OPERATOR),
        "",
        Vec::new(),
    );
    assert_eq!(status, StatusCode::OK);
    let keys = dir.join("control/state.json");
    let state = std::fs::read_to_string(keys).expect("state");
    assert!(
        !state.contains(&a) && !state.contains(&b),
        "keys are stored only as hashes"
    );
}

/// `floe run` with `admin.listen` serves the API over real HTTP beside the pipeline and
/// stops it on SIGTERM.
#[test]
fn floe_run_serves_the_admin_api() {
    let mut broker = Broker::start("admin-http");
    let dir = scratch_dir("admin-http");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut floe = start_floe_with_admin(&broker, &dir, topic, "admin-http", &addr, OPERATOR);
    let (status, ready) = wait_for("readiness", Duration::from_secs(60), || {
        http(&addr, "GET", "/readyz", &[], b"")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    assert!(
        ready.contains("\"kafka\":\"closed\"")
            && ready.contains("\"sink\":\"closed\"")
            && ready.contains("\"kafka_cluster\":\"reachable\""),
        "{status} {ready}"
    );

    let operator = format!("Bearer {OPERATOR}");
    let (status, created) = http(
        &addr,
        "POST",
        "/v1/tenants",
        &[
            ("authorization", &operator),
            ("content-type", "application/json"),
        ],
        br#"{"name":"acme"}"#,
    )
    .expect("create tenant");
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).expect("json");
    let key = format!("Bearer {}", created["api_key"].as_str().expect("key"));
    let (status, uploaded) = http(
        &addr,
        "PUT",
        "/v1/tenants/acme/validators/orders",
        &[
            ("authorization", &key),
            ("content-type", "application/wasm"),
        ],
        &read(guest("transactions-validator")),
    )
    .expect("upload");
    assert_eq!(status, 201, "{uploaded}");
    let (status, refused) =
        http(&addr, "GET", "/v1/tenants", &[("authorization", &key)], b"").expect("list");
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("\"code\":\"forbidden\""), "{refused}");
    let (status, stats) = http(
        &addr,
        "GET",
        "/v1/stats",
        &[("authorization", &operator)],
        b"",
    )
    .expect("stats");
    assert_eq!(status, 200, "{stats}");
    let stats: Value = serde_json::from_str(&stats).expect("json");
    assert!(
        stats["consumed"].is_u64() && stats["breakers"]["dlq"] == "closed",
        "{stats}"
    );

    // The CLI drives the same API.
    let api = format!("http://{addr}");
    let cli = |key: &str, args: &[&str]| {
        floe_command(
            args,
            &[("FLOE_API", api.clone()), ("FLOE_API_KEY", key.to_string())],
        )
    };
    let (code, out, err) = cli(OPERATOR, &["tenant", "create", "globex"]);
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let globex = created["api_key"].as_str().expect("key").to_string();
    let wasm = guest("transactions-validator").display().to_string();
    let (code, out, err) = cli(&globex, &["validator", "upload", "globex", "orders", &wasm]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&globex, &["validator", "activate", "globex", "orders", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    // `--key` is the API key on every subcommand; key columns are `--key-columns`.
    let (code, out, err) = cli(
        "",
        &[
            "route",
            "set",
            "globex",
            "orders",
            "--validator",
            "orders",
            "--key",
            &globex,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let set: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(set["route"]["key"], Value::Null, "{out}");
    let (code, out, err) = cli(
        &globex,
        &[
            "route",
            "set",
            "globex",
            "orders",
            "--validator",
            "orders",
            "--key-columns",
            "transaction_id",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let set: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        set["route"]["key"],
        serde_json::json!(["transaction_id"]),
        "{out}"
    );
    let (code, out, err) = cli(
        &globex,
        &["route", "set", "globex", "orders", "--validator", "orders"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&globex, &["validator", "list", "globex"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"active\": 1"), "{out}");
    let (code, out, err) = cli(&globex, &["validator", "rollback", "globex", "orders"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("nothing_to_roll_back"),
        "the API's error code reaches the user: {err}"
    );
    let (code, _, err) = cli(&globex, &["tenant", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("403 forbidden"), "{err}");

    // Readiness asks the Kafka cluster itself: not ready while it is down, ready again
    // once it is back.
    broker.stop();
    let (_, not_ready) = wait_for("not ready", Duration::from_secs(30), || {
        http(&addr, "GET", "/readyz", &[], b"")
            .ok()
            .filter(|(s, _)| *s == 503)
    });
    assert!(
        not_ready.contains("\"kafka_cluster\":\"unreachable\""),
        "{not_ready}"
    );
    broker.restart();
    wait_for("ready again", Duration::from_secs(60), || {
        http(&addr, "GET", "/readyz", &[], b"")
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    assert!(
        http(&addr, "GET", "/healthz", &[], b"").is_err(),
        "the API stops with floe"
    );
}

/// The whole lifecycle over HTTP with data flowing: create a tenant, upload, activate,
/// route a table through it, then upload v2, activate it, roll back — each takes effect
/// in the running pipeline without a restart, and the DLQ headers name the version used.
#[test]
fn validator_versions_swap_in_a_running_pipeline() {
    let broker = Broker::start("admin-swap");
    let dir = scratch_dir("admin-swap");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut floe = start_floe_with_admin(&broker, &dir, topic, "admin-swap", &addr, OPERATOR);
    let call = |method: &str, path: &str, key: &str, content_type: &str, body: &[u8]| {
        api(&addr, method, path, key, content_type, body)
    };
    let key = create_tenant(&addr, OPERATOR, "acme");
    let validator = "/v1/tenants/acme/validators/orders";
    let loads = || floe.log_text().matches("routes loaded").count();
    // Each control-plane change is followed by a reload of the pipeline's routes.
    let change = |method: &str, path: &str, content_type: &str, body: &[u8]| {
        let before = loads();
        let (status, answer) = call(method, path, &key, content_type, body);
        assert!(status < 300, "{method} {path}: {status} {answer}");
        wait_for(
            "the pipeline to reload its routes",
            Duration::from_secs(30),
            || (loads() > before).then_some(()),
        );
    };

    change(
        "PUT",
        validator,
        "application/wasm",
        &read(guest("transactions-validator")),
    );
    change(
        "POST",
        &format!("{validator}/activate"),
        "application/json",
        br#"{"version":1}"#,
    );
    change(
        "PUT",
        "/v1/tenants/acme/routes/transactions",
        "application/json",
        br#"{"validator":"orders"}"#,
    );
    let mut tx = Workload::new(Profile::Transactions, 300, 9000, 71).with_invalid_percent(10);
    broker.produce(topic, &mut tx, 3000);
    broker.wait_fully_committed("admin-swap", topic, LOAD_TIMEOUT);
    let phase_one = broker.read_all("floe.dlq.acme").len();

    change(
        "PUT",
        validator,
        "application/wasm",
        &read(guest("transactions-validator-chargebacks")),
    );
    change(
        "POST",
        &format!("{validator}/activate"),
        "application/json",
        br#"{"version":2}"#,
    );
    broker.produce(topic, &mut tx, 3000);
    broker.wait_fully_committed("admin-swap", topic, LOAD_TIMEOUT);
    let phase_two = broker.read_all("floe.dlq.acme").len();

    // A dry-run replay of the tenant's DLQ with v2 active: the chargebacks v1 refused
    // would load now, the negative amounts still fail.
    let letters = broker.read_all("floe.dlq.acme");
    let count = |code: &str| {
        letters
            .iter()
            .filter(|l| l.header("floe.code") == code)
            .count()
    };
    let (status, out, err) = floe_command(
        &["dlq", "replay", "--tenant", "acme", "--dry-run"],
        &[
            ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
            ("FLOE_KAFKA_TOPICS", topic.to_string()),
            ("FLOE_ADMIN_DIR", dir.join("cli").display().to_string()),
            (
                "FLOE_WASM_CACHE_DIR",
                dir.join("cli-cache").display().to_string(),
            ),
        ],
    );
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.contains(&format!("examined={phase_two}"))
            && out.contains(&format!("resent={}", count("status_unknown")))
            && out.contains(&format!(
                "rejected:amount_negative={}",
                count("amount_negative")
            )),
        "{out}"
    );

    change(
        "POST",
        &format!("{validator}/rollback"),
        "application/json",
        b"{}",
    );
    broker.produce(topic, &mut tx, 3000);
    broker.wait_fully_committed("admin-swap", topic, LOAD_TIMEOUT);
    // The stats name the tenant and count its table's verdicts and rows.
    let (_, stats) = call("GET", "/v1/stats", OPERATOR, "", b"");
    let table = &stats["tables"]["transactions"];
    assert_eq!(table["tenant"], "acme", "{stats}");
    assert_eq!(
        table["validator"], "acme/orders@v1",
        "the version in force: {stats}"
    );
    for figure in ["accepted", "rejected", "failed", "loaded"] {
        assert_eq!(stats["tenants"]["acme"][figure], table[figure], "{stats}");
    }
    assert_eq!(
        table["rejected"].as_u64(),
        Some(broker.read_all("floe.dlq.acme").len() as u64),
        "{stats}"
    );
    assert!(table["accepted"].as_u64() > Some(8000) && table["loaded"].as_u64() > Some(0));
    // The same figures for Prometheus, the version in force included.
    let metrics = metrics_text(&addr, OPERATOR);
    for line in [
        format!(
            "floe_table_changes_total{{tenant=\"acme\",table=\"transactions\",verdict=\"rejected\"}} {}",
            table["rejected"]
        ),
        "floe_validator_version{tenant=\"acme\",table=\"transactions\",validator=\"acme/orders@v1\"} 1"
            .to_string(),
        "floe_breaker_state{breaker=\"sink\",state=\"closed\"} 1".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    assert!(
        broker.read_all("floe.dlq").is_empty(),
        "a tenant's dead letters go to its own topic only"
    );
    let dlq = broker.read_all("floe.dlq.acme");
    let codes = |letters: &[TopicRecord], version: &str| -> Vec<String> {
        letters
            .iter()
            .map(|l| {
                assert_eq!(
                    l.header("floe.validator"),
                    format!("acme/orders@{version}"),
                    "{l:?}"
                );
                l.header("floe.code").to_string()
            })
            .collect()
    };
    let one = codes(&dlq[..phase_one], "v1");
    let two = codes(&dlq[phase_one..phase_two], "v2");
    let three = codes(&dlq[phase_two..], "v1");
    assert!(
        one.iter().any(|c| c == "status_unknown") && one.iter().any(|c| c == "amount_negative"),
        "{one:?}"
    );
    assert!(
        !two.is_empty() && two.iter().all(|c| c == "amount_negative"),
        "v2 accepts chargebacks: {two:?}"
    );
    assert!(
        three.iter().any(|c| c == "status_unknown"),
        "the rollback brings v1 back: {three:?}"
    );
}

/// A dry run shows each sample's verdict, the rows that would load and the guest's output,
/// for a version that need not be active.
#[test]
fn dry_run_reports_verdicts_rows_and_guest_output() {
    let dir = scratch_dir("admin-dry-run");
    let api = Api::new(&dir);
    let key = api.create_tenant("acme");
    let (status, _) = api.upload(
        "/v1/tenants/acme/validators/orders",
        &key,
        read(guest("transactions-validator")),
    );
    assert_eq!(status, StatusCode::CREATED);

    let mut workload = Workload::new(Profile::Transactions, 50, 200, 81).with_invalid_percent(30);
    let records: Vec<_> = (0..60).flat_map(|_| workload.next_records()).collect();
    let messages: Vec<Value> = records
        .iter()
        .map(|r| json!({"key": r.key, "value": r.value}))
        .collect();
    let (status, report) = api.json(
        Method::POST,
        "/v1/tenants/acme/validators/orders/dry-run",
        Some(&key),
        json!({"messages": messages, "version": 1}),
    );
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["validator"], "acme/orders@v1");
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        records.len(),
        "one result per message: {report}"
    );
    let count = |verdict: &str| results.iter().filter(|r| r["verdict"] == verdict).count();
    assert!(
        count("accept") > 10 && count("reject") > 0 && count("skip") > 0,
        "{report}"
    );
    let accepted = results
        .iter()
        .find(|r| r["verdict"] == "accept")
        .expect("an accept");
    assert!(accepted["row"]["transaction_id"].is_number(), "{accepted}");
    assert!(
        accepted["row"]["amount"].is_string(),
        "decimals stay exact text: {accepted}"
    );
    let rejected = results
        .iter()
        .find(|r| r["verdict"] == "reject")
        .expect("a reject");
    assert!(
        ["status_unknown", "amount_negative"].contains(&rejected["code"].as_str().unwrap_or("")),
        "{rejected}"
    );

    // The guest's output comes back with the verdicts.
    let (status, _) = api.upload(
        "/v1/tenants/acme/validators/poison",
        &key,
        read(guest("poison-trap")),
    );
    assert_eq!(status, StatusCode::CREATED);
    let sample = |id: i64, note: &str| json!({"key": {"id": id}, "value": {"op": "c", "after": {"id": id, "note": note}, "source": {"table": "notes"}}});
    let (status, report) = api.json(
        Method::POST,
        "/v1/tenants/acme/validators/poison/dry-run",
        Some(&key),
        json!({"messages": [sample(1, "fine"), sample(2, "poison"), {"key": {"id": 3}, "value": "not json at all"}], "version": 1}),
    );
    assert_eq!(status, StatusCode::OK, "{report}");
    let verdicts: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(verdicts, ["accept", "failed", "undecodable"], "{report}");
    assert_eq!(report["results"][1]["category"], "transform_trap");
    let output = report["output"].to_string();
    assert!(
        output.contains("poisoned record reached the validator"),
        "{report}"
    );

    let (status, answer) = api.json(
        Method::POST,
        "/v1/tenants/acme/validators/orders/dry-run",
        Some(&key),
        json!({"messages": []}),
    );
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::CONFLICT, "validator_not_active"),
        "no version given and none active"
    );

    // A dry run is held to the tenant's limits, as its pipeline calls are.
    let (status, _) = api.upload(
        "/v1/tenants/acme/validators/looping",
        &key,
        read(guest("poison-infinite-loop")),
    );
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = api.json(
        Method::PUT,
        "/v1/tenants/acme/limits",
        Some(OPERATOR),
        json!({"memory_mib": 16, "deadline_ms": 30, "max_component_mib": 1, "max_validators": 8}),
    );
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, report) = api.json(
        Method::POST,
        "/v1/tenants/acme/validators/looping/dry-run",
        Some(&key),
        json!({"messages": [sample(1, "poison")], "version": 1}),
    );
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["results"][0]["category"], "transform_timeout",
        "{report}"
    );
    assert!(
        report["results"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("30ms")),
        "the tenant's 30 ms deadline, not the default: {report}"
    );
    // And it is a sample: past 1,000 messages it is refused before any runs.
    let many: Vec<Value> = (0..1001).map(|i| sample(i, "fine")).collect();
    let (status, answer) = api.json(
        Method::POST,
        "/v1/tenants/acme/validators/orders/dry-run",
        Some(&key),
        json!({"messages": many, "version": 1}),
    );
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_samples"),
        "{answer}"
    );
}

/// The operator sets a tenant's limits; its uploads are held to them.
#[test]
fn tenant_limits_bound_uploads_and_validators() {
    let dir = scratch_dir("admin-limits");
    let api = Api::new(&dir);
    let key = api.create_tenant("acme");
    let limits =
        json!({"memory_mib": 32, "deadline_ms": 50, "max_component_mib": 1, "max_validators": 1});
    let (status, _) = api.json(
        Method::PUT,
        "/v1/tenants/acme/limits",
        Some(&key),
        limits.clone(),
    );
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a tenant cannot raise its own limits"
    );
    let (status, body) = api.json(
        Method::PUT,
        "/v1/tenants/acme/limits",
        Some(OPERATOR),
        limits.clone(),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, tenant) = api.call(Method::GET, "/v1/tenants/acme", Some(&key), "", Vec::new());
    assert_eq!(tenant["limits"], limits);

    let wasm = read(guest("transactions-validator"));
    let (status, _) = api.upload("/v1/tenants/acme/validators/one", &key, wasm.clone());
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api.upload(
        "/v1/tenants/acme/validators/one",
        &key,
        read(guest("transactions-validator-chargebacks")),
    );
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a new version of the same validator"
    );
    let (status, body) = api.upload("/v1/tenants/acme/validators/two", &key, wasm);
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "too_many_validators"),
        "{body}"
    );
}

/// Noisy neighbour: tenant A's validator loops forever on every batch while tenant B
/// streams. The operator gives B a sink of its own through the API (its own batch, load
/// thread and DuckDB file), so A's sandbox deadlines stall only A's lane. B's latency —
/// produce to offsets committed, which happens once the rows are in B's table — stays
/// within twice its latency without A; B's rows are in B's file only.
#[test]
fn a_looping_tenant_does_not_slow_another_tenant_down() {
    let broker = Broker::start("admin-noisy");
    let dir = scratch_dir("admin-noisy");
    let (topic_a, topic_b, group) = ("tenant-a.notes", "tenant-b.notes", "admin-noisy");
    broker.create_topic(topic_a, 1);
    broker.create_topic(topic_b, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("floe.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopics = [\"{topic_a}\", \"{topic_b}\"]\ngroup = \"{group}\"\n\
             assignment = \"all\"\n[batch]\nmax_age_ms = 50\n[sink.duckdb]\npath = \"{}\"\n\
             [wasm]\ncache_dir = \"{}\"\n[admin]\nlisten = \"{addr}\"\ndir = \"{}\"\n",
            broker.addr,
            dir.join("a.duckdb").display(),
            dir.join("wasm-cache").display(),
            dir.join("control").display(),
        ),
    )
    .expect("config");
    let mut floe = Floe::start_with_config(
        &config,
        &[("FLOE_OPERATOR_KEY", OPERATOR.to_string())],
        dir.join("floe.log"),
    );
    wait_for("the admin API", Duration::from_secs(60), || {
        http(&addr, "GET", "/healthz", &[], b"").ok()
    });
    // Both tenants run the looping component; only A's data holds its trigger.
    let looping = read(guest("poison-infinite-loop"));
    for (tenant, table) in [("a", "a_notes"), ("b", "b_notes")] {
        let key = create_tenant(&addr, OPERATOR, tenant);
        route_through_validator(&addr, &key, tenant, "notes", looping.clone(), table);
    }
    let sink_b = |path: &Path| {
        format!(
            r#"{{"topics": ["{topic_b}"], "duckdb": {{"path": "{}"}}}}"#,
            path.display()
        )
    };
    let set_sink = |key: &str, body: &str| {
        api(
            &addr,
            "PUT",
            "/v1/tenants/b/sink",
            key,
            "application/json",
            body.as_bytes(),
        )
    };
    // A file's path as a directory: no DuckDB file can be made there.
    let (status, answer) = set_sink(OPERATOR, &sink_b(&config.join("b.duckdb")));
    assert_eq!(
        (status, code(&answer)),
        (422, "sink_unreachable"),
        "{answer}"
    );
    let (status, answer) = set_sink(OPERATOR, r#"{"duckdb": {"path": "b.duckdb"}}"#);
    assert_eq!((status, code(&answer)), (400, "invalid_sink"), "{answer}");
    // A topic the cluster does not know would stop the pipeline's next start.
    let missing_topic = format!(
        r#"{{"topics": ["no-such-topic"], "duckdb": {{"path": "{}"}}}}"#,
        dir.join("b.duckdb").display()
    );
    let (status, answer) = set_sink(OPERATOR, &missing_topic);
    assert_eq!(
        (status, code(&answer)),
        (422, "sink_unreachable"),
        "{answer}"
    );
    assert!(answer.to_string().contains("no-such-topic"), "{answer}");
    let (status, answer) = set_sink(OPERATOR, &sink_b(&dir.join("b.duckdb")));
    assert_eq!(status, 200, "{answer}");
    wait_for("B's sink and both routes", Duration::from_secs(60), || {
        let log = floe.log_text();
        (log.contains("tenant sinks changed: pipeline restarted")
            && log
                .lines()
                .any(|l| l.contains("a/notes@v1") && l.contains("b/notes@v1")))
        .then_some(())
    });

    let mut next_id = 0;
    let mut b_latency = |rounds: usize| -> Duration {
        let mut took = Vec::new();
        for _ in 0..rounds {
            let records: Vec<(String, Vec<u8>)> = (0..20)
                .map(|i| note_record("b_notes", next_id + i, "fine"))
                .collect();
            next_id += 20;
            let started = std::time::Instant::now();
            produce_notes(&broker, topic_b, &records);
            let end = next_id;
            wait_for("B's rows", Duration::from_secs(60), || {
                (broker.committed_total(group, topic_b) >= end).then_some(())
            });
            took.push(started.elapsed());
        }
        took.sort();
        took[took.len() / 2]
    };
    let quiet = b_latency(9);

    let noise = std::sync::atomic::AtomicBool::new(true);
    let (noisy, sent_by_a) = std::thread::scope(|scope| {
        let neighbour = scope.spawn(|| {
            let mut id = 0;
            while noise.load(std::sync::atomic::Ordering::Relaxed) {
                let records: Vec<(String, Vec<u8>)> = (0..20)
                    .map(|i| {
                        let text = if i == 7 { "poison" } else { "fine" };
                        note_record("a_notes", id + i, text)
                    })
                    .collect();
                id += 20;
                produce_notes(&broker, topic_a, &records);
                std::thread::sleep(Duration::from_millis(100));
            }
            id
        });
        wait_for("A's validator to time out", Duration::from_secs(60), || {
            floe.log_text().contains("transform_timeout").then_some(())
        });
        let noisy = b_latency(9);
        noise.store(false, std::sync::atomic::Ordering::Relaxed);
        (noisy, neighbour.join().expect("neighbour"))
    });
    eprintln!(
        "B's median latency: {quiet:?} alone, {noisy:?} with A looping ({sent_by_a} A changes)"
    );
    assert!(sent_by_a > 0);
    assert_eq!(
        floe.terminate(Duration::from_secs(60)),
        0,
        "{}",
        floe.log_text()
    );
    assert!(
        noisy <= quiet.max(Duration::from_millis(100)) * 2,
        "B's median latency went from {quiet:?} to {noisy:?} with A looping"
    );
    let letters = broker.read_all("floe.dlq.a");
    assert!(
        !letters.is_empty()
            && letters
                .iter()
                .all(|l| l.header("floe.category") == "transform_timeout"),
        "only A's poisoned changes are dead-lettered, in A's topic"
    );
    assert!(broker.read_all("floe.dlq.b").is_empty());
    let b_rows = query_text(
        &dir.join("b.duckdb"),
        "SELECT CAST(count(*) AS VARCHAR) FROM b_notes",
    );
    assert_eq!(b_rows[0][0].as_deref(), Some(next_id.to_string().as_str()));
    let in_a = query_text(
        &dir.join("a.duckdb"),
        "SELECT CAST(count(*) AS VARCHAR) FROM information_schema.tables WHERE table_name = 'b_notes'",
    );
    assert_eq!(
        in_a[0][0].as_deref(),
        Some("0"),
        "none of B's rows in A's file"
    );
}

fn produce_notes(broker: &Broker, topic: &str, records: &[(String, Vec<u8>)]) {
    let raw: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_slice())))
        .collect();
    broker.produce_raw(topic, &raw);
}

/// A tenant cannot route a table the configuration routes: the table is the operator's.
#[test]
fn a_table_the_configuration_routes_cannot_be_routed_by_a_tenant() {
    let dir = scratch_dir("admin-configured-route");
    let api = Api::new(&dir);
    let key = api.create_tenant("acme");
    let (status, answer) = api.json(
        Method::PUT,
        "/v1/tenants/acme/routes/configured",
        Some(&key),
        json!({"target": "mine"}),
    );
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::CONFLICT, "route_conflict"),
        "{answer}"
    );
    let (status, answer) = api.json(
        Method::PUT,
        "/v1/tenants/acme/routes/other",
        Some(&key),
        json!({"target": "mine"}),
    );
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// A tenant's route that the configuration later routes too (state the API refuses now,
/// but a control plane can hold) costs the tenant that route: floe still starts, and the
/// configuration's route is the one in force.
#[test]
fn a_conflicting_tenant_route_in_the_control_plane_does_not_stop_floe() {
    let broker = Broker::start("admin-conflict");
    let dir = scratch_dir("admin-conflict");
    let topic = "dbserver1.public.notes";
    broker.create_topic(topic, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut floe = start_floe_with_admin(&broker, &dir, topic, "conflict", &addr, OPERATOR);
    let key = create_tenant(&addr, OPERATOR, "acme");
    let (status, answer) = api(
        &addr,
        "PUT",
        "/v1/tenants/acme/routes/notes",
        &key,
        "application/json",
        br#"{"target": "acme_notes"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    // The operator now routes `notes` in the configuration.
    let config = dir.join("floe.toml");
    std::fs::write(
        &config,
        "[[routes]]\ntable = \"notes\"\ntarget = \"notes_configured\"\n",
    )
    .expect("config");
    let env = [
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topic.to_string()),
        ("FLOE_KAFKA_GROUP", "conflict".to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "100".to_string()),
        (
            "FLOE_DUCKDB_PATH",
            dir.join("floe.duckdb").display().to_string(),
        ),
        ("FLOE_ADMIN_LISTEN", addr.clone()),
        ("FLOE_ADMIN_DIR", dir.join("control").display().to_string()),
        ("FLOE_OPERATOR_KEY", OPERATOR.to_string()),
    ];
    let mut floe = Floe::start_with_config(&config, &env, dir.join("floe-2.log"));
    let (k, v) = note_record("notes", 1, "hello");
    broker.produce_raw(topic, &[(Some(k.as_str()), Some(v.as_slice()))]);
    broker.wait_fully_committed("conflict", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    assert!(
        floe.log_text()
            .contains("a tenant's route of a table already routed is not in force"),
        "{}",
        floe.log_text()
    );
    let loaded = query_text(
        &dir.join("floe.duckdb"),
        "SELECT note FROM notes_configured",
    );
    assert_eq!(loaded, [[Some("hello".to_string())]]);
}
