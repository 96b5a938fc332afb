//! End to end, through the binary: an Incident file becomes an audited agent session in a real Docker
//! sandbox, driven by a local server that speaks the provider's protocol with scripted turns.

use std::time::Duration;

use opslab::incident::{ConditionType, Outcome, Phase};
use serde_json::json;

use crate::support::controller::{Controller, Options, manifest, scripted};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};

const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|event| event["kind"] == kind).count()
}

fn full_script() -> Vec<Turn> {
    vec![
        Turn::shell(
            "echo hello from the sandbox && uname -s",
            "check the sandbox works",
        ),
        Turn::shell(
            "ls /nonexistent-path",
            "a path that does not exist, to see the exit code",
        ),
        Turn::shell("sleep 30", "a command that outlives its timeout"),
        Turn::shell(
            "head -c 6000 /dev/zero | tr '\\0' x; echo; echo tail-marker",
            "long output, to be summarised",
        ),
        Turn::report("resolved", "the sandbox works and commands are audited"),
    ]
}

/// The whole path for one protocol: manifest -> session -> commands -> report -> status -> show,
/// on the given store (None: an SQLite file).
async fn full_session(protocol: Protocol, provider: &'static str, store: Option<String>) {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(protocol, full_script()).await;
    let mut options = Options::new(provider, llm.base_url())
        .arg("--command-timeout-seconds", 2)
        .arg("--model", "fake-main")
        .arg("--summary-model", "fake-summary");
    if let Some(store) = store {
        options = options.store(store);
    }
    let controller = Controller::start(options);
    controller.write_manifest("api.yaml", &manifest("api-down", "api returns 500", ""));

    let incident = controller.wait_for_phase("api-down", Phase::Resolved, SESSION_TIMEOUT);
    let status = incident.status.expect("a status");
    assert_eq!(status.commands, 4, "{status:#?}");
    assert_eq!(status.turns, 5, "{status:#?}");
    assert_eq!(status.attempt, 1);
    assert_eq!(status.observed_generation, Some(1));
    // Five turns, and the one summary they caused: the session pays for both, so its status
    // agrees with the metrics, which count every model call.
    assert_eq!(
        status.tokens.input,
        (5 + 1) * crate::support::fake_llm::INPUT_TOKENS
    );
    assert_eq!(
        status.tokens.output,
        (5 + 1) * crate::support::fake_llm::OUTPUT_TOKENS
    );
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
        (counted("input"), counted("output")),
        (status.tokens.input, status.tokens.output),
        "{metrics}"
    );
    let report = status.report.expect("a report");
    assert_eq!(report.outcome, Outcome::Resolved);
    assert_eq!(report.summary, "the sandbox works and commands are audited");
    let last = status.last_command.expect("a last command");
    assert!(last.command.contains("tail-marker"), "{last:?}");
    assert_eq!(last.exit_code, Some(0));
    let resolved = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == ConditionType::Resolved)
        .expect("a Resolved condition");
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("True", "Reported")
    );

    let session_id = status.session_id.expect("a session id");
    let events = controller.events(&session_id);
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event["kind"] == "command_finished")
        .collect();
    let exits: Vec<(serde_json::Value, serde_json::Value)> = finished
        .iter()
        .map(|event| (event["exit_code"].clone(), event["timed_out"].clone()))
        .collect();
    assert_eq!(exits[0], (json!(0), json!(false)));
    assert_eq!(exits[1], (json!(2), json!(false)));
    assert_eq!(
        exits[2].1,
        json!(true),
        "the sleep timed out: {:?}",
        finished[2]
    );
    assert_eq!(exits[3], (json!(0), json!(false)));
    assert!(
        finished[0]["output"]
            .as_str()
            .unwrap()
            .contains("hello from the sandbox")
    );
    // Each event once, in order, chained.
    let seqs: Vec<i64> = events
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(count(&events, "output_summary"), 1, "{:?}", kinds(&events));
    assert_eq!(llm.summary_requests().len(), 1);
    assert_eq!(
        kinds(&events).last().map(String::as_str),
        Some("session_finished")
    );

    // `opslab show` tells the story: the reasoning and the outputs.
    let story = controller.cli(&["show", "api-down"]);
    for expected in [
        "check the sandbox works",
        "$ echo hello from the sandbox && uname -s",
        "| hello from the sandbox",
        "exit 2",
        "timed out",
        "summary (fake-summary)",
        "report: resolved",
    ] {
        assert!(
            story.contains(expected),
            "`opslab show` lacks {expected:?}:\n{story}"
        );
    }
    let table = controller.cli(&["get", "incidents", "-A"]);
    let row = table
        .lines()
        .find(|line| line.contains("api-down"))
        .expect("a row");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        ["default", "api-down", "Resolved", "high", "4"],
        "{table}"
    );

    // The sandbox is gone once the session ends.
    assert_eq!(docker::sandbox_of(&session_id), Vec::<String>::new());
    assert_eq!(llm.remaining(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_anthropic_end_to_end() {
    full_session(Protocol::Anthropic, "anthropic", None).await;
}

/// The same session with the store on PostgreSQL (a database of its own on the test server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_to_end_on_postgres() {
    let store = crate::support::store::fresh_postgres_database().await;
    full_session(Protocol::Anthropic, "anthropic", Some(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_openai_end_to_end() {
    full_session(Protocol::OpenAi, "openai", None).await;
}

/// Faults of the model API are retried; bad tool calls are told to the model; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_provider_faults() {
    let script = vec![
        Turn::Fault(Fault::Status {
            code: 429,
            retry_after: Some(1),
            body: None,
        }),
        Turn::shell("echo one", "first look"),
        Turn::Text("Let me think about what to do next.".into()),
        Turn::Fault(Fault::Status {
            code: 529,
            retry_after: None,
            body: None,
        }),
        Turn::Fault(Fault::Status {
            code: 500,
            retry_after: None,
            body: None,
        }),
        Turn::Tool {
            name: "shell".into(),
            input: json!({"reasoning": "no command given"}),
            text: None,
        },
        Turn::Fault(Fault::MalformedBody),
        Turn::Tool {
            name: "shell".into(),
            input: json!({"command": ["ls"], "reasoning": "a mistyped command"}),
            text: Some(String::new()),
        },
        Turn::Fault(Fault::ResetConnection),
        Turn::Tool {
            name: "kubectl".into(),
            input: json!({"args": "get pods"}),
            text: None,
        },
        Turn::report("resolved", "done despite the faults"),
    ];
    let (llm, controller) = scripted(script, |options| options).await;
    controller.write_manifest("faults.yaml", &manifest("faults", "flaky model api", ""));
    let incident = controller.wait_for_phase("faults", Phase::Resolved, SESSION_TIMEOUT);
    let status = incident.status.unwrap();
    assert_eq!(status.commands, 1);
    let events = controller.events(status.session_id.as_deref().unwrap());
    let rejected: Vec<String> = events
        .iter()
        .filter(|event| event["kind"] == "tool_rejected")
        .map(|event| event["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected[0].contains("missing field `command`"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].contains("bad argument `command`"),
        "{rejected:?}"
    );
    assert!(
        rejected[2].contains("unknown tool \"kubectl\""),
        "{rejected:?}"
    );
    // The model was told each rejection: the request after it carries an error tool result.
    let told = llm
        .requests()
        .iter()
        .filter(|request| request.to_string().contains("unknown tool"))
        .count();
    assert!(told >= 1);
    assert_eq!(llm.remaining(), 0);
}

/// A model API that refuses the key ends the session with a clear status, and nothing else stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_fails_clearly_when_the_model_api_refuses() {
    let script = vec![Turn::Fault(Fault::Status {
        code: 401,
        retry_after: None,
        body: Some(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into()),
    })];
    let (llm, controller) = scripted(script, |options| options).await;
    controller.write_manifest("auth.yaml", &manifest("auth", "anything", ""));
    let incident = controller.wait_for_phase("auth", Phase::Failed, SESSION_TIMEOUT);
    let status = incident.status.unwrap();
    let active = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == ConditionType::SessionActive)
        .unwrap();
    assert_eq!(active.reason, "ModelApiFailed");
    assert_eq!(llm.requests().len(), 1, "a 401 is not retried");
    let events = controller.events("auth");
    let failed = events
        .iter()
        .find(|event| event["kind"] == "llm_failed")
        .expect("an llm_failed event");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("invalid x-api-key"),
        "{failed}"
    );
}

/// kill -9 in the middle of a command; the restarted controller resumes the session from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_kill_9() {
    let script = vec![
        Turn::shell("echo before", "a first command"),
        Turn::shell(
            "sleep 4; echo slow-done",
            "a slow command the controller dies during",
        ),
        Turn::shell("echo after-restart", "carry on after the restart"),
        Turn::report("resolved", "resumed and finished"),
    ];
    let (llm, mut controller) = scripted(script, |options| options).await;
    controller.write_manifest("crash.yaml", &manifest("crash", "survive a crash", ""));
    controller.wait_for(
        "crash",
        "the slow command to start",
        SESSION_TIMEOUT,
        |incident| {
            incident.status.as_ref().is_some_and(|status| {
                status.last_command.as_ref().is_some_and(|last| {
                    last.command.contains("sleep 4") && last.exit_code.is_none()
                })
            })
        },
    );
    controller.kill9();
    controller.restart();
    let incident = controller.wait_for_phase("crash", Phase::Resolved, SESSION_TIMEOUT);
    let status = incident.status.unwrap();
    let session_id = status.session_id.unwrap();
    let events = controller.events(&session_id);
    let started: Vec<String> = events
        .iter()
        .filter(|event| event["kind"] == "command_started")
        .map(|event| event["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        started,
        vec![
            "echo before",
            "sleep 4; echo slow-done",
            "echo after-restart"
        ],
        "no command ran twice"
    );
    let interrupted: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event["kind"] == "command_interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{:?}", kinds(&events));
    assert_eq!(count(&events, "command_finished"), 2);
    assert_eq!(count(&events, "session_started"), 1);
    let turns: Vec<i64> = events
        .iter()
        .filter(|event| event["kind"] == "llm_response")
        .map(|event| event["turn"].as_i64().unwrap())
        .collect();
    assert_eq!(turns, vec![1, 2, 3, 4], "every model response stored once");
    let seqs: Vec<i64> = events
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    // The agent was told the command was interrupted.
    let after = &llm.requests()[2];
    assert!(after.to_string().contains("INTERRUPTED"), "{after}");
    assert_eq!(status.commands, 3);
    assert_eq!(docker::sandbox_of(&session_id), Vec::<String>::new());
}

