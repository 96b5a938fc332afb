//! `docker-compose.yml` as a person runs it: the controller and the demo come up healthy, an
//! Incident filed into the folder is handled, and after `down` and `up` the audit store still holds
//! that session. The model is the scripted fake, reached from the controller's container through
//! `host.docker.internal`.

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
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .arg("-f")
            .arg(root.join("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args)
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

#[tokio::test(flavor = "multi_thread")]
async fn compose_up_down_up_keeps_the_audit_store() {
    let mut images = vec!["opslab:latest", docker::SANDBOX_IMAGE];
    images.extend(docker::DEMO_IMAGES);
    docker::require_images(&images);
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
