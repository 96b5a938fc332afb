//! The Alertmanager intake in Kubernetes mode: a real Alertmanager sends to the intake, which files
//! through the Kubernetes API — here a mock API server (tower-test) that keeps the Incidents it is
//! given, so the intake reads back what it filed, as from a real one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use opslab::alerts::{
    self, ALERTS_ANNOTATION, GROUP_LABEL, IntakeConfig, PREVIOUS_ANNOTATION, RESOLVED_ANNOTATION,
    Rules, Target,
};
use opslab::audit::{Redactor, Store};
use opslab::metrics::Metrics;
use serde_json::{Value, json};

use crate::support::alertmanager::{self, Alertmanager};

const TOKEN: &str = "kube-intake-token-51d84b067f3a9c2e";
const INCIDENTS: &str = "/apis/opslab.dev/v1alpha1/namespaces/default/incidents";
const WAIT: Duration = Duration::from_secs(30);

/// The API server's state: the Incidents by name, and the requests, as `METHOD path?query`.
#[derive(Default)]
struct Api {
    incidents: BTreeMap<String, Value>,
    requests: Vec<String>,
}

/// JSON merge patch (RFC 7386), as the API server applies `application/merge-patch+json`.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn answer(api: &Mutex<Api>, method: &Method, uri: &http::Uri, body: Value) -> (StatusCode, Value) {
    let mut api = api.lock().unwrap();
    api.requests.push(format!("{method} {uri}"));
    let path = uri.path();
    match (method.clone(), path.strip_prefix(INCIDENTS)) {
        (Method::GET, Some("")) => {
            let query = uri
                .query()
                .unwrap_or_default()
                .replace("%2F", "/")
                .replace("%3D", "=");
            let selector = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("labelSelector="))
                .unwrap_or_default()
                .to_string();
            let (label, value) = selector.split_once('=').unwrap_or_default();
            let items: Vec<Value> = api
                .incidents
                .values()
                .filter(|incident| incident["metadata"]["labels"][label] == *value)
                .cloned()
                .collect();
            (
                StatusCode::OK,
                json!({"apiVersion": "opslab.dev/v1alpha1", "kind": "IncidentList",
                       "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        (Method::POST, Some("")) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if api.incidents.contains_key(&name) {
                return (StatusCode::CONFLICT, json!({"kind": "Status", "code": 409}));
            }
            let mut object = body;
            object["metadata"]["uid"] = uuid::Uuid::new_v4().to_string().into();
            object["metadata"]["generation"] = 1.into();
            object["metadata"]["resourceVersion"] = "1".into();
            api.incidents.insert(name, object.clone());
            (StatusCode::CREATED, object)
        }
        (Method::PATCH, Some(rest)) => {
            let name = rest.trim_start_matches('/');
            let Some(object) = api.incidents.get_mut(name) else {
                return (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "code": 404}),
                );
            };
            let spec_before = object["spec"].clone();
            merge(object, &body);
            if object["spec"] != spec_before {
                let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                object["metadata"]["generation"] = generation.into();
            }
            (StatusCode::OK, object.clone())
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "code": 404}),
        ),
    }
}

/// Starts the intake in Kubernetes mode on the loopback; returns its webhook URL and the API state.
async fn intake(dir: &tempfile::TempDir) -> (String, Arc<Mutex<Api>>, Store) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let api = Arc::new(Mutex::new(Api::default()));
    let shared = api.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, reply) = answer(&shared, &parts.method, &parts.uri, body);
            respond.send_response(
                Response::builder()
                    .status(status)
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
        Target::Kube { client },
        store.clone(),
        Arc::new(Metrics::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, alerts::routes(Arc::new(intake)))
            .await
            .unwrap()
    });
    (format!("http://{address}/api/v1/alerts"), api, store)
}

