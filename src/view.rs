//! What the CLI prints for people: kubectl-like tables and the whole story of a session. Pure: data
//! in, text out.

use std::io::Write;

use tabwriter::TabWriter;

use crate::audit::{Event, EventBody, IncidentRecord, SessionRecord};
use crate::incident::Incident;
use crate::llm::ContentBlock;

/// Output formats of the listing commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

/// `opslab get incidents`: NAMESPACE, NAME, PHASE, SEVERITY, COMMANDS, AGE; then the manifest problems.
pub fn incidents_table(records: &[IncidentRecord], now: jiff::Timestamp) -> String {
    let mut rows = vec!["NAMESPACE\tNAME\tPHASE\tSEVERITY\tCOMMANDS\tAGE".to_string()];
    let mut problems = Vec::new();
    for record in records {
        if let Some(error) = &record.error {
            rows.push(format!("-\t{}\tInvalid\t-\t-\t-", record.name));
            problems.push(format!("{}: {}", record.name, error));
            continue;
        }
        let incident: Option<Incident> = serde_json::from_value(record.incident.clone()).ok();
        let (phase, commands) = incident
            .as_ref()
            .and_then(|incident| incident.status.as_ref())
            .map(|status| (status.phase.to_string(), status.commands.to_string()))
            .unwrap_or_else(|| ("Pending".into(), "0".into()));
        let severity = incident
            .as_ref()
            .map(|incident| incident.spec.severity.to_string())
            .unwrap_or_else(|| "-".into());
        let age = incident
            .as_ref()
            .and_then(|incident| incident.metadata.creation_timestamp.as_ref())
            .map(|created| age(created.0, now))
            .unwrap_or_else(|| "-".into());
        rows.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            record.namespace, record.name, phase, severity, commands, age
        ));
    }
    let mut text = tabulate(&rows);
    if !problems.is_empty() {
        text.push_str("\nInvalid manifests:\n");
        for problem in problems {
            text.push_str(&format!("  {}\n", printable(&problem)));
        }
    }
    text
}

