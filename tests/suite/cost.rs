//! A spend budget is never silently unenforced: with a model the cost table cannot price, the
//! controller refuses to start (a budget flag) or the session fails at once (a budget or a model in
//! the Incident), naming the model and `--cost-table`.

use std::process::{Command, Stdio};
use std::time::Duration;

use opslab::incident::Phase;

use crate::support::controller::{BIN, Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn cost_budget_flag_with_an_unpriced_model_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("controller")
        .arg("--incidents")
        .arg(dir.path())
        .arg("--store")
        .arg(dir.path().join("opslab.db"))
        .args(["--provider", "openai", "--model", "llama3:8b"])
        .args(["--max-cost-usd", "2"])
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env_remove("OPSLAB_MODEL")
        .env_remove("OPSLAB_COST_TABLE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for needed in ["--max-cost-usd", "\"llama3:8b\"", "--cost-table"] {
        assert!(stderr.contains(needed), "no {needed} in: {stderr}");
    }
}

/// The reason and the message the session ended with, from its trail.
fn ending(controller: &Controller, name: &str) -> (String, String) {
    let events = controller.events(name);
    let finished = events
        .iter()
        .find(|event| event["kind"] == "session_finished")
        .expect("a session_finished event");
    (
        finished["reason"].as_str().unwrap().to_string(),
        finished["message"].as_str().unwrap().to_string(),
    )
}

fn session_active_reason(controller: &Controller, name: &str) -> String {
    let status = controller.incident(name).unwrap().status.unwrap();
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "SessionActive")
        .map(|condition| condition.reason.clone())
        .unwrap_or_default()
}

/// A budget in the Incident, with a controller model the table does not know: the session fails
/// before it asks the model anything. The same Incident without the budget runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_session_with_an_unpriced_model_and_a_spec_budget_fails_at_once() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![Turn::report("resolved", "nothing to do")],
    )
    .await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--model", "fake-main"),
    );
    controller.write_manifest(
        "budget.yaml",
        &manifest("budget", "with a budget", "  agent:\n    maxCostUsd: 1.5\n"),
    );
    controller.wait_for_phase("budget", Phase::Failed, SESSION_TIMEOUT);
    assert_eq!(
        session_active_reason(&controller, "budget"),
        "UnpricedModel"
    );
    let (reason, message) = ending(&controller, "budget");
    assert_eq!(reason, "UnpricedModel");
    assert!(
        message.contains("\"fake-main\"") && message.contains("--cost-table"),
        "{message}"
    );
    assert!(llm.requests().is_empty(), "the model was asked");

    controller.write_manifest("free.yaml", &manifest("free", "without a budget", ""));
    controller.wait_for_phase("free", Phase::Resolved, SESSION_TIMEOUT);
    assert_eq!(llm.requests().len(), 1);
}

/// A budget flag with a priced default model, and an Incident that asks for a model the table does
/// not know: that session fails; the controller runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_session_with_an_unpriced_spec_model_under_a_budget_flag_fails_at_once() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(Protocol::Anthropic, Vec::new()).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--max-cost-usd", 5),
    );
    controller.write_manifest(
        "other.yaml",
        &manifest("other", "another model", "  agent:\n    model: llama3:8b\n"),
    );
    controller.wait_for_phase("other", Phase::Failed, SESSION_TIMEOUT);
    assert_eq!(session_active_reason(&controller, "other"), "UnpricedModel");
    let (_, message) = ending(&controller, "other");
    assert!(
        message.contains("\"llama3:8b\"") && message.contains("--cost-table"),
        "{message}"
    );
    assert!(llm.requests().is_empty(), "the model was asked");
}
