//! Chat Completions' JSON: the request as sent (borrowed from the
//! [`ChatRequest`](crate::llm::ChatRequest) it is built from), and the response, its stream chunks
//! and error bodies as read. What is read is read liberally, for the many compatible servers:
//! unknown fields are ignored, absent ones are `None`, fields servers fill in different shapes are
//! read in each.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `POST {base}/chat/completions` body.
#[derive(Serialize, Debug)]
pub struct Request<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// Ask for the response as server-sent events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Serialize, Debug)]
pub struct StreamOptions {
    /// The usage comes in a last chunk only when asked for.
    pub include_usage: bool,
}

#[derive(Serialize, Debug)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message<'a> {
    System {
        content: &'a str,
    },
    User {
        content: String,
    },
    /// `content` is `null` when the answer is only tool calls.
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToolCall<'a> {
    Function { id: &'a str, function: Call<'a> },
}

#[derive(Serialize, Debug)]
pub struct Call<'a> {
    pub name: &'a str,
    /// The arguments' JSON, as a string.
    pub arguments: String,
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Tool<'a> {
    Function { function: Function<'a> },
}

#[derive(Serialize, Debug)]
pub struct Function<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub parameters: &'a Value,
}

/// A completion.
#[derive(Deserialize, Debug)]
pub struct Response {
    pub choices: Option<Vec<Choice>>,
    pub usage: Option<Usage>,
}

#[derive(Deserialize, Debug)]
pub struct Choice {
    pub message: Option<ResponseMessage>,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct ResponseMessage {
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<ResponseToolCall>>,
}

/// A message's content: text, or (on some servers) a list of parts.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
    Other(IgnoredAny),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    pub text: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct ResponseToolCall {
    pub id: Option<String>,
    pub function: Option<ResponseCall>,
}

#[derive(Deserialize, Debug)]
pub struct ResponseCall {
    pub name: Option<String>,
    /// A JSON string as the API sends it; some servers send an object.
    pub arguments: Option<Value>,
}

/// Token counts; absent or `null` counts are `None`.
#[derive(Deserialize, Default, Debug)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize, Debug)]
pub struct PromptTokensDetails {
    /// The part of `prompt_tokens` a server's automatic prompt cache served.
    pub cached_tokens: Option<u64>,
}

/// An error body (`{"error":{…}}`), or a chunk's error.
#[derive(Deserialize, Debug)]
pub struct ErrorBody {
    pub error: Error,
}

/// An error: an object, or on some servers only its message.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Error {
    Message(String),
    Detail(ErrorDetail),
}

#[derive(Deserialize, Debug)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<ErrorCode>,
    pub message: Option<String>,
}

/// An error's code: a name, or on some gateways the HTTP status as a number (not kept).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum ErrorCode {
    Name(String),
    Other(IgnoredAny),
}

/// One chunk of a streamed completion.
#[derive(Deserialize, Debug)]
pub struct Chunk {
    pub choices: Option<Vec<ChunkChoice>>,
    pub usage: Option<Usage>,
    pub error: Option<Error>,
}

#[derive(Deserialize, Debug)]
pub struct ChunkChoice {
    pub delta: Option<Delta>,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Delta {
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a tool call: its id and name come first, its arguments in pieces.
#[derive(Deserialize, Debug)]
pub struct ToolCallDelta {
    pub index: Option<u64>,
    pub id: Option<String>,
    pub function: Option<CallDelta>,
}

#[derive(Deserialize, Debug)]
pub struct CallDelta {
    pub name: Option<String>,
    /// A piece of the arguments' JSON string; some servers send the whole arguments as an object.
    pub arguments: Option<Value>,
}