/// Deleting the manifest cancels the session, kills its command and removes its sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_cancelled_when_its_manifest_is_deleted() {
    let script = vec![
        Turn::shell("sleep 100", "wait for something"),
        Turn::report("resolved", "never reached"),
    ];
    let (_llm, controller) = scripted(script, |options| options).await;
    controller.write_manifest("gone.yaml", &manifest("gone", "to be deleted", ""));
    let incident = controller.wait_for_commands("gone", 1, SESSION_TIMEOUT);
    let session_id = incident.status.unwrap().session_id.unwrap();
    assert_eq!(docker::sandbox_of(&session_id).len(), 1);
    controller.remove_manifest("gone.yaml");
    let deadline = std::time::Instant::now() + SESSION_TIMEOUT;
    loop {
        let sessions: serde_json::Value =
            serde_json::from_str(&controller.cli(&["sessions", "-o", "json"])).unwrap();
        if sessions[0]["phase"] == "Cancelled" && docker::sandbox_of(&session_id).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not cancelled: {sessions}\n{}",
            controller.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!controller.status_file("gone").exists());
    let events = controller.events(&session_id);
    assert_eq!(
        kinds(&events)[events.len() - 2..],
        ["command_interrupted", "session_finished"]
    );
    let table = controller.cli(&["get", "incidents"]);
    assert!(!table.contains("gone"), "{table}");
}

