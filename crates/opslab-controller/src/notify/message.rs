//! What a notification says, pure: a [`Notice`] (what happened to which Incident), and its two
//! renderings, a Slack message (`text` and Block Kit `blocks`) and a CloudEvents 1.0 event in
//! structured JSON mode.
//!
//! The CloudEvent is a plain serde struct rather than the `cloudevents-sdk` crate: structured mode
//! is one JSON object of a few fixed attributes, which the tests check against the specification's
//! own JSON schema; the SDK's worth is in its protocol bindings and parsing, which opslab does not
//! need, and it would bring chrono beside jiff and its own error types.

use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::Redactor;
use crate::incident::{ConditionType, IncidentStatus, Phase, Report, Severity};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    /// A session started.
    Started,
    /// The Incident reached this terminal phase.
    Ended(Phase),
}

impl What {
    /// Its name in the trail and the CloudEvent's type: `session.started`, `incident.resolved`, …
    pub fn notice(self) -> String {
        match self {
            What::Started => "session.started".into(),
            What::Ended(phase) => format!("incident.{}", phase.to_string().to_lowercase()),
        }
    }
}

/// One command the session ran, as the notification lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandLine {
    pub command: String,
    /// None while it ran or when it was interrupted.
    pub exit_code: Option<i64>,
}

/// Everything a notification tells, redacted when made.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub what: What,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub title: String,
    pub severity: Severity,
    pub session_id: String,
    pub status: IncidentStatus,
    pub commands: Vec<CommandLine>,
    /// When it happened (RFC 3339): the session's end, or its start. The same on every attempt.
    pub time: String,
    /// The base URL of the controller serving the console (`/ui/`), if configured.
    pub console_url: Option<String>,
}

impl Notice {
    /// The same id on every attempt and after a restart, so a receiver recognises a retry.
    pub fn id(&self) -> String {
        format!("{}.{}.{}", self.uid, self.session_id, self.what.notice())
    }

    /// The command that shows the session's whole trail.
    pub fn review_command(&self) -> String {
        format!("opslab show {}", self.session_id)
    }

    /// The session's page in the console, on the controller at `console_url`.
    pub fn review_url(&self) -> Option<String> {
        self.console_url
            .as_ref()
            .map(|base| crate::console::session_url(base, &self.session_id))
    }

    /// Removes secrets from everything that came from the model, the commands and the ticket,
    /// before anything is cut to size (a cut secret is harder to recognise).
    pub fn redacted(mut self, redactor: &Redactor) -> Notice {
        self.title = redactor.redact(&self.title);
        if let Ok(mut status) = serde_json::to_value(&self.status) {
            redactor.redact_json(&mut status);
            if let Ok(status) = serde_json::from_value(status) {
                self.status = status;
            }
        }
        for command in &mut self.commands {
            command.command = redactor.redact(&command.command);
        }
        self
    }

