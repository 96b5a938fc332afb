//! The reconciler, shared by every source: observe an Incident, decide (pure, [`plan`]), act on
//! sessions, and write the status through the source's [`StatusSink`] ([`apply`]); count each
//! reconcile and decide when a failed one is tried again ([`counted`], [`failed`]). Quick and
//! idempotent: it never waits for a session, and assumes nothing about why it was called.

pub mod plan;
mod requeue;
mod sink;

pub use requeue::{MAX_BACKOFF, Retries};
pub use sink::{StatusSink, apply, delete};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use tokio::sync::mpsc;

use crate::audit::{EventBody, Redactor, SessionRecord, SessionState, Store};
use crate::config::Config;
use crate::incident::{Incident, IncidentStatus, LastCommand, Phase, Requests};
use crate::llm::LlmClient;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::sandbox::{Audit, Sandboxes};
use crate::server::Readiness;
use crate::session::{CancelCause, SessionManager, Wake};
use crate::{Error, ObjectKey, Result};
use plan::{Decision, Observed};

/// What reconciles share.
pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    pub sessions: SessionManager,
    pub sandboxes: Sandboxes,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub notifier: Notifier,
    /// Each Incident's backoff after failed reconciles.
    pub retries: Retries,
}

impl Context {
    /// Opens the store, reaches the Docker engine and sets up the sessions, whose progress is sent
    /// to `wake` for the source to reconcile again.
    pub async fn new(config: Arc<Config>, wake: mpsc::UnboundedSender<Wake>) -> Result<Context> {
        let store = Store::open_with(
            &config.store,
            Redactor::new(config.secret_values.clone()),
            config.store_durability,
        )
        .await?;
        let audit = audit_of(&store);
        let metrics = audit.metrics.clone();
        let sandboxes = Sandboxes::connect(config.sandbox.clone(), audit).await?;
        sandboxes.ping().await?;
        Context::from_parts(config, store, metrics, sandboxes, wake)
    }

    /// A context from its parts (the store, the metrics, the sandboxes), as they are: nothing is
    /// reached here. The session manager works on them with the configured model; readiness,
    /// notifications and retries follow from them.
    pub fn from_parts(
        config: Arc<Config>,
        store: Store,
        metrics: Arc<Metrics>,
        sandboxes: Sandboxes,
        wake: mpsc::UnboundedSender<Wake>,
    ) -> Result<Context> {
        let llm = LlmClient::new(
            config.provider.clone(),
            metrics.clone(),
            config.costs.clone(),
        )?;
        let sessions = SessionManager::new(
            config.session(),
            store.clone(),
            llm,
            sandboxes.clone(),
            metrics.clone(),
            wake,
        );
        let readiness = Arc::new(Readiness::new(
            store.clone(),
            sandboxes.clone(),
            config.provider.missing(),
        ));
        let notifier = Notifier::start(config.notify.clone(), store.clone(), metrics.clone());
        Ok(Context {
            config,
            store,
            sessions,
            sandboxes,
            metrics,
            readiness,
            notifier,
            retries: Retries::default(),
        })
    }
}

/// What the sandboxes record to: the store, and new metrics (the store's error count among them).
pub fn audit_of(store: &Store) -> Audit {
    let mut metrics = Metrics::new();
    metrics.register_store_errors(store.health().errors());
    Audit {
        store: store.clone(),
        metrics: Arc::new(metrics),
    }
}

/// Brings the Incident's session in line with its spec; returns the status to write (see [`apply`],
/// which writes it).
pub async fn reconcile(incident: &Incident, ctx: &Context) -> Result<IncidentStatus> {
    let key = ObjectKey::of(incident)?;
    let uid = incident.required_uid()?;
    let generation = incident.metadata.generation.unwrap_or(1);
    let sessions = ctx.store.sessions_for_incident(uid).await?;
    let latest = sessions.first();
    let requests = Requests::of(incident);
    let observed = Observed {
        generation,
        latest,
        has_task: ctx.sessions.has_task(uid),
        slot_free: ctx.sessions.active() < ctx.config.max_sessions,
        requests: &requests,
    };
    let decision = plan::decide(&observed);
    let started = act(&decision, incident, &key, latest, ctx).await?;
    // A note is no spec change: it never starts an attempt, and a running session tells it once
    // however often it is passed here.
    if let Some(note) = incident.note() {
        ctx.sessions.tell(uid, note);
    }
    let session = started.as_ref().or(latest);
    let last_command = match session {
        Some(session) => ctx
            .store
            .last_command(&session.id)
            .await?
            .map(|command| LastCommand {
                command: command.command,
                exit_code: command.exit_code,
                finished_at: command.finished_at,
            }),
        None => None,
    };
    let now = jiff::Timestamp::now().to_string();
    let mut status = plan::status(
        incident.status.as_ref(),
        generation,
        &decision,
        session,
        last_command,
        ctx.sessions.active(),
        &now,
    );
    // An Incident the alert intake filed also shows whether its alert group has resolved.
    status
        .conditions
        .extend(crate::alerts::condition::alert_resolved(
            incident,
            incident.status.as_ref(),
            generation,
            &now,
        ));
    // Results go out, once per terminal transition; never waits on a receiver.
    let started = matches!(decision, Decision::Start { .. });
    ctx.notifier.observe(incident, &status, started).await;
    Ok(plan::with_store_problem(
        status,
        ctx.store.health().problem().as_deref(),
    ))
}

