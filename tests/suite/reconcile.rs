//! The reconciler of Kubernetes mode alone, with nothing running: a mock API server (tower-test), a
//! real SQLite store, no Docker engine and no model ([`offline_context`]). The reconcile, finalizer
//! and error-policy paths, each request checked; the same paths with real sessions are in
//! `kubernetes.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use opslab::ObjectKey;
use opslab::audit::{EventBody, NewSession, SessionState};
use opslab::incident::{ConditionType, Incident, IncidentStatus, Phase};
use opslab::reconcile::Context;
use opslab::session::Wake;
use opslab::source::kubernetes::{self, FINALIZER, KubeContext};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::kube_mock::{
    ApiServer, INCIDENTS, WAIT, condition, deleting, incident, spawn_reconcile, with_status,
};
use crate::support::reconciler::offline_context;

/// The reconciler on an offline context, and the mock API server it talks to.
struct Offline {
    _dir: tempfile::TempDir,
    kctx: Arc<KubeContext>,
    api: ApiServer,
    wakes: mpsc::UnboundedReceiver<Wake>,
}

impl Offline {
    async fn start() -> Offline {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, wakes) = offline_context(dir.path()).await;
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        Offline {
            _dir: dir,
            kctx: Arc::new(KubeContext::new(ctx, client, Some("test-pod".into()))),
            api: ApiServer(handle),
            wakes,
        }
    }

    fn ctx(&self) -> &Context {
        &self.kctx.ctx
    }

    /// Runs one reconcile in the background (it waits on the mock server's answers).
    fn reconcile(&self, incident: &Incident) -> tokio::task::JoinHandle<opslab::Result<Action>> {
        spawn_reconcile(&self.kctx, incident)
    }

    /// One reconcile that writes a status and publishes an Event; returns both.
    async fn reconcile_with_event(&mut self, incident: &Incident) -> (IncidentStatus, Value) {
        let reconcile = self.reconcile(incident);
        self.api.answer_with_event(reconcile, incident).await
    }

    /// A reconcile that asks the API server nothing: it ends without an answer from it.
    async fn reconcile_silently(&mut self, incident: &Incident) -> opslab::Result<Action> {
        let result = tokio::time::timeout(WAIT, self.reconcile(incident))
            .await
            .expect("a reconcile that needs no answer ends")
            .unwrap();
        assert!(
            self.api.0.next_request().now_or_never().is_none(),
            "no request to the API server"
        );
        result
    }

    /// Waits for the Incident's session to end (with no model, it ends at once).
    async fn session_ended(&mut self, uid: &str) {
        tokio::time::timeout(WAIT, async {
            loop {
                let ended = self
                    .ctx()
                    .store
                    .sessions_for_incident(uid)
                    .await
                    .unwrap()
                    .first()
                    .is_some_and(|session| session.state == SessionState::Finished);
                if ended && !self.ctx().sessions.has_task(uid) {
                    return;
                }
                self.wakes.recv().await.expect("the sessions are alive");
            }
        })
        .await
        .expect("the session ends");
    }

    /// The value of one sample of the metrics, 0 when it is not there yet.
    fn metric(&self, sample: &str) -> f64 {
        self.ctx()
            .metrics
            .prometheus_text()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

const OK: &str = "opslab_reconciles_total{result=\"ok\"} ";
const ERRORS: &str = "opslab_reconciles_total{result=\"error\"} ";

#[tokio::test]
async fn reconcile_adds_the_finalizer_before_anything_else() {
    let mut offline = Offline::start().await;
    let new = incident("api-down", "the api returns 500", &[]);
    let reconcile = offline.reconcile(&new);
    let seen = offline
        .api
        .expect(
            Method::PATCH,
            &format!("{INCIDENTS}/api-down"),
            StatusCode::OK,
            serde_json::to_value(incident("api-down", "the api returns 500", &[FINALIZER]))
                .unwrap(),
        )
        .await;
    let patch = seen.body.to_string();
    assert!(
        patch.contains("\"add\"") && patch.contains(FINALIZER),
        "{patch}"
    );
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::await_change());
    let uid = new.metadata.uid.as_deref().unwrap();
    assert!(
        offline
            .ctx()
            .store
            .sessions_for_incident(uid)
            .await
            .unwrap()
            .is_empty(),
        "no session before the finalizer is on"
    );
    assert_eq!(offline.metric(OK), 1.0);
}

#[tokio::test]
async fn reconcile_starts_a_session_writes_its_status_and_announces_it() {
    let mut offline = Offline::start().await;
    let live = incident("api-down", "the api returns 500", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();

    let reconcile = offline.reconcile(&live);
    let status = offline.api.expect_status(&live).await;
    let event = offline.api.expect_event().await;
    // Looked at again at the resync, or when the session wakes it.
    assert_eq!(
        reconcile.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!((status.phase, status.attempt), (Phase::Investigating, 1));
    let active = condition(&status, ConditionType::SessionActive);
    assert_eq!(
        (active.status.as_str(), active.reason.as_str()),
        ("True", "Investigating")
    );
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("SessionStarted"))
    );
    let sessions = offline
        .ctx()
        .store
        .sessions_for_incident(&uid)
        .await
        .unwrap();
    assert_eq!(status.session_id.as_deref(), Some(sessions[0].id.as_str()));
    // The store keeps a copy, as the CLI reads it.
    let stored = offline
        .ctx()
        .store
        .incident("default", "api-down")
        .await
        .unwrap()
        .expect("the Incident in the store");
    assert_eq!(stored.source, "kube");
    let stored = stored
        .stored()
        .expect("a valid Incident, not a manifest problem");
    assert_eq!(stored.uid, uid);
    assert_eq!(stored.incident["status"]["phase"], "Investigating");

    // With no model configured, the session ends at once; the next reconcile says why.
    offline.session_ended(&uid).await;
    let (ended, event) = offline
        .reconcile_with_event(&with_status(&live, &status))
        .await;
    assert_eq!(ended.phase, Phase::Failed);
    assert_eq!(
        condition(&ended, ConditionType::Resolved).reason,
        "NoModelConfigured"
    );
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("NoModelConfigured"))
    );
    assert_eq!(offline.metric(OK), 2.0);
}

