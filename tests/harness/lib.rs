//! Test harness: starts real processes (the tansu broker, floe) on free loopback ports
//! and stops them when dropped, also when a test fails.

use rdkafka::config::ClientConfig;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod fakesnow;
pub mod otlp;
pub mod postgres;
pub mod prometheus;

pub use fakesnow::{Fakesnow, TRANSACTIONS_QUERY};
pub use floe::generate::{produce, Profile, Workload};
pub use floe::source::PartitionProgress;
pub use postgres::{Connector, Debezium, Postgres};
pub use prometheus::Prometheus;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("floe-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create scratch dir");
    dir
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/floe/tansu/bin/tansu")
}

/// The floe binary built next to this test executable.
pub fn floe_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("floe")
}

/// A validator component built by `make guests` (`scripts/guests.sh`).
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var("FLOE_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/floe/guests")
        });
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make guests` (or `make test`)",
        path.display()
    );
    path
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl TopicRecord {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Starts tansu with sqlite storage in `dir` on `port` and waits until it is ready.
fn launch_tansu(dir: &Path, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(tansu_binary())
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (run `make tansu`)",
                tansu_binary().display()
            )
        });
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let log = dir.join("broker.log");
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .ok();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(f) = out.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if strip_ansi(&line).contains("ready in") {
                    let _ = tx.send(());
                }
            }
        });
    }
    let ready = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    if !ready || matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
        let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
        panic!("tansu did not become ready:\n{log}");
    }
    child
}

/// A tansu broker with sqlite storage in its own folder.
pub struct Broker {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        let dir = scratch_dir(&format!("{name}-broker"));
        let port = free_port();
        let broker = Broker {
            child: launch_tansu(&dir, port),
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        broker.add_header_index();
        broker
    }

    /// Kills the broker (SIGKILL); `restart` brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("broker port");
        // The port can linger briefly after the kill.
        let mut last = None;
        for _ in 0..20 {
            match std::panic::catch_unwind(|| launch_tansu(&self.dir, port)) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        std::panic::resume_unwind(last.expect("a failed start"));
    }

    /// tansu 0.6.0 lacks this index; without it every fetch scans all headers.
    fn add_header_index(&self) {
        let status = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create index if not exists header_topition_offset on header(topition, offset_id)'); c.commit()")
            .arg(self.dir.join("tansu.db"))
            .status()
            .expect("python3");
        assert!(status.success(), "cannot add the header index");
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(floe::source::create_topic(
            &self.addr,
            &Default::default(),
            topic,
            partitions,
        ))
        .expect("create topic");
    }

    /// Produces `events` changes of `workload` to `topic`.
    pub fn produce(&self, topic: &str, workload: &mut Workload, events: u64) {
        produce::produce(&self.addr, topic, workload, events, 0, |_| {}).expect("produce");
    }

    /// Produces records as given (key, value), for messages the generator never writes.
    pub fn produce_raw(&self, topic: &str, records: &[(Option<&str>, Option<&[u8]>)]) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("producer");
        for (key, value) in records {
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
            if let Some(k) = key {
                record = record.key(*k);
            }
            if let Some(v) = value {
                record = record.payload(*v);
            }
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every record of `topic` up to its high watermarks, in partition then offset order.
    pub fn read_all(&self, topic: &str) -> Vec<TopicRecord> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", "floe-test-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let partitions = floe::source::topic_partitions(&consumer, topic)
            .expect("metadata")
            .unwrap_or_else(|| panic!("no topic {topic}"));
        let mut tpl = TopicPartitionList::new();
        let mut ends = std::collections::BTreeMap::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .expect("watermarks");
            if high > low {
                tpl.add_partition_offset(topic, p, Offset::Offset(low))
                    .expect("tpl");
                ends.insert(p, high);
            }
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let start = Instant::now();
        while !ends.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "reading {topic} timed out"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("consume");
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_string(), value.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(TopicRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
            if ends
                .get(&m.partition())
                .is_some_and(|&end| m.offset() + 1 >= end)
            {
                ends.remove(&m.partition());
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// The group's committed offsets against the high watermarks, per partition.
    pub fn progress(&self, group: &str, topic: &str) -> Vec<PartitionProgress> {
        floe::source::group_progress(&self.addr, group, topic).expect("group progress")
    }

    /// Sum of the group's committed offsets over the partitions of `topic`.
    pub fn committed_total(&self, group: &str, topic: &str) -> i64 {
        self.progress(group, topic)
            .iter()
            .filter_map(|p| p.committed)
            .sum()
    }

    /// Waits until `group` has committed every partition of `topic` to its high watermark.
    pub fn wait_fully_committed(&self, group: &str, topic: &str, timeout: Duration) {
        wait_for(
            &format!("{group} to commit all of {topic}"),
            timeout,
            || {
                self.progress(group, topic)
                    .iter()
                    .all(|p| p.lag() == 0)
                    .then_some(())
            },
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `floe run`, configured through FLOE_* variables.
pub struct Floe {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Floe {
    pub fn start(env: &[(&str, String)], log: PathBuf) -> Floe {
        Self::start_args(&["run"], env, log)
    }

    /// `floe run --config <config>`, with `env` on top.
    pub fn start_with_config(config: &Path, env: &[(&str, String)], log: PathBuf) -> Floe {
        let config = config.display().to_string();
        Self::start_args(&["run", "--config", &config], env, log)
    }

    fn start_args(args: &[&str], env: &[(&str, String)], log: PathBuf) -> Floe {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(floe_binary());
        cmd.args(args)
            .stdout(out)
            .stderr(err)
            .env("FLOE_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", floe_binary().display()));
        Floe {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit code, waiting at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> i32 {
        let mut child = self.child.take().expect("floe is running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = wait_for("floe to exit after SIGTERM", timeout, || {
            child.try_wait().ok().flatten()
        });
        status.code().unwrap_or(-1)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process exits on its own; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let mut child = self.child.take().expect("floe is running");
        let status = wait_for("floe to exit", timeout, || child.try_wait().ok().flatten());
        status.code().unwrap_or(-1)
    }
}

impl Drop for Floe {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Rows of `query` on the DuckDB file at `path`, every column as text.
pub fn query_text(path: &Path, query: &str) -> Vec<Vec<Option<String>>> {
    let conn = duckdb::Connection::open_with_flags(
        path,
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .expect("config"),
    )
    .expect("open duckdb");
    let mut stmt = conn.prepare(query).expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut out = Vec::new();
    while let Some(row) = rows.next().expect("row") {
        let n = row.as_ref().column_count();
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(row.get::<_, Option<String>>(i).expect("text column"));
        }
        out.push(values);
    }
    out
}

/// Asserts equal tables, reporting the first differing row instead of two huge dumps.
pub fn assert_same_rows(actual: &[Vec<Option<String>>], expected: &[Vec<Option<String>>]) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a, e, "row {i} differs (actual, then expected)");
    }
    assert_eq!(actual.len(), expected.len(), "row count differs");
}

/// Starts floe `rounds` times and SIGKILLs each run once it has committed something new
/// (and a little more); returns how many runs were killed before all `total` messages
/// were committed.
pub fn kill_mid_load(
    rounds: u64,
    total: i64,
    mut start: impl FnMut(u64) -> Floe,
    committed: impl Fn() -> i64,
) -> u32 {
    let mut kills = 0;
    let mut last_progress = 0;
    for round in 0..rounds {
        let mut floe = start(round);
        let progress = wait_for("progress before the kill", Duration::from_secs(240), || {
            let done = committed();
            (done > last_progress).then_some(done)
        });
        std::thread::sleep(Duration::from_millis(37 * (round + 1)));
        floe.kill9();
        if progress < total {
            kills += 1;
        }
        last_progress = progress;
    }
    kills
}

/// Runs a floe command to completion: exit code, stdout, stderr.
pub fn floe_command(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(floe_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run floe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 200 payload-only `things` rows (`x` = id × 10), except id 150, whose `x` is the text
/// "not a number": a value a target column typed from the first rows refuses. Produced to
/// `topic`; returns the records as produced (key, value).
pub fn produce_things_with_one_refused(broker: &Broker, topic: &str) -> Vec<(String, Vec<u8>)> {
    let thing = |id: i64, x: serde_json::Value| {
        let value = serde_json::json!({
            "before": null, "after": {"id": id, "x": x}, "op": "c",
            "source": {"table": "things", "lsn": 1000 + id, "ts_ms": 1_767_225_600_000i64},
        });
        (format!("{{\"id\":{id}}}"), value.to_string().into_bytes())
    };
    let records: Vec<(String, Vec<u8>)> = (1..=200)
        .map(|id| match id {
            150 => thing(id, serde_json::json!("not a number")),
            _ => thing(id, serde_json::json!(id * 10)),
        })
        .collect();
    let raw: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_slice())))
        .collect();
    broker.produce_raw(topic, &raw);
    records
}

/// The DLQ holds exactly the refused `things` row (id 150), byte for byte, with category
/// `sink_permanent`; returns its reason.
pub fn assert_only_the_refused_thing_is_dead_lettered(
    broker: &Broker,
    records: &[(String, Vec<u8>)],
) -> String {
    let dlq = broker.read_all("floe.dlq");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].header("floe.category"), "sink_permanent");
    assert_eq!(dlq[0].header("floe.table"), "things");
    assert_eq!(dlq[0].header("floe.source.offset"), "149");
    assert_eq!(dlq[0].value.as_deref(), Some(records[149].1.as_slice()));
    dlq[0].header("floe.reason").to_string()
}

/// One HTTP/1.1 request over a fresh connection; the status and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One admin API request with `key` as the bearer; the status and the JSON answer
/// (`null` when the body is not JSON).
pub fn api(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {key}");
    let (status, text) = http(
        addr,
        method,
        path,
        &[("authorization", &auth), ("content-type", content_type)],
        body,
    )
    .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A bare payload for a `notes` table of the given name.
pub fn note_record(table: &str, id: i64, text: &str) -> (String, Vec<u8>) {
    let value = serde_json::json!({
        "before": null, "after": {"id": id, "note": text}, "op": "c",
        "source": {"table": table, "lsn": 1000 + id, "ts_ms": 1_767_225_600_000i64},
    });
    (format!("{{\"id\":{id}}}"), value.to_string().into_bytes())
}

/// Creates a tenant through the admin API at `addr`; its first API key.
pub fn create_tenant(addr: &str, operator_key: &str, name: &str) -> String {
    let body = serde_json::json!({ "name": name }).to_string();
    let (status, created) = api(
        addr,
        "POST",
        "/v1/tenants",
        operator_key,
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(status, 201, "creating tenant {name}: {created}");
    created["api_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {created}"))
        .to_string()
}

/// `floe run` with the admin API on `addr`, reading `topic` into DuckDB under `dir`, and
/// waits until the API answers.
pub fn start_floe_with_admin(
    broker: &Broker,
    dir: &Path,
    topic: &str,
    group: &str,
    addr: &str,
    operator_key: &str,
) -> Floe {
    start_floe_with_admin_and(broker, dir, topic, group, addr, operator_key, &[])
}

/// [`start_floe_with_admin`] with more environment variables.
pub fn start_floe_with_admin_and(
    broker: &Broker,
    dir: &Path,
    topic: &str,
    group: &str,
    addr: &str,
    operator_key: &str,
    more_env: &[(&str, String)],
) -> Floe {
    let mut env = vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topic.to_string()),
        ("FLOE_KAFKA_GROUP", group.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "100".to_string()),
        (
            "FLOE_DUCKDB_PATH",
            dir.join("floe.duckdb").display().to_string(),
        ),
        (
            "FLOE_WASM_CACHE_DIR",
            dir.join("wasm-cache").display().to_string(),
        ),
        ("FLOE_ADMIN_LISTEN", addr.to_string()),
        ("FLOE_ADMIN_DIR", dir.join("control").display().to_string()),
        ("FLOE_OPERATOR_KEY", operator_key.to_string()),
    ];
    env.extend(more_env.iter().cloned());
    let floe = Floe::start(&env, dir.join("floe.log"));
    let (status, _) = wait_for("the admin API", Duration::from_secs(60), || {
        http(addr, "GET", "/healthz", &[], b"").ok()
    });
    assert_eq!(status, 200);
    floe
}

/// Uploads `wasm` as the tenant's validator `name`, activates that version and routes
/// `table` through it, over the admin API at `addr`.
pub fn route_through_validator(
    addr: &str,
    key: &str,
    tenant: &str,
    name: &str,
    wasm: Vec<u8>,
    table: &str,
) {
    let base = format!("/v1/tenants/{tenant}");
    let route = serde_json::json!({ "validator": name }).to_string();
    for (method, path, content_type, body) in [
        (
            "PUT",
            format!("{base}/validators/{name}"),
            "application/wasm",
            wasm,
        ),
        (
            "POST",
            format!("{base}/validators/{name}/activate"),
            "application/json",
            br#"{"version":1}"#.to_vec(),
        ),
        (
            "PUT",
            format!("{base}/routes/{table}"),
            "application/json",
            route.into_bytes(),
        ),
    ] {
        let (status, answer) = api(addr, method, &path, key, content_type, &body);
        assert!(status < 300, "{method} {path}: {status} {answer}");
    }
}

/// floe's `/metrics` exposition at `addr`, read with the operator key.
pub fn metrics_text(addr: &str, operator_key: &str) -> String {
    let auth = format!("Bearer {operator_key}");
    let (status, text) = http(addr, "GET", "/metrics", &[("authorization", &auth)], b"")
        .unwrap_or_else(|e| panic!("GET /metrics on {addr}: {e}"));
    assert_eq!(status, 200, "{text}");
    text
}

/// The peak resident memory (VmHWM) of process `pid`, in KiB; 0 once it has gone.
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
