//! The rules of an append, shared by every backend and free of I/O: redaction before hashing, the
//! next sequence number, the chained hash, and the statements that store the event and update the
//! projections. A backend only locks the session, reads its head, runs the statements, and commits.

use super::chain;
use super::event::Spend;
use super::rows::{self, Columns, Param, Statement};
use super::{Event, EventBody, Redactor, SessionState, StoreError};
use crate::incident::{Outcome, Phase};

/// The session's chain head, read under the backend's lock (columns `state, head_seq, head_hash`).
pub const HEAD: &str = "SELECT state, head_seq, head_hash FROM sessions WHERE id = ?1";

/// An event ready to be chained: redacted, and encoded as it will be hashed and stored.
pub struct Pending {
    pub session_id: String,
    body: EventBody,
    text: String,
}

impl Pending {
    /// The event as it will be stored: redacted.
    pub fn body(&self) -> &EventBody {
        &self.body
    }
}

/// Redacts the body; what is stored, hashed and returned is the redacted form.
pub fn prepare(
    redactor: &Redactor,
    session_id: &str,
    body: EventBody,
) -> Result<Pending, StoreError> {
    let mut value = serde_json::to_value(&body)?;
    redactor.redact_json(&mut value);
    let text = serde_json::to_string(&value)?;
    let body = serde_json::from_value(value)?;
    Ok(Pending {
        session_id: session_id.to_string(),
        body,
        text,
    })
}

/// The session's state and chain head.
pub struct Head {
    state: SessionState,
    seq: i64,
    hash: String,
}

pub fn head(row: &dyn Columns) -> Result<Head, StoreError> {
    Ok(Head {
        state: rows::session_state(row.text(0)?)?,
        seq: row.integer(1)?,
        hash: row.text(2)?,
    })
}

/// Chains the event after `head` (None: no such session) at time `at`: the event, and the
/// statements that store it, project it and move the head, to run in order in one transaction.
/// The time is hashed and stored as its RFC 3339 text, which parses back to the same `at`.
pub fn link(
    pending: Pending,
    head: Option<Head>,
    at: jiff::Timestamp,
) -> Result<(Event, Vec<Statement>), StoreError> {
    let Pending {
        session_id,
        body,
        text,
    } = pending;
    let head = head.ok_or_else(|| StoreError::UnknownSession(session_id.clone()))?;
    if head.state != SessionState::Running && !body.after_end() {
        return Err(StoreError::SessionClosed(session_id));
    }
    let seq = head.seq + 1;
    let stored_at = at.to_string();
    let hash = chain::link_hash(&head.hash, &session_id, seq, &stored_at, &text);
    let mut statements = vec![Statement::new(
        "INSERT INTO events (session_id, seq, at, kind, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        vec![
            session_id.as_str().into(),
            seq.into(),
            stored_at.as_str().into(),
            body.kind().into(),
            text.into(),
            hash.as_str().into(),
        ],
    )];
    statements.extend(project(&session_id, seq, &stored_at, &body)?);
    statements.push(Statement::new(
        "UPDATE sessions SET head_seq = ?2, head_hash = ?3 WHERE id = ?1",
        vec![session_id.as_str().into(), seq.into(), hash.as_str().into()],
    ));
    // Whatever was being streamed before this event is either in it or abandoned.
    statements.push(Statement::new(
        rows::CLEAR_DRAFT,
        vec![session_id.as_str().into()],
    ));
    Ok((
        Event {
            session_id,
            seq,
            at,
            body,
            hash,
        },
        statements,
    ))
}

