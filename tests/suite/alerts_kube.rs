//! The Alertmanager intake in Kubernetes mode. Against a real API server (tests/support/kube_api.rs)
//! and the real controller: a real Alertmanager fires, repeats, joins, resolves and fires again, and
//! the Incidents the API server keeps show it. Against a mock API server (tower-test): the exact
//! calls the intake makes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::api::ListParams;
use kube::client::Body;
use opslab::alerts::{
    self, GROUP_LABEL, IntakeConfig, PREVIOUS_ANNOTATION, RESOLVED_ANNOTATION, Rules,
    SEQUENCE_ANNOTATION,
};
use opslab::audit::{Redactor, Store};
use opslab::incident::{ConditionStatus, ConditionType, Incident, NOTE_ANNOTATION, Phase};
use opslab::metrics::Metrics;
use opslab::source::kubernetes::alert_filing::ApiTarget;
use serde_json::{Value, json};

use super::alerts::{
    alert_annotations, alert_labels, annotation, intake_decisions, metric, notification, post,
    seen_alerts,
};
use crate::support::alertmanager::{self, Alertmanager};
use crate::support::controller::{Controller, Options};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
use crate::support::kube_api::{KubeApi, wait_for_incident};

const TOKEN: &str = "kube-intake-token-51d84b067f3a9c2e";
const WAIT: Duration = Duration::from_secs(90);

/// The Incidents the intake filed (those with the group label), in the order it filed them.
async fn filed(api: &KubeApi) -> Vec<Incident> {
    let mut found = api
        .incidents()
        .list(&ListParams::default().labels(GROUP_LABEL))
        .await
        .expect("the Incidents are listed")
        .items;
    found.sort_by_key(|incident| annotation(incident, SEQUENCE_ANNOTATION));
    found
}

/// Polls the filed Incidents until `check` gives a value, or fails saying what was awaited.
async fn until<T>(
    what: &str,
    api: &KubeApi,
    controller: &Controller,
    am: &Alertmanager,
    check: impl Fn(Vec<Incident>) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let incidents = filed(api).await;
        if let Some(value) = check(incidents.clone()) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nfiled: {incidents:#?}\ncontroller log:\n{}\n\
             alertmanager:\n{}",
            controller.logs(),
            am.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_condition(incident: &Incident, type_: ConditionType, status: ConditionStatus) -> bool {
    incident.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|condition| condition.type_ == type_ && condition.status == status)
    })
}

