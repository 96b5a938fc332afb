//! The Messages API's JSON: the request as sent (borrowed from the [`ChatRequest`](crate::llm::ChatRequest)
//! it is built from), and the response, its stream events and error bodies as read. What is read is
//! read liberally: unknown fields are ignored, absent ones are `None`, unknown block and event types
//! are `Other`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::Role;

/// A `POST /v1/messages` body.
#[derive(Serialize, Debug)]
pub struct Request<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<System<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// Ask for the response as server-sent events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// The system prompt: plain text, or text blocks when a block must carry a cache breakpoint.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum System<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize, Debug)]
pub struct Message<'a> {
    pub role: Role,
    pub content: Vec<Block<'a>>,
}

/// A content block of a request, and whether the cached prefix ends at it.
#[derive(Serialize, Debug)]
pub struct Block<'a> {
    #[serde(flatten)]
    pub content: BlockContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockContent<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        is_error: bool,
    },
}

/// A prompt-cache breakpoint: the prefix up to and including the block it marks is cached.
#[derive(Serialize, Clone, Copy, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CacheControl {
    Ephemeral,
}

#[derive(Serialize, Debug)]
pub struct Tool<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub input_schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

/// A response (a `message`), or the start of a streamed one.
#[derive(Deserialize, Default, Debug)]
pub struct Response {
    pub content: Option<Vec<ResponseBlock>>,
    pub stop_reason: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: Option<String>,
        name: Option<String>,
        /// An object as the API sends it; some compatible servers send a JSON string.
        input: Option<Value>,
    },
    /// `thinking`, `redacted_thinking`, and types newer than this code.
    #[serde(other)]
    Other,
}

/// Token counts; absent or `null` counts are `None`.
#[derive(Deserialize, Default, Debug)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

/// An error body (`{"type":"error","error":{…}}`), and the `error` stream event.
#[derive(Deserialize, Debug)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Deserialize, Default, Debug)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: Option<String>,
}

/// One server-sent event of a streamed response.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Option<Response>,
    },
    ContentBlockStart {
        index: Option<u64>,
        content_block: Option<ResponseBlock>,
    },
    ContentBlockDelta {
        index: Option<u64>,
        #[serde(default)]
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        usage: Option<Usage>,
    },
    MessageStop,
    Error {
        error: Option<ErrorDetail>,
        message: Option<String>,
    },
    /// `ping`, `content_block_stop`, and events newer than this code.
    #[serde(other)]
    Other,
}

/// A piece of a block: text (`text_delta`) or a piece of a tool call's input JSON
/// (`input_json_delta`); other kinds (`thinking_delta`, …) carry neither.
#[derive(Deserialize, Default, Debug)]
pub struct BlockDelta {
    pub text: Option<String>,
    pub partial_json: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
pub struct MessageDelta {
    pub stop_reason: Option<String>,
}
