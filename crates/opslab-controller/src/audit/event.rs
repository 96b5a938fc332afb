//! What the audit trail records. Every event belongs to one session and is appended, never changed.
//!
//! The events are also the session's memory: a session resumed after a restart rebuilds its
//! conversation from them (see [`crate::session::history`]), so each carries what that needs.

use serde::{Deserialize, Serialize};

use crate::incident::{IncidentSpec, Outcome, Phase, Report, Requests};
use crate::llm::ContentBlock;

/// The body of one audit event. The variant name (snake_case) is the event's `kind` column.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// The session began: the ticket as the agent first saw it.
    SessionStarted {
        generation: i64,
        spec: IncidentSpec,
        model: String,
        provider: String,
        sandbox_image: String,
        /// The retry and cancel requests the Incident carried: a retry's value says who asked.
        #[serde(default, skip_serializing_if = "Requests::is_empty")]
        requests: Requests,
    },
    /// The sandbox container exists.
    SandboxReady { container_id: String },
    /// A model response, stored before anything in it is acted on.
    LlmResponse {
        turn: u32,
        content: Vec<ContentBlock>,
        stop_reason: Option<String>,
        /// Fresh input; the prompt-cache tokens are apart.
        input_tokens: u64,
        output_tokens: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        cache_write_tokens: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        cache_read_tokens: u64,
        /// Estimated from the controller's cost table when the response arrived.
        #[serde(default)]
        cost_usd: f64,
    },
    /// A model call failed and is tried again after `delay_ms`: retry `retry` of `max_retries`.
    LlmRetrying {
        retry: u32,
        max_retries: u32,
        delay_ms: u64,
        error: String,
    },
    /// A model call failed for good (after retries).
    LlmFailed { message: String },
    /// A command is about to run. Committed before it runs (write-ahead).
    CommandStarted {
        tool_use_id: String,
        command: String,
        reasoning: String,
        timeout_seconds: u64,
    },
    /// A command ended.
    CommandFinished {
        tool_use_id: String,
        exit_code: Option<i64>,
        duration_ms: u64,
        timed_out: bool,
        /// The output (stdout and stderr merged), capped: head and tail kept, the cut stated.
        output: String,
        output_bytes: u64,
        truncated: bool,
    },
    /// A command was started but the controller stopped before it finished. It is never re-run.
    CommandInterrupted { tool_use_id: String, reason: String },
    /// The small model's summary of a command's output, and what it cost: the session that caused
    /// it pays for it (its tokens and spend count in the status and against the budgets).
    OutputSummary {
        tool_use_id: String,
        model: String,
        summary: String,
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
        /// Kept apart from the input, as a turn's are (a server's automatic cache).
        #[serde(default, skip_serializing_if = "is_zero")]
        cache_write_tokens: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        cache_read_tokens: u64,
        #[serde(default)]
        cost_usd: f64,
    },
    /// A tool call the session could not run (unknown tool, bad arguments); the model is told.
    ToolRejected {
        tool_use_id: String,
        tool: String,
        error: String,
    },
    /// The ticket's spec changed while the session ran; the agent is told.
    TicketUpdated { generation: i64, spec: IncidentSpec },
    /// A note for the agent that is not a spec change (the Incident's `opslab.dev/note`, set by a
    /// person or by the alert intake); the agent is told.
    NoteReceived { note: String },
    /// The agent's final report.
    Reported { tool_use_id: String, report: Report },
    /// A call to the Docker API through the sandbox's socket and the proxy's decision (`guarded`
    /// mode), recorded before the call is forwarded. Part of the trail, not of the conversation.
    DockerApi {
        allowed: bool,
        /// The policy's name for the endpoint (`container_restart`, `exec_start`, `other`…).
        action: String,
        method: String,
        /// The path and query as the agent sent them.
        path: String,
        /// The object acted on, as the engine resolved it (`container web`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// Why the call was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The session ended.
    SessionFinished {
        phase: Phase,
        outcome: Option<Outcome>,
        reason: String,
        message: String,
    },
    /// A notification about the session for one receiver: queued, then each attempt to deliver it.
    /// The one kind of event a session takes after it finished (see [`EventBody::after_end`]).
    Notification {
        /// What it tells: `incident.resolved`, `incident.failed`, …, or `session.started`.
        notice: String,
        /// The id the receiver sees (the CloudEvent's `id`), the same on every attempt.
        id: String,
        /// The receiver's name (never its URL, which is a secret).
        receiver: String,
        /// 0 when queued, then 1, 2, … for each attempt.
        attempt: u32,
        outcome: Delivery,
        /// The receiver's HTTP status, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_code: Option<u16>,
        /// Why the attempt failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Where one notification to one receiver stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Accepted for delivery; no attempt yet.
    Queued,
    /// The receiver took it (a 2xx answer).
    Delivered,
    /// This attempt failed; another follows after a backoff.
    Retrying,
    /// This attempt failed and no other follows: the attempts ran out or the answer was final.
    Failed,
    /// Not sent: the controller's notification queue was full.
    Dropped,
}

impl Delivery {
    /// Whether nothing more happens to the notification after this.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Delivery::Delivered | Delivery::Failed | Delivery::Dropped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Delivered => "delivered",
            Delivery::Retrying => "retrying",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        }
    }
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Tokens and estimated dollars spent by a model call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
}

