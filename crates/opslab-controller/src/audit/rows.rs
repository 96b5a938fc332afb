//! What both backends share about rows: statements as data (SQL written once, SQLite's `?N`
//! placeholders, renumbered for PostgreSQL), the typed parameters they carry, and the decoding of
//! rows into records, over a small column-reading trait each driver implements.

use std::borrow::Cow;

use super::chain::Link;
use super::{
    CommandRecord, Draft, Event, IncidentContent, IncidentRecord, IntakeEvent, SessionRecord,
    SessionState, StoreError, StoredIncident,
};
use crate::incident::Requests;

/// A statement parameter. Typed even when null: PostgreSQL checks each parameter's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Integer(Option<i64>),
    Real(f64),
    Bool(bool),
}

impl From<&str> for Param {
    fn from(value: &str) -> Param {
        Param::Text(Some(value.to_string()))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Param {
        Param::Text(Some(value))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Param {
        Param::Text(value)
    }
}

/// A time as the store keeps it: its RFC 3339 text (which parses back to the same text).
impl From<jiff::Timestamp> for Param {
    fn from(value: jiff::Timestamp) -> Param {
        Param::Text(Some(value.to_string()))
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Param {
        Param::Integer(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Param {
        Param::Integer(value)
    }
}

impl From<f64> for Param {
    fn from(value: f64) -> Param {
        Param::Real(value)
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Param {
        Param::Bool(value)
    }
}

/// One SQL statement with its parameters, in the dialect both engines read (`?1`, `?2`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: Cow<'static, str>,
    pub params: Vec<Param>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>, params: Vec<Param>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// `?N` placeholders as PostgreSQL's `$N`. The statements hold no `?` in literals.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A row decoder: the store writes one for each query, the backend runs it on each row.
pub(super) type Decode<T> = fn(&dyn Columns) -> Result<T, StoreError>;

/// Reads one row's columns by index; each driver implements it.
pub trait Columns {
    fn text(&self, index: usize) -> Result<String, StoreError>;
    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError>;
    fn integer(&self, index: usize) -> Result<i64, StoreError>;
    fn optional_integer(&self, index: usize) -> Result<Option<i64>, StoreError>;
    fn real(&self, index: usize) -> Result<f64, StoreError>;
}

const SESSION_COLUMNS: &str = "id, incident_uid, incident_namespace, incident_name, attempt, generation, \
     state, phase, outcome, reason, started_at, finished_at, turns, commands, input_tokens, \
     output_tokens, report, cost_usd, message, retry_request, cancel_request, cache_write_tokens, \
     cache_read_tokens";

const INCIDENT_COLUMNS: &str =
    "namespace, name, uid, generation, spec_hash, source, incident, error, updated_at";

/// The sessions matching `filter` (a `WHERE` clause, or nothing), newest first.
pub fn sessions_query(filter: &str) -> String {
    format!("SELECT {SESSION_COLUMNS} FROM sessions {filter} ORDER BY started_at DESC, id DESC")
}
pub const EVENTS_AFTER: &str = "SELECT session_id, seq, at, body, hash FROM events \
     WHERE session_id = ?1 AND seq > ?2 ORDER BY seq";
/// A session's draft, replaced whole (columns `session_id, turn, text, at`).
/// A session's draft, replaced whole, after the session's head (`?1` session, `?2` turn, `?3`
/// text, `?4` at).
pub const PUT_DRAFT: &str = "INSERT INTO drafts (session_id, after_seq, turn, text, at) \
     SELECT id, head_seq, CAST(?2 AS BIGINT), CAST(?3 AS TEXT), CAST(?4 AS TEXT) FROM sessions WHERE id = ?1 \
     ON CONFLICT (session_id) DO UPDATE SET after_seq = excluded.after_seq, turn = excluded.turn, \
     text = excluded.text, at = excluded.at";
pub const DRAFT: &str =
    "SELECT session_id, after_seq, turn, text, at FROM drafts WHERE session_id = ?1";
pub const CLEAR_DRAFT: &str = "DELETE FROM drafts WHERE session_id = ?1";
pub const EVENTS_OF_KIND: &str = "SELECT session_id, seq, at, body, hash FROM events \
     WHERE session_id = ?1 AND kind = ?2 ORDER BY seq";
pub const COMMANDS: &str = "SELECT tool_use_id, command, state, exit_code, finished_at FROM commands \
     WHERE session_id = ?1 ORDER BY started_seq";
pub const LAST_COMMAND: &str = "SELECT tool_use_id, command, state, exit_code, finished_at FROM commands \
     WHERE session_id = ?1 ORDER BY started_seq DESC LIMIT 1";
/// The incidents matching `filter` (a `WHERE` clause, or nothing), by namespace and name.
pub fn incidents_query(filter: &str) -> String {
    format!("SELECT {INCIDENT_COLUMNS} FROM incidents {filter} ORDER BY namespace, name")
}
pub const PUT_INCIDENT: &str = "INSERT INTO incidents (namespace, name, uid, generation, spec_hash, source, \
     incident, error, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, generation = excluded.generation, \
     spec_hash = excluded.spec_hash, source = excluded.source, incident = excluded.incident, \
     error = excluded.error, updated_at = excluded.updated_at";
pub const INTAKE_EVENTS: &str = "SELECT at, producer, decision, reason, alert_group, incident, message \
     FROM intake_events ORDER BY id";
pub const DELETE_INCIDENT: &str = "DELETE FROM incidents WHERE namespace = ?1 AND name = ?2";
pub const CREATE_SESSION: &str = "INSERT INTO sessions (id, incident_uid, incident_namespace, incident_name, \
     attempt, generation, state, phase, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8)";
/// The recorded head, for `verify`.
pub const RECORDED_HEAD: &str = "SELECT head_seq, head_hash FROM sessions WHERE id = ?1";
pub const PING: &str = "SELECT 1";

/// A serde enum (`Investigating`, `needs_human`) from its column value.
fn enum_from_text<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &'static str,
    text: String,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text)).map_err(|error| StoreError::Row {
        table,
        message: format!("{column}: {error}"),
    })
}

/// A time column's value, written as RFC 3339 text.
fn timestamp(
    table: &'static str,
    column: &'static str,
    text: String,
) -> Result<jiff::Timestamp, StoreError> {
    text.parse().map_err(|error| StoreError::Row {
        table,
        message: format!("{column}: {text:?} is not a time: {error}"),
    })
}

/// The `state` column.
pub fn session_state(text: String) -> Result<SessionState, StoreError> {
    enum_from_text("sessions", "state", text)
}

/// A non-negative count column.
fn count<T: TryFrom<i64>>(
    row: &dyn Columns,
    index: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    let value = row.integer(index)?;
    T::try_from(value).map_err(|_| StoreError::Row {
        table: "sessions",
        message: format!("{column}: {value} is out of range"),
    })
}

/// A row of [`SESSION_COLUMNS`].
pub fn session(row: &dyn Columns) -> Result<SessionRecord, StoreError> {
    let report = row
        .optional_text(16)?
        .map(|report| serde_json::from_str(&report))
        .transpose()
        .map_err(|error| StoreError::Row {
            table: "sessions",
            message: format!("report: {error}"),
        })?;
    Ok(SessionRecord {
        id: row.text(0)?,
        incident_uid: row.text(1)?,
        incident_namespace: row.text(2)?,
        incident_name: row.text(3)?,
        attempt: count(row, 4, "attempt")?,
        generation: row.integer(5)?,
        state: session_state(row.text(6)?)?,
        phase: enum_from_text("sessions", "phase", row.text(7)?)?,
        outcome: row
            .optional_text(8)?
            .map(|outcome| enum_from_text("sessions", "outcome", outcome))
            .transpose()?,
        reason: row.optional_text(9)?,
        started_at: timestamp("sessions", "started_at", row.text(10)?)?,
        finished_at: row
            .optional_text(11)?
            .map(|finished| timestamp("sessions", "finished_at", finished))
            .transpose()?,
        turns: count(row, 12, "turns")?,
        commands: count(row, 13, "commands")?,
        input_tokens: count(row, 14, "input_tokens")?,
        output_tokens: count(row, 15, "output_tokens")?,
        cache_write_tokens: count(row, 21, "cache_write_tokens")?,
        cache_read_tokens: count(row, 22, "cache_read_tokens")?,
        report,
        cost_usd: row.real(17)?,
        message: row.optional_text(18)?,
        requests: Requests {
            retry: row.optional_text(19)?,
            cancel: row.optional_text(20)?,
        },
    })
}

/// A row of `session_id, after_seq, turn, text, at` from `drafts`.
pub fn draft(row: &dyn Columns) -> Result<Draft, StoreError> {
    Ok(Draft {
        session_id: row.text(0)?,
        after_seq: row.integer(1)?,
        turn: u32::try_from(row.integer(2)?).unwrap_or(0),
        text: row.text(3)?,
        at: timestamp("drafts", "at", row.text(4)?)?,
    })
}

/// A row of `session_id, seq, at, body, hash` from `events`.
pub fn event(row: &dyn Columns) -> Result<Event, StoreError> {
    let session_id = row.text(0)?;
    let seq = row.integer(1)?;
    let body = row.text(3)?;
    let corrupt = |message: String| StoreError::Corrupt {
        session: session_id.clone(),
        seq,
        message,
    };
    let at = row.text(2)?;
    let at = at
        .parse()
        .map_err(|error| corrupt(format!("the event time {at:?} is not a time: {error}")))?;
    let body = serde_json::from_str(&body)
        .map_err(|error| corrupt(format!("the event body does not decode: {error}")))?;
    Ok(Event {
        session_id,
        seq,
        at,
        body,
        hash: row.text(4)?,
    })
}

/// A row of `seq, at, kind, body, hash` from `events`, as the chain check reads it: as stored
/// text, byte for byte, since that is what was hashed.
pub fn link(row: &dyn Columns) -> Result<Link, StoreError> {
    Ok(Link {
        seq: row.integer(0)?,
        at: row.text(1)?,
        kind: row.text(2)?,
        body: row.text(3)?,
        hash: row.text(4)?,
    })
}

/// A row of `seq, hash`: a chain head.
pub fn head(row: &dyn Columns) -> Result<(i64, String), StoreError> {
    Ok((row.integer(0)?, row.text(1)?))
}

pub fn command(row: &dyn Columns) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        tool_use_id: row.text(0)?,
        command: row.text(1)?,
        state: enum_from_text("commands", "state", row.text(2)?)?,
        exit_code: row.optional_integer(3)?,
        finished_at: row
            .optional_text(4)?
            .map(|finished| timestamp("commands", "finished_at", finished))
            .transpose()?,
    })
}

