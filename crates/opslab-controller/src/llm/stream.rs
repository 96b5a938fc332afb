//! Streamed responses (`stream: true`, server-sent events) put back together as the whole response
//! each protocol would have sent, so that one parser reads both. Pure: the events are parsed from
//! the body by `eventsource-stream` (see [`super::LlmClient`]).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One server-sent event: its `event:` name (empty when none) and its `data:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sse {
    pub event: String,
    pub data: String,
}

/// Why a stream could not be put together. `Cut` streams ended early and are worth another try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The stream ended before the response was complete.
    Cut(String),
    /// The server sent an error event.
    Error { error_type: String, message: String },
    /// An event that is not what the protocol sends.
    Malformed(String),
}

fn data(event: &Sse) -> Result<Value, StreamError> {
    serde_json::from_str(&event.data).map_err(|error| {
        StreamError::Malformed(format!(
            "an event's data is not JSON ({error}): {}",
            event.data
        ))
    })
}

fn error_event(value: &Value) -> StreamError {
    let error = value.get("error").unwrap_or(value);
    let text = |field: &str| {
        error
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    StreamError::Error {
        error_type: text("type"),
        message: text("message"),
    }
}

/// The Messages API's events (`message_start`, `content_block_start`/`_delta`/`_stop`,
/// `message_delta`, `message_stop`) as the message a whole response would have been.
pub fn anthropic(events: &[Sse]) -> Result<Value, StreamError> {
    let mut message: Option<Value> = None;
    // Per block index: the block, and the JSON of a tool call's input as it arrives in pieces.
    let mut blocks: BTreeMap<u64, (Value, String)> = BTreeMap::new();
    let mut stopped = false;
    for event in events {
        if event.data.trim().is_empty() {
            continue;
        }
        let value = data(event)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => message = value.get("message").cloned(),
            "content_block_start" => {
                let block = value.get("content_block").cloned().unwrap_or(json!({}));
                blocks.insert(index, (block, String::new()));
            }
            "content_block_delta" => {
                let Some((block, input)) = blocks.get_mut(&index) else {
                    return Err(StreamError::Malformed(format!(
                        "a delta for block {index}, which never started"
                    )));
                };
                let delta = value.get("delta").cloned().unwrap_or(json!({}));
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    let whole = format!("{}{text}", block["text"].as_str().unwrap_or_default());
                    block["text"] = json!(whole);
                }
                if let Some(part) = delta.get("partial_json").and_then(Value::as_str) {
                    input.push_str(part);
                }
            }
            "message_delta" => {
                let message = message.get_or_insert_with(|| json!({}));
                if let Some(reason) = value.pointer("/delta/stop_reason") {
                    message["stop_reason"] = reason.clone();
                }
                // The final usage: output tokens, and on some servers the input counts too.
                if let Some(usage) = value.get("usage").and_then(Value::as_object) {
                    for (field, count) in usage {
                        if !count.is_null() {
                            message["usage"][field] = count.clone();
                        }
                    }
                }
            }
            "message_stop" => stopped = true,
            "error" => return Err(error_event(&value)),
            // `ping`, `content_block_stop`, and events newer than this code.
            _ => {}
        }
    }
    let Some(mut message) = message.filter(|_| stopped) else {
        return Err(StreamError::Cut(
            "the event stream ended before `message_stop`".into(),
        ));
    };
    let content: Vec<Value> = blocks
        .into_values()
        .map(|(mut block, input)| {
            if !input.trim().is_empty() {
                block["input"] = json!(input);
            }
            block
        })
        .collect();
    message["content"] = json!(content);
    Ok(message)
}

/// Chat Completions chunks (`data: {…}` up to `data: [DONE]`) as the completion a whole response
/// would have been.
pub fn openai(events: &[Sse]) -> Result<Value, StreamError> {
    let mut text = String::new();
    // Per tool-call index: id, name and the arguments as they arrive in pieces.
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    let mut finish_reason = Value::Null;
    let mut usage = Value::Null;
    let mut done = false;
    for event in events {
        let payload = event.data.trim();
        if payload.is_empty() {
            continue;
        }
        if payload == "[DONE]" {
            done = true;
            continue;
        }
        let value = data(event)?;
        if value.get("error").is_some() {
            return Err(error_event(&value));
        }
        if let Some(found) = value.get("usage").filter(|usage| !usage.is_null()) {
            usage = found.clone();
        }
        for choice in value
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                finish_reason = reason.clone();
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(piece) = delta.get("content").and_then(Value::as_str) {
                text.push_str(piece);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = calls.entry(index).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    entry.0 = id.to_string();
                }
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    entry.1.push_str(name);
                }
                if let Some(arguments) = call.pointer("/function/arguments") {
                    match arguments {
                        Value::String(piece) => entry.2.push_str(piece),
                        Value::Null => {}
                        whole => entry.2 = whole.to_string(),
                    }
                }
            }
        }
    }
    // Some servers end without `[DONE]` but after a finish reason; either says it is whole.
    if !done && finish_reason.is_null() {
        return Err(StreamError::Cut(
            "the event stream ended before a finish reason or `[DONE]`".into(),
        ));
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .into_values()
            .map(|(id, name, arguments)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
            })
            .collect();
    }
    Ok(json!({
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }))
}

