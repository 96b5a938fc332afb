//! Kubernetes mode against a real API server (kube-apiserver v1.20 and etcd, see
//! tests/support/kube_api.rs): the real controller binary, a scripted model, real sandboxes.
//! What a mock cannot know: the schema, server-side apply, watches, Events as the server keeps them.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use opslab::incident::{ConditionStatus, ConditionType, Incident, Phase};
use serde_json::json;

use crate::support::controller::{Controller, Options, scripted};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
use crate::support::kube_api::{KubeApi, wait_for_incident};

const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

async fn create_incident(api: &KubeApi, name: &str, title: &str) -> Incident {
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"title": title, "severity": "high"},
    }))
    .unwrap();
    api.incidents()
        .create(&PostParams::default(), &incident)
        .await
        .expect("the API server accepts the Incident")
}

async fn wait_for_phase(
    api: &KubeApi,
    controller: &Controller,
    name: &str,
    phase: Phase,
) -> Incident {
    wait_for_incident(
        &api.incidents(),
        name,
        &format!("phase {phase}"),
        SESSION_TIMEOUT,
        || {
            format!(
                "{}\n--- kube-apiserver ---\n{}",
                controller.logs(),
                api.log()
            )
        },
        |incident| incident.status.as_ref().is_some_and(|s| s.phase == phase),
    )
    .await
}

/// The Events about the Incident `name`, oldest first.
async fn events_of(api: &KubeApi, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event
                .regarding
                .as_ref()
                .is_some_and(|regarding| regarding.name.as_deref() == Some(name))
        })
        .collect();
    found.sort_by_key(|event| event.event_time.as_ref().map(|time| time.0));
    found
}

/// Polls an HTTP endpoint of the controller until `check` passes on (status, body).
pub(crate) async fn wait_for_http(
    controller: &Controller,
    path: &str,
    what: &str,
    check: impl Fn(u16, &str) -> bool,
) {
    let url = format!("{}{path}", controller.http_url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = match reqwest::get(&url).await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(error) => (0, error.to_string()),
        };
        if check(status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {what}; last answer {status}: {body}\ncontroller log:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Without `--leader-election` (the chart's default), /readyz turns 200 once the Incidents are
/// listed, so a rollout can complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_readyz_turns_ready_without_leader_election() {
    let api = KubeApi::start().await;
    let (_llm, controller) = scripted(vec![], api.controller_mode()).await;
    wait_for_http(&controller, "/readyz", "ready", |status, _| status == 200).await;
    assert!(
        controller.logs().contains("Incidents listed: ready"),
        "{}",
        controller.logs()
    );
}

/// An Incident made through the API is investigated in a real sandbox and resolved: the status
/// (server-side applied, with observedGeneration and conditions), the finalizer, the Events and the
/// Incidents-by-phase gauge all show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_create_investigate_resolve() {
    let api = KubeApi::start().await;
    let (llm, controller) = scripted(
        vec![
            Turn::shell("echo checking the api", "look first"),
            Turn::report("resolved", "restarted the api"),
        ],
        api.controller_mode(),
    )
    .await;
    create_incident(&api, "api-down", "api returns 500").await;

    let resolved = wait_for_phase(&api, &controller, "api-down", Phase::Resolved).await;
    let status = resolved.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1), "{status:#?}");
    assert_eq!((status.commands, status.attempt), (1, 1), "{status:#?}");
    let condition = |type_: ConditionType| {
        status
            .condition(type_.clone())
            .unwrap_or_else(|| panic!("no {type_} condition: {status:#?}"))
            .clone()
    };
    assert_eq!(
        condition(ConditionType::Resolved).status,
        ConditionStatus::True
    );
    assert_eq!(
        condition(ConditionType::Valid).status,
        ConditionStatus::True
    );
    assert_eq!(
        condition(ConditionType::Resolved).observed_generation,
        Some(1)
    );
    assert_eq!(
        status.report.as_ref().map(|report| report.summary.as_str()),
        Some("restarted the api")
    );
    assert_eq!(
        resolved.metadata.finalizers.as_deref(),
        Some(&[opslab::source::kubernetes::FINALIZER.to_string()][..])
    );
    // The status is the controller's, by server-side apply on /status.
    let managers: Vec<(String, String)> = resolved
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|entry| {
            (
                entry.manager.clone().unwrap_or_default(),
                entry.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("opslab".to_string(), "Apply".to_string())),
        "{managers:?}"
    );
    // The finalizer's patch is the controller's too, not `unknown`'s.
    let finalizer_managers: Vec<String> = resolved
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.to_string().contains("f:finalizers"))
        })
        .map(|entry| entry.manager.clone().unwrap_or_default())
        .collect();
    assert_eq!(finalizer_managers, ["opslab"], "{managers:?}");
    assert_eq!(llm.requests().len(), 2);

    let deadline = Instant::now() + Duration::from_secs(30);
    let reasons = loop {
        let events = events_of(&api, "api-down").await;
        let reasons: Vec<String> = events
            .iter()
            .filter_map(|event| event.reason.clone())
            .collect();
        if reasons.contains(&"Resolved".to_string()) || Instant::now() > deadline {
            for event in &events {
                assert_eq!(
                    event.reporting_controller.as_deref(),
                    Some("opslab-controller")
                );
                // The replica's identity (host name and pid, without a POD_NAME).
                let instance = event.reporting_instance.as_deref().unwrap_or_default();
                assert!(
                    !instance.is_empty() && instance != "opslab-controller",
                    "{instance}"
                );
            }
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reasons, ["SessionStarted", "Resolved"]);

    wait_for_http(
        &controller,
        "/metrics",
        "one Incident counted as Resolved",
        |_, body| {
            body.lines()
                .any(|line| line == "opslab_incidents{phase=\"Resolved\"} 1")
                && body
                    .lines()
                    .any(|line| line == "opslab_incidents{phase=\"Investigating\"} 0")
        },
    )
    .await;
}

