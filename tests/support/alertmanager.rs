//! A real Alertmanager (Debian's `prometheus-alertmanager`) on the loopback, routing every alert
//! to one webhook with a bearer token, with short group timings so a test sees notifications
//! within seconds. Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary's names: Debian's, then upstream's.
const BINARIES: &[&str] = &["prometheus-alertmanager", "alertmanager"];

pub struct Alertmanager {
    child: Child,
    dir: tempfile::TempDir,
    pub url: String,
}

fn binary() -> PathBuf {
    for name in BINARIES {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "this test needs a real Alertmanager and found none on PATH (looked for {BINARIES:?}): \
         install Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)"
    );
}

/// A free port on the loopback (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Alertmanager {
    /// Starts one that sends every group to `webhook` with `Authorization: Bearer <token>`.
    /// `repeat` is its repeat_interval: repeats of an unchanged group come that often.
    pub async fn start(webhook: &str, token: &str, repeat: Duration) -> Alertmanager {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "route:\n  receiver: opslab\n  group_by: [alertname]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: {}ms\n\
             receivers:\n- name: opslab\n  webhook_configs:\n  - url: {webhook}\n    \
             send_resolved: true\n    max_alerts: 100\n    http_config:\n      authorization:\n        \
             type: Bearer\n        credentials: {token}\n",
            repeat.as_millis()
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip with other Alertmanagers: one instance, nothing else listening.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not start: {error}", binary.display()));
        let alertmanager = Alertmanager {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        alertmanager.wait_ready().await;
        alertmanager
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Ok(response) = reqwest::get(&ready).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager never became ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log, for failure messages.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// Posts alerts to its API v2 (`/api/v2/alerts`), as Prometheus does.
    pub async fn post(&self, alerts: &[Value]) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts)
            .send()
            .await
            .expect("Alertmanager answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "Alertmanager refused the alerts: {status} {body}"
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A firing alert for `/api/v2/alerts` (Alertmanager sets startsAt to now).
pub fn firing(labels: Value, annotations: Value) -> Value {
    serde_json::json!({
        "labels": labels,
        "annotations": annotations,
        "generatorURL": "http://prometheus.test:9090/graph?g0.expr=up%3D%3D0",
    })
}

/// The same alert ended now.
pub fn ended(labels: Value, annotations: Value) -> Value {
    let mut alert = firing(labels, annotations);
    alert["endsAt"] = Value::String(jiff::Timestamp::now().to_string());
    alert
}