/// A note (`opslab.dev/note`) reaches the running agent once, as a note: the ticket's generation
/// does not move, so neither it nor a note added after the report starts another attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_reach_the_running_agent_once_and_start_no_attempt() {
    let script = vec![
        Turn::shell("sleep 3", "wait for the disk check"),
        Turn::report("resolved", "freed the disk"),
    ];
    let (llm, controller) = scripted(script, |options| options).await;
    let with_note = |note: &str| {
        manifest("noted", "the disk fills", "").replace(
            "  name: noted\n",
            &format!("  name: noted\n  annotations:\n    opslab.dev/note: \"{note}\"\n"),
        )
    };
    controller.write_manifest("noted.yaml", &manifest("noted", "the disk fills", ""));
    controller.wait_for_commands("noted", 1, SESSION_TIMEOUT);
    let note = "the storage team says /var/log is on the small disk";
    controller.write_manifest("noted.yaml", &with_note(note));
    // Written again unchanged: reconciled again, told once all the same.
    std::thread::sleep(Duration::from_millis(300));
    controller.write_manifest("noted.yaml", &with_note(note));
    let ended = controller.wait_for_phase("noted", Phase::Resolved, SESSION_TIMEOUT);
    assert_eq!(
        ended.metadata.generation,
        Some(1),
        "a note is no spec change"
    );
    let told = llm.requests()[1].to_string();
    assert!(
        told.contains("A note on the ticket") && told.contains(note),
        "{told}"
    );
    assert_eq!(count(&controller.events("noted"), "note_received"), 1);

    // A note after the report: nothing starts.
    controller.write_manifest("noted.yaml", &with_note("it is fine now"));
    std::thread::sleep(Duration::from_secs(2));
    let after = controller.incident("noted").unwrap().status.unwrap();
    assert_eq!((after.phase, after.attempt), (Phase::Resolved, 1));
    assert_eq!(llm.requests().len(), 2, "the model was not called again");
}

