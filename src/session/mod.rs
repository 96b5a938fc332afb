//! Agent sessions: the [`SessionManager`] starts, resumes, updates and cancels session tasks; the
//! reconciler calls it and never waits for a session.

mod agent;
pub mod context;
pub mod history;
pub mod kube_access;
pub mod prompt;
pub mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{EventBody, NewSession, SessionRecord, Store};
use crate::config::Config;
use crate::incident::{Incident, IncidentSpec, Requests};
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;
use crate::{ObjectKey, Result};

/// A request to reconcile again, sent by sessions as they make progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// This Incident's session made progress or ended.
    One(ObjectKey),
    /// A session slot came free: Incidents waiting in `Queued` may start.
    All,
}

/// What every session task needs.
#[derive(Clone)]
pub(crate) struct Deps {
    pub config: Arc<Config>,
    pub store: Store,
    pub llm: LlmClient,
    pub sandboxes: Sandboxes,
    pub metrics: Arc<Metrics>,
    pub wake: mpsc::UnboundedSender<Wake>,
    /// Set when the controller stops: a session ends its running command, then stops where it
    /// stands (it resumes from the store at the next start).
    pub draining: CancellationToken,
    /// The agent's Kubernetes access (kube mode, when configured).
    pub kube_access: Option<Arc<kube_access::KubeAccess>>,
}

/// The running session tasks, one at most per Incident (by uid).
#[derive(Clone)]
pub struct SessionManager {
    deps: Deps,
    running: Arc<Mutex<HashMap<String, Handle>>>,
    stalled: Stalled,
}

/// Sessions whose task stopped because the audit store failed, by Incident uid: each is resumed
/// only after a backoff (exponential, capped, jittered), so that a full disk is not a tight loop.
#[derive(Clone, Default)]
pub(crate) struct Stalled(Arc<Mutex<HashMap<String, Stall>>>);

struct Stall {
    resume_at: std::time::Instant,
    delays: backon::ExponentialBackoff,
}

