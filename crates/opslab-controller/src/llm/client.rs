//! The HTTP client for both protocols, with the one retry loop.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::warn;

use super::retry::{self, RetryPolicy};
use super::{ChatRequest, ChatResponse, ProviderConfig, ProviderKind, anthropic, openai};
use crate::cost::CostTable;
use crate::metrics::Metrics;

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("HTTP {status}{}: {message}", spaced(.error_type))]
    Status {
        status: u16,
        error_type: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("HTTP {status}: spend limit or quota reached: {message}")]
    SpendLimit { status: u16, message: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("undecodable response: {0}")]
    Decode(String),
    #[error("undecodable response: {0}")]
    Response(super::ResponseError),
    #[error("configuration: {0}")]
    Config(String),
}

/// The error type after the status, when the API named one.
fn spaced(error_type: &str) -> String {
    if error_type.is_empty() {
        String::new()
    } else {
        format!(" {error_type}")
    }
}

impl LlmError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => retry::retryable_status(*status),
            LlmError::Transport(_) | LlmError::Decode(_) | LlmError::Response(_) => true,
            LlmError::SpendLimit { .. } | LlmError::Config(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            LlmError::SpendLimit { .. }
            | LlmError::Transport(_)
            | LlmError::Decode(_)
            | LlmError::Response(_)
            | LlmError::Config(_) => None,
        }
    }

    /// A short label for metrics and status reasons.
    pub fn label(&self) -> &'static str {
        match self {
            LlmError::Status { status: 429, .. } => "rate_limited",
            LlmError::Status { status: 529, .. } => "overloaded",
            LlmError::Status {
                status: 401 | 403, ..
            } => "auth",
            LlmError::Status { status, .. } if *status >= 500 => "server",
            LlmError::Status { .. } => "bad_request",
            LlmError::SpendLimit { .. } => "quota",
            LlmError::Transport(_) => "transport",
            LlmError::Decode(_) | LlmError::Response(_) => "decode",
            LlmError::Config(_) => "config",
        }
    }
}

/// A failed model call about to be tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryNotice {
    /// 1 for the first retry.
    pub retry: usize,
    pub max_retries: usize,
    /// How long until the retry.
    pub delay: Duration,
    /// What failed.
    pub error: String,
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    config: ProviderConfig,
    metrics: Arc<Metrics>,
    costs: Arc<CostTable>,
}

impl LlmClient {
    pub fn new(
        config: ProviderConfig,
        metrics: Arc<Metrics>,
        costs: CostTable,
    ) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder();
        // A streamed answer may take long and still be alive: the limit is then on silence
        // (each read resets it), so only a stream that stops sending trips it.
        let http = if config.stream {
            http.read_timeout(config.request_timeout)
        } else {
            http.timeout(config.request_timeout)
        };
        let http = http
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("opslab/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| LlmError::Config(error.to_string()))?;
        Ok(LlmClient {
            http,
            config,
            metrics,
            costs: Arc::new(costs),
        })
    }

    /// Estimated dollars for a response's tokens, each kind at its price, from the cost table.
    pub fn cost(&self, model: &str, usage: &super::Usage) -> f64 {
        self.costs.cost_of(model, usage)
    }

    /// The client for the summariser: the same, or one for its own server (`--summary-base-url`),
    /// so that summaries never queue in front of the agent's turns on a one-slot server.
    pub fn summariser(&self) -> LlmClient {
        let mut client = self.clone();
        if let Some(endpoint) = &self.config.summary_endpoint {
            client.config.base_url = endpoint.base_url.clone();
            client.config.api_key = endpoint.api_key.clone();
        }
        client
    }

