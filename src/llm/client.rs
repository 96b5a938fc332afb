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
    #[error("HTTP {status} {error_type}: {message}")]
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
    #[error("configuration: {0}")]
    Config(String),
}

impl LlmError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => retry::retryable_status(*status),
            LlmError::Transport(_) | LlmError::Decode(_) => true,
            LlmError::SpendLimit { .. } | LlmError::Config(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            LlmError::SpendLimit { .. }
            | LlmError::Transport(_)
            | LlmError::Decode(_)
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
            LlmError::Decode(_) => "decode",
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
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
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

    /// Estimated dollars for a response's tokens, from the cost table.
    pub fn cost(&self, model: &str, usage: &super::Usage) -> f64 {
        self.costs
            .cost(model, usage.input_tokens, usage.output_tokens)
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
        mut on_retry: impl FnMut(RetryNotice),
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
        (|| self.attempt(request))
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
    async fn attempt(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let provider = self.config.kind.as_str();
        let result = self.send(request).await;
        let status = match &result {
            Ok(_) => "200".to_string(),
            Err(LlmError::Status { status, .. } | LlmError::SpendLimit { status, .. }) => {
                status.to_string()
            }
            Err(LlmError::Transport(_)) => "transport".into(),
            Err(LlmError::Decode(_)) => "decode".into(),
            Err(LlmError::Config(_)) => "config".into(),
        };
        self.metrics.llm_request(provider, &request.model, status);
        if let Ok(response) = &result {
            let usage = &response.usage;
            let cost = self.cost(&request.model, usage);
            self.metrics.llm_usage(
                provider,
                &request.model,
                usage.input_tokens,
                usage.output_tokens,
                cost,
            );
        }
        result
    }

    async fn send(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let base = &self.config.base_url;
        let http = match self.config.kind {
            ProviderKind::Anthropic | ProviderKind::Replay => {
                let mut http = self
                    .http
                    .post(format!("{base}/v1/messages"))
                    .header("anthropic-version", anthropic::API_VERSION)
                    .json(&anthropic::request_body(request));
                if let Some(key) = &self.config.api_key {
                    http = http.header("x-api-key", key);
                }
                http
            }
            ProviderKind::OpenAi => {
                let mut http = self
                    .http
                    .post(format!("{base}/chat/completions"))
                    .json(&openai::request_body(request));
                if let Some(key) = &self.config.api_key {
                    http = http.bearer_auth(key);
                }
                http
            }
        };
        let response = http.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers(), jiff::Timestamp::now());
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let parsed = match self.config.kind {
                ProviderKind::Anthropic | ProviderKind::Replay => anthropic::parse_error(&body),
                ProviderKind::OpenAi => openai::parse_error(&body),
            };
            let (error_type, message) = parsed.unwrap_or_else(|| {
                (
                    String::new(),
                    String::from_utf8_lossy(&body).chars().take(500).collect(),
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
        match self.config.kind {
            ProviderKind::Anthropic | ProviderKind::Replay => anthropic::parse_response(&body),
            ProviderKind::OpenAi => openai::parse_response(&body),
        }
        .map_err(LlmError::Decode)
    }
}

/// A request that did not complete: connect refused or reset, a timeout, a body cut off.
fn transport(error: reqwest::Error) -> LlmError {
    // The source chain says what happened (e.g. "connection reset by peer").
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    LlmError::Transport(message)
}
