//! The I/O around the policy: serve a sandbox's socket, resolve what a request names, record the
//! decision, then forward it to the engine (streams and hijacked connections included) or refuse it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::policy::{self, Decision, Found, Resolved, Scope};
use super::route::{self, Action, Kind, Object, Route};
use super::upstream::Upstream;
use super::{Audit, ProxyBody, ProxyError, body};
use crate::audit::EventBody;

/// The largest list answer the proxy filters (a few thousand containers).
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

/// What every connection of one sandbox's socket shares.
pub struct Shared {
    pub upstream: Upstream,
    pub scope: Scope,
    pub audit: Audit,
}

/// HTTP connections one sandbox may hold open at once (streams such as `logs -f` and `events` count). More
/// wait for one to close, so a sandbox cannot exhaust the controller's file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// Accepts connections until `cancel`; each is served on its own task, and ends with `cancel` too.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "the Docker API proxy could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ended = cancel.clone();
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                let cancel = cancel.clone();
                async move { Ok::<_, Infallible>(handle(request, &shared, cancel).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            // A stopped proxy ends its open streams too (`logs -f`, `events`).
            tokio::select! {
                () = ended.cancelled() => {}
                served = connection => if let Err(error) = served {
                    debug!(%error, "a Docker API client connection ended with an error");
                },
            }
        });
    }
}

