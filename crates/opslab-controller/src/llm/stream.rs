//! Streamed responses (`stream: true`, server-sent events) put back together as the whole response
//! each protocol would have sent, so that one parser reads both. Pure: the events are parsed from
//! the body by `eventsource-stream` (see [`super::LlmClient`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::anthropic::wire as messages;
use super::openai::wire as completions;

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

fn json(event: &Sse) -> Result<Value, StreamError> {
    serde_json::from_str(&event.data).map_err(|error| {
        StreamError::Malformed(format!(
            "an event's data is not JSON ({error}): {}",
            event.data
        ))
    })
}

fn typed<T: DeserializeOwned>(event: &Sse, data: Value) -> Result<T, StreamError> {
    serde_json::from_value(data).map_err(|error| {
        StreamError::Malformed(format!(
            "an event is not one the protocol sends ({error}): {}",
            event.data
        ))
    })
}

/// A Messages API event. Its type is in its data, or on some servers only in its `event:` name.
fn messages_event(event: &Sse) -> Result<messages::StreamEvent, StreamError> {
    let mut data = json(event)?;
    if let Value::Object(fields) = &mut data {
        fields
            .entry("type")
            .or_insert_with(|| Value::String(event.event.clone()));
    }
    typed(event, data)
}

fn completions_chunk(event: &Sse) -> Result<completions::Chunk, StreamError> {
    typed(event, json(event)?)
}

/// The Messages API's events (`message_start`, `content_block_start`/`_delta`/`_stop`,
/// `message_delta`, `message_stop`) as the message a whole response would have been.
pub fn anthropic(events: &[Sse]) -> Result<messages::Response, StreamError> {
    use messages::{ResponseBlock, StreamEvent};
    let mut message: Option<messages::Response> = None;
    // Per block index: the block, and the JSON of a tool call's input as it arrives in pieces.
    let mut blocks: BTreeMap<u64, (ResponseBlock, String)> = BTreeMap::new();
    let mut stopped = false;
    for event in events {
        if event.data.trim().is_empty() {
            continue;
        }
        match messages_event(event)? {
            StreamEvent::MessageStart { message: start } => message = start,
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let block = content_block.unwrap_or(ResponseBlock::Other);
                blocks.insert(index.unwrap_or(0), (block, String::new()));
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let index = index.unwrap_or(0);
                let Some((block, input)) = blocks.get_mut(&index) else {
                    return Err(StreamError::Malformed(format!(
                        "a delta for block {index}, which never started"
                    )));
                };
                if let (Some(piece), ResponseBlock::Text { text }) = (delta.text, block) {
                    text.push_str(&piece);
                }
                if let Some(piece) = delta.partial_json {
                    input.push_str(&piece);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                let message = message.get_or_insert_default();
                if delta.stop_reason.is_some() {
                    message.stop_reason = delta.stop_reason;
                }
                // The final usage: output tokens, and on some servers the input counts too.
                if let Some(last) = usage {
                    let usage = message.usage.get_or_insert_default();
                    usage.input_tokens = last.input_tokens.or(usage.input_tokens);
                    usage.output_tokens = last.output_tokens.or(usage.output_tokens);
                    usage.cache_creation_input_tokens = last
                        .cache_creation_input_tokens
                        .or(usage.cache_creation_input_tokens);
                    usage.cache_read_input_tokens = last
                        .cache_read_input_tokens
                        .or(usage.cache_read_input_tokens);
                }
            }
            StreamEvent::MessageStop => stopped = true,
            StreamEvent::Error {
                error,
                message: text,
            } => {
                // The error is nested as in an error body, or on some servers the event itself.
                let error = error.unwrap_or(messages::ErrorDetail {
                    kind: Some("error".into()),
                    message: text,
                });
                return Err(StreamError::Error {
                    error_type: error.kind.unwrap_or_default(),
                    message: error.message.unwrap_or_default(),
                });
            }
            // `ping`, `content_block_stop`, and events newer than this code.
            StreamEvent::Other => {}
        }
    }
    let Some(mut message) = message.filter(|_| stopped) else {
        return Err(StreamError::Cut(
            "the event stream ended before `message_stop`".into(),
        ));
    };
    let content = blocks
        .into_values()
        .map(|(mut block, input)| {
            if let ResponseBlock::ToolUse { input: whole, .. } = &mut block
                && !input.trim().is_empty()
            {
                *whole = Some(Value::String(input));
            }
            block
        })
        .collect();
    message.content = Some(content);
    Ok(message)
}

