//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`): OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM and other gateways. The request body and the response, pure.

pub mod wire;

use super::{
    ChatRequest, ChatResponse, ContentBlock, ResponseError, Role, Usage, tool_use, unique_ids,
};

/// The request body. Tool results become `tool` messages right after the assistant's tool calls;
/// text in the same user turn follows them.
pub fn request(chat: &ChatRequest) -> wire::Request<'_> {
    let mut messages = Vec::new();
    if !chat.system.is_empty() {
        messages.push(wire::Message::System {
            content: &chat.system,
        });
    }
    for message in &chat.messages {
        let text: Vec<&str> = message
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::Text { text } if !text.trim().is_empty() => Some(text.as_str()),
                ContentBlock::Text { .. }
                | ContentBlock::ToolUse { .. }
                | ContentBlock::ToolResult { .. } => None,
            })
            .collect();
        let text = text.join("\n\n");
        match message.role {
            Role::Assistant => {
                let tool_calls = message
                    .content
                    .iter()
                    .filter_map(|block| match block {
                        ContentBlock::ToolUse { id, name, input } => {
                            Some(wire::ToolCall::Function {
                                id,
                                function: wire::Call {
                                    name,
                                    arguments: input.to_string(),
                                },
                            })
                        }
                        ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
                    })
                    .collect();
                messages.push(wire::Message::Assistant {
                    content: (!text.is_empty()).then_some(text),
                    tool_calls,
                });
            }
            Role::User => {
                for block in &message.content {
                    if let ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = block
                    {
                        let content = match (is_error, content.is_empty()) {
                            (true, _) => format!("ERROR: {content}"),
                            (false, true) => "(no output)".to_string(),
                            (false, false) => content.clone(),
                        };
                        messages.push(wire::Message::Tool {
                            tool_call_id: tool_use_id,
                            content,
                        });
                    }
                }
                if !text.is_empty() {
                    messages.push(wire::Message::User { content: text });
                }
            }
        }
    }
    let tools = chat
        .tools
        .iter()
        .map(|tool| wire::Tool::Function {
            function: wire::Function {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.input_schema,
            },
        })
        .collect();
    wire::Request {
        model: &chat.model,
        max_tokens: chat.max_tokens,
        messages,
        tools,
        stream: false,
        stream_options: None,
    }
}

/// [`request`] as JSON.
pub fn request_body(chat: &ChatRequest) -> serde_json::Value {
    serde_json::to_value(request(chat)).expect("a request body is JSON")
}

/// Parses a response, accepting what compatible servers send: `content: null` or a list of parts,
/// `arguments` as an object or as a string that is not JSON, missing ids and usage.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ResponseError> {
    parse_message(super::read(body)?)
}

/// [`parse_response`] of a body already read.
pub fn parse_message(completion: wire::Response) -> Result<ChatResponse, ResponseError> {
    let choice = completion
        .choices
        .and_then(|choices| choices.into_iter().next())
        .ok_or(ResponseError::NoChoices)?;
    let message = choice.message.ok_or(ResponseError::ChoiceWithoutMessage)?;
    let mut content = Vec::new();
    let text = match message.content {
        Some(wire::Content::Text(text)) => text,
        Some(wire::Content::Parts(parts)) => parts
            .into_iter()
            .filter_map(|part| part.text)
            .collect::<Vec<_>>()
            .join(""),
        Some(wire::Content::Other(_)) | None => String::new(),
    };
    if !text.trim().is_empty() {
        content.push(ContentBlock::Text { text });
    }
    for call in message.tool_calls.into_iter().flatten() {
        let function = call
            .function
            .ok_or(ResponseError::ToolCallWithoutFunction)?;
        let name = function.name.ok_or(ResponseError::ToolCallWithoutName)?;
        content.push(tool_use(call.id, name, function.arguments));
    }
    unique_ids(&mut content);
    Ok(ChatResponse {
        content,
        stop_reason: choice.finish_reason,
        usage: usage(completion.usage.unwrap_or_default()),
    })
}

/// The usage of a response: `prompt_tokens` includes the tokens a server's automatic prompt cache
/// served (`prompt_tokens_details.cached_tokens`), which are billed apart.
fn usage(usage: wire::Usage) -> Usage {
    let prompt = usage.prompt_tokens.unwrap_or(0);
    let cached = usage
        .prompt_tokens_details
        .and_then(|details| details.cached_tokens)
        .unwrap_or(0)
        .min(prompt);
    Usage {
        input_tokens: prompt - cached,
        cache_write_tokens: 0,
        cache_read_tokens: cached,
        output_tokens: usage.completion_tokens.unwrap_or(0),
    }
}

