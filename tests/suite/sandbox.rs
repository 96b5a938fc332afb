//! Sandboxes on the real Docker engine, with nasty commands.

use std::collections::HashSet;
use std::time::Duration;

use opslab::sandbox::{ExecOutcome, LABEL_SESSION, Sandbox, SandboxError, SandboxOwner, Sandboxes};

use crate::support::docker::{self, TestNetwork, containers_with_label};
use crate::support::sandboxes::Harness;

/// The sandboxes of these sessions, removed when dropped: even when the test fails.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for session_id in &self.0 {
            for id in containers_with_label(&format!("{LABEL_SESSION}={session_id}")) {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", &id])
                    .output();
            }
        }
    }
}

/// A sandbox for one test (default settings: guarded Docker access, hardened), removed when
/// dropped.
struct TestSandbox {
    sandboxes: Sandboxes,
    session_id: String,
    sandbox: Sandbox,
    _cleanup: Cleanup,
    _harness: Harness,
}

impl TestSandbox {
    async fn start(networks: &[String]) -> TestSandbox {
        docker::require_sandbox_image();
        let harness = Harness::start(|_| {}).await;
        let owner = harness.session().await;
        let cleanup = Cleanup(vec![owner.session_id.clone()]);
        let sandbox = harness
            .sandboxes
            .ensure(&owner, networks)
            .await
            .expect("the sandbox starts");
        TestSandbox {
            sandboxes: harness.sandboxes.clone(),
            session_id: owner.session_id,
            sandbox,
            _cleanup: cleanup,
            _harness: harness,
        }
    }

    async fn run(&self, command: &str, timeout: Duration) -> ExecOutcome {
        self.sandbox
            .exec(command, timeout)
            .await
            .expect("the exec runs")
    }
}

fn owner() -> SandboxOwner {
    SandboxOwner {
        incident_uid: "test-uid".into(),
        incident_namespace: "default".into(),
        incident_name: "sandbox-test".into(),
        session_id: format!("test-{}", uuid::Uuid::now_v7()),
    }
}