/// The projection updates (sessions, commands) one event makes, inside its append transaction.
fn project(
    session_id: &str,
    seq: i64,
    at: &str,
    body: &EventBody,
) -> Result<Vec<Statement>, StoreError> {
    let event = Appended {
        session: session_id.into(),
        seq,
        at,
    };
    let session = event.session.clone();
    Ok(match body {
        EventBody::CommandStarted {
            tool_use_id,
            command,
            reasoning,
            ..
        } => command_started(&event, tool_use_id, command, reasoning),
        EventBody::CommandFinished {
            tool_use_id,
            exit_code,
            duration_ms,
            timed_out,
            ..
        } => vec![command_finished(
            &event,
            tool_use_id,
            *exit_code,
            *duration_ms,
            *timed_out,
        )],
        EventBody::CommandInterrupted { tool_use_id, .. } => {
            vec![command_interrupted(&event, tool_use_id)]
        }
        EventBody::OutputSummary {
            tool_use_id,
            summary,
            ..
        } => summary_written(session, tool_use_id, summary, &body.spend()),
        EventBody::LlmResponse { .. } => vec![turn_taken(session, &body.spend())],
        EventBody::Reported { report, .. } => vec![Statement::new(
            "UPDATE sessions SET report = ?2 WHERE id = ?1",
            vec![session, serde_json::to_string(report)?.into()],
        )],
        EventBody::TicketUpdated { generation, .. } => vec![Statement::new(
            "UPDATE sessions SET generation = ?2 WHERE id = ?1",
            vec![session, (*generation).into()],
        )],
        EventBody::SessionFinished {
            phase,
            outcome,
            reason,
            message,
        } => vec![session_finished(&event, *phase, *outcome, reason, message)?],
        EventBody::SessionStarted { requests, .. } => vec![Statement::new(
            "UPDATE sessions SET retry_request = ?2, cancel_request = ?3 WHERE id = ?1",
            vec![
                session,
                requests.retry.clone().into(),
                requests.cancel.clone().into(),
            ],
        )],
        EventBody::LlmRetrying {
            retry,
            max_retries,
            delay_ms,
            error,
        } => vec![Statement::new(
            "UPDATE sessions SET message = ?2 WHERE id = ?1",
            vec![
                session,
                EventBody::retrying_message(*retry, *max_retries, *delay_ms, error).into(),
            ],
        )],
        EventBody::SandboxReady { .. }
        | EventBody::Notification { .. }
        | EventBody::DockerApi { .. }
        | EventBody::LlmFailed { .. }
        | EventBody::ToolRejected { .. }
        | EventBody::NoteReceived { .. } => vec![],
    })
}

/// Where an event was appended: its session (as a parameter), its number and time.
struct Appended<'a> {
    session: Param,
    seq: i64,
    at: &'a str,
}

impl Spend {
    /// The session's id, then the parameters ?2 to ?6 of the statements that add up spend.
    fn params(&self, session: Param) -> Vec<Param> {
        vec![
            session,
            saturating_i64(self.input_tokens).into(),
            saturating_i64(self.output_tokens).into(),
            self.cost_usd.into(),
            saturating_i64(self.cache_write_tokens).into(),
            saturating_i64(self.cache_read_tokens).into(),
        ]
    }
}

/// A new command row, and one more command in the session's count.
fn command_started(
    event: &Appended<'_>,
    tool_use_id: &str,
    command: &str,
    reasoning: &str,
) -> Vec<Statement> {
    vec![
        Statement::new(
            "INSERT INTO commands (session_id, tool_use_id, command, reasoning, state, started_seq, started_at) \
             VALUES (?1, ?2, ?3, ?4, 'started', ?5, ?6)",
            vec![
                event.session.clone(),
                tool_use_id.into(),
                command.into(),
                reasoning.into(),
                event.seq.into(),
                event.at.into(),
            ],
        ),
        Statement::new(
            "UPDATE sessions SET commands = commands + 1 WHERE id = ?1",
            vec![event.session.clone()],
        ),
    ]
}

fn command_finished(
    event: &Appended<'_>,
    tool_use_id: &str,
    exit_code: Option<i64>,
    duration_ms: u64,
    timed_out: bool,
) -> Statement {
    Statement::new(
        "UPDATE commands SET state = 'finished', exit_code = ?3, duration_ms = ?4, timed_out = ?5, \
         finished_seq = ?6, finished_at = ?7 WHERE session_id = ?1 AND tool_use_id = ?2 AND state = 'started'",
        vec![
            event.session.clone(),
            tool_use_id.into(),
            exit_code.into(),
            saturating_i64(duration_ms).into(),
            timed_out.into(),
            event.seq.into(),
            event.at.into(),
        ],
    )
}

