//! The SQLite backend. One connection per `Store`, used from blocking threads; writes are
//! `BEGIN IMMEDIATE` transactions, so writers queue on the database lock instead of failing mid-way,
//! and several processes (the controller, the CLI) share the file through WAL.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use super::chain::{self, Link};
use super::{
    ChainCheck, CommandRecord, Event, EventBody, IncidentRecord, NewSession, Redactor,
    SessionRecord, StoreError,
};
use crate::incident::{Outcome, Phase, Report};

/// Numbered migrations, embedded in the binary.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_init.sql")),
    M::up(include_str!("migrations/0002_session_cost.sql")),
];

const SESSION_COLUMNS: &str = "id, incident_uid, incident_namespace, incident_name, attempt, generation, \
     state, phase, outcome, reason, started_at, finished_at, turns, commands, input_tokens, \
     output_tokens, report, cost_usd";

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Mutex<Connection>,
    redactor: Redactor,
    /// `<store>.anchors`: every chain head, appended after its commit. The store's own rows cannot
    /// rewrite it, so a trail cut short together with its session row is still found.
    anchors: Mutex<std::fs::File>,
    anchors_path: std::path::PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub async fn open(path: &Path, redactor: Redactor) -> Result<Store, StoreError> {
        let path = path.to_path_buf();
        let anchors = anchors_path(&path);
        let anchors_file = anchors.clone();
        let (connection, anchors_file) = tokio::task::spawn_blocking(move || {
            let connection = open_connection(&path)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&anchors_file)
                .map_err(|source| StoreError::Io {
                    path: anchors_file.clone(),
                    source,
                })?;
            Ok::<_, StoreError>((connection, file))
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))??;
        Ok(Store {
            inner: Arc::new(Inner {
                connection: Mutex::new(connection),
                redactor,
                anchors: Mutex::new(anchors_file),
                anchors_path: anchors,
            }),
        })
    }

    /// Runs `work` on the connection in a blocking thread.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Redactor) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another call leaves the connection usable: SQLite rolled back.
            let mut connection = inner
                .connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut connection, &inner.redactor)
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))?
    }

    pub async fn create_session(&self, new: NewSession) -> Result<SessionRecord, StoreError> {
        let id = new.id.clone();
        self.with(move |connection, _| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute(
                "INSERT INTO sessions (id, incident_uid, incident_namespace, incident_name, attempt, \
                 generation, state, phase, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8)",
                params![
                    new.id,
                    new.incident_uid,
                    new.incident_namespace,
                    new.incident_name,
                    new.attempt,
                    new.generation,
                    text(&Phase::Investigating)?,
                    jiff::Timestamp::now().to_string(),
                ],
            )?;
            transaction.commit()?;
            Ok(())
        })
        .await?;
        self.session(&id)
            .await?
            .ok_or(StoreError::UnknownSession(id))
    }

    /// Appends one event: redacted, numbered, chained, and projected, in one transaction.
    pub async fn append(&self, session_id: &str, body: EventBody) -> Result<Event, StoreError> {
        let session_id = session_id.to_string();
        let event = self.with(move |connection, redactor| {
            let mut value = serde_json::to_value(&body)?;
            redactor.redact_json(&mut value);
            let body_text = serde_json::to_string(&value)?;
            let body: EventBody = serde_json::from_value(value)?;

            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let head: Option<(String, i64, String)> = transaction
                .query_row(
                    "SELECT state, head_seq, head_hash FROM sessions WHERE id = ?1",
                    [&session_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let (state, head_seq, head_hash) =
                head.ok_or_else(|| StoreError::UnknownSession(session_id.clone()))?;
            if state != "running" {
                return Err(StoreError::SessionClosed(session_id));
            }
            let seq = head_seq + 1;
            let at = jiff::Timestamp::now().to_string();
            let hash = chain::link_hash(&head_hash, &session_id, seq, &at, &body_text);
            transaction.execute(
                "INSERT INTO events (session_id, seq, at, kind, body, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![session_id, seq, at, body.kind(), body_text, hash],
            )?;
            project(&transaction, &session_id, seq, &at, &body)?;
            transaction.execute(
                "UPDATE sessions SET head_seq = ?2, head_hash = ?3 WHERE id = ?1",
                params![session_id, seq, hash],
            )?;
            transaction.commit()?;
            Ok(Event {
                session_id,
                seq,
                at,
                body,
                hash,
            })
        })
        .await?;
        self.anchor(&event)?;
        Ok(event)
    }

    /// Appends the new chain head to the anchors file (one short line: an atomic append).
    fn anchor(&self, event: &Event) -> Result<(), StoreError> {
        use std::io::Write;
        let line = format!("{} {} {}\n", event.session_id, event.seq, event.hash);
        let mut file = self
            .inner
            .anchors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes())
            .map_err(|source| StoreError::Io {
                path: self.inner.anchors_path.clone(),
                source,
            })
    }

    /// A session's events, in order.
    pub async fn events(&self, session_id: &str) -> Result<Vec<Event>, StoreError> {
        self.events_after(session_id, 0).await
    }

    /// A session's events after `after_seq`, in order (for following a live session).
    pub async fn events_after(
        &self,
        session_id: &str,
        after_seq: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let session_id = session_id.to_string();
        self.with(move |connection, _| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, at, body, hash FROM events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![session_id, after_seq], |row| {
                Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, at, body, hash) = row?;
                let body = serde_json::from_str(&body).map_err(|error| StoreError::Corrupt {
                    session: session_id.clone(),
                    seq,
                    message: format!("the event body does not decode: {error}"),
                })?;
                events.push(Event {
                    session_id: session_id.clone(),
                    seq,
                    at,
                    body,
                    hash,
                });
            }
            Ok(events)
        })
        .await
    }

    /// Recomputes the session's hash chain and compares it with the recorded head.
    pub async fn verify(&self, session_id: &str) -> Result<ChainCheck, StoreError> {
        let session_id = session_id.to_string();
        let anchors_path = self.inner.anchors_path.clone();
        self.with(move |connection, _| {
            let recorded: (i64, String) = connection
                .query_row(
                    "SELECT head_seq, head_hash FROM sessions WHERE id = ?1",
                    [&session_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownSession(session_id.clone()))?;
            // The anchored head wins: the session row could have been rewritten with the events.
            let head = highest_anchor(&anchors_path, &session_id)?
                .filter(|(seq, _)| *seq >= recorded.0)
                .unwrap_or(recorded);
            let mut statement = connection.prepare(
                "SELECT seq, at, kind, body, hash FROM events WHERE session_id = ?1 ORDER BY rowid",
            )?;
            let links = statement
                .query_map([&session_id], |row| {
                    Ok(Link {
                        seq: row.get(0)?,
                        at: row.get(1)?,
                        kind: row.get(2)?,
                        body: row.get(3)?,
                        hash: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(
                match chain::verify(&session_id, &links, (head.0, &head.1)) {
                    Ok(events) => ChainCheck::Intact { events },
                    Err(broken) => ChainCheck::Broken(broken),
                },
            )
        })
        .await
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_string();
        self.with(move |connection, _| {
            connection
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    [id],
                    session_row,
                )
                .optional()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Every session, newest first.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.query_sessions("1 = 1", String::new()).await
    }

    /// The Incident's sessions, newest first.
    pub async fn sessions_for_incident(&self, uid: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.query_sessions("incident_uid = ?1", uid.to_string())
            .await
    }

    /// Sessions not finished: after a restart, they resume.
    pub async fn running_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.query_sessions("state = ?1", "running".to_string())
            .await
    }

    async fn query_sessions(
        &self,
        filter: &'static str,
        argument: String,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.with(move |connection, _| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE {filter} ORDER BY started_at DESC, id DESC"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let rows = if filter.contains("?1") {
                statement.query_map([argument], session_row)?.collect::<Result<Vec<_>, _>>()
            } else {
                statement.query_map([], session_row)?.collect::<Result<Vec<_>, _>>()
            };
            Ok(rows?)
        })
        .await
    }

    /// The session's newest command.
    pub async fn last_command(
        &self,
        session_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let session_id = session_id.to_string();
        self.with(move |connection, _| {
            connection
                .query_row(
                    "SELECT tool_use_id, command, state, exit_code, finished_at FROM commands \
                     WHERE session_id = ?1 ORDER BY started_seq DESC LIMIT 1",
                    [session_id],
                    |row| {
                        Ok(CommandRecord {
                            tool_use_id: row.get(0)?,
                            command: row.get(1)?,
                            state: row.get(2)?,
                            exit_code: row.get(3)?,
                            finished_at: row.get(4)?,
                        })
                    },
                )
                .optional()
                .map_err(StoreError::from)
        })
        .await
    }

    pub async fn put_incident(&self, record: IncidentRecord) -> Result<(), StoreError> {
        self.with(move |connection, redactor| {
            let mut incident = record.incident;
            redactor.redact_json(&mut incident);
            connection.execute(
                "INSERT INTO incidents (namespace, name, uid, generation, spec_hash, source, incident, error, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (namespace, name) DO UPDATE SET uid = excluded.uid, generation = excluded.generation, \
                 spec_hash = excluded.spec_hash, source = excluded.source, incident = excluded.incident, \
                 error = excluded.error, updated_at = excluded.updated_at",
                params![
                    record.namespace,
                    record.name,
                    record.uid,
                    record.generation,
                    record.spec_hash,
                    record.source,
                    serde_json::to_string(&incident)?,
                    record.error.map(|error| redactor.redact(&error)),
                    record.updated_at,
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn incident(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.with(move |connection, _| {
            connection
                .query_row(
                    "SELECT namespace, name, uid, generation, spec_hash, source, incident, error, updated_at \
                     FROM incidents WHERE namespace = ?1 AND name = ?2",
                    [namespace, name],
                    incident_row,
                )
                .optional()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Every Incident and manifest problem, by namespace and name.
    pub async fn incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        self.with(move |connection, _| {
            let mut statement = connection.prepare_cached(
                "SELECT namespace, name, uid, generation, spec_hash, source, incident, error, updated_at \
                 FROM incidents ORDER BY namespace, name",
            )?;
            let rows = statement.query_map([], incident_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Answers when the store can be read.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|connection, _| {
            connection.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    pub async fn delete_incident(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.with(move |connection, _| {
            connection.execute(
                "DELETE FROM incidents WHERE namespace = ?1 AND name = ?2",
                [namespace, name],
            )?;
            Ok(())
        })
        .await
    }
}

fn anchors_path(store: &Path) -> std::path::PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".anchors");
    std::path::PathBuf::from(name)
}

/// The highest head anchored for the session, if any. Not the last line: two appends (from two
/// tasks, or two processes) may write their anchors in the other order than they committed.
fn highest_anchor(path: &Path, session_id: &str) -> Result<Option<(i64, String)>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (session, seq, hash) = (parts.next()?, parts.next()?, parts.next()?);
            (session == session_id).then(|| Some((seq.parse::<i64>().ok()?, hash)))?
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(seq, hash)| (seq, hash.to_string())))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // WAL lets the CLI read while the controller writes. synchronous=NORMAL keeps every committed
    // event across a crash of the process (kill -9); only a power loss may drop the last commits.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Migrations::from_slice(MIGRATIONS).to_latest(&mut connection)?;
    Ok(connection)
}

/// Updates the projections (sessions, commands) from one event, inside the append transaction.
fn project(
    transaction: &rusqlite::Transaction<'_>,
    session_id: &str,
    seq: i64,
    at: &str,
    body: &EventBody,
) -> Result<(), StoreError> {
    match body {
        EventBody::CommandStarted {
            tool_use_id,
            command,
            reasoning,
            ..
        } => {
            transaction.execute(
                "INSERT INTO commands (session_id, tool_use_id, command, reasoning, state, started_seq, started_at) \
                 VALUES (?1, ?2, ?3, ?4, 'started', ?5, ?6)",
                params![session_id, tool_use_id, command, reasoning, seq, at],
            )?;
            transaction.execute(
                "UPDATE sessions SET commands = commands + 1 WHERE id = ?1",
                [session_id],
            )?;
        }
        EventBody::CommandFinished {
            tool_use_id,
            exit_code,
            duration_ms,
            timed_out,
            ..
        } => {
            transaction.execute(
                "UPDATE commands SET state = 'finished', exit_code = ?3, duration_ms = ?4, timed_out = ?5, \
                 finished_seq = ?6, finished_at = ?7 WHERE session_id = ?1 AND tool_use_id = ?2 AND state = 'started'",
                params![session_id, tool_use_id, exit_code, *duration_ms as i64, timed_out, seq, at],
            )?;
        }
        EventBody::CommandInterrupted { tool_use_id, .. } => {
            transaction.execute(
                "UPDATE commands SET state = 'interrupted', finished_seq = ?3, finished_at = ?4 \
                 WHERE session_id = ?1 AND tool_use_id = ?2 AND state = 'started'",
                params![session_id, tool_use_id, seq, at],
            )?;
        }
        EventBody::OutputSummary {
            tool_use_id,
            summary,
            ..
        } => {
            transaction.execute(
                "UPDATE commands SET summary = ?3 WHERE session_id = ?1 AND started_seq = \
                 (SELECT MAX(started_seq) FROM commands WHERE session_id = ?1 AND tool_use_id = ?2)",
                params![session_id, tool_use_id, summary],
            )?;
        }
        EventBody::LlmResponse {
            input_tokens,
            output_tokens,
            cost_usd,
            ..
        } => {
            transaction.execute(
                "UPDATE sessions SET turns = turns + 1, input_tokens = input_tokens + ?2, \
                 output_tokens = output_tokens + ?3, cost_usd = cost_usd + ?4 WHERE id = ?1",
                params![
                    session_id,
                    *input_tokens as i64,
                    *output_tokens as i64,
                    cost_usd
                ],
            )?;
        }
        EventBody::Reported { report, .. } => {
            transaction.execute(
                "UPDATE sessions SET report = ?2 WHERE id = ?1",
                params![session_id, serde_json::to_string(report)?],
            )?;
        }
        EventBody::TicketUpdated { generation, .. } => {
            transaction.execute(
                "UPDATE sessions SET generation = ?2 WHERE id = ?1",
                params![session_id, generation],
            )?;
        }
        EventBody::SessionFinished {
            phase,
            outcome,
            reason,
            ..
        } => {
            let outcome = outcome.as_ref().map(text).transpose()?;
            transaction.execute(
                "UPDATE sessions SET state = 'finished', phase = ?2, outcome = ?3, reason = ?4, finished_at = ?5 \
                 WHERE id = ?1",
                params![session_id, text(phase)?, outcome, reason, at],
            )?;
        }
        EventBody::SessionStarted { .. }
        | EventBody::SandboxReady { .. }
        | EventBody::LlmFailed { .. }
        | EventBody::ToolRejected { .. }
        | EventBody::DockerApi { .. } => {}
    }
    Ok(())
}

/// An enum's serde name (`Investigating`, `needs_human`) as a column value.
fn text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(text) => Ok(text),
        other => Ok(other.to_string()),
    }
}

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let decode_error = |index: usize, error: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    };
    let phase: String = row.get(7)?;
    let phase: Phase =
        serde_json::from_value(serde_json::Value::String(phase)).map_err(|e| decode_error(7, e))?;
    let outcome: Option<String> = row.get(8)?;
    let outcome: Option<Outcome> = outcome
        .map(|outcome| serde_json::from_value(serde_json::Value::String(outcome)))
        .transpose()
        .map_err(|e| decode_error(8, e))?;
    let report: Option<String> = row.get(16)?;
    let report: Option<Report> = report
        .map(|report| serde_json::from_str(&report))
        .transpose()
        .map_err(|e| decode_error(16, e))?;
    Ok(SessionRecord {
        id: row.get(0)?,
        incident_uid: row.get(1)?,
        incident_namespace: row.get(2)?,
        incident_name: row.get(3)?,
        attempt: row.get(4)?,
        generation: row.get(5)?,
        state: row.get(6)?,
        phase,
        outcome,
        reason: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
        turns: row.get(12)?,
        commands: row.get(13)?,
        input_tokens: row.get::<_, i64>(14)? as u64,
        output_tokens: row.get::<_, i64>(15)? as u64,
        report,
        cost_usd: row.get(17)?,
    })
}

fn incident_row(row: &Row<'_>) -> rusqlite::Result<IncidentRecord> {
    let incident: String = row.get(6)?;
    let incident = serde_json::from_str(&incident).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(error))
    })?;
    Ok(IncidentRecord {
        namespace: row.get(0)?,
        name: row.get(1)?,
        uid: row.get(2)?,
        generation: row.get(3)?,
        spec_hash: row.get(4)?,
        source: row.get(5)?,
        incident,
        error: row.get(7)?,
        updated_at: row.get(8)?,
    })
}