const SHORT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sandbox_runs_commands_with_their_exit_codes() {
    let test = TestSandbox::start(&[]).await;
    let ok = test.run("echo hi", SHORT).await;
    assert_eq!(
        (ok.exit_code, ok.output.as_str(), ok.timed_out),
        (Some(0), "hi\n", false)
    );
    let stderr = test.run("echo err >&2", SHORT).await;
    assert_eq!(
        (stderr.exit_code, stderr.output.as_str()),
        (Some(0), "err\n")
    );
    // stdout and stderr in the order they were written.
    let mixed = test
        .run(
            "for i in $(seq 300); do echo out$i; echo err$i >&2; done",
            SHORT,
        )
        .await;
    let written: String = (1..=300).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert!(mixed.output == written, "{}", mixed.output);
    let failed = test.run("exit 3", SHORT).await;
    assert_eq!((failed.exit_code, failed.output.as_str()), (Some(3), ""));
    // Quotes and metacharacters reach bash as written.
    let quoted = test
        .run(r#"printf '%s|' "a b" 'c"d' $((1+2))"#, SHORT)
        .await;
    assert_eq!(quoted.output, "a b|c\"d|3|");
    // A login shell, and the docker CLI is there.
    let tools = test
        .run(
            "shopt -q login_shell && echo login; command -v docker curl jq dig ping ip ps && ping -c1 -W2 127.0.0.1",
            SHORT,
        )
        .await;
    assert_eq!(tools.exit_code, Some(0), "{}", tools.output);
    assert!(tools.output.starts_with("login\n"), "{}", tools.output);
}

#[tokio::test]
async fn sandbox_times_out_and_kills_the_command() {
    let test = TestSandbox::start(&[]).await;
    // A limit in milliseconds is kept to the millisecond, not rounded to seconds.
    let slow = test.run("sleep 60", Duration::from_millis(1500)).await;
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!(slow.exit_code, Some(124));
    assert!(slow.duration >= Duration::from_millis(1500), "{slow:?}");
    assert!(
        slow.duration < Duration::from_secs(30),
        "returned after {:?}",
        slow.duration
    );
    // A command that ignores SIGTERM is killed after the grace period.
    let stubborn = test
        .run("trap '' TERM; sleep 60", Duration::from_secs(1))
        .await;
    assert!(stubborn.timed_out, "{stubborn:?}");
    assert_eq!(stubborn.exit_code, Some(137));
    // Exact command lines: the sandbox's own `sleep infinity` is not one of them.
    let left = test.run("pgrep -c -x -f 'sleep 60' || true", SHORT).await;
    assert_eq!(left.output.trim(), "0", "the timed-out processes are gone");
}

#[tokio::test]
async fn sandbox_survives_nasty_output() {
    let test = TestSandbox::start(&[]).await;
    let binary = test
        .run(
            "head -c 4096 /dev/urandom; printf '\\xff\\xfe\\x1b[31mred\\x00'",
            SHORT,
        )
        .await;
    assert_eq!(binary.exit_code, Some(0));
    assert_eq!(binary.output_bytes, 4096 + 11);
    assert!(
        binary.output.ends_with("\u{fffd}\u{fffd}\\x1b[31mred\\x00"),
        "{:?}",
        &binary.output[binary.output.len() - 40..]
    );
    assert!(!binary.output.contains('\u{1b}') && !binary.output.contains('\0'));

    let huge = test
        .run(
            "head -c 50000000 /dev/zero | tr '\\0' a; echo; echo the-end",
            SHORT,
        )
        .await;
    assert_eq!(huge.exit_code, Some(0));
    assert_eq!(huge.output_bytes, 50_000_000 + 1 + 8);
    assert!(huge.truncated);
    assert!(
        huge.output.len() < 40 * 1024,
        "kept {} bytes",
        huge.output.len()
    );
    assert!(
        huge.output
            .contains("bytes cut: the output was 50000009 bytes"),
        "{}",
        &huge.output[16000..16600]
    );
    assert!(huge.output.ends_with("the-end\n"));
}

#[tokio::test]
async fn sandbox_closes_stdin_and_does_not_wait_for_background_children() {
    let test = TestSandbox::start(&[]).await;
    let stdin = test.run("cat; read -r line; echo read=$?", SHORT).await;
    assert_eq!(
        (stdin.exit_code, stdin.output.as_str()),
        (Some(0), "read=1\n")
    );
    let background = test
        .run("sleep 600 & echo started", Duration::from_secs(120))
        .await;
    assert_eq!(
        (background.exit_code, background.output.as_str()),
        (Some(0), "started\n")
    );
    assert!(!background.timed_out);
    assert!(
        background.duration < Duration::from_secs(60),
        "waited {:?}",
        background.duration
    );
    let still = test.run("pgrep -c -x -f 'sleep 600'", SHORT).await;
    assert_eq!(
        still.output.trim(),
        "1",
        "the background process was left running"
    );
}

#[tokio::test]
async fn sandbox_is_labelled_limited_and_joins_networks() {
    let first = TestNetwork::create("a");
    let second = TestNetwork::create("b");
    let test = TestSandbox::start(&[first.name.clone(), second.name.clone()]).await;
    let inspect = std::process::Command::new("docker")
        .args(["inspect", &test.sandbox.container_id])
        .output()
        .unwrap();
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let container = &inspect[0];
    let labels = &container["Config"]["Labels"];
    assert_eq!(labels["opslab.dev/managed"], "true");
    assert_eq!(labels["opslab.dev/session-id"], test.session_id.as_str());
    assert_eq!(labels["opslab.dev/incident"], "default/sandbox-test");
    let host = &container["HostConfig"];
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 1_000_000_000);
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_RAW"]));
    assert_eq!(host["ReadonlyRootfs"], true);
    // Inside: the engine's default seccomp filter, no-new-privileges, and NET_RAW (bit 13) the only
    // capability.
    let status = test
        .run(
            "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status",
            SHORT,
        )
        .await;
    for expected in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000002000",
        "CapBnd:\t0000000000002000",
    ] {
        assert!(status.output.contains(expected), "{}", status.output);
    }
    // The root is read-only; /tmp and the home and working folder are not, and the tools work.
    let writes = test
        .run(
            "touch /etc/x 2>/dev/null && echo root-writable; touch /tmp/x /work/x && echo $HOME && mkdir -p ~/.docker && ping -c1 -W2 127.0.0.1 >/dev/null && echo '{}' | jq -c . && dig +short +time=1 +tries=1 localhost >/dev/null; curl -sS -o /dev/null file:///etc/hostname && echo tools-ok",
            SHORT,
        )
        .await;
    assert_eq!(writes.output, "/work\n{}\ntools-ok\n", "{writes:?}");
    let networks = container["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap();
    assert!(
        networks.contains_key(&first.name) && networks.contains_key(&second.name),
        "{networks:?}"
    );
    // The agent can use the Docker API through its socket, and sees its own sandbox only.
    let ps = test
        .run(
            "docker ps --format '{{.Names}}' | grep -c opslab-sbx",
            SHORT,
        )
        .await;
    assert_eq!(ps.exit_code, Some(0), "{}", ps.output);
}

