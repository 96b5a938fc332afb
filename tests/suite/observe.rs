//! Operating opslab: metrics scraped by a real Prometheus, health, budgets, `follow`, and
//! `audit verify`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opslab::incident::{ConditionType, Phase};

use crate::support::controller::{BIN, Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn get(url: &str, accept: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, response.text().await.unwrap())
}

/// The value of one sample line (`name{labels} value`) in a text exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn require_promtool() {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests need promtool and prometheus: apt-get install prometheus"
    );
}

/// A session with a success, a failure and a timeout, and the metrics that follow from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_every_counter_moves() {
    docker::require_sandbox_image();
    require_promtool();
    let script = vec![
        Turn::shell("true", "a success"),
        Turn::shell("false", "a failure"),
        Turn::shell("sleep 30", "a timeout"),
        Turn::report("resolved", "done"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--model", "claude-sonnet-4-5")
            .arg("--command-timeout-seconds", 1),
    );
    let base = controller.http_url();
    controller.write_manifest("m.yaml", &manifest("m", "metrics", ""));
    controller.wait_for_phase("m", Phase::Resolved, TIMEOUT);

    assert_eq!(get(&format!("{base}/healthz"), "*/*").await.0, 200);
    let (status, _, body) = get(&format!("{base}/readyz"), "*/*").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let (status, content_type, text) = get(&format!("{base}/metrics"), "text/plain").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let at_least = |series: &str, minimum: f64| {
        let value =
            sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
        assert!(
            value >= minimum,
            "{series} = {value}, expected at least {minimum}"
        );
    };
    at_least("opslab_reconciles_total{result=\"ok\"}", 1.0);
    at_least("opslab_reconcile_duration_seconds_count", 1.0);
    at_least(
        "opslab_sessions_total{phase=\"Resolved\",reason=\"Reported\"}",
        1.0,
    );
    at_least("opslab_session_duration_seconds_count", 1.0);
    at_least("opslab_commands_total{exit_class=\"success\"}", 1.0);
    at_least("opslab_commands_total{exit_class=\"failure\"}", 1.0);
    at_least("opslab_commands_total{exit_class=\"timeout\"}", 1.0);
    at_least("opslab_command_duration_seconds_count", 3.0);
    at_least(
        "opslab_llm_requests_total{provider=\"anthropic\",model=\"claude-sonnet-4-5\",status=\"200\"}",
        4.0,
    );
    at_least(
        "opslab_llm_tokens_total{provider=\"anthropic\",model=\"claude-sonnet-4-5\",direction=\"input\"}",
        400.0,
    );
    at_least(
        "opslab_llm_cost_usd_total{provider=\"anthropic\",model=\"claude-sonnet-4-5\"}",
        0.002,
    );
    assert_eq!(
        sample(&text, "opslab_incidents{phase=\"Resolved\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "opslab_sessions_active"), Some(0.0));
    chart_queries_name_exported_series(&text);

    // OpenMetrics to those who ask for it.
    let (_, content_type, openmetrics) = get(
        &format!("{base}/metrics"),
        "application/openmetrics-text;version=1.0.0",
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));

    // The cost reaches the status too.
    let status = controller.incident("m").unwrap().status.unwrap();
    assert!(
        (status.cost_usd - 4.0 * 0.0006).abs() < 1e-9,
        "{}",
        status.cost_usd
    );
}

/// The chart's PrometheusRule and Grafana dashboard query only series the controller exports, by
/// labels those series carry (besides those Prometheus adds on scraping: job, namespace, pod).
fn chart_queries_name_exported_series(text: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/opslab");
    let metric = regex::Regex::new(r"opslab_[a-z_]+").unwrap();
    let by = regex::Regex::new(r"by \(([a-z_, ]+)\)").unwrap();
    let matcher = regex::Regex::new(r"(opslab_[a-z_]+)\{([^}]*)\}").unwrap();
    let label = regex::Regex::new(r"([a-z_]+)\s*(=~|!~|!=|=)").unwrap();
    let added_by_prometheus = ["job", "namespace", "pod", "le"];
    for file in ["templates/prometheusrule.yaml", "dashboards/opslab.json"] {
        let queries = std::fs::read_to_string(root.join(file)).unwrap();
        let names: std::collections::BTreeSet<&str> =
            metric.find_iter(&queries).map(|m| m.as_str()).collect();
        assert!(names.len() >= 3, "{file}: {names:?}");
        for name in &names {
            let samples: Vec<&str> = text
                .lines()
                .filter(|line| {
                    line.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
                .collect();
            assert!(
                !samples.is_empty(),
                "{file} queries {name}, which is not exported:\n{text}"
            );
        }
        // Each label a query selects or groups by is one its series carry.
        let mut used: Vec<(String, String)> = Vec::new();
        for found in matcher.captures_iter(&queries) {
            for each in label.captures_iter(&found[2]) {
                used.push((found[1].to_string(), each[1].to_string()));
            }
        }
        for line in queries.lines() {
            if let Some(name) = metric.find(line) {
                for group in by.captures_iter(line) {
                    for each in group[1].split(',') {
                        used.push((name.as_str().to_string(), each.trim().to_string()));
                    }
                }
            }
        }
        for (name, label) in used {
            if added_by_prometheus.contains(&label.as_str()) {
                continue;
            }
            let carried = text.lines().any(|line| {
                line.strip_prefix(&name).is_some_and(|rest| {
                    rest.starts_with('{') && rest.contains(&format!("{label}=\""))
                })
            });
            assert!(carried, "{file}: {name} has no label {label}:\n{text}");
        }
    }
}

/// A failed reconcile is counted by its error kind.
#[test]
fn metrics_reconcile_failures_are_counted_by_kind() {
    let metrics = opslab::metrics::Metrics::new();
    metrics.reconciled(Duration::from_millis(2), Some("store"));
    let text = metrics.prometheus_text();
    assert_eq!(
        sample(&text, "opslab_reconcile_failures_total{error=\"store\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "opslab_reconciles_total{result=\"error\"}"),
        Some(1.0)
    );
}

/// A free port on loopback for a server the test starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus server scrapes the controller; the target is up and the counters are queryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_a_real_prometheus_scrapes_opslab() {
    docker::require_sandbox_image();
    require_promtool();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo scraped", "one command"),
            Turn::report("resolved", "done"),
        ],
    )
    .await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    let target = controller
        .http_url()
        .trim_start_matches("http://")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: opslab\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (apt-get install prometheus)"),
    );
    controller.write_manifest("p.yaml", &manifest("p", "scrape me", ""));
    controller.wait_for_phase("p", Phase::Resolved, TIMEOUT);

    let api = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = |expression: &'static str| {
        let api = api.clone();
        async move {
            let url = format!("{api}/query?query={expression}");
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            json["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        }
    };
    loop {
        let up = query("up{job=\"opslab\"}").await;
        let commands = query("sum(opslab_commands_total)").await;
        let sessions = query("sum(opslab_sessions_total)").await;
        if up == Some(1.0) && commands >= Some(1.0) && sessions >= Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see opslab: up={up:?} commands={commands:?} sessions={sessions:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A budget reached mid-session stops it with the right status, and no event is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_tokens_and_cost_stop_a_session_mid_way() {
    docker::require_sandbox_image();
    let shells: Vec<Turn> = (0..5)
        .map(|i| Turn::shell(&format!("echo {i}"), "step"))
        .collect();
    let llm = FakeLlm::start(Protocol::Anthropic, shells.clone()).await;
    // 120 tokens a turn: the fourth call would pass 300.
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--max-tokens", 300),
    );
    controller.write_manifest("t.yaml", &manifest("t", "token budget", ""));
    let incident = controller.wait_for_phase("t", Phase::Unresolved, TIMEOUT);
    let status = incident.status.unwrap();
    let active = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::SessionActive)
        .unwrap();
    assert_eq!(active.reason, "TokenBudgetExhausted");
    assert_eq!(
        (status.turns, status.commands, status.tokens.total()),
        (3, 3, 360)
    );
    let events = controller.events("t");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "session_started",
            "sandbox_ready",
            "llm_response",
            "command_started",
            "command_finished",
            "llm_response",
            "command_started",
            "command_finished",
            "llm_response",
            "command_started",
            "command_finished",
            "session_finished"
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert_eq!(llm.remaining(), 2);

    // A spend budget in the Incident itself: one turn of claude-sonnet-4-5 at 100 + 20 tokens
    // costs $0.0006, over the $0.0005 asked for.
    let llm = FakeLlm::start(Protocol::Anthropic, shells).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--model", "claude-sonnet-4-5"),
    );
    controller.write_manifest(
        "c.yaml",
        &manifest("c", "cost budget", "  agent:\n    maxCostUsd: 0.0005\n"),
    );
    let incident = controller.wait_for_phase("c", Phase::Unresolved, TIMEOUT);
    let status = incident.status.unwrap();
    let active = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::SessionActive)
        .unwrap();
    assert_eq!(active.reason, "CostBudgetExhausted");
    assert_eq!(status.turns, 1);
    assert!(
        (status.cost_usd - 0.0006).abs() < 1e-9,
        "{}",
        status.cost_usd
    );
}

