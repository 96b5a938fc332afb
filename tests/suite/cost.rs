//! A spend budget is never silently unenforced: with a model the cost table cannot price, the
//! controller refuses to start (a budget flag) or the session fails at once (a budget or a model in
//! the Incident), naming the model and `--cost-table`.

use std::process::{Command, Stdio};
use std::time::Duration;

use opslab::incident::{ConditionType, Phase};

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
        .find(|condition| condition.type_ == ConditionType::SessionActive)
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

/// A session against a server that caches as the Anthropic API does: its status, its trail, the
/// metrics and `opslab show` keep fresh input, cache writes, cache reads and output apart, and its
/// estimated cost prices each kind at its own rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_cached_tokens_are_kept_apart_and_priced_per_kind() {
    docker::require_sandbox_image();
    let long = |n: u32| {
        Turn::shell(
            &format!(
                "for i in $(seq 1 150); do echo \"log line $i of file {n}: all is well\"; done"
            ),
            "read a log",
        )
    };
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            long(1),
            long(2),
            long(3),
            Turn::report("resolved", "logs read"),
        ],
    )
    .await;
    llm.cache_prompts();
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--model", "claude-sonnet-4-5"),
    );
    controller.write_manifest("cached.yaml", &manifest("cached", "read the logs", ""));
    let status = controller
        .wait_for_phase("cached", Phase::Resolved, SESSION_TIMEOUT)
        .status
        .unwrap();
    let tokens = status.tokens;
    assert!(
        tokens.cache_write > 0 && tokens.cache_read > 0,
        "{tokens:?}"
    );
    assert!(
        tokens.cache_read > tokens.input,
        "most input is read from the cache: {tokens:?}"
    );
    // The trail's figures add up to the status, and the cost is each kind at its price.
    let session = status.session_id.unwrap();
    let events = controller.events(&session);
    let sum = |field: &str| -> u64 {
        events
            .iter()
            .filter(|event| event["kind"] == "llm_response")
            .map(|event| event[field].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (
            sum("input_tokens"),
            sum("cache_write_tokens"),
            sum("cache_read_tokens"),
            sum("output_tokens")
        ),
        (
            tokens.input,
            tokens.cache_write,
            tokens.cache_read,
            tokens.output
        )
    );
    let priced = (tokens.input as f64 * 3.0
        + tokens.cache_write as f64 * 3.0 * 1.25
        + tokens.cache_read as f64 * 3.0 * 0.1
        + tokens.output as f64 * 15.0)
        / 1e6;
    assert!(
        (status.cost_usd - priced).abs() < 1e-9,
        "{} != {priced}",
        status.cost_usd
    );
    let flat = ((tokens.input + tokens.cache_write + tokens.cache_read) as f64 * 3.0
        + tokens.output as f64 * 15.0)
        / 1e6;
    assert!(status.cost_usd < flat, "caching costs less than it would");
    // The metrics, by direction.
    let metrics = reqwest::get(format!("{}/metrics", controller.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |direction: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("opslab_llm_tokens_total{")
                    && line.contains(&format!("direction=\"{direction}\""))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    assert_eq!(
        (
            counted("input"),
            counted("cache_write"),
            counted("cache_read"),
            counted("output")
        ),
        (
            tokens.input,
            tokens.cache_write,
            tokens.cache_read,
            tokens.output
        ),
        "{metrics}"
    );
    let shown = controller.cli(&["show", &session]);
    assert!(
        shown.contains(&format!(
            "{} in / {} cache write / {} cache read / {} out",
            tokens.input, tokens.cache_write, tokens.cache_read, tokens.output
        )),
        "{shown}"
    );
}
