//! The CLI as kubectl users expect it: `get incidents` and its flags, `describe`, `sessions`,
//! `follow`'s waiting and failing, completion, the man page, `--version`, and `controller --help`.
//! Each runs the real binary against a real store: one seeded through the store's own API where
//! the exact rows matter, and one filled by a real controller and session where the failure's
//! reason must come through.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opslab::audit::{
    EventBody, IncidentContent, IncidentRecord, NewSession, Redactor, Store, StoredIncident,
};
use opslab::incident::{ConditionType, Phase};
use serde_json::{Value, json};

use crate::support::controller::{BIN, Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};

/// A store seeded with Incidents, in a folder of its own.
struct Seeded {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
}

impl Seeded {
    async fn new() -> Seeded {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opslab.db");
        let store = Store::open(&path, Redactor::default()).await.unwrap();
        Seeded {
            _dir: dir,
            path,
            store,
        }
    }

    async fn put(&self, record: IncidentRecord) {
        self.store.put_incident(record).await.unwrap();
    }

    /// Runs the CLI on this store, in UTC, with a clean environment for its settings.
    fn run(&self, args: &[&str]) -> Output {
        cli(args).arg("--store").arg(&self.path).output().unwrap()
    }

    /// Runs the CLI; its stdout, failing the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "opslab {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

/// The binary, with times in UTC.
fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("TZ", "UTC")
        .env_remove("OPSLAB_STORE");
    command
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// An Incident as the controller stores it, three days and an hour old.
fn record(namespace: &str, name: &str, labels: Value, status: Value) -> IncidentRecord {
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(73);
    IncidentRecord {
        namespace: namespace.into(),
        name: name.into(),
        source: "files".into(),
        content: IncidentContent::Incident(StoredIncident {
            uid: format!("uid-{namespace}-{name}"),
            generation: 1,
            spec_hash: String::new(),
            incident: json!({
            "apiVersion": "opslab.dev/v1alpha1",
            "kind": "Incident",
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                "creationTimestamp": created.to_string(), "labels": labels,
            },
            "spec": {"title": format!("{name} is down"), "severity": "high"},
            "status": status,
            }),
        }),
        updated_at: jiff::Timestamp::now(),
    }
}

fn failed_status() -> Value {
    json!({
        "phase": "Failed", "attempt": 1, "sessionId": "s-auth", "commands": 0,
        "conditions": [
            condition("Valid", "True", "Valid", "the spec is valid"),
            condition("SessionActive", "False", "ModelApiFailed", "HTTP 401 authentication_error: invalid x-api-key"),
            condition("Resolved", "False", "ModelApiFailed", ""),
        ],
    })
}

fn resolved_status() -> Value {
    json!({
        "phase": "Resolved", "attempt": 1, "sessionId": "s-fixed", "commands": 4,
        "conditions": [
            condition("Valid", "True", "Valid", "the spec is valid"),
            condition("SessionActive", "False", "Reported", "the session ended: Resolved"),
            condition("Resolved", "True", "Reported", "restarted redis"),
        ],
    })
}

fn queued_status() -> Value {
    json!({
        "phase": "Queued", "attempt": 1, "commands": 0,
        "conditions": [
            condition("Valid", "True", "Valid", "the spec is valid"),
            condition("SessionActive", "False", "Queued", "waiting for a free session slot (4 sessions running)"),
            condition("Resolved", "Unknown", "Queued", ""),
        ],
    })
}

/// Three Incidents in `default`, one in `ops`, and a manifest problem.
async fn seeded() -> Seeded {
    let seeded = Seeded::new().await;
    seeded
        .put(record(
            "default",
            "auth",
            json!({"team": "api", "tier": "back"}),
            failed_status(),
        ))
        .await;
    seeded
        .put(record(
            "default",
            "fixed",
            json!({"team": "web"}),
            resolved_status(),
        ))
        .await;
    seeded
        .put(record("default", "waiting", json!({}), queued_status()))
        .await;
    seeded
        .put(record(
            "ops",
            "disk",
            json!({"team": "web", "tier": "back"}),
            queued_status(),
        ))
        .await;
    seeded
        .put(IncidentRecord {
            namespace: String::new(),
            name: "bad.yaml#1".into(),
            source: "files".into(),
            content: IncidentContent::Problem {
                error: "bad.yaml: document 1: missing field `title`".into(),
            },
            updated_at: jiff::Timestamp::now(),
        })
        .await;
    seeded
}