impl EventBody {
    /// What the event's model call (a turn or a summary) spent; nothing for other events.
    pub fn spend(&self) -> Spend {
        match *self {
            EventBody::LlmResponse {
                input_tokens,
                output_tokens,
                cache_write_tokens,
                cache_read_tokens,
                cost_usd,
                ..
            }
            | EventBody::OutputSummary {
                input_tokens,
                output_tokens,
                cache_write_tokens,
                cache_read_tokens,
                cost_usd,
                ..
            } => Spend {
                input_tokens,
                output_tokens,
                cache_write_tokens,
                cache_read_tokens,
                cost_usd,
            },
            _ => Spend::default(),
        }
    }

    /// What the session's `message` says while a model call is retried.
    pub fn retrying_message(retry: u32, max_retries: u32, delay_ms: u64, error: &str) -> String {
        format!(
            "waiting for the model API: retry {retry} of {max_retries} in {:.1} s, after: {error}",
            delay_ms as f64 / 1000.0
        )
    }

    /// A notification's attempt in one line, as the CLI and the console show it; None for other
    /// events.
    pub fn notification_line(&self) -> Option<String> {
        let EventBody::Notification {
            notice,
            receiver,
            attempt,
            outcome,
            status_code,
            ..
        } = self
        else {
            return None;
        };
        let attempt = match attempt {
            0 => String::new(),
            n => format!(", attempt {n}"),
        };
        let status = status_code.map_or_else(String::new, |code| format!(" (HTTP {code})"));
        Some(format!(
            "notification {notice} to {receiver}{attempt}: {}{status}",
            outcome.as_str()
        ))
    }

    /// Whether the event may follow the session's end: what was sent about a session is part of
    /// its trail, and is sent once it has ended.
    pub fn after_end(&self) -> bool {
        matches!(self, EventBody::Notification { .. })
    }

    /// The `kind` column of the event.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionStarted { .. } => "session_started",
            EventBody::SandboxReady { .. } => "sandbox_ready",
            EventBody::LlmResponse { .. } => "llm_response",
            EventBody::LlmRetrying { .. } => "llm_retrying",
            EventBody::LlmFailed { .. } => "llm_failed",
            EventBody::CommandStarted { .. } => "command_started",
            EventBody::CommandFinished { .. } => "command_finished",
            EventBody::CommandInterrupted { .. } => "command_interrupted",
            EventBody::OutputSummary { .. } => "output_summary",
            EventBody::ToolRejected { .. } => "tool_rejected",
            EventBody::TicketUpdated { .. } => "ticket_updated",
            EventBody::NoteReceived { .. } => "note_received",
            EventBody::Reported { .. } => "reported",
            EventBody::DockerApi { .. } => "docker_api",
            EventBody::SessionFinished { .. } => "session_finished",
            EventBody::Notification { .. } => "notification",
        }
    }
}

/// One stored event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub session_id: String,
    /// 1, 2, 3, … within the session, with no gaps.
    pub seq: i64,
    /// Stored (and hashed) as its RFC 3339 text in UTC, which parses back to the same text.
    pub at: jiff::Timestamp,
    #[serde(flatten)]
    pub body: EventBody,
    /// Hex SHA-256 of the previous event's hash and this event's (redacted) content.
    pub hash: String,
}

/// Events for the tests of the modules that show them.
#[cfg(test)]
pub mod fixtures {
    use super::{Event, EventBody};

    /// An event of session `s-1` at an RFC 3339 time.
    pub fn event(seq: i64, at: &str, body: EventBody) -> Event {
        Event {
            session_id: "s-1".into(),
            seq,
            at: at.parse().unwrap(),
            body,
            hash: String::new(),
        }
    }

    pub fn command_started(seq: i64, at: &str, id: &str, command: &str) -> Event {
        let body = EventBody::CommandStarted {
            tool_use_id: id.into(),
            command: command.into(),
            reasoning: "r".into(),
            timeout_seconds: 60,
        };
        event(seq, at, body)
    }

    /// A command that exited with `code` after `duration_ms`, printing nothing.
    pub fn command_finished(seq: i64, at: &str, id: &str, code: i64, duration_ms: u64) -> Event {
        let body = EventBody::CommandFinished {
            tool_use_id: id.into(),
            exit_code: Some(code),
            duration_ms,
            timed_out: false,
            output: String::new(),
            output_bytes: 0,
            truncated: false,
        };
        event(seq, at, body)
    }
}