/// A spec change during a session reaches the agent; one after the end starts a new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_follows_spec_changes() {
    let script = vec![
        Turn::shell("sleep 2", "wait a moment"),
        Turn::report("unresolved", "first attempt gives up"),
        Turn::shell("echo second", "second attempt"),
        Turn::report("resolved", "second attempt fixed it"),
    ];
    let (llm, controller) = scripted(script, |options| options).await;
    controller.write_manifest("spec.yaml", &manifest("spec", "first title", ""));
    controller.wait_for_commands("spec", 1, SESSION_TIMEOUT);
    controller.write_manifest(
        "spec.yaml",
        &manifest(
            "spec",
            "first title",
            "  description: \"new detail: the disk is full\"\n",
        ),
    );
    let incident = controller.wait_for_phase("spec", Phase::Unresolved, SESSION_TIMEOUT);
    assert_eq!(incident.metadata.generation, Some(2));
    let told = llm.requests()[1].to_string();
    assert!(
        told.contains("The ticket was updated (generation 2)") && told.contains("the disk is full"),
        "{told}"
    );
    let events = controller.events("spec");
    assert_eq!(count(&events, "ticket_updated"), 1);

    // Touching the file without changing the spec moves nothing.
    controller.write_manifest(
        "spec.yaml",
        &manifest(
            "spec",
            "first title",
            "  description: \"new detail: the disk is full\"\n",
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        controller.incident("spec").unwrap().metadata.generation,
        Some(2)
    );

    controller.write_manifest("spec.yaml", &manifest("spec", "second title", ""));
    let incident = controller.wait_for("spec", "attempt 2 resolved", SESSION_TIMEOUT, |incident| {
        incident
            .status
            .as_ref()
            .is_some_and(|status| status.attempt == 2 && status.phase == Phase::Resolved)
    });
    assert_eq!(incident.metadata.generation, Some(3));
    let sessions: serde_json::Value =
        serde_json::from_str(&controller.cli(&["sessions", "-o", "json"])).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 2);
}

/// With one session slot, a second Incident waits in Queued, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_queues_the_rest() {
    let script = vec![
        Turn::shell("sleep 3", "hold the only slot"),
        Turn::report("resolved", "first done"),
        Turn::report("resolved", "second done"),
    ];
    let (_llm, controller) = scripted(script, |options| options.arg("--max-sessions", 1)).await;
    controller.write_manifest("first.yaml", &manifest("first", "first", ""));
    controller.wait_for_commands("first", 1, SESSION_TIMEOUT);
    controller.write_manifest("second.yaml", &manifest("second", "second", ""));
    let queued = controller.wait_for_phase("second", Phase::Queued, SESSION_TIMEOUT);
    let active = queued
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == ConditionType::SessionActive)
        .unwrap();
    assert_eq!(active.reason, "Queued");
    controller.wait_for_phase("first", Phase::Resolved, SESSION_TIMEOUT);
    controller.wait_for_phase("second", Phase::Resolved, SESSION_TIMEOUT);
}

