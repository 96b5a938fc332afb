//! A model server on loopback that speaks the Anthropic Messages protocol and replays each case's
//! commands: every conversation is matched to its case by a key its prompt holds (the case's
//! network), and answered by how far it has come — the n-th answer is the n-th command as a `shell`
//! call, then the `report` call. It reports token usage estimated from the text's length (about
//! four characters a token), since no real model counts them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ScriptedCommand;
use crate::incident::Report;
use crate::session::tools;

/// One case's script.
#[derive(Clone, Debug)]
pub struct Script {
    pub commands: Vec<ScriptedCommand>,
    pub report: Report,
}

/// The answer to a conversation that holds `answered` model answers so far (pure).
pub fn turn(script: &Script, answered: usize) -> Value {
    let (text, call) = match script.commands.get(answered) {
        Some(step) => (
            step.reasoning.clone(),
            Some((
                tools::SHELL,
                json!({"command": step.command, "reasoning": step.reasoning}),
            )),
        ),
        None if answered == script.commands.len() => (
            "I have verified the outcome; here is my report.".to_string(),
            Some((tools::REPORT, report_input(&script.report))),
        ),
        None => (
            "The session is over: the report was sent.".to_string(),
            None,
        ),
    };
    let mut content = vec![json!({"type": "text", "text": text})];
    if let Some((name, input)) = &call {
        content.push(json!({
            "type": "tool_use", "id": format!("toolu_replay_{answered:04}"), "name": name, "input": input,
        }));
    }
    json!({
        "id": format!("msg_replay_{answered:04}"),
        "type": "message",
        "role": "assistant",
        "model": "replay",
        "content": content,
        "stop_reason": if call.is_some() { "tool_use" } else { "end_turn" },
        "usage": {"input_tokens": 0, "output_tokens": estimate_tokens(&content_text(&content))},
    })
}

fn report_input(report: &Report) -> Value {
    json!({
        "outcome": report.outcome,
        "summary": report.summary,
        "root_cause": report.root_cause,
        "actions": report.actions,
        "verification": report.verification,
    })
}

fn content_text(content: &[Value]) -> String {
    content.iter().map(Value::to_string).collect()
}

fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// How many model answers a request's conversation holds.
fn answers_in(body: &Value) -> usize {
    body["messages"].as_array().map_or(0, |messages| {
        messages.iter().filter(|m| m["role"] == "assistant").count()
    })
}

/// The script whose key the request's system prompt or first message holds.
fn script_for<'a>(scripts: &'a HashMap<String, Script>, body: &Value) -> Option<&'a Script> {
    let prompt = format!("{}{}", body["system"], body["messages"][0]);
    // The longest key wins, so that one case's key inside another's cannot mislead.
    scripts
        .iter()
        .filter(|(key, _)| prompt.contains(key.as_str()))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, script)| script)
}

/// The server; it stops when dropped.
pub struct ReplayServer {
    address: SocketAddr,
    stop: CancellationToken,
}

impl ReplayServer {
    /// Serves `scripts` (key -> script) on an ephemeral loopback port.
    pub async fn start(scripts: HashMap<String, Script>) -> std::io::Result<ReplayServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/v1/messages", post(answer))
            .with_state(Arc::new(scripts));
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok(ReplayServer { address, stop })
    }

    /// What goes in `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(State(scripts): State<Arc<HashMap<String, Script>>>, body: Bytes) -> Response {
    let error = |status: StatusCode, message: &str| {
        json_response(
            status,
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
        )
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    // A request without tools is the summary model's: a short neutral summary.
    if body.get("tools").is_none() {
        let content = [json!({"type": "text", "text": "Output recorded; see the full text."})];
        return json_response(
            StatusCode::OK,
            &json!({
                "id": "msg_replay_summary", "type": "message", "role": "assistant", "model": "replay",
                "content": content, "stop_reason": "end_turn",
                "usage": {"input_tokens": estimate_tokens(&body.to_string()), "output_tokens": 8},
            }),
        );
    }
    let Some(script) = script_for(&scripts, &body) else {
        return error(
            StatusCode::NOT_FOUND,
            "no replayed case matches this conversation (its prompt names none of the cases' networks)",
        );
    };
    let mut message = turn(script, answers_in(&body));
    message["usage"]["input_tokens"] = json!(estimate_tokens(&body.to_string()));
    json_response(StatusCode::OK, &message)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Outcome;
    use crate::llm::ContentBlock;
    use crate::llm::anthropic::parse_response;

    fn script() -> Script {
        Script {
            commands: vec![ScriptedCommand {
                command: "docker ps".into(),
                reasoning: "look".into(),
            }],
            report: Report {
                outcome: Outcome::Resolved,
                summary: "fixed".into(),
                root_cause: "stopped".into(),
                actions: vec!["started it".into()],
                verification: "curl".into(),
            },
        }
    }

    fn calls(answered: usize) -> Vec<(String, Value)> {
        let response = parse_response(turn(&script(), answered).to_string().as_bytes()).unwrap();
        response
            .content
            .into_iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { name, input, .. } => Some((name, input)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commands_then_the_report_then_nothing() {
        let first = calls(0);
        assert_eq!(first[0].0, "shell");
        assert_eq!(
            tools::parse(&first[0].0, &first[0].1),
            Ok(tools::ToolCall::Shell {
                command: "docker ps".into(),
                reasoning: "look".into()
            })
        );
        let second = calls(1);
        assert_eq!(
            tools::parse(&second[0].0, &second[0].1),
            Ok(tools::ToolCall::Report(script().report))
        );
        assert!(calls(2).is_empty());
    }

    #[test]
    fn conversations_find_their_case() {
        let scripts = HashMap::from([("a-net".to_string(), script())]);
        let body =
            json!({"system": "networks: a-net", "messages": [{"role": "user", "content": "x"}]});
        assert!(script_for(&scripts, &body).is_some());
        let other = json!({"system": "networks: b-net", "messages": []});
        assert!(script_for(&scripts, &other).is_none());
    }
}