/// Each flag of `get incidents`, on its whole output.
#[tokio::test]
async fn cli_get_incidents_flags_shape_the_listing() {
    let seeded = seeded().await;

    // kubectl's default: the `default` namespace, no NAMESPACE column; the problem under it.
    assert_eq!(
        seeded.ok(&["get", "incidents"]),
        "\
NAME         PHASE      SEVERITY   COMMANDS   REASON            AGE
auth         Failed     high       0          ModelApiFailed    3d
fixed        Resolved   high       4          -                 3d
waiting      Queued     high       0          -                 3d
bad.yaml#1   Invalid    -          -          InvalidManifest   -

Invalid manifests:
  bad.yaml#1: bad.yaml: document 1: missing field `title`
"
    );
    assert_eq!(
        seeded.ok(&["get", "incidents", "-A", "--no-headers"]),
        "\
default     auth         Failed     high       0          ModelApiFailed    3d
default     fixed        Resolved   high       4          -                 3d
default     waiting      Queued     high       0          -                 3d
ops         disk         Queued     high       0          -                 3d
-           bad.yaml#1   Invalid    -          -          InvalidManifest   -
"
    );
    // Without headers the problems go to stderr, so that the rows alone reach a script.
    let output = seeded.run(&["get", "inc", "-A", "--no-headers"]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Invalid manifests:"),
        "{output:?}"
    );
    assert_eq!(
        seeded.ok(&["get", "incidents", "-n", "ops", "-o", "wide"]),
        "\
NAME         PHASE     SEVERITY   COMMANDS   REASON            AGE   SESSION   MESSAGE
disk         Queued    high       0          Queued            3d    -         waiting for a free session slot (4 sessions running)
bad.yaml#1   Invalid   -          -          InvalidManifest   -     -         bad.yaml: document 1: missing field `title`
"
    );
    assert_eq!(
        seeded.ok(&["get", "incidents", "-o", "wide", "--no-headers", "auth"]),
        "auth   Failed   high       0          ModelApiFailed   3d    s-auth    HTTP 401 authentication_error: invalid x-api-key\n"
    );

    // Label selectors, and names for scripts.
    let names = |args: &[&str]| {
        let mut all = vec!["get", "incidents", "-o", "name"];
        all.extend(args);
        seeded.ok(&all)
    };
    assert_eq!(
        names(&["-A", "-l", "team=web"]),
        "incident.opslab.dev/fixed\nincident.opslab.dev/disk\n"
    );
    assert_eq!(
        names(&["-A", "-l", "team!=web"]),
        "incident.opslab.dev/auth\nincident.opslab.dev/waiting\n"
    );
    assert_eq!(
        names(&["-A", "-l", "tier"]),
        "incident.opslab.dev/auth\nincident.opslab.dev/disk\n"
    );
    assert_eq!(
        names(&["-l", "!tier"]),
        "incident.opslab.dev/fixed\nincident.opslab.dev/waiting\n"
    );
    assert_eq!(
        names(&["-A", "-l", "team=web,tier=back"]),
        "incident.opslab.dev/disk\n"
    );
    assert_eq!(
        names(&[]),
        "incident.opslab.dev/auth\nincident.opslab.dev/fixed\nincident.opslab.dev/waiting\n"
    );
    // A selector matching nothing: nothing on stdout, kubectl's note on stderr.
    let output = seeded.run(&["get", "incidents", "-l", "team=nobody"]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "No incidents found in namespace default.\n"
    );

    // JSON and YAML: a List of the selected Incidents, or the one named.
    let list: Value =
        serde_json::from_str(&seeded.ok(&["get", "incidents", "-A", "-o", "json"])).unwrap();
    let listed: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["auth", "fixed", "waiting", "disk"]);
    assert_eq!(list["errors"][0]["manifest"], "bad.yaml#1");
    let one: Value =
        serde_json::from_str(&seeded.ok(&["get", "incidents", "auth", "-o", "json"])).unwrap();
    assert_eq!(one["status"]["conditions"][1]["reason"], "ModelApiFailed");
    let yaml = seeded.ok(&["get", "incidents", "-n", "ops", "-o", "yaml"]);
    let parsed: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(parsed["kind"], "List");
    assert_eq!(parsed["items"][0]["metadata"]["name"], "disk");

    // Mistakes say what is wrong.
    let error = |args: &[&str]| {
        let output = seeded.run(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    };
    assert!(
        error(&["get", "incidents", "nosuch"])
            .contains("no Incident nosuch in namespace default in the store"),
    );
    assert!(error(&["get", "incidents", "-l", "team in (a,b)"]).contains("set-based requirements"));
    assert!(error(&["get", "incidents", "-A", "-n", "ops"]).contains("cannot be used with"));
}