/// `opslab sessions`.
pub fn sessions_table(sessions: &[SessionRecord], now: jiff::Timestamp) -> String {
    let mut rows = vec![
        "SESSION\tINCIDENT\tATTEMPT\tPHASE\tOUTCOME\tTURNS\tCOMMANDS\tTOKENS\tAGE".to_string(),
    ];
    for session in sessions {
        let phase = if session.state == "running" {
            "Investigating".to_string()
        } else {
            session.phase.to_string()
        };
        let outcome = session
            .outcome
            .map(|outcome| {
                serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "-".into());
        let age = session
            .started_at
            .parse()
            .map(|started| age(started, now))
            .unwrap_or_else(|_| "-".into());
        rows.push(format!(
            "{}\t{}/{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            session.id,
            session.incident_namespace,
            session.incident_name,
            session.attempt,
            phase,
            outcome,
            session.turns,
            session.commands,
            session.input_tokens + session.output_tokens,
            age
        ));
    }
    tabulate(&rows)
}

/// `opslab show`: the whole conversation, in order: reasoning, commands, exit codes, durations,
/// outputs and summaries. Without `raw`, long outputs show their first and last lines.
pub fn session_story(session: &SessionRecord, events: &[Event], raw: bool) -> String {
    let mut out = session_header(session);
    for event in events {
        out.push('\n');
        out.push_str(&event_text(event, raw));
    }
    out
}

/// Who, what and how much, for the top of `show` and `follow`.
pub fn session_header(session: &SessionRecord) -> String {
    let phase = if session.state == "running" {
        "Investigating".to_string()
    } else {
        session.phase.to_string()
    };
    format!(
        "Session {}\nIncident {}/{} (attempt {})\nPhase {}{}\nStarted {}{}\nTurns {}, commands {}, tokens {} in / {} out, estimated cost ${:.4}\n",
        session.id,
        session.incident_namespace,
        session.incident_name,
        session.attempt,
        phase,
        session
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        session.started_at,
        session
            .finished_at
            .as_deref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default(),
        session.turns,
        session.commands,
        session.input_tokens,
        session.output_tokens,
        session.cost_usd,
    )
}

/// Lines of output `show` prints from each end of a long output, unless `--raw`.
const OUTPUT_LINES_KEPT: usize = 10;

/// One event, for people.
pub fn event_text(event: &Event, raw: bool) -> String {
    let mut out = String::new();
    let time = event.at.get(11..19).unwrap_or(&event.at);
    let head = format!("#{} {time} ", event.seq);
    match &event.body {
        EventBody::SessionStarted {
            spec,
            model,
            provider,
            ..
        } => {
            out.push_str(&format!(
                "{head}session started with {provider} model {model}\n"
            ));
            out.push_str(&indent(&format!(
                "ticket: {} ({})",
                spec.title, spec.severity
            )));
            if !spec.description.is_empty() {
                out.push_str(&indent(&spec.description));
            }
        }
        EventBody::SandboxReady { container_id } => {
            out.push_str(&format!(
                "{head}sandbox ready: {}\n",
                container_id.get(..12).unwrap_or(container_id)
            ));
        }
        EventBody::LlmResponse {
            turn,
            content,
            input_tokens,
            output_tokens,
            ..
        } => {
            out.push_str(&format!(
                "{head}model turn {turn} ({input_tokens} in / {output_tokens} out)\n"
            ));
            for block in content {
                match block {
                    ContentBlock::Text { text } if !text.trim().is_empty() => {
                        out.push_str(&indent(text));
                    }
                    ContentBlock::Text { .. } => {}
                    ContentBlock::ToolUse { name, input, .. } => {
                        let call = match name.as_str() {
                            "shell" => {
                                format!("calls shell: {}", input["command"].as_str().unwrap_or("?"))
                            }
                            other => format!("calls {other}"),
                        };
                        out.push_str(&indent(&call));
                    }
                    ContentBlock::ToolResult { .. } => {}
                }
            }
        }
        // The message says what failed ("the model API failed: HTTP 401 …").
        EventBody::LlmFailed { message } => {
            out.push_str(&format!("{head}{message}\n"));
        }
        EventBody::CommandStarted {
            command,
            reasoning,
            timeout_seconds,
            ..
        } => {
            out.push_str(&format!("{head}$ {}\n", printable(command)));
            out.push_str(&indent(&format!("why: {reasoning}")));
            out.push_str(&indent(&format!("timeout: {timeout_seconds}s")));
        }
        EventBody::CommandFinished {
            exit_code,
            duration_ms,
            timed_out,
            output,
            output_bytes,
            truncated,
            ..
        } => {
            let status = match (timed_out, exit_code) {
                (true, _) => "timed out".to_string(),
                (false, Some(code)) => format!("exit {code}"),
                (false, None) => "not run".to_string(),
            };
            let cut = if *truncated { ", cut" } else { "" };
            out.push_str(&format!(
                "{head}{status} after {:.1}s, {output_bytes} bytes of output{cut}\n",
                *duration_ms as f64 / 1000.0
            ));
            out.push_str(&output_lines(output, raw));
        }
        EventBody::CommandInterrupted { reason, .. } => {
            out.push_str(&format!("{head}command interrupted: {reason}\n"));
        }
        EventBody::OutputSummary { summary, model, .. } => {
            out.push_str(&format!("{head}summary ({model}):\n"));
            out.push_str(&indent(summary));
        }
        EventBody::ToolRejected { tool, error, .. } => {
            out.push_str(&format!("{head}tool call {tool:?} rejected: {error}\n"));
        }
        EventBody::TicketUpdated { generation, spec } => {
            out.push_str(&format!(
                "{head}ticket updated (generation {generation}): {}\n",
                spec.title
            ));
        }
        EventBody::Reported { report, .. } => {
            let outcome = serde_json::to_value(report.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!("{head}report: {outcome}\n"));
            out.push_str(&indent(&format!("summary: {}", report.summary)));
            if !report.root_cause.is_empty() {
                out.push_str(&indent(&format!("root cause: {}", report.root_cause)));
            }
            for action in &report.actions {
                out.push_str(&indent(&format!("action: {action}")));
            }
            if !report.verification.is_empty() {
                out.push_str(&indent(&format!("verification: {}", report.verification)));
            }
        }
        EventBody::DockerApi {
            allowed,
            method,
            path,
            target,
            reason,
            ..
        } => {
            let decision = if *allowed { "allowed" } else { "DENIED" };
            let target = target
                .as_deref()
                .map(|target| format!(" ({target})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{head}docker api {decision}: {method} {}{}\n",
                printable(path),
                printable(&target)
            ));
            if let Some(reason) = reason {
                out.push_str(&indent(&format!("why: {reason}")));
            }
        }
        EventBody::SessionFinished {
            phase,
            reason,
            message,
            ..
        } => {
            out.push_str(&format!(
                "{head}session finished: {phase} ({reason}): {message}\n"
            ));
        }
    }
    out
}

/// A command's output, each line marked; without `raw`, only the first and last lines of a long one.
fn output_lines(output: &str, raw: bool) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let keep = OUTPUT_LINES_KEPT;
    let shown: Vec<String> = if raw || lines.len() <= 2 * keep {
        lines
            .iter()
            .map(|line| format!("    | {}\n", printable(line)))
            .collect()
    } else {
        let hidden = lines.len() - 2 * keep;
        lines[..keep]
            .iter()
            .map(|line| format!("    | {}\n", printable(line)))
            .chain(std::iter::once(format!(
                "    | ... {hidden} lines hidden (--raw shows all)\n"
            )))
            .chain(
                lines[lines.len() - keep..]
                    .iter()
                    .map(|line| format!("    | {}\n", printable(line))),
            )
            .collect()
    };
    shown.concat()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {}\n", printable(line)))
        .collect()
}