/// A secret in a command and in its output never reaches the store, the logs, the model or the
/// summary model: everything is taken from the redacted trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_redacts_secrets_everywhere() {
    docker::require_sandbox_image();
    let secret = "sk-ant-api03-SEEDEDSECRET0123456789abcdef";
    let script = vec![
        Turn::shell(
            &format!("echo token={secret}; head -c 3000 /dev/zero | tr '\\0' x"),
            &format!("check whether {secret} leaks"),
        ),
        Turn::report("resolved", "no leak"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "fake-summary"),
    );
    controller.write_manifest("leak.yaml", &manifest("leak", "secrets in output", ""));
    let incident = controller.wait_for_phase("leak", Phase::Resolved, SESSION_TIMEOUT);
    let session_id = incident.status.unwrap().session_id.unwrap();
    let events = controller.events(&session_id);
    let output = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .and_then(|event| event["output"].as_str())
        .unwrap()
        .to_string();
    assert!(
        output.starts_with("token=[REDACTED:anthropic-key]\n"),
        "{output}"
    );
    let summaries = llm.summary_requests();
    assert_eq!(summaries.len(), 1);
    let seen = [
        ("the model", serde_json::to_string(&llm.requests()).unwrap()),
        (
            "the summary model",
            serde_json::to_string(&summaries).unwrap(),
        ),
        ("the store", serde_json::to_string(&events).unwrap()),
        ("the logs", controller.logs()),
        (
            "the status file",
            std::fs::read_to_string(controller.status_file("leak")).unwrap(),
        ),
    ];
    // The model's first request precedes the command; the secret appears only from the second on.
    assert!(
        seen[0].1.contains("[REDACTED:anthropic-key]"),
        "{}",
        seen[0].1
    );
    for (place, text) in seen {
        assert!(!text.contains("SEEDEDSECRET"), "the secret reached {place}");
    }
}

/// A summariser that fails loses nothing and blocks nothing: the raw output is stored, the session
/// ends as it would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_a_failing_summariser() {
    docker::require_sandbox_image();
    let script = vec![
        Turn::shell("head -c 5000 /dev/zero | tr '\\0' y", "long output"),
        Turn::report("resolved", "done"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start(Options::new("anthropic", llm.base_url()).arg(
        "--summary-model",
        crate::support::fake_llm::BROKEN_SUMMARY_MODEL,
    ));
    controller.write_manifest("sum.yaml", &manifest("sum", "summaries down", ""));
    let incident = controller.wait_for_phase("sum", Phase::Resolved, SESSION_TIMEOUT);
    let events = controller.events(incident.status.unwrap().session_id.as_deref().unwrap());
    assert_eq!(count(&events, "output_summary"), 0);
    let finished = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .unwrap();
    assert_eq!(finished["output_bytes"], 5000);
    assert!(
        !llm.summary_requests().is_empty(),
        "the summariser was asked"
    );
    assert!(
        controller.logs().contains("the output summary failed"),
        "{}",
        controller.logs()
    );
}

/// Polling instead of inotify (for mounts that send no events) sees new, changed and deleted files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_runs_with_a_polled_folder() {
    let script = vec![
        Turn::shell("echo polled", "look"),
        Turn::report("resolved", "done"),
    ];
    let (_llm, controller) =
        scripted(script, |options| options.arg("--poll-interval-ms", 200)).await;
    controller.write_manifest("poll.yaml", &manifest("poll", "seen by polling", ""));
    controller.wait_for_phase("poll", Phase::Resolved, SESSION_TIMEOUT);
    controller.remove_manifest("poll.yaml");
    let deadline = std::time::Instant::now() + SESSION_TIMEOUT;
    while controller.status_file("poll").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion was not seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        controller.logs().contains("watch=Poll(200ms)"),
        "{}",
        controller.logs()
    );
}

/// Many Incidents at once, more than the session limit: each gets its own session and sandbox, and
/// all end resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_many_incidents_at_once() {
    docker::require_sandbox_image();
    let script = vec![
        Turn::shell("hostname", "which sandbox am I in"),
        Turn::report("resolved", "done"),
    ];
    let llm = FakeLlm::start_each(Protocol::Anthropic, script).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--max-sessions", 3),
    );
    let names: Vec<String> = (0..6).map(|i| format!("many-{i}")).collect();
    for name in &names {
        controller.write_manifest(&format!("{name}.yaml"), &manifest(name, "one of many", ""));
    }
    let mut sandboxes = std::collections::BTreeSet::new();
    for name in &names {
        let incident = controller.wait_for_phase(name, Phase::Resolved, SESSION_TIMEOUT);
        let status = incident.status.unwrap();
        assert_eq!((status.commands, status.turns), (1, 2), "{name}");
        let events = controller.events(status.session_id.as_deref().unwrap());
        let ready = events
            .iter()
            .find(|e| e["kind"] == "sandbox_ready")
            .unwrap();
        sandboxes.insert(ready["container_id"].as_str().unwrap().to_string());
    }
    assert_eq!(sandboxes.len(), names.len(), "one sandbox per session");
}

