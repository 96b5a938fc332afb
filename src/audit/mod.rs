//! The audit store: sessions, their append-only hash-chained events, and the projections the
//! controller and the CLI read (commands, incidents). SQLite, in WAL mode.

mod chain;
pub mod event;
pub mod redact;
mod sqlite;

pub use chain::Broken;
pub use event::{Event, EventBody};
pub use redact::Redactor;
pub use sqlite::Store;

use crate::incident::{Outcome, Phase, Report};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migrating the store: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("encoding an event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no session {0} in the store")]
    UnknownSession(String),
    #[error("session {0} has finished; its trail is closed")]
    SessionClosed(String),
    #[error("session {session}, event {seq}: {message}")]
    Corrupt {
        session: String,
        seq: i64,
        message: String,
    },
    #[error("the store task failed: {0}")]
    Task(String),
}

/// A session as the store knows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub incident_uid: String,
    pub incident_namespace: String,
    pub incident_name: String,
    pub attempt: u32,
    /// The spec generation the session works on (moved by ticket updates).
    pub generation: i64,
    /// `running` or `finished`.
    pub state: String,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub turns: u32,
    pub commands: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub report: Option<Report>,
    /// Estimated model spend in US dollars.
    pub cost_usd: f64,
}

/// What a new session starts with.
pub struct NewSession {
    pub id: String,
    pub incident_uid: String,
    pub incident_namespace: String,
    pub incident_name: String,
    pub attempt: u32,
    pub generation: i64,
}

/// One command as the `commands` projection holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommandRecord {
    pub tool_use_id: String,
    pub command: String,
    /// `started`, `finished` or `interrupted`.
    pub state: String,
    pub exit_code: Option<i64>,
    pub finished_at: Option<String>,
}

/// An Incident as the controller last saw it, with its status (or its manifest's error).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IncidentRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    pub spec_hash: String,
    pub source: String,
    pub incident: serde_json::Value,
    pub error: Option<String>,
    pub updated_at: String,
}

/// The result of checking a session's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainCheck {
    Intact { events: usize },
    Broken(Broken),
}
