//! Every failure says why, everywhere a person looks — the status file's conditions, the session's
//! record (`opslab sessions`), and the controller's log at WARN — and a person can retry an ended
//! Incident or cancel a running one without touching its manifest. Through the binary, with real
//! sandboxes and local servers that speak the model's protocol.

use std::time::Duration;

use opslab::incident::{ConditionType, Phase};
use opslab::source::files::StatusFile;
use serde_json::Value;

use crate::support::controller::{Controller, Options, manifest, scripted};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};

const TIMEOUT: Duration = Duration::from_secs(120);

fn condition(incident: &StatusFile, type_: ConditionType) -> &opslab::incident::Condition {
    incident
        .status
        .as_ref()
        .and_then(|status| status.condition(type_.clone()))
        .unwrap_or_else(|| panic!("no {type_} condition: {incident:#?}"))
}

/// The reason and the cause in words: in both conditions of the status file, in the session's
/// record, and in the controller's log at WARN.
fn assert_says_why(controller: &Controller, name: &str, phase: Phase, reason: &str, cause: &str) {
    let incident = controller.wait_for_phase(name, phase, TIMEOUT);
    for type_ in [ConditionType::SessionActive, ConditionType::Resolved] {
        let condition = condition(&incident, type_.clone());
        assert_eq!(condition.reason, reason, "{type_}: {condition:#?}");
        assert!(
            condition.message.contains(cause),
            "{type_} says {:?}, not {cause:?}",
            condition.message
        );
    }
    let sessions: Value =
        serde_json::from_str(&controller.cli(&["sessions", "-o", "json"])).unwrap();
    let session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|session| session["incident_name"] == name)
        .unwrap_or_else(|| panic!("no session of {name}: {sessions}"));
    assert_eq!(session["reason"], reason, "{session}");
    assert!(
        session["message"]
            .as_str()
            .unwrap_or_default()
            .contains(cause),
        "{session}"
    );
    // The listing a person runs first, and the one they run next.
    let wide = controller.cli(&["get", "incidents", "-o", "wide"]);
    let row = wide
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{wide}"));
    assert!(row.contains(reason) && row.contains(cause), "{wide}");
    let describe = controller.cli(&["describe", "incident", name]);
    assert!(
        describe.contains(reason) && describe.contains(cause),
        "{describe}"
    );
    let logs = controller.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("WARN") && line.contains(reason) && line.contains(cause)),
        "no WARN line with {reason} and {cause:?}:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_a_refused_key_says_the_api_error() {
    let script = vec![Turn::Fault(Fault::Status {
        code: 401,
        retry_after: None,
        body: Some(
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#
                .into(),
        ),
    })];
    let (_llm, controller) = scripted(script, |options| options).await;
    controller.write_manifest("auth.yaml", &manifest("auth", "anything", ""));
    assert_says_why(
        &controller,
        "auth",
        Phase::Failed,
        "ModelApiFailed",
        "authentication_error: invalid x-api-key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_an_unreachable_model_says_so_while_retrying_and_after() {
    docker::require_sandbox_image();
    // A port nothing listens on: every attempt is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let controller = Controller::start(
        Options::new("anthropic", url)
            .arg("--summary-model", "off")
            .arg("--llm-retry-delay-ms", 700),
    );
    controller.write_manifest("away.yaml", &manifest("away", "anything", ""));
    // While retrying, the status says what the session waits for.
    let waiting = controller.wait_for("away", "a retry in the status", TIMEOUT, |incident| {
        incident.status.as_ref().is_some_and(|status| {
            status.conditions.iter().any(|c| {
                c.type_ == ConditionType::SessionActive
                    && c.message.starts_with("waiting for the model API: retry ")
            })
        })
    });
    let message = &condition(&waiting, ConditionType::SessionActive).message;
    assert!(message.contains(" of 4 in "), "{message}");
    assert!(message.contains("transport"), "{message}");
    assert_says_why(
        &controller,
        "away",
        Phase::Failed,
        "ModelApiFailed",
        "the model API failed: transport",
    );
    let events = controller.events("away");
    let retries = events
        .iter()
        .filter(|event| event["kind"] == "llm_retrying")
        .count();
    assert_eq!(retries, 4, "each retry is in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_a_missing_network_is_named() {
    let (_llm, controller) = scripted(vec![Turn::report("resolved", "never reached")], |o| o).await;
    let network = format!("opslab-test-absent-{}", uuid::Uuid::new_v4().simple());
    controller.write_manifest(
        "net.yaml",
        &manifest(
            "net",
            "anything",
            &format!("  environment:\n    networks: [{network}]\n"),
        ),
    );
    assert_says_why(
        &controller,
        "net",
        Phase::Failed,
        "SandboxFailed",
        &format!("the Docker network \"{network}\" does not exist"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_a_budget_reached_gives_its_figure() {
    let script = vec![
        Turn::shell("true", "one"),
        Turn::shell("true", "two"),
        Turn::report("resolved", "never reached"),
    ];
    let (_llm, controller) = scripted(script, |options| options.arg("--max-turns", 1)).await;
    controller.write_manifest("budget.yaml", &manifest("budget", "anything", ""));
    assert_says_why(
        &controller,
        "budget",
        Phase::Unresolved,
        "TurnBudgetExhausted",
        "used its 1 model turns without a report",
    );
}

/// No model at all: the controller stays up, /readyz says what to set, and an Incident fails at
/// once saying the same, without a sandbox or a request anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_no_model_configured_keeps_the_controller_up_and_says_what_to_set() {
    docker::require_sandbox_image();
    // OpenAI's own API without a key: nothing is sent to it, the session ends before any call.
    let controller = Controller::start(
        Options::new("openai", "https://api.openai.com/v1".into()).arg("--summary-model", "off"),
    );
    let readyz = format!("{}/readyz", controller.http_url());
    let response = reqwest::get(&readyz).await.unwrap();
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("no model is configured: set OPENAI_API_KEY"),
        "{body}"
    );
    controller.write_manifest("nomodel.yaml", &manifest("nomodel", "anything", ""));
    assert_says_why(
        &controller,
        "nomodel",
        Phase::Failed,
        "NoModelConfigured",
        "no model is configured: set OPENAI_API_KEY",
    );
    // The CLI works beside it.
    let table = controller.cli(&["get", "incidents"]);
    assert!(table.contains("nomodel"), "{table}");
}

fn request(controller: &Controller, verb: &str, name: &str, reason: &str) -> std::process::Output {
    let incidents = controller.incidents();
    controller.cli_output(&[
        verb,
        name,
        "--incidents",
        incidents.to_str().unwrap(),
        "--reason",
        reason,
    ])
}

/// `opslab cancel` stops a running session now, and `opslab retry` starts a new attempt of an
/// ended Incident; the manifest is never written, and the trail says who asked and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cancel_and_retry_in_files_mode() {
    let script = vec![
        Turn::shell("sleep 100", "wait for something"),
        Turn::report("resolved", "fixed on the second attempt"),
    ];
    let (_llm, controller) = scripted(script, |options| options).await;
    let text = manifest("ask", "to be cancelled, then retried", "");
    controller.write_manifest("ask.yaml", &text);
    // Nothing ended yet: a retry is refused, saying why.
    let first = controller.wait_for_commands("ask", 1, TIMEOUT);
    let refused = request(&controller, "retry", "ask", "too early");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("opslab cancel default/ask"), "{stderr}");

    let cancelled = request(&controller, "cancel", "ask", "wrong ticket");
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let incident = controller.wait_for_phase("ask", Phase::Cancelled, TIMEOUT);
    let first_session = first.status.unwrap().session_id.unwrap();
    let message = &condition(&incident, ConditionType::SessionActive).message;
    assert!(
        message.contains("cancelled on request") && message.contains("wrong ticket"),
        "{message}"
    );
    let events = controller.events(&first_session);
    let interrupted = events
        .iter()
        .find(|event| event["kind"] == "command_interrupted")
        .expect("the running command was killed");
    assert!(
        interrupted["reason"]
            .as_str()
            .unwrap()
            .contains("wrong ticket"),
        "{interrupted}"
    );
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !docker::sandbox_of(&first_session).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox was not removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cancelling again: nothing runs.
    let again = request(&controller, "cancel", "ask", "twice");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to cancel"));

    let retried = request(
        &controller,
        "retry",
        "ask",
        "second try, key sk-ant-api03-PASTEDBYMISTAKE0123456789abcdefABCDEF",
    );
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let incident = controller.wait_for_phase("ask", Phase::Resolved, TIMEOUT);
    let status = incident.status.unwrap();
    assert_eq!(status.attempt, 2);
    assert_ne!(status.session_id.as_deref(), Some(first_session.as_str()));
    let events = controller.events(status.session_id.as_deref().unwrap());
    let started = &events[0];
    assert_eq!(started["kind"], "session_started");
    assert!(
        started["requests"]["retry"]
            .as_str()
            .unwrap()
            .contains("second try"),
        "{started}"
    );
    // A secret pasted into the reason is in neither the request file nor the trail.
    let requests = std::fs::read_to_string(
        controller
            .incidents()
            .join(".requests")
            .join("default.ask.yaml"),
    )
    .unwrap();
    assert!(requests.contains("second try"), "{requests}");
    assert!(!requests.contains("PASTEDBYMISTAKE"), "{requests}");
    assert!(
        !started.to_string().contains("PASTEDBYMISTAKE"),
        "{started}"
    );
    // The user's manifest is as they wrote it.
    let on_disk = std::fs::read_to_string(controller.incidents().join("ask.yaml")).unwrap();
    assert_eq!(on_disk, text);
    // The request is honoured once: the Incident stays Resolved.
    std::thread::sleep(Duration::from_millis(500));
    let sessions: Value =
        serde_json::from_str(&controller.cli(&["sessions", "-o", "json"])).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
}

