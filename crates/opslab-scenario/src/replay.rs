//! A model server on loopback that speaks the Anthropic Messages protocol and replays each case's
//! commands: every conversation is matched to its case by what its prompt holds (the case's network
//! and its ticket's title), and answered by how far it has come — the n-th answer is the n-th
//! command as a `shell` call, then the `report` call. The first answer says that a scripted replay
//! is playing, so the audit trail never passes it off as a model. It reports token usage estimated
//! from the text's length (about four characters a token), since no real model counts them.
//!
//! `opslab scenario run --driver replay` starts one for its cases; the controller starts one for
//! its `replay` provider ([`ReplayServer::for_demo`]), playing the cases against the compose demo.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Case, Names, ScenarioError, ScriptedCommand};
use opslab::incident::Report;
use opslab::session::tools;

/// The model name the replay answers as; the cost table prices it at nothing.
pub const MODEL: &str = "opslab-replay";

/// One case's script.
#[derive(Clone, Debug)]
pub struct Script {
    /// The case it plays, named in the notice.
    pub case: String,
    /// What a conversation's prompt must all hold to be this case's.
    pub keys: Vec<String>,
    pub commands: Vec<ScriptedCommand>,
    pub report: Report,
}

impl Script {
    /// The case's script with its names filled in; it plays conversations whose prompt names the
    /// case's network and holds its Incident's title.
    pub fn of(case: &Case, names: &Names) -> Result<Script, ScenarioError> {
        let manifest = names.fill(&case.incident);
        let parsed = opslab::source::manifest::parse(manifest.as_bytes());
        let Some(incident) = parsed.incidents.first() else {
            return Err(ScenarioError::Case {
                path: case.dir.join("incident.yaml"),
                message: format!("not a valid Incident: {:?}", parsed.errors),
            });
        };
        let (commands, report) = case.script(names);
        Ok(Script {
            case: case.name.clone(),
            keys: vec![names.network(), incident.spec.title.clone()],
            commands,
            report,
        })
    }
}

/// Said first in every replayed conversation, so that `follow` and `show` tell a replay from a model.
pub fn notice(case: &str) -> String {
    format!(
        "[scripted replay] No model is answering: opslab is replaying the commands written for the \
         scenario `{case}` (scenarios/{case}/case.yaml). To have a real model work on incidents, set \
         ANTHROPIC_API_KEY (or OPENAI_BASE_URL with OPSLAB_PROVIDER=openai) and start the controller \
         again; scripts/demo does this when either is set."
    )
}

/// The answer to a conversation that holds `answered` model answers so far (pure).
pub fn turn(script: &Script, answered: usize) -> Value {
    let (text, call) = match script.commands.get(answered) {
        Some(step) if answered == 0 => (
            format!("{}\n\n{}", notice(&script.case), step.reasoning),
            Some((
                tools::SHELL,
                json!({"command": step.command, "reasoning": step.reasoning}),
            )),
        ),
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
        "model": MODEL,
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

/// `case`'s script, recognised by the network alone: it plays the conversations on `network` that no
/// case's own keys (network and title) claim, since the longest keys win ([`script_for`]).
fn for_any_incident_on(
    scripts: &[Script],
    case: &str,
    network: &str,
) -> Result<Script, ScenarioError> {
    let Some(script) = scripts.iter().find(|script| script.case == case) else {
        let cases: Vec<&str> = scripts.iter().map(|script| script.case.as_str()).collect();
        return Err(ScenarioError::Run(format!(
            "OPSLAB_REPLAY_CASE names the scenario {case:?}, which the replay does not have (it has: {})",
            cases.join(", ")
        )));
    };
    Ok(Script {
        keys: vec![network.to_string()],
        ..script.clone()
    })
}

/// The script all of whose keys the request's system prompt or first message holds.
fn script_for<'a>(scripts: &'a [Script], body: &Value) -> Option<&'a Script> {
    let prompt = format!(
        "{}\n{}",
        plain(&body["system"]),
        plain(&body["messages"][0]["content"])
    );
    // The longest keys win, so that one case's key inside another's cannot mislead.
    scripts
        .iter()
        .filter(|script| script.keys.iter().all(|key| prompt.contains(key.as_str())))
        .max_by_key(|script| script.keys.iter().map(String::len).sum::<usize>())
}

