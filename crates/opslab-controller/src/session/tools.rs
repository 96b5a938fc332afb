//! The agent's two tools, `shell` and `report`: their schemas, the checking of the model's
//! arguments, and the text a command's result is given back as. Pure.

use serde::Deserialize;
use serde_json::json;

use crate::incident::{Outcome, Report};
use crate::llm::{ContentBlock, ToolSpec};

pub const SHELL: &str = "shell";
pub const REPORT: &str = "report";

/// The tools offered to the model.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: SHELL.into(),
            description: "Run a shell command with `bash -lc` in your sandbox container on the \
                affected Docker host. The docker CLI is available. stdin is closed; the command \
                is killed after the command timeout; long output keeps its head and tail. \
                Processes a command leaves running are killed when it ends: start one that must \
                keep running with `nohup … >/tmp/file.log 2>&1 &`. \
                Explain why you run it in `reasoning`."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command line to run."},
                    "reasoning": {"type": "string", "description": "Why you run it: what you expect to learn or change."}
                },
                "required": ["command", "reasoning"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: REPORT.into(),
            description: "End the session with your final report. Call it once you have verified \
                a fix, or when you cannot make progress."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "outcome": {"type": "string", "enum": ["resolved", "mitigated", "unresolved", "needs_human"],
                        "description": "resolved: fixed and verified; mitigated: impact contained; unresolved: not fixed; needs_human: a person must act."},
                    "summary": {"type": "string", "description": "What happened, in a few sentences."},
                    "root_cause": {"type": "string", "description": "The cause you found."},
                    "actions": {"type": "array", "items": {"type": "string"}, "description": "What you changed, one item per action."},
                    "verification": {"type": "string", "description": "How you checked the fix."}
                },
                "required": ["outcome", "summary"],
                "additionalProperties": false
            }),
        },
    ]
}

/// A checked tool call.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolCall {
    Shell { command: String, reasoning: String },
    Report(Report),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellArgs {
    command: String,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportArgs {
    outcome: Outcome,
    summary: String,
    #[serde(default)]
    root_cause: Option<String>,
    #[serde(default)]
    actions: Option<Vec<String>>,
    #[serde(default)]
    verification: Option<String>,
}

/// A tool call a model wrote as text instead of as a call (small models on Chat Completions do:
/// `{"name": "shell", "arguments": {…}}` with `finish_reason: stop`). Taken as a call only when the
/// answer has no call and its text is exactly one such object, of a tool we offer, with an object of
/// arguments (optionally in one ```json fence); anything else stays prose. Pure.
pub fn call_written_as_text(content: &[ContentBlock]) -> Option<(String, serde_json::Value)> {
    let mut texts = content.iter().map(|block| match block {
        ContentBlock::Text { text } => Some(text.as_str()),
        ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
    });
    let text = match (texts.next(), texts.next()) {
        (Some(Some(text)), None) => text.trim(),
        _ => return None,
    };
    let json = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|fenced| fenced.strip_suffix("```"))
        .unwrap_or(text)
        .trim();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Written {
        name: String,
        arguments: serde_json::Value,
    }
    let written: Written = serde_json::from_str(json).ok()?;
    let arguments = match written.arguments {
        serde_json::Value::String(inner) => serde_json::from_str(&inner).ok()?,
        other => other,
    };
    let known = written.name == SHELL || written.name == REPORT;
    (known && arguments.is_object()).then_some((written.name, arguments))
}