/// SIGTERM (a deploy, `docker stop`) stops the controller cleanly once the shutdown grace period
/// is over; the session resumes at the next start, its running command recorded as interrupted,
/// not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_a_graceful_stop() {
    let script = vec![
        Turn::shell("sleep 20", "a long command the stop interrupts"),
        Turn::report("resolved", "resumed after the stop"),
    ];
    let (llm, mut controller) =
        scripted(script, |options| options.arg("--shutdown-grace-seconds", 1)).await;
    controller.write_manifest("stop.yaml", &manifest("stop", "graceful stop", ""));
    controller.wait_for_commands("stop", 1, SESSION_TIMEOUT);
    let stopped = std::time::Instant::now();
    let status = controller.terminate();
    assert!(status.success(), "the controller exited with {status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "the stop took {:?}",
        stopped.elapsed()
    );
    assert!(
        controller.logs().contains("sessions resume from the store"),
        "{}",
        controller.logs()
    );
    controller.start_again();
    let incident = controller.wait_for_phase("stop", Phase::Resolved, SESSION_TIMEOUT);
    let events = controller.events(incident.status.unwrap().session_id.as_deref().unwrap());
    assert_eq!(count(&events, "command_started"), 1, "{:?}", kinds(&events));
    assert_eq!(
        count(&events, "command_interrupted"),
        1,
        "{:?}",
        kinds(&events)
    );
    assert!(llm.requests()[1].to_string().contains("INTERRUPTED"));
}

/// SIGTERM lets the running command finish (the grace period defaults to the command timeout), then
/// the controller stops before the next step; the session resumes with the command's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_stop_lets_the_running_command_finish() {
    let script = vec![
        Turn::shell(
            "sleep 4; echo finished-before-the-stop",
            "a command the stop waits for",
        ),
        Turn::report("resolved", "resumed after the stop"),
    ];
    let (llm, mut controller) = scripted(script, |options| options).await;
    controller.write_manifest(
        "drain.yaml",
        &manifest("drain", "stop after the command", ""),
    );
    controller.wait_for_commands("drain", 1, SESSION_TIMEOUT);
    let stopped = std::time::Instant::now();
    let status = controller.terminate();
    assert!(status.success(), "the controller exited with {status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "the stop took {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        llm.requests().len(),
        1,
        "no model call after the stop began"
    );
    controller.start_again();
    let incident = controller.wait_for_phase("drain", Phase::Resolved, SESSION_TIMEOUT);
    let events = controller.events(incident.status.unwrap().session_id.as_deref().unwrap());
    assert_eq!(count(&events, "command_started"), 1, "{:?}", kinds(&events));
    assert_eq!(
        count(&events, "command_interrupted"),
        0,
        "{:?}",
        kinds(&events)
    );
    let finished = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .expect("the command's result is recorded");
    assert_eq!(finished["exit_code"], 0, "{finished}");
    assert!(
        llm.requests()[1]
            .to_string()
            .contains("finished-before-the-stop")
    );
}

