//! A local model server that speaks the Anthropic Messages or the OpenAI Chat Completions protocol and
//! plays scripted turns. It listens on 127.0.0.1 and stops when dropped.
//!
//! Requests for the summary model (`SUMMARY_MODEL`, or any request without tools) get a fixed summary
//! and do not consume the script; those for `BROKEN_SUMMARY_MODEL` always fail. When the script runs
//! out, the server answers 500 with a body that says so, so a test fails loudly instead of hanging.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SUMMARY_MODEL: &str = "fake-summary";
/// A summary model that always fails (HTTP 500), to show that summaries never block a session.
pub const BROKEN_SUMMARY_MODEL: &str = "fake-summary-broken";
pub const SUMMARY_TEXT: &str = "The command printed a long run of output; nothing failed.";
/// The usage every scripted turn reports.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Anthropic,
    OpenAi,
}

/// One scripted answer to a main-model request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// A tool call, with optional text beside it (`Some("")` sends an empty text block, as some
    /// servers do).
    Tool {
        name: String,
        input: Value,
        text: Option<String>,
    },
    /// A plain text answer, no tool call.
    Text(String),
    /// A failure; the next request gets the next turn.
    Fault(Fault),
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// An HTTP error status, with an optional `retry-after` (seconds) and body.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    /// 200 with a body that is not the protocol's JSON.
    MalformedBody,
    /// The connection is dropped without an answer.
    ResetConnection,
}

impl Turn {
    pub fn shell(command: &str, reasoning: &str) -> Turn {
        Turn::Tool {
            name: "shell".into(),
            input: json!({"command": command, "reasoning": reasoning}),
            text: Some(format!("I will run `{command}`: {reasoning}.")),
        }
    }

    pub fn report(outcome: &str, summary: &str) -> Turn {
        Turn::Tool {
            name: "report".into(),
            input: json!({
                "outcome": outcome,
                "summary": summary,
                "root_cause": "scripted",
                "actions": ["ran the scripted commands"],
                "verification": "checked the output",
            }),
            text: None,
        }
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Turn>,
    /// Set by `start_each`: every conversation plays this script, indexed by its own progress.
    each: Option<Vec<Turn>>,
    requests: Vec<Value>,
    summary_requests: Vec<Value>,
    served: usize,
}

pub struct FakeLlm {
    protocol: Protocol,
    address: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    pub async fn start(protocol: Protocol, script: Vec<Turn>) -> FakeLlm {
        FakeLlm::serve(
            protocol,
            State {
                script: script.into(),
                ..State::default()
            },
        )
        .await
    }

    /// Every conversation plays `script` on its own: the turn is chosen by how many answers the
    /// conversation already holds, so any number of sessions can run at once.
    pub async fn start_each(protocol: Protocol, script: Vec<Turn>) -> FakeLlm {
        FakeLlm::serve(
            protocol,
            State {
                each: Some(script),
                ..State::default()
            },
        )
        .await
    }

    /// As `start_each`, listening on every interface: for a controller in a container, which
    /// reaches the host as `host.docker.internal`.
    pub async fn start_each_for_containers(protocol: Protocol, script: Vec<Turn>) -> FakeLlm {
        let state = State {
            each: Some(script),
            ..State::default()
        };
        FakeLlm::serve_on("0.0.0.0:0", protocol, state).await
    }

    async fn serve(protocol: Protocol, state: State) -> FakeLlm {
        FakeLlm::serve_on("127.0.0.1:0", protocol, state).await
    }

    async fn serve_on(bind: &str, protocol: Protocol, state: State) -> FakeLlm {
        let listener = TcpListener::bind(bind).await.expect("bind a loopback port");
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request| answer(protocol, state.clone(), request));
                    // A scripted reset ends the connection with an error: that is the point.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeLlm {
            protocol,
            address,
            state,
            server,
        }
    }

    /// What goes in `ANTHROPIC_BASE_URL` (no `/v1`) or `OPENAI_BASE_URL` (with `/v1`).
    pub fn base_url(&self) -> String {
        match self.protocol {
            Protocol::Anthropic => format!("http://{}", self.address),
            Protocol::OpenAi => format!("http://{}/v1", self.address),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The main-model request bodies received, in order (faulted ones included).
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn summary_requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().summary_requests.clone()
    }

    /// Turns not yet served.
    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The error a scripted reset returns to hyper, which then drops the connection.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection reset")
    }
}