/// A retry (the annotation `opslab retry --source kube` sets) is a new attempt, and its Events are
/// new Events: not counted into the first attempt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_retry_announces_its_attempt_in_new_events() {
    let api = KubeApi::start().await;
    let (_llm, controller) = scripted(
        vec![
            Turn::report("unresolved", "could not find the cause"),
            Turn::report("resolved", "found it the second time"),
        ],
        api.controller_mode(),
    )
    .await;
    create_incident(&api, "again", "try again").await;
    wait_for_phase(&api, &controller, "again", Phase::Unresolved).await;

    let patch = json!({"metadata": {"annotations": {
        opslab::incident::RETRY_ANNOTATION: "2026-12-02T05:00:00Z by alice",
    }}});
    api.incidents()
        .patch("again", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let resolved = wait_for_phase(&api, &controller, "again", Phase::Resolved).await;
    assert_eq!(resolved.status.unwrap().attempt, 2);

    let events = events_of(&api, "again").await;
    let started: Vec<(Option<String>, Option<i32>)> = events
        .iter()
        .filter(|event| event.reason.as_deref() == Some("SessionStarted"))
        .map(|event| {
            (
                event.note.clone(),
                event.series.as_ref().map(|series| series.count),
            )
        })
        .collect();
    assert_eq!(
        started.len(),
        2,
        "one SessionStarted per attempt: {started:?}"
    );
    assert!(
        started[0].0.as_deref().unwrap().ends_with("attempt 1")
            && started[1].0.as_deref().unwrap().ends_with("attempt 2"),
        "{started:?}"
    );
    assert!(
        started.iter().all(|(_, series)| series.is_none()),
        "no Event counts another attempt's: {started:?}"
    );
}

