//! Sandboxes on the real Docker engine, with nasty commands.

use std::collections::HashSet;
use std::time::Duration;

use opslab::sandbox::{ExecOutcome, Sandbox, SandboxError, Sandboxes, sandbox_name};

use crate::support::docker::{self, TestNetwork, sandbox_of};
use crate::support::sandboxes::Harness;

/// A sandbox for one test (default settings: guarded Docker access, hardened), removed with its
/// harness when dropped.
struct TestSandbox {
    sandboxes: Sandboxes,
    session_id: String,
    sandbox: Sandbox,
    _harness: Harness,
}

impl TestSandbox {
    async fn start(networks: &[String]) -> TestSandbox {
        docker::require_sandbox_image();
        let harness = Harness::start(|_| {}).await;
        let session_id = harness.session().await;
        let sandbox = harness
            .sandboxes
            .ensure(&session_id, networks)
            .await
            .expect("the sandbox starts");
        TestSandbox {
            sandboxes: harness.sandboxes.clone(),
            session_id,
            sandbox,
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
async fn sandbox_closes_stdin_and_kills_what_a_command_leaves_unless_asked() {
    let test = TestSandbox::start(&[]).await;
    let stdin = test.run("cat; read -r line; echo read=$?", SHORT).await;
    assert_eq!(
        (stdin.exit_code, stdin.output.as_str()),
        (Some(0), "read=1\n")
    );
    // One accidental background process, one under nohup, one in a session of its own; the
    // command ends at once, before nohup and setsid have even started.
    let background = test
        .run(
            "sleep 601 & nohup sleep 602 >/dev/null 2>&1 & setsid sleep 603 >/dev/null 2>&1 & echo started",
            Duration::from_secs(120),
        )
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
    let still = test
        .run(
            "for n in 601 602 603; do echo $n=$(pgrep -c -x -f \"sleep $n\"); done",
            SHORT,
        )
        .await;
    assert_eq!(
        still.output, "601=0\n602=1\n603=1\n",
        "the accidental one is killed, those asked for stay"
    );
    // A background child that keeps the output open is not waited for either.
    let holding = test
        .run("nohup sleep 604 & echo held", Duration::from_secs(120))
        .await;
    assert_eq!(holding.output, "held\n");
    assert!(
        holding.duration < Duration::from_secs(60),
        "waited {:?}",
        holding.duration
    );
}

#[tokio::test]
async fn sandbox_runs_the_next_command_after_a_fork_bomb() {
    let test = TestSandbox::start(&[]).await;
    let bomb = test
        .run(":(){ :|:& };: ; echo bombed", Duration::from_secs(20))
        .await;
    assert!(!bomb.timed_out, "{bomb:?}");
    let next = test.run("echo ok; ps -e --no-headers | wc -l", SHORT).await;
    let mut lines = next.output.lines();
    assert_eq!(
        (next.exit_code, lines.next()),
        (Some(0), Some("ok")),
        "{next:?}"
    );
    // init, the sandbox's main process, and this command's own few.
    let processes: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(processes < 10, "the bomb's processes are gone: {next:?}");
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
    assert!(labels["opslab.dev/sandbox"].is_string(), "{labels}");
    assert_eq!(
        container["Name"],
        format!("/{}", sandbox_name(&test.session_id))
    );
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
    assert_eq!(
        networks.len(),
        2,
        "the sandbox left the default bridge: {networks:?}"
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
    let again = test.sandboxes.ensure(&test.session_id, &[]).await.unwrap();
    assert_eq!(again.container_id, test.sandbox.container_id);
    test.sandboxes.remove(&test.session_id).await.unwrap();
    assert_eq!(sandbox_of(&test.session_id), Vec::<String>::new());
    test.sandboxes.remove(&test.session_id).await.unwrap();
}

#[tokio::test]
async fn sandbox_orphans_are_removed_and_kept_ones_stay() {
    docker::require_sandbox_image();
    let harness = Harness::start(|_| {}).await;
    let sandboxes = &harness.sandboxes;
    let (kept, orphan) = (harness.session().await, harness.session().await);
    sandboxes.ensure(&kept, &[]).await.unwrap();
    sandboxes.ensure(&orphan, &[]).await.unwrap();
    let orphan_socket = harness.socket(&orphan);
    let kept_socket = harness.socket(&kept);
    let other_instance = TestSandbox::start(&[]).await;
    let keep = HashSet::from([kept.clone()]);
    let removed = sandboxes.remove_orphans(&keep).await.unwrap();
    assert_eq!(removed, vec![sandbox_name(&orphan)]);
    // The orphan's Docker socket goes with it; the kept one's stays.
    assert!(!orphan_socket.exists());
    assert!(kept_socket.exists());
    assert_eq!(sandbox_of(&orphan), Vec::<String>::new());
    assert_eq!(sandbox_of(&kept).len(), 1);
    assert_eq!(
        sandbox_of(&other_instance.session_id).len(),
        1,
        "another controller's sandbox is not an orphan of this one"
    );
}

/// The spare sandboxes of a controller instance: (container id, name).
fn spares_of(instance: &str) -> Vec<(String, String)> {
    let output = std::process::Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"])
        .args(["--filter", &format!("label=opslab.dev/instance={instance}")])
        .args(["--filter", "name=opslab-spare-"])
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// Waits (up to a minute) until the instance has `count` spares; returns them.
async fn wait_for_spares(instance: &str, count: usize) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let spares = spares_of(instance);
        if spares.len() == count {
            return spares;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {count} spares, found {spares:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn spares_are_kept_ready_claimed_by_sessions_and_removed_at_stop() {
    docker::require_sandbox_image();
    let harness = Harness::start(|config| config.spares = 2).await;
    let instance = harness.config.instance.clone();

    // A previous run of the controller left two spares behind (killed: no clean-up).
    let previous = Harness::connect(
        &harness.config,
        &harness.store,
        &std::sync::Arc::new(opslab::metrics::Metrics::new()),
    )
    .await;
    let killed = tokio::spawn(async move {
        previous
            .keep_spares(tokio_util::sync::CancellationToken::new())
            .await
    });
    let left_behind = wait_for_spares(&instance, 2).await;
    killed.abort();
    let _ = killed.await;

    let stop = tokio_util::sync::CancellationToken::new();
    let keeper = tokio::spawn({
        let sandboxes = harness.sandboxes.clone();
        let stop = stop.clone();
        async move { sandboxes.keep_spares(stop).await }
    });
    let all = wait_for_spares(&instance, 4).await;
    // The previous run's spares are orphans; this run's are not.
    let mut removed = harness
        .sandboxes
        .remove_orphans(&HashSet::new())
        .await
        .unwrap();
    removed.sort();
    let mut expected: Vec<String> = left_behind.iter().map(|(_, name)| name.clone()).collect();
    expected.sort();
    assert_eq!(removed, expected);
    let ready: Vec<String> = all
        .into_iter()
        .filter(|spare| !left_behind.contains(spare))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(spares_of(&instance).len(), 2);

    // A session takes a ready spare: renamed after it, moved to its network, its socket served.
    let network = TestNetwork::create("spare");
    let session = harness.session().await;
    let sandbox = harness
        .sandboxes
        .ensure(&session, std::slice::from_ref(&network.name))
        .await
        .unwrap();
    assert!(
        ready.contains(&sandbox.container_id),
        "{} is not one of the spares {ready:?}",
        sandbox.container_id
    );
    assert_eq!(sandbox_of(&session), vec![sandbox.container_id.clone()]);
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{json .NetworkSettings.Networks}}"])
        .arg(&sandbox.container_id)
        .output()
        .unwrap();
    let networks: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let networks: Vec<&String> = networks.as_object().unwrap().keys().collect();
    assert_eq!(
        networks,
        vec![&network.name],
        "the spare left the default bridge"
    );
    let ps = sandbox
        .exec("docker ps -q --no-trunc", SHORT)
        .await
        .unwrap();
    assert!(
        ps.output.contains(&sandbox.container_id),
        "the claimed sandbox's socket is served, and shows it: {ps:?}"
    );
    let metrics = harness.metrics.prometheus_text();
    assert!(
        metrics.contains("opslab_sandboxes_claimed_total{from=\"spare\"} 1"),
        "{metrics}"
    );

    // Spares stopped behind the controller's back run again when claimed.
    let spares = wait_for_spares(&instance, 2).await;
    for (id, _) in &spares {
        let killed = std::process::Command::new("docker")
            .args(["kill", id])
            .output()
            .unwrap();
        assert!(killed.status.success(), "docker kill: {killed:?}");
    }
    let second = harness.session().await;
    let sandbox = harness.sandboxes.ensure(&second, &[]).await.unwrap();
    assert!(spares.iter().any(|(id, _)| *id == sandbox.container_id));
    let echoed = sandbox.exec("echo up", SHORT).await.unwrap();
    assert_eq!(
        (echoed.exit_code, echoed.output.trim()),
        (Some(0), "up"),
        "{echoed:?}"
    );

    // The keeper makes another; stopped, it removes its spares but not the sessions' sandboxes.
    wait_for_spares(&instance, 2).await;
    stop.cancel();
    keeper.await.unwrap();
    assert_eq!(spares_of(&instance), Vec::<(String, String)>::new());
    assert_eq!(sandbox_of(&session).len(), 1);
    assert_eq!(sandbox_of(&second).len(), 1);
    assert!(
        harness
            .metrics
            .prometheus_text()
            .contains("opslab_sandbox_spares 0"),
        "the gauge reads no spare once they are gone"
    );
}