/// Chat Completions chunks (`data: {…}` up to `data: [DONE]`) as the completion a whole response
/// would have been.
pub fn openai(events: &[Sse]) -> Result<completions::Response, StreamError> {
    let mut text = String::new();
    // Per tool-call index: id, name and the arguments as they arrive in pieces.
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    let mut finish_reason = None;
    let mut usage = None;
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
        let chunk = completions_chunk(event)?;
        if let Some(error) = chunk.error {
            let (error_type, message) = match error {
                completions::Error::Message(message) => (String::new(), message),
                completions::Error::Detail(detail) => (
                    detail.kind.unwrap_or_default(),
                    detail.message.unwrap_or_default(),
                ),
            };
            return Err(StreamError::Error {
                error_type,
                message,
            });
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        for choice in chunk.choices.into_iter().flatten() {
            if choice.finish_reason.is_some() {
                finish_reason = choice.finish_reason;
            }
            let Some(delta) = choice.delta else {
                continue;
            };
            if let Some(completions::Content::Text(piece)) = delta.content {
                text.push_str(&piece);
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let (id, name, arguments) = calls.entry(call.index.unwrap_or(0)).or_default();
                if let Some(given) = call.id {
                    *id = given;
                }
                let Some(function) = call.function else {
                    continue;
                };
                if let Some(piece) = function.name {
                    name.push_str(&piece);
                }
                match function.arguments {
                    Some(Value::String(piece)) => arguments.push_str(&piece),
                    Some(Value::Null) | None => {}
                    Some(whole) => *arguments = whole.to_string(),
                }
            }
        }
    }
    // Some servers end without `[DONE]` but after a finish reason; either says it is whole.
    if !done && finish_reason.is_none() {
        return Err(StreamError::Cut(
            "the event stream ended before a finish reason or `[DONE]`".into(),
        ));
    }
    let tool_calls = calls
        .into_values()
        .map(|(id, name, arguments)| completions::ResponseToolCall {
            id: Some(id),
            function: Some(completions::ResponseCall {
                name: Some(name),
                arguments: Some(Value::String(arguments)),
            }),
        })
        .collect();
    let message = completions::ResponseMessage {
        content: (!text.is_empty()).then_some(completions::Content::Text(text)),
        tool_calls: Some(tool_calls),
    };
    Ok(completions::Response {
        choices: Some(vec![completions::Choice {
            message: Some(message),
            finish_reason,
        }]),
        usage,
    })
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
        use messages::{ResponseBlock, StreamEvent};
        let Ok(event) = messages_event(event) else {
            return;
        };
        match event {
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let part = match content_block {
                    Some(ResponseBlock::Text { text }) => (None, text),
                    Some(ResponseBlock::ToolUse { name, .. }) => {
                        (Some(name.unwrap_or_default()), String::new())
                    }
                    Some(ResponseBlock::Other) | None => (None, String::new()),
                };
                self.parts.insert((0, index.unwrap_or(0)), part);
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let piece = delta.text.or(delta.partial_json).unwrap_or_default();
                self.parts
                    .entry((0, index.unwrap_or(0)))
                    .or_default()
                    .1
                    .push_str(&piece);
            }
            StreamEvent::MessageStart { .. }
            | StreamEvent::MessageDelta { .. }
            | StreamEvent::MessageStop
            | StreamEvent::Error { .. }
            | StreamEvent::Other => {}
        }
    }

    /// Takes in one Chat Completions chunk.
    pub fn openai(&mut self, event: &Sse) {
        let Ok(chunk) = completions_chunk(event) else {
            return;
        };
        for choice in chunk.choices.into_iter().flatten() {
            let Some(delta) = choice.delta else {
                continue;
            };
            if let Some(completions::Content::Text(piece)) = delta.content {
                self.parts.entry((0, 0)).or_default().1.push_str(&piece);
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let index = call.index.unwrap_or(0);
                let (name, arguments) = self.parts.entry((1, index)).or_default();
                let Some(function) = call.function else {
                    continue;
                };
                if let Some(piece) = function.name {
                    name.get_or_insert_default().push_str(&piece);
                }
                if let Some(Value::String(piece)) = function.arguments {
                    arguments.push_str(&piece);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ContentBlock;
    use serde_json::json;

    fn sse(lines: &[(&str, Value)]) -> Vec<Sse> {
        lines
            .iter()
            .map(|(event, data)| Sse {
                event: event.to_string(),
                data: data.to_string(),
            })
            .collect()
    }

    /// The answer each protocol's stream below carries: a text, then a `shell` call.
    fn text_then_shell(text: &str, id: &str, input: Value) -> Vec<ContentBlock> {
        vec![
            ContentBlock::Text { text: text.into() },
            ContentBlock::ToolUse {
                id: id.into(),
                name: "shell".into(),
                input,
            },
        ]
    }

    /// Input, cache-read and output tokens.
    fn counts(usage: &crate::llm::Usage) -> (u64, u64, u64) {
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.output_tokens,
        )
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
        let response = crate::llm::anthropic::parse_message(message).unwrap();
        assert_eq!(
            response.content,
            text_then_shell("Checking the disk.", "toolu_1", json!({"command": "df -h"}))
        );
        assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(counts(&response.usage), (10, 900, 25));
        // Cut before the end: another try.
        assert!(matches!(anthropic(&events[..8]), Err(StreamError::Cut(_))));
        let error = sse(&[(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]);
        assert_eq!(
            anthropic(&error).unwrap_err(),
            StreamError::Error {
                error_type: "overloaded_error".into(),
                message: "Overloaded".into()
            }
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
        let response = crate::llm::openai::parse_message(completion).unwrap();
        assert_eq!(
            response.content,
            text_then_shell("Looking.", "call_1", json!({"command": "uptime"}))
        );
        assert_eq!(response.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(counts(&response.usage), (18, 32, 9));
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
