//! Every fault scenario end to end: a demo stack per case, the fault injected with real Docker
//! actions, the Incident filed to a real controller, the session driven by the replaying model
//! server, and the case's oracle. The control case must change nothing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::controller::BIN;
use crate::support::docker;

/// Removes whatever a run left behind, even when the test fails half-way.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let label = format!("opslab.dev/instance={}", self.0);
        for id in docker::containers_with_label(&label) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        docker::remove_named(&format!("{}-", self.0));
    }
}

/// The etcd demo's compose file, beside its image's Dockerfile.
const ETCD_COMPOSE: &str = "docker/demo/etcd/docker-compose.yml";

#[test]
fn scenario_every_case_is_detected_and_fixed_with_its_reasoning_audited() {
    docker::require_sandbox_image();
    docker::require_images(&docker::DEMO_IMAGES);
    docker::require_images(&[docker::ETCD_IMAGE]);
    docker::compose_command();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = format!("scn-t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _leftovers = Leftovers(run.clone());
    let output = Command::new(BIN)
        .args(["scenario", "run", "--driver", "replay", "--parallel", "7"])
        .args(["--name", &run, "-o", "json"])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(root.join("scenarios"))
        .arg("--compose-file")
        .arg(root.join("docker-compose.yml"))
        .arg("--etcd-compose-file")
        .arg(root.join(ETCD_COMPOSE))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("the opslab binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(out.path().join("controller.log")).unwrap_or_default();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}): {stdout}\nstderr: {}\ncontroller log:\n{log}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "not every case passed: {report:#}\ncontroller log:\n{log}"
    );
    assert_eq!(report["driver"], "replay");
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().filter_map(|c| c["case"].as_str()).collect();
    for needed in [
        "container-stopped",
        "container-paused",
        "wrong-env-crash-loop",
        "network-disconnected",
        "volume-full",
        "oom-killed",
        "no-fault",
    ] {
        assert!(names.contains(&needed), "{needed} did not run: {names:?}");
    }
    assert!(names.len() >= 20, "fewer than 20 cases ran: {names:?}");
    let controls: Vec<&str> = cases
        .iter()
        .filter(|c| c["fault"] == false)
        .filter_map(|c| c["case"].as_str())
        .collect();
    assert!(controls.len() >= 3, "fewer than 3 controls: {controls:?}");
    check_progress_lines(&String::from_utf8_lossy(&output.stderr), &names, &controls);
    let store = out.path().join("opslab.db");
    for case in cases {
        let name = case["case"].as_str().unwrap();
        assert_eq!(case["detected"], true, "{name}: {case:#}");
        assert_eq!(case["fixed"], true, "{name}: {case:#}");
        // Every score passes: the replay is the right answer, and its fix lasts.
        assert_eq!(case["passed"], true, "{name}: {case:#}");
        assert_eq!(case["durable"], true, "{name}: {case:#}");
        assert_eq!(case["failures"], serde_json::json!([]), "{name}: {case:#}");
        assert!(case["turns"].as_u64().unwrap() > 0, "{name}");
        if case["fault"] == true {
            assert_eq!(case["scores"]["localised"], true, "{name}: {case:#}");
            assert_eq!(case["scores"]["root_cause"], true, "{name}: {case:#}");
        } else {
            assert_eq!(case["scores"]["false_positive"], false, "{name}: {case:#}");
        }
        assert!(case["error"].is_null(), "{name}: {case:#}");
        assert!(
            case["time_to_fix_seconds"].as_f64().unwrap() > 0.0,
            "{name}"
        );
        assert!(case["input_tokens"].as_u64().unwrap() > 0, "{name}");
        let changes = case["state_changing_commands"].as_array().unwrap();
        if case["fault"] == true {
            assert!(!changes.is_empty(), "{name}: a fix changes something");
        } else {
            assert!(
                changes.is_empty(),
                "{name}: the control changed {changes:?}"
            );
        }
        check_reasoning_chain(&store, name, case["commands"].as_u64().unwrap());
    }
    assert_eq!(
        report["summary"]["passed"].as_u64(),
        Some(cases.len() as u64),
        "{:#}",
        report["summary"]
    );
    let markdown = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        markdown.contains(&format!("| **all** | {0}/{0} |", cases.len())),
        "{markdown}"
    );
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The stacks are gone.
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={run}-")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Not on a terminal, the run showed each case's steps as plain lines on stderr, in the order they
/// happen, each with the time since its case began.
fn check_progress_lines(stderr: &str, cases: &[&str], controls: &[&str]) {
    assert!(
        !stderr.contains('\u{1b}'),
        "terminal codes in plain output: {stderr}"
    );
    let timed = regex::Regex::new(r"^\[\s*\d+\.\ds\] ").unwrap();
    for case in cases {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains(&format!("] {case}: ")))
            .collect();
        assert!(
            lines.iter().all(|line| timed.is_match(line)),
            "{case}: {lines:#?}"
        );
        let mut expected = vec![
            "bringing its demo stack up".to_string(),
            "demo stack healthy".into(),
            "fault injected".into(),
        ];
        if !controls.contains(case) {
            expected.push("the fault shows".into());
        }
        expected.extend([
            format!("Incident default/{case} filed"),
            "session ".into(),
            "$ ".into(),
            "session ended Resolved".into(),
            "oracle passed".into(),
            "durable".into(),
        ]);
        let mut rest = lines.iter();
        for step in &expected {
            assert!(
                rest.any(|line| line.contains(&format!(": {step}"))),
                "{case}: no {step:?} in order in {lines:#?}"
            );
        }
        let commands = lines.iter().filter(|line| line.contains(": $ ")).count();
        assert!(commands >= 2, "{case}: each command is shown: {lines:#?}");
    }
}

/// Each command in the case's trail was preceded by the model's answer that asked for it, carries
/// its reasoning, and finished; the trail ends with the report and the session's end.
fn check_reasoning_chain(store: &Path, case: &str, commands: u64) {
    let output = Command::new(BIN)
        .args(["show", case, "-o", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(output.status.success(), "opslab show {case} failed");
    let story: Value = serde_json::from_slice(&output.stdout).unwrap();
    let events = story["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "command_started")
        .collect();
    assert_eq!(started.len() as u64, commands, "{case}: {kinds:?}");
    for event in &started {
        assert!(
            !event["reasoning"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .is_empty(),
            "{case}: a command without reasoning: {event}"
        );
    }
    let mut expected = Vec::new();
    for _ in 0..commands {
        expected.extend(["llm_response", "command_started", "command_finished"]);
    }
    expected.extend(["llm_response", "reported", "session_finished"]);
    let chain: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|kind| expected.contains(kind))
        .collect();
    assert_eq!(chain, expected, "{case}: the trail is out of order");
    assert_eq!(kinds.first(), Some(&"session_started"), "{case}");
}

#[test]
fn scenario_an_agent_that_fixes_nothing_is_reported_as_such() {
    docker::require_sandbox_image();
    docker::require_images(&docker::DEMO_IMAGES);
    docker::compose_command();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The paused-store case, with an agent that only looks and gives up.
    let cases = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("scenarios/lib.sh"), cases.path().join("lib.sh")).unwrap();
    let case = cases.path().join("container-paused");
    std::fs::create_dir(&case).unwrap();
    for file in ["inject.sh", "check.sh", "incident.yaml"] {
        std::fs::copy(
            root.join("scenarios/container-paused").join(file),
            case.join(file),
        )
        .unwrap();
    }
    std::fs::write(
        case.join("case.yaml"),
        "summary: a paused container\ndetect: paused\ncomponent: store\nmechanism: [paused]\ncommands:\n  - command: docker ps\n    reasoning: look around\nreport:\n  outcome: unresolved\n  summary: I could not find the cause.\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = format!("scn-t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _leftovers = Leftovers(run.clone());
    let output = Command::new(BIN)
        .args([
            "scenario",
            "run",
            "--driver",
            "replay",
            "--oracle-timeout-seconds",
            "3",
        ])
        .args(["--name", &run, "-o", "json"])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(cases.path())
        .arg("--compose-file")
        .arg(root.join("docker-compose.yml"))
        .output()
        .expect("the opslab binary runs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let case = &report["cases"][0];
    assert_eq!(case["detected"], false, "{case:#}");
    assert_eq!(case["fixed"], false, "{case:#}");
    assert!(case["time_to_fix_seconds"].is_null(), "{case:#}");
    assert_eq!(case["phase"], "Unresolved", "{case:#}");
    assert_eq!(case["commands"], 1, "{case:#}");
    assert_eq!(
        case["failures"],
        serde_json::json!([
            "not-detected",
            "not-localised",
            "wrong-root-cause",
            "not-mitigated"
        ]),
        "{case:#}"
    );
    assert!(
        case["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the oracle fails"),
        "{case:#}"
    );
}

/// Runs `opslab scenario run --replay-wrong KIND` on the shipped cases named; the JSON report and
/// whether the run passed.
fn run_wrong(kind: &str, cases: &[&str]) -> (Value, Option<i32>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = format!("scn-w{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _leftovers = Leftovers(run.clone());
    let output = Command::new(BIN)
        .args([
            "scenario",
            "run",
            "--driver",
            "replay",
            "--replay-wrong",
            kind,
        ])
        .args(["--parallel", "4"])
        .args(["--name", &run, "-o", "json"])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(root.join("scenarios"))
        .arg("--compose-file")
        .arg(root.join("docker-compose.yml"))
        .arg("--etcd-compose-file")
        .arg(root.join(ETCD_COMPOSE))
        .args(cases)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("the opslab binary runs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output.status.code())
}

#[test]
fn scenario_wrong_sessions_on_the_real_engine_fail_as_they_should() {
    docker::require_sandbox_image();
    docker::require_images(&docker::DEMO_IMAGES);
    docker::compose_command();
    // A symptom-only fix restores service, so the oracle passes, but the cause stays: the
    // durability check (a wait, then a restart) catches it, and nothing else does.
    let (report, code) = run_wrong(
        "symptom-only",
        &["redis-password-rotated", "disk-filled-by-log"],
    );
    assert_eq!(code, Some(1), "{report:#}");
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{report:#}");
    for case in cases {
        let name = case["case"].as_str().unwrap();
        assert!(case["error"].is_null(), "{name}: {case:#}");
        assert_eq!(case["mitigated"], true, "{name}: {case:#}");
        assert_eq!(case["durable"], false, "{name}: {case:#}");
        assert_eq!(case["scores"]["localised"], true, "{name}: {case:#}");
        assert_eq!(case["scores"]["root_cause"], true, "{name}: {case:#}");
        assert_eq!(
            case["failures"],
            serde_json::json!(["not-durable"]),
            "{name}: {case:#}"
        );
    }
    assert_eq!(report["summary"]["durable"], 0, "{report:#}");
    assert_eq!(report["summary"]["mitigated"], 2, "{report:#}");
    // On a control, a restart "to be safe" is a false positive, though the system stays healthy.
    let (report, code) = run_wrong("harmful-change", &["no-fault"]);
    assert_eq!(code, Some(1), "{report:#}");
    let case = &report["cases"][0];
    assert_eq!(case["mitigated"], true, "{case:#}");
    assert_eq!(case["scores"]["false_positive"], true, "{case:#}");
    assert_eq!(
        case["failures"],
        serde_json::json!(["false-positive"]),
        "{case:#}"
    );
    let changes = case["state_changing_commands"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{case:#}");
    assert!(
        changes[0].as_str().unwrap().contains("docker restart"),
        "{case:#}"
    );
}

#[test]
fn scenario_repeated_runs_give_pass_at_k_with_a_table_and_a_chart() {
    docker::require_sandbox_image();
    docker::require_images(&docker::DEMO_IMAGES);
    docker::compose_command();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = format!("scn-r{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _leftovers = Leftovers(run.clone());
    let output = Command::new(BIN)
        .args(["scenario", "run", "--driver", "replay", "--repeat", "2"])
        .args(["--durable-wait-seconds", "1", "--name", &run, "-o", "json"])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(root.join("scenarios"))
        .arg("--compose-file")
        .arg(root.join("docker-compose.yml"))
        .arg("container-paused")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("the opslab binary runs");
    let matrix: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "{matrix:#}");
    assert_eq!(matrix["repeat"], 2);
    let model = &matrix["models"][0];
    assert_eq!(model["model"], "replay");
    assert_eq!(model["runs"].as_array().unwrap().len(), 2, "{model:#}");
    let case = &model["cases"][0];
    assert_eq!(case["case"], "container-paused");
    assert_eq!(case["attempts"], 2);
    assert_eq!(case["passed"], 2);
    assert_eq!(case["pass_at_1"], 1.0);
    assert_eq!(model["pass_at_k"], 1.0);
    // Each attempt kept its own folder and store; the matrix sits beside them.
    for round in ["1", "2"] {
        assert!(
            out.path()
                .join("replay")
                .join(round)
                .join("opslab.db")
                .is_file()
        );
    }
    let markdown = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        markdown.contains("| container-paused | 1.00 / 1.00 |"),
        "{markdown}"
    );
    let svg = std::fs::read_to_string(out.path().join("results.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("replay"), "{svg}");
}

/// The distributed-store cases on a real three-member etcd cluster: each fault is there before the
/// session (the runner saw the oracle fail: "the fault shows"), and after the replayed session the
/// cluster is whole (the oracle: three started members, one leader, a write and a read through the
/// kv service), and stays so after a restart of the faulty members. The cases run at once, each on
/// its own cluster.
#[test]
fn scenario_etcd_faults_show_before_the_session_and_the_cluster_is_whole_after() {
    docker::require_sandbox_image();
    docker::require_images(&[docker::ETCD_IMAGE]);
    docker::compose_command();
    let cases = [
        "etcd-member-stopped",
        "etcd-quorum-lost",
        "etcd-wrong-peer-url",
        "etcd-member-disk-full",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = format!("scn-e{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _leftovers = Leftovers(run.clone());
    let output = Command::new(BIN)
        .args(["scenario", "run", "--driver", "replay", "--parallel", "4"])
        .args(["--durable-wait-seconds", "5", "--name", &run, "-o", "json"])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(root.join("scenarios"))
        .arg("--etcd-compose-file")
        .arg(root.join(ETCD_COMPOSE))
        .args(cases)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("the opslab binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON report ({error}): {stderr}"));
    assert!(output.status.success(), "{report:#}\n{stderr}");
    let results = report["cases"].as_array().unwrap();
    assert_eq!(results.len(), cases.len(), "{report:#}");
    for case in results {
        let name = case["case"].as_str().unwrap();
        assert_eq!(case["passed"], true, "{name}: {case:#}");
        assert_eq!(case["mitigated"], true, "{name}: {case:#}");
        assert_eq!(case["durable"], true, "{name}: {case:#}");
        assert_eq!(case["scores"]["localised"], true, "{name}: {case:#}");
        assert_eq!(case["scores"]["root_cause"], true, "{name}: {case:#}");
        // Cases whose quorum held name their healthy members, and the replay left them alone.
        if name != "etcd-quorum-lost" {
            assert_eq!(case["scores"]["false_positive"], false, "{name}: {case:#}");
        }
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains(&format!("] {name}: ")))
            .collect();
        let mut rest = lines.iter();
        for step in [
            "fault injected",
            "the fault shows",
            "session ended Resolved",
            "oracle passed",
            "durable",
        ] {
            assert!(
                rest.any(|line| line.contains(&format!(": {step}"))),
                "{name}: no {step:?} in order in {lines:#?}"
            );
        }
    }
    // The clusters are gone, their volumes with them.
    for kind in [["ps", "-aq"], ["volume", "ls"]] {
        let left = Command::new("docker")
            .args(kind)
            .args(["-q", "--filter", &format!("name={run}-")])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&left.stdout).trim().is_empty(),
            "left behind: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
}

/// On a cluster that still holds its quorum, restarting the healthy members "to be safe" restores
/// it too, but is scored as a false positive: the members it touched were healthy.
#[test]
fn scenario_restarting_healthy_etcd_members_is_a_false_positive() {
    docker::require_sandbox_image();
    docker::require_images(&[docker::ETCD_IMAGE]);
    docker::compose_command();
    let (report, code) = run_wrong("harmful-change", &["etcd-member-stopped"]);
    assert_eq!(code, Some(1), "{report:#}");
    let case = &report["cases"][0];
    assert!(case["error"].is_null(), "{case:#}");
    assert_eq!(case["mitigated"], true, "{case:#}");
    assert_eq!(case["durable"], true, "{case:#}");
    assert_eq!(case["scores"]["localised"], true, "{case:#}");
    assert_eq!(case["scores"]["false_positive"], true, "{case:#}");
    assert_eq!(
        case["failures"],
        serde_json::json!(["false-positive"]),
        "{case:#}"
    );
}

/// The optional judge, played by the local model server: it decides the root-cause score from the
/// case's known cause and the report, through the same client (and protocol) as the agent, and
/// its verdict sits beside the keyword match's.
#[tokio::test]
async fn scenario_a_judge_model_decides_the_root_cause_when_asked() {
    use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
    use opslab::incident::{Outcome, Report};
    use opslab_scenario::{Names, judge::Judge};
    let verdict = |matches: bool, reason: &str| Turn::Tool {
        name: "verdict".into(),
        input: serde_json::json!({"root_cause_matches": matches, "reason": reason}),
        text: None,
    };
    let fake = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            verdict(true, "A disk out of room is a full volume."),
            verdict(false, "A database quota is not a full volume."),
            Turn::Text("It matches, I think.".into()),
        ],
    )
    .await;
    let base_url = fake.base_url();
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("test-key".to_string()),
        "ANTHROPIC_BASE_URL" => Some(base_url.clone()),
        _ => None,
    };
    let judge = Judge::from_env("judge-1".into(), env).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let case = opslab_scenario::load(&root.join("scenarios/etcd-member-disk-full")).unwrap();
    let names = Names::new("j");
    let report = |root_cause: &str| Report {
        outcome: Outcome::Resolved,
        summary: "etcd2 kept exiting; it runs again.".into(),
        root_cause: root_cause.into(),
        actions: vec![],
        verification: String::new(),
    };
    // Other words than the case's keywords: the keyword match misses it, the judge does not.
    let paraphrase = report("etcd2's disk ran out of room because of a leftover backup file.");
    let keyword = opslab_scenario::score::matches_mechanism(&case, &paraphrase.root_cause);
    assert!(!keyword);
    let first = judge
        .verdict(&case, &names, &paraphrase, Some(keyword))
        .await;
    assert_eq!(first.root_cause, Some(true), "{first:?}");
    assert_eq!(first.keyword_root_cause, Some(false));
    assert_eq!(first.model, "judge-1");
    assert!(first.input_tokens > 0 && first.error.is_none(), "{first:?}");
    let quota = report("etcd2's database exceeded its space quota.");
    let second = judge.verdict(&case, &names, &quota, Some(false)).await;
    assert_eq!(second.root_cause, Some(false), "{second:?}");
    assert_eq!(second.reason, "A database quota is not a full volume.");
    // An answer without the verdict tool is no verdict: the keyword score stands, and why is kept.
    let third = judge.verdict(&case, &names, &paraphrase, Some(false)).await;
    assert_eq!(third.root_cause, None);
    assert!(
        third
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("verdict tool"),
        "{third:?}"
    );
    // What the judge was asked: the known cause and the report's, with the verdict tool offered.
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let asked = &requests[0];
    assert_eq!(asked["model"], "judge-1");
    assert_eq!(asked["tools"][0]["name"], "verdict");
    let question = asked["messages"][0].to_string();
    assert!(question.contains("no space left on device"), "{question}");
    assert!(question.contains("ran out of room"), "{question}");
}

/// Asked for a judge with no model to reach, the run stops at once with what to set, before any
/// stack is made.
#[test]
fn scenario_a_judge_without_a_model_is_refused_before_anything_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "scenario",
            "run",
            "--driver",
            "replay",
            "--judge-model",
            "j",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("--scenarios")
        .arg(root.join("scenarios"))
        .arg("container-stopped")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("the opslab binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--judge-model needs a model") && stderr.contains("ANTHROPIC_API_KEY"),
        "{stderr}"
    );
    assert!(
        !out.path().join("controller.log").exists(),
        "the run went on"
    );
}