/// Makes text safe for a terminal: control characters (escape sequences among them) are shown, not
/// obeyed.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let visible: Vec<char> = if c.is_control() && c != '\t' && c != '\n' {
                format!("\\u{{{:x}}}", c as u32).chars().collect()
            } else {
                vec![c]
            };
            visible
        })
        .collect()
}

fn tabulate(rows: &[String]) -> String {
    let mut writer = TabWriter::new(Vec::new()).padding(3);
    for row in rows {
        // Writing into a Vec cannot fail.
        let _ = writeln!(writer, "{}", printable(row));
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// kubectl-style age: 45s, 12m, 5h, 3d.
pub fn age(since: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(since.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(age(at("2026-01-01T23:59:15Z"), now), "45s");
        assert_eq!(age(at("2026-01-01T23:30:00Z"), now), "30m");
        assert_eq!(age(at("2026-01-01T19:00:00Z"), now), "5h");
        assert_eq!(age(at("2025-12-29T00:00:00Z"), now), "4d");
    }

    #[test]
    fn docker_api_decisions_are_shown_with_their_reason() {
        let event = Event {
            session_id: "s".into(),
            seq: 7,
            at: "2026-01-02T03:04:05Z".into(),
            body: EventBody::DockerApi {
                allowed: false,
                action: "container_stop".into(),
                method: "POST".into(),
                path: "/v1.41/containers/ctl/stop".into(),
                target: Some("container ctl".into()),
                reason: Some("off limits".into()),
            },
            hash: String::new(),
        };
        assert_eq!(
            event_text(&event, false),
            "#7 03:04:05 docker api DENIED: POST /v1.41/containers/ctl/stop (container ctl)\n    why: off limits\n"
        );
    }

    #[test]
    fn a_model_api_failure_is_said_once() {
        let event = Event {
            session_id: "s".into(),
            seq: 3,
            at: "2026-01-02T03:04:05Z".into(),
            body: EventBody::LlmFailed {
                message: "the model API failed: HTTP 401 authentication_error: invalid x-api-key"
                    .into(),
            },
            hash: String::new(),
        };
        assert_eq!(
            event_text(&event, false),
            "#3 03:04:05 the model API failed: HTTP 401 authentication_error: invalid x-api-key\n"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(printable("tab\tok\n"), "tab\tok\n");
    }
}