async fn until<T>(
    what: &str,
    api: &Mutex<Api>,
    am: &Alertmanager,
    mut check: impl FnMut(&Api) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check(&api.lock().unwrap()) {
            return value;
        }
        if Instant::now() > deadline {
            let api = api.lock().unwrap();
            panic!(
                "timed out waiting for {what}\nrequests: {:#?}\nincidents: {:#?}\nalertmanager:\n{}",
                api.requests,
                api.incidents,
                am.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seen(incident: &Value) -> usize {
    incident["metadata"]["annotations"][ALERTS_ANNOTATION]
        .as_str()
        .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
        .map_or(0, |seen| seen.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_real_alertmanager_creates_patches_and_refiles_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, api, store) = intake(&dir).await;
    let am = Alertmanager::start(&webhook, TOKEN, Duration::from_secs(2)).await;
    let alertname = format!(
        "KubeDown{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let labels = |instance: &str| json!({"alertname": alertname, "instance": instance, "severity": "warning"});
    let annotations = json!({"summary": "the api is down"});

    am.post(&[alertmanager::firing(labels("a"), annotations.clone())])
        .await;
    let (name, first) = until("the Incident created", &api, &am, |api| {
        api.incidents
            .iter()
            .next()
            .map(|(name, incident)| (name.clone(), incident.clone()))
    })
    .await;
    assert_eq!(first["spec"]["title"], "the api is down");
    assert_eq!(first["spec"]["severity"], "medium");
    let group = first["metadata"]["labels"][GROUP_LABEL]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(group.len(), 32, "the group's hash labels it");

    // Repeated and joined: patched, never a second object.
    am.post(&[
        alertmanager::firing(labels("a"), annotations.clone()),
        alertmanager::firing(labels("b"), annotations.clone()),
    ])
    .await;
    let joined = until("the second alert patched in", &api, &am, |api| {
        api.incidents
            .get(&name)
            .filter(|incident| seen(incident) == 2)
            .cloned()
    })
    .await;
    assert_eq!(joined["metadata"]["generation"], 2);
    assert!(
        joined["spec"]["description"]
            .as_str()
            .unwrap()
            .contains("joined the group")
    );

    // The session ended (as the controller would write it), then the group resolves.
    api.lock().unwrap().incidents.get_mut(&name).unwrap()["status"] = json!({"phase": "Resolved"});
    am.post(&[
        alertmanager::ended(labels("a"), annotations.clone()),
        alertmanager::ended(labels("b"), annotations.clone()),
    ])
    .await;
    let resolved = until("the resolution recorded", &api, &am, |api| {
        api.incidents
            .get(&name)
            .filter(|incident| !incident["metadata"]["annotations"][RESOLVED_ANNOTATION].is_null())
            .cloned()
    })
    .await;
    assert_eq!(
        resolved["spec"], joined["spec"],
        "an ended Incident's spec is not touched"
    );
    assert_eq!(resolved["metadata"]["generation"], 2);

    // Firing again: a new Incident through the API, naming the first.
    am.post(&[alertmanager::firing(labels("a"), annotations.clone())])
        .await;
    let second = until("the second Incident", &api, &am, |api| {
        api.incidents
            .iter()
            .find(|(other, _)| **other != name)
            .map(|(_, incident)| incident.clone())
    })
    .await;
    assert_eq!(
        second["metadata"]["annotations"][PREVIOUS_ANNOTATION],
        format!("default/{name}")
    );
    assert_eq!(second["metadata"]["labels"][GROUP_LABEL], group.as_str());

    let requests = api.lock().unwrap().requests.clone();
    let creates = requests.iter().filter(|r| r.starts_with("POST ")).count();
    assert_eq!(creates, 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("GET "))
            .all(|r| r.contains("labelSelector=")),
        "the group is found by its label: {requests:#?}"
    );
    // Alertmanager may split a change over two notifications under load (an update seen twice),
    // so the trail is checked for what must be there, and shown whole when it is not.
    let events = store.intake_events().await.unwrap();
    let decisions: Vec<&str> = events
        .iter()
        .map(|event| event.decision.as_str())
        .filter(|decision| *decision != "deduplicated")
        .collect();
    let count = |wanted: &str| decisions.iter().filter(|d| **d == wanted).count();
    assert!(
        decisions.first() == Some(&"created")
            && decisions.last() == Some(&"created")
            && count("created") == 2
            && count("resolved") == 1
            && count("updated") >= 1
            && count("updated") + 3 == decisions.len(),
        "{events:#?}"
    );
}