/// Deleting an Incident while its command runs: the finalizer holds the object until the session is
/// cancelled and its sandbox removed, then the object goes; the session's last wake-up for the
/// gone Incident is no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_delete_mid_command_removes_the_sandbox_before_the_object() {
    let api = KubeApi::start().await;
    let (_llm, controller) = scripted(
        vec![
            Turn::shell("sleep 60", "watch the logs for a minute"),
            Turn::report("resolved", "never reached"),
        ],
        api.controller_mode(),
    )
    .await;
    create_incident(&api, "cache-down", "cache is down").await;
    let running = wait_for_incident(
        &api.incidents(),
        "cache-down",
        "a command running",
        SESSION_TIMEOUT,
        || controller.logs(),
        |incident| incident.status.as_ref().is_some_and(|s| s.commands == 1),
    )
    .await;
    let session = running.status.unwrap().session_id.unwrap();
    assert_eq!(docker::sandbox_of(&session).len(), 1, "the sandbox runs");

    api.incidents()
        .delete("cache-down", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while api
        .incidents()
        .get_opt("cache-down")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the finalizer was never removed:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        docker::sandbox_of(&session).is_empty(),
        "no sandbox is left once the object is gone"
    );
    // The session's wake-ups after the delete find nothing to reconcile: not a warning.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = controller.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| {
            line.contains(" WARN ") && !line.contains("opslab::sandbox: this Docker engine")
        })
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// A replica with leader election on this API server, the replicas' shared `store` (PostgreSQL, as
/// the chart requires for several), its own scripted model, and `identity`.
async fn replica(
    api: &KubeApi,
    store: &str,
    identity: &str,
    script: Vec<Turn>,
) -> (FakeLlm, Controller) {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let options = api.controller_mode()(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--lease-name", "opslab-test")
            .arg("--lease-namespace", "default")
            .arg("--lease-duration-seconds", 3)
            .arg("--lease-identity", identity)
            .store(store),
    );
    let controller = Controller::start_with_env(options, &[("OPSLAB_LEADER_ELECTION", "true")]);
    (llm, controller)
}

/// Two replicas with leader election on one store: both are ready, exactly one (the Lease's holder)
/// drives the session; when it dies, the other takes the Lease and drives the next (and does not
/// start the first over). Needs `OPSLAB_TEST_POSTGRES_URL` (scripts/test starts a server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_two_replicas_one_leads_and_the_other_takes_over() {
    let api = KubeApi::start().await;
    let script = || {
        vec![
            Turn::shell("echo on duty", "look"),
            Turn::report("resolved", "done"),
        ]
    };
    let store = crate::support::store::fresh_postgres_database().await;
    let (llm_a, mut a) = replica(&api, &store, "replica-a", script()).await;
    let (llm_b, b) = replica(&api, &store, "replica-b", script()).await;
    for controller in [&a, &b] {
        wait_for_http(
            controller,
            "/readyz",
            "ready (leader or standby)",
            |status, _| status == 200,
        )
        .await;
    }
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), "default");
    let holder = || async {
        leases
            .get_opt("opslab-test")
            .await
            .unwrap()
            .and_then(|lease| lease.spec?.holder_identity)
    };
    create_incident(&api, "first", "the first").await;
    wait_for_phase(&api, &a, "first", Phase::Resolved).await;
    let leader = holder().await.expect("a holder");
    let (led, idle) = match leader.as_str() {
        "replica-a" => (&llm_a, &llm_b),
        "replica-b" => (&llm_b, &llm_a),
        other => panic!("unknown holder {other}"),
    };
    assert_eq!(led.requests().len(), 2, "the leader drove the session");
    assert!(idle.requests().is_empty(), "the follower did nothing");

    // The leader dies (no clean-up); the other takes over and drives the next Incident.
    let survivor = if leader == "replica-a" {
        a.kill9();
        &b
    } else {
        drop(b);
        &a
    };
    create_incident(&api, "second", "the second").await;
    wait_for_phase(&api, survivor, "second", Phase::Resolved).await;
    assert_ne!(holder().await.as_deref(), Some(leader.as_str()));
    assert_eq!(idle.requests().len(), 2, "the new leader drove the session");
}

