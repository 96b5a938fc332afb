//! The guarded Docker socket on the real engine: forbidden calls refused and recorded, the docker CLI
//! an agent uses working through it from inside a real sandbox, and what each mode can reach.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use opslab::audit::{EventBody, Redactor};
use opslab::sandbox::{DockerAccess, LABEL_COMPONENT, Sandbox};
use serde_json::{Value, json};

use crate::support::docker::{self, TestNetwork};
use crate::support::sandboxes::Harness;

const SHORT: std::time::Duration = std::time::Duration::from_secs(60);

/// Docker objects made for one test, removed when dropped (even when the test fails).
#[derive(Default)]
struct Objects {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Objects {
    fn name(&self, what: &str) -> String {
        format!("opslab-test-{what}-{}", uuid::Uuid::new_v4().simple())
    }

    /// An ordinary running container that prints a line every 0.3 s.
    fn container(&mut self, what: &str, labels: &[&str], network: Option<&str>) -> String {
        let name = self.name(what);
        let mut command = Command::new("docker");
        command.args(["run", "-d", "--name", &name]);
        for label in labels {
            command.args(["--label", label]);
        }
        if let Some(network) = network {
            command.args(["--network", network]);
        }
        command.args([
            docker::SANDBOX_IMAGE,
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.3; done",
        ]);
        let output = command.output().expect("docker run");
        assert!(output.status.success(), "docker run: {output:?}");
        self.containers.push(name.clone());
        name
    }

    fn volume(&mut self, what: &str, labels: &[&str]) -> String {
        let name = self.name(what);
        let mut command = Command::new("docker");
        command.args(["volume", "create"]);
        for label in labels {
            command.args(["--label", label]);
        }
        let output = command.arg(&name).output().expect("docker volume create");
        assert!(output.status.success(), "{output:?}");
        self.volumes.push(name.clone());
        name
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        for name in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", name])
                .output();
        }
    }
}

/// One HTTP call on a unix socket: (status, body).
async fn call(socket: &Path, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|error| panic!("{}: {error}", socket.display()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into())),
    )
}

async fn run(sandbox: &Sandbox, command: &str) -> (Option<i64>, String) {
    let outcome = sandbox.exec(command, SHORT).await.expect("the exec runs");
    (outcome.exit_code, outcome.output)
}

fn inspect(name: &str) -> Value {
    let output = Command::new("docker")
        .args(["inspect", name])
        .output()
        .unwrap();
    assert!(output.status.success(), "docker inspect {name}: {output:?}");
    serde_json::from_slice::<Value>(&output.stdout).unwrap()[0].clone()
}

