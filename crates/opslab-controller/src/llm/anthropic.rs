//! Anthropic's Messages API (`POST /v1/messages`): the request body and the response, pure.

use serde_json::{Value, json};

use super::{
    ChatRequest, ChatResponse, ContentBlock, ResponseError, Role, Usage, tool_input, unique_ids,
    usage_count,
};

pub const API_VERSION: &str = "2023-06-01";

/// A prompt-cache breakpoint: the prefix up to and including the block it marks is cached.
fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// The request body. Empty text blocks are dropped (the API refuses them) and consecutive messages of
/// one role are merged (the API wants them alternating).
///
/// With `prompt_cache`, four breakpoints (the API's limit) mark what the next turn re-sends
/// unchanged: the tools, the system prompt, the message the previous turn ended with (which that
/// turn wrote to the cache, so this one reads it) and the latest message (written now, read by the
/// next turn). The tools and system prompt come first in the API's prefix order and never change
/// within a session, so each turn reads all but its newest messages from the cache.
pub fn request_body(request: &ChatRequest, prompt_cache: bool) -> Value {
    let mut messages: Vec<(Role, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let blocks: Vec<Value> = message.content.iter().filter_map(block).collect();
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((role, content)) if *role == message.role => content.extend(blocks),
            _ => messages.push((message.role, blocks)),
        }
    }
    if prompt_cache {
        // The latest message, and the user message before the latest answer: the previous
        // request's last message.
        let last = messages.len().checked_sub(1);
        let previous_user = last.and_then(|last| {
            messages[..last]
                .iter()
                .rposition(|(role, _)| *role == Role::User)
        });
        let marked = [last, previous_user].into_iter().flatten();
        for index in marked {
            if let Some(block) = messages[index].1.last_mut() {
                block["cache_control"] = ephemeral();
            }
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role_name(role), "content": content}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    });
    if !request.system.is_empty() {
        body["system"] = if prompt_cache {
            json!([{"type": "text", "text": request.system, "cache_control": ephemeral()}])
        } else {
            json!(request.system)
        };
    }
    if !request.tools.is_empty() {
        let count = request.tools.len();
        body["tools"] = request
            .tools
            .iter()
            .enumerate()
            .map(|(index, tool)| {
                let mut tool = json!({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema});
                if prompt_cache && index + 1 == count {
                    tool["cache_control"] = ephemeral();
                }
                tool
            })
            .collect();
    }
    body
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn block(block: &ContentBlock) -> Option<Value> {
    match block {
        ContentBlock::Text { text } if text.trim().is_empty() => None,
        ContentBlock::Text { text } => Some(json!({"type": "text", "text": text})),
        ContentBlock::ToolUse { id, name, input } => {
            Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
        }
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let content = if content.is_empty() {
                "(no output)"
            } else {
                content
            };
            Some(
                json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error}),
            )
        }
    }
}

/// Parses a response, accepting what real servers send: unknown block types (thinking, …) are
/// skipped, missing ids are made up, absent usage counts as zero.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ResponseError> {
    let value: Value = serde_json::from_slice(body).map_err(ResponseError::NotJson)?;
    parse_message(&value)
}

/// [`parse_response`] of a body already read as JSON.
pub fn parse_message(value: &Value) -> Result<ChatResponse, ResponseError> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or(ResponseError::NoContent)?;
    let mut content = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !text.trim().is_empty() {
                    content.push(ContentBlock::Text {
                        text: text.to_string(),
                    });
                }
            }
            Some("tool_use") => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(ResponseError::ToolUseWithoutName)?;
                content.push(ContentBlock::ToolUse {
                    id: block
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    name: name.to_string(),
                    input: tool_input(block.get("input")),
                });
            }
            _ => {}
        }
    }
    unique_ids(&mut content);
    let count = |field| usage_count(value, field);
    Ok(ChatResponse {
        content,
        stop_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: Usage {
            input_tokens: count("input_tokens"),
            cache_write_tokens: count("cache_creation_input_tokens"),
            cache_read_tokens: count("cache_read_input_tokens"),
            output_tokens: count("output_tokens"),
        },
    })
}

/// The error type and message of an error body (`{"type":"error","error":{…}}`).
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    Some((
        error
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, ToolSpec};

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
