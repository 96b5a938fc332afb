//! A local model server that speaks the Anthropic Messages or the OpenAI Chat Completions protocol and
//! plays scripted turns. It listens on 127.0.0.1 and stops when dropped.
//!
//! Optionally it keeps a prompt cache with the Anthropic API's documented semantics
//! ([`FakeLlm::cache_prompts`]), and refuses requests longer than a context window as llama.cpp's
//! server does ([`FakeLlm::limit_context`]).
//!
//! Requests for the summary model (`SUMMARY_MODEL`, or any request without tools) get a fixed summary
//! and do not consume the script; those for `BROKEN_SUMMARY_MODEL` always fail. When the script runs
//! out, the server answers 500 with a body that says so, so a test fails loudly instead of hanging.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
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
    /// A tool or text turn, always streamed, in `pieces` pieces `gap` apart.
    Slowly {
        turn: Box<Turn>,
        pieces: usize,
        gap: Duration,
    },
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
    /// The answer starts as server-sent events, and the connection is dropped half-way.
    CutStream,
    /// The answer as server-sent events in `pieces` pieces, `gap` apart: slow but steady.
    SlowStream { pieces: usize, gap: Duration },
    /// The answer starts as server-sent events, then nothing comes for `silence`, then the
    /// connection is dropped (so the server always stops by itself).
    StalledStream { silence: Duration },
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
    /// Set by `cache_prompts`: prefixes written to the cache, by hash, with when each was last
    /// used.
    cache: Option<HashMap<u64, Instant>>,
    /// Set by `limit_context`: the window, in tokens of `CONTEXT_BYTES_PER_TOKEN` bytes.
    context_tokens: Option<u64>,
    /// Set by `stream_always`: answers are server-sent events even when not asked for.
    stream_always: bool,
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

    /// From now on, keeps a prompt cache as the Anthropic API documents it, and reports usage as
    /// it does: a request reads the longest prefix, up to one of its `cache_control` breakpoints
    /// (or up to 20 blocks before one), that a request of the last 5 minutes wrote; it writes the
    /// prefixes up to its breakpoints (of at least `CACHE_MIN_TOKENS`). Tokens are estimated
    /// from bytes (`CACHE_BYTES_PER_TOKEN`).
    pub fn cache_prompts(&self) {
        self.state.lock().unwrap().cache = Some(HashMap::new());
    }

    /// From now on, answers as server-sent events whether or not the request asked for them, as
    /// some servers do.
    pub fn stream_always(&self) {
        self.state.lock().unwrap().stream_always = true;
    }

    /// From now on, answers a request longer than `tokens` as llama.cpp's server does: 400
    /// `exceed_context_size_error`. Its tokenizer is taken to make a token of every
    /// `CONTEXT_BYTES_PER_TOKEN` bytes of the request body.
    pub fn limit_context(&self, tokens: u64) {
        self.state.lock().unwrap().context_tokens = Some(tokens);
    }
}

/// How the fake's cache counts tokens: the Anthropic API's rule of thumb.
pub const CACHE_BYTES_PER_TOKEN: usize = 4;
/// The shortest prefix the cache keeps (the Anthropic API's minimum for Sonnet and Opus).
pub const CACHE_MIN_TOKENS: u64 = 1024;
/// How long a cache entry lives unless it is read (the Anthropic API's default).
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How far back from a breakpoint the cache looks for a hit.
const CACHE_LOOKBACK: usize = 20;
/// The fake llama.cpp's tokenizer: dense, as real ones are on command output.
pub const CONTEXT_BYTES_PER_TOKEN: usize = 2;

/// What a request's prompt is, for a cache: its blocks in the API's prefix order (tools, system,
/// messages), each as JSON without its `cache_control`, and which carry a breakpoint.
pub fn prompt_blocks(body: &Value) -> (Vec<String>, Vec<usize>) {
    let mut blocks = vec![body["model"].to_string()];
    let mut breakpoints = Vec::new();
    let mut push = |block: &Value| {
        let mut block = block.clone();
        let marked = block
            .as_object_mut()
            .and_then(|object| object.remove("cache_control"))
            .is_some();
        blocks.push(block.to_string());
        if marked {
            breakpoints.push(blocks.len() - 1);
        }
    };
    for tool in body["tools"].as_array().into_iter().flatten() {
        push(tool);
    }
    match &body["system"] {
        Value::String(text) => push(&json!({"type": "text", "text": text})),
        Value::Array(system) => system.iter().for_each(&mut push),
        _ => {}
    }
    for message in body["messages"].as_array().into_iter().flatten() {
        match &message["content"] {
            Value::String(text) => {
                push(&json!({"role": message["role"], "type": "text", "text": text}))
            }
            Value::Array(content) => {
                for block in content {
                    let mut block = block.clone();
                    block["role"] = message["role"].clone();
                    push(&block);
                }
            }
            _ => {}
        }
    }
    (blocks, breakpoints)
}

