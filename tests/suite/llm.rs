//! The model clients against local servers speaking each protocol: retries, faults, conformance.

use std::sync::Arc;
use std::time::Duration;

use opslab::cost::CostTable;
use opslab::metrics::Metrics;

use opslab::llm::retry::RetryPolicy;
use opslab::llm::{
    ChatRequest, ContentBlock, LlmClient, LlmError, Message, ProviderConfig, ProviderKind, Role,
    anthropic,
};
use opslab::session::tools;
use serde_json::json;

use crate::support::fake_llm::{self, FakeLlm, Fault, Protocol, Turn};
use opslab::audit::EventBody;
use opslab::session::history::History;

fn client(llm: &FakeLlm, protocol: Protocol) -> LlmClient {
    LlmClient::new(
        config(llm, protocol),
        Arc::new(Metrics::new()),
        CostTable::default(),
    )
    .unwrap()
}

fn config(llm: &FakeLlm, protocol: Protocol) -> ProviderConfig {
    let kind = match protocol {
        Protocol::Anthropic => ProviderKind::Anthropic,
        Protocol::OpenAi => ProviderKind::OpenAi,
    };
    ProviderConfig {
        kind,
        base_url: llm.base_url(),
        api_key: Some("sk-ant-test-0123456789".into()),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        prompt_cache: true,
        stream: false,
        summary_endpoint: None,
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "fake-main".into(),
        system: "you are a test".into(),
        messages: vec![Message {
            role: Role::User,
            content: vec![ContentBlock::Text {
                text: "the api is down".into(),
            }],
        }],
        tools: tools::specs(),
        max_tokens: 1000,
    }
}

fn status(code: u16, retry_after: Option<u64>) -> Turn {
    Turn::Fault(Fault::Status {
        code,
        retry_after,
        body: None,
    })
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Anthropic, Protocol::OpenAi];

#[tokio::test]
async fn llm_tool_calls_round_trip() {
    for protocol in PROTOCOLS {
        let llm = FakeLlm::start(protocol, vec![Turn::shell("uptime", "load?")]).await;
        let response = client(&llm, protocol).complete(&request()).await.unwrap();
        let calls: Vec<(&str, &serde_json::Value)> = response
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { name, input, .. } => Some((name.as_str(), input)),
                ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
            })
            .collect();
        assert_eq!(
            calls,
            vec![("shell", &json!({"command": "uptime", "reasoning": "load?"}))]
        );
        assert_eq!(
            response.usage.input_tokens,
            crate::support::fake_llm::INPUT_TOKENS
        );
        assert_eq!(llm.requests().len(), 1);
    }
}

#[tokio::test]
async fn llm_transient_faults_are_retried() {
    let faults = [
        status(429, Some(0)),
        status(529, None),
        status(500, None),
        status(503, None),
        Turn::Fault(Fault::MalformedBody),
        Turn::Fault(Fault::ResetConnection),
    ];
    for protocol in PROTOCOLS {
        for fault in faults.clone() {
            let llm =
                FakeLlm::start(protocol, vec![fault.clone(), Turn::shell("true", "ok")]).await;
            let response = client(&llm, protocol).complete(&request()).await;
            assert!(response.is_ok(), "{protocol:?} {fault:?}: {response:?}");
            assert_eq!(llm.requests().len(), 2, "{protocol:?} {fault:?}: one retry");
        }
    }
}

#[tokio::test]
async fn llm_retry_after_is_honoured() {
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![status(429, Some(1)), Turn::shell("true", "ok")],
    )
    .await;
    // The backoff alone would wait about 5 ms: a wait of a second can only come from the header.
    let client = LlmClient::new(
        ProviderConfig {
            retry: RetryPolicy {
                max_retries: 1,
                min_delay: Duration::from_millis(5),
                max_delay: Duration::from_secs(5),
            },
            ..config(&llm, Protocol::Anthropic)
        },
        Arc::new(Metrics::new()),
        CostTable::default(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    client.complete(&request()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}, before retry-after: 1"
    );
}

