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

use crate::support::fake_llm::{FakeLlm, Fault, Protocol, Turn};

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
        anthropic::request_body(&request()),
        anthropic::request_body(&conversation),
    ];
    check_with_sdk(&good, true);
    // The check can fail: a tool result without its id, and an unknown block type, are refused.
    let mut no_id = anthropic::request_body(&conversation);
    no_id["messages"][2]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("tool_use_id");
    let mut unknown_block = anthropic::request_body(&request());
    unknown_block["messages"][0]["content"][0]["type"] = json!("sparkle");
    check_with_sdk(&[no_id], false);
    check_with_sdk(&[unknown_block], false);
}

fn check_with_sdk(bodies: &[serde_json::Value], expect_valid: bool) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/check_anthropic_request.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (the conformance check needs python3 with `pip install anthropic`)");
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
        !stderr.contains("No module named 'anthropic'"),
        "the conformance check needs the Anthropic SDK: pip install anthropic"
    );
    assert_eq!(
        output.status.success(),
        expect_valid,
        "expected the SDK to {} {bodies:#?}\n{stderr}{}",
        if expect_valid { "accept" } else { "refuse" },
        String::from_utf8_lossy(&output.stdout)
    );
}