/// A `get incidents -w` process, its stdout read line by line.
struct Watching {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watching {
    fn start(seeded: &Seeded, args: &[&str]) -> Watching {
        let mut child = cli(&["get", "incidents", "-w", "--store"])
            .arg(&seeded.path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watching {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn next(&self, what: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("watch printed no {what}"))
    }

    /// Stops the watch; fails if it printed anything not read yet.
    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let extra: Vec<String> = self.lines.try_iter().collect();
        assert!(extra.is_empty(), "printed more than the changes: {extra:?}");
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `get incidents -w` prints the listing, then each Incident again when it changes, lined up.
#[tokio::test]
async fn cli_get_incidents_watch_prints_each_change() {
    let seeded = seeded().await;
    let watch = Watching::start(&seeded, &[]);
    // The header, four rows, and the manifest problem under them.
    let first: Vec<String> = (0..8).map(|_| watch.next("listing")).collect();
    assert_eq!(
        first[0],
        "NAME         PHASE      SEVERITY   COMMANDS   REASON            AGE"
    );
    assert!(first[3].starts_with("waiting      Queued "), "{first:?}");
    let names = Watching::start(&seeded, &["-A", "-o", "name"]);
    let listed: Vec<String> = (0..4).map(|_| names.next("name")).collect();
    assert_eq!(
        listed,
        [
            "incident.opslab.dev/auth",
            "incident.opslab.dev/fixed",
            "incident.opslab.dev/waiting",
            "incident.opslab.dev/disk"
        ]
    );

    // The queued Incident starts; the others do not change and are not printed again.
    seeded
        .put(record(
            "default",
            "waiting",
            json!({}),
            json!({"phase": "Investigating", "attempt": 1, "sessionId": "s-w", "commands": 1}),
        ))
        .await;
    assert_eq!(
        watch.next("change"),
        "waiting      Investigating   high       1          -                 3d"
    );
    assert_eq!(names.next("change"), "incident.opslab.dev/waiting");
    // An Incident in another namespace is not watched without -A.
    seeded
        .put(record("ops", "disk", json!({}), resolved_status()))
        .await;
    assert_eq!(names.next("change"), "incident.opslab.dev/disk");
    seeded
        .put(record("default", "new", json!({}), queued_status()))
        .await;
    assert_eq!(
        watch.next("new Incident"),
        "new          Queued          high       0          -                 3d"
    );
    assert_eq!(names.next("new Incident"), "incident.opslab.dev/new");
    watch.stop();
    names.stop();
}

/// `follow` fails at once, naming the store, when the store knows no such Incident. (The bound only
/// tells "at once" from "waits forever" on a loaded machine; it is no speed figure.)
#[tokio::test]
async fn cli_follow_fails_at_once_on_an_unknown_name() {
    let seeded = seeded().await;
    let started = Instant::now();
    let output = seeded.run(&["follow", "typo"]);
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: no session \"typo\" and no Incident default/typo in the store at {} \
             (`opslab get incidents -A` lists the Incidents it knows)\n",
            seeded.path.display()
        )
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");

    // An Incident that ended without a session will not get one: it fails at once too, saying why.
    seeded
        .put(record(
            "default",
            "invalid",
            json!({}),
            json!({"phase": "Failed", "conditions": [
                condition("Valid", "False", "InvalidSpec", "spec.environment.networks[0]: empty"),
            ]}),
        ))
        .await;
    let started = Instant::now();
    let output = seeded.run(&["follow", "invalid"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: Incident default/invalid is Failed (InvalidSpec): spec.environment.networks[0]: \
         empty; no session will start until its spec changes\n"
    );
}

/// `sessions --incident` and `describe` on an Incident without sessions, and on one the store does
/// not know.
#[tokio::test]
async fn cli_sessions_and_describe_name_what_they_cannot_find() {
    let seeded = seeded().await;
    let output = seeded.run(&["sessions", "--incident", "waiting"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "No sessions found.\n"
    );
    let output = seeded.run(&["sessions", "--incident", "ops/typo"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: no Incident ops/typo and no session of it in the store at {}\n",
            seeded.path.display()
        )
    );
    let output = seeded.run(&["describe", "incident", "typo", "-n", "ops"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: no Incident ops/typo in the store at {} (`opslab get incidents -A` lists the \
             Incidents it knows)\n",
            seeded.path.display()
        )
    );
    let described = seeded.ok(&["describe", "incident", "ops/disk"]);
    for expected in [
        "Namespace:      ops\n",
        "Labels:         team=web, tier=back\n",
        "  Reason:       Queued\n",
        "  Message:      waiting for a free session slot (4 sessions running)\n",
        "Last commands:  <none>\n",
        "Sessions:       <none>\n",
    ] {
        assert!(
            described.contains(expected),
            "describe lacks {expected:?}:\n{described}"
        );
    }
}

/// A known Incident with no session yet is waited for, saying so, until `--timeout`; a session
/// that does not end is followed until `--timeout` too.
#[tokio::test]
async fn cli_follow_waits_saying_for_what_and_honours_timeout() {
    let seeded = seeded().await;
    let started = Instant::now();
    let output = seeded.run(&["follow", "waiting", "--timeout", "1s"]);
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "waiting for the first session of default/waiting…\n\
         error: gave up after 1s (--timeout): no session of default/waiting has started\n"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "took {elapsed:?}"
    );

    // A session that runs on: its events so far, then the timeout.
    seeded
        .store
        .create_session(NewSession {
            id: "s-ops".into(),
            incident_uid: "uid-ops-disk".into(),
            incident_namespace: "ops".into(),
            incident_name: "disk".into(),
            attempt: 1,
            generation: 1,
        })
        .await
        .unwrap();
    seeded
        .store
        .append(
            "s-ops",
            EventBody::CommandStarted {
                tool_use_id: "t1".into(),
                command: "df -h".into(),
                reasoning: "is the disk full".into(),
                timeout_seconds: 60,
            },
        )
        .await
        .unwrap();
    let started = Instant::now();
    let output = seeded.run(&["follow", "disk", "-n", "ops", "--timeout", "2"]);
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "took {elapsed:?}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("$ df -h"), "{stdout}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: gave up after 2s (--timeout): session s-ops has not ended\n"
    );
    let bad = seeded.run(&["follow", "disk", "--timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a duration"));
}

/// A session whose model API refuses the key: the reason and its message reach `get incidents`,
/// `-o wide`, `sessions` and `describe`, as the status's conditions say them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_shows_why_a_session_failed() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo first", "look around"),
            Turn::report("resolved", "fixed it"),
            Turn::Fault(Fault::Status {
                code: 401,
                retry_after: None,
                body: Some(
                    r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#
                        .into(),
                ),
            }),
        ],
    )
    .await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    controller.write_manifest("ok.yaml", &manifest("ok", "works", ""));
    controller.wait_for_phase("ok", Phase::Resolved, Duration::from_secs(120));
    controller.write_manifest("auth.yaml", &manifest("auth", "refused", ""));
    let incident = controller.wait_for_phase("auth", Phase::Failed, Duration::from_secs(120));
    let status = incident.status.unwrap();
    let active = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == ConditionType::SessionActive)
        .unwrap();
    assert_eq!(active.reason, "ModelApiFailed");
    assert!(active.message.contains("invalid x-api-key"), "{active:?}");
    let run = |args: &[&str]| {
        let output = cli(args)
            .arg("--store")
            .arg(controller.store())
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };

    let table = run(&["get", "incidents", "--no-headers"]);
    let row = |name: &str, table: &str| -> Vec<String> {
        table
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("auth", &table)[..5],
        ["auth", "Failed", "high", "0", "ModelApiFailed"]
    );
    assert_eq!(row("ok", &table)[..5], ["ok", "Resolved", "high", "1", "-"]);
    let wide = run(&["get", "incidents", "-o", "wide", "--no-headers", "auth"]);
    let session_id = status.session_id.clone().unwrap();
    assert!(
        wide.trim_end()
            .ends_with(&format!("{session_id}   {}", active.message)),
        "{wide}"
    );

    let sessions = run(&["sessions", "--incident", "auth"]);
    let lines: Vec<&str> = sessions.lines().collect();
    assert_eq!(lines.len(), 2, "{sessions}");
    assert!(lines[0].starts_with("SESSION "), "{sessions}");
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        columns[..5],
        [
            session_id.as_str(),
            "default/auth",
            "1",
            "Failed",
            "ModelApiFailed"
        ]
    );
    // -o wide ends with the session's message, the cause the store keeps.
    let stored: Value =
        serde_json::from_str(&run(&["sessions", "--incident", "auth", "-o", "json"])).unwrap();
    let message = stored[0]["message"].as_str().unwrap();
    assert!(message.contains("invalid x-api-key"), "{stored}");
    let wide = run(&[
        "sessions",
        "--incident",
        "auth",
        "-o",
        "wide",
        "--no-headers",
    ]);
    assert!(
        wide.trim_end().ends_with(&format!(" UTC   {message}")),
        "{wide}"
    );
    // --limit keeps the newest; -o name prints ids.
    assert_eq!(
        run(&["sessions", "--limit", "1", "-o", "name"]),
        format!("{session_id}\n")
    );
    assert_eq!(run(&["sessions", "-o", "name"]).lines().count(), 2);

    let described = run(&["describe", "incident", "auth"]);
    for condition in &status.conditions {
        let line = described
            .lines()
            .find(|line| {
                line.trim_start()
                    .starts_with(&format!("{} ", condition.type_))
            })
            .unwrap_or_else(|| panic!("no condition {}:\n{described}", condition.type_));
        let message = if condition.message.is_empty() {
            "-"
        } else {
            condition.message.as_str()
        };
        let expected: Vec<&str> = [
            condition.type_.as_str(),
            condition.status.as_str(),
            &condition.reason,
        ]
        .into_iter()
        .collect();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[..3], expected, "{described}");
        assert!(line.trim_end().ends_with(message), "{line}");
    }
    for expected in [
        "Name:           auth\n",
        "Namespace:      default\n",
        "  Title:        refused\n",
        "  Phase:        Failed\n",
        "  Reason:       ModelApiFailed\n",
        "invalid x-api-key",
        &format!("  Session:      {session_id}\n"),
        "Report:         <none>\n",
        "Events:         not in the store",
    ] {
        assert!(
            described.contains(expected),
            "describe lacks {expected:?}:\n{described}"
        );
    }

    // The resolved one: its last command, its report, and times with date and zone.
    let described = run(&["describe", "inc", "default/ok"]);
    for expected in [
        "exit 0 in ",
        "echo first",
        "  Outcome:      resolved\n",
        "  Summary:      fixed it\n",
        "    - ran the scripted commands\n",
        " UTC",
    ] {
        assert!(
            described.contains(expected),
            "describe lacks {expected:?}:\n{described}"
        );
    }
    let story = run(&["show", "ok"]);
    let started = story
        .lines()
        .find(|line| line.starts_with("Started "))
        .unwrap();
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    assert!(
        started.starts_with(&format!("Started {date} ")) && started.contains(" UTC, finished "),
        "{started}"
    );
}