/// Carries out a decision on the sessions; returns the session it started, if any.
async fn act(
    decision: &Decision,
    incident: &Incident,
    key: &ObjectKey,
    latest: Option<&SessionRecord>,
    ctx: &Context,
) -> Result<Option<SessionRecord>> {
    let uid = incident.required_uid()?;
    match decision {
        Decision::Start { attempt } => {
            info!(incident = %key, attempt, "starting a session");
            return Ok(Some(ctx.sessions.start(incident, *attempt).await?));
        }
        Decision::Resume => {
            let record = latest
                .cloned()
                .expect("Resume is decided only with a latest session");
            ctx.sessions.resume(incident, record)?;
        }
        Decision::Cancel { request } => {
            info!(incident = %key, request = %request, "cancelling the session on request");
            ctx.sessions
                .cancel(uid, CancelCause::Requested(request.clone()));
        }
        Decision::UpdateTicket => {
            let generation = incident.metadata.generation.unwrap_or(1);
            ctx.sessions
                .update_ticket(uid, generation, incident.spec.clone());
        }
        Decision::Queue { .. } | Decision::Observe | Decision::Wait | Decision::Idle => {}
    }
    Ok(None)
}

/// The Incident is gone: cancel its session and remove its sandbox. The audit trail stays.
pub async fn cleanup(incident_uid: &str, ctx: &Context) -> Result<()> {
    if ctx.sessions.cancel(incident_uid, CancelCause::Deleted) {
        // The task records the cancellation and removes its sandbox itself.
        return Ok(());
    }
    // No task here (the Incident went while the controller was down): close what the store has open.
    for session in ctx.store.sessions_for_incident(incident_uid).await? {
        if session.state != SessionState::Running {
            continue;
        }
        info!(session = %session.id, "closing the session of a deleted Incident");
        ctx.store
            .append(
                &session.id,
                EventBody::SessionFinished {
                    phase: Phase::Cancelled,
                    outcome: None,
                    reason: "Cancelled".into(),
                    message: "the Incident was deleted while the controller was stopped".into(),
                },
            )
            .await?;
        ctx.sandboxes.remove(&session.id).await?;
    }
    Ok(())
}

/// How many Incidents are in each phase (one without a status yet is Pending), for the metrics.
pub fn phase_counts<'a>(incidents: impl IntoIterator<Item = &'a Incident>) -> BTreeMap<Phase, i64> {
    let mut counts = BTreeMap::new();
    for incident in incidents {
        let phase = incident
            .status
            .as_ref()
            .map_or(Phase::Pending, |status| status.phase);
        *counts.entry(phase).or_insert(0) += 1;
    }
    counts
}

/// Removes sandboxes whose session is neither running here nor waiting to resume.
/// (Sandboxes of sessions another replica runs are kept too: the store says they are running.)
pub async fn collect_orphans(ctx: &Context) {
    let mut keep: BTreeSet<String> = ctx.sessions.session_ids().into_iter().collect();
    match ctx.store.running_sessions().await {
        Ok(sessions) => keep.extend(sessions.into_iter().map(|session| session.id)),
        Err(error) => {
            warn!(%error, "cannot list running sessions; orphan collection skipped");
            return;
        }
    }
    let keep = keep.into_iter().collect();
    match ctx.sandboxes.remove_orphans(&keep).await {
        Ok(removed) if !removed.is_empty() => info!(?removed, "removed orphaned sandboxes"),
        Ok(_) => {}
        Err(error) => warn!(%error, "orphan collection failed"),
    }
}

/// Runs one reconcile of `key` (whatever the source wraps around [`apply`]), timed and
/// counted in the metrics by result and error; a success forgets the Incident's failures.
pub async fn counted<T>(
    ctx: &Context,
    key: &ObjectKey,
    reconcile: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = reconcile.await;
    let error_label = result.as_ref().err().map(Error::metric_label);
    ctx.metrics.reconciled(started.elapsed(), error_label);
    if result.is_ok() {
        ctx.retries.forget(key);
    }
    result
}

/// After a failed reconcile: says so, and returns how long to wait before trying `key` again.
pub fn failed(ctx: &Context, key: &ObjectKey, error: &Error) -> Duration {
    let delay = ctx.retries.next(key);
    warn!(incident = %key, %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    delay
}
