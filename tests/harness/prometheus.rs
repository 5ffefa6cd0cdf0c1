//! A real Prometheus server (Debian's `prometheus` package; `make prometheus` installs it)
//! scraping one target every second with a bearer key, queried through its HTTP API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http, scratch_dir, wait_for};

pub struct Prometheus {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

fn binary() -> PathBuf {
    std::env::var_os("FLOE_PROMETHEUS").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from)
}

/// Percent-encodes a query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of `target` (`host:port`) with `key`.
    pub fn start(name: &str, target: &str, key: &str) -> Prometheus {
        let dir = scratch_dir(&format!("{name}-prometheus"));
        std::fs::write(dir.join("key"), key).expect("key file");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: floe\n    metrics_path: /metrics\n\
             \x20   authorization:\n      credentials_file: {}\n\
             \x20   static_configs:\n      - targets: ['{target}']\n",
            dir.join("key").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `make prometheus`)",
                    binary().display()
                )
            });
        let server = Prometheus { child, addr, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http(&server.addr, "GET", "/-/ready", &[], b"")
                .ok()
                .filter(|(s, _)| *s == 200)
        });
        server
    }

    /// The JSON answer of an API path.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (_, body) = http(&self.addr, "GET", path, &[], b"").expect("Prometheus API");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The answer to an instant query.
    pub fn query(&self, query: &str) -> serde_json::Value {
        self.get(&format!("/api/v1/query?query={}", encode(query)))
    }

    /// The value of an instant query that yields one sample, if it does.
    pub fn value(&self, query: &str) -> Option<f64> {
        let answer = self.query(query);
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [sample] => sample["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The scrape target's health and last error, as Prometheus reports them.
    pub fn target(&self) -> (String, String) {
        let targets = self.get("/api/v1/targets");
        let target = &targets["data"]["activeTargets"][0];
        (
            target["health"].as_str().unwrap_or("").to_string(),
            target["lastError"].as_str().unwrap_or("").to_string(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