/// Fire → one Incident created through the API, labelled with the group, worked by a session;
/// the same alert again and a second of the group → still one, updated (the agent told);
/// resolved → `AlertResolved` on its status; fired after it ended → a new Incident naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_real_alertmanager_files_updates_resolves_and_files_anew() {
    docker::require_sandbox_image();
    let api = KubeApi::start().await;
    // Each session runs one long command (the group's updates arrive while it runs), then reports.
    let llm = FakeLlm::start_each(
        Protocol::Anthropic,
        vec![
            Turn::shell("sleep 20", "let the alerts settle"),
            Turn::report("resolved", "restarted redis"),
        ],
    )
    .await;
    let controller = Controller::start_with_env(
        api.controller_mode()(
            Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"),
        ),
        &[("OPSLAB_ALERTS_TOKEN", TOKEN)],
    );
    let webhook = format!("{}/api/v1/alerts", controller.http_url());
    // Repeats every 2 s: they must change nothing.
    let am = Alertmanager::start(&webhook, TOKEN, Duration::from_secs(2)).await;
    let alertname = format!(
        "KubeDown{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (a, b) = (alert_labels(&alertname, "a"), alert_labels(&alertname, "b"));
    let logs = || {
        format!(
            "{}\n--- kube-apiserver ---\n{}",
            controller.logs(),
            api.log()
        )
    };

    am.post(&[alertmanager::firing(a.clone(), alert_annotations("a"))])
        .await;
    let first = until("the first Incident", &api, &controller, &am, |found| {
        found.into_iter().next()
    })
    .await;
    let name = first.metadata.name.clone().unwrap();
    assert_eq!(first.spec.title, "redis a does not answer");
    assert_eq!(first.spec.severity, opslab::incident::Severity::Critical);
    let group = first.metadata.labels.as_ref().unwrap()[GROUP_LABEL].clone();
    assert_eq!(group.len(), 32, "the group's hash labels it");
    let investigating = wait_for_incident(
        &api.incidents(),
        &name,
        "Investigating",
        WAIT,
        logs,
        |incident| {
            incident
                .status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Investigating)
        },
    )
    .await;
    let uid = investigating.metadata.uid.clone().unwrap();
    assert!(has_condition(
        &investigating,
        ConditionType::AlertResolved,
        ConditionStatus::False
    ));

    // The same alert again and a second one of the group: still one Incident, its spec updated.
    am.post(&[
        alertmanager::firing(a.clone(), alert_annotations("a")),
        alertmanager::firing(b.clone(), alert_annotations("b")),
    ])
    .await;
    let updated = until("the second alert told", &api, &controller, &am, |found| {
        found
            .into_iter()
            .find(|incident| seen_alerts(incident) == 2)
    })
    .await;
    assert_eq!(filed(&api).await.len(), 1, "one Incident for the group");
    assert_eq!(updated.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(
        updated.spec.description.contains("joined the group"),
        "{}",
        updated.spec.description
    );
    let ended = wait_for_incident(&api.incidents(), &name, "Resolved", WAIT, logs, |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Resolved)
    })
    .await;
    assert_eq!(ended.status.as_ref().unwrap().observed_generation, Some(2));
    let told_agent = llm.requests().iter().any(|request| {
        let text = request.to_string();
        text.contains("The ticket was updated (generation 2)") && text.contains("joined the group")
    });
    assert!(told_agent, "the running agent was told the alert joined");

    // Resolved: recorded on the ended Incident's status; no new attempt.
    am.post(&[
        alertmanager::ended(a.clone(), alert_annotations("a")),
        alertmanager::ended(b.clone(), alert_annotations("b")),
    ])
    .await;
    let resolved = wait_for_incident(&api.incidents(), &name, "AlertResolved", WAIT, logs, |i| {
        has_condition(i, ConditionType::AlertResolved, ConditionStatus::True)
    })
    .await;
    assert!(!annotation(&resolved, RESOLVED_ANNOTATION).is_empty());
    let status = resolved.status.unwrap();
    assert_eq!((status.phase, status.attempt), (Phase::Resolved, 1));
    assert_eq!(
        resolved.spec, ended.spec,
        "an ended Incident's spec is kept"
    );

    // Fires again after its Incident ended: a new Incident through the API, naming the first.
    am.post(&[alertmanager::firing(a.clone(), alert_annotations("a"))])
        .await;
    let second = until("the second Incident", &api, &controller, &am, |found| {
        found.into_iter().nth(1)
    })
    .await;
    assert_ne!(second.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(
        annotation(&second, PREVIOUS_ANNOTATION),
        format!("default/{name}")
    );
    assert_eq!(second.metadata.labels.as_ref().unwrap()[GROUP_LABEL], group);
    assert!(
        second.spec.description.contains(&format!(
            "fired before: Incident default/{name} (ended Resolved)"
        )),
        "{}",
        second.spec.description
    );

    // Every decision was counted and audited; the repeats changed nothing.
    assert_eq!(metric(&controller, "created").await, 2);
    assert_eq!(metric(&controller, "resolved").await, 1);
    assert!(metric(&controller, "deduplicated").await >= 1);
    let decisions: Vec<String> = intake_decisions(&controller)
        .await
        .into_iter()
        .map(|event| event.decision.as_str().to_string())
        .filter(|decision| decision != "deduplicated")
        .collect();
    let count = |wanted: &str| decisions.iter().filter(|d| *d == wanted).count();
    assert!(
        decisions.first().map(String::as_str) == Some("created")
            && count("created") == 2
            && count("resolved") == 1
            && count("updated") >= 1,
        "{decisions:?}"
    );
    assert!(
        !controller.logs().contains(TOKEN),
        "the token is never logged"
    );
    drop(am);
}

/// The requests the mock API server got, as `METHOD path?query`, with their bodies.
type Requests = Arc<Mutex<Vec<(String, Value)>>>;