fn command_interrupted(event: &Appended<'_>, tool_use_id: &str) -> Statement {
    Statement::new(
        "UPDATE commands SET state = 'interrupted', finished_seq = ?3, finished_at = ?4 \
         WHERE session_id = ?1 AND tool_use_id = ?2 AND state = 'started'",
        vec![
            event.session.clone(),
            tool_use_id.into(),
            event.seq.into(),
            event.at.into(),
        ],
    )
}

/// The summary on the command's newest run, and what it cost on the session.
fn summary_written(
    session: Param,
    tool_use_id: &str,
    summary: &str,
    spend: &Spend,
) -> Vec<Statement> {
    vec![
        Statement::new(
            "UPDATE commands SET summary = ?3 WHERE session_id = ?1 AND started_seq = \
             (SELECT MAX(started_seq) FROM commands WHERE session_id = ?1 AND tool_use_id = ?2)",
            vec![session.clone(), tool_use_id.into(), summary.into()],
        ),
        Statement::new(
            "UPDATE sessions SET input_tokens = input_tokens + ?2, \
             output_tokens = output_tokens + ?3, cost_usd = cost_usd + ?4, \
             cache_write_tokens = cache_write_tokens + ?5, \
             cache_read_tokens = cache_read_tokens + ?6 WHERE id = ?1",
            spend.params(session),
        ),
    ]
}

/// One more turn and its spend; a message about retries is over.
fn turn_taken(session: Param, spend: &Spend) -> Statement {
    Statement::new(
        "UPDATE sessions SET turns = turns + 1, input_tokens = input_tokens + ?2, \
         output_tokens = output_tokens + ?3, cost_usd = cost_usd + ?4, message = NULL, \
         cache_write_tokens = cache_write_tokens + ?5, \
         cache_read_tokens = cache_read_tokens + ?6 WHERE id = ?1",
        spend.params(session),
    )
}