/// The error type (or code) and message of an error body (`{"error":{…}}`).
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let wire::ErrorBody { error } = serde_json::from_slice(body).ok()?;
    Some(error_parts(error))
}

/// An error's type (or code) and message. A code that only repeats the type, or the HTTP status
/// (some gateways send `"code": "400"`), is left out.
fn error_parts(error: wire::Error) -> (String, String) {
    let detail = match error {
        wire::Error::Message(message) => return (String::new(), message),
        wire::Error::Detail(detail) => detail,
    };
    let code = match detail.code {
        Some(wire::ErrorCode::Name(code)) => Some(code),
        Some(wire::ErrorCode::Other(_)) | None => None,
    };
    let mut names: Vec<String> = Vec::new();
    for name in [code, detail.kind].into_iter().flatten() {
        let a_status = !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_digit());
        if !name.is_empty() && !a_status && !names.contains(&name) {
            names.push(name);
        }
    }
    (names.join(" "), detail.message.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, ToolSpec};
    use serde_json::{Value, json};

    #[test]
    fn the_request_body_is_what_chat_completions_takes() {
        let request = ChatRequest {
            model: "gpt".into(),
            system: "sys".into(),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::Text {
                        text: "ticket".into(),
                    }],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse {
                        id: "c1".into(),
                        name: "shell".into(),
                        input: json!({"command": "ls"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        ContentBlock::ToolResult {
                            tool_use_id: "c1".into(),
                            content: "a b".into(),
                            is_error: false,
                        },
                        ContentBlock::Text {
                            text: "update".into(),
                        },
                    ],
                },
            ],
            tools: vec![ToolSpec {
                name: "shell".into(),
                description: "run".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 50,
        };
        assert_eq!(
            request_body(&request),
            json!({
                "model": "gpt",
                "max_tokens": 50,
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "ticket"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "a b"},
                    {"role": "user", "content": "update"}
                ],
                "tools": [{"type": "function", "function": {"name": "shell", "description": "run", "parameters": {"type": "object"}}}]
            })
        );
    }

    #[test]
    fn responses_are_read_liberally() {
        let body = json!({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}},
                    {"type": "function", "function": {"name": "shell", "arguments": {"command": "ps"}}},
                    {"id": "call_0", "function": {"name": "shell", "arguments": "{broken"}}
                ]
            }}]
        });
        let response = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(response.usage, Usage::default());
        assert_eq!(response.stop_reason.as_deref(), Some("tool_calls"));
        let inputs: Vec<Value> = response
            .content
            .iter()
            .map(|block| match block {
                ContentBlock::ToolUse { input, .. } => input.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            inputs,
            vec![
                json!({"command": "ls"}),
                json!({"command": "ps"}),
                json!({"__raw_arguments": "{broken"})
            ]
        );
        let ids: std::collections::BTreeSet<String> = response
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 3, "ids are present and unique: {ids:?}");
        let text = json!({"choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}],
                          "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                    "prompt_tokens_details": {"cached_tokens": 5}}});
        let response = parse_response(text.to_string().as_bytes()).unwrap();
        assert_eq!(
            response.content,
            vec![ContentBlock::Text { text: "hi".into() }]
        );
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 2,
                cache_write_tokens: 0,
                cache_read_tokens: 5,
                output_tokens: 2
            }
        );
        assert!(parse_response(br#"{"choices": []}"#).is_err());
    }

    #[test]
    fn error_bodies_are_read() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(
            parse_error(body),
            Some((
                "insufficient_quota".into(),
                "You exceeded your current quota".into()
            ))
        );
        let gateway = br#"{"error":{"message":"bad tool schema","type":"invalid_request_error","param":null,"code":"400"}}"#;
        assert_eq!(
            parse_error(gateway),
            Some(("invalid_request_error".into(), "bad tool schema".into()))
        );
        let both = br#"{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}"#;
        assert_eq!(
            parse_error(both),
            Some((
                "model_not_found invalid_request_error".into(),
                "no such model".into()
            ))
        );
        assert_eq!(
            parse_error(br#"{"error":"model not found"}"#),
            Some((String::new(), "model not found".into()))
        );
    }
}