/// The text of a prompt part as the model reads it: a string, or the texts of its blocks.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|block| plain(&block["text"]))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The server; it stops when dropped.
pub struct ReplayServer {
    address: SocketAddr,
    stop: CancellationToken,
}

impl ReplayServer {
    /// Serves `scripts` on an ephemeral loopback port.
    pub async fn start(scripts: Vec<Script>) -> std::io::Result<ReplayServer> {
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

    /// The server of the controller's `replay` provider: every case of `scenarios_dir`, with the
    /// names the compose demo gives its containers (`demo_prefix`, docker-compose.yml's
    /// `OPSLAB_DEMO`). With `alerted`, that case also plays any other Incident on the demo's
    /// network: the one an alert filed, whose title is the alert's, while the demo has that case's
    /// fault (scripts/demo names the case it injected).
    pub async fn for_demo(
        scenarios_dir: &Path,
        demo_prefix: &str,
        alerted: Option<&str>,
    ) -> Result<ReplayServer, ScenarioError> {
        let names = Names::new(demo_prefix);
        let mut scripts = super::load_all(scenarios_dir)?
            .iter()
            .map(|case| Script::of(case, &names))
            .collect::<Result<Vec<_>, _>>()?;
        if scripts.is_empty() {
            return Err(ScenarioError::Run(format!(
                "the replay provider found no scenario in {} (a directory per case, each with case.yaml)",
                scenarios_dir.display()
            )));
        }
        if let Some(case) = alerted {
            let fallback = for_any_incident_on(&scripts, case, &names.network())?;
            scripts.push(fallback);
        }
        ReplayServer::start(scripts)
            .await
            .map_err(|error| ScenarioError::Run(format!("cannot start the replay server: {error}")))
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

async fn answer(State(scripts): State<Arc<Vec<Script>>>, body: Bytes) -> Response {
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
                "id": "msg_replay_summary", "type": "message", "role": "assistant", "model": MODEL,
                "content": content, "stop_reason": "end_turn",
                "usage": {"input_tokens": estimate_tokens(&body.to_string()), "output_tokens": 8},
            }),
        );
    }
    let Some(script) = script_for(&scripts, &body) else {
        return error(StatusCode::NOT_FOUND, &unmatched(&scripts));
    };
    let mut message = turn(script, answers_in(&body));
    message["usage"]["input_tokens"] = json!(estimate_tokens(&body.to_string()));
    json_response(StatusCode::OK, &message)
}

