//! The [`SessionManager`]: the running session tasks, one at most per Incident. It spawns each
//! task and, once the task has run, takes it off its list and wakes the reconciler; a task knows
//! nothing of the list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent::SessionTask;
use super::{CancelCause, Cancellation, Deps, Stalled, TicketChange, Wake, kube_access};
use crate::audit::{EventBody, NewSession, SessionRecord, Store};
use crate::config::SessionSettings;
use crate::incident::{Incident, IncidentSpec, Requests};
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;
use crate::{ObjectKey, Result};

/// The running session tasks, one at most per Incident (by uid).
#[derive(Clone)]
pub struct SessionManager {
    deps: Deps,
    running: Arc<Mutex<HashMap<String, Handle>>>,
    stalled: Stalled,
}

struct Handle {
    session_id: String,
    /// Cancels the session for good: it finishes as Cancelled.
    cancel: Cancellation,
    updates: mpsc::UnboundedSender<TicketChange>,
    /// The note last passed to the task: every reconcile passes the Incident's note, and only a
    /// new one is worth the task's check against its trail.
    note: Option<String>,
    /// Fired once the task has run (its trail closed, its sandbox removed) and left the map.
    stopped: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SessionManager {
    pub fn new(
        settings: SessionSettings,
        store: Store,
        llm: LlmClient,
        sandboxes: Sandboxes,
        metrics: Arc<Metrics>,
        wake: mpsc::UnboundedSender<Wake>,
    ) -> Self {
        SessionManager {
            deps: Deps {
                kube_access: settings
                    .kubernetes
                    .as_ref()
                    .and_then(kube_access::KubeAccess::of)
                    .map(Arc::new),
                settings: Arc::new(settings),
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
        let limits = self.deps.settings.agent.effective(&incident.spec.agent);
        self.deps
            .store
            .append(
                &record.id,
                EventBody::SessionStarted {
                    generation: identity.generation,
                    spec: incident.spec.clone(),
                    model: limits.model,
                    provider: self.deps.settings.provider.as_str().to_string(),
                    sandbox_image: self.deps.settings.sandbox_image.clone(),
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
        let task = SessionTask {
            deps: self.deps.clone(),
            stalled: self.stalled.clone(),
            key: identity.key,
            incident_uid: identity.uid.clone(),
            spec,
            record: record.clone(),
            cancel: cancel.clone(),
            updates: updates_rx,
            kube_token: None,
            kube_binding: None,
        };
        // The task cannot finish before it is in the map: it is removed under the same lock.
        self.deps.metrics.session_started();
        let (tasks, uid, key) = (self.running.clone(), identity.uid.clone(), task.key.clone());
        let (wake, task_stopped) = (self.deps.wake.clone(), stopped.clone());
        let task = tokio::spawn(async move {
            task.run().await;
            tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&uid);
            task_stopped.cancel();
            let _ = wake.send(Wake::One(key));
            let _ = wake.send(Wake::All);
        });
        running.insert(
            identity.uid,
            Handle {
                session_id: record.id,
                cancel,
                updates,
                note: None,
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
        if let Some(handle) = self.running().get_mut(incident_uid)
            && handle.note.as_deref() != Some(note)
        {
            handle.note = Some(note.to_string());
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