/// A tool call the model must make again. Its text is told to the model, so it says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool {0:?}: the tools are `{SHELL}` and `{REPORT}`", SHELL = SHELL, REPORT = REPORT)]
    UnknownTool(String),
    #[error("{tool}: the arguments must be a JSON object matching the tool's schema, got: {got}")]
    NotAnObject { tool: &'static str, got: String },
    #[error("{tool}: bad arguments: {problem}")]
    BadArguments { tool: &'static str, problem: String },
    #[error("{tool}: bad argument `{path}`: {problem}")]
    BadArgument {
        tool: &'static str,
        path: String,
        problem: String,
    },
    #[error("shell: `command` is empty; give the command line to run")]
    EmptyCommand,
    #[error("shell: `reasoning` is required: say why you run this command, then call shell again")]
    NoReasoning,
    #[error("report: `summary` is empty")]
    EmptySummary,
}

/// Checks a tool call.
pub fn parse(name: &str, input: &serde_json::Value) -> Result<ToolCall, ToolError> {
    match name {
        SHELL => {
            let args: ShellArgs = decode(SHELL, input)?;
            if args.command.trim().is_empty() {
                return Err(ToolError::EmptyCommand);
            }
            let reasoning = args.reasoning.unwrap_or_default();
            if reasoning.trim().is_empty() {
                return Err(ToolError::NoReasoning);
            }
            Ok(ToolCall::Shell {
                command: args.command,
                reasoning,
            })
        }
        REPORT => {
            let args: ReportArgs = decode(REPORT, input)?;
            if args.summary.trim().is_empty() {
                return Err(ToolError::EmptySummary);
            }
            Ok(ToolCall::Report(Report {
                outcome: args.outcome,
                summary: args.summary,
                root_cause: args.root_cause.unwrap_or_default(),
                actions: args.actions.unwrap_or_default(),
                verification: args.verification.unwrap_or_default(),
            }))
        }
        other => Err(ToolError::UnknownTool(other.to_string())),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    tool: &'static str,
    input: &serde_json::Value,
) -> Result<T, ToolError> {
    if !input.is_object() {
        return Err(ToolError::NotAnObject {
            tool,
            got: clip(&input.to_string(), 200),
        });
    }
    serde_path_to_error::deserialize(input.clone()).map_err(|error| {
        let path = error.path().to_string();
        let problem = error.inner().to_string();
        if path == "." {
            ToolError::BadArguments { tool, problem }
        } else {
            ToolError::BadArgument {
                tool,
                path,
                problem,
            }
        }
    })
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The text a command's result is given back to the model as.
pub fn shell_result(
    exit_code: Option<i64>,
    duration_ms: u64,
    timed_out: bool,
    output: &str,
) -> String {
    let status = shell_status(exit_code, duration_ms, timed_out);
    if output.is_empty() {
        format!("{}, no output]", status.trim_end_matches(']'))
    } else {
        format!("{status}\n{output}")
    }
}

/// The first line of a command's result: how it ended and how long it took.
pub fn shell_status(exit_code: Option<i64>, duration_ms: u64, timed_out: bool) -> String {
    let status = match (timed_out, exit_code) {
        (true, _) => "timed out and was killed".to_string(),
        (false, Some(code)) => format!("exit code {code}"),
        (false, None) => "no exit code (the sandbox could not run it)".to_string(),
    };
    let seconds = duration_ms as f64 / 1000.0;
    format!("[{status} after {seconds:.1}s]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_arguments_are_checked() {
        assert_eq!(
            parse(SHELL, &json!({"command": "ls", "reasoning": "look"})),
            Ok(ToolCall::Shell {
                command: "ls".into(),
                reasoning: "look".into()
            })
        );
        let told = |input| parse(SHELL, &input).unwrap_err().to_string();
        assert_eq!(
            told(json!({"reasoning": "look"})),
            "shell: bad arguments: missing field `command`"
        );
        assert_eq!(
            told(json!({"command": 42, "reasoning": "x"})),
            "shell: bad argument `command`: invalid type: integer `42`, expected a string"
        );
        assert!(told(json!({"command": "ls"})).contains("reasoning"));
        assert!(told(json!("ls")).contains("JSON object"));
    }

    #[test]
    fn report_arguments_are_checked() {
        let call = parse(
            REPORT,
            &json!({"outcome": "needs_human", "summary": "disk is failing", "actions": ["none"]}),
        );
        assert_eq!(
            call,
            Ok(ToolCall::Report(Report {
                outcome: Outcome::NeedsHuman,
                summary: "disk is failing".into(),
                root_cause: String::new(),
                actions: vec!["none".into()],
                verification: String::new(),
            }))
        );
        assert!(
            parse(REPORT, &json!({"outcome": "great", "summary": "x"}))
                .unwrap_err()
                .to_string()
                .contains("unknown variant `great`")
        );
    }

    #[test]
    fn unknown_tools_are_named() {
        assert_eq!(
            parse("python", &json!({})).unwrap_err().to_string(),
            "unknown tool \"python\": the tools are `shell` and `report`"
        );
    }

    #[test]
    fn results_state_the_exit() {
        assert_eq!(
            shell_result(Some(1), 1500, false, "no"),
            "[exit code 1 after 1.5s]\nno"
        );
        assert_eq!(
            shell_result(Some(124), 2000, true, ""),
            "[timed out and was killed after 2.0s, no output]"
        );
    }

    fn text(text: &str) -> Vec<ContentBlock> {
        vec![ContentBlock::Text { text: text.into() }]
    }

    #[test]
    fn a_call_written_as_text_is_taken_only_when_it_is_exactly_one_call() {
        let call = r#"{"name": "shell", "arguments": {"command": "uptime", "reasoning": "load"}}"#;
        assert_eq!(
            call_written_as_text(&text(call)),
            Some((
                "shell".to_string(),
                serde_json::json!({"command": "uptime", "reasoning": "load"})
            ))
        );
        // Arguments as a JSON string, as Chat Completions encodes them, and a fence around it.
        let fenced = "```json\n{\"name\": \"report\", \"arguments\": \"{\\\"outcome\\\": \\\"resolved\\\"}\"}\n```";
        assert_eq!(
            call_written_as_text(&text(fenced)).map(|(name, _)| name),
            Some("report".to_string())
        );
        for prose in [
            "I will run uptime next.",
            r#"Running {"name": "shell", "arguments": {"command": "uptime"}}"#,
            r#"{"name": "rm_everything", "arguments": {}}"#,
            r#"{"name": "shell", "arguments": ["uptime"]}"#,
            r#"{"name": "shell", "arguments": {}, "extra": 1}"#,
        ] {
            assert_eq!(call_written_as_text(&text(prose)), None, "{prose}");
        }
        // An answer that has a real call is never second-guessed.
        let mut both = text(call);
        both.push(ContentBlock::ToolUse {
            id: "c".into(),
            name: "shell".into(),
            input: serde_json::json!({"command": "ls", "reasoning": "r"}),
        });
        assert_eq!(call_written_as_text(&both), None);
    }
}