/// One request, start to end. Never fails: problems become error answers.
async fn handle(
    mut request: Request<Incoming>,
    shared: &Shared,
    cancel: CancellationToken,
) -> Response<ProxyBody> {
    // Taken before the body is touched; used only if the call is allowed and the engine upgrades.
    let client_upgrade = request
        .headers()
        .contains_key(UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    let mut request = request.map(BodyExt::boxed);
    let method = request.method().clone();
    let shown_path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let judgement = judge(shared, &mut request).await;
    // Recorded before anything is forwarded: a call the trail cannot take is not made.
    if let Err(error) = record(shared, &judgement, &method, &shown_path).await {
        warn!(%error, "could not record a Docker API decision; the call is refused");
        return error_response(
            503,
            "opslab could not record this call in its audit trail, so it was not made",
        );
    }
    match judgement.decision {
        Decision::Deny { status, reason } => error_response(status, &format!("opslab: {reason}")),
        Decision::Allow { .. } => {
            let upgrade = Upgrade {
                client: client_upgrade,
                cancel,
            };
            let Forward { path, body } = judgement.forward;
            match forward(shared, request, &path, body, judgement.action, upgrade).await {
                Ok(response) => response,
                Err(error) => error_response(502, &error.to_string()),
            }
        }
    }
}

/// What the proxy made of a request.
struct Judgement {
    action: Action,
    /// The object acted on, for the trail.
    target: Option<String>,
    decision: Decision,
    forward: Forward,
}

/// How an allowed request goes on: its path (the target's name replaced by its id), and its body
/// when the policy read it.
#[derive(Default)]
struct Forward {
    path: String,
    body: Option<Bytes>,
}

/// Parses, reads what the policy needs (the body; the engine's view of the objects named), decides.
async fn judge(shared: &Shared, request: &mut Request<ProxyBody>) -> Judgement {
    let path = request.uri().path().to_string();
    let refused = |action: Action, status: u16, reason: String| Judgement {
        action,
        target: None,
        decision: Decision::Deny { status, reason },
        forward: Forward::default(),
    };
    let route = match route::parse(request.method(), &path) {
        Ok(route) => route,
        Err(error) => return refused(Action::Other, 403, error.to_string()),
    };
    // The body the policy reads is buffered; any other streams through.
    let mut body = None;
    let mut parsed = None;
    if route.action.inspects_body() {
        let bytes = match read_body(request).await {
            Ok(bytes) => bytes,
            Err(error) => return refused(route.action, 400, error.to_string()),
        };
        if !bytes.is_empty() {
            match body::parse(&bytes) {
                Ok(value) => parsed = Some(value),
                Err(error) => return refused(route.action, 400, error.to_string()),
            }
        }
        body = Some(bytes);
    }
    let resolved = match resolve(shared, &route, parsed.as_ref()).await {
        Ok(resolved) => resolved,
        Err(error) => return refused(route.action, 502, error.to_string()),
    };
    let decision = policy::decide(&route, parsed.as_ref(), &resolved, &shared.scope);
    let path = match &decision {
        Decision::Allow { target: Some(id) } => route.path_with_target(id),
        Decision::Allow { target: None } | Decision::Deny { .. } => path,
    };
    Judgement {
        action: route.action,
        target: describe_target(&route, &resolved),
        decision,
        forward: Forward { path, body },
    }
}

/// Reads a body the policy must judge, up to its limit.
async fn read_body(request: &mut Request<ProxyBody>) -> Result<Bytes, body::BodyError> {
    let incoming = std::mem::replace(request.body_mut(), empty());
    Limited::new(incoming, body::MAX_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(body::BodyError::Unreadable)
}

/// Asks the engine about every object the request names (and an exec's container).
async fn resolve(
    shared: &Shared,
    route: &Route,
    body: Option<&Value>,
) -> Result<Resolved, ProxyError> {
    let mut resolved = Resolved::new();
    let mut pending = policy::references(route, body);
    while let Some(object) = pending.pop() {
        if resolved.contains_key(&object) {
            continue;
        }
        let found = shared.upstream.resolve(&object).await?;
        if let Found::Exec { container, .. } = &found {
            pending.push(Object::new(Kind::Container, container.clone()));
        }
        resolved.insert(object, found);
    }
    Ok(resolved)
}

/// The object acted on, for the trail: `container web`.
fn describe_target(route: &Route, resolved: &Resolved) -> Option<String> {
    let object = route.target.as_ref()?;
    let name = match resolved.get(object) {
        Some(Found::Object(known)) if !known.name.is_empty() => {
            known.name.trim_start_matches('/').to_string()
        }
        Some(Found::Exec { container, .. }) => {
            let container = Object::new(Kind::Container, container.clone());
            match resolved.get(&container) {
                Some(Found::Object(known)) => format!(
                    "{} in container {}",
                    object.reference,
                    known.name.trim_start_matches('/')
                ),
                _ => object.reference.clone(),
            }
        }
        _ => object.reference.clone(),
    };
    Some(format!("{} {name}", object.kind.name()))
}

/// Records a decision in the session's trail, and counts and logs it.
async fn record(
    shared: &Shared,
    judgement: &Judgement,
    method: &hyper::Method,
    path: &str,
) -> Result<(), crate::audit::StoreError> {
    let allowed = judgement.decision.is_allowed();
    let action = judgement.action.name();
    shared.audit.metrics.docker_api_request(allowed, action);
    debug!(allowed, action, %method, path, "docker api call");
    let reason = match &judgement.decision {
        Decision::Deny { reason, .. } => Some(reason.clone()),
        Decision::Allow { .. } => None,
    };
    let event = EventBody::DockerApi {
        allowed,
        action: action.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        target: judgement.target.clone(),
        reason,
    };
    shared
        .audit
        .store
        .append(&shared.scope.session_id, event)
        .await
        .map(|_| ())
}

/// The client's side of a connection the engine may hijack (exec, attach), and when to end it.
struct Upgrade {
    client: Option<hyper::upgrade::OnUpgrade>,
    cancel: CancellationToken,
}

/// Forwards an allowed request and relays the answer: streamed, filtered (lists), or upgraded.
async fn forward(
    shared: &Shared,
    request: Request<ProxyBody>,
    path: &str,
    buffered: Option<Bytes>,
    action: Action,
    upgrade: Upgrade,
) -> Result<Response<ProxyBody>, ProxyError> {
    let request = engine_request(request, path, buffered)?;
    let response = shared.upstream.send(request).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return hijack(response, upgrade);
    }
    if answer_is_filtered(action) && response.status() == StatusCode::OK {
        return filtered_answer(shared, action, response).await;
    }
    let (parts, incoming) = response.into_parts();
    if action == Action::Events && parts.status == StatusCode::OK {
        let protected = opslab_containers(shared).await?;
        let body = filtered_events(incoming, protected, shared.scope.clone());
        return Ok(Response::from_parts(parts, body));
    }
    Ok(Response::from_parts(parts, incoming.boxed()))
}

/// The request as the engine gets it: at `path` (the client's query kept), with the body the
/// policy read in place of the client's stream.
fn engine_request(
    request: Request<ProxyBody>,
    path: &str,
    buffered: Option<Bytes>,
) -> Result<Request<ProxyBody>, ProxyError> {
    let (mut parts, incoming) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    parts.uri = path_and_query
        .parse()
        .map_err(|error| ProxyError::Engine(format!("the path {path_and_query:?}: {error}")))?;
    let body = match buffered {
        Some(bytes) => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            parts.headers.remove(TRANSFER_ENCODING);
            full(bytes)
        }
        None => incoming,
    };
    Ok(Request::from_parts(parts, body))
}

/// Answers the client's upgrade with the engine's, and joins the two connections on a task of
/// their own.
fn hijack(
    mut response: Response<Incoming>,
    upgrade: Upgrade,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Upgrade {
        client: client_upgrade,
        cancel,
    } = upgrade;
    let Some(client_upgrade) = client_upgrade else {
        return Err(ProxyError::Engine(
            "the engine switched protocols unasked".into(),
        ));
    };
    let engine_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(relay_hijacked(client_upgrade, engine_upgrade, cancel));
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, empty()))
}