/// 200 seeded secrets of every known shape and configured values, placed in command output,
/// environment variables and files, never reach the store, the logs, the status or the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_redacts_two_hundred_seeded_secrets() {
    docker::require_sandbox_image();
    let body = |i: usize, length: usize| {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..length)
            .map(|j| alphabet[(i * 7919 + j * 104_729) % alphabet.len()] as char)
            .collect::<String>()
    };
    let configured = "opslab-seeded-db-password-7f3a9c";
    let secrets: Vec<String> = (0..200)
        .map(|i| match i % 8 {
            0 => format!("sk-ant-api03-{}", body(i, 40)),
            1 => format!("sk-proj-{}", body(i, 40)),
            2 => format!("AKIA{}", body(i, 16)),
            3 => format!("ghp_{}", body(i, 36)),
            4 => format!("xoxb-{}", body(i, 24)),
            5 => format!("Bearer {}", body(i, 32)),
            6 => format!("postgres://admin:{}@db:5432/app", body(i, 16)),
            _ => format!("{configured}-{i}"),
        })
        .collect();
    // A third in output, a third in environment variables, a third in a file.
    let mut script = String::from("set -e\n");
    for (i, secret) in secrets.iter().enumerate() {
        match i % 3 {
            0 => script.push_str(&format!("echo 'out {secret}'\n")),
            1 => script.push_str(&format!("export SEEDED_{i}='{secret}'\n")),
            _ => script.push_str(&format!("echo '{secret}' >> /tmp/seeded.txt\n")),
        }
    }
    script.push_str("env | grep SEEDED_ | sort\ncat /tmp/seeded.txt\n");
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell(&script, "print the secrets"),
            Turn::report("resolved", "done"),
        ],
    )
    .await;
    // The configured values come from the controller's environment, named by --secret-env.
    let controller = Controller::start_with_env(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "fake-summary")
            .arg("--secret-env", "OPSLAB_TEST_DB_PASSWORD"),
        &[("OPSLAB_TEST_DB_PASSWORD", configured)],
    );
    controller.write_manifest("seeded.yaml", &manifest("seeded", "secrets everywhere", ""));
    let incident = controller.wait_for_phase("seeded", Phase::Resolved, SESSION_TIMEOUT);
    let events = controller.events(incident.status.unwrap().session_id.as_deref().unwrap());
    let output = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .and_then(|event| event["output"].as_str())
        .unwrap()
        .to_string();
    assert!(output.matches("[REDACTED:").count() >= 200, "{output}");
    let mut store_bytes = String::new();
    for entry in std::fs::read_dir(controller.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            store_bytes.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
        }
    }
    let places = [
        ("the model", serde_json::to_string(&llm.requests()).unwrap()),
        (
            "the summary model",
            serde_json::to_string(&llm.summary_requests()).unwrap(),
        ),
        ("the store and logs on disk", store_bytes),
        (
            "the status file",
            std::fs::read_to_string(controller.status_file("seeded")).unwrap(),
        ),
    ];
    for secret in &secrets {
        // What must not leak: the secret part, not the context kept around it.
        let needle = if let Some(token) = secret.strip_prefix("Bearer ") {
            token
        } else if let Some(rest) = secret.strip_prefix("postgres://admin:") {
            rest.split('@').next().unwrap()
        } else if secret.starts_with(configured) {
            configured
        } else {
            secret.as_str()
        };
        for (place, text) in &places {
            assert!(!text.contains(needle), "{secret:?} reached {place}");
        }
    }
}

/// A small model on Chat Completions that writes its tool call as JSON text (with
/// `finish_reason: stop`) still gets its command run; the trail keeps the text beside the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takes_a_tool_call_written_as_text() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::OpenAi,
        vec![
            Turn::Text(
                r#"{"name": "shell", "arguments": {"command": "echo written-as-text", "reasoning": "a small model's habit"}}"#
                    .into(),
            ),
            Turn::report("resolved", "ran the command it wrote as text"),
        ],
    )
    .await;
    let controller =
        Controller::start(Options::new("openai", llm.base_url()).arg("--summary-model", "off"));
    controller.write_manifest("text.yaml", &manifest("text", "anything", ""));
    let incident = controller.wait_for_phase("text", Phase::Resolved, SESSION_TIMEOUT);
    assert_eq!(incident.status.unwrap().commands, 1);
    let events = controller.events("text");
    let finished = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .expect("the command ran");
    assert!(
        finished["output"]
            .as_str()
            .unwrap()
            .contains("written-as-text"),
        "{finished}"
    );
    // The second request answers the call by its id.
    let second = &llm.requests()[1];
    assert!(
        second.to_string().contains("call_text_1"),
        "the tool result answers the call: {second}"
    );
}

/// On a server of one's own, summaries are off unless a summary model is named: they would queue
/// in front of the agent's own turns on a single-slot server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_on_a_self_hosted_server_asks_for_no_summary_by_default() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::OpenAi,
        vec![
            Turn::shell("head -c 6000 /dev/zero | tr '\\0' x", "long output"),
            Turn::report("resolved", "done"),
        ],
    )
    .await;
    let controller = Controller::start(Options::new("openai", llm.base_url()));
    controller.write_manifest("quiet.yaml", &manifest("quiet", "anything", ""));
    controller.wait_for_phase("quiet", Phase::Resolved, SESSION_TIMEOUT);
    assert_eq!(llm.requests().len(), 2, "the agent's two turns");
    assert!(
        llm.summary_requests().is_empty(),
        "no summary was asked for"
    );
}