/// The Docker API decisions recorded for a session: (allowed, method, path).
async fn decisions(
    harness: &Harness,
    session: &str,
) -> Vec<(bool, String, String, Option<String>)> {
    harness
        .store
        .events(session)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.body {
            EventBody::DockerApi {
                allowed,
                method,
                path,
                reason,
                ..
            } => Some((allowed, method, path, reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn proxy_refuses_forbidden_calls_with_403_and_records_each() {
    docker::require_sandbox_image();
    let secret = "sk-proxy-test-secret-0123456789";
    let harness = Harness::start_with(
        |config| config.allow_create = true,
        Redactor::new(vec![secret.to_string()]),
    )
    .await;
    let network = TestNetwork::create("proxy");
    let mut objects = Objects::default();
    let (agent, other) = (harness.session().await, harness.session().await);
    let component = format!("{LABEL_COMPONENT}=controller");
    let victim = objects.container("victim", &["app=demo"], Some(&network.name));
    let controller = objects.container("controller", &[&component], None);
    let store_volume = objects.volume("store", &[&component]);
    let own = harness.sandboxes.ensure(&agent, &[]).await.unwrap();
    let theirs = harness.sandboxes.ensure(&other, &[]).await.unwrap();
    let socket = harness.socket(&agent);
    let create = |host: Value| Some(json!({"Image": docker::SANDBOX_IMAGE, "HostConfig": host}));
    let exec = || Some(json!({"Cmd": ["cat", "/proc/1/environ"], "AttachStdout": true}));
    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1.41/containers/create".into(),
            create(json!({"Privileged": true})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"Binds": ["/:/host"]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/h"}]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"NetworkMode": "host"})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"PidMode": "host"})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"CapAdd": ["SYS_ADMIN"]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem"}]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"SecurityOpt": ["seccomp=unconfined"]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"Binds": [format!("{store_volume}:/store")]})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            create(json!({"NetworkMode": format!("container:{controller}")})),
        ),
        (
            Method::POST,
            "/containers/create".into(),
            Some(json!({"Image": docker::SANDBOX_IMAGE, "privileged": true})),
        ),
        (
            Method::GET,
            format!("/containers/{controller}/json?token={secret}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1.41/containers/{controller}/logs?stdout=1"),
            None,
        ),
        (Method::POST, format!("/containers/{controller}/stop"), None),
        (
            Method::POST,
            format!("/containers/{controller}/exec"),
            exec(),
        ),
        (
            Method::GET,
            format!("/containers/{controller}/archive?path=/"),
            None,
        ),
        (
            Method::POST,
            format!("/containers/{}/kill", theirs.container_id),
            None,
        ),
        (
            Method::POST,
            format!("/containers/{}/exec", theirs.container_id),
            exec(),
        ),
        (
            Method::POST,
            format!("/containers/{}/stop", own.container_id),
            None,
        ),
        (
            Method::POST,
            format!("/containers/{}/update", own.container_id),
            Some(json!({"Memory": 4_000_000_000_i64})),
        ),
        (
            Method::POST,
            format!("/containers/{victim}/exec"),
            Some(json!({"Cmd": ["id"], "Privileged": true})),
        ),
        (
            Method::DELETE,
            format!("/containers/{victim}?force=1"),
            None,
        ),
        (
            Method::POST,
            format!("/containers/{victim}/rename?name=x"),
            None,
        ),
        (
            Method::POST,
            "/v1.23/containers/create".into(),
            create(json!({})),
        ),
        (Method::POST, "/images/create?fromImage=alpine".into(), None),
        (Method::POST, "/build".into(), None),
        (Method::POST, "/containers/prune".into(), None),
        (
            Method::POST,
            "/volumes/create".into(),
            Some(json!({"Name": "x"})),
        ),
        (Method::GET, format!("/volumes/{store_volume}"), None),
        (
            Method::POST,
            "/networks/create".into(),
            Some(json!({"Name": "x"})),
        ),
        (
            Method::POST,
            format!("/networks/{}/connect", network.name),
            Some(json!({"Container": controller})),
        ),
        (Method::POST, "/containers/a%2F..%2Fb/json".into(), None),
    ];
    assert!(forbidden.len() >= 20);
    for (method, path, body) in &forbidden {
        let (status, answer) = call(&socket, method.clone(), path, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("opslab: "), "{method} {path}: {answer}");
    }
    // Each refusal is in the session's trail, in order, with its reason; the secret is redacted.
    let recorded = decisions(&harness, &agent).await;
    assert_eq!(recorded.len(), forbidden.len(), "{recorded:#?}");
    for ((method, path, _), (allowed, recorded_method, recorded_path, reason)) in
        forbidden.iter().zip(&recorded)
    {
        assert!(!allowed, "{path}");
        assert_eq!(recorded_method, method.as_str());
        assert_eq!(
            recorded_path,
            &path.replace(secret, "[REDACTED:secret]"),
            "{path}"
        );
        assert!(reason.as_deref().is_some_and(|r| !r.is_empty()));
    }
    assert!(!format!("{recorded:?}").contains(secret));
    let metrics = harness.metrics.openmetrics();
    assert!(
        metrics.contains(
            r#"opslab_docker_api_requests_total{decision="denied",action="container_create"} 12"#
        ),
        "{metrics}"
    );
    // Nothing happened: the protected containers and the victim still run, unchanged.
    for name in [&controller, &victim] {
        assert_eq!(inspect(name)["State"]["Running"], true, "{name}");
    }
    assert_eq!(inspect(&theirs.container_id)["State"]["Running"], true);
    assert_eq!(
        inspect(&own.container_id)["HostConfig"]["Memory"],
        512 * 1024 * 1024
    );
    // The trail stays a valid chain with the proxy's events in it.
    assert!(matches!(
        harness.store.verify(&agent).await.unwrap(),
        opslab::audit::ChainCheck::Intact { .. }
    ));
    // Allowed calls are recorded too, and lists hide opslab's objects but not the agent's own sandbox.
    let (status, list) = call(&socket, Method::GET, "/v1.41/containers/json", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Id"].as_str())
        .collect();
    assert!(ids.contains(&own.container_id.as_str()), "{ids:?}");
    assert!(!ids.contains(&theirs.container_id.as_str()), "{ids:?}");
    let controller_id = inspect(&controller)["Id"].as_str().unwrap().to_string();
    assert!(!ids.contains(&controller_id.as_str()));
    let recorded = decisions(&harness, &agent).await;
    assert!(
        matches!(recorded.last(), Some((true, m, p, None)) if m == "GET" && p == "/v1.41/containers/json")
    );
}

