//! Agent sessions: the [`SessionManager`] starts, resumes, updates and cancels session tasks; the
//! reconciler calls it and never waits for a session.

mod agent;
pub mod context;
pub mod history;
pub mod kube_access;
mod manager;
pub mod prompt;
pub mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ObjectKey;
use crate::audit::Store;
use crate::config::SessionSettings;
use crate::incident::IncidentSpec;
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;

pub use manager::SessionManager;

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
    pub settings: Arc<SessionSettings>,
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
