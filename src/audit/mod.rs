//! The audit store. CONTRACT STUB — replaced by the real implementation.
pub mod event;
pub mod redact;

pub use event::{Event, EventBody};
pub use redact::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Other(String),
}

/// A session as the store knows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub incident_uid: String,
    pub incident_namespace: String,
    pub incident_name: String,
    pub attempt: u32,
    pub generation: i64,
    /// `running` or `finished`.
    pub state: String,
    pub phase: crate::incident::Phase,
    pub outcome: Option<crate::incident::Outcome>,
    pub reason: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub turns: u32,
    pub commands: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub report: Option<crate::incident::Report>,
}

pub struct NewSession {
    pub id: String,
    pub incident_uid: String,
    pub incident_namespace: String,
    pub incident_name: String,
    pub attempt: u32,
    pub generation: i64,
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

/// One command as the `commands` projection holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommandRecord {
    pub command: String,
    pub exit_code: Option<i64>,
    pub finished_at: Option<String>,
}

#[derive(Clone)]
pub struct Store {}

impl Store {
    pub async fn open(_path: &std::path::Path, _redactor: Redactor) -> Result<Store, StoreError> {
        todo!()
    }
    pub async fn create_session(&self, _new: NewSession) -> Result<SessionRecord, StoreError> {
        todo!()
    }
    pub async fn append(&self, _session_id: &str, _body: EventBody) -> Result<Event, StoreError> {
        todo!()
    }
    pub async fn events(&self, _session_id: &str) -> Result<Vec<Event>, StoreError> {
        todo!()
    }
    pub async fn session(&self, _id: &str) -> Result<Option<SessionRecord>, StoreError> {
        todo!()
    }
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        todo!()
    }
    pub async fn sessions_for_incident(
        &self,
        _uid: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        todo!()
    }
    pub async fn running_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        todo!()
    }
    pub async fn put_incident(&self, _record: IncidentRecord) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn incident(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        todo!()
    }
    pub async fn incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        todo!()
    }
    pub async fn last_command(
        &self,
        _session_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        todo!()
    }
    pub async fn delete_incident(&self, _namespace: &str, _name: &str) -> Result<(), StoreError> {
        todo!()
    }
}