/// Why a conversation got no answer: the replay plays only its scenarios' own Incidents.
fn unmatched(scripts: &[Script]) -> String {
    let cases: Vec<&str> = scripts.iter().map(|script| script.case.as_str()).collect();
    format!(
        "the scripted replay (no model is configured) plays only the Incidents of its scenarios ({}): \
         this ticket is none of them (a case is recognised by its network and its title). To work on \
         other Incidents, set ANTHROPIC_API_KEY, or OPENAI_BASE_URL with OPSLAB_PROVIDER=openai",
        cases.join(", ")
    )
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
    use opslab::incident::Outcome;
    use opslab::llm::ContentBlock;
    use opslab::llm::anthropic::parse_response;

    fn script() -> Script {
        Script {
            case: "c".into(),
            keys: vec!["a-net".into(), "the site is down".into()],
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
    fn the_first_answer_says_a_replay_is_playing() {
        let text = |answered| turn(&script(), answered)["content"][0]["text"].to_string();
        assert!(text(0).contains("[scripted replay]"), "{}", text(0));
        assert!(text(0).contains("ANTHROPIC_API_KEY"), "{}", text(0));
        assert!(!text(1).contains("[scripted replay]"), "{}", text(1));
        assert_eq!(turn(&script(), 0)["model"], MODEL);
    }

    #[test]
    fn the_replay_is_a_known_model_that_costs_nothing() {
        let costs = opslab::cost::CostTable::default();
        assert!(
            costs.price(MODEL).is_some(),
            "a budget must know the replay's price"
        );
        assert_eq!(costs.cost(MODEL, 1_000_000, 1_000_000), 0.0);
        assert!(costs.check_budget(MODEL, Some(0.5)).is_ok());
    }

    #[test]
    fn conversations_find_their_case_by_network_and_title() {
        let mut other = script();
        other.case = "other".into();
        other.keys = vec!["a-net".into(), "the store is full".into()];
        let scripts = vec![script(), other];
        let ask = |system: &str, ticket: &str| json!({"system": system, "messages": [{"role": "user", "content": [{"type": "text", "text": ticket}]}]});
        let case = |body: &Value| script_for(&scripts, body).map(|script| script.case.clone());
        let found = case(&ask(
            "networks: a-net",
            "Incident ticket: the store is full",
        ));
        assert_eq!(found.as_deref(), Some("other"));
        let found = case(&ask("networks: a-net", "Incident ticket: the site is down"));
        assert_eq!(found.as_deref(), Some("c"));
        assert_eq!(case(&ask("networks: b-net", "the site is down")), None);
        assert_eq!(case(&ask("networks: a-net", "something else")), None);
        // A title with quotes matches as the model reads it, not as JSON escapes it.
        let mut quoted = script();
        quoted.keys = vec!["a-net".into(), "\"quoted\" title".into()];
        let body = ask("networks: a-net", "ticket: \"quoted\" title");
        assert!(script_for(&[quoted], &body).is_some());
    }

    #[test]
    fn an_alerted_case_plays_the_other_incidents_on_its_network_only() {
        let mut other = script();
        other.case = "other".into();
        other.keys = vec!["a-net".into(), "the store is full".into()];
        let mut scripts = vec![script(), other];
        scripts.push(for_any_incident_on(&scripts, "c", "a-net").unwrap());
        let ask = |system: &str, ticket: &str| json!({"system": system, "messages": [{"role": "user", "content": [{"type": "text", "text": ticket}]}]});
        let case = |body: &Value| script_for(&scripts, body).map(|script| script.case.clone());
        // An alert's title on the demo's network: the alerted case.
        let alert = ask("networks: a-net", "DemoVisitsFailing: visits fail");
        assert_eq!(case(&alert).as_deref(), Some("c"));
        // A case's own Incident is still its own; another network is still no case.
        let own = ask("networks: a-net", "Incident ticket: the store is full");
        assert_eq!(case(&own).as_deref(), Some("other"));
        assert_eq!(case(&ask("networks: b-net", "visits fail")), None);
        let error = for_any_incident_on(&scripts, "nope", "a-net").unwrap_err();
        assert!(error.to_string().contains("\"nope\""), "{error}");
        assert!(error.to_string().contains("c, other"), "{error}");
    }

    #[test]
    fn the_shipped_cases_are_told_apart_in_one_demo_stack() {
        let dir = crate::shipped_scenarios();
        let names = Names::new("demo");
        let cases = crate::load_all(&dir).unwrap();
        let scripts: Vec<Script> = cases
            .iter()
            .map(|case| Script::of(case, &names).unwrap())
            .collect();
        for case in &cases {
            let manifest = names.fill(&case.incident);
            let incident = opslab::source::manifest::parse(manifest.as_bytes())
                .incidents
                .remove(0);
            let body = json!({
                "system": opslab::session::prompt::system(&incident.spec, 30),
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": opslab::session::prompt::ticket(&incident.spec)}
                ]}],
            });
            let found = script_for(&scripts, &body).map(|script| script.case.as_str());
            assert_eq!(found, Some(case.name.as_str()));
        }
        let error = unmatched(&scripts);
        assert!(
            error.contains("container-stopped") && error.contains("ANTHROPIC_API_KEY"),
            "{error}"
        );
    }
}