fn session_finished(
    event: &Appended<'_>,
    phase: Phase,
    outcome: Option<Outcome>,
    reason: &str,
    message: &str,
) -> Result<Statement, StoreError> {
    Ok(Statement::new(
        "UPDATE sessions SET state = 'finished', phase = ?2, outcome = ?3, reason = ?4, finished_at = ?5, \
         message = ?6 WHERE id = ?1",
        vec![
            event.session.clone(),
            enum_text(&phase)?.into(),
            outcome.as_ref().map(enum_text).transpose()?.into(),
            reason.into(),
            event.at.into(),
            message.into(),
        ],
    ))
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An enum's serde name (`Investigating`, `needs_human`) as a column value.
pub fn enum_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(text) => Ok(text),
        other => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Phase;

    fn running(seq: i64, hash: &str) -> Option<Head> {
        Some(Head {
            state: SessionState::Running,
            seq,
            hash: hash.into(),
        })
    }

    /// A time with a fraction of a second, as appends have.
    fn at() -> jiff::Timestamp {
        "2026-01-02T03:04:05.123456789Z".parse().unwrap()
    }

    fn command() -> EventBody {
        EventBody::CommandStarted {
            tool_use_id: "t1".into(),
            command: "curl -H 'x-api-key: sk-ant-api03-SECRETSECRETSECRET' http://x".into(),
            reasoning: "look".into(),
            timeout_seconds: 5,
        }
    }

    #[test]
    fn an_event_is_redacted_numbered_and_chained_after_the_head() {
        let pending = prepare(&Redactor::default(), "s", command()).unwrap();
        let (event, statements) = link(pending, running(4, "h4"), at()).unwrap();
        assert_eq!(event.seq, 5);
        assert_eq!(event.at, at());
        let EventBody::CommandStarted { command, .. } = &event.body else {
            panic!("{:?}", event.body)
        };
        assert!(command.contains("[REDACTED:anthropic-key]"), "{command}");
        // The hash covers the stored text, as stored.
        let Param::Text(Some(stored)) = &statements[0].params[4] else {
            panic!("{:?}", statements[0].params)
        };
        let time = "2026-01-02T03:04:05.123456789Z";
        assert_eq!(statements[0].params[2], time.into());
        assert_eq!(event.hash, chain::link_hash("h4", "s", 5, time, stored));
        assert_eq!(
            serde_json::from_str::<EventBody>(stored).unwrap(),
            event.body
        );
        // Stored, projected (the command row, the session's count), and the head moved.
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_ref()).collect();
        assert!(sql[0].starts_with("INSERT INTO events"));
        assert!(sql[1].starts_with("INSERT INTO commands"));
        assert!(sql[2].contains("commands = commands + 1"));
        assert_eq!(
            statements[3].params,
            vec!["s".into(), 5i64.into(), event.hash.as_str().into()]
        );
    }

    #[test]
    fn unknown_and_finished_sessions_take_no_event() {
        let pending = || prepare(&Redactor::default(), "s", command()).unwrap();
        let error = link(pending(), None, at()).err().unwrap();
        assert_eq!(error.to_string(), "no session s in the store");
        let finished = Head {
            state: SessionState::Finished,
            seq: 3,
            hash: "h".into(),
        };
        let error = link(pending(), Some(finished), at()).err().unwrap();
        assert!(error.to_string().contains("has finished"), "{error}");
    }

    #[test]
    fn a_finished_session_takes_notifications_only() {
        let finished = || {
            Some(Head {
                state: SessionState::Finished,
                seq: 7,
                hash: "h7".into(),
            })
        };
        let body = EventBody::Notification {
            notice: "incident.resolved".into(),
            id: "s.resolved".into(),
            receiver: "slack".into(),
            attempt: 1,
            outcome: crate::audit::Delivery::Delivered,
            status_code: Some(200),
            error: None,
        };
        let pending = prepare(&Redactor::default(), "s", body).unwrap();
        let (event, statements) = link(pending, finished(), at()).unwrap();
        assert_eq!(event.seq, 8);
        // Stored, chained and any draft cleared, with no projection: the session stays as it ended.
        assert_eq!(statements.len(), 3);
        let pending = prepare(&Redactor::default(), "s", command()).unwrap();
        assert!(link(pending, finished(), at()).is_err());
    }

    #[test]
    fn the_end_of_a_session_is_projected_with_its_phase_name() {
        let body = EventBody::SessionFinished {
            phase: Phase::Resolved,
            outcome: None,
            reason: "Reported".into(),
            message: "ok".into(),
        };
        let pending = prepare(&Redactor::default(), "s", body).unwrap();
        let (_, statements) = link(pending, running(0, ""), at()).unwrap();
        assert_eq!(
            statements[1].params,
            vec![
                "s".into(),
                "Resolved".into(),
                Param::Text(None),
                "Reported".into(),
                "2026-01-02T03:04:05.123456789Z".into(),
                "ok".into()
            ]
        );
    }

    /// What storing an event's time as text rests on: the text an append writes (and hashes)
    /// parses back to the same time, which writes the same text again, byte for byte; and the
    /// JSON form is that text too.
    #[test]
    fn a_time_round_trips_through_its_stored_text_byte_for_byte() {
        let mut times: Vec<jiff::Timestamp> = [
            "2026-12-06T10:00:00Z",
            "2026-12-06T10:00:00.5Z",
            "2026-12-06T10:00:00.120Z",
            "2026-12-06T10:00:00.123Z",
            "2026-12-06T10:00:00.000123Z",
            "2026-12-06T10:00:00.123456Z",
            "2026-12-06T10:00:00.000000001Z",
            "2026-12-06T10:00:00.123456789Z",
            "2026-12-06T10:00:00.999999999Z",
            "2024-02-29T23:59:59.9Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        times.extend([
            jiff::Timestamp::MIN,
            jiff::Timestamp::MAX,
            jiff::Timestamp::now(),
        ]);
        // Spread over seconds and every precision of the fraction.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let second = 1_700_000_000 + (state >> 40) as i64;
            let nanos = (state % 1_000_000_000) as i32;
            let nanos = match state % 4 {
                0 => 0,
                1 => nanos / 1_000_000 * 1_000_000,
                2 => nanos / 1_000 * 1_000,
                _ => nanos,
            };
            times.push(jiff::Timestamp::new(second, nanos).unwrap());
        }
        for time in times {
            let text = time.to_string();
            let parsed: jiff::Timestamp = text.parse().unwrap();
            assert_eq!(parsed, time, "{text}");
            assert_eq!(parsed.to_string(), text);
            assert_eq!(serde_json::to_string(&time).unwrap(), format!("\"{text}\""));
        }
    }
}