/// Copies both ways between the upgraded client and engine connections until either ends, or
/// `cancel`.
async fn relay_hijacked(
    client_upgrade: hyper::upgrade::OnUpgrade,
    engine_upgrade: hyper::upgrade::OnUpgrade,
    cancel: CancellationToken,
) {
    let (client, engine) = match tokio::try_join!(client_upgrade, engine_upgrade) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "a hijacked Docker API stream could not start");
            return;
        }
    };
    let (mut client, mut engine) = (TokioIo::new(client), TokioIo::new(engine));
    tokio::select! {
        () = cancel.cancelled() => {}
        copied = tokio::io::copy_bidirectional(&mut client, &mut engine) => {
            if let Err(error) = copied {
                debug!(%error, "a hijacked Docker API stream ended with an error");
            }
        }
    }
}

/// The answers that may show opslab's own objects, and so are read whole and filtered.
fn answer_is_filtered(action: Action) -> bool {
    matches!(
        action,
        Action::ContainerList
            | Action::NetworkList
            | Action::VolumeList
            | Action::NetworkInspect
            | Action::SystemDf
    )
}

/// Reads a JSON answer (up to its limit) and passes on what the sandbox may see of it.
async fn filtered_answer(
    shared: &Shared,
    action: Action,
    response: Response<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, incoming) = response.into_parts();
    let bytes = Limited::new(incoming, MAX_LIST_BYTES)
        .collect()
        .await
        .map_err(|error| ProxyError::Engine(format!("reading an answer: {error}")))?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|error| ProxyError::Engine(format!("the engine's answer is not JSON: {error}")))?;
    let shown = match action {
        Action::NetworkInspect => {
            let protected = opslab_containers(shared).await?;
            policy::without_members(answer, &protected)
        }
        Action::NetworkList => {
            let listed = policy::visible(action, answer, &shared.scope);
            networks_without_members(shared, listed).await?
        }
        _ => policy::visible(action, answer, &shared.scope),
    };
    let bytes = Bytes::from(serde_json::to_vec(&shown).unwrap_or_default());
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Response::from_parts(parts, full(bytes)))
}

/// A network list without opslab's containers among the networks' members.
async fn networks_without_members(shared: &Shared, listed: Value) -> Result<Value, ProxyError> {
    // Lists carry no members today; should an engine fill them, they are filtered too.
    let has_members = listed.as_array().is_some_and(|networks| {
        networks.iter().any(|network| {
            network
                .get("Containers")
                .is_some_and(|c| c.as_object().is_some_and(|m| !m.is_empty()))
        })
    });
    if !has_members {
        return Ok(listed);
    }
    let protected = opslab_containers(shared).await?;
    Ok(match listed {
        Value::Array(networks) => Value::Array(
            networks
                .into_iter()
                .map(|network| policy::without_members(network, &protected))
                .collect(),
        ),
        other => other,
    })
}

/// The engine's event stream (one JSON object a line) without the events about opslab's objects
/// ([`policy::event_visible`]), streamed as it comes.
fn filtered_events(
    incoming: Incoming,
    mut protected: std::collections::HashSet<String>,
    scope: Scope,
) -> ProxyBody {
    let mut pending: Vec<u8> = Vec::new();
    let frames = BodyStream::new(incoming).filter_map(move |frame| {
        let shown = match frame {
            Err(error) => Some(Err(error)),
            Ok(frame) => match frame.into_data() {
                Ok(data) => {
                    pending.extend_from_slice(&data);
                    let mut shown = Vec::new();
                    while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if policy::event_visible(&line[..end], &mut protected, &scope) {
                            shown.extend_from_slice(&line);
                        }
                    }
                    (!shown.is_empty()).then(|| Ok(Frame::data(Bytes::from(shown))))
                }
                // Trailers, as they are.
                Err(frame) => Some(Ok(frame)),
            },
        };
        std::future::ready(shown)
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// opslab's own containers (other sandboxes, spares, the controller), from the engine's list.
async fn opslab_containers(
    shared: &Shared,
) -> Result<std::collections::HashSet<String>, ProxyError> {
    match shared.upstream.get_json("/containers/json?all=1").await? {
        Ok(containers) => Ok(policy::protected_ids(&containers, &shared.scope)),
        Err((status, message)) => Err(ProxyError::Engine(format!(
            "listing containers to filter a network's members: {status} {message}"
        ))),
    }
}

fn empty() -> ProxyBody {
    full(Bytes::new())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An answer the docker CLI shows as `Error response from daemon: <message>`.
fn error_response(status: u16, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
