//! Kubernetes mode against a mock API server (tower-test): each request the reconciler makes is
//! checked and answered in order, while the sessions run for real (Docker sandbox, scripted model).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use opslab::audit::{SessionRecord, SessionState};
use opslab::incident::{ConditionStatus, ConditionType, Incident, IncidentStatus, Phase};
use opslab::reconcile::Context;
use opslab::session::Wake;
use opslab::source::kubernetes::{FINALIZER, KubeContext, LeaseSettings, leader};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};
use crate::support::kube_mock::{
    ApiServer, INCIDENTS, WAIT, condition, deleting, incident, spawn_reconcile, with_status,
};
use crate::support::reconciler::kube_config;

/// A controller context with a real store and Docker, a scripted model, and a mock API server.
struct Harness {
    _dir: tempfile::TempDir,
    _llm: FakeLlm,
    kctx: Arc<KubeContext>,
    api: ApiServer,
    wakes: mpsc::UnboundedReceiver<Wake>,
    instance: String,
}

impl Harness {
    async fn start(script: Vec<Turn>) -> Harness {
        docker::require_sandbox_image();
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(Protocol::Anthropic, script).await;
        let instance = format!("test-kube-{}", uuid::Uuid::new_v4().simple());
        let config = Arc::new(kube_config(dir.path(), llm.base_url(), &instance));
        let (wake, wakes) = mpsc::unbounded_channel();
        let ctx = Arc::new(Context::new(config, wake).await.expect("a context"));
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let kctx = Arc::new(KubeContext::new(ctx, client, Some("test-pod".into())));
        Harness {
            _dir: dir,
            _llm: llm,
            kctx,
            api: ApiServer(handle),
            wakes,
            instance,
        }
    }

    /// One reconcile that writes a status and publishes an Event (a new phase or attempt): answers
    /// both and returns them, once the reconcile has ended well.
    async fn reconcile_with_event(&mut self, incident: &Incident) -> (IncidentStatus, Value) {
        let reconcile = self.reconcile(incident);
        self.api.answer_with_event(reconcile, incident).await
    }

    /// Runs one reconcile in the background (it waits on the mock server's answers).
    fn reconcile(&self, incident: &Incident) -> tokio::task::JoinHandle<opslab::Result<Action>> {
        spawn_reconcile(&self.kctx, incident)
    }

    async fn latest_session(&self, uid: &str) -> Option<SessionRecord> {
        self.kctx
            .ctx
            .store
            .sessions_for_incident(uid)
            .await
            .unwrap()
            .into_iter()
            .next()
    }

    /// Waits for the Incident's session to end, following the sessions' wake-ups.
    async fn session_finished(&mut self, uid: &str) -> SessionRecord {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(session) = self.latest_session(uid).await
                    && session.state == SessionState::Finished
                    && !self.kctx.ctx.sessions.has_task(uid)
                {
                    return session;
                }
                self.wakes.recv().await.expect("the sessions are alive");
            }
        })
        .await
        .expect("the session ends")
    }

    fn sandboxes(&self) -> Vec<String> {
        docker::containers_with_label(&format!("opslab.dev/instance={}", self.instance))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for container in self.sandboxes() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &container])
                .output();
        }
    }
}

