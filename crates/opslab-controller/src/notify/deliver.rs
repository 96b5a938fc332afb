//! Sending one notification to one receiver: an HTTP POST per attempt, each with its own timeout,
//! retried with exponential backoff and jitter (`backon`) on what may pass (no answer, a timeout,
//! 408, 429, 5xx), each attempt recorded in the session's trail and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::{debug, info, warn};

use super::settings::{NotifyConfig, Receiver};
use crate::audit::{Delivery, EventBody, Redactor, Store};
use crate::metrics::Metrics;

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// What one notification sends, rendered once for every receiver and attempt.
pub struct Rendered {
    pub session_id: String,
    /// `incident.resolved`, …
    pub notice: String,
    pub id: String,
    /// The Slack message (JSON), redacted.
    pub slack: Vec<u8>,
    /// The CloudEvent (JSON), redacted.
    pub cloud_event: Vec<u8>,
}

/// What delivery needs.
#[derive(Clone)]
pub struct Courier {
    pub client: reqwest::Client,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: Arc<NotifyConfig>,
    pub redactor: Redactor,
}

/// Why an attempt failed.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    error: String,
    retryable: bool,
}

impl Courier {
    pub fn client(config: &NotifyConfig) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A receiver answers; it does not send the payload on to somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("opslab/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend and a valid client configuration")
    }

    /// Delivers `rendered` to `receiver`, from attempt `first` on (later than 1 when resuming
    /// after a restart). Returns when delivered or given up.
    pub async fn deliver(&self, rendered: Arc<Rendered>, receiver: Receiver, first: u32) {
        let attempts = self.config.attempts;
        if first > attempts {
            // The attempts ran out before the controller stopped; the last one was not recorded.
            self.record(
                &rendered,
                &receiver,
                first - 1,
                Delivery::Failed,
                None,
                Some("no attempts left after a restart".into()),
            )
            .await;
            return;
        }
        let next = AtomicU32::new(first);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry_delay)
            .with_max_delay(MAX_DELAY)
            .with_max_times((attempts - first) as usize)
            .with_jitter();
        let once = || {
            let attempt = next.fetch_add(1, Ordering::SeqCst);
            let (rendered, receiver) = (&rendered, &receiver);
            async move {
                let result = self.post(rendered, receiver).await;
                let (outcome, status, error) = match &result {
                    Ok(status) => (Delivery::Delivered, Some(*status), None),
                    Err(failure) if failure.retryable && attempt < attempts => (
                        Delivery::Retrying,
                        failure.status,
                        Some(failure.error.clone()),
                    ),
                    Err(failure) => (
                        Delivery::Failed,
                        failure.status,
                        Some(failure.error.clone()),
                    ),
                };
                self.record(rendered, receiver, attempt, outcome, status, error)
                    .await;
                result
            }
        };
        let result = once
            .retry(backoff)
            .when(|failure: &Failure| failure.retryable)
            .await;
        match result {
            Ok(_) => {
                info!(receiver = %receiver.name, host = %receiver.host(), notice = %rendered.notice, "notification delivered")
            }
            Err(failure) => {
                warn!(receiver = %receiver.name, host = %receiver.host(), notice = %rendered.notice, error = %failure.error, "notification not delivered; given up")
            }
        }
    }

    async fn post(&self, rendered: &Rendered, receiver: &Receiver) -> Result<u16, Failure> {
        use super::settings::ReceiverKind;
        let (body, content_type) = match receiver.kind {
            ReceiverKind::Slack => (rendered.slack.clone(), "application/json"),
            ReceiverKind::Cloudevents => (
                rendered.cloud_event.clone(),
                super::message::CLOUDEVENTS_CONTENT_TYPE,
            ),
        };
        let response = self
            .client
            .post(receiver.url().clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|error| Failure {
                status: None,
                // Without the URL: it is a secret (and redacted anyway, should it show elsewhere).
                error: self.redactor.redact(&describe(&error.without_url())),
                retryable: true,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let code = status.as_u16();
        let retryable = status.is_server_error() || code == 408 || code == 429;
        // A little of what the receiver said helps whoever reads the trail.
        let said: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Err(Failure {
            status: Some(code),
            error: self
                .redactor
                .redact(&format!("the receiver answered {status}: {}", said.trim())),
            retryable,
        })
    }

    async fn record(
        &self,
        rendered: &Rendered,
        receiver: &Receiver,
        attempt: u32,
        outcome: Delivery,
        status_code: Option<u16>,
        error: Option<String>,
    ) {
        self.metrics.notification(&receiver.name, outcome.as_str());
        debug!(receiver = %receiver.name, attempt, outcome = outcome.as_str(), ?status_code, "notification attempt");
        let body = EventBody::Notification {
            notice: rendered.notice.clone(),
            id: rendered.id.clone(),
            receiver: receiver.name.clone(),
            attempt,
            outcome,
            status_code,
            error,
        };
        if let Err(error) = self.store.append(&rendered.session_id, body).await {
            warn!(receiver = %receiver.name, %error, "could not record a notification attempt");
        }
    }
}

/// A transport error in words, with its causes (reqwest's own text stops at "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