/// A command for the sandbox and what its output must satisfy.
type Check<'a> = (String, &'a dyn Fn(&str) -> bool);

#[tokio::test]
async fn proxy_serves_the_docker_cli_an_agent_uses_from_inside_the_sandbox() {
    docker::require_sandbox_image();
    let harness = Harness::start(|_| {}).await;
    let network = TestNetwork::create("cli");
    let mut objects = Objects::default();
    let agent = harness.session().await;
    let victim = objects.container("web", &["app=demo"], Some(&network.name));
    let component = format!("{LABEL_COMPONENT}=controller");
    let controller = objects.container("controller", &[&component], None);
    let sandbox = harness.sandboxes.ensure(&agent, &[]).await.unwrap();
    let is_victim = |out: &str| out.trim() == victim;
    let checks: Vec<Check> = vec![
        ("docker ps --format '{{.Names}}'".into(), &|out: &str| {
            out.contains("opslab-test-web") && !out.contains("opslab-test-controller")
        }),
        (format!("docker logs --tail 2 {victim}"), &|out: &str| {
            out.contains("tick")
        }),
        // A stream: `logs -f` keeps printing until stopped.
        (
            format!("timeout 3 docker logs -f --tail 0 {victim}; echo exit=$?"),
            &|out: &str| out.matches("tick").count() >= 3 && out.ends_with("exit=124\n"),
        ),
        (
            format!("docker inspect -f '{{{{.Config.Labels.app}}}}' {victim}"),
            &|out: &str| out == "demo\n",
        ),
        (
            format!("docker exec {victim} echo hello-from-exec"),
            &|out: &str| out == "hello-from-exec\n",
        ),
        // A hijacked stream both ways: stdin in, output back, stdin's end passed on.
        (
            format!("printf 'a\\nb\\n' | docker exec -i {victim} wc -l"),
            &|out: &str| out.trim() == "2",
        ),
        (
            format!("timeout 3 docker attach --no-stdin --sig-proxy=false {victim}; echo exit=$?"),
            &|out: &str| out.contains("tick") && out.ends_with("exit=124\n"),
        ),
        (format!("docker restart -t 1 {victim}"), &is_victim),
        (
            format!("docker pause {victim} && docker unpause {victim}"),
            &|out: &str| out.lines().count() == 2,
        ),
        (
            format!("docker update --memory 300m --memory-swap 600m {victim}"),
            &is_victim,
        ),
        (
            "docker stats --no-stream --format '{{.Name}}'".into(),
            &|out: &str| out.contains("opslab-test-web") && !out.contains("opslab-test-controller"),
        ),
        (
            format!("docker network inspect -f '{{{{.Name}}}}' {}", network.name),
            &|out: &str| out.starts_with("opslab-test-cli-"),
        ),
        (
            format!(
                "docker network disconnect {net} {victim} && docker network connect {net} {victim} && echo reconnected",
                net = network.name
            ),
            &|out: &str| out == "reconnected\n",
        ),
        (
            "docker events --since 1m --until 1s --filter event=unpause --format '{{.Action}}'"
                .into(),
            &|out: &str| out.contains("unpause"),
        ),
        // Refusals reach the agent as the daemon's error.
        (
            format!("docker stop {controller}; echo exit=$?"),
            &|out: &str| {
                out.contains("Error response from daemon: opslab:") && out.contains("exit=1")
            },
        ),
        (
            "docker run --rm --privileged debian:bookworm-slim true; echo exit=$?".into(),
            &|out: &str| out.contains("opslab:") && out.contains("exit=125"),
        ),
    ];
    for (command, expected) in &checks {
        let (code, output) = run(&sandbox, command).await;
        assert!(
            code == Some(0) && expected(&output),
            "{command}\nexit {code:?}:\n{output}"
        );
    }
    assert_eq!(inspect(&victim)["HostConfig"]["Memory"], 300 * 1024 * 1024);
    let recorded = decisions(&harness, &agent).await;
    for action in [
        "/exec/", "/attach", "/logs", "/restart", "/update", "/connect", "/events",
    ] {
        assert!(
            recorded
                .iter()
                .any(|(allowed, _, path, _)| *allowed && path.contains(action)),
            "no allowed {action} call recorded"
        );
    }
    // The agent's conversation is untouched: these events are not turns.
    let events = harness.store.events(&agent).await.unwrap();
    let history = opslab::session::history::History::from_events(events.iter().map(|e| &e.body));
    assert_eq!(history.turns, 0);
    assert_eq!(history.messages().len(), 0);
}