#[tokio::test]
async fn llm_permanent_errors_are_not_retried() {
    let quota = Turn::Fault(Fault::Status {
        code: 429,
        retry_after: None,
        body: Some(r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#.into()),
    });
    for (turn, label) in [
        (status(400, None), "bad_request"),
        (status(401, None), "auth"),
        (status(403, None), "auth"),
        (status(404, None), "bad_request"),
        (status(413, None), "bad_request"),
        (quota, "quota"),
    ] {
        let llm = FakeLlm::start(
            Protocol::OpenAi,
            vec![turn.clone(), Turn::shell("true", "never")],
        )
        .await;
        let error = client(&llm, Protocol::OpenAi)
            .complete(&request())
            .await
            .unwrap_err();
        assert_eq!(error.label(), label, "{turn:?}: {error}");
        assert_eq!(llm.requests().len(), 1, "{turn:?} was retried");
    }
}

#[tokio::test]
async fn llm_gives_up_after_max_retries() {
    let llm = FakeLlm::start(Protocol::Anthropic, vec![status(503, None); 10]).await;
    let error = client(&llm, Protocol::Anthropic)
        .complete(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(error, LlmError::Status { status: 503, .. }),
        "{error}"
    );
    assert_eq!(llm.requests().len(), 4, "one call and three retries");
}

/// The request bodies we send conform to the official Anthropic SDK's request types.
#[tokio::test]
async fn llm_conformance_anthropic_requests_match_the_sdk_types() {
    let conversation = ChatRequest {
        messages: vec![
            Message {
                role: Role::User,
                content: vec![ContentBlock::Text {
                    text: "the api is down".into(),
                }],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: "Looking at the containers.".into(),
                    },
                    ContentBlock::ToolUse {
                        id: "toolu_01".into(),
                        name: "shell".into(),
                        input: json!({"command": "docker ps", "reasoning": "what runs?"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "toolu_01".into(),
                        content: "[exit code 1 after 0.1s]\nerror".into(),
                        is_error: true,
                    },
                    ContentBlock::Text {
                        text: "The ticket was updated.".into(),
                    },
                ],
            },
        ],
        ..request()
    };
    let good = vec![
        anthropic::request_body(&request(), false),
        anthropic::request_body(&conversation, false),
        anthropic::request_body(&conversation, true),
    ];
    check_with_sdk(&good, true);
    // The check can fail: a tool result without its id, and an unknown block type, are refused.
    let mut no_id = anthropic::request_body(&conversation, false);
    no_id["messages"][2]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("tool_use_id");
    let mut unknown_block = anthropic::request_body(&request(), false);
    unknown_block["messages"][0]["content"][0]["type"] = json!("sparkle");
    check_with_sdk(&[no_id], false);
    check_with_sdk(&[unknown_block], false);
}

fn check_with_sdk(bodies: &[serde_json::Value], expect_valid: bool) {
    check_with(Sdk::Anthropic, bodies, expect_valid);
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Anthropic,
    OpenAi,
}

/// Validates request bodies with an official SDK's request types (python3 with `pip install
/// anthropic openai`).
fn check_with(sdk: Sdk, bodies: &[serde_json::Value], expect_valid: bool) {
    let module = match sdk {
        Sdk::Anthropic => "anthropic",
        Sdk::OpenAi => "openai",
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/check_request.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(module)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (the conformance check needs python3 with `pip install anthropic openai`)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(bodies).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(&format!("No module named '{module}'")),
        "the conformance check needs the official SDK: pip install {module}"
    );
    assert_eq!(
        output.status.success(),
        expect_valid,
        "expected the SDK to {} {bodies:#?}\n{stderr}{}",
        if expect_valid { "accept" } else { "refuse" },
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The requests an agent makes in a session of `turns` commands that each print `output_bytes`,
/// built by the agent's own fold of its events.
fn session_requests(turns: usize, output_bytes: usize) -> Vec<ChatRequest> {
    let spec = serde_json::from_value(json!({"title": "api down"})).unwrap();
    let mut history = History::from_events(&[EventBody::SessionStarted {
        generation: 1,
        spec,
        model: "m".into(),
        provider: "anthropic".into(),
        sandbox_image: "img".into(),
        requests: Default::default(),
    }]);
    let mut requests = Vec::new();
    for turn in 0..turns {
        requests.push(ChatRequest {
            messages: history.messages(),
            ..request()
        });
        let id = format!("toolu_{turn:02}");
        let events = [
            EventBody::LlmResponse {
                turn: turn as u32 + 1,
                content: vec![
                    ContentBlock::Text {
                        text: format!("Reading log {turn}."),
                    },
                    ContentBlock::ToolUse {
                        id: id.clone(),
                        name: "shell".into(),
                        input: json!({"command": format!("cat /var/log/{turn}.log"), "reasoning": "look"}),
                    },
                ],
                stop_reason: Some("tool_use".into()),
                input_tokens: 1,
                output_tokens: 1,
                cache_write_tokens: 0,
                cache_read_tokens: 0,
                cost_usd: 0.0,
            },
            EventBody::CommandFinished {
                tool_use_id: id,
                exit_code: Some(0),
                duration_ms: 3,
                timed_out: false,
                output: format!("{turn} {}", "line of log\n".repeat(output_bytes / 12)),
                output_bytes: output_bytes as u64,
                truncated: false,
            },
        ];
        for event in &events {
            history.apply(event);
        }
    }
    requests
}

/// Every `cache_control` in a body.
fn breakpoints(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(object) => {
            usize::from(object.contains_key("cache_control"))
                + object.values().map(breakpoints).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(breakpoints).sum(),
        _ => 0,
    }
}

/// With the prompt cache on, every request still conforms to the SDK's types, holds at most the
/// API's four breakpoints, and repeats byte for byte what the previous request had before each of
/// its breakpoints: that prefix is what the cache serves.
#[tokio::test]
async fn llm_conformance_cached_requests_keep_their_prefix_from_turn_to_turn() {
    let bodies: Vec<serde_json::Value> = session_requests(6, 3000)
        .iter()
        .map(|request| anthropic::request_body(request, true))
        .collect();
    check_with_sdk(&bodies, true);
    for (turn, body) in bodies.iter().enumerate() {
        let count = breakpoints(body);
        assert!((1..=4).contains(&count), "turn {turn}: {count} breakpoints");
        assert_eq!(
            body["tools"].as_array().unwrap().last().unwrap()["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(
            body["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
    }
    for pair in bodies.windows(2) {
        assert_eq!(pair[0]["system"], pair[1]["system"]);
        assert_eq!(pair[0]["tools"], pair[1]["tools"]);
        let (before, marks) = fake_llm::prompt_blocks(&pair[0]);
        let (after, _) = fake_llm::prompt_blocks(&pair[1]);
        // Tools, system, and the latest message and the one before it (the first request has
        // only one).
        assert!((3..=4).contains(&marks.len()), "{marks:?}");
        for mark in marks {
            assert_eq!(
                before[..=mark],
                after[..=mark],
                "the prefix up to block {mark} changed"
            );
        }
    }
    // The check can fail on the cache field too: an unknown cache type is refused.
    let mut wrong = bodies[1].clone();
    wrong["system"][0]["cache_control"] = json!({"type": "forever"});
    check_with_sdk(&[wrong], false);
}

/// Against a server that caches as the Anthropic API does, each turn reads the previous turn's
/// prefix from the cache; without the breakpoints nothing is cached and all of it is input.
#[tokio::test]
async fn llm_prompt_cache_reads_the_previous_turn_from_the_cache() {
    let requests = session_requests(5, 6000);
    for cache in [true, false] {
        let llm = FakeLlm::start(
            Protocol::Anthropic,
            vec![Turn::shell("true", "ok"); requests.len()],
        )
        .await;
        llm.cache_prompts();
        let client = LlmClient::new(
            ProviderConfig {
                prompt_cache: cache,
                ..config(&llm, Protocol::Anthropic)
            },
            Arc::new(Metrics::new()),
            CostTable::default(),
        )
        .unwrap();
        let mut usages = Vec::new();
        for request in &requests {
            usages.push(client.complete(request).await.unwrap().usage);
        }
        if !cache {
            assert!(
                usages
                    .iter()
                    .all(|usage| usage.cache_read_tokens == 0 && usage.cache_write_tokens == 0),
                "{usages:?}"
            );
            continue;
        }
        // The first request is shorter than the least the cache keeps (1024 tokens).
        assert_eq!(usages[0].cache_read_tokens, 0, "{usages:?}");
        assert!(usages[1].cache_write_tokens > 0, "{usages:?}");
        for (turn, pair) in usages.windows(2).enumerate().skip(1) {
            let (previous, usage) = (pair[0], pair[1]);
            // All the previous request held is read back; only the new turn is written.
            assert_eq!(
                usage.cache_read_tokens,
                previous.cache_read_tokens + previous.cache_write_tokens + previous.input_tokens,
                "turn {}: {usages:?}",
                turn + 1
            );
            assert!(usage.cache_write_tokens < 2500, "{usages:?}");
        }
    }
}

mod context {
    //! Sessions through the binary: a server with a small context window, and a summariser on its
    //! own server.

    use std::time::Duration;

    use opslab::incident::Phase;

    use crate::support::controller::{Controller, Options, manifest};
    use crate::support::docker;
    use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

    const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

    /// llama.cpp's server with an 8,192-token context, and a command that prints 17 KB: the next
    /// request is refused as too long, sent again shorter, and the session goes on to its report.
    /// What is stored keeps the whole output.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn llm_context_a_long_output_is_shortened_when_the_server_says_too_long() {
        docker::require_sandbox_image();
        // 320 lines like `ls -la /usr/bin`'s: 17.6 KB.
        let command = "for i in $(seq 1 320); do echo \"-rwxr-xr-x 1 root root 43816 Dec  1 12:00 /usr/bin/tool-$i\"; done";
        let llm = FakeLlm::start(
            Protocol::OpenAi,
            vec![
                Turn::shell(command, "list the binaries"),
                Turn::report("resolved", "listed"),
            ],
        )
        .await;
        llm.limit_context(8192);
        let controller = Controller::start(
            Options::new("openai", llm.base_url()).arg("--model", "qwen2.5-7b-instruct"),
        );
        controller.write_manifest("ls.yaml", &manifest("ls", "list the binaries", ""));
        let status = controller.wait_for_phase("ls", Phase::Resolved, SESSION_TIMEOUT);
        let requests = llm.requests();
        assert_eq!(
            requests.len(),
            3,
            "the first turn, the one too long, its retry"
        );
        let sizes: Vec<usize> = requests.iter().map(|r| r.to_string().len()).collect();
        assert!(sizes[1] > 8192 * 2, "{sizes:?}");
        assert!(sizes[2] <= 8192 * 2, "{sizes:?}");
        let retried = requests[2].to_string();
        assert!(
            retried.contains("list the binaries"),
            "the command's reasoning stays"
        );
        assert!(retried.contains("seq 1 320"), "the command line stays");
        assert!(retried.contains("shortened to save context"), "{retried}");
        let events = controller.events(&status.status.unwrap().session_id.unwrap());
        let finished = events
            .iter()
            .find(|event| event["kind"] == "command_finished")
            .unwrap();
        assert!(
            finished["output"].as_str().unwrap().len() > 17_000,
            "the stored output is whole"
        );
        let retrying = events
            .iter()
            .find(|event| event["kind"] == "llm_retrying")
            .expect("the too-long answer is in the trail");
        assert!(
            retrying["error"]
                .as_str()
                .unwrap()
                .contains("exceed_context_size_error"),
            "{retrying}"
        );
    }

    /// A kill -9 after the session shrank its context: the resumed session sends the same
    /// shortened conversation (its next request extends the last one sent before the kill) rather
    /// than the whole output the server refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn llm_context_a_resumed_session_sends_what_it_would_have() {
        docker::require_sandbox_image();
        let command = "for i in $(seq 1 320); do echo \"-rwxr-xr-x 1 root root 43816 Dec  1 12:00 /usr/bin/tool-$i\"; done";
        let llm = FakeLlm::start(
            Protocol::OpenAi,
            vec![
                Turn::shell(command, "list the binaries"),
                Turn::shell(
                    "sleep 4; echo slow-done",
                    "a slow command the controller dies during",
                ),
                Turn::report("resolved", "resumed"),
            ],
        )
        .await;
        llm.limit_context(8192);
        let mut controller = Controller::start(
            Options::new("openai", llm.base_url()).arg("--model", "qwen2.5-7b-instruct"),
        );
        controller.write_manifest("resume.yaml", &manifest("resume", "list and wait", ""));
        controller.wait_for(
            "resume",
            "the slow command to start",
            SESSION_TIMEOUT,
            |incident| {
                incident.status.as_ref().is_some_and(|status| {
                    status.last_command.as_ref().is_some_and(|last| {
                        last.command.contains("sleep 4") && last.exit_code.is_none()
                    })
                })
            },
        );
        controller.kill9();
        controller.start_again();
        controller.wait_for_phase("resume", Phase::Resolved, SESSION_TIMEOUT);
        let requests = llm.requests();
        // The first turn, the one too long, its shortened retry, and after the restart the next.
        assert_eq!(
            requests.len(),
            4,
            "{:#?}",
            requests
                .iter()
                .map(|r| r.to_string().len())
                .collect::<Vec<_>>()
        );
        let before = requests[2]["messages"].as_array().unwrap();
        let after = requests[3]["messages"].as_array().unwrap();
        assert_eq!(
            after[..before.len()],
            before[..],
            "the resumed request starts with what was sent before the kill"
        );
        assert!(requests[3].to_string().len() <= 8192 * 2);
    }

    /// `--summary-base-url`: summaries go to their own server, never to the agent's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn llm_summaries_go_to_their_own_server() {
        docker::require_sandbox_image();
        let agent = FakeLlm::start(
            Protocol::OpenAi,
            vec![
                Turn::shell("seq 1 2000", "a long output, to be summarised"),
                Turn::report("resolved", "summarised"),
            ],
        )
        .await;
        let summariser = FakeLlm::start(Protocol::OpenAi, Vec::new()).await;
        let controller = Controller::start(
            Options::new("openai", agent.base_url())
                .arg("--model", "qwen2.5-7b-instruct")
                .arg("--summary-model", crate::support::fake_llm::SUMMARY_MODEL)
                .arg("--summary-base-url", summariser.base_url()),
        );
        controller.write_manifest("sum.yaml", &manifest("sum", "summarise", ""));
        let status = controller.wait_for_phase("sum", Phase::Resolved, SESSION_TIMEOUT);
        let session = status.status.unwrap().session_id.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while summariser.summary_requests().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(summariser.summary_requests().len(), 1);
        assert!(
            agent.summary_requests().is_empty(),
            "a summary reached the agent's server"
        );
        let events = controller.events(&session);
        assert!(
            events.iter().any(|event| event["kind"] == "output_summary"),
            "the summary is stored"
        );
        // The flag needs the model its server serves.
        let dir = tempfile::tempdir().unwrap();
        let refused = std::process::Command::new(crate::support::controller::BIN)
            .args([
                "controller",
                "--provider",
                "openai",
                "--summary-base-url",
                "http://127.0.0.1:9/v1",
            ])
            .arg("--incidents")
            .arg(dir.path())
            .arg("--store")
            .arg(dir.path().join("opslab.db"))
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .env_remove("OPSLAB_SUMMARY_MODEL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("--summary-model"),
            "{stderr}"
        );
    }

    /// When even the shortened request is too long, the session fails once, saying why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn llm_context_too_long_twice_is_a_clear_failure() {
        docker::require_sandbox_image();
        let llm = FakeLlm::start(Protocol::OpenAi, vec![Turn::report("resolved", "never")]).await;
        llm.limit_context(100);
        let controller = Controller::start(
            Options::new("openai", llm.base_url()).arg("--model", "qwen2.5-7b-instruct"),
        );
        controller.write_manifest("tiny.yaml", &manifest("tiny", "anything", ""));
        let status = controller.wait_for_phase("tiny", Phase::Failed, SESSION_TIMEOUT);
        assert_eq!(llm.requests().len(), 2, "one request and one shorter retry");
        let events = controller.events(&status.status.unwrap().session_id.unwrap());
        let failed = events
            .iter()
            .find(|event| event["kind"] == "llm_failed")
            .unwrap();
        let message = failed["message"].as_str().unwrap();
        assert!(
            message.contains("does not fit the model's context")
                && message.contains("exceed_context_size_error"),
            "{message}"
        );
    }
}

/// Server-sent events, asked for or not, are read into the same response as a whole body: the
/// stored event is the same.
#[tokio::test]
async fn llm_streamed_responses_are_read_as_whole_ones() {
    for protocol in PROTOCOLS {
        let script = vec![Turn::shell("df -h", "disk full? — look")];
        let whole = FakeLlm::start(protocol, script.clone()).await;
        let expected = client(&whole, protocol).complete(&request()).await.unwrap();
        let asked = FakeLlm::start(protocol, script.clone()).await;
        let streaming = LlmClient::new(
            ProviderConfig {
                stream: true,
                ..config(&asked, protocol)
            },
            Arc::new(Metrics::new()),
            CostTable::default(),
        )
        .unwrap();
        let streamed = streaming.complete(&request()).await.unwrap();
        assert_eq!(streamed, expected, "{protocol:?}");
        assert_eq!(asked.requests()[0]["stream"], json!(true));
        // A server that streams though it was not asked.
        let unasked = FakeLlm::start(protocol, script).await;
        unasked.stream_always();
        let read = client(&unasked, protocol)
            .complete(&request())
            .await
            .unwrap();
        assert_eq!(read, expected, "{protocol:?}");
        assert!(unasked.requests()[0].get("stream").is_none());
    }
}

/// A stream cut half-way is retried as a reset connection is.
#[tokio::test]
async fn llm_a_stream_cut_half_way_is_retried() {
    for protocol in PROTOCOLS {
        let llm = FakeLlm::start(
            protocol,
            vec![Turn::Fault(Fault::CutStream), Turn::shell("true", "ok")],
        )
        .await;
        let response = client(&llm, protocol).complete(&request()).await;
        assert!(response.is_ok(), "{protocol:?}: {response:?}");
        assert_eq!(llm.requests().len(), 2, "{protocol:?}: one retry");
    }
}

/// With `--stream` the request timeout is a limit on silence: a long answer that keeps coming is
/// read whole, and a stream that goes quiet for the timeout is retried as a reset connection is.
#[tokio::test]
async fn llm_a_streams_timeout_is_on_silence_not_on_length() {
    for protocol in PROTOCOLS {
        // Wide margins: a loaded machine may delay a piece by a few hundred milliseconds.
        let timeout = Duration::from_millis(2000);
        let llm = FakeLlm::start(
            protocol,
            vec![
                // Ten pieces 500 ms apart: 5 s in all, never 2 s quiet.
                Turn::Fault(Fault::SlowStream {
                    pieces: 10,
                    gap: Duration::from_millis(500),
                }),
                Turn::Fault(Fault::StalledStream {
                    silence: Duration::from_secs(15),
                }),
                Turn::shell("true", "after the stall"),
            ],
        )
        .await;
        let streaming = LlmClient::new(
            ProviderConfig {
                stream: true,
                request_timeout: timeout,
                ..config(&llm, protocol)
            },
            Arc::new(Metrics::new()),
            CostTable::default(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let slow = streaming.complete(&request()).await.unwrap();
        assert!(
            started.elapsed() > timeout * 2,
            "{protocol:?}: the stream was slow"
        );
        assert_eq!(
            llm.requests().len(),
            1,
            "{protocol:?}: read whole, no retry"
        );
        assert!(
            slow.content.iter().any(|block| matches!(
                block,
                ContentBlock::Text { text } if text == "slow but steady"
            )),
            "{protocol:?}: {slow:?}"
        );
        let mut retries = Vec::new();
        let started = std::time::Instant::now();
        let after = streaming
            .complete_with(&request(), |notice| retries.push(notice.error))
            .await
            .unwrap();
        assert_eq!(
            llm.requests().len(),
            3,
            "{protocol:?}: the stall retried once"
        );
        assert_eq!(retries.len(), 1, "{protocol:?}: {retries:?}");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{protocol:?}: the stall was cut at the idle timeout, not waited out"
        );
        assert!(
            after.content.iter().any(|block| matches!(
                block,
                ContentBlock::ToolUse { input, .. } if input["reasoning"] == "after the stall"
            )),
            "{protocol:?}: {after:?}"
        );
    }
}

/// Several tool calls in one answer: each runs, and all their results go back in the next request,
/// in the shapes both APIs take (checked with each official SDK's request types).
#[tokio::test]
async fn llm_conformance_parallel_tool_calls_in_both_protocols() {
    let spec = serde_json::from_value(json!({"title": "api down"})).unwrap();
    let mut history = History::from_events(&[EventBody::SessionStarted {
        generation: 1,
        spec,
        model: "m".into(),
        provider: "anthropic".into(),
        sandbox_image: "img".into(),
        requests: Default::default(),
    }]);
    let call = |id: &str, command: &str| ContentBlock::ToolUse {
        id: id.into(),
        name: "shell".into(),
        input: json!({"command": command, "reasoning": "look"}),
    };
    history.apply(&EventBody::LlmResponse {
        turn: 1,
        content: vec![
            ContentBlock::Text {
                text: "Two looks at once.".into(),
            },
            call("call_a", "docker ps"),
            call("call_b", "df -h"),
        ],
        stop_reason: Some("tool_use".into()),
        input_tokens: 1,
        output_tokens: 1,
        cache_write_tokens: 0,
        cache_read_tokens: 0,
        cost_usd: 0.0,
    });
    for (id, output) in [("call_a", "api Exited (1)"), ("call_b", "/ 100%")] {
        assert!(matches!(
            history.next(),
            opslab::session::history::Next::RunTool { id: next, .. } if next == id
        ));
        history.apply(&EventBody::CommandStarted {
            tool_use_id: id.into(),
            command: "x".into(),
            reasoning: "look".into(),
            timeout_seconds: 10,
        });
        history.apply(&EventBody::CommandFinished {
            tool_use_id: id.into(),
            exit_code: Some(0),
            duration_ms: 1,
            timed_out: false,
            output: output.into(),
            output_bytes: output.len() as u64,
            truncated: false,
        });
    }
    let request = ChatRequest {
        messages: history.messages(),
        ..request()
    };
    let body = anthropic::request_body(&request, true);
    let results: Vec<&str> = body["messages"][2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["tool_use_id"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["call_a", "call_b"], "one user message holds both");
    check_with(Sdk::Anthropic, &[body], true);
    let body = opslab::llm::openai::request_body(&request);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
    assert_eq!(
        body["messages"][2]["tool_calls"].as_array().unwrap().len(),
        2
    );
    check_with(Sdk::OpenAi, std::slice::from_ref(&body), true);
    // The check can fail: a tool message without its call's id is refused.
    let mut orphan = body.clone();
    orphan["messages"][3]
        .as_object_mut()
        .unwrap()
        .remove("tool_call_id");
    check_with(Sdk::OpenAi, &[orphan], false);
}
