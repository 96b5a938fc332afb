//! Notifications end to end: a real controller (files mode) runs real sessions in real sandboxes,
//! driven by a scripted model, and sends what they ended with to local receivers (axum on
//! 127.0.0.1) that record everything they get.
//!
//! The CloudEvents are validated against the CloudEvents 1.0 JSON schema, vendored from the
//! specification's repository (tests/schemas/cloudevents-1.0.json; its source is named in
//! tests/schemas/README.md), with Python's `jsonschema` (tests/requirements.txt).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use opslab::audit::{ChainCheck, Delivery, EventBody, NewSession, SessionState};
use opslab::incident::Phase;
use serde_json::{Value, json};

use crate::support::controller::{Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};
use crate::support::store::TestStore;

const SESSION_TIMEOUT: Duration = Duration::from_secs(120);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured secret the report repeats (given to the controller with `--secret-env`).
const CONFIGURED_SECRET: &str = "Zq8vN3kT9pL2xW7r";
/// A secret in a shape the redaction knows (`KEY=value` where the key names a secret).
const SHAPED_SECRET: &str = "Sup3rS3cret-4f9a7c";
/// Part of every receiver URL: a secret, never to be logged.
const URL_SECRET: &str = "T0KEN9f8e7d6c5b4";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    raw: String,
    body: Value,
    at: Instant,
}

/// A local receiver: `/ok/…` answers 200, `/fail/…` 500, `/slow/…` answers only after 10 s.
struct Sink {
    address: std::net::SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(received): State<Arc<Mutex<Vec<Received>>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    let raw = String::from_utf8_lossy(&body).to_string();
    received.lock().unwrap().push(Received {
        path: path.clone(),
        content_type: headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        at: Instant::now(),
    });
    if path.starts_with("fail") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if path.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(10)).await;
        StatusCode::OK
    } else {
        StatusCode::OK
    }
}

impl Sink {
    async fn start() -> Sink {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Sink {
            address,
            received,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}/{URL_SECRET}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn on(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `count` requests whose path starts with `prefix` have come.
    fn wait_for(&self, prefix: &str, count: usize, controller: &Controller) -> Vec<Received> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let got = self.on(prefix);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{prefix}: {} of {count} notifications came\nlog:\n{}",
                got.len(),
                controller.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The Block Kit rules a Slack incoming webhook enforces on what opslab sends.
fn assert_valid_slack(message: &Value) {
    let object = message.as_object().expect("a JSON object");
    for key in object.keys() {
        assert!(
            ["text", "blocks"].contains(&key.as_str()),
            "unexpected key {key}"
        );
    }
    let text = message["text"].as_str().expect("a `text` fallback");
    assert!(!text.trim().is_empty());
    let blocks = message["blocks"].as_array().expect("`blocks`");
    assert!((1..=50).contains(&blocks.len()), "{} blocks", blocks.len());
    let text_object = |value: &Value, max: usize| {
        let kind = value["type"].as_str().expect("a text object's type");
        assert!(["plain_text", "mrkdwn"].contains(&kind), "{value}");
        let text = value["text"].as_str().expect("a text object's text");
        assert!(!text.is_empty() && text.chars().count() <= max, "{value}");
    };
    for block in blocks {
        match block["type"].as_str().expect("a block type") {
            "header" => {
                assert_eq!(block["text"]["type"], "plain_text", "{block}");
                text_object(&block["text"], 150);
            }
            "section" => {
                assert!(
                    block.get("text").is_some() || block.get("fields").is_some(),
                    "{block}"
                );
                if let Some(text) = block.get("text") {
                    text_object(text, 3000);
                }
                if let Some(fields) = block.get("fields") {
                    let fields = fields.as_array().expect("fields is a list");
                    assert!((1..=10).contains(&fields.len()), "{block}");
                    for field in fields {
                        text_object(field, 2000);
                    }
                }
            }
            "context" => {
                let elements = block["elements"].as_array().expect("context elements");
                assert!((1..=10).contains(&elements.len()), "{block}");
                for element in elements {
                    text_object(element, 3000);
                }
            }
            "divider" => {}
            other => panic!("a block type Slack does not take here: {other}"),
        }
    }
}

/// Validates against the CloudEvents 1.0 JSON schema (formats checked too).
fn cloud_event_errors(event: &Value) -> Option<String> {
    const CHECK: &str = "import json, sys\n\
try:\n    import jsonschema\nexcept ImportError:\n    sys.exit('python3 lacks the jsonschema package (pip install -r tests/requirements.txt)')\n\
schema = json.load(open(sys.argv[1]))\n\
event = json.loads(sys.stdin.read())\n\
jsonschema.validate(event, schema, format_checker=jsonschema.FormatChecker())\n";
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemas/cloudevents-1.0.json"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", CHECK, schema])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (the CloudEvents schema check needs it, with jsonschema)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("lacks the jsonschema package"), "{stderr}");
    (!output.status.success()).then_some(stderr)
}