/// A row of the incident columns. A manifest problem is the row with an error: it has no uid,
/// generation, spec hash or object (see [`incident_params`]).
pub fn incident(row: &dyn Columns) -> Result<IncidentRecord, StoreError> {
    let content = match row.optional_text(7)? {
        Some(error) => IncidentContent::Problem { error },
        None => IncidentContent::Incident(StoredIncident {
            uid: row.text(2)?,
            generation: row.integer(3)?,
            spec_hash: row.text(4)?,
            incident: serde_json::from_str(&row.text(6)?).map_err(|error| StoreError::Row {
                table: "incidents",
                message: format!("incident: {error}"),
            })?,
        }),
    };
    Ok(IncidentRecord {
        namespace: row.text(0)?,
        name: row.text(1)?,
        source: row.text(5)?,
        content,
        updated_at: timestamp("incidents", "updated_at", row.text(8)?)?,
    })
}

/// The parameters of [`PUT_INCIDENT`] for a record whose object is already redacted, in column order.
pub fn incident_params(record: IncidentRecord) -> Result<Vec<Param>, StoreError> {
    let (uid, generation, spec_hash, incident, error) = match record.content {
        IncidentContent::Incident(stored) => (
            stored.uid,
            stored.generation,
            stored.spec_hash,
            serde_json::to_string(&stored.incident)?,
            None,
        ),
        IncidentContent::Problem { error } => (
            String::new(),
            0,
            String::new(),
            "null".to_string(),
            Some(error),
        ),
    };
    Ok(vec![
        record.namespace.into(),
        record.name.into(),
        uid.into(),
        generation.into(),
        spec_hash.into(),
        record.source.into(),
        incident.into(),
        error.into(),
        record.updated_at.to_string().into(),
    ])
}

/// A row of the intake_events columns.
pub fn intake_event(row: &dyn Columns) -> Result<IntakeEvent, StoreError> {
    intake_columns(row, |at| timestamp("intake_events", "at", at))
}

/// A row of the intake_events columns, its time as `at` makes it of the stored text.
pub fn intake_columns<At>(
    row: &dyn Columns,
    at: impl FnOnce(String) -> Result<At, StoreError>,
) -> Result<IntakeEvent<At>, StoreError> {
    Ok(IntakeEvent {
        at: at(row.text(0)?)?,
        producer: row.text(1)?,
        decision: enum_from_text("intake_events", "decision", row.text(2)?)?,
        reason: row.optional_text(3)?,
        alert_group: row.optional_text(4)?,
        incident: row.optional_text(5)?,
        message: row.text(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        assert_eq!(
            postgres_placeholders("UPDATE t SET a = ?2, b = ?10 WHERE id = ?1 AND c = 'x'"),
            "UPDATE t SET a = $2, b = $10 WHERE id = $1 AND c = 'x'"
        );
    }
}
