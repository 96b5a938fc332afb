//! The audit store: sessions, their append-only hash-chained events, and the projections the
//! controller and the CLI read (commands, incidents). SQLite (WAL) by default, PostgreSQL for
//! several replicas; the backend is chosen by the store's location.

mod append;
mod chain;
mod error;
pub mod event;
pub mod feed;
mod health;
mod intake;
mod location;
mod postgres;
pub mod redact;
mod rows;
mod sqlite;
mod store;

pub use chain::Broken;
pub use error::StoreError;
pub use event::{Delivery, Event, EventBody};
pub use feed::{DraftChange, IncidentChanges, IncidentFeed, SessionFeed, SessionUpdate};
pub use health::StoreHealth;
pub(crate) use location::postgres_message;
pub use location::{LocationError, StoreLocation};
pub use redact::{HeldSecret, Redactor, SecretTooShort, check_configured_secret};
pub use store::Store;

use crate::incident::{Outcome, Phase, Report, Requests};

/// Whether a session's trail is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Events may still be appended; after a restart, the session resumes.
    Running,
    /// The trail is closed.
    Finished,
}

impl SessionState {
    /// The `state` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Running => "running",
            SessionState::Finished => "finished",
        }
    }
}

/// What a committed event survives, in an SQLite store. (PostgreSQL's own settings decide there.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Every commit is on disk before it returns (`synchronous=FULL`): a committed event survives a
    /// power loss, so a command recorded as started is never run twice after one.
    #[default]
    Full,
    /// Commits survive a crash of the process (kill -9) but the last ones may be lost in a power
    /// loss (`synchronous=NORMAL`): a command whose start was lost may then run again.
    Normal,
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
    pub state: SessionState,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub started_at: jiff::Timestamp,
    pub finished_at: Option<jiff::Timestamp>,
    pub turns: u32,
    pub commands: u32,
    /// Fresh input, apart from the prompt-cache tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub report: Option<Report>,
    /// Estimated model spend in US dollars.
    pub cost_usd: f64,
    /// Why the session stands where it does, in words: the model API being retried while it runs,
    /// the cause once it has ended.
    pub message: Option<String>,
    /// The retry and cancel requests the Incident carried when the session started.
    pub requests: Requests,
}

impl SessionRecord {
    /// The session's phase as a status shows it: Investigating while it runs, whatever its row
    /// started with.
    pub fn current_phase(&self) -> Phase {
        match self.state {
            SessionState::Running => Phase::Investigating,
            SessionState::Finished => self.phase,
        }
    }
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

/// Where a command stands, as the `commands` projection's `state` column says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    /// Recorded as started; it runs (or ran when the controller stopped).
    Started,
    /// It ended, with an exit code or a timeout.
    Finished,
    /// The controller stopped while it ran: it is never run again.
    Interrupted,
}

impl CommandState {
    /// The `state` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Started => "started",
            CommandState::Finished => "finished",
            CommandState::Interrupted => "interrupted",
        }
    }
}

/// One command as the `commands` projection holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommandRecord {
    pub tool_use_id: String,
    pub command: String,
    pub state: CommandState,
    pub exit_code: Option<i64>,
    pub finished_at: Option<jiff::Timestamp>,
}

/// An Incident as the controller last saw it: its manifest with the status last written, or, for a
/// manifest that is not a valid Incident, what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentRecord {
    pub namespace: String,
    pub name: String,
    /// The source that read it (`files`, `kubernetes`).
    pub source: String,
    pub content: IncidentContent,
    pub updated_at: jiff::Timestamp,
}

/// What the store holds of an Incident.
#[derive(Clone, Debug, PartialEq)]
pub enum IncidentContent {
    /// A valid Incident.
    Incident(StoredIncident),
    /// A manifest that could not be read as an Incident: it has no uid and no spec, only the file
    /// and what is wrong with it.
    Problem { error: String },
}

/// A valid Incident as stored: the object with its status, and what identifies its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredIncident {
    pub uid: String,
    pub generation: i64,
    pub spec_hash: String,
    /// The Incident object (metadata, spec and status), secrets redacted.
    pub incident: serde_json::Value,
}

impl StoredIncident {
    /// The Incident object, typed.
    pub fn decode(&self) -> Result<crate::incident::Incident, serde_json::Error> {
        serde_json::from_value(self.incident.clone())
    }
}

impl IncidentRecord {
    /// The stored Incident, unless the record is a manifest problem.
    pub fn stored(&self) -> Option<&StoredIncident> {
        match &self.content {
            IncidentContent::Incident(stored) => Some(stored),
            IncidentContent::Problem { .. } => None,
        }
    }

    /// What is wrong with the manifest, if the record is a manifest problem.
    pub fn problem(&self) -> Option<&str> {
        match &self.content {
            IncidentContent::Problem { error } => Some(error),
            IncidentContent::Incident(_) => None,
        }
    }
}

/// One decision of a producer that files Incidents (the Alertmanager intake): what it decided
/// about one request, and why. Not part of a session: an intake's refusals have none.
///
/// Its time is parsed, except where the intake's chain is checked: that hashes the time as stored
/// text (`IntakeEvent<String>`), whatever a row holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntakeEvent<At = jiff::Timestamp> {
    /// In JSON and in the store, RFC 3339 in UTC.
    pub at: At,
    /// Who sent what was decided on (`alertmanager`).
    pub producer: String,
    pub decision: IntakeDecision,
    /// Why a request was refused (`unauthorized`, `malformed`, `version`…).
    pub reason: Option<String>,
    /// The alert group's hash (the Incidents' `opslab.dev/alert-group` label).
    pub alert_group: Option<String>,
    /// The Incident decided on, `namespace/name`.
    pub incident: Option<String>,
    /// The decision in words (redacted).
    pub message: String,
}

/// What a producer decided about one request; stored, hashed and shown as its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeDecision {
    /// An Incident was filed.
    Created,
    /// An open Incident was told about new or ended alerts.
    Updated,
    /// An Incident was told its alert group resolved.
    Resolved,
    /// A repeat: nothing new.
    Deduplicated,
    /// Nothing to file (no rule files the alerts, or nothing is open to tell).
    Ignored,
    /// The request was refused (its reason says why).
    Refused,
    /// Filing failed; the sender tries again.
    Failed,
}

impl IntakeDecision {
    /// The `decision` column's value, the metric's label and the intake's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeDecision::Created => "created",
            IntakeDecision::Updated => "updated",
            IntakeDecision::Resolved => "resolved",
            IntakeDecision::Deduplicated => "deduplicated",
            IntakeDecision::Ignored => "ignored",
            IntakeDecision::Refused => "refused",
            IntakeDecision::Failed => "failed",
        }
    }
}

/// The text of a model answer still being streamed (redacted, its unfinished last word held
/// back): at most one per session, gone once the session's next event is stored. Not part of the
/// trail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Draft {
    pub session_id: String,
    /// The seq of the session's last event when it was written: it comes after that event.
    pub after_seq: i64,
    /// The model turn being written.
    pub turn: u32,
    pub text: String,
    /// When it was last replaced.
    pub at: jiff::Timestamp,
}

/// The result of checking a chain (a session's, or the intake's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainCheck {
    Intact { events: usize },
    Broken(Broken),
}

impl ChainCheck {
    fn of(verified: Result<usize, Broken>) -> ChainCheck {
        match verified {
            Ok(events) => ChainCheck::Intact { events },
            Err(broken) => ChainCheck::Broken(broken),
        }
    }
}