#[tokio::test]
async fn reconcile_writes_nothing_when_the_status_is_unchanged() {
    let mut offline = Offline::start().await;
    // An invalid spec's status: it stays as it is (no session moves it on).
    let invalid = incident("blank", "   ", &[FINALIZER]);
    let (status, _) = offline.reconcile_with_event(&invalid).await;
    assert_eq!(status.phase, Phase::Failed);

    let written = with_status(&invalid, &status);
    offline.reconcile_silently(&written).await.unwrap();
    offline.reconcile_silently(&written).await.unwrap();
    assert_eq!(offline.metric(OK), 3.0);
}

#[tokio::test]
async fn reconcile_cleans_up_a_deleted_incident_then_removes_its_finalizer() {
    let mut offline = Offline::start().await;
    let live = incident("api-down", "the api returns 500", &[FINALIZER]);
    let (status, _) = offline.reconcile_with_event(&live).await;
    offline
        .session_ended(live.metadata.uid.as_deref().unwrap())
        .await;

    let reconcile = offline.reconcile(&deleting(&with_status(&live, &status)));
    offline.api.expect_finalizer_removed(&live).await;
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::await_change());
    assert!(
        offline
            .ctx()
            .store
            .incident("default", "api-down")
            .await
            .unwrap()
            .is_none(),
        "the store forgets a deleted Incident"
    );
}

/// The controller was down while the Incident was deleted: the store still has its session running,
/// with no task here. Its trail is closed; its sandbox cannot be removed while Docker is down, so
/// the finalizer stays, and the retry (the trail closed now) lets it go.
#[tokio::test]
async fn reconcile_keeps_the_finalizer_while_a_sandbox_cannot_be_removed() {
    let mut offline = Offline::start().await;
    let live = incident("api-down", "the api returns 500", &[FINALIZER]);
    let uid = live.metadata.uid.clone().unwrap();
    let session = offline
        .ctx()
        .store
        .create_session(NewSession {
            id: uuid::Uuid::now_v7().to_string(),
            incident_uid: uid.clone(),
            incident_namespace: "default".into(),
            incident_name: "api-down".into(),
            attempt: 1,
            generation: 1,
        })
        .await
        .unwrap();

    let error = offline
        .reconcile_silently(&deleting(&live))
        .await
        .expect_err("the sandbox cannot be removed");
    assert_eq!(error.metric_label(), "sandbox", "{error}");
    let events = offline.ctx().store.events(&session.id).await.unwrap();
    assert!(
        events.iter().any(|event| matches!(
            event.body,
            EventBody::SessionFinished {
                phase: Phase::Cancelled,
                ..
            }
        )),
        "the trail is closed first"
    );
    assert_eq!(
        offline.metric("opslab_reconcile_failures_total{error=\"sandbox\"} "),
        1.0
    );
    let action = kubernetes::error_policy(Arc::new(live.clone()), &error, offline.kctx.clone());
    assert_ne!(action, Action::await_change());

    let reconcile = offline.reconcile(&deleting(&live));
    offline.api.expect_finalizer_removed(&live).await;
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn reconcile_failures_back_off_per_incident_and_a_success_resets() {
    let mut offline = Offline::start().await;
    let flaky = incident("flaky", "flaky api server", &[FINALIZER]);
    let key = ObjectKey::new("default", "flaky");
    let status_path = format!("{INCIDENTS}/flaky/status");
    let unavailable = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "etcd is unavailable", "reason": "ServiceUnavailable", "code": 503,
    });
    for (attempt, (low, high)) in [(1, 2), (2, 4), (4, 8)].into_iter().enumerate() {
        let reconcile = offline.reconcile(&flaky);
        offline
            .api
            .expect(
                Method::PATCH,
                &status_path,
                StatusCode::SERVICE_UNAVAILABLE,
                unavailable.clone(),
            )
            .await;
        let error = reconcile
            .await
            .unwrap()
            .expect_err("the status write failed");
        assert!(error.to_string().contains("etcd is unavailable"), "{error}");
        assert_eq!(error.metric_label(), "kube");
        // The step the error policy takes after this failure.
        let delay = offline.ctx().retries.next(&key);
        assert!(
            delay >= Duration::from_secs(low) && delay < Duration::from_secs(high),
            "retry {attempt}: {delay:?}"
        );
    }
    // The error policy requeues on the same schedule: it takes the 8-16 s step, so the next is 16-32 s.
    let error = opslab::Error::LeaderElection("any".into());
    let action = kubernetes::error_policy(Arc::new(flaky.clone()), &error, offline.kctx.clone());
    assert_ne!(action, Action::await_change());
    let next = offline.ctx().retries.next(&key);
    assert!(
        next >= Duration::from_secs(16) && next < Duration::from_secs(32),
        "{next:?}"
    );
    assert_eq!(offline.metric(ERRORS), 3.0);
    assert_eq!(
        offline.metric("opslab_reconcile_failures_total{error=\"kube\"} "),
        3.0
    );
    // Another Incident's backoff is its own.
    let other = ObjectKey::new("default", "other");
    assert!(offline.ctx().retries.next(&other) < Duration::from_secs(2));

    // A success forgets the failures.
    offline.reconcile_with_event(&flaky).await;
    assert!(offline.ctx().retries.next(&key) < Duration::from_secs(2));
}