fn assert_valid_cloud_event(event: &Value, type_: &str, subject: &str) {
    if let Some(errors) = cloud_event_errors(event) {
        panic!("not a valid CloudEvent: {errors}\n{event:#}");
    }
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], type_);
    assert_eq!(event["subject"], subject);
    assert_eq!(event["datacontenttype"], "application/json");
    event["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .expect("time is RFC 3339");
}

fn report(outcome: &str) -> Turn {
    Turn::Tool {
        name: "report".into(),
        input: json!({
            "outcome": outcome,
            "summary": format!("restarted the worker; its log showed {CONFIGURED_SECRET} and DB_PASSWORD={SHAPED_SECRET}"),
            "root_cause": format!("the worker crashed after reading password={SHAPED_SECRET}"),
            "actions": ["restarted the worker"],
            "verification": "the health check answered ok",
        }),
        text: None,
    }
}

async fn controller_with(
    script: Vec<Turn>,
    options: impl FnOnce(Options) -> Options,
    env: &[(&str, &str)],
) -> (FakeLlm, Controller) {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let mut all_env = vec![("NOTIFY_TEST_SECRET", CONFIGURED_SECRET)];
    all_env.extend_from_slice(env);
    let controller = Controller::start_with_env(
        options(
            Options::new("anthropic", llm.base_url())
                .arg("--summary-model", "off")
                .arg("--secret-env", "NOTIFY_TEST_SECRET"),
        ),
        &all_env,
    );
    (llm, controller)
}

fn notification_events(controller: &Controller, session: &str) -> Vec<Value> {
    controller
        .events(session)
        .into_iter()
        .filter(|event| event["kind"] == "notification")
        .collect()
}

fn metric(controller: &Controller, receiver: &str, outcome: &str) -> u64 {
    let text = get_text(&format!("{}/metrics", controller.http_url()));
    let prefix =
        format!("opslab_notifications_total{{receiver=\"{receiver}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// A GET from blocking test code (on a thread of its own, with a runtime of its own).
fn get_text(url: &str) -> String {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() })
    })
    .join()
    .unwrap()
}

