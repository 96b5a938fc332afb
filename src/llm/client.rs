//! CONTRACT STUB — replaced by the real implementation.
use std::time::Duration;

use super::{ChatRequest, ChatResponse, ProviderConfig, ProviderKind};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{0}")]
    Other(String),
}

impl LlmError {
    pub fn is_retryable(&self) -> bool {
        todo!()
    }
    pub fn retry_after(&self) -> Option<Duration> {
        todo!()
    }
    /// A short label for metrics and status reasons, e.g. `rate_limited`, `auth`, `decode`.
    pub fn label(&self) -> &'static str {
        todo!()
    }
}

#[derive(Clone)]
pub struct LlmClient {}

impl LlmClient {
    pub fn new(_config: ProviderConfig) -> Result<Self, LlmError> {
        todo!()
    }
    pub fn kind(&self) -> ProviderKind {
        todo!()
    }
    /// One model call, with retries.
    pub async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        todo!()
    }
}
