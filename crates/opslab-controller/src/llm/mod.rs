//! The model APIs: one provider-neutral conversation shape, spoken to Anthropic's Messages API or to
//! any OpenAI-compatible Chat Completions server.

pub mod anthropic;
pub mod openai;
pub mod retry;
pub mod stream;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One block of a message. Tool calls and their results are blocks, as in the Messages API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

/// A tool the model may call; `input_schema` is a JSON Schema object.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
}

/// One model call.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

/// The model's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub content: Vec<ContentBlock>,
    pub stop_reason: Option<String>,
    pub usage: Usage,
}

/// A setting that is on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Which protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Anthropic,
    #[value(name = "openai")]
    #[serde(rename = "openai")]
    OpenAi,
    /// No model: opslab's scripted replay of the scenarios, served on loopback by the controller
    /// process itself (the `opslab` binary starts the scenario harness's replay server, and gives
    /// this library its URL); it speaks the Anthropic protocol.
    Replay,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Replay => "replay",
        }
    }
}

/// How to reach a provider.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Anthropic: without `/v1` (as `ANTHROPIC_BASE_URL`); OpenAI: with it (as `OPENAI_BASE_URL`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// Limit for one HTTP request, connect to last byte; with `stream`, the longest silence
    /// between two reads instead (a long answer that keeps coming is never cut).
    pub request_timeout: Duration,
    pub retry: retry::RetryPolicy,
    /// Mark the stable prefix of each request for Anthropic's prompt cache (`cache_control`).
    pub prompt_cache: bool,
    /// Ask for the response as server-sent events (`stream: true`).
    pub stream: bool,
    /// Where the summariser's requests go, when not to `base_url`: a server of the same protocol.
    pub summary_endpoint: Option<Endpoint>,
}

/// A server of the provider's protocol, and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub base_url: String,
    pub api_key: Option<String>,
}

impl ProviderConfig {
    /// What must be set before a session can run, when nothing is: the provider's own hosted API
    /// without a key. (A server at another address, a local one say, may need no key.) Pure.
    pub fn missing(&self) -> Option<String> {
        let official = |host: &str| {
            self.base_url
                .strip_prefix(host)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if self.api_key.is_some() {
            return None;
        }
        match self.kind {
            ProviderKind::Anthropic if official("https://api.anthropic.com") => Some(
                "no model is configured: set ANTHROPIC_API_KEY for Claude, or OPSLAB_PROVIDER=openai \
                 with OPENAI_BASE_URL (and OPENAI_API_KEY) for an OpenAI-compatible server, then \
                 restart the controller (OPSLAB_PROVIDER=replay plays the demo's scripted scenarios \
                 without a model)"
                    .into(),
            ),
            ProviderKind::OpenAi if official("https://api.openai.com") => Some(
                "no model is configured: set OPENAI_API_KEY for OpenAI's API, or OPENAI_BASE_URL to \
                 a server that needs no key, then restart the controller"
                    .into(),
            ),
            ProviderKind::Anthropic | ProviderKind::OpenAi | ProviderKind::Replay => None,
        }
    }
}

mod client;
pub use crate::cost::Usage;
pub use client::{LlmClient, LlmError, RetryNotice};

/// A response body that is not an answer in the provider's shape.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the body is not a response of the protocol: {0}")]
    Unexpected(serde_json::Error),
    #[error("the response has no `content` array")]
    NoContent,
    #[error("a tool_use block has no name")]
    ToolUseWithoutName,
    #[error("the response has no `choices`")]
    NoChoices,
    #[error("the choice has no `message`")]
    ChoiceWithoutMessage,
    #[error("a tool call has no `function`")]
    ToolCallWithoutFunction,
    #[error("a tool call has no function name")]
    ToolCallWithoutName,
}

/// A tool call as the model gave it, in either protocol: an id (some servers give none; see
/// [`unique_ids`]), a name, and arguments.
fn tool_use(
    id: Option<String>,
    name: String,
    arguments: Option<serde_json::Value>,
) -> ContentBlock {
    ContentBlock::ToolUse {
        id: id.unwrap_or_default(),
        name,
        input: tool_input(arguments),
    }
}