    pub fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    /// One model call, retried on transient failures (with backoff and jitter, honouring
    /// `retry-after`).
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.complete_with(request, |_| {}).await
    }

    /// [`Self::complete`], telling `on_retry` of each retry before it waits, so that a session can
    /// say what it is waiting for.
    pub async fn complete_with(
        &self,
        request: &ChatRequest,
        on_retry: impl FnMut(RetryNotice),
    ) -> Result<ChatResponse, LlmError> {
        self.complete_drafting(request, on_retry, None).await
    }

    /// Whether answers come as server-sent events (and so can be shown as they are written).
    pub fn streams(&self) -> bool {
        self.config.stream
    }

    /// [`Self::complete_with`], and while a streamed answer comes, its text so far
    /// ([`super::stream::Partial::text`]) into `draft` as each event arrives.
    pub async fn complete_drafting(
        &self,
        request: &ChatRequest,
        mut on_retry: impl FnMut(RetryNotice),
        draft: Option<&tokio::sync::watch::Sender<String>>,
    ) -> Result<ChatResponse, LlmError> {
        let RetryPolicy {
            max_retries,
            min_delay,
            max_delay,
        } = self.config.retry.clone();
        let mut retries = 0;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(min_delay)
            .with_max_delay(max_delay)
            .with_max_times(max_retries)
            .with_jitter();
        (|| self.attempt(request, draft))
            .retry(backoff)
            .when(LlmError::is_retryable)
            .adjust(move |error, delay| {
                delay.map(|delay| {
                    error
                        .retry_after()
                        .map_or(delay, |asked| asked.min(max_delay))
                })
            })
            .notify(|error, delay| {
                retries += 1;
                warn!(%error, model = %request.model, ?delay, retry = retries, max_retries, "model call failed; retrying");
                on_retry(RetryNotice {
                    retry: retries,
                    max_retries,
                    delay,
                    error: error.to_string(),
                });
            })
            .await
    }

    /// One HTTP request, counted in the metrics with its status, and its usage when it succeeds.
    async fn attempt(
        &self,
        request: &ChatRequest,
        draft: Option<&tokio::sync::watch::Sender<String>>,
    ) -> Result<ChatResponse, LlmError> {
        let provider = self.config.kind.as_str();
        let result = self.send(request, draft).await;
        let status = match &result {
            Ok(_) => "200".to_string(),
            Err(LlmError::Status { status, .. } | LlmError::SpendLimit { status, .. }) => {
                status.to_string()
            }
            Err(error) => error.label().into(),
        };
        self.metrics.llm_request(provider, &request.model, status);
        if let Ok(response) = &result {
            let usage = &response.usage;
            let cost = self.cost(&request.model, usage);
            self.metrics
                .llm_usage(provider, &request.model, usage, cost);
        }
        result
    }

    async fn send(
        &self,
        request: &ChatRequest,
        draft: Option<&tokio::sync::watch::Sender<String>>,
    ) -> Result<ChatResponse, LlmError> {
        let base = &self.config.base_url;
        let http = match self.config.kind {
            ProviderKind::Anthropic | ProviderKind::Replay => {
                let body = anthropic::wire::Request {
                    stream: self.config.stream,
                    ..anthropic::request(request, self.config.prompt_cache)
                };
                let mut http = self
                    .http
                    .post(format!("{base}/v1/messages"))
                    .header("anthropic-version", anthropic::API_VERSION)
                    .json(&body);
                if let Some(key) = &self.config.api_key {
                    http = http.header("x-api-key", key);
                }
                http
            }
            ProviderKind::OpenAi => {
                let body = openai::wire::Request {
                    stream: self.config.stream,
                    stream_options: self.config.stream.then_some(openai::wire::StreamOptions {
                        include_usage: true,
                    }),
                    ..openai::request(request)
                };
                let mut http = self
                    .http
                    .post(format!("{base}/chat/completions"))
                    .json(&body);
                if let Some(key) = &self.config.api_key {
                    http = http.bearer_auth(key);
                }
                http
            }
        };
        let response = http.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers(), jiff::Timestamp::now());
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        // Events, whether asked for or not (some servers stream regardless).
        if (200..300).contains(&status)
            && content_type
                .as_deref()
                .is_some_and(|kind| kind.starts_with("text/event-stream"))
        {
            return self.read_stream(response, draft).await;
        }
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let parsed = match self.config.kind {
                ProviderKind::Anthropic | ProviderKind::Replay => anthropic::parse_error(&body),
                ProviderKind::OpenAi => openai::parse_error(&body),
            };
            let (error_type, message) = parsed.unwrap_or_else(|| {
                (
                    String::new(),
                    super::unexpected_body(&body, content_type.as_deref()),
                )
            });
            if status == 429 && retry::is_spend_limit(&error_type, &message) {
                return Err(LlmError::SpendLimit { status, message });
            }
            return Err(LlmError::Status {
                status,
                error_type,
                message,
                retry_after,
            });
        }
        let parsed = match self.config.kind {
            ProviderKind::Anthropic | ProviderKind::Replay => anthropic::parse_response(&body),
            ProviderKind::OpenAi => openai::parse_response(&body),
        };
        parsed.map_err(|error| match error {
            super::ResponseError::NotJson(_) => {
                LlmError::Decode(super::unexpected_body(&body, content_type.as_deref()))
            }
            other => LlmError::Response(other),
        })
    }
}