/// Completion scripts for each shell, and a man page that `man` renders.
#[test]
fn cli_completion_and_man_page() {
    let text = |args: &[&str]| {
        let output = cli(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = text(&["completion", "bash"]);
    assert!(bash.contains("_opslab() {"), "{bash}");
    assert!(bash.contains("complete -F _opslab"), "{bash}");
    // bash loads it, and it completes the subcommands.
    let loaded = Command::new("bash")
        .args([
            "-c",
            "source /dev/stdin; COMP_WORDS=(opslab des); COMP_CWORD=1; _opslab opslab des opslab; echo ${COMPREPLY[@]}",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bash.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&loaded.stdout).trim(), "describe");
    assert!(text(&["completion", "zsh"]).starts_with("#compdef opslab\n"));
    let fish = text(&["completion", "fish"]);
    assert!(fish.contains("complete -c opslab"), "{fish}");
    assert!(fish.contains("-l all-namespaces"), "{fish}");

    let man = text(&["man"]);
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq \\(aq"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains(".TH opslab 1"), "{man}");
    // Rendered by man itself, as a person would read it.
    let mut rendered = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man runs");
    {
        use std::io::Write;
        rendered
            .stdin
            .take()
            .unwrap()
            .write_all(man.as_bytes())
            .unwrap();
    }
    let rendered = rendered.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&rendered.stdout);
    for expected in [
        "NAME",
        "opslab - An autonomous incident responder",
        "SUBCOMMANDS",
        "describe",
    ] {
        assert!(
            page.contains(expected),
            "the man page lacks {expected:?}:\n{page}"
        );
    }
}

/// `--version` names the commit of the work tree the binary was built from.
#[test]
fn cli_version_names_the_commit() {
    let output = cli(&["--version"]).output().unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run in a git work tree");
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    let commit = version
        .trim_end()
        .strip_prefix(&format!("opslab {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version:?}"));
    assert!(
        commit.len() >= 7 && head.starts_with(commit),
        "--version says {commit}, HEAD is {head}"
    );
}

/// `controller --help` reads in groups: every flag under a heading of its own kind.
#[test]
fn cli_controller_help_groups_its_flags() {
    let output = cli(&["controller", "-h"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let headings: Vec<&str> = help
        .lines()
        .filter(|line| !line.starts_with(' ') && line.ends_with(':'))
        .collect();
    assert_eq!(
        headings,
        [
            "Options:",
            "Source:",
            "Leader election (kube mode):",
            "The agent's Kubernetes access (kube mode):",
            "Store:",
            "Model API:",
            "Budgets:",
            "HTTP:",
            "Sandbox:",
            "Docker access (sandboxes):",
            "Redaction:",
            "Notifications:",
            "Alert intake:",
        ],
        "{help}"
    );
    // Only the global and help flags stay under Options.
    let section = |heading: &str| -> Vec<String> {
        help.split(&format!("\n{heading}\n"))
            .nth(1)
            .unwrap_or_default()
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                line.trim_start()
                    .strip_prefix("--")
                    .or_else(|| line.trim_start().strip_prefix("-h, --"))
            })
            .map(|flag| flag.split([' ', '=']).next().unwrap().to_string())
            .collect()
    };
    assert_eq!(section("Options:"), ["log-format", "help"], "{help}");
    assert_eq!(
        section("Budgets:"),
        [
            "max-sessions",
            "max-turns",
            "session-timeout-seconds",
            "command-timeout-seconds",
            "shutdown-grace-seconds",
            "max-tokens",
            "max-cost-usd",
            "cost-table"
        ],
        "{help}"
    );
    assert_eq!(section("Store:"), ["store", "store-durability"], "{help}");
}