/// The usage a cache with Anthropic's semantics reports for `body`, updating the cache.
fn cached_usage(cache: &mut HashMap<u64, Instant>, body: &Value) -> Value {
    use std::hash::{Hash, Hasher};
    let now = Instant::now();
    cache.retain(|_, used| now.duration_since(*used) < CACHE_TTL);
    let (blocks, breakpoints) = prompt_blocks(body);
    // The hash and the tokens of each prefix (blocks 0..=i).
    let mut hashes = Vec::with_capacity(blocks.len());
    let mut tokens = Vec::with_capacity(blocks.len());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut bytes = 0;
    for block in &blocks {
        block.hash(&mut hasher);
        hashes.push(hasher.finish());
        bytes += block.len();
        tokens.push(bytes.div_ceil(CACHE_BYTES_PER_TOKEN) as u64);
    }
    let total = *tokens.last().unwrap_or(&0);
    let hit = breakpoints
        .iter()
        .flat_map(|&breakpoint| (breakpoint.saturating_sub(CACHE_LOOKBACK - 1)..=breakpoint).rev())
        .filter(|index| cache.contains_key(&hashes[*index]))
        .max();
    let read = hit.map_or(0, |index| tokens[index]);
    if let Some(index) = hit {
        cache.insert(hashes[index], now);
    }
    let mut written_to = read;
    for &breakpoint in &breakpoints {
        if tokens[breakpoint] > read && tokens[breakpoint] >= CACHE_MIN_TOKENS {
            cache.insert(hashes[breakpoint], now);
            written_to = written_to.max(tokens[breakpoint]);
        }
    }
    json!({
        "input_tokens": total - written_to,
        "cache_creation_input_tokens": written_to - read,
        "cache_read_input_tokens": read,
        "output_tokens": OUTPUT_TOKENS,
    })
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

type Body = BoxBody<Bytes, Reset>;

async fn answer(
    protocol: Protocol,
    state: Arc<Mutex<State>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Reset> {
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
    let body_bytes = body.len();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let summary_model = body["model"].as_str().unwrap_or_default().to_string();
    let stream = body["stream"] == json!(true) || state.lock().unwrap().stream_always;
    let is_summary = summary_model == SUMMARY_MODEL
        || summary_model == BROKEN_SUMMARY_MODEL
        || body.get("tools").is_none();
    let (usage, too_long) = {
        let mut state = state.lock().unwrap();
        let tokens = body_bytes.div_ceil(CONTEXT_BYTES_PER_TOKEN) as u64;
        let too_long = state
            .context_tokens
            .filter(|window| !is_summary && tokens > *window)
            .map(|window| (tokens, window));
        let usage = match state.cache.as_mut() {
            Some(cache) if protocol == Protocol::Anthropic && !is_summary && too_long.is_none() => {
                Some(cached_usage(cache, &body))
            }
            _ => None,
        };
        (usage, too_long)
    };
    if let Some((tokens, window)) = too_long {
        state.lock().unwrap().requests.push(body);
        // llama.cpp's server, word for word.
        return Ok(respond(
            400,
            None,
            json!({"error": {"code": 400, "message": format!("request ({tokens} tokens) exceeds the available context size ({window} tokens), try increasing it"), "type": "exceed_context_size_error", "n_prompt_tokens": tokens, "n_ctx": window}}),
        ));
    }
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
        Some(Turn::Text(text)) => answer_with(
            protocol,
            stream,
            with_usage(message(protocol, Some(&text), None, served), usage),
        ),
        Some(Turn::Tool { name, input, text }) => answer_with(
            protocol,
            stream,
            with_usage(
                message(protocol, text.as_deref(), Some((&name, &input)), served),
                usage,
            ),
        ),
        Some(Turn::Fault(Fault::CutStream)) => {
            let whole = events(
                protocol,
                &message(
                    protocol,
                    Some("cut"),
                    Some(("shell", &json!({"command": "true", "reasoning": "cut"}))),
                    served,
                ),
            );
            let half = Bytes::from(whole[..whole.len() / 2].to_string());
            let frames = futures::stream::iter([Ok(Frame::data(half)), Err(Reset)]);
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap()
        }
        Some(Turn::Fault(Fault::SlowStream { pieces, gap })) => {
            let whole = events(
                protocol,
                &message(
                    protocol,
                    Some("slow but steady"),
                    Some(("shell", &json!({"command": "true", "reasoning": "slow"}))),
                    served,
                ),
            );
            slowly(whole, pieces, gap)
        }
        Some(Turn::Slowly { turn, pieces, gap }) => {
            let message = match *turn {
                Turn::Text(text) => message(protocol, Some(&text), None, served),
                Turn::Tool { name, input, text } => {
                    message(protocol, text.as_deref(), Some((&name, &input)), served)
                }
                other => panic!("only a text or tool turn comes slowly, not {other:?}"),
            };
            slowly(events(protocol, &with_usage(message, usage)), pieces, gap)
        }
        Some(Turn::Fault(Fault::StalledStream { silence })) => {
            let whole = events(
                protocol,
                &message(
                    protocol,
                    Some("stalled"),
                    Some(("shell", &json!({"command": "true", "reasoning": "stalled"}))),
                    served,
                ),
            );
            let half = Bytes::from(whole[..whole.len() / 2].to_string());
            let frames = futures::stream::iter([Ok(Frame::data(half))]).chain(
                futures::stream::once(async move {
                    tokio::time::sleep(silence).await;
                    Err(Reset)
                }),
            );
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap()
        }
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
            .body(full(Bytes::from_static(
                b"{\"content\": [ this is not json",
            )))
            .unwrap(),
        Some(Turn::Fault(Fault::ResetConnection)) => return Err(Reset),
    })
}