impl LlmClient {
    /// A response sent as server-sent events, read to its end and put back together as the whole
    /// response. A stream cut off is a transport failure, retried as a reset connection is.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        draft: Option<&tokio::sync::watch::Sender<String>>,
    ) -> Result<ChatResponse, LlmError> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let mut events = response.bytes_stream().eventsource();
        let mut received = Vec::new();
        let mut partial = super::stream::Partial::default();
        if let Some(draft) = draft {
            // A retry starts its answer over.
            draft.send_replace(String::new());
        }
        while let Some(event) = events.next().await {
            let event = event.map_err(|error| match error {
                eventsource_stream::EventStreamError::Transport(error) => transport(error),
                other => LlmError::Decode(format!("the event stream is malformed: {other}")),
            })?;
            let event = super::stream::Sse {
                event: event.event,
                data: event.data,
            };
            if let Some(draft) = draft {
                match self.config.kind {
                    ProviderKind::Anthropic | ProviderKind::Replay => partial.anthropic(&event),
                    ProviderKind::OpenAi => partial.openai(&event),
                }
                // Built whole for each event: a few milliseconds in all for a long answer.
                draft.send_if_modified(|text| {
                    let now = partial.text();
                    let changed = *text != now;
                    *text = now;
                    changed
                });
            }
            received.push(event);
        }
        match self.config.kind {
            ProviderKind::Anthropic | ProviderKind::Replay => {
                anthropic::parse_message(super::stream::anthropic(&received).map_err(unstreamed)?)
            }
            ProviderKind::OpenAi => {
                openai::parse_message(super::stream::openai(&received).map_err(unstreamed)?)
            }
        }
        .map_err(LlmError::Response)
    }
}

/// A stream that could not be put together as a response.
fn unstreamed(error: super::stream::StreamError) -> LlmError {
    match error {
        super::stream::StreamError::Cut(why) => LlmError::Transport(why),
        super::stream::StreamError::Error {
            error_type,
            message,
        } => LlmError::Decode(format!(
            "the event stream ended with an error: {error_type}: {message}"
        )),
        super::stream::StreamError::Malformed(why) => LlmError::Decode(why),
    }
}

/// A request that did not complete: connect refused or reset, a timeout, a body cut off.
fn transport(error: reqwest::Error) -> LlmError {
    LlmError::Transport(with_causes(&error))
}

/// An error and its source chain, which says what happened (e.g. "connection reset by peer").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors repeat their source's text in their own: say it once.
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_each_part_once() {
        let status = |error_type: &str| LlmError::Status {
            status: 401,
            error_type: error_type.into(),
            message: "invalid x-api-key".into(),
            retry_after: None,
        };
        assert_eq!(
            status("authentication_error").to_string(),
            "HTTP 401 authentication_error: invalid x-api-key"
        );
        assert_eq!(status("").to_string(), "HTTP 401: invalid x-api-key");
    }

    /// An error whose text may repeat its source's, as some of hyper's and std's do.
    #[derive(Debug)]
    struct Layer {
        text: String,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_deref()
                .map(|layer| layer as &(dyn std::error::Error + 'static))
        }
    }

    fn chain(texts: &[&str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Layer {
                    text: text.to_string(),
                    source: source.map(Box::new),
                })
            })
            .unwrap()
    }

    #[test]
    fn a_cause_is_said_once() {
        assert_eq!(
            with_causes(&chain(&[
                "error sending request",
                "client error (Connect)",
                "tcp connect error: Connection refused (os error 111)",
                "Connection refused (os error 111)",
            ])),
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }
}