/// A request about an Incident the store does not know fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_name_an_unknown_incident() {
    let (_llm, controller) = scripted(vec![], |options| options).await;
    controller.http_url();
    let output = request(&controller, "retry", "typo", "none");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no Incident default/typo is known to the store"),
        "{stderr}"
    );
}

/// A small tmpfs, unmounted when dropped (after the controller that used it).
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "this test fills a small tmpfs to stand for a full disk, and mounting one needs root"
        );
        SmallDisk {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        let output = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path.join("filler").display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("No space left on device"), "{stderr}");
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// The store's disk fills up in the middle of a session: the controller says so once, calmly
/// (a few log lines, not a tight loop), in the status, /readyz and the metrics; nothing runs
/// unrecorded, and the session carries on when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_a_full_store_disk_is_loud_but_calm() {
    docker::require_sandbox_image();
    let disk = SmallDisk::mount(8);
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("sleep 3", "wait while the disk fills"),
            Turn::shell("echo after", "carry on"),
            Turn::report("resolved", "carried on after the disk was freed"),
        ],
    )
    .await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .store(disk.path.join("opslab.db").display()),
    );
    controller.write_manifest("full.yaml", &manifest("full", "anything", ""));
    controller.wait_for_commands("full", 1, TIMEOUT);
    disk.fill();

    let waiting = controller.wait_for("full", "StoreUnavailable", TIMEOUT, |incident| {
        incident.status.as_ref().is_some_and(|status| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == ConditionType::SessionActive && c.reason == "StoreUnavailable")
        })
    });
    let message = &condition(&waiting, ConditionType::SessionActive).message;
    assert!(
        message.contains("the audit store is failing since"),
        "{message}"
    );
    let base = controller.http_url();
    let readyz = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    let reason = readyz.text().await.unwrap();
    assert!(reason.contains("the audit store is failing"), "{reason}");

    // Calm: over six seconds of failing, a handful of log lines, not hundreds.
    let before = controller.logs().lines().count();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let logs = controller.logs();
    // What an operator reads (the test's controller also logs at debug).
    let said: Vec<&str> = logs
        .lines()
        .skip(before)
        .filter(|line| !line.contains(" DEBUG ") && !line.contains(" TRACE "))
        .collect();
    assert!(
        said.len() <= 8,
        "{} log lines in 6 s:\n{}",
        said.len(),
        said.join("\n")
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("opslab_store_errors_total "))
        .unwrap_or_else(|| panic!("no opslab_store_errors_total:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{errors}");
    assert_eq!(
        llm.requests().len(),
        1,
        "no model call while nothing can be recorded"
    );

    disk.free();
    let incident = controller.wait_for_phase("full", Phase::Resolved, TIMEOUT);
    let status = incident.status.unwrap();
    assert_eq!(status.commands, 2);
    let events = controller.events("full");
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["kind"].as_str().unwrap_or("?"))
        .collect();
    // The command whose end could not be stored is recorded as interrupted, never run again.
    assert!(kinds.contains(&"command_interrupted"), "{kinds:?}");
    let verified = controller.cli(&["audit", "verify"]);
    assert!(!verified.contains("broken"), "{verified}");
    assert!(
        controller.logs().contains("the audit store works again"),
        "{}",
        controller.logs()
    );
}
