//! Anthropic's Messages API (`POST /v1/messages`): the request body and the response, pure.

pub mod wire;

use super::{
    ChatRequest, ChatResponse, ContentBlock, ResponseError, Role, Usage, tool_use, unique_ids,
};
use wire::{Block, BlockContent, CacheControl};

pub const API_VERSION: &str = "2023-06-01";

/// The request body. Empty text blocks are dropped (the API refuses them) and consecutive messages of
/// one role are merged (the API wants them alternating).
///
/// With `prompt_cache`, four breakpoints (the API's limit) mark what the next turn re-sends
/// unchanged: the tools, the system prompt, the message the previous turn ended with (which that
/// turn wrote to the cache, so this one reads it) and the latest message (written now, read by the
/// next turn). The tools and system prompt come first in the API's prefix order and never change
/// within a session, so each turn reads all but its newest messages from the cache.
pub fn request(chat: &ChatRequest, prompt_cache: bool) -> wire::Request<'_> {
    let mut messages: Vec<wire::Message> = Vec::new();
    for message in &chat.messages {
        let blocks: Vec<Block> = message.content.iter().filter_map(block).collect();
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == message.role => last.content.extend(blocks),
            _ => messages.push(wire::Message {
                role: message.role,
                content: blocks,
            }),
        }
    }
    let breakpoint = prompt_cache.then_some(CacheControl::Ephemeral);
    if prompt_cache {
        // The latest message, and the user message before the latest answer: the previous
        // request's last message.
        let last = messages.len().checked_sub(1);
        let previous_user = last.and_then(|last| {
            messages[..last]
                .iter()
                .rposition(|message| message.role == Role::User)
        });
        let marked = [last, previous_user].into_iter().flatten();
        for index in marked {
            if let Some(block) = messages[index].content.last_mut() {
                block.cache_control = breakpoint;
            }
        }
    }
    let system = (!chat.system.is_empty()).then(|| {
        if prompt_cache {
            wire::System::Blocks(vec![Block {
                content: BlockContent::Text { text: &chat.system },
                cache_control: breakpoint,
            }])
        } else {
            wire::System::Text(&chat.system)
        }
    });
    let count = chat.tools.len();
    let tools = chat
        .tools
        .iter()
        .enumerate()
        .map(|(index, tool)| wire::Tool {
            name: &tool.name,
            description: &tool.description,
            input_schema: &tool.input_schema,
            cache_control: breakpoint.filter(|_| index + 1 == count),
        })
        .collect();
    wire::Request {
        model: &chat.model,
        max_tokens: chat.max_tokens,
        messages,
        system,
        tools,
        stream: false,
    }
}

/// [`request`] as JSON.
pub fn request_body(chat: &ChatRequest, prompt_cache: bool) -> serde_json::Value {
    serde_json::to_value(request(chat, prompt_cache)).expect("a request body is JSON")
}

fn block(block: &ContentBlock) -> Option<Block<'_>> {
    let content = match block {
        ContentBlock::Text { text } if text.trim().is_empty() => return None,
        ContentBlock::Text { text } => BlockContent::Text { text },
        ContentBlock::ToolUse { id, name, input } => BlockContent::ToolUse { id, name, input },
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => BlockContent::ToolResult {
            tool_use_id,
            content: if content.is_empty() {
                "(no output)"
            } else {
                content
            },
            is_error: *is_error,
        },
    };
    Some(Block {
        content,
        cache_control: None,
    })
}

/// Parses a response, accepting what real servers send: unknown block types (thinking, …) are
/// skipped, missing ids are made up, absent usage counts as zero.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ResponseError> {
    parse_message(super::read(body)?)
}

/// [`parse_response`] of a body already read.
pub fn parse_message(message: wire::Response) -> Result<ChatResponse, ResponseError> {
    let mut content = Vec::new();
    for block in message.content.ok_or(ResponseError::NoContent)? {
        match block {
            wire::ResponseBlock::Text { text } if text.trim().is_empty() => {}
            wire::ResponseBlock::Text { text } => content.push(ContentBlock::Text { text }),
            wire::ResponseBlock::ToolUse { id, name, input } => {
                let name = name.ok_or(ResponseError::ToolUseWithoutName)?;
                content.push(tool_use(id, name, input));
            }
            wire::ResponseBlock::Other => {}
        }
    }
    unique_ids(&mut content);
    let usage = message.usage.unwrap_or_default();
    Ok(ChatResponse {
        content,
        stop_reason: message.stop_reason,
        usage: Usage {
            input_tokens: usage.input_tokens.unwrap_or(0),
            cache_write_tokens: usage.cache_creation_input_tokens.unwrap_or(0),
            cache_read_tokens: usage.cache_read_input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
        },
    })
}

/// The error type and message of an error body (`{"type":"error","error":{…}}`).
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let wire::ErrorBody { error } = serde_json::from_slice(body).ok()?;
    Some((
        error.kind.unwrap_or_default(),
        error.message.unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, ToolSpec};
    use serde_json::{Value, json};

    fn request() -> ChatRequest {
        ChatRequest {
            model: "claude".into(),
            system: "be careful".into(),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::Text {
                        text: "ticket".into(),
                    }],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Text { text: " ".into() },
                        ContentBlock::ToolUse {
                            id: "toolu_1".into(),
                            name: "shell".into(),
                            input: json!({"command": "ls"}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "toolu_1".into(),
                        content: String::new(),
                        is_error: true,
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::Text {
                        text: "more".into(),
                    }],
                },
            ],
            tools: vec![ToolSpec {
                name: "shell".into(),
                description: "run".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 100,
        }
    }

    #[test]
    fn the_request_body_is_what_the_api_takes() {
        assert_eq!(
            request_body(&request(), false),
            json!({
                "model": "claude",
                "max_tokens": 100,
                "system": "be careful",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "ticket"}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": "ls"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "(no output)", "is_error": true},
                        {"type": "text", "text": "more"}
                    ]}
                ],
                "tools": [{"name": "shell", "description": "run", "input_schema": {"type": "object"}}]
            })
        );
    }

    #[test]
    fn responses_are_read_liberally() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": ""},
                {"type": "tool_use", "id": "1", "name": "shell", "input": {"command": "ls"}},
                {"type": "tool_use", "name": "shell", "input": "{\"command\": \"ps\"}"},
                {"type": "tool_use", "id": "1", "name": "report", "input": "not json"}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3},
            "extra": true
        });
        let response = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 10,
                cache_write_tokens: 0,
                cache_read_tokens: 3,
                output_tokens: 5
            }
        );
        assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
        let calls: Vec<(String, String, Value)> = response
            .content
            .iter()
            .map(|block| match block {
                ContentBlock::ToolUse { id, name, input } => {
                    (id.clone(), name.clone(), input.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            calls[0],
            ("1".into(), "shell".into(), json!({"command": "ls"}))
        );
        assert_eq!(calls[1].2, json!({"command": "ps"}));
        assert!(!calls[1].0.is_empty());
        assert_ne!(calls[2].0, "1", "a repeated id is made unique");
        assert_eq!(calls[2].2, json!({"__raw_arguments": "not json"}));
        let minimal = parse_response(br#"{"content": [{"type": "text", "text": "hi"}]}"#).unwrap();
        assert_eq!(minimal.usage, Usage::default());
        assert!(parse_response(b"<html>").is_err());
        assert!(parse_response(b"{}").is_err());
    }

    #[test]
    fn error_bodies_are_read() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            parse_error(body),
            Some(("overloaded_error".into(), "Overloaded".into()))
        );
        assert_eq!(parse_error(b"bad gateway"), None);
    }
}