#[tokio::test]
async fn kube_create_investigate_resolve() {
    let mut harness = Harness::start(vec![
        Turn::shell("echo checking the api", "look first"),
        Turn::report("resolved", "restarted the api"),
    ])
    .await;
    let fresh = incident("api-down", "api returns 500", &[]);
    let uid = fresh.metadata.uid.clone().unwrap();

    // A new Incident first gets the finalizer, and nothing else happens until it is seen again.
    let reconcile = harness.reconcile(&fresh);
    let seen = harness
        .api
        .expect(
            Method::PATCH,
            &format!("{INCIDENTS}/api-down"),
            StatusCode::OK,
            serde_json::to_value(incident("api-down", "api returns 500", &[FINALIZER])).unwrap(),
        )
        .await;
    assert!(seen.body.to_string().contains(FINALIZER), "{}", seen.body);
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::await_change());
    assert!(harness.latest_session(&uid).await.is_none());

    // With the finalizer: a session starts; the status says so; an Event announces it.
    let mut current = fresh.clone();
    current.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let reconcile = harness.reconcile(&current);
    let status = harness.api.expect_status(&current).await;
    assert_eq!(status.phase, Phase::Investigating, "{status:#?}");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        condition(&status, ConditionType::SessionActive).status,
        ConditionStatus::True
    );
    let event = harness.api.expect_event().await;
    assert_eq!(event["reason"], "SessionStarted");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "api-down");
    assert_eq!(event["reportingController"], "opslab-controller");
    reconcile.await.unwrap().unwrap();

    // The session runs to its end; the next reconcile writes Resolved and announces it.
    let session = harness.session_finished(&uid).await;
    assert_eq!(session.phase, Phase::Resolved);
    let current = with_status(&current, &status);
    let reconcile = harness.reconcile(&current);
    let resolved = harness.api.expect_status(&current).await;
    assert_eq!(resolved.phase, Phase::Resolved, "{resolved:#?}");
    assert_eq!(resolved.commands, 1);
    assert_eq!(
        condition(&resolved, ConditionType::Resolved).status,
        ConditionStatus::True
    );
    // A condition whose status did not change keeps its transition time.
    assert_eq!(
        condition(&resolved, ConditionType::Valid).last_transition_time,
        condition(&status, ConditionType::Valid).last_transition_time
    );
    let event = harness.api.expect_event().await;
    assert_eq!(event["reason"], "Resolved");
    assert_eq!(event["note"], "restarted the api");
    reconcile.await.unwrap().unwrap();

    // Seen again with the same status, the Incident costs no API call at all.
    let settled = with_status(&current, &resolved);
    tokio::time::timeout(Duration::from_secs(20), harness.reconcile(&settled))
        .await
        .expect("no API call is waited on")
        .unwrap()
        .unwrap();
    assert!(harness.sandboxes().is_empty(), "the sandbox is removed");
}

#[tokio::test]
async fn kube_a_spec_change_reaches_the_running_session() {
    let mut harness = Harness::start(vec![
        Turn::shell("sleep 3", "wait for the api to settle"),
        Turn::report("resolved", "done"),
    ])
    .await;
    let first = incident("db-slow", "db is slow", &[FINALIZER]);
    let uid = first.metadata.uid.clone().unwrap();
    let (status, _) = harness.reconcile_with_event(&first).await;
    assert_eq!(status.phase, Phase::Investigating);

    // The ticket is edited while the agent works: the status follows the new generation, and the
    // phase (and so no Event) does not change.
    let mut edited = with_status(&first, &status);
    edited.metadata.generation = Some(2);
    edited.spec.description = "it started after the 14:00 deploy".into();
    let reconcile = harness.reconcile(&edited);
    let updated = harness.api.expect_status(&edited).await;
    reconcile.await.unwrap().unwrap();
    assert_eq!(updated.observed_generation, Some(2));
    assert_eq!(updated.phase, Phase::Investigating);

    let session = harness.session_finished(&uid).await;
    let events = harness.kctx.ctx.store.events(&session.id).await.unwrap();
    let ticket = events
        .iter()
        .find(|event| event.body.kind() == "ticket_updated")
        .expect("the agent was told of the new ticket");
    assert!(
        serde_json::to_string(&ticket.body)
            .unwrap()
            .contains("14:00 deploy")
    );
    assert_eq!(session.generation, 2);
}