#[tokio::test]
async fn proxy_keeps_the_host_socket_and_the_store_out_of_reach_except_in_full_mode() {
    docker::require_sandbox_image();
    let mut objects = Objects::default();
    let component = format!("{LABEL_COMPONENT}=controller");
    let controller = objects.container("controller", &[&component], None);
    for access in [
        DockerAccess::Guarded,
        DockerAccess::None,
        DockerAccess::Full,
    ] {
        let harness = Harness::start(|config| config.docker_access = access).await;
        let agent = harness.session().await;
        let sandbox = harness.sandboxes.ensure(&agent, &[]).await.unwrap();
        let store = harness.dir.path().join("opslab.db");
        assert!(store.exists());
        let mounts = inspect(&sandbox.container_id)["Mounts"].to_string();
        let (_, reach) = run(
            &sandbox,
            &format!(
                "test -e {store} && echo store; test -S /var/run/docker.sock && echo socket; \
                 docker inspect -f '{{{{.Name}}}}' {controller} >/dev/null 2>&1 && echo controller; \
                 docker run --rm -v /:/host {image} true >/dev/null 2>&1 && echo host-mounted; true",
                store = store.display(),
                image = docker::SANDBOX_IMAGE,
            ),
        )
        .await;
        match access {
            DockerAccess::Guarded => {
                assert_eq!(reach, "socket\n", "guarded");
                assert!(!mounts.contains("docker.sock"), "{mounts}");
            }
            DockerAccess::None => {
                assert_eq!(reach, "", "none");
                assert_eq!(mounts, "[]");
            }
            // The control: the engine's own socket reaches everything.
            DockerAccess::Full => {
                assert_eq!(reach, "socket\ncontroller\nhost-mounted\n", "full");
                assert!(mounts.contains("/var/run/docker.sock"), "{mounts}");
            }
        }
        let socket = harness.socket(&agent);
        harness.sandboxes.remove(&agent).await.unwrap();
        assert!(!socket.exists());
    }
}