    fn subject(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A CloudEvents 1.0 event, structured JSON mode (`application/cloudevents+json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    /// `dev.opslab.incident.resolved`, `dev.opslab.session.started`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// The Incident as a Kubernetes API path: the context the event happened in.
    pub source: String,
    pub id: String,
    pub time: String,
    /// `namespace/name`.
    pub subject: String,
    pub datacontenttype: &'static str,
    pub data: Value,
}

/// The media type of a structured-mode CloudEvent.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

pub fn cloud_event(notice: &Notice) -> CloudEvent {
    let status = &notice.status;
    CloudEvent {
        specversion: "1.0",
        type_: format!("dev.opslab.{}", notice.what.notice()),
        source: format!(
            "/apis/opslab.dev/v1alpha1/namespaces/{}/incidents/{}",
            notice.namespace, notice.name
        ),
        id: notice.id(),
        time: notice.time.clone(),
        subject: notice.subject(),
        datacontenttype: "application/json",
        data: json!({
            "incident": {
                "namespace": notice.namespace,
                "name": notice.name,
                "uid": notice.uid,
                "title": notice.title,
                "severity": notice.severity,
            },
            "sessionId": notice.session_id,
            "phase": status.phase,
            "status": status,
            "report": status.report,
            "commands": notice.commands,
            "review": {
                "command": notice.review_command(),
                "url": notice.review_url(),
            },
        }),
    }
}

/// Slack's limits (Block Kit reference): a header's text, a section's text, a field's text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
/// Commands listed in the message; the trail has them all.
const COMMANDS_SHOWN: usize = 15;

/// A Slack incoming-webhook message: `text` (notifications and clients without blocks) and blocks.
pub fn slack_message(notice: &Notice) -> Value {
    let (icon, headline) = match notice.what {
        What::Started => (":mag:", "Investigating".to_string()),
        What::Ended(phase) => (phase_icon(phase), phase.to_string()),
    };
    let mut blocks = vec![
        header_block(&format!("{icon} {headline}: {}", notice.title)),
        facts_block(notice),
    ];
    blocks.extend(story_sections(&notice.status));
    blocks.extend(commands_block(&notice.commands));
    blocks.push(review_block(notice));
    json!({"text": plain_text(notice, &headline), "blocks": blocks})
}

fn header_block(text: &str) -> Value {
    json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(text, HEADER_MAX), "emoji": true},
    })
}

/// The facts at a glance: which Incident, where it stands, what it cost.
fn facts_block(notice: &Notice) -> Value {
    let status = &notice.status;
    let mut fields = vec![
        ("Incident", format!("`{}`", notice.subject())),
        ("Severity", notice.severity.to_string()),
        ("Phase", status.phase.to_string()),
    ];
    if matches!(notice.what, What::Ended(_)) {
        fields.push(("Outcome", outcome(status.report.as_ref())));
    }
    fields.push(("Attempt", status.attempt.to_string()));
    fields.push((
        "Cost",
        format!(
            "${:.4} (tokens {}, turns {}, commands {})",
            status.cost_usd,
            status.tokens.total(),
            status.turns,
            status.commands
        ),
    ));
    json!({
        "type": "section",
        "fields": fields
            .into_iter()
            .map(|(name, value)| json!({"type": "mrkdwn", "text": clip(&format!("*{name}*\n{value}"), FIELD_MAX)}))
            .collect::<Vec<_>>(),
    })
}

/// The report's outcome in words (`needs human`), or that there was no report.
fn outcome(report: Option<&Report>) -> String {
    report.map_or_else(
        || "none reported".to_string(),
        |report| {
            serde_json::to_value(report.outcome)
                .ok()
                .and_then(|value| value.as_str().map(str::to_string))
                .unwrap_or_default()
                .replace('_', " ")
        },
    )
}

/// What the agent found and did, from its report. Without one (a failure, a cancellation), the
/// status's own words say why. Blank parts are left out.
fn story_sections(status: &IncidentStatus) -> Vec<Value> {
    let parts = match &status.report {
        Some(report) => {
            let actions: Vec<String> = report
                .actions
                .iter()
                .map(|action| format!("• {action}"))
                .collect();
            vec![
                ("Summary", report.summary.clone()),
                ("Root cause", report.root_cause.clone()),
                ("Actions", actions.join("\n")),
                ("Verification", report.verification.clone()),
            ]
        }
        None => {
            let why = status
                .condition(ConditionType::Resolved)
                .filter(|condition| !condition.message.is_empty())
                .map(|condition| condition.message.clone())
                .unwrap_or_default();
            vec![("Why", why)]
        }
    };
    parts
        .into_iter()
        .filter(|(_, body)| !body.trim().is_empty())
        .map(|(title, body)| {
            json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": clip(&format!("*{title}*\n{}", escape(&body)), SECTION_MAX)},
            })
        })
        .collect()
}

/// The last commands the session ran, with their exit codes; none if it ran none.
fn commands_block(commands: &[CommandLine]) -> Option<Value> {
    if commands.is_empty() {
        return None;
    }
    let shown: Vec<String> = commands
        .iter()
        .rev()
        .take(COMMANDS_SHOWN)
        .rev()
        .map(command_line)
        .collect();
    let more = commands.len().saturating_sub(COMMANDS_SHOWN);
    let title = if more > 0 {
        format!(
            "*Commands run* (the last {COMMANDS_SHOWN} of {})",
            commands.len()
        )
    } else {
        "*Commands run* ([exit code] command)".to_string()
    };
    let body = clip(&escape(&shown.join("\n")), SECTION_MAX - title.len() - 10);
    Some(json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("{title}\n```{body}```")},
    }))
}

/// One command as the list shows it: `[exit code] command`, on one line.
fn command_line(command: &CommandLine) -> String {
    let exit = command
        .exit_code
        .map_or_else(|| "-".to_string(), |code| code.to_string());
    // One line each; backticks would end the code block.
    let line: String = command
        .command
        .replace('`', "'")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("[{exit}] {}", clip(&line, 200))
}

/// Where to review the whole session: the command, and the console's page if there is one.
fn review_block(notice: &Notice) -> Value {
    let mut review = format!("Review: `{}`", notice.review_command());
    if let Some(url) = notice.review_url() {
        review.push_str(&format!(" or <{url}|open the session>"));
    }
    json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": clip(&review, SECTION_MAX)}],
    })
}