/// Server-sent events in `pieces` pieces, `gap` apart: slow but steady.
fn slowly(whole: String, pieces: usize, gap: Duration) -> Response<Body> {
    let bytes = Bytes::from(whole);
    let size = bytes.len().div_ceil(pieces.max(1));
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(size)
        .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
        .collect();
    let frames = futures::stream::iter(chunks).then(move |chunk| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, Reset>(Frame::data(chunk))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap()
}

/// A message with the cache's usage, when the cache is on.
fn with_usage(mut message: Value, usage: Option<Value>) -> Value {
    if let Some(usage) = usage {
        message["usage"] = usage;
    }
    message
}

/// How many model answers a conversation already holds.
fn answers_in(body: &Value) -> usize {
    body["messages"].as_array().map_or(0, |messages| {
        messages.iter().filter(|m| m["role"] == "assistant").count()
    })
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A scripted answer, whole or as server-sent events.
fn answer_with(protocol: Protocol, stream: bool, message: Value) -> Response<Body> {
    if !stream {
        return respond(200, None, message);
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(full(Bytes::from(events(protocol, &message))))
        .unwrap()
}

/// A whole answer as the events a streaming server sends, text and arguments in two pieces each.
pub fn events(protocol: Protocol, message: &Value) -> String {
    let halves = |text: &str| -> Vec<String> {
        let middle = (0..=text.len() / 2)
            .rev()
            .find(|at| text.is_char_boundary(*at))
            .unwrap_or(0);
        vec![text[..middle].to_string(), text[middle..].to_string()]
    };
    let mut out = String::new();
    match protocol {
        Protocol::Anthropic => {
            let mut send = |name: &str, data: Value| {
                out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
            };
            let mut start = message.clone();
            start["content"] = json!([]);
            start["stop_reason"] = Value::Null;
            start["usage"]["output_tokens"] = json!(1);
            send(
                "message_start",
                json!({"type": "message_start", "message": start}),
            );
            send("ping", json!({"type": "ping"}));
            for (index, block) in message["content"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if block["type"] == "tool_use" {
                    let mut empty = block.clone();
                    empty["input"] = json!({});
                    send(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index, "content_block": empty}),
                    );
                    for piece in halves(&block["input"].to_string()) {
                        send(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        );
                    }
                } else {
                    send(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                    );
                    for piece in halves(block["text"].as_str().unwrap_or_default()) {
                        send(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                        );
                    }
                }
                send(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                );
            }
            send(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]}, "usage": {"output_tokens": message["usage"]["output_tokens"]}}),
            );
            send("message_stop", json!({"type": "message_stop"}));
        }
        Protocol::OpenAi => {
            let mut send = |data: Value| out.push_str(&format!("data: {data}\n\n"));
            let choice = &message["choices"][0];
            let chunk = |delta: Value, finish: Value| {
                json!({"id": message["id"], "object": "chat.completion.chunk", "model": "fake",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            send(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            if let Some(text) = choice["message"]["content"].as_str() {
                for piece in halves(text) {
                    send(chunk(json!({"content": piece}), Value::Null));
                }
            }
            for (index, call) in choice["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                send(chunk(
                    json!({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in halves(call["function"]["arguments"].as_str().unwrap_or_default()) {
                    send(chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
            send(chunk(json!({}), choice["finish_reason"].clone()));
            send(
                json!({"id": message["id"], "object": "chat.completion.chunk", "choices": [], "usage": message["usage"]}),
            );
            out.push_str("data: [DONE]\n\n");
        }
    }
    out
}

fn respond(status: u16, retry_after: Option<u64>, body: Value) -> Response<Body> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body(full(Bytes::from(body.to_string()))).unwrap()
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
