//! The fakesnow Snowflake emulator, served over TLS the way the `snowflake-api` crate
//! reaches Snowflake: `https://{account}.snowflakecomputing.com`, resolved to loopback,
//! with a certificate from a test CA that floe is told to trust.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floe::config::SnowflakeConfig;
use floe::sink::snowflake::{Client, TextRows};

use crate::{free_port, scratch_dir, wait_for};

pub const ACCOUNT: &str = "floetest";
pub const PASSWORD: &str = "test-password";

/// The transactions table in Snowflake SQL, in the form `Workload::expected` gives.
pub const TRANSACTIONS_QUERY: &str = "SELECT TO_VARCHAR(\"transaction_id\"), TO_VARCHAR(\"user_id\"), TO_VARCHAR(\"amount\"), \
     \"status\", TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, \"created_at\")), \
     TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, \"updated_at\")) FROM \"transactions\" ORDER BY \"transaction_id\"";

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_FAKESNOW_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/floe/fakesnow/bin/python")
}

fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fakesnow_server.py")
}

/// A test CA and a server certificate it signed for the account host.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "floe test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec![
        format!("{ACCOUNT}.snowflakecomputing.com"),
        "localhost".into(),
        "127.0.0.1".into(),
    ])
    .expect("leaf params");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
    std::fs::write(dir.join("server.pem"), leaf_cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).expect("write key");
}

/// A fakesnow server whose tables live on disk, so that it can be killed and restarted.
pub struct Fakesnow {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Fakesnow {
    pub fn start(name: &str) -> Fakesnow {
        let dir = scratch_dir(&format!("{name}-fakesnow"));
        std::fs::create_dir_all(dir.join("db")).expect("db dir");
        write_certificates(&dir);
        std::fs::write(dir.join("password"), PASSWORD).expect("password file");
        let mut server = Fakesnow {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("fakesnow.log"))
            .expect("log file");
        let child = Command::new(python())
            .arg(server_script())
            .args(["--port", &self.port.to_string()])
            .arg("--certfile")
            .arg(self.dir.join("server.pem"))
            .arg("--keyfile")
            .arg(self.dir.join("server.key"))
            .arg("--db-path")
            .arg(self.dir.join("db"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start fakesnow with {}: {e} (run `make fakesnow`)",
                    python().display()
                )
            });
        self.child = Some(child);
        let port = self.port;
        wait_for("fakesnow to listen", Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
    }

    /// SIGKILL: requests in flight fail the way an outage makes them fail.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same tables.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("fakesnow.log")).unwrap_or_default()
    }

    pub fn config(&self) -> SnowflakeConfig {
        SnowflakeConfig {
            account: ACCOUNT.into(),
            user: "floe".into(),
            database: "FLOE".into(),
            schema: "PUBLIC".into(),
            ca_file: Some(self.dir.join("ca.pem")),
            resolve: Some(format!("127.0.0.1:{}", self.port)),
            password_file: Some(self.dir.join("password")),
            request_timeout_ms: 30_000,
            ..SnowflakeConfig::default()
        }
    }

    /// Environment that points floe's default sink here.
    pub fn floe_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLOE_SINK", "snowflake".into()),
            ("FLOE_SNOWFLAKE_ACCOUNT", ACCOUNT.into()),
            ("FLOE_SNOWFLAKE_USER", "floe".into()),
            ("FLOE_SNOWFLAKE_DATABASE", "FLOE".into()),
            ("FLOE_SNOWFLAKE_SCHEMA", "PUBLIC".into()),
            ("FLOE_SNOWFLAKE_PASSWORD", PASSWORD.into()),
            (
                "FLOE_SNOWFLAKE_CA_FILE",
                self.dir.join("ca.pem").display().to_string(),
            ),
            ("FLOE_SNOWFLAKE_RESOLVE", format!("127.0.0.1:{}", self.port)),
        ]
    }

    /// The `all_types` table as text, in the form of the workload's model.
    pub fn all_types_rows(&self) -> Vec<Vec<Option<String>>> {
        all_types_rows(self)
    }

    /// A `[sinks.NAME]` table loading `topics` here.
    pub fn sink_toml(&self, name: &str, topics: &[&str]) -> String {
        let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
        format!(
            "[sinks.{name}]\nkind = \"snowflake\"\ntopics = [{}]\n[sinks.{name}.snowflake]\n\
             account = \"{ACCOUNT}\"\nuser = \"floe\"\ndatabase = \"FLOE\"\n\
             password_file = \"{}\"\nca_file = \"{}\"\nresolve = \"127.0.0.1:{}\"\n\
             request_timeout_ms = 5000\n",
            topics.join(", "),
            self.dir.join("password").display(),
            self.dir.join("ca.pem").display(),
            self.port,
        )
    }

    /// A session through the real crate.
    pub fn client(&self) -> Client {
        Client::new(&self.config()).expect("snowflake client")
    }

    pub fn query(&self, sql: &str) -> TextRows {
        self.client()
            .query_text(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log_text()))
    }
}

impl Drop for Fakesnow {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The all_types check query in Snowflake SQL: every column as text, in the model's form.
const ALL_TYPES_QUERY: &str = "SELECT TO_VARCHAR(\"id\"), TO_VARCHAR(\"amount\"), \"ratio\", TO_VARCHAR(\"day\"), \
     TO_VARCHAR(\"at_time\"), TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, \"ts_milli\")), \
     TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, \"ts_micro\")), TO_VARCHAR(DATE_PART(EPOCH_MICROSECOND, \"zts\")), \
     TO_VARCHAR(\"doc\"), \"uid\", HEX_ENCODE(\"raw\"), TO_VARCHAR(\"tags\"), TO_VARCHAR(\"nums\"), \
     TO_VARCHAR(\"flag\"), TO_VARCHAR(\"score\" * 4), \"Note\", \"bio\", \"region\" \
     FROM \"all_types\" ORDER BY \"id\"";

/// Arrays come back as JSON text; the model joins their items.
fn join_array(cell: &Option<String>, separator: &str) -> Option<String> {
    let items: Vec<serde_json::Value> = serde_json::from_str(cell.as_deref()?).ok()?;
    Some(
        items
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(separator),
    )
}

fn all_types_rows(fakesnow: &Fakesnow) -> Vec<Vec<Option<String>>> {
    fakesnow
        .query(ALL_TYPES_QUERY)
        .into_iter()
        .map(|mut row| {
            row[11] = join_array(&row[11], "|");
            row[12] = join_array(&row[12], ",");
            // FLOAT renders without a fraction when it has none.
            row[14] = row[14]
                .as_deref()
                .map(|s| s.trim_end_matches(".0").to_string());
            row
        })
        .collect()
}