impl std::error::Error for Reset {}

async fn answer(
    protocol: Protocol,
    state: Arc<Mutex<State>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Reset> {
    let expected_path = match protocol {
        Protocol::Anthropic => "/v1/messages",
        Protocol::OpenAi => "/v1/chat/completions",
    };
    if request.uri().path() != expected_path {
        return Ok(respond(
            404,
            None,
            json!({"error": {"type": "not_found_error", "message": format!("no route {}", request.uri().path())}}),
        ));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let summary_model = body["model"].as_str().unwrap_or_default().to_string();
    let is_summary = summary_model == SUMMARY_MODEL
        || summary_model == BROKEN_SUMMARY_MODEL
        || body.get("tools").is_none();
    let turn = {
        let mut state = state.lock().unwrap();
        if is_summary {
            state.summary_requests.push(body);
            None
        } else {
            let answered = answers_in(&body);
            state.requests.push(body);
            state.served += 1;
            let turn = match &state.each {
                Some(script) => script.get(answered).cloned(),
                None => state.script.pop_front(),
            };
            Some((turn, state.served))
        }
    };
    let Some((turn, served)) = turn else {
        if summary_model == BROKEN_SUMMARY_MODEL {
            let error =
                json!({"error": {"type": "api_error", "message": "the summariser is down"}});
            return Ok(respond(500, None, error));
        }
        return Ok(respond(
            200,
            None,
            message(protocol, Some(SUMMARY_TEXT), None, 0),
        ));
    };
    Ok(match turn {
        None => respond(
            500,
            None,
            json!({"error": {"type": "api_error", "message": "the fake model's script ran out"}}),
        ),
        Some(Turn::Text(text)) => respond(200, None, message(protocol, Some(&text), None, served)),
        Some(Turn::Tool { name, input, text }) => respond(
            200,
            None,
            message(protocol, text.as_deref(), Some((&name, &input)), served),
        ),
        Some(Turn::Fault(Fault::Status {
            code,
            retry_after,
            body,
        })) => {
            let body = body
                .and_then(|body| serde_json::from_str(&body).ok())
                .unwrap_or_else(|| json!({"type": "error", "error": {"type": "scripted_error", "message": format!("scripted status {code}")}}));
            respond(code, retry_after, body)
        }
        Some(Turn::Fault(Fault::MalformedBody)) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                b"{\"content\": [ this is not json",
            )))
            .unwrap(),
        Some(Turn::Fault(Fault::ResetConnection)) => return Err(Reset),
    })
}

/// How many model answers a conversation already holds.
fn answers_in(body: &Value) -> usize {
    body["messages"].as_array().map_or(0, |messages| {
        messages.iter().filter(|m| m["role"] == "assistant").count()
    })
}

fn respond(status: u16, retry_after: Option<u64>, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A protocol-shaped message with optional text and an optional tool call.
fn message(
    protocol: Protocol,
    text: Option<&str>,
    call: Option<(&str, &Value)>,
    served: usize,
) -> Value {
    match protocol {
        Protocol::Anthropic => {
            let mut content = Vec::new();
            if let Some(text) = text {
                content.push(json!({"type": "text", "text": text}));
            }
            if let Some((name, input)) = call {
                content.push(json!({"type": "tool_use", "id": format!("toolu_{served:04}"), "name": name, "input": input}));
            }
            json!({
                "id": format!("msg_{served:04}"), "type": "message", "role": "assistant", "model": "fake",
                "content": content,
                "stop_reason": if call.is_some() { "tool_use" } else { "end_turn" },
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
            })
        }
        Protocol::OpenAi => {
            let mut message = json!({"role": "assistant", "content": text});
            if let Some((name, input)) = call {
                // Ids without the usual `call_` prefix, as some compatible servers send.
                message["tool_calls"] = json!([{"id": format!("{served}"), "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}]);
            }
            json!({
                "id": format!("chatcmpl-{served}"), "object": "chat.completion", "model": "fake",
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if call.is_some() { "tool_calls" } else { "stop" }}],
                "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS},
            })
        }
    }
}