#[tokio::test]
async fn kube_a_failed_session_is_a_warning_saying_why() {
    let mut harness = Harness::start(vec![Turn::Fault(Fault::Status {
        code: 401,
        retry_after: None,
        body: Some(
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#
                .into(),
        ),
    })])
    .await;
    let live = incident("bad-key", "anything", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();
    let (status, _) = harness.reconcile_with_event(&live).await;
    harness.session_finished(&uid).await;

    let current = with_status(&live, &status);
    let reconcile = harness.reconcile(&current);
    let failed = harness.api.expect_status(&current).await;
    let cause = "the model API failed: HTTP 401 authentication_error: invalid x-api-key";
    assert_eq!(failed.phase, Phase::Failed);
    for type_ in [ConditionType::SessionActive, ConditionType::Resolved] {
        let condition = condition(&failed, type_.clone());
        assert_eq!(
            (condition.reason.as_str(), condition.message.as_str()),
            ("ModelApiFailed", cause),
            "{type_}"
        );
    }
    let event = harness.api.expect_event().await;
    assert_eq!(
        (&event["type"], &event["reason"], &event["note"]),
        (&json!("Warning"), &json!("ModelApiFailed"), &json!(cause))
    );
    reconcile.await.unwrap().unwrap();
}

/// `kubectl annotate incident NAME opslab.dev/cancel=...` (what `opslab cancel --source kube`
/// sets) stops the running session; the cause is in the status, the Event and the trail.
#[tokio::test]
async fn kube_a_cancel_annotation_stops_the_running_session() {
    let mut harness = Harness::start(vec![
        Turn::shell("sleep 60", "watch the logs for a minute"),
        Turn::report("resolved", "never reached"),
    ])
    .await;
    let live = incident("stop-me", "to be cancelled", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();
    let (status, _) = harness.reconcile_with_event(&live).await;
    let deadline = std::time::Instant::now() + WAIT;
    while harness
        .latest_session(&uid)
        .await
        .is_none_or(|session| session.commands == 0)
    {
        assert!(std::time::Instant::now() < deadline, "no command started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut annotated = with_status(&live, &status);
    annotated.metadata.annotations = Some(
        [(
            opslab::incident::CANCEL_ANNOTATION.to_string(),
            "2026-12-02T04:00:00Z by alice: wrong cluster".to_string(),
        )]
        .into(),
    );
    let reconcile = harness.reconcile(&annotated);
    let cancelling = harness.api.expect_status(&annotated).await;
    reconcile.await.unwrap().unwrap();
    assert_eq!(
        condition(&cancelling, ConditionType::SessionActive).reason,
        "Cancelling"
    );
    let session = harness.session_finished(&uid).await;
    assert_eq!(session.phase, Phase::Cancelled);
    assert!(
        session
            .message
            .as_deref()
            .unwrap()
            .contains("by alice: wrong cluster"),
        "{session:?}"
    );

    let current = with_status(&annotated, &cancelling);
    let reconcile = harness.reconcile(&current);
    let cancelled = harness.api.expect_status(&current).await;
    assert_eq!(cancelled.phase, Phase::Cancelled);
    let event = harness.api.expect_event().await;
    assert_eq!(event["reason"], "Cancelled");
    assert!(
        event["note"].as_str().unwrap().contains("wrong cluster"),
        "{event}"
    );
    reconcile.await.unwrap().unwrap();
    assert!(harness.sandboxes().is_empty(), "the sandbox is removed");
}

/// `kubectl annotate incident NAME opslab.dev/retry=...` (what `opslab retry --source kube` sets)
/// starts one new attempt of an ended Incident, and only one.
#[tokio::test]
async fn kube_a_retry_annotation_starts_one_new_attempt() {
    let mut harness = Harness::start(vec![
        Turn::report("unresolved", "could not find the cause"),
        Turn::report("resolved", "found it the second time"),
    ])
    .await;
    let live = incident("again", "try again", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();
    let (status, _) = harness.reconcile_with_event(&live).await;
    harness.session_finished(&uid).await;
    let current = with_status(&live, &status);
    let (ended, _) = harness.reconcile_with_event(&current).await;
    assert_eq!(ended.phase, Phase::Unresolved);

    let mut annotated = with_status(&live, &ended);
    annotated.metadata.annotations = Some(
        [(
            opslab::incident::RETRY_ANNOTATION.to_string(),
            "2026-12-02T05:00:00Z by alice".to_string(),
        )]
        .into(),
    );
    let reconcile = harness.reconcile(&annotated);
    let retried = harness.api.expect_status(&annotated).await;
    assert_eq!((retried.phase, retried.attempt), (Phase::Investigating, 2));
    // A new attempt's Event is a new Event (created), not a repeat of attempt 1's (patched).
    let event = harness.api.expect_event().await;
    assert_eq!(event["reason"], "SessionStarted");
    assert!(
        event["note"].as_str().unwrap().ends_with("attempt 2"),
        "{event}"
    );
    assert!(event.get("series").is_none_or(Value::is_null), "{event}");
    reconcile.await.unwrap().unwrap();
    let session = harness.session_finished(&uid).await;
    assert_eq!((session.attempt, session.phase), (2, Phase::Resolved));
    assert_eq!(
        session.requests.retry.as_deref(),
        Some("2026-12-02T05:00:00Z by alice")
    );

    // The annotation left in place starts nothing more.
    let current = with_status(&annotated, &retried);
    let (resolved, _) = harness.reconcile_with_event(&current).await;
    assert_eq!((resolved.phase, resolved.attempt), (Phase::Resolved, 2));
    let settled = with_status(&current, &resolved);
    tokio::time::timeout(Duration::from_secs(20), harness.reconcile(&settled))
        .await
        .expect("no API call is waited on")
        .unwrap()
        .unwrap();
    assert_eq!(
        harness.latest_session(&uid).await.unwrap().attempt,
        2,
        "no third attempt"
    );
}

#[tokio::test]
async fn kube_delete_cancels_the_session_before_the_finalizer_goes() {
    let mut harness = Harness::start(vec![
        Turn::shell("sleep 60", "watch the logs for a minute"),
        Turn::report("resolved", "never reached"),
    ])
    .await;
    let live = incident("cache-down", "cache is down", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();
    let reconcile = harness.reconcile(&live);
    harness.api.expect_status(&live).await;
    harness.api.expect_event().await;
    reconcile.await.unwrap().unwrap();
    // Wait until the agent's command runs in its sandbox.
    tokio::time::timeout(WAIT, async {
        loop {
            let session = harness.latest_session(&uid).await.unwrap();
            if harness
                .kctx
                .ctx
                .store
                .last_command(&session.id)
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            harness.wakes.recv().await;
        }
    })
    .await
    .expect("the command starts");
    assert_eq!(harness.sandboxes().len(), 1);

    let reconcile = harness.reconcile(&deleting(&live));
    // The finalizer is removed only after the session ended and its sandbox went.
    harness.api.expect_finalizer_removed(&live).await;
    assert!(
        harness.sandboxes().is_empty(),
        "no sandbox left when the finalizer goes"
    );
    let session = harness.latest_session(&uid).await.unwrap();
    assert_eq!(
        (session.state, session.phase),
        (SessionState::Finished, Phase::Cancelled)
    );
    reconcile.await.unwrap().unwrap();
}

#[tokio::test]
async fn kube_an_invalid_incident_fails_alone_with_a_warning() {
    let mut harness = Harness::start(vec![Turn::report("resolved", "fine")]).await;
    let invalid = incident("blank", "   ", &[FINALIZER]);
    let reconcile = harness.reconcile(&invalid);
    let status = harness.api.expect_status(&invalid).await;
    assert_eq!(status.phase, Phase::Failed);
    let valid = condition(&status, ConditionType::Valid);
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(valid.message.contains("spec.title"), "{}", valid.message);
    let event = harness.api.expect_event().await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    reconcile.await.unwrap().unwrap();
    assert!(
        harness
            .latest_session(invalid.metadata.uid.as_ref().unwrap())
            .await
            .is_none()
    );

    // Another Incident is not held up by it.
    let fine = incident("fine", "all good", &[FINALIZER]);
    let reconcile = harness.reconcile(&fine);
    assert_eq!(
        harness.api.expect_status(&fine).await.phase,
        Phase::Investigating
    );
    harness.api.expect_event().await;
    reconcile.await.unwrap().unwrap();
    harness
        .session_finished(fine.metadata.uid.as_ref().unwrap())
        .await;
}

#[tokio::test]
async fn kube_a_replica_that_is_not_the_leader_does_nothing() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/opslab-test";
    // Another replica holds a fresh lease, renewed at every look.
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            seen.push(format!("{} {}", request.method(), request.uri().path()));
            let now = jiff::Timestamp::now();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "opslab-test", "namespace": "default", "resourceVersion": "7"},
                "spec": {
                    "holderIdentity": "the-leader", "leaseDurationSeconds": 15,
                    "acquireTime": now.to_string(), "renewTime": now.to_string(),
                    "leaseTransitions": 1,
                },
            });
            respond.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&lease).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    let settings = LeaseSettings {
        name: "opslab-test".into(),
        namespace: Some("default".into()),
        identity: "this-replica".into(),
        duration: Duration::from_secs(15),
    };
    let shutdown = CancellationToken::new();
    let following = Arc::new(AtomicBool::new(false));
    let led = Arc::new(AtomicBool::new(false));
    let election = {
        let (shutdown, following, led) = (shutdown.clone(), following.clone(), led.clone());
        tokio::spawn(async move {
            leader::run_as_leader(
                client,
                &settings,
                shutdown,
                move || following.store(true, Ordering::SeqCst),
                |_leadership| async move {
                    led.store(true, Ordering::SeqCst);
                    Ok(())
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, election)
        .await
        .expect("a follower stops on shutdown")
        .unwrap()
        .expect("stopping as a follower is no error");
    assert!(following.load(Ordering::SeqCst), "it waited as a follower");
    assert!(
        !led.load(Ordering::SeqCst),
        "a follower never runs the controller"
    );
    let seen = server.await.unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|request| request.ends_with(lease_path)),
        "a follower touches nothing but the lease: {seen:?}"
    );
}
