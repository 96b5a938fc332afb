//! Replicas of one controller (Kubernetes mode, leader election) on one Docker engine: they share the
//! instance label, and each spare sandbox is its maker's. Real Docker; one `Sandboxes` per replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opslab::metrics::Metrics;
use opslab::sandbox::{LABEL_REPLICA, SandboxConfig, Sandboxes};
use tokio_util::sync::CancellationToken;

use crate::support::docker;
use crate::support::sandboxes::Harness;

/// The spares of an instance: (container id, replica label).
fn spares_of(instance: &str) -> Vec<(String, String)> {
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL_REPLICA}\"}}}}");
    let output = std::process::Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--format", &format])
        .args(["--filter", &format!("label=opslab.dev/instance={instance}")])
        .args(["--filter", "name=opslab-spare-"])
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, replica)| (id.to_string(), replica.to_string()))
        .collect()
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of(spares: &[(String, String)], replica: &str) -> Vec<String> {
    spares
        .iter()
        .filter(|(_, owner)| owner == replica)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Another replica of the harness's controller: same instance, its own identity.
async fn replica(
    harness: &Harness,
    name: &str,
    configure: impl FnOnce(&mut SandboxConfig),
) -> Sandboxes {
    let mut config = SandboxConfig {
        replica: name.into(),
        ..harness.config.clone()
    };
    configure(&mut config);
    Harness::connect(&config, &harness.store, &Arc::new(Metrics::new())).await
}

fn keep(sandboxes: &Sandboxes, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let (sandboxes, stop) = (sandboxes.clone(), stop.clone());
    tokio::spawn(async move { sandboxes.keep_spares(stop).await })
}

/// A follower starting (its orphan collection) or stopping (its spares' removal) leaves the
/// leader's spare alone, and the leader can still claim it.
#[tokio::test]
async fn kube_replicas_each_keep_their_own_spares() {
    docker::require_sandbox_image();
    let harness = Harness::start(|config| config.replica = "leader".into()).await;
    let instance = harness.config.instance.clone();
    let leader_stop = CancellationToken::new();
    let leader_keeper = keep(&harness.sandboxes, &leader_stop);
    wait_until("the leader has its spare", || {
        of(&spares_of(&instance), "leader").len() == 1
    })
    .await;
    let leaders = of(&spares_of(&instance), "leader");

    // A follower starts: orphan collection first (as the controller does), then its own spare.
    let follower = replica(&harness, "follower", |_| {}).await;
    follower
        .remove_orphans(&Default::default())
        .await
        .expect("orphan collection runs");
    assert_eq!(
        of(&spares_of(&instance), "leader"),
        leaders,
        "a follower's orphan collection leaves the leader's spare"
    );
    let follower_stop = CancellationToken::new();
    let follower_keeper = keep(&follower, &follower_stop);
    wait_until("the follower has its spare", || {
        of(&spares_of(&instance), "follower").len() == 1
    })
    .await;
    // The leader's collection (after a session, say) leaves the follower's.
    harness
        .sandboxes
        .remove_orphans(&Default::default())
        .await
        .unwrap();
    assert_eq!(of(&spares_of(&instance), "follower").len(), 1);

    // The follower stops: its spare goes, the leader's stays.
    follower_stop.cancel();
    follower_keeper.await.unwrap();
    assert_eq!(spares_of(&instance).len(), 1, "{:?}", spares_of(&instance));
    assert_eq!(of(&spares_of(&instance), "leader"), leaders);

    // The leader's spare is still there to claim.
    let session = harness.session().await;
    let sandbox = harness.sandboxes.ensure(&session, &[]).await.unwrap();
    assert_eq!(
        sandbox.container_id, leaders[0],
        "the leader claimed its spare"
    );
    assert!(
        harness
            .metrics
            .openmetrics()
            .contains("opslab_sandboxes_claimed_total{from=\"spare\"} 1"),
    );
    leader_stop.cancel();
    leader_keeper.await.unwrap();
}

/// A replica that went away without its clean-up (killed) leaves spares behind: once older than
/// any a live replica keeps (it replaces its own after `spare_max_age`), another replica removes
/// them; before that, it does not.
#[tokio::test]
async fn kube_a_gone_replicas_spares_are_removed_once_abandoned() {
    docker::require_sandbox_image();
    let max_age = Duration::from_secs(2);
    let harness = Harness::start(|config| {
        config.replica = "survivor".into();
        config.spare_max_age = max_age;
    })
    .await;
    let instance = harness.config.instance.clone();

    // A live replica replaces its spare once it is older than the limit.
    let stop = CancellationToken::new();
    let keeper = keep(&harness.sandboxes, &stop);
    wait_until("a spare", || {
        of(&spares_of(&instance), "survivor").len() == 1
    })
    .await;
    let first = of(&spares_of(&instance), "survivor");
    wait_until("the old spare is replaced", || {
        let now = of(&spares_of(&instance), "survivor");
        now.len() == 1 && now != first
    })
    .await;
    stop.cancel();
    keeper.await.unwrap();

    // Another replica is killed with its spare made.
    let gone = replica(&harness, "gone", |_| {}).await;
    let killed = keep(&gone, &CancellationToken::new());
    wait_until("the other replica's spare", || {
        of(&spares_of(&instance), "gone").len() == 1
    })
    .await;
    killed.abort();
    let _ = killed.await;

    harness
        .sandboxes
        .remove_orphans(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        of(&spares_of(&instance), "gone").len(),
        1,
        "a young spare may be a live replica's"
    );
    // Docker's creation times are in seconds: well past twice the limit.
    tokio::time::sleep(max_age * 2 + Duration::from_secs(2)).await;
    harness
        .sandboxes
        .remove_orphans(&Default::default())
        .await
        .unwrap();
    assert!(
        of(&spares_of(&instance), "gone").is_empty(),
        "{:?}",
        spares_of(&instance)
    );
}