/// A tool call's arguments as the model gave them. Servers differ: an object, a JSON string, or a
/// string that is not JSON at all. The last is kept as `{"__raw_arguments": …}` so that the agent
/// can tell the model its arguments were malformed.
fn tool_input(raw: Option<serde_json::Value>) -> serde_json::Value {
    match raw {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(serde_json::Value::String(text)) if text.trim().is_empty() => serde_json::json!({}),
        Some(serde_json::Value::String(text)) => serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({ "__raw_arguments": text })),
        Some(other) => other,
    }
}

/// A response body read as the protocol's response type: a body that is not JSON is told apart
/// from JSON of another shape.
fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ResponseError> {
    serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            ResponseError::Unexpected(error)
        } else {
            ResponseError::NotJson(error)
        }
    })
}

/// How much of an unexpected body an error message quotes.
const QUOTED_CHARS: usize = 200;

/// Says what a body that should have been JSON is instead: the content type the server gave it, and
/// its start (a proxy's HTML error page, a plain-text message), on one line.
fn unexpected_body(body: &[u8], content_type: Option<&str>) -> String {
    let content_type = content_type.unwrap_or("not given");
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let one_line = words.join(" ");
    if one_line.is_empty() {
        return format!("the body is empty (content-type {content_type})");
    }
    let mut start: String = one_line.chars().take(QUOTED_CHARS).collect();
    if start.len() < one_line.len() {
        start.push('…');
    }
    format!("the body is not JSON (content-type {content_type}): {start}")
}

/// Gives every tool call an id, unique within the response: some servers omit ids or repeat them.
fn unique_ids(content: &mut [ContentBlock]) {
    let mut seen = std::collections::HashSet::new();
    for block in content {
        if let ContentBlock::ToolUse { id, .. } = block
            && (id.is_empty() || !seen.insert(id.clone()))
        {
            *id = format!("toolu_{}", uuid::Uuid::new_v4().simple());
            seen.insert(id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_body_is_named_by_its_content_type() {
        let page = b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>\n";
        assert_eq!(
            unexpected_body(page, Some("text/html")),
            "the body is not JSON (content-type text/html): <html> <head><title>502 Bad Gateway</title></head> </html>"
        );
        assert_eq!(
            unexpected_body(b"", None),
            "the body is empty (content-type not given)"
        );
        let long = "x".repeat(1000);
        let said = unexpected_body(long.as_bytes(), Some("text/plain"));
        assert!(
            said.ends_with(&format!("{}…", "x".repeat(QUOTED_CHARS))),
            "{said}"
        );
    }

    fn provider(kind: ProviderKind, base_url: &str, api_key: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            kind,
            base_url: base_url.into(),
            api_key: api_key.map(String::from),
            request_timeout: std::time::Duration::from_secs(1),
            retry: retry::RetryPolicy::default(),
            prompt_cache: false,
            stream: false,
            summary_endpoint: None,
        }
    }

    #[test]
    fn only_a_hosted_api_without_a_key_is_missing_a_model() {
        let anthropic = provider(ProviderKind::Anthropic, "https://api.anthropic.com", None);
        assert!(
            anthropic
                .missing()
                .unwrap()
                .contains("set ANTHROPIC_API_KEY")
        );
        let openai = provider(ProviderKind::OpenAi, "https://api.openai.com/v1", None);
        assert!(openai.missing().unwrap().contains("set OPENAI_API_KEY"));
        // A key, or a server of one's own (which may need none), is enough.
        let keyed = provider(
            ProviderKind::Anthropic,
            "https://api.anthropic.com",
            Some("k"),
        );
        assert_eq!(keyed.missing(), None);
        let local = provider(ProviderKind::Anthropic, "http://127.0.0.1:4000", None);
        assert_eq!(local.missing(), None);
        let lookalike = provider(
            ProviderKind::OpenAi,
            "https://api.openai.com.example/v1",
            None,
        );
        assert_eq!(lookalike.missing(), None);
    }
}