/// A Resolved and a Failed Incident each reach both receivers once: a readable Slack message and a
/// valid CloudEvent, with the report's secrets redacted; nothing is sent again on a later
/// reconcile or after a restart, and the receivers' URLs never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_and_a_failed_incident_are_told_once_to_every_receiver() {
    let sink = Sink::start().await;
    let script = vec![
        Turn::shell("echo checking the worker", "look before acting"),
        report("resolved"),
        Turn::Fault(Fault::Status {
            code: 401,
            retry_after: None,
            body: Some(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into()),
        }),
    ];
    let slack_url = sink.url("ok/slack");
    let webhook_url = sink.url("ok/events");
    let (_llm, mut controller) = controller_with(
        script,
        |options| options.arg("--console-url", "https://console.example.test/"),
        &[
            ("OPSLAB_NOTIFY_SLACK_URL", &slack_url),
            ("OPSLAB_NOTIFY_WEBHOOK_URL", &webhook_url),
        ],
    )
    .await;

    controller.write_manifest("worker.yaml", &manifest("worker", "the worker is down", ""));
    let resolved = controller.wait_for_phase("worker", Phase::Resolved, SESSION_TIMEOUT);
    let session = resolved.status.unwrap().session_id.unwrap();
    let slack = sink.wait_for("ok/slack", 1, &controller);
    let events = sink.wait_for("ok/events", 1, &controller);

    // Slack: valid Block Kit, and the story in it.
    assert_eq!(slack[0].content_type, "application/json");
    let message = &slack[0].body;
    assert_valid_slack(message);
    let text = message.to_string();
    for expected in [
        "Resolved: the worker is down (default/worker)",
        "*Root cause*",
        "restarted the worker",
        "*Verification*",
        "echo checking the worker",
        &format!("opslab show {session}"),
        &format!("https://console.example.test/ui/sessions/{session}"),
        "$0.0",
    ] {
        assert!(text.contains(expected), "{expected:?} missing: {message:#}");
    }

    // The CloudEvent: structured mode, valid against the schema, with the status and the report.
    assert_eq!(events[0].content_type, "application/cloudevents+json");
    let event = &events[0].body;
    assert_valid_cloud_event(event, "dev.opslab.incident.resolved", "default/worker");
    assert_eq!(event["data"]["status"]["phase"], "Resolved");
    assert_eq!(event["data"]["report"]["outcome"], "resolved");
    assert_eq!(event["data"]["sessionId"], session.as_str());
    assert_eq!(event["data"]["status"]["commands"], 1);
    // The checker does reject what is not a CloudEvent.
    let mut broken = event.clone();
    broken.as_object_mut().unwrap().remove("id");
    assert!(
        cloud_event_errors(&broken).is_some(),
        "an event without an id passed"
    );

    // The report's secrets are redacted in both.
    for request in [&slack[0], &events[0]] {
        assert!(!request.raw.contains(CONFIGURED_SECRET), "{}", request.raw);
        assert!(!request.raw.contains(SHAPED_SECRET), "{}", request.raw);
        assert!(request.raw.contains("[REDACTED"), "{}", request.raw);
    }

    // Each receiver's delivery is in the trail: queued, then delivered on the first attempt.
    let trail = notification_events(&controller, &session);
    for receiver in ["slack", "webhook"] {
        let outcomes: Vec<(u64, &str)> = trail
            .iter()
            .filter(|event| event["receiver"] == receiver)
            .map(|event| {
                (
                    event["attempt"].as_u64().unwrap(),
                    event["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(outcomes, [(0, "queued"), (1, "delivered")], "{trail:#?}");
    }
    assert!(
        trail
            .iter()
            .all(|event| event["notice"] == "incident.resolved")
    );
    let id = event["id"].as_str().unwrap();
    assert!(trail.iter().all(|event| event["id"] == id), "{trail:#?}");

    // The second Incident fails (the model API refuses the key).
    controller.write_manifest("auth.yaml", &manifest("auth", "the login page fails", ""));
    controller.wait_for_phase("auth", Phase::Failed, SESSION_TIMEOUT);
    let slack = sink.wait_for("ok/slack", 2, &controller);
    let events = sink.wait_for("ok/events", 2, &controller);
    assert_valid_slack(&slack[1].body);
    assert!(
        slack[1].body["text"]
            .as_str()
            .unwrap()
            .starts_with("Failed: the login page fails (default/auth)"),
        "{:#}",
        slack[1].body
    );
    assert!(slack[1].raw.contains("*Why*"), "{}", slack[1].raw);
    assert_valid_cloud_event(
        &events[1].body,
        "dev.opslab.incident.failed",
        "default/auth",
    );
    assert_eq!(events[1].body["data"]["status"]["phase"], "Failed");
    assert_eq!(metric(&controller, "slack", "delivered"), 2);
    assert_eq!(metric(&controller, "webhook", "delivered"), 2);

    // Later reconciles (a label changed) and a restart send nothing again.
    controller.write_manifest(
        "worker.yaml",
        &manifest("worker", "the worker is down", "")
            .replace("metadata:\n", "metadata:\n  labels:\n    team: web\n"),
    );
    std::thread::sleep(Duration::from_secs(1));
    controller.restart();
    // A third Incident after the restart (the script has run out: the model API answers 500 until
    // the session fails) is told once; by then the restarted controller has reconciled the others.
    controller.write_manifest("disk.yaml", &manifest("disk", "the disk fills up", ""));
    controller.wait_for_phase("disk", Phase::Failed, SESSION_TIMEOUT);
    let slack = sink.wait_for("ok/slack", 3, &controller);
    sink.wait_for("ok/events", 3, &controller);
    std::thread::sleep(Duration::from_secs(2));
    let titles: Vec<&str> = slack
        .iter()
        .map(|request| request.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(sink.on("ok/slack").len(), 3, "{titles:#?}");
    assert_eq!(sink.on("ok/events").len(), 3);
    assert!(
        titles[2].starts_with("Failed: the disk fills up"),
        "{titles:#?}"
    );

    // The receivers' URLs never reach the log; their hosts do.
    let logs = controller.logs();
    assert!(!logs.contains(URL_SECRET), "a receiver URL was logged");
    assert!(logs.contains(&sink.address.to_string()), "{logs}");
}

/// A receiver that answers 500 and one that times out get every attempt, backing off, while the
/// session ends on time; each attempt is in the trail and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_retried_and_never_delay_the_session() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let receivers = dir.path().join("receivers.yaml");
    std::fs::write(
        &receivers,
        format!(
            "receivers:\n  - name: broken\n    type: cloudevents\n    url: {}\n  - name: slow\n    type: slack\n    url: {}\n  - name: fine\n    type: slack\n    url: {}\n",
            sink.url("fail/events"),
            sink.url("slow/slack"),
            sink.url("ok/slack"),
        ),
    )
    .unwrap();
    let (_llm, controller) = controller_with(
        vec![report("mitigated")],
        |options| {
            options
                .arg("--notify-receivers", receivers.display())
                .arg("--notify-timeout-seconds", 1)
                .arg("--notify-attempts", 3)
                .arg("--notify-retry-delay-ms", 300)
        },
        &[],
    )
    .await;
    controller.write_manifest("queue.yaml", &manifest("queue", "the queue backs up", ""));
    let resolved = controller.wait_for_phase("queue", Phase::Resolved, SESSION_TIMEOUT);
    let ended = Instant::now();
    let session = resolved.status.unwrap().session_id.unwrap();

    // The status is terminal while the slow receiver's first attempt is still waiting out its
    // timeout: no delivery to it has finished.
    let trail = notification_events(&controller, &session);
    assert!(
        !trail
            .iter()
            .any(|event| event["receiver"] == "slow" && event["attempt"].as_u64() > Some(0)),
        "the status became terminal only after a delivery attempt to the slow receiver ended: {trail:#?}"
    );

    // Every attempt is made.
    let broken = sink.wait_for("fail/events", 3, &controller);
    let slow = sink.wait_for("slow/slack", 3, &controller);
    sink.wait_for("ok/slack", 1, &controller);
    assert!(
        slow[2].at.duration_since(ended) >= Duration::from_secs(2),
        "the slow receiver's attempts (1 s timeout each, with backoff) ended too soon"
    );
    // Backoff: the attempts to the broken receiver are spaced, not a tight loop.
    assert!(broken[1].at.duration_since(broken[0].at) >= Duration::from_millis(150));
    // The same event each time, so the receiver can tell a retry.
    assert_eq!(broken[0].body["id"], broken[2].body["id"]);
    assert_valid_cloud_event(
        &broken[0].body,
        "dev.opslab.incident.resolved",
        "default/queue",
    );

    // The trail records each attempt, the last one final.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let trail = loop {
        let trail = notification_events(&controller, &session);
        let finished = |receiver: &str| {
            trail
                .iter()
                .any(|event| event["receiver"] == receiver && event["outcome"] == "failed")
        };
        if finished("broken") && finished("slow") {
            break trail;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never gave up: {trail:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let attempts = |receiver: &str| -> Vec<(u64, String, Option<u64>)> {
        trail
            .iter()
            .filter(|event| event["receiver"] == receiver)
            .map(|event| {
                (
                    event["attempt"].as_u64().unwrap(),
                    event["outcome"].as_str().unwrap().to_string(),
                    event["status_code"].as_u64(),
                )
            })
            .collect()
    };
    let expected_broken: Vec<(u64, String, Option<u64>)> = vec![
        (0, "queued".into(), None),
        (1, "retrying".into(), Some(500)),
        (2, "retrying".into(), Some(500)),
        (3, "failed".into(), Some(500)),
    ];
    assert_eq!(attempts("broken"), expected_broken);
    let expected_slow: Vec<(u64, String, Option<u64>)> = vec![
        (0, "queued".into(), None),
        (1, "retrying".into(), None),
        (2, "retrying".into(), None),
        (3, "failed".into(), None),
    ];
    assert_eq!(attempts("slow"), expected_slow);
    let timed_out = trail
        .iter()
        .find(|event| event["receiver"] == "slow" && event["attempt"] == 1)
        .unwrap();
    assert!(
        timed_out["error"].as_str().unwrap().contains("timed out"),
        "{timed_out}"
    );
    assert_eq!(
        attempts("fine"),
        vec![
            (0, "queued".to_string(), None),
            (1, "delivered".to_string(), Some(200))
        ]
    );
    assert_eq!(metric(&controller, "broken", "retrying"), 2);
    assert_eq!(metric(&controller, "broken", "failed"), 1);
    assert_eq!(metric(&controller, "fine", "delivered"), 1);
    // The error text names no URL.
    assert!(
        !trail
            .iter()
            .any(|event| event.to_string().contains(URL_SECRET))
    );
    assert!(!controller.logs().contains(URL_SECRET));
}

/// Notifications on session start, when asked for, arrive while the session runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_start_is_told_when_asked_for() {
    let sink = Sink::start().await;
    let webhook_url = sink.url("ok/events");
    let (_llm, controller) = controller_with(
        vec![Turn::shell("sleep 3", "wait a moment"), report("resolved")],
        |mut options| {
            options.args.push("--notify-on-start".into());
            options
        },
        &[("OPSLAB_NOTIFY_WEBHOOK_URL", &webhook_url)],
    )
    .await;
    controller.write_manifest("cache.yaml", &manifest("cache", "the cache is cold", ""));
    let started = sink.wait_for("ok/events", 1, &controller);
    assert_valid_cloud_event(
        &started[0].body,
        "dev.opslab.session.started",
        "default/cache",
    );
    assert_eq!(started[0].body["data"]["phase"], "Investigating");
    controller.wait_for_phase("cache", Phase::Resolved, SESSION_TIMEOUT);
    let both = sink.wait_for("ok/events", 2, &controller);
    assert_eq!(both[1].body["type"], "dev.opslab.incident.resolved");
    assert_ne!(both[0].body["id"], both[1].body["id"]);
}

/// A receiver URL that is not one stops the controller at start with a clear message that does
/// not repeat the URL.
#[test]
fn a_bad_receiver_url_is_refused_at_start_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::support::controller::BIN)
        .args(["controller", "--incidents"])
        .arg(dir.path())
        .arg("--store")
        .arg(dir.path().join("opslab.db"))
        .args(["--provider", "openai"])
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9")
        .env(
            "OPSLAB_NOTIFY_WEBHOOK_URL",
            format!("ftp://example.com/{URL_SECRET}"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OPSLAB_NOTIFY_WEBHOOK_URL"), "{stderr}");
    assert!(stderr.contains("http:// or https://"), "{stderr}");
    assert!(!stderr.contains(URL_SECRET), "{stderr}");
}

/// A controller killed while a delivery backs off continues it after the restart, from the next
/// attempt: no attempt is repeated, none is skipped, and the trail shows them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_unfinished_deliveries_from_the_next_attempt() {
    let sink = Sink::start().await;
    let webhook_url = sink.url("fail/events");
    let (_llm, mut controller) = controller_with(
        vec![report("resolved")],
        |options| {
            options
                .arg("--notify-attempts", 4)
                // Long enough that the kill lands in a backoff, not in an attempt.
                .arg("--notify-retry-delay-ms", 3000)
        },
        &[("OPSLAB_NOTIFY_WEBHOOK_URL", &webhook_url)],
    )
    .await;
    controller.write_manifest("dns.yaml", &manifest("dns", "names do not resolve", ""));
    let resolved = controller.wait_for_phase("dns", Phase::Resolved, SESSION_TIMEOUT);
    let session = resolved.status.unwrap().session_id.unwrap();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while !notification_events(&controller, &session)
        .iter()
        .any(|event| event["attempt"] == 2)
    {
        assert!(
            Instant::now() < deadline,
            "no second attempt: {}",
            controller.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    controller.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let trail = loop {
        let trail = notification_events(&controller, &session);
        if trail.iter().any(|event| event["outcome"] == "failed") {
            break trail;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery never finished: {trail:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let attempts: Vec<(u64, &str)> = trail
        .iter()
        .map(|event| {
            (
                event["attempt"].as_u64().unwrap(),
                event["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (0, "queued"),
            (1, "retrying"),
            (2, "retrying"),
            (3, "retrying"),
            (4, "failed")
        ]
    );
    assert_eq!(sink.on("fail/events").len(), 4, "one request per attempt");
    let ids: HashSet<String> = sink
        .on("fail/events")
        .iter()
        .map(|request| request.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "the same event each time: {ids:?}");
}

/// What was sent about a session joins its trail after the session ended, on both backends: chained
/// (the chain still verifies), redacted, found by kind, and the session stays as it ended; any
/// other late event is still refused.
async fn notifications_join_a_finished_trail(fixture: TestStore) {
    let store = fixture.open().await;
    store
        .create_session(NewSession {
            id: "s1".into(),
            incident_uid: "uid-1".into(),
            incident_namespace: "default".into(),
            incident_name: "api-down".into(),
            attempt: 1,
            generation: 1,
        })
        .await
        .unwrap();
    store
        .append(
            "s1",
            EventBody::CommandStarted {
                tool_use_id: "t1".into(),
                command: "systemctl restart api".into(),
                reasoning: "restart".into(),
                timeout_seconds: 5,
            },
        )
        .await
        .unwrap();
    store
        .append(
            "s1",
            EventBody::SessionFinished {
                phase: Phase::Failed,
                outcome: None,
                reason: "SandboxFailed".into(),
                message: "the sandbox went away".into(),
            },
        )
        .await
        .unwrap();
    let notification = |attempt, outcome, error: Option<&str>| EventBody::Notification {
        notice: "incident.failed".into(),
        id: "uid-1.s1.incident.failed".into(),
        receiver: "oncall".into(),
        attempt,
        outcome,
        status_code: error.map(|_| 502),
        error: error.map(str::to_string),
    };
    store
        .append("s1", notification(0, Delivery::Queued, None))
        .await
        .unwrap();
    let event = store
        .append(
            "s1",
            notification(
                1,
                Delivery::Retrying,
                Some("the receiver answered 502: bad gateway for p4ssw0rd-configured"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(event.seq, 4);
    let EventBody::Notification { error, .. } = &event.body else {
        panic!("{:?}", event.body)
    };
    assert!(
        !error.as_deref().unwrap().contains("p4ssw0rd-configured"),
        "{error:?}"
    );
    assert_eq!(
        store.verify("s1").await.unwrap(),
        ChainCheck::Intact { events: 4 }
    );
    let session = store.session("s1").await.unwrap().unwrap();
    assert_eq!(session.state, SessionState::Finished);
    assert_eq!(session.phase, Phase::Failed);
    let found = store.events_of_kind("s1", "notification").await.unwrap();
    assert_eq!(
        found.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [3, 4]
    );
    let commands = store.commands("s1").await.unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].command, "systemctl restart api");
    let late = store
        .append(
            "s1",
            EventBody::LlmFailed {
                message: "late".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(late.to_string().contains("has finished"), "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_join_a_finished_trail_on_sqlite() {
    notifications_join_a_finished_trail(TestStore::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_join_a_finished_trail_on_postgres() {
    notifications_join_a_finished_trail(TestStore::postgres().await).await
}

/// Kubernetes mode against a real API server: an Incident made through the API and resolved by a
/// real session is told once to the receiver, as a CloudEvent naming the Incident's API path; the
/// status writes and resyncs that follow send nothing again, and a restart sends nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_resolved_incident_is_told_once() {
    use crate::support::kube_api::{KubeApi, wait_for_incident};

    let api = KubeApi::start().await;
    let sink = Sink::start().await;
    let webhook_url = sink.url("ok/kube-api");
    let (_llm, mut controller) = controller_with(
        vec![
            Turn::shell("echo checking", "look first"),
            report("resolved"),
        ],
        api.controller_mode(),
        &[("OPSLAB_NOTIFY_WEBHOOK_URL", &webhook_url)],
    )
    .await;
    api.create_incident(
        "worker",
        json!({"title": "the worker is down", "severity": "high"}),
    )
    .await;
    let logs = || api.beside(controller.logs());
    wait_for_incident(
        &api.incidents(),
        "worker",
        "Resolved",
        SESSION_TIMEOUT,
        logs,
        |incident| {
            incident
                .status
                .as_ref()
                .is_some_and(|status| status.phase == Phase::Resolved)
        },
    )
    .await;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while sink.on("ok/kube-api").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notification:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = &sink.on("ok/kube-api")[0].body;
    assert_valid_cloud_event(event, "dev.opslab.incident.resolved", "default/worker");
    assert_eq!(
        event["source"],
        "/apis/opslab.dev/v1alpha1/namespaces/default/incidents/worker"
    );
    assert!(
        !event.to_string().contains(CONFIGURED_SECRET),
        "the report's secret is redacted: {event}"
    );
    controller.restart();
    wait_for_http_ready(&controller).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.on("ok/kube-api").len(), 1, "told once");
}

/// Waits until the controller answers /readyz with 200 (its Incidents listed again).
async fn wait_for_http_ready(controller: &Controller) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("{}/readyz", controller.http_url());
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kubernetes mode, against a mock API server (tower-test) with a real session, for the exact calls:
/// the reconcile both sources share notifies the terminal phase once; a later reconcile of the
/// settled Incident makes no API call and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_mode_notifies_a_terminal_phase_once() {
    use http::{Method, Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use opslab::incident::Incident;
    use opslab::notify::NotifyArgs;
    use opslab::reconcile::Context;
    use opslab::source::kubernetes::{self, FINALIZER, KubeContext};

    use crate::support::reconciler::kube_config;

    docker::require_sandbox_image();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo checking", "look first"),
            report("resolved"),
        ],
    )
    .await;
    let instance = format!("test-notify-{}", uuid::Uuid::new_v4().simple());
    let webhook_url = sink.url("ok/kube");
    let notify = NotifyArgs {
        notify_receivers: None,
        notify_on_start: false,
        notify_timeout_seconds: 5,
        notify_attempts: 3,
        notify_retry_delay_ms: 100,
        console_url: None,
    }
    .into_config(|name| (name == "OPSLAB_NOTIFY_WEBHOOK_URL").then(|| webhook_url.clone()))
    .unwrap();
    let mut config = kube_config(dir.path(), llm.base_url(), &instance);
    config.sandbox.spares = 0;
    config.secret_values = notify.secret_values();
    config.notify = notify;
    let (wake, mut wakes) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(Arc::new(config), wake).await.unwrap());
    let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kctx = Arc::new(KubeContext::new(
        ctx.clone(),
        kube::Client::new(service, "default"),
        Some("test-pod".into()),
    ));
    let uid = format!("uid-{}", uuid::Uuid::new_v4().simple());
    let mut incident: Incident = serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "api-down", "namespace": "default", "uid": uid,
                     "generation": 1, "resourceVersion": "1", "finalizers": [FINALIZER]},
        "spec": {"title": "the api returns 500", "severity": "high"},
    }))
    .unwrap();

    // One reconcile: the mock server answers its status apply (with the object) and its Event;
    // returns the status written.
    let mut reconcile = async |incident: &Incident| {
        let task = tokio::spawn(kubernetes::reconcile_incident(
            Arc::new(incident.clone()),
            kctx.clone(),
        ));
        let mut written = None;
        for _ in 0..2 {
            let (request, respond) = tokio::time::timeout(SESSION_TIMEOUT, api.next_request())
                .await
                .expect("a request to the API server")
                .expect("the client is alive");
            let method = request.method().clone();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let reply = if method == Method::PATCH {
                written = Some(body["status"].clone());
                let mut object = serde_json::to_value(incident).unwrap();
                object["status"] = body["status"].clone();
                object
            } else {
                body
            };
            respond.send_response(
                Response::builder()
                    .status(if method == Method::PATCH { 200 } else { 201 })
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        task.await.unwrap().unwrap();
        serde_json::from_value::<opslab::incident::IncidentStatus>(written.expect("a status"))
            .unwrap()
    };
    let investigating = reconcile(&incident).await;
    assert_eq!(investigating.phase, Phase::Investigating);
    incident.status = Some(investigating);
    tokio::time::timeout(SESSION_TIMEOUT, async {
        loop {
            let finished = ctx
                .store
                .sessions_for_incident(&uid)
                .await
                .unwrap()
                .first()
                .is_some_and(|session| session.state == SessionState::Finished);
            if finished && !ctx.sessions.has_task(&uid) {
                break;
            }
            wakes.recv().await.unwrap();
        }
    })
    .await
    .expect("the session ends");
    assert!(
        sink.on("ok/kube").is_empty(),
        "nothing is sent before the terminal status"
    );
    let resolved = reconcile(&incident).await;
    assert_eq!(resolved.phase, Phase::Resolved);
    incident.status = Some(resolved);

    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while sink.on("ok/kube").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notification in Kubernetes mode"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = &sink.on("ok/kube")[0].body;
    assert_valid_cloud_event(event, "dev.opslab.incident.resolved", "default/api-down");
    assert_eq!(
        event["source"],
        "/apis/opslab.dev/v1alpha1/namespaces/default/incidents/api-down"
    );
    // The settled Incident, reconciled again: no API call, and nothing sent again.
    tokio::time::timeout(
        Duration::from_secs(20),
        kubernetes::reconcile_incident(Arc::new(incident.clone()), kctx.clone()),
    )
    .await
    .expect("no API call is waited on")
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.on("ok/kube").len(), 1);
    for container in docker::containers_with_label(&format!("opslab.dev/instance={instance}")) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &container])
            .output();
    }
}
