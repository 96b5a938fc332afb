//! `POST /api/v1/alerts`: the bearer token (compared in constant time), the body's limit, the
//! decision and its effect, one at a time; each outcome an audit event and a metric.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::decide::{self, Decision, group_hash};
use super::filing::{FilingError, Found, Target};
use super::payload::{self, MAX_BODY_BYTES, Refusal, RefusalKind};
use super::{IntakeConfig, Rules};
use crate::audit::{IntakeDecision, IntakeEvent, Redactor, Store};
use crate::metrics::Metrics;

/// The path Alertmanager's webhook_config points at.
pub const PATH: &str = "/api/v1/alerts";
/// The `producer` of the intake's audit events.
const PRODUCER: &str = "alertmanager";

/// The intake: what it needs to decide, and the target it files in.
pub struct Intake<T: Target> {
    /// The token's digest: the comparison takes the same time whatever the guess, its length
    /// included.
    token_digest: [u8; 32],
    rules: Rules,
    target: T,
    store: Store,
    /// The store's redactor: what a notification says is redacted before it is filed anywhere.
    redactor: Redactor,
    metrics: Arc<Metrics>,
    /// One notification at a time: two of one group must never both file an Incident.
    lock: tokio::sync::Mutex<()>,
}

impl<T: Target> Intake<T> {
    pub fn new(config: IntakeConfig, target: T, store: Store, metrics: Arc<Metrics>) -> Intake<T> {
        Intake {
            token_digest: Sha256::digest(config.token.as_bytes()).into(),
            rules: config.rules,
            target,
            redactor: store.redactor(),
            store,
            metrics,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest.as_slice().ct_eq(self.token_digest.as_slice()).into()
    }

    /// Handles one request; returns what to answer and records what was decided.
    async fn receive(&self, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Answer {
        if !self.authorized(headers) {
            let refusal = Refusal::new(
                RefusalKind::Unauthorized,
                "a bearer token is required (Authorization: Bearer …), and this one is missing or wrong",
            );
            return self.refused(refusal, None).await;
        }
        let body = match body {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let refusal = Refusal::new(
                    RefusalKind::TooLarge,
                    format!("the body is over the limit of {MAX_BODY_BYTES} bytes"),
                );
                return self.refused(refusal, None).await;
            }
            Err(rejection) => {
                let refusal = Refusal::new(
                    RefusalKind::Malformed,
                    format!("the body cannot be read: {}", rejection.body_text()),
                );
                return self.refused(refusal, None).await;
            }
        };
        let payload = match payload::parse(&body) {
            Ok(payload) => payload.redacted(&self.redactor),
            Err(refusal) => return self.refused(refusal, None).await,
        };
        let hash = group_hash(&payload.group_key);
        let _one_at_a_time = self.lock.lock().await;
        let found = match self.target.group(&self.rules.namespace, &hash).await {
            Ok(found) => found,
            Err(error) => return self.failed(error, &hash).await,
        };
        let filed: Vec<_> = found.iter().map(|found| found.filed.clone()).collect();
        let decision = match decide::decide(&payload, &self.rules, &filed, jiff::Timestamp::now()) {
            Ok(decision) => decision,
            Err(refusal) => return self.refused(refusal, Some(&hash)).await,
        };
        let of = |key: &crate::ObjectKey| -> Option<&Found<T::Handle>> {
            found.iter().find(|found| &found.filed.key == key)
        };
        let effect = match &decision {
            Decision::Create(new) => self.target.create(new).await,
            Decision::Update(change) | Decision::Resolve(change) => match of(&change.key) {
                Some(found) => self.target.update(found, change).await,
                None => Err(FilingError::Gone(change.key.clone())),
            },
            Decision::Deduplicated { .. } | Decision::Ignored { .. } => Ok(()),
        };
        if let Err(error) = effect {
            return self.failed(error, &hash).await;
        }
        let message = match &decision {
            Decision::Create(new) => format!(
                "filed Incident {} for the alert group ({} alert(s))",
                new.key,
                payload.alerts.len()
            ),
            Decision::Update(change) => {
                format!("told Incident {} about the group's alerts", change.key)
            }
            Decision::Resolve(change) => {
                format!(
                    "recorded on Incident {} that the group resolved",
                    change.key
                )
            }
            Decision::Deduplicated { key } => {
                format!("nothing new for Incident {key}: a repeat")
            }
            Decision::Ignored { reason } => format!("nothing filed: {reason}"),
        };
        let incident = decision.key().map(ToString::to_string);
        let recorded = decision.recorded();
        info!(
            decision = recorded.as_str(),
            incident = incident.as_deref().unwrap_or(""),
            group = %hash,
            "alert notification: {message}"
        );
        self.record(recorded, None, Some(&hash), incident.clone(), &message)
            .await;
        Answer {
            status: StatusCode::OK,
            body: serde_json::json!({
                "decision": recorded.as_str(),
                "incident": incident,
                "message": message,
            }),
        }
    }

    async fn refused(&self, refusal: Refusal, group: Option<&str>) -> Answer {
        warn!(
            reason = refusal.kind.label(),
            "alert notification refused: {}", refusal.message
        );
        self.record(
            IntakeDecision::Refused,
            Some(refusal.kind.label()),
            group,
            None,
            &refusal.message,
        )
        .await;
        Answer {
            status: StatusCode::from_u16(refusal.kind.status())
                .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            body: serde_json::json!({
                "decision": IntakeDecision::Refused.as_str(),
                "reason": refusal.kind.label(),
                "error": refusal.message,
            }),
        }
    }

    /// Filing failed: Alertmanager is told to try again (it does, with backoff).
    async fn failed(&self, error: FilingError, group: &str) -> Answer {
        let message = format!("the Incident could not be filed: {error}");
        warn!(group, "alert notification failed: {message}");
        self.record(IntakeDecision::Failed, None, Some(group), None, &message)
            .await;
        Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: serde_json::json!({
                "decision": IntakeDecision::Failed.as_str(),
                "error": message,
            }),
        }
    }

    /// The audit event and the metric of one decision. A failing store does not refuse the
    /// notification: what was filed stays filed, and the store's trouble shows in /readyz.
    async fn record(
        &self,
        decision: IntakeDecision,
        reason: Option<&str>,
        group: Option<&str>,
        incident: Option<String>,
        message: &str,
    ) {
        self.metrics.alert_received(decision.as_str());
        let event = IntakeEvent {
            at: jiff::Timestamp::now(),
            producer: PRODUCER.into(),
            decision,
            reason: reason.map(String::from),
            alert_group: group.map(String::from),
            incident,
            message: message.into(),
        };
        if let Err(error) = self.store.record_intake(event).await {
            warn!(%error, "could not record the alert intake's decision in the audit store");
        }
    }
}

struct Answer {
    status: StatusCode,
    body: serde_json::Value,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut text = self.body.to_string();
        text.push('\n');
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response()
    }
}

/// The intake's routes, to merge into the HTTP port's router.
pub fn routes<T: Target>(intake: Arc<Intake<T>>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        // One byte over the limit is enough to tell a body that is too large.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(intake)
}

async fn receive<T: Target>(
    State(intake): State<Arc<Intake<T>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    intake.receive(&headers, body).await
}