/// The message as one line of text, for notifications and clients without blocks.
fn plain_text(notice: &Notice, headline: &str) -> String {
    let summary = notice
        .status
        .report
        .as_ref()
        .map_or_else(String::new, |report| {
            format!(": {}", escape(&report.summary))
        });
    clip(
        &format!(
            "{headline}: {} ({}){summary}",
            escape(&notice.title),
            notice.subject()
        ),
        SECTION_MAX,
    )
}

fn phase_icon(phase: Phase) -> &'static str {
    match phase {
        Phase::Resolved => ":white_check_mark:",
        Phase::Unresolved => ":warning:",
        Phase::Failed => ":x:",
        Phase::Cancelled => ":no_entry_sign:",
        Phase::Pending | Phase::Queued | Phase::Investigating => ":mag:",
    }
}

/// Slack's mrkdwn control characters, escaped as its reference asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the cut marked.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Outcome, Report, Tokens};

    fn notice(what: What) -> Notice {
        Notice {
            what,
            namespace: "default".into(),
            name: "web-down".into(),
            uid: "u-1".into(),
            title: "web <is> down".into(),
            severity: Severity::High,
            session_id: "s-1".into(),
            status: IncidentStatus {
                phase: Phase::Resolved,
                attempt: 1,
                turns: 3,
                commands: 2,
                tokens: Tokens {
                    input: 300,
                    output: 60,
                    cache_write: 0,
                    cache_read: 0,
                },
                cost_usd: 0.0123,
                report: Some(Report {
                    outcome: Outcome::NeedsHuman,
                    summary: "restarted web; DB_PASSWORD=hunter2hunter2 was in the log".into(),
                    root_cause: "the process had exited".into(),
                    actions: vec!["docker restart web".into()],
                    verification: "curl answered 200".into(),
                }),
                ..IncidentStatus::default()
            },
            commands: vec![
                CommandLine {
                    command: "docker ps -a".into(),
                    exit_code: Some(0),
                },
                CommandLine {
                    command: "docker restart `web`".into(),
                    exit_code: None,
                },
            ],
            time: "2026-12-06T17:00:00Z".into(),
            console_url: Some("https://console.example.com".into()),
        }
    }

    #[test]
    fn the_slack_message_tells_the_story_within_slacks_limits() {
        let message = slack_message(&notice(What::Ended(Phase::Resolved)));
        let text = message["text"].as_str().unwrap();
        assert!(
            text.starts_with("Resolved: web &lt;is&gt; down (default/web-down)"),
            "{text}"
        );
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks[0]["text"]["text"].as_str().unwrap().len() <= HEADER_MAX);
        let all = message.to_string();
        for expected in [
            "*Outcome*\\nneeds human",
            "*Root cause*",
            "• docker restart web",
            "*Verification*",
            "[0] docker ps -a",
            "[-] docker restart 'web'",
            "$0.0123 (tokens 360, turns 3, commands 2)",
            "`opslab show s-1`",
            "<https://console.example.com/ui/sessions/s-1|open the session>",
        ] {
            assert!(all.contains(expected), "{expected} missing from {all}");
        }
        // Angle brackets from the model are escaped, not taken as Slack links.
        assert!(all.contains("web &lt;is&gt; down"), "{all}");
    }

    #[test]
    fn long_text_is_cut_to_slacks_limits() {
        let mut long = notice(What::Ended(Phase::Unresolved));
        long.title = "t".repeat(400);
        long.status.report.as_mut().unwrap().summary = "s".repeat(5000);
        long.commands = (0..40)
            .map(|i| CommandLine {
                command: format!("echo {i} {}", "x".repeat(500)),
                exit_code: Some(1),
            })
            .collect();
        let message = slack_message(&long);
        for block in message["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                let max = if block["type"] == "header" {
                    HEADER_MAX
                } else {
                    SECTION_MAX
                };
                assert!(
                    text.chars().count() <= max,
                    "{} chars",
                    text.chars().count()
                );
            }
        }
        assert!(message.to_string().contains("the last 15 of 40"));
    }

    #[test]
    fn the_cloud_event_names_the_incident_and_keeps_its_id_across_attempts() {
        let first = cloud_event(&notice(What::Ended(Phase::Failed)));
        let again = cloud_event(&notice(What::Ended(Phase::Failed)));
        assert_eq!(first, again);
        assert_eq!(first.type_, "dev.opslab.incident.failed");
        assert_eq!(first.id, "u-1.s-1.incident.failed");
        assert_eq!(first.subject, "default/web-down");
        let value = serde_json::to_value(&first).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "dev.opslab.incident.failed");
        assert_eq!(value["data"]["report"]["outcome"], "needs_human");
        assert_eq!(value["data"]["review"]["command"], "opslab show s-1");
        let started = cloud_event(&notice(What::Started));
        assert_eq!(started.type_, "dev.opslab.session.started");
        assert_ne!(started.id, first.id);
    }

    #[test]
    fn a_notice_is_redacted_before_it_is_cut() {
        let redacted = notice(What::Ended(Phase::Resolved)).redacted(&Redactor::default());
        let summary = &redacted.status.report.as_ref().unwrap().summary;
        assert!(!summary.contains("hunter2"), "{summary}");
        assert!(summary.contains("[REDACTED"), "{summary}");
    }

    /// The link a notification carries is a page the console serves: fetched from a console on a
    /// store holding the session, it answers with that session's page (also for an id that needs
    /// escaping in a path).
    #[tokio::test]
    async fn the_review_link_is_a_page_the_console_serves() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::audit::Store::open(dir.path().join("opslab.db").as_path(), Redactor::default())
                .await
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let console = crate::console::Console {
            store: store.clone(),
            shutdown: shutdown.clone(),
        };
        let server = tokio::spawn(crate::console::serve(
            listener,
            console,
            crate::console::Access::Open,
        ));
        for id in ["s-1", "s 2/#?"] {
            store
                .create_session(crate::audit::NewSession {
                    id: id.into(),
                    incident_uid: "uid-1".into(),
                    incident_namespace: "default".into(),
                    incident_name: "web-down".into(),
                    attempt: 1,
                    generation: 1,
                })
                .await
                .unwrap();
            let mut notice = notice(What::Ended(Phase::Resolved));
            notice.session_id = id.into();
            notice.console_url = Some(base.clone());
            let url = notice.review_url().unwrap();
            assert!(url.starts_with(&format!("{base}/ui/sessions/")), "{url}");
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK, "{url}");
            let page = response.text().await.unwrap();
            assert!(
                page.contains("/ui/incidents/default/web-down"),
                "{url}: {page}"
            );
        }
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
