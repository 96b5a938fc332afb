//! `docker-compose.yml` as a person runs it: the controller and the demo come up healthy, an
//! Incident filed into the folder is handled, and after `down` and `up` the audit store still holds
//! that session. The model is the scripted fake, reached from the controller's container through
//! `host.docker.internal`. And the README's main command, `scripts/demo`, with no model configured:
//! the demo broken, the stack's real Prometheus sees it and fires its alert, Alertmanager sends it to
//! the controller's intake, which files the Incident, and the controller's scripted replay resolves
//! it; the notification lands in the stack's sink.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

/// One compose project with unique names, taken down with its volumes when dropped.
struct Stack {
    compose: Vec<String>,
    project: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Stack {
    fn run(&self, args: &[&str]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("-f")
            .arg(root.join("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args);
        // Only the model settings the test gives: none of the person's running it.
        for name in MODEL_ENV {
            command.env_remove(name);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("compose runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "compose {args:?} failed: {}{}\ncontroller logs:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&self.run(&["logs", "--tail", "40", "controller"]).stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn incidents(&self) -> std::path::PathBuf {
        self.dir.path().join("incidents")
    }

    /// Waits until `check` passes, or fails with the controller's logs.
    fn wait(&self, what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\ncontroller logs:\n{}",
                String::from_utf8_lossy(&self.run(&["logs", "--tail", "60", "controller"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn healthy(&self, container: &str) -> bool {
        Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", container])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "healthy")
    }

    fn sessions(&self) -> Vec<Value> {
        let output = self.run(&[
            "exec",
            "-T",
            "controller",
            "opslab",
            "sessions",
            "-o",
            "json",
        ]);
        serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "1"]);
        let instance = &self.project;
        for id in docker::containers_with_label(&format!("opslab.dev/instance={instance}")) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        docker::remove_named(&format!("{}-", self.project));
    }
}

/// The controller's image: `OPSLAB_CONTROLLER_IMAGE`, as scripts/build-images and the compose file
/// read it, else `opslab:latest`.
fn controller_image() -> String {
    std::env::var("OPSLAB_CONTROLLER_IMAGE")
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| "opslab:latest".into())
}

fn require_stack_images() {
    let controller = controller_image();
    let mut images = vec![controller.as_str(), docker::SANDBOX_IMAGE];
    images.extend(docker::DEMO_IMAGES);
    images.extend(docker::MONITORING_IMAGES);
    docker::require_images(&images);
}

/// A stack of unique names, in a folder of its own, with no model configured.
fn stack_without_a_model(kind: &str) -> Stack {
    let project = format!(
        "opslab-test-{kind}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incidents")).unwrap();
    let env = vec![
        ("COMPOSE_PROJECT_NAME", project.clone()),
        ("OPSLAB_DEMO", project.clone()),
        ("OPSLAB_INSTANCE", project.clone()),
        (
            "OPSLAB_INCIDENTS_DIR",
            dir.path().join("incidents").display().to_string(),
        ),
        (
            "OPSLAB_PROXY_SOCKET_DIR",
            dir.path().join("run").display().to_string(),
        ),
        ("OPSLAB_PORT", "127.0.0.1:0".to_string()),
        ("OPSLAB_CONTROLLER_IMAGE", controller_image()),
    ];
    Stack {
        compose: docker::compose_command(),
        project,
        dir,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// The model settings a person may have exported, none of which these stacks may see.
const MODEL_ENV: [&str; 8] = [
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPSLAB_PROVIDER",
    "OPSLAB_MODEL",
    "OPSLAB_SUMMARY_MODEL",
    "OPSLAB_MAX_COST_USD",
];

/// Runs `command` with a deadline, its output in files (a pipe left unread could block it).
fn run_with_deadline(mut command: Command, dir: &Path, limit: Duration) -> (bool, String, String) {
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("the command starts");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let (out, err) = (read(&stdout), read(&stderr));
    assert!(
        status.is_some(),
        "timed out after {limit:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (status.is_some_and(|s| s.success()), out, err)
}

/// The README's main command on a machine with no model configured: scripts/demo brings the stack
/// up and breaks the demo; the stack's real Prometheus (Debian's, in its image) sees the visits fail
/// and fires its rule, Alertmanager sends the alert to the controller's intake, which files the
/// Incident (no manifest is written by the test or the script), and the scripted replay plays it to a
/// real fix; the alert then resolves on the Incident and the sink receives the notification.
#[test]
fn compose_demo_without_a_key_an_alert_files_the_incident_and_the_replay_resolves_it() {
    require_stack_images();
    let stack = stack_without_a_model("demo");
    let project = stack.project.clone();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut demo = Command::new(root.join("scripts/demo"));
    demo.args(["--no-build", "container-stopped"])
        .current_dir(root)
        .envs(stack.env.iter().map(|(k, v)| (k, v)));
    for name in MODEL_ENV {
        demo.env_remove(name);
    }
    let (ok, out, err) = run_with_deadline(demo, stack.dir.path(), Duration::from_secs(480));
    let logs = |service: &str| {
        String::from_utf8_lossy(
            &stack
                .run(&["logs", "--no-color", "--tail", "60", service])
                .stdout,
        )
        .into_owned()
    };
    assert!(
        ok,
        "scripts/demo failed\nstdout:\n{out}\nstderr:\n{err}\ncontroller logs:\n{}\nalertmanager logs:\n{}",
        logs("controller"),
        logs("alertmanager")
    );

    // It said plainly, at the start, that a scripted replay plays and how to use a model.
    let banner = err.find("SCRIPTED REPLAY").expect(&err);
    let injected = err.find("injecting the fault").expect(&err);
    assert!(banner < injected, "{err}");
    assert!(err.contains("export ANTHROPIC_API_KEY="), "{err}");
    // The alert filed the Incident, and the time from the fault is told.
    let filed =
        regex::Regex::new(r"the alert filed the Incident (\S+) (\d+\.\d) s after the fault")
            .unwrap();
    let found = filed.captures(&err).unwrap_or_else(|| panic!("{err}"));
    let name = found[1].to_string();
    assert!(name.starts_with("demovisitsfailing-"), "{name}");
    // No manifest but the intake's: the folder holds only what the controller writes.
    let top: Vec<String> = std::fs::read_dir(stack.incidents())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|file| file.ends_with(".yaml"))
        .collect();
    assert!(top.is_empty(), "manifests written by hand: {top:?}");
    let manifest = stack
        .incidents()
        .join(format!("alerts/default.{name}.yaml"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let incident = opslab::source::manifest::parse(text.as_bytes())
        .incidents
        .remove(0);
    let labels = incident.metadata.labels.clone().unwrap_or_default();
    assert!(labels.contains_key(opslab::alerts::GROUP_LABEL), "{text}");
    // Filled from the alert: Prometheus' external labels name the demo's network and containers,
    // its annotations say where Prometheus answers.
    assert_eq!(
        incident.spec.environment.networks,
        vec![format!("{project}-net")],
        "{text}"
    );
    assert!(
        incident
            .spec
            .environment
            .targets
            .contains(&format!("{project}-store")),
        "{text}"
    );
    assert!(
        incident.spec.description.contains("http://prometheus:9090"),
        "{text}"
    );
    // The session, as `follow` showed it live: the replay, and the scenario's fix in the sandbox.
    assert!(
        out.contains("session started with replay model opslab-replay"),
        "{out}"
    );
    assert!(out.contains("[scripted replay]"), "{out}");
    assert!(
        out.contains(&format!("docker start {project}-store")),
        "{out}"
    );

    // The Incident is Resolved, as its status file and the CLI in the controller's container say.
    let status = std::fs::read_to_string(
        stack
            .incidents()
            .join(format!(".status/default.{name}.yaml")),
    )
    .unwrap();
    assert!(status.contains("phase: Resolved"), "{status}");
    let incidents = stack.ok(&[
        "exec",
        "-T",
        "controller",
        "opslab",
        "get",
        "incidents",
        "-o",
        "json",
    ]);
    let incidents: Value = serde_json::from_str(&incidents).unwrap();
    let items = incidents["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one fault, one Incident: {incidents:#}");
    assert_eq!(items[0]["status"]["phase"], "Resolved", "{incidents:#}");
    assert_eq!(
        items[0]["status"]["costUsd"].as_f64(),
        Some(0.0),
        "{incidents:#}"
    );
    assert_eq!(stack.sessions().len(), 1);
    // The fix was real: the demo is healthy again, and the alert resolved on the Incident.
    let store = format!("{project}-store");
    stack.wait("the store to be healthy", || stack.healthy(&store));
    stack.wait("the alert to resolve on the Incident", || {
        std::fs::read_to_string(&manifest)
            .is_ok_and(|text| text.contains(opslab::alerts::RESOLVED_ANNOTATION))
    });
    // The resolution, however close to the report it landed, started no second attempt.
    assert_eq!(stack.sessions().len(), 1);
    // And the sink received the Incident's end, as a CloudEvent and as a Slack message.
    stack.wait("the sink to receive the notifications", || {
        let sink = logs("sink");
        sink.contains(&format!(
            "received cloudevent: dev.opslab.incident.resolved subject=default/{name} phase=Resolved"
        )) && sink.contains("received slack: ")
    });
    assert!(err.contains("the notifications the sink received"), "{err}");
    // Where the description says, a container of the sandbox's image on the demo's network queries
    // Prometheus: the visit probe succeeds again.
    let query = Command::new("docker")
        .args(["run", "--rm", "--network", &format!("{project}-net")])
        .args([docker::SANDBOX_IMAGE, "curl", "-fsS", "--max-time", "10"])
        .arg("http://prometheus:9090/api/v1/query?query=probe_success")
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&query.stdout).unwrap_or_else(|_| {
        panic!(
            "Prometheus did not answer: {}",
            String::from_utf8_lossy(&query.stderr)
        )
    });
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "{answer}");

    stack.ok(&["down", "-v"]);
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "down left containers");
}

/// `docker compose up` with no model configured: the controller stays up (no restart loop), its CLI
/// works, and an Incident fails with the reason NoModelConfigured and what to set.
#[test]
fn compose_without_a_model_keeps_the_controller_up_and_fails_incidents_with_the_reason() {
    require_stack_images();
    let stack = stack_without_a_model("nokey");
    let project = stack.project.clone();
    stack.ok(&["up", "-d"]);
    // The controller stays up: the CLI in its container works.
    stack.wait("the controller to answer", || {
        stack
            .run(&["exec", "-T", "controller", "opslab", "get", "incidents"])
            .status
            .success()
    });
    let manifest = format!(
        "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata:\n  name: no-model\nspec:\n  title: \"the site is down\"\n  environment:\n    networks: [{project}-net]\n"
    );
    std::fs::write(stack.incidents().join("no-model.yaml"), manifest).unwrap();
    let status = stack.incidents().join(".status/default.no-model.yaml");
    stack.wait("the Incident to fail", || {
        std::fs::read_to_string(&status).is_ok_and(|text| text.contains("phase: Failed"))
    });
    let text = std::fs::read_to_string(&status).unwrap();
    assert!(text.contains("NoModelConfigured"), "{text}");
    assert!(text.contains("ANTHROPIC_API_KEY"), "{text}");
    // Still up, not restarting: the same container answers after the Incident failed.
    let restarts = Command::new("docker")
        .args(["inspect", "-f", "{{.RestartCount}} {{.State.Status}}"])
        .arg(stack.ok(&["ps", "-q", "controller"]).trim())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&restarts.stdout).trim(),
        "0 running"
    );
    let listed = stack.ok(&["exec", "-T", "controller", "opslab", "get", "incidents"]);
    assert!(
        listed.contains("no-model") && listed.contains("Failed"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_up_down_up_keeps_the_audit_store() {
    require_stack_images();
    let project = format!(
        "opslab-test-compose-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let store_container = format!("{project}-store");
    let llm = FakeLlm::start_each_for_containers(
        Protocol::Anthropic,
        vec![
            Turn::shell(
                &format!("docker inspect -f '{{{{.State.Health.Status}}}}' {store_container}"),
                "check the store's health",
            ),
            Turn::report("resolved", "the store is healthy; nothing to change"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incidents")).unwrap();
    let env = vec![
        ("OPSLAB_DEMO", project.clone()),
        ("OPSLAB_INSTANCE", project.clone()),
        (
            "OPSLAB_INCIDENTS_DIR",
            dir.path().join("incidents").display().to_string(),
        ),
        (
            "OPSLAB_PROXY_SOCKET_DIR",
            dir.path().join("run").display().to_string(),
        ),
        ("OPSLAB_PORT", "127.0.0.1:0".to_string()),
        (
            "ANTHROPIC_API_KEY",
            "sk-ant-test-key-0123456789abcdef".to_string(),
        ),
        (
            "ANTHROPIC_BASE_URL",
            format!("http://host.docker.internal:{}", llm.port()),
        ),
        ("OPSLAB_SUMMARY_MODEL", "off".to_string()),
    ];
    let stack = Stack {
        compose: docker::compose_command(),
        project: project.clone(),
        dir,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    stack.ok(&["up", "-d"]);
    let demo = ["web", "api", "store"].map(|service| format!("{project}-{service}"));
    stack.wait("the demo to be healthy", || {
        demo.iter().all(|c| stack.healthy(c))
    });

    let manifest = format!(
        "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata:\n  name: check-store\nspec:\n  title: \"is the store healthy?\"\n  severity: low\n  environment:\n    networks: [{project}-net]\n    targets: [{store_container}]\n"
    );
    std::fs::write(stack.incidents().join("check-store.yaml"), manifest).unwrap();
    let status = stack.incidents().join(".status/default.check-store.yaml");
    stack.wait("the Incident to be resolved", || {
        std::fs::read_to_string(&status).is_ok_and(|text| text.contains("phase: Resolved"))
    });
    let before = stack.sessions();
    assert_eq!(before.len(), 1, "{before:?}");
    let session = before[0]["id"].as_str().unwrap().to_string();
    assert!(
        llm.requests().iter().any(|request| request["system"]
            .to_string()
            .contains(&format!("{project}-net"))),
        "the model was asked about the Incident"
    );

    stack.ok(&["down"]);
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "down left containers");

    stack.ok(&["up", "-d"]);
    stack.wait("the demo to be healthy again", || {
        demo.iter().all(|c| stack.healthy(c))
    });
    stack.wait("the controller to answer again", || {
        !stack.sessions().is_empty()
    });
    let after = stack.sessions();
    assert!(
        after.iter().any(|s| s["id"] == session.as_str()),
        "the session {session} is gone after down and up: {after:?}"
    );
    let story = stack.ok(&[
        "exec",
        "-T",
        "controller",
        "opslab",
        "show",
        &session,
        "-o",
        "json",
    ]);
    let story: Value = serde_json::from_str(&story).unwrap();
    let finished = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .cloned()
        .unwrap_or_default();
    // The sandbox, made by the controller in its container, reached the host's engine.
    assert_eq!(finished["exit_code"], 0, "{story:#}");
    assert_eq!(
        finished["output"].as_str().map(str::trim),
        Some("healthy"),
        "{story:#}"
    );
    let verify = stack.ok(&["exec", "-T", "controller", "opslab", "audit", "verify"]);
    assert!(verify.contains(&format!("ok      {session}")), "{verify}");
    // The Incident is not handled again: its status is kept, and the model got no new session.
    assert_eq!(after.len(), 1, "{after:?}");
}