#[tokio::test]
async fn sandbox_refuses_a_missing_network_clearly() {
    docker::require_sandbox_image();
    let harness = Harness::start(|_| {}).await;
    let sandboxes = &harness.sandboxes;
    let (first, second) = (harness.session().await, harness.session().await);
    let _cleanup = Cleanup(vec![first.session_id.clone(), second.session_id.clone()]);
    let error = sandboxes
        .ensure(&first, &["no-such-network-for-opslab".into()])
        .await
        .err()
        .expect("a missing network is an error");
    assert!(
        matches!(error, SandboxError::MissingNetwork(ref name) if name == "no-such-network-for-opslab"),
        "{error}"
    );
    let missing_image = Harness::start(|config| {
        config.image = "opslab-no-such-image:nope".into();
    })
    .await;
    let missing_image = &missing_image.sandboxes;
    let error = missing_image
        .ensure(&second, &[])
        .await
        .err()
        .expect("a missing image is an error");
    assert!(
        error.to_string().contains("scripts/build-images"),
        "{error}"
    );
}

#[tokio::test]
async fn sandbox_ensure_reuses_and_remove_is_idempotent() {
    let test = TestSandbox::start(&[]).await;
    let owner = SandboxOwner {
        session_id: test.session_id.clone(),
        ..owner()
    };
    let again = test.sandboxes.ensure(&owner, &[]).await.unwrap();
    assert_eq!(again.container_id, test.sandbox.container_id);
    test.sandboxes.remove(&test.session_id).await.unwrap();
    assert_eq!(
        containers_with_label(&format!("{LABEL_SESSION}={}", test.session_id)),
        Vec::<String>::new()
    );
    test.sandboxes.remove(&test.session_id).await.unwrap();
}

#[tokio::test]
async fn sandbox_orphans_are_removed_and_kept_ones_stay() {
    docker::require_sandbox_image();
    let harness = Harness::start(|_| {}).await;
    let sandboxes = &harness.sandboxes;
    let (kept, orphan) = (harness.session().await, harness.session().await);
    let _cleanup = Cleanup(vec![kept.session_id.clone(), orphan.session_id.clone()]);
    sandboxes.ensure(&kept, &[]).await.unwrap();
    sandboxes.ensure(&orphan, &[]).await.unwrap();
    let other_instance = TestSandbox::start(&[]).await;
    let keep = HashSet::from([kept.session_id.clone()]);
    let removed = sandboxes.remove_orphans(&keep).await.unwrap();
    assert_eq!(removed, vec![orphan.session_id.clone()]);
    // The orphan's Docker socket goes with it; the kept one's stays.
    assert!(!harness.socket(&orphan.session_id).exists());
    assert!(harness.socket(&kept.session_id).exists());
    assert_eq!(
        containers_with_label(&format!("{LABEL_SESSION}={}", orphan.session_id)),
        Vec::<String>::new()
    );
    assert_eq!(
        containers_with_label(&format!("{LABEL_SESSION}={}", kept.session_id)).len(),
        1
    );
    assert_eq!(
        containers_with_label(&format!("{LABEL_SESSION}={}", other_instance.session_id)).len(),
        1,
        "another controller's sandbox is not an orphan of this one"
    );
}
