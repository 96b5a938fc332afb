//! Isolation on the real Docker engine: a sandbox is on its Incident's networks or its own, spares
//! wait on none of them, and no sandbox reaches another sandbox or the controller's port. Every
//! connection tried goes to an address on one of the test's own Docker networks.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;

use opslab::sandbox::{Sandbox, own_network_name};
use tokio_util::sync::CancellationToken;

use crate::support::docker::{self, TestNetwork};
use crate::support::sandboxes::Harness;

const SHORT: Duration = Duration::from_secs(30);
/// Has python3, to stand in for the controller's HTTP port and for a service in a sandbox.
const LISTENER_IMAGE: &str = "opslab-demo-api:latest";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The networks a container is on, by name.
fn networks_of(container: &str) -> BTreeSet<String> {
    docker(&[
        "inspect",
        "-f",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        container,
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// A container's address on a network.
fn address_on(container: &str, network: &str) -> String {
    let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let address = docker(&["inspect", "-f", &template, container]);
    assert!(
        !address.is_empty(),
        "{container} has no address on {network}"
    );
    address
}

fn key_of(container: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"opslab.dev/sandbox\"}}",
        container,
    ])
}

fn network_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A container removed when dropped.
struct TestContainer {
    id: String,
}

impl TestContainer {
    fn run(args: &[&str]) -> TestContainer {
        let mut all = vec!["run", "-d", "--label", "opslab-test=isolation"];
        all.extend_from_slice(args);
        TestContainer { id: docker(&all) }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// An HTTP listener on port 8080, in `network_args`' network.
fn listener(network_args: &[&str]) -> TestContainer {
    let mut args = network_args.to_vec();
    args.extend_from_slice(&[
        "--entrypoint",
        "python3",
        LISTENER_IMAGE,
        "-m",
        "http.server",
        "8080",
    ]);
    TestContainer::run(&args)
}

/// `bash -c` TCP connect from inside `sandbox` to `address:port`, 2 s at most: "open" or "closed".
async fn connect(sandbox: &Sandbox, address: &str, port: u16) -> String {
    let command = format!(
        "timeout 2 bash -c 'echo > /dev/tcp/{address}/{port}' 2>/dev/null && echo open || echo closed"
    );
    let outcome = sandbox.exec(&command, SHORT).await.expect("the exec runs");
    outcome.output.trim().to_string()
}

/// Whether `address:port` is reachable from `sandbox` for good: "closed" as soon as one try fails
/// to connect. On engines before Docker 28, bridge isolation lapses for an instant whenever any
/// network is created (`opslab::sandbox::bridge_isolation_lapses`; other tests create networks at
/// the same time), so there a hole must show at three tries a moment apart; on later engines one
/// open try is a hole.
async fn reachable(sandbox: &Sandbox, address: &str, port: u16) -> String {
    let engine = docker(&["version", "-f", "{{.Server.Version}}"]);
    let tries = if opslab::sandbox::bridge_isolation_lapses(&engine) {
        3
    } else {
        1
    };
    for _ in 0..tries {
        if connect(sandbox, address, port).await == "closed" {
            return "closed".into();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    "open".into()
}

/// Waits until a connection from `sandbox` to `address:port` opens (the listener has started).
async fn wait_open(sandbox: &Sandbox, address: &str, port: u16) {
    for _ in 0..50 {
        if connect(sandbox, address, port).await == "open" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{address}:{port} never opened: the positive control failed");
}

#[tokio::test]
async fn isolation_a_sandbox_is_on_its_incidents_networks_or_its_own_only() {
    docker::require_sandbox_image();
    let app = TestNetwork::create("app");
    let db = TestNetwork::create("db");
    for internet in [false, true] {
        let harness = Harness::start(|config| config.internet = internet).await;
        let lone = harness.session().await;
        let sandbox = harness.sandboxes.ensure(&lone, &[]).await.unwrap();
        let key = key_of(&sandbox.container_id);
        let own = own_network_name(&key);
        let expected = if internet { own.as_str() } else { "none" };
        assert_eq!(
            networks_of(&sandbox.container_id),
            set(&[expected]),
            "internet {internet}"
        );
        if internet {
            let label = docker(&[
                "network",
                "inspect",
                "-f",
                "{{index .Labels \"opslab.dev/instance\"}}",
                &own,
            ]);
            assert_eq!(
                label, harness.config.instance,
                "labelled for orphan collection"
            );
        }
        let named = harness.session().await;
        let sandbox = harness
            .sandboxes
            .ensure(&named, &[app.name.clone(), db.name.clone()])
            .await
            .unwrap();
        assert_eq!(
            networks_of(&sandbox.container_id),
            set(&[&app.name, &db.name]),
            "internet {internet}, no spare"
        );
        harness.sandboxes.remove(&lone).await.unwrap();
        assert!(
            !network_exists(&own),
            "the own network goes with its sandbox"
        );
    }
}

#[tokio::test]
async fn isolation_spares_wait_on_no_incident_network_and_move_at_claim() {
    docker::require_sandbox_image();
    let app = TestNetwork::create("app");
    for internet in [false, true] {
        let harness = Harness::start(|config| {
            config.internet = internet;
            config.spares = 1;
        })
        .await;
        let stop = CancellationToken::new();
        let keeper = tokio::spawn({
            let sandboxes = harness.sandboxes.clone();
            let stop = stop.clone();
            async move { sandboxes.keep_spares(stop).await }
        });
        let spare = wait_for_spare(&harness.config.instance, None).await;
        let own = own_network_name(&key_of(&spare));
        let waiting = if internet { own.as_str() } else { "none" };
        assert_eq!(networks_of(&spare), set(&[waiting]), "internet {internet}");

        let session = harness.session().await;
        let sandbox = harness
            .sandboxes
            .ensure(&session, std::slice::from_ref(&app.name))
            .await
            .unwrap();
        assert_eq!(sandbox.container_id, spare, "the spare was claimed");
        assert_eq!(
            networks_of(&spare),
            set(&[&app.name]),
            "internet {internet}"
        );
        let echoed = sandbox.exec("echo up", SHORT).await.unwrap();
        assert_eq!(echoed.output, "up\n");
        // The next spare is not on the Incident's network either.
        let next = wait_for_spare(&harness.config.instance, Some(&spare)).await;
        let next_place = waiting_place(internet, &next);
        assert_eq!(networks_of(&next), set(&[&next_place]));
        if internet {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while network_exists(&own) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the claimed spare's own network is removed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.cancel();
        keeper.await.unwrap();
        if internet {
            assert!(
                !network_exists(&next_place),
                "a removed spare's network goes with it"
            );
        }
    }
}

fn waiting_place(internet: bool, container: &str) -> String {
    if internet {
        own_network_name(&key_of(container))
    } else {
        "none".into()
    }
}

/// Waits (a minute at most) for a spare of `instance` other than `not`: its container id.
async fn wait_for_spare(instance: &str, not: Option<&str>) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=opslab.dev/instance={instance}"),
            "--filter",
            "name=opslab-spare-",
        ]);
        if let Some(id) = listed.split_whitespace().find(|id| Some(*id) != not) {
            return id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no spare was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn isolation_a_sandbox_reaches_neither_another_sandbox_nor_the_controller() {
    docker::require_sandbox_image();
    docker::require_images(&[LISTENER_IMAGE]);
    // The controller as in compose: on its own network, its port published on the host's loopback.
    let controller_network = TestNetwork::create("controller");
    let controller = listener(&[
        "--network",
        &controller_network.name,
        "--label",
        "opslab.dev/component=controller",
        "-p",
        "127.0.0.1::8080",
    ]);
    let controller_address = address_on(&controller.id, &controller_network.name);
    // Positive control: from the controller's network, its port opens.
    let neighbour_harness = Harness::start(|_| {}).await;
    let neighbour_session = neighbour_harness.session().await;
    let neighbour = neighbour_harness
        .sandboxes
        .ensure(
            &neighbour_session,
            std::slice::from_ref(&controller_network.name),
        )
        .await
        .unwrap();
    wait_open(&neighbour, &controller_address, 8080).await;

    for internet in [false, true] {
        let harness = Harness::start(|config| config.internet = internet).await;
        let (first, second) = (harness.session().await, harness.session().await);
        let first = harness.sandboxes.ensure(&first, &[]).await.unwrap();
        let second = harness.sandboxes.ensure(&second, &[]).await.unwrap();
        assert_eq!(
            reachable(&first, &controller_address, 8080).await,
            "closed",
            "internet {internet}: the controller's port"
        );
        if !internet {
            continue;
        }
        // A service in the second sandbox (a listener in its network namespace): it answers on the
        // second sandbox's address, to the second sandbox itself, and not to the first.
        let _service = listener(&["--network", &format!("container:{}", second.container_id)]);
        let own = own_network_name(&key_of(&second.container_id));
        let second_address = address_on(&second.container_id, &own);
        wait_open(&second, &second_address, 8080).await;
        assert_eq!(
            reachable(&first, &second_address, 8080).await,
            "closed",
            "another sandbox"
        );
        // Nor through the host's address on the sandbox's own network, where the controller's
        // port is not published.
        let first_own = own_network_name(&key_of(&first.container_id));
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &first_own,
        ]);
        let published = docker(&["port", &controller.id, "8080/tcp"]);
        let port: u16 = published
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the published port: {published}"));
        assert_eq!(
            reachable(&first, &gateway, port).await,
            "closed",
            "the controller's port, published on the loopback, through the gateway"
        );
    }
}

#[tokio::test]
async fn isolation_the_proxy_shows_no_other_sandbox_in_networks_or_events() {
    docker::require_sandbox_image();
    let app = TestNetwork::create("shared");
    let harness = Harness::start(|_| {}).await;
    let (first, second) = (harness.session().await, harness.session().await);
    let first_sandbox = harness
        .sandboxes
        .ensure(&first, std::slice::from_ref(&app.name))
        .await
        .unwrap();
    let since = jiff::Timestamp::now().as_second() - 1;
    let second_sandbox = harness
        .sandboxes
        .ensure(&second, std::slice::from_ref(&app.name))
        .await
        .unwrap();
    let app_container = TestContainer::run(&[
        "--network",
        &app.name,
        docker::SANDBOX_IMAGE,
        "sleep",
        "infinity",
    ]);
    let inspected = first_sandbox
        .exec(
            &format!(
                "docker network inspect -f '{{{{json .Containers}}}}' {}",
                app.name
            ),
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(inspected.exit_code, Some(0), "{inspected:?}");
    let members: serde_json::Value = serde_json::from_str(inspected.output.trim()).unwrap();
    let members: HashSet<&String> = members.as_object().unwrap().keys().collect();
    assert_eq!(
        members,
        HashSet::from([&first_sandbox.container_id, &app_container.id]),
        "its own sandbox and the application, not the other sandbox"
    );
    assert!(
        !inspected
            .output
            .contains(&opslab::sandbox::sandbox_name(&second))
            && !inspected
                .output
                .contains(&second_sandbox.container_id[..12]),
        "{}",
        inspected.output
    );
    // The event stream since before the second sandbox was made: the application's container, not
    // the other sandbox (its create, rename, start, network connect…).
    let until = jiff::Timestamp::now().as_second() + 1;
    let events = first_sandbox
        .exec(
            &format!(
                "docker events --since {since} --until {until} --format '{{{{.Type}}}} {{{{.Actor.ID}}}} {{{{.Actor.Attributes.container}}}} {{{{.Actor.Attributes.name}}}}'"
            ),
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(events.exit_code, Some(0), "{events:?}");
    assert!(
        events.output.contains(&app_container.id),
        "{}",
        events.output
    );
    assert!(
        !events.output.contains(&second_sandbox.container_id)
            && !events
                .output
                .contains(&opslab::sandbox::sandbox_name(&second)),
        "{}",
        events.output
    );
}

#[tokio::test]
async fn isolation_orphan_networks_are_removed() {
    docker::require_sandbox_image();
    let harness = Harness::start(|config| config.internet = true).await;
    let (kept, orphan) = (harness.session().await, harness.session().await);
    let kept_sandbox = harness.sandboxes.ensure(&kept, &[]).await.unwrap();
    let orphan_sandbox = harness.sandboxes.ensure(&orphan, &[]).await.unwrap();
    let kept_network = own_network_name(&key_of(&kept_sandbox.container_id));
    let orphan_network = own_network_name(&key_of(&orphan_sandbox.container_id));
    let removed = harness
        .sandboxes
        .remove_orphans(&HashSet::from([kept.clone()]))
        .await
        .unwrap();
    assert!(removed.contains(&orphan_network), "{removed:?}");
    assert!(!network_exists(&orphan_network));
    assert!(network_exists(&kept_network));
}

#[tokio::test]
async fn isolation_a_found_sandbox_is_put_back_on_its_networks() {
    docker::require_sandbox_image();
    let app = TestNetwork::create("app");
    let other = TestNetwork::create("other");
    let harness = Harness::start(|config| config.internet = true).await;
    let (named, lone) = (harness.session().await, harness.session().await);
    let named_sandbox = harness
        .sandboxes
        .ensure(&named, std::slice::from_ref(&app.name))
        .await
        .unwrap();
    let lone_sandbox = harness.sandboxes.ensure(&lone, &[]).await.unwrap();
    let own = own_network_name(&key_of(&lone_sandbox.container_id));
    // Moved behind the controller's back (or a claim cut short by a crash).
    docker(&[
        "network",
        "connect",
        &other.name,
        &named_sandbox.container_id,
    ]);
    docker(&["network", "connect", "bridge", &named_sandbox.container_id]);
    docker(&["network", "disconnect", &own, &lone_sandbox.container_id]);
    docker(&[
        "network",
        "connect",
        &other.name,
        &lone_sandbox.container_id,
    ]);
    // The controller again, as after a restart.
    let again = Harness::connect(&harness.config, &harness.store, &harness.metrics).await;
    let found = again
        .ensure(&named, std::slice::from_ref(&app.name))
        .await
        .unwrap();
    assert_eq!(found.container_id, named_sandbox.container_id);
    assert_eq!(networks_of(&found.container_id), set(&[&app.name]));
    let found = again.ensure(&lone, &[]).await.unwrap();
    assert_eq!(found.container_id, lone_sandbox.container_id);
    assert_eq!(networks_of(&found.container_id), set(&[&own]));
}