/// The first wait after a store failure, and the longest.
const STALL_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const STALL_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Stalled {
    /// The session stopped on a store failure: when may it be tried again?
    pub(crate) fn stall(&self, incident_uid: &str) -> std::time::Duration {
        use backon::BackoffBuilder;
        let mut stalled = self.lock();
        let stall = stalled
            .entry(incident_uid.to_string())
            .or_insert_with(|| Stall {
                resume_at: std::time::Instant::now(),
                delays: backon::ExponentialBuilder::default()
                    .with_min_delay(STALL_MIN)
                    .with_max_delay(STALL_MAX)
                    .with_jitter()
                    .without_max_times()
                    .build(),
            });
        let delay = stall.delays.next().unwrap_or(STALL_MAX);
        stall.resume_at = std::time::Instant::now() + delay;
        delay
    }

    /// The session ended (or recorded again): its backoff starts over next time.
    pub(crate) fn clear(&self, incident_uid: &str) {
        self.lock().remove(incident_uid);
    }

    fn waiting(&self, incident_uid: &str) -> bool {
        self.lock()
            .get(incident_uid)
            .is_some_and(|stall| std::time::Instant::now() < stall.resume_at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stall>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a session is cancelled: it finishes as Cancelled, saying so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelCause {
    /// The Incident was deleted.
    Deleted,
    /// A person asked (the cancel request's value: who, and why).
    Requested(String),
}

impl CancelCause {
    /// The sentence the trail and the status carry.
    pub fn message(&self) -> String {
        match self {
            CancelCause::Deleted => "the Incident was deleted; the session was cancelled".into(),
            CancelCause::Requested(request) => {
                format!("the session was cancelled on request: {request}")
            }
        }
    }
}

/// A cancellation and its cause, shared by the manager and the task: the first cause set wins.
#[derive(Clone, Default)]
pub(crate) struct Cancellation {
    token: CancellationToken,
    cause: Arc<std::sync::OnceLock<CancelCause>>,
}

impl Cancellation {
    fn cancel(&self, cause: CancelCause) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn cause(&self) -> CancelCause {
        self.cause.get().cloned().unwrap_or(CancelCause::Deleted)
    }
}

/// What a running session is told of its Incident while it runs.
pub(crate) enum TicketChange {
    /// The spec changed: the new spec and its generation.
    Spec { generation: i64, spec: IncidentSpec },
    /// A note that leaves the spec as it is ([`crate::incident::NOTE_ANNOTATION`]).
    Note(String),
}

struct Handle {
    session_id: String,
    /// Cancels the session for good: it finishes as Cancelled.
    cancel: Cancellation,
    updates: mpsc::UnboundedSender<TicketChange>,
    /// Fired by the task once it has cleaned up and left the map.
    stopped: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SessionManager {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        llm: LlmClient,
        sandboxes: Sandboxes,
        metrics: Arc<Metrics>,
        wake: mpsc::UnboundedSender<Wake>,
    ) -> Self {
        SessionManager {
            deps: Deps {
                kube_access: kube_access::KubeAccess::of(&config).map(Arc::new),
                config,
                store,
                llm,
                sandboxes,
                metrics,
                wake,
                draining: CancellationToken::new(),
            },
            running: Arc::default(),
            stalled: Stalled::default(),
        }
    }

    /// Whether a task for this Incident is alive (running, or finishing its clean-up).
    pub fn has_task(&self, incident_uid: &str) -> bool {
        self.running().contains_key(incident_uid)
    }

    /// How many session tasks are alive.
    pub fn active(&self) -> usize {
        self.running().len()
    }

    /// The ids of the sessions with a live task.
    pub fn session_ids(&self) -> Vec<String> {
        self.running()
            .values()
            .map(|handle| handle.session_id.clone())
            .collect()
    }

    /// Creates a session in the store (so the status can name it at once) and starts its task.
    pub async fn start(&self, incident: &Incident, attempt: u32) -> Result<SessionRecord> {
        let identity = Identity::of(incident)?;
        let record = self
            .deps
            .store
            .create_session(NewSession {
                id: uuid::Uuid::now_v7().to_string(),
                incident_uid: identity.uid.clone(),
                incident_namespace: identity.key.namespace.clone(),
                incident_name: identity.key.name.clone(),
                attempt,
                generation: identity.generation,
            })
            .await?;
        let limits = self.deps.config.agent.effective(&incident.spec.agent);
        self.deps
            .store
            .append(
                &record.id,
                EventBody::SessionStarted {
                    generation: identity.generation,
                    spec: incident.spec.clone(),
                    model: limits.model,
                    provider: self.deps.config.provider.kind.as_str().to_string(),
                    sandbox_image: self.deps.config.sandbox.image.clone(),
                    requests: Requests::of(incident),
                },
            )
            .await?;
        self.spawn(identity, incident.spec.clone(), record.clone());
        Ok(record)
    }

    /// Continues a session the store says is running but that has no task (the controller
    /// restarted, or its task stopped when the store failed: then only once its backoff is over).
    pub fn resume(&self, incident: &Incident, record: SessionRecord) -> Result<()> {
        let identity = Identity::of(incident)?;
        if self.stalled.waiting(&identity.uid) {
            return Ok(());
        }
        tracing::info!(session = %record.id, incident = %identity.key, "resuming session from the store");
        self.spawn(identity, incident.spec.clone(), record);
        Ok(())
    }

    fn spawn(&self, identity: Identity, spec: IncidentSpec, record: SessionRecord) {
        let cancel = Cancellation::default();
        let stopped = CancellationToken::new();
        let (updates, updates_rx) = mpsc::unbounded_channel();
        let mut running = self.running();
        let task = agent::SessionTask {
            deps: self.deps.clone(),
            running: self.running.clone(),
            stalled: self.stalled.clone(),
            key: identity.key,
            incident_uid: identity.uid.clone(),
            spec,
            record: record.clone(),
            cancel: cancel.clone(),
            stopped: stopped.clone(),
            updates: updates_rx,
            kube_token: None,
            kube_binding: None,
        };
        // The task cannot finish before it is in the map: it removes itself under the same lock.
        self.deps.metrics.session_started();
        let task = tokio::spawn(task.run());
        running.insert(
            identity.uid,
            Handle {
                session_id: record.id,
                cancel,
                updates,
                stopped,
                task,
            },
        );
    }

    /// Passes a changed ticket to the running session.
    pub fn update_ticket(&self, incident_uid: &str, generation: i64, spec: IncidentSpec) {
        if let Some(handle) = self.running().get(incident_uid) {
            // A send fails only when the task is ending; the next reconcile sees that.
            let _ = handle.updates.send(TicketChange::Spec { generation, spec });
        }
    }

    /// Passes the Incident's note to its running session, if one runs here; the session tells the
    /// agent a note once, however often it is passed.
    pub fn tell(&self, incident_uid: &str, note: &str) {
        if let Some(handle) = self.running().get(incident_uid) {
            let _ = handle.updates.send(TicketChange::Note(note.to_string()));
        }
    }

    /// Cancels the Incident's session; it records the cancellation (with its cause) and removes
    /// its sandbox. False when no session of the Incident runs here.
    pub fn cancel(&self, incident_uid: &str, cause: CancelCause) -> bool {
        match self.running().get(incident_uid) {
            Some(handle) => {
                handle.cancel.cancel(cause);
                true
            }
            None => false,
        }
    }

    /// Waits until the Incident's task (if any) has finished: its trail closed, its sandbox removed.
    pub async fn stopped(&self, incident_uid: &str) {
        let stopped = self
            .running()
            .get(incident_uid)
            .map(|handle| handle.stopped.clone());
        if let Some(stopped) = stopped {
            stopped.cancelled().await;
        }
    }

    /// Stops every task without finishing its session: they resume from the store when the
    /// controller starts again. A running command may finish for up to `grace` (no new command or
    /// model call starts meanwhile); what still runs then is stopped where it stands.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.deps.draining.cancel();
        let handles: Vec<_> = self
            .running()
            .drain()
            .map(|(_, handle)| (handle.stopped, handle.task))
            .collect();
        let all_stopped = futures::future::join_all(
            handles
                .iter()
                .map(|(stopped, _)| stopped.clone().cancelled_owned()),
        );
        if tokio::time::timeout(grace, all_stopped).await.is_err() {
            tracing::info!(
                ?grace,
                "the shutdown grace period is over: stopping the sessions' running commands"
            );
        }
        for (_, task) in &handles {
            task.abort();
        }
        for (_, task) in handles {
            let _ = task.await;
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        // A panic while holding this lock leaves the map itself consistent.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The parts of an Incident's metadata a session needs; the source always sets them.
struct Identity {
    key: ObjectKey,
    uid: String,
    generation: i64,
}

impl Identity {
    fn of(incident: &Incident) -> Result<Identity> {
        let key = ObjectKey::of(incident)?;
        let uid = incident.required_uid()?.to_string();
        let generation = incident.metadata.generation.unwrap_or(1);
        Ok(Identity {
            key,
            uid,
            generation,
        })
    }
}
