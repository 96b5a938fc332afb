//! A mock Kubernetes API server (tower-test) for Kubernetes mode's tests: each request the client
//! makes is checked and answered in order. And the Incidents it hands over.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use opslab::incident::{ConditionType, Incident, IncidentStatus};
use opslab::source::kubernetes::{self, KubeContext};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub const INCIDENTS: &str = "/apis/opslab.dev/v1alpha1/namespaces/default/incidents";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
pub const WAIT: Duration = Duration::from_secs(90);

/// The mock API server's side: the requests the client sent, to check and answer one by one.
pub struct ApiServer(pub tower_test::mock::Handle<Request<Body>, Response<Body>>);

/// A request as the server saw it.
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
}

impl ApiServer {
    /// Takes the next request, checks its method and path, answers it, and returns it.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        reply: Value,
    ) -> Seen {
        self.expect_with(method, path, |_| (status, reply)).await
    }

    /// As `expect`, with an answer made from the request's body.
    pub async fn expect_with(
        &mut self,
        method: Method,
        path: &str,
        reply: impl FnOnce(&Value) -> (StatusCode, Value),
    ) -> Seen {
        let (request, respond) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
        let seen = Seen {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            body: {
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            },
        };
        assert_eq!(
            (&seen.method, seen.uri.split('?').next().unwrap()),
            (&method, path),
            "unexpected request; its body: {}",
            seen.body
        );
        let (status, reply) = reply(&seen.body);
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap();
        respond.send_response(response);
        seen
    }

    /// Answers a status apply with the object it was given, and returns the applied status.
    pub async fn expect_status(&mut self, incident: &Incident) -> IncidentStatus {
        let path = format!(
            "{INCIDENTS}/{}/status",
            incident.metadata.name.as_ref().unwrap()
        );
        let object = serde_json::to_value(incident).unwrap();
        let seen = self
            .expect_with(Method::PATCH, &path, |body| {
                let mut object = object;
                object["status"] = body["status"].clone();
                (StatusCode::OK, object)
            })
            .await;
        assert!(
            seen.uri.contains("fieldManager=opslab") && seen.uri.contains("force=true"),
            "status is written by server-side apply: {}",
            seen.uri
        );
        assert_eq!(seen.body["kind"], "Incident");
        assert_eq!(seen.body["apiVersion"], "opslab.dev/v1alpha1");
        serde_json::from_value(seen.body["status"].clone()).expect("a whole status")
    }

    /// Answers an Event's creation and returns it.
    pub async fn expect_event(&mut self) -> Value {
        self.expect_with(Method::POST, EVENTS, |body| {
            (StatusCode::CREATED, body.clone())
        })
        .await
        .body
    }

    /// Answers a reconcile that writes a status and publishes an Event (a new phase or attempt);
    /// returns both once the reconcile has ended well.
    pub async fn answer_with_event(
        &mut self,
        reconcile: JoinHandle<opslab::Result<Action>>,
        incident: &Incident,
    ) -> (IncidentStatus, Value) {
        let status = self.expect_status(incident).await;
        let event = self.expect_event().await;
        reconcile.await.unwrap().unwrap();
        (status, event)
    }

    /// Answers the finalizer's removal from `incident` (with the object) and checks that it is one.
    pub async fn expect_finalizer_removed(&mut self, incident: &Incident) {
        let path = format!("{INCIDENTS}/{}", incident.metadata.name.as_ref().unwrap());
        let reply = serde_json::to_value(incident).unwrap();
        let seen = self
            .expect(Method::PATCH, &path, StatusCode::OK, reply)
            .await;
        let patch = seen.body.to_string();
        assert!(
            patch.contains("\"remove\"") && patch.contains("/metadata/finalizers/0"),
            "{patch}"
        );
    }
}

/// Runs one reconcile in the background (it waits on the mock server's answers).
pub fn spawn_reconcile(
    kctx: &Arc<KubeContext>,
    incident: &Incident,
) -> JoinHandle<opslab::Result<Action>> {
    tokio::spawn(kubernetes::reconcile_incident(
        Arc::new(incident.clone()),
        kctx.clone(),
    ))
}

/// The Incident being deleted: its deletion timestamp set, its finalizers still on.
pub fn deleting(incident: &Incident) -> Incident {
    let mut deleting = incident.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    deleting
}

/// An Incident as the API server would hand it over.
pub fn incident(name: &str, title: &str, finalizers: &[&str]) -> Incident {
    serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}-{}", uuid::Uuid::new_v4().simple()),
            "generation": 1,
            "resourceVersion": "1",
            "finalizers": finalizers,
        },
        "spec": {"title": title, "severity": "high"},
    }))
    .unwrap()
}

pub fn with_status(incident: &Incident, status: &IncidentStatus) -> Incident {
    let mut next = incident.clone();
    next.status = Some(status.clone());
    next
}

pub fn condition(status: &IncidentStatus, type_: ConditionType) -> &opslab::incident::Condition {
    status
        .condition(type_.clone())
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#?}"))
}