/// `opslab follow NAME` on the controller's store, its output lines collected as they come.
fn spawn_follow(
    controller: &Controller,
    name: &str,
) -> (
    std::process::Child,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    let mut follow = Command::new(BIN)
        .args(["follow", name, "--store"])
        .arg(controller.store())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    (follow, lines, reader)
}

/// With `--stream`, `follow` shows the model's answer as it is written, before the turn's event is
/// stored (from the session's draft in the store); a secret in it never shows, not even cut off
/// half-way as the stream delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_streamed_answer_as_it_is_written() {
    docker::require_sandbox_image();
    const SECRET: &str = "sk-ant-api03-STREAMEDSECRET0123456789";
    const BEFORE: &str = "I will look at the application log first; it holds the key ";
    const AFTER: &str = " which must be rotated at once, and then I will check the API again.";
    let text = format!("{BEFORE}{SECRET}{AFTER}");
    // The fake server sends a text in two halves: the first ends inside the secret.
    let middle = text.len() / 2;
    assert!((BEFORE.len() + 4..BEFORE.len() + SECRET.len() - 4).contains(&middle));
    let script = vec![
        Turn::Slowly {
            turn: Box::new(Turn::Tool {
                name: "shell".into(),
                input: serde_json::json!({"command": "true", "reasoning": "look"}),
                text: Some(text),
            }),
            // About 40 pieces of the events, 300 ms apart: the answer takes several seconds.
            pieces: 40,
            gap: Duration::from_millis(300),
        },
        Turn::report("resolved", "streamed"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start_with_env(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"),
        &[("OPSLAB_STREAM", "true")],
    );
    controller.http_url();
    controller.write_manifest("s.yaml", &manifest("s", "stream me", ""));
    let (mut follow, lines, reader) = spawn_follow(&controller, "s");
    let exit = follow.wait().unwrap();
    reader.join().unwrap();
    assert!(exit.success());
    let lines = lines.lock().unwrap().clone();
    let text = lines.join("\n");
    let position = |what: &str| lines.iter().position(|line| line.contains(what));
    let drafted = position("~ I will look at the application log first")
        .unwrap_or_else(|| panic!("follow showed no draft of the answer:\n{text}"));
    let stored = position("model turn 1 (").expect("the turn's event");
    assert!(
        drafted < stored,
        "the draft showed before the turn's event was stored:\n{text}"
    );
    assert!(
        lines[..stored]
            .iter()
            .any(|line| line.contains("~ model turn 1, as it is written")),
        "{text}"
    );
    assert!(
        !text.contains("STREAMED"),
        "no part of the secret shows, in a draft or in the event:\n{text}"
    );
    assert!(text.contains("session finished: Resolved"), "{text}");
}

/// `opslab follow` shows each command while the session still runs, and ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_a_running_session() {
    docker::require_sandbox_image();
    let script = vec![
        Turn::shell("sleep 1; echo first", "the first step"),
        Turn::shell("sleep 2; echo second", "the second step"),
        Turn::report("resolved", "followed"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    // The store exists once the controller serves; follow starts before the session does.
    controller.http_url();
    controller.write_manifest("f.yaml", &manifest("f", "follow me", ""));
    let (mut follow, lines, reader) = spawn_follow(&controller, "f");
    // The second command shows up while the session is still investigating.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("$ sleep 2; echo second"));
        if seen {
            let phase = controller
                .incident("f")
                .and_then(|i| i.status)
                .map(|s| s.phase);
            assert_eq!(phase, Some(Phase::Investigating), "follow was not live");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follow never showed the command: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit = follow.wait().unwrap();
    reader.join().unwrap();
    assert!(exit.success());
    let text = lines.lock().unwrap().join("\n");
    for expected in [
        "why: the first step",
        "| first",
        "| second",
        "report: resolved",
        "session finished: Resolved",
    ] {
        assert!(
            text.contains(expected),
            "follow lacks {expected:?}:\n{text}"
        );
    }
}

/// `opslab audit verify` finds an edited, a deleted, two swapped events and a cut-off tail, and
/// names the first broken link of each.
#[tokio::test]
async fn audit_verify_names_the_first_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    crate::support::store::sqlite_with_sessions(
        &path,
        &["intact", "edited", "deleted", "swapped", "cut"],
    )
    .await;
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;
         UPDATE events SET body = replace(body, 'echo 3', 'rm -rf /') WHERE session_id = 'edited' AND seq = 3;
         DELETE FROM events WHERE session_id = 'deleted' AND seq = 2;
         UPDATE events SET seq = -1 WHERE session_id = 'swapped' AND seq = 4;
         UPDATE events SET seq = 4 WHERE session_id = 'swapped' AND seq = 5;
         UPDATE events SET seq = 5 WHERE session_id = 'swapped' AND seq = -1;
         DELETE FROM events WHERE session_id = 'cut' AND seq > 3;",
    )
    .unwrap();
    // The cut is hidden from the store's own rows: the session's head is rewritten to match.
    let head: String = raw
        .query_row(
            "SELECT hash FROM events WHERE session_id = 'cut' AND seq = 3",
            [],
            |row| row.get(0),
        )
        .unwrap();
    raw.execute(
        "UPDATE sessions SET head_seq = 3, head_hash = ?1 WHERE id = 'cut'",
        [head],
    )
    .unwrap();
    drop(raw);

    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--store")
            .arg(&path)
            .output()
            .unwrap()
    };
    let all = run(&["audit", "verify"]);
    assert_eq!(all.status.code(), Some(1));
    let report = String::from_utf8_lossy(&all.stderr).to_string();
    for (session, seq) in [("edited", 3), ("deleted", 2), ("swapped", 4), ("cut", 4)] {
        let line = report
            .lines()
            .find(|line| line.contains(&format!("BROKEN  {session}:")))
            .unwrap_or_else(|| panic!("{session} not reported:\n{report}"));
        assert!(
            line.contains(&format!("first broken link at event {seq}:")),
            "{line}"
        );
    }
    assert!(
        report.contains("4 of 5 audit trails are broken"),
        "{report}"
    );
    let intact = run(&["audit", "verify", "intact"]);
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&intact.stdout),
        "ok      intact (5 events)\n"
    );
}

/// JSON logs: every line about a session carries its incident and session ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_json_carry_incident_and_session_ids() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo logged", "one command"),
            Turn::report("resolved", "done"),
        ],
    )
    .await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--log-format", "json"),
    );
    controller.write_manifest("j.yaml", &manifest("j", "json logs", ""));
    let incident = controller.wait_for_phase("j", Phase::Resolved, TIMEOUT);
    let session_id = incident.status.unwrap().session_id.unwrap();
    let logs = controller.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let session_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| {
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("opslab::session"))
        })
        .collect();
    assert!(session_lines.len() >= 2, "{logs}");
    for line in session_lines {
        assert_eq!(line["span"]["session"], session_id.as_str(), "{line}");
        assert_eq!(line["span"]["incident"], "default/j", "{line}");
    }
}