#[tokio::test]
async fn proxy_socket_comes_back_after_a_controller_restart() {
    docker::require_sandbox_image();
    let harness = Harness::start(|_| {}).await;
    let agent = harness.session().await;
    let config = harness.config.clone();
    let first = Harness::connect(&config, &harness.store, &harness.metrics).await;
    let sandbox = first.ensure(&agent, &[]).await.unwrap();
    let ps = "docker ps -q >/dev/null && echo ok";
    assert_eq!(run(&sandbox, ps).await.1, "ok\n");
    // The controller stops: its proxies with it.
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (code, _) = run(&sandbox, ps).await;
    assert_ne!(
        code,
        Some(0),
        "the socket still answered with its controller gone"
    );
    // A new controller resumes the session: the same sandbox gets its socket back.
    let restarted = Harness::connect(&config, &harness.store, &harness.metrics).await;
    let resumed = restarted.ensure(&agent, &[]).await.unwrap();
    assert_eq!(resumed.container_id, sandbox.container_id);
    assert_eq!(run(&resumed, ps).await.1, "ok\n");
    // A sandbox made for another access mode is replaced, not reused.
    let full = Harness::connect(
        &opslab::sandbox::SandboxConfig {
            docker_access: DockerAccess::None,
            ..config
        },
        &harness.store,
        &harness.metrics,
    )
    .await;
    let replaced = full.ensure(&agent, &[]).await.unwrap();
    assert_ne!(replaced.container_id, sandbox.container_id);
    assert_eq!(
        run(&replaced, "test -e /var/run/docker.sock || echo none")
            .await
            .1,
        "none\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_decisions_of_a_session_are_in_its_trail_and_shown_but_not_sent_to_the_model() {
    use crate::support::controller::{Controller, Options, manifest};
    use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
    use opslab::incident::Phase;

    docker::require_sandbox_image();
    let mut objects = Objects::default();
    let victim = objects.container("api", &["app=demo"], None);
    let component = format!("{LABEL_COMPONENT}=controller");
    let protected = objects.container("controller", &[&component], None);
    let script = vec![
        Turn::shell(
            &format!("docker restart -t 1 {victim} && docker stop {protected}; echo done"),
            "restart the api; try the controller too",
        ),
        Turn::report("resolved", "restarted"),
    ];
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    controller.write_manifest("api.yaml", &manifest("api-restart", "api is stuck", ""));
    let incident = controller.wait_for_phase(
        "api-restart",
        Phase::Resolved,
        std::time::Duration::from_secs(120),
    );
    let session_id = incident.status.unwrap().session_id.unwrap();
    let events = controller.events(&session_id);
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "docker_api")
        .collect();
    let restart = calls
        .iter()
        .find(|e| e["action"] == "container_restart")
        .expect("the restart is recorded");
    assert_eq!(restart["allowed"], true);
    assert_eq!(restart["target"], format!("container {victim}"));
    let stop = calls
        .iter()
        .find(|e| e["action"] == "container_stop")
        .expect("the refused stop is recorded");
    assert_eq!(stop["allowed"], false);
    assert!(
        stop["reason"].as_str().unwrap().contains("off limits"),
        "{stop}"
    );
    // The calls sit between the command's start and its end.
    let seq = |kind: &str| {
        events.iter().find(|e| e["kind"] == kind).unwrap()["seq"]
            .as_i64()
            .unwrap()
    };
    let restart_seq = restart["seq"].as_i64().unwrap();
    assert!(seq("command_started") < restart_seq && restart_seq < seq("command_finished"));
    // The model saw the command's output (the daemon's error among it), not the trail's events.
    let sent = serde_json::to_string(&llm.requests()).unwrap();
    assert!(
        sent.contains("Error response from daemon: opslab:"),
        "{sent}"
    );
    assert!(!sent.contains("container_restart") && !sent.contains("docker_api"));
    let story = controller.cli(&["show", "api-restart"]);
    assert!(
        story.contains(&format!(
            "docker api allowed: POST /v1.41/containers/{victim}/restart"
        )),
        "{story}"
    );
    assert!(story.contains("docker api DENIED: POST"), "{story}");
    let metrics = reqwest::get(format!("{}/metrics", controller.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"opslab_docker_api_requests_total{decision="denied",action="container_stop"} 1"#
        ),
        "{metrics}"
    );
    assert_eq!(inspect(&protected)["State"]["Running"], true);
    // The session's socket went with its sandbox.
    assert!(
        !controller
            .dir
            .path()
            .join("sockets")
            .join(&session_id)
            .exists()
    );
}