/// An answer as it is being written, from its events as they come: its text and each tool call's
/// name and arguments so far. What `follow` and the console show before the answer is whole; the
/// stored answer is still put together by [`anthropic`] or [`openai`] from every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    /// By place (text before tool calls, then by index): a tool call's name (None for text), and
    /// its text or arguments so far.
    parts: BTreeMap<(u8, u64), (Option<String>, String)>,
}

impl Partial {
    /// Takes in one Messages API event. Events it cannot read are left to the whole parse.
    pub fn anthropic(&mut self, event: &Sse) {
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match value.get("type").and_then(Value::as_str) {
            Some("content_block_start") => {
                let block = value.get("content_block").unwrap_or(&Value::Null);
                let name = (block.get("type").and_then(Value::as_str) == Some("tool_use"))
                    .then(|| text_of(block.get("name")));
                self.parts
                    .insert((0, index), (name, text_of(block.get("text"))));
            }
            Some("content_block_delta") => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                let piece = delta
                    .get("text")
                    .or_else(|| delta.get("partial_json"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.parts.entry((0, index)).or_default().1.push_str(piece);
            }
            _ => {}
        }
    }

    /// Takes in one Chat Completions chunk.
    pub fn openai(&mut self, event: &Sse) {
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        for choice in value
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(piece) = delta.get("content").and_then(Value::as_str) {
                self.parts.entry((0, 0)).or_default().1.push_str(piece);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let (name, arguments) = self.parts.entry((1, index)).or_default();
                if let Some(piece) = call.pointer("/function/name").and_then(Value::as_str) {
                    name.get_or_insert_default().push_str(piece);
                }
                if let Some(piece) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    arguments.push_str(piece);
                }
            }
        }
    }

    /// The answer so far, for people: its text, then each call as `calls NAME ARGUMENTS`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (name, text) in self.parts.values() {
            if text.trim().is_empty() && name.is_none() {
                continue;
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if let Some(name) = name {
                out.push_str(&format!("calls {name} "));
            }
            out.push_str(text);
        }
        out
    }
}

fn text_of(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(lines: &[(&str, Value)]) -> Vec<Sse> {
        lines
            .iter()
            .map(|(event, data)| Sse {
                event: event.to_string(),
                data: data.to_string(),
            })
            .collect()
    }

    #[test]
    fn anthropic_events_make_the_whole_message() {
        let events = sse(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "stop_reason": null,
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 900, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "the disk."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": \"df"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " -h\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 25}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        let message = anthropic(&events).unwrap();
        let response = crate::llm::anthropic::parse_message(&message).unwrap();
        assert_eq!(
            response.content,
            vec![
                crate::llm::ContentBlock::Text {
                    text: "Checking the disk.".into()
                },
                crate::llm::ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "df -h"})
                }
            ]
        );
        assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            (
                response.usage.input_tokens,
                response.usage.cache_read_tokens,
                response.usage.output_tokens
            ),
            (10, 900, 25)
        );
        // Cut before the end: another try.
        assert!(matches!(anthropic(&events[..8]), Err(StreamError::Cut(_))));
        let error = sse(&[(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]);
        assert_eq!(
            anthropic(&error),
            Err(StreamError::Error {
                error_type: "overloaded_error".into(),
                message: "Overloaded".into()
            })
        );
    }

    #[test]
    fn openai_chunks_make_the_whole_completion() {
        let mut events = sse(&[
            (
                "",
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Look"}, "finish_reason": null}]}),
            ),
            (
                "",
                json!({"choices": [{"index": 0, "delta": {"content": "ing."}, "finish_reason": null}]}),
            ),
            (
                "",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": ""}}]}, "finish_reason": null}]}),
            ),
            (
                "",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}, "finish_reason": null}]}),
            ),
            (
                "",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"uptime\"}"}}]}, "finish_reason": null}]}),
            ),
            (
                "",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            ),
            (
                "",
                json!({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 32}}}),
            ),
        ]);
        events.push(Sse {
            event: String::new(),
            data: "[DONE]".into(),
        });
        let completion = openai(&events).unwrap();
        let response = crate::llm::openai::parse_message(&completion).unwrap();
        assert_eq!(
            response.content,
            vec![
                crate::llm::ContentBlock::Text {
                    text: "Looking.".into()
                },
                crate::llm::ContentBlock::ToolUse {
                    id: "call_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "uptime"})
                }
            ]
        );
        assert_eq!(response.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            (
                response.usage.input_tokens,
                response.usage.cache_read_tokens,
                response.usage.output_tokens
            ),
            (18, 32, 9)
        );
        assert!(matches!(openai(&events[..4]), Err(StreamError::Cut(_))));
    }

    #[test]
    fn a_partial_answer_reads_as_it_is_written() {
        let mut partial = Partial::default();
        let anthropic = sse(&[
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The disk "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "is full."}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "shell", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": \"df"}}),
            ),
        ]);
        for event in &anthropic[..2] {
            partial.anthropic(event);
        }
        assert_eq!(partial.text(), "The disk ");
        for event in &anthropic[2..] {
            partial.anthropic(event);
        }
        assert_eq!(
            partial.text(),
            "The disk is full.\ncalls shell {\"command\": \"df"
        );

        let mut partial = Partial::default();
        for data in [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Look "}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "shell", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "first."}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\""}}]}}]}),
        ] {
            partial.openai(&Sse {
                event: String::new(),
                data: data.to_string(),
            });
        }
        partial.openai(&Sse {
            event: String::new(),
            data: "[DONE]".into(),
        });
        assert_eq!(partial.text(), "Look first.\ncalls shell {\"command\"");
    }
}