/// The intake on the loopback in Kubernetes mode, on a mock API server that answers lists with
/// `listed` (the group's Incidents) and echoes writes; returns the webhook URL and the requests.
async fn mock_intake(
    dir: &tempfile::TempDir,
    listed: Arc<Mutex<Vec<Value>>>,
) -> (String, Requests) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.lock()
                .unwrap()
                .push((format!("{} {}", parts.method, parts.uri), body.clone()));
            let reply = match parts.method {
                http::Method::GET => {
                    json!({"apiVersion": "opslab.dev/v1alpha1", "kind": "IncidentList",
                           "metadata": {"resourceVersion": "1"},
                           "items": listed.lock().unwrap().clone()})
                }
                // A merge patch answers with the whole object, as the API server does.
                http::Method::PATCH => {
                    let mut object = listed.lock().unwrap()[0].clone();
                    json_patch::merge(&mut object, &body);
                    object
                }
                _ => body,
            };
            respond.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    let store = Store::open(
        dir.path().join("opslab.db"),
        Redactor::new(vec![TOKEN.into()]),
    )
    .await
    .unwrap();
    let intake = alerts::Intake::new(
        IntakeConfig {
            token: TOKEN.into(),
            rules: Rules::default(),
        },
        ApiTarget::new(kube::Client::new(service, "default")),
        store,
        Arc::new(Metrics::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, alerts::routes(Arc::new(intake)))
            .await
            .unwrap()
    });
    (format!("http://{address}/api/v1/alerts"), requests)
}

/// The exact calls: the group is found by its label, a new group is one create, a repeat is a
/// read and nothing else, a resolution of a running Incident one merge patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_intake_finds_the_group_by_label_and_writes_only_what_changed() {
    const INCIDENTS: &str = "/apis/opslab.dev/v1alpha1/namespaces/default/incidents";
    let dir = tempfile::tempdir().unwrap();
    let listed = Arc::new(Mutex::new(Vec::new()));
    let (url, requests) = mock_intake(&dir, listed.clone()).await;
    let firing = notification("ExactCalls");
    let hash = alerts::decide::group_hash(firing["groupKey"].as_str().unwrap());
    let selector = format!("labelSelector=opslab.dev%2Falert-group%3D{hash}");
    let take = || std::mem::take(&mut *requests.lock().unwrap());

    assert_eq!(post(&url, Some(TOKEN), firing.to_string()).await.0, 200);
    let calls = take();
    let methods: Vec<&str> = calls.iter().map(|(call, _)| call.as_str()).collect();
    assert_eq!(methods.len(), 2, "{methods:#?}");
    assert!(
        methods[0].starts_with(&format!("GET {INCIDENTS}?")) && methods[0].contains(&selector),
        "{methods:#?}"
    );
    assert!(
        methods[1].starts_with(&format!("POST {INCIDENTS}")),
        "{methods:#?}"
    );
    let mut created = calls[1].1.clone();
    assert_eq!(created["metadata"]["labels"][GROUP_LABEL], hash.as_str());

    // The API server now holds it (as created, and being investigated).
    created["metadata"]["uid"] = "uid-1".into();
    created["status"] = json!({"phase": "Investigating"});
    listed.lock().unwrap().push(created);
    assert_eq!(post(&url, Some(TOKEN), firing.to_string()).await.0, 200);
    let calls = take();
    assert_eq!(calls.len(), 1, "a repeat is only read: {calls:#?}");
    assert!(calls[0].0.starts_with("GET "), "{calls:#?}");

    let mut resolved = firing.clone();
    resolved["status"] = "resolved".into();
    resolved["alerts"][0]["status"] = "resolved".into();
    resolved["alerts"][0]["endsAt"] = "2026-12-06T10:05:00Z".into();
    assert_eq!(post(&url, Some(TOKEN), resolved.to_string()).await.0, 200);
    let calls = take();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let (patch, body) = &calls[1];
    let name = listed.lock().unwrap()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        patch.starts_with(&format!("PATCH {INCIDENTS}/{name}")),
        "{patch}"
    );
    // Told to the running agent in a note; the spec is not touched (a change would start
    // another attempt if the agent has just reported).
    assert!(body.get("spec").is_none(), "{body:#}");
    assert!(
        body["metadata"]["annotations"][NOTE_ANNOTATION]
            .as_str()
            .is_some_and(|text| text.contains("Alertmanager reports the alert group resolved")),
        "{body:#}"
    );
    assert!(
        body["metadata"]["annotations"][RESOLVED_ANNOTATION].is_string(),
        "{body:#}"
    );
}