/// The controller killed mid-command (no clean-up) and started again: the same session resumes (no
/// new attempt, no second SessionStarted), the lost command is reported interrupted, and the
/// Incident is resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_restart_mid_session_resumes_it() {
    let api = KubeApi::start().await;
    let (llm, mut controller) = scripted(
        vec![
            Turn::shell("sleep 30", "wait for the cache to warm"),
            Turn::report("resolved", "warmed after the restart"),
        ],
        api.controller_mode(),
    )
    .await;
    create_incident(&api, "warm", "cache is cold").await;
    let running = wait_for_incident(
        &api.incidents(),
        "warm",
        "a command running",
        SESSION_TIMEOUT,
        || controller.logs(),
        |incident| incident.status.as_ref().is_some_and(|s| s.commands == 1),
    )
    .await;
    controller.restart();
    let resolved = wait_for_phase(&api, &controller, "warm", Phase::Resolved).await;
    let (before, after) = (running.status.unwrap(), resolved.status.unwrap());
    assert_eq!(after.session_id, before.session_id, "the same session");
    assert_eq!((after.attempt, after.commands), (1, 1), "{after:#?}");
    assert!(llm.requests()[1].to_string().contains("INTERRUPTED"));
    let started = events_of(&api, "warm")
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("SessionStarted"))
        .count();
    assert_eq!(started, 1);
}

/// A status in a manifest is not the user's: a real API server drops it on create (the status
/// subresource), so the Incident is accepted as new; a bad status written to /status is refused by
/// the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_status_is_dropped_on_create_and_a_bad_one_refused_on_status() {
    let api = KubeApi::start().await;
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "with-status", "namespace": "default"},
        "spec": {"title": "api down"},
        "status": {"phase": "Resolved", "report": {"outcome": "resolved", "summary": "claimed"}},
    }))
    .unwrap();
    let created = api
        .incidents()
        .create(&PostParams::default(), &incident)
        .await
        .expect("accepted: the status is not checked on create, it is dropped");
    assert!(created.status.is_none(), "{:?}", created.status);

    let patch = json!({"status": {"phase": "Resolved",
                                  "report": {"outcome": "fixed", "summary": "restarted redis"}}});
    let refused = api
        .incidents()
        .patch_status(
            "with-status",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect_err("a status outside the schema is refused");
    let kube::Error::Api(status) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("outcome"), "{}", status.message);
}

/// With `--incident-selector`, a controller works only the Incidents with those labels: another
/// release (or a person) keeps the rest, untouched — no finalizer, no status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_controller_works_only_the_incidents_it_selects() {
    let api = KubeApi::start().await;
    let (llm, controller) = scripted(
        vec![Turn::report("resolved", "the sre team's")],
        |options| api.controller_mode()(options).arg("--incident-selector", "team=sre"),
    )
    .await;
    create_incident(&api, "not-mine", "another team's").await;
    let labelled: Incident = serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "mine", "namespace": "default", "labels": {"team": "sre"}},
        "spec": {"title": "the sre team's", "severity": "high"},
    }))
    .unwrap();
    api.incidents()
        .create(&PostParams::default(), &labelled)
        .await
        .unwrap();
    wait_for_phase(&api, &controller, "mine", Phase::Resolved).await;
    let other = api.incidents().get("not-mine").await.unwrap();
    assert!(other.status.is_none(), "{:?}", other.status);
    assert!(
        other.metadata.finalizers.is_none(),
        "{:?}",
        other.metadata.finalizers
    );
    assert_eq!(
        llm.requests().len(),
        1,
        "one session, for the selected Incident"
    );
    assert!(
        controller
            .logs()
            .contains("watching the Incidents it selects"),
        "{}",
        controller.logs()
    );
}
