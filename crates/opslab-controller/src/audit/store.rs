//! [`Store`]: the one type callers use, whatever the backend. Each operation is written once here,
//! as statements and row decoders; the backend runs them.

use super::append::{self, Pending};
use super::chain::Trail;
use super::health::StoreHealth;
use super::intake;
use super::location::StoreLocation;
use super::postgres::Postgres;
use super::rows::{self, Decode, Statement};
use super::sqlite::Sqlite;
use super::{
    ChainCheck, CommandRecord, Draft, Durability, Event, EventBody, IncidentContent,
    IncidentRecord, IntakeEvent, NewSession, Redactor, SessionRecord, SessionState, StoreError,
};
use crate::incident::Phase;

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// The audit store: sessions, their append-only hash-chained events, and the projections the
/// controller and the CLI read. Cheap to clone; clones share the connection (pool).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    redactor: std::sync::Arc<Redactor>,
    health: std::sync::Arc<StoreHealth>,
}

/// Runs the same call on whichever backend the store has.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match &$store.backend {
            Backend::Sqlite($backend) => $call,
            Backend::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// The redactor every event passes through, for output redacted before it is cut.
    pub fn redactor(&self) -> Redactor {
        (*self.redactor).clone()
    }

    /// Opens the store at `location` (an SQLite path, or a PostgreSQL URL), creating it if needed,
    /// and brings its schema up to date.
    pub async fn open(
        location: impl Into<StoreLocation>,
        redactor: Redactor,
    ) -> Result<Store, StoreError> {
        Store::open_with(location, redactor, Durability::default()).await
    }

    /// [`Store::open`], with the durability an SQLite store's commits get.
    pub async fn open_with(
        location: impl Into<StoreLocation>,
        redactor: Redactor,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        let location = location.into();
        let backend = match location {
            StoreLocation::Sqlite(ref path) => {
                Backend::Sqlite(Sqlite::open(path.clone(), durability).await?)
            }
            StoreLocation::Postgres(ref url) => {
                Backend::Postgres(Postgres::open(url, &location).await?)
            }
        };
        Ok(Store {
            backend,
            redactor: std::sync::Arc::new(redactor),
            health: std::sync::Arc::default(),
        })
    }

    /// Whether the store's calls work, as they go.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    async fn execute(&self, statement: Statement) -> Result<(), StoreError> {
        let result = on_backend!(self, backend => backend.execute(statement).await);
        self.health.observe_write(&result);
        result
    }

    async fn query<T: Send + 'static>(
        &self,
        statement: Statement,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        let result = on_backend!(self, backend => backend.query(statement, decode).await);
        self.health.observe_read(&result);
        result
    }

    async fn query_one<T: Send + 'static>(
        &self,
        statement: Statement,
        decode: Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.query(statement, decode).await?.into_iter().next())
    }

    pub async fn create_session(&self, new: NewSession) -> Result<SessionRecord, StoreError> {
        let id = new.id.clone();
        self.execute(Statement::new(
            rows::CREATE_SESSION,
            vec![
                new.id.into(),
                new.incident_uid.into(),
                new.incident_namespace.into(),
                new.incident_name.into(),
                i64::from(new.attempt).into(),
                new.generation.into(),
                append::enum_text(&Phase::Investigating)?.into(),
                jiff::Timestamp::now().into(),
            ],
        ))
        .await?;
        self.session(&id)
            .await?
            .ok_or(StoreError::UnknownSession(id))
    }

    /// Appends one event: redacted, numbered, chained, and projected, in one transaction.
    pub async fn append(&self, session_id: &str, body: EventBody) -> Result<Event, StoreError> {
        let pending: Pending = append::prepare(&self.redactor, session_id, body)?;
        let result = on_backend!(self, backend => backend.append(pending).await);
        self.health.observe_write(&result);
        result
    }

    /// An event as [`Store::append`] would store it (redacted), without storing it: for telling
    /// whether it is already in the trail.
    pub fn as_stored(&self, body: EventBody) -> Result<EventBody, StoreError> {
        Ok(append::prepare(&self.redactor, "", body)?.body().clone())
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
        self.query(
            Statement::new(
                rows::EVENTS_AFTER,
                vec![session_id.into(), after_seq.into()],
            ),
            rows::event,
        )
        .await
    }

    /// Replaces the session's draft: the text of the answer being streamed for `turn`, redacted
    /// (its unfinished last word held back) before it is written. The next append removes it.
    pub async fn put_draft(
        &self,
        session_id: &str,
        turn: u32,
        text: &str,
    ) -> Result<(), StoreError> {
        let text = self.redactor.redact_unfinished(text);
        self.execute(Statement::new(
            rows::PUT_DRAFT,
            vec![
                session_id.into(),
                i64::from(turn).into(),
                text.into(),
                jiff::Timestamp::now().into(),
            ],
        ))
        .await
    }

    /// Removes the session's draft: an answer abandoned with no event to take its place.
    pub async fn clear_draft(&self, session_id: &str) -> Result<(), StoreError> {
        self.execute(Statement::new(rows::CLEAR_DRAFT, vec![session_id.into()]))
            .await
    }

    /// The session's draft, while an answer is being streamed.
    pub async fn draft(&self, session_id: &str) -> Result<Option<Draft>, StoreError> {
        self.query_one(
            Statement::new(rows::DRAFT, vec![session_id.into()]),
            rows::draft,
        )
        .await
    }

    /// A session's events of one kind (`EventBody::kind`), in order.
    pub async fn events_of_kind(
        &self,
        session_id: &str,
        kind: &str,
    ) -> Result<Vec<Event>, StoreError> {
        self.query(
            Statement::new(rows::EVENTS_OF_KIND, vec![session_id.into(), kind.into()]),
            rows::event,
        )
        .await
    }

    /// Recomputes the session's hash chain and compares it with the highest known head.
    pub async fn verify(&self, session_id: &str) -> Result<ChainCheck, StoreError> {
        let trail: Option<Trail> =
            on_backend!(self, backend => backend.trail(session_id.to_string()).await)?;
        let trail = trail.ok_or_else(|| StoreError::UnknownSession(session_id.to_string()))?;
        Ok(ChainCheck::of(trail.verify(session_id)))
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = rows::sessions_query("WHERE id = ?1");
        self.query_one(Statement::new(sql, vec![id.into()]), rows::session)
            .await
    }

    /// Every session, newest first.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = rows::sessions_query("");
        self.query(Statement::new(sql, vec![]), rows::session).await
    }

    /// The Incident's sessions, newest first.
    pub async fn sessions_for_incident(&self, uid: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = rows::sessions_query("WHERE incident_uid = ?1");
        self.query(Statement::new(sql, vec![uid.into()]), rows::session)
            .await
    }

    /// Sessions not finished: after a restart, they resume.
    pub async fn running_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = rows::sessions_query("WHERE state = ?1");
        let running = SessionState::Running.as_str().into();
        self.query(Statement::new(sql, vec![running]), rows::session)
            .await
    }

    /// The session's commands, in the order they started.
    pub async fn commands(&self, session_id: &str) -> Result<Vec<CommandRecord>, StoreError> {
        self.query(
            Statement::new(rows::COMMANDS, vec![session_id.into()]),
            rows::command,
        )
        .await
    }

    /// The session's newest command.
    pub async fn last_command(
        &self,
        session_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.query_one(
            Statement::new(rows::LAST_COMMAND, vec![session_id.into()]),
            rows::command,
        )
        .await
    }

    pub async fn put_incident(&self, mut record: IncidentRecord) -> Result<(), StoreError> {
        match &mut record.content {
            IncidentContent::Incident(stored) => self.redactor.redact_json(&mut stored.incident),
            IncidentContent::Problem { error } => *error = self.redactor.redact(error),
        }
        let params = rows::incident_params(record)?;
        self.execute(Statement::new(rows::PUT_INCIDENT, params))
            .await
    }

    pub async fn incident(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        let sql = rows::incidents_query("WHERE namespace = ?1 AND name = ?2");
        self.query_one(
            Statement::new(sql, vec![namespace.into(), name.into()]),
            rows::incident,
        )
        .await
    }

    /// Every Incident and manifest problem, by namespace and name.
    pub async fn incidents(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        let sql = rows::incidents_query("");
        self.query(Statement::new(sql, vec![]), rows::incident)
            .await
    }

    /// Answers when the store can be read.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query(Statement::new(rows::PING, vec![]), |_| Ok(()))
            .await
            .map(drop)
    }

    /// Appends a producer's decision (the alert intake's), its message redacted, to the intake's
    /// hash chain.
    pub async fn record_intake(&self, event: IntakeEvent) -> Result<(), StoreError> {
        let event = IntakeEvent {
            message: self.redactor.redact(&event.message),
            ..event
        };
        let result = on_backend!(self, backend => backend.append_intake(event).await);
        self.health.observe_write(&result);
        result
    }

    /// Recomputes the intake's hash chain (the decisions recorded since the store had one) and
    /// compares it with the highest known head.
    pub async fn verify_intake(&self) -> Result<ChainCheck, StoreError> {
        let trail: Trail = on_backend!(self, backend => backend.intake_trail().await)?;
        Ok(ChainCheck::of(trail.verify(intake::CHAIN)))
    }

    /// The producers' decisions, oldest first.
    pub async fn intake_events(&self) -> Result<Vec<IntakeEvent>, StoreError> {
        self.query(
            Statement::new(rows::INTAKE_EVENTS, vec![]),
            rows::intake_event,
        )
        .await
    }

    pub async fn delete_incident(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        self.execute(Statement::new(
            rows::DELETE_INCIDENT,
            vec![namespace.into(), name.into()],
        ))
        .await
    }
}
