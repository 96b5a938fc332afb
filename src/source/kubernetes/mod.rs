//! Kubernetes mode: Incidents come from the API server and are reconciled by kube-runtime's
//! `Controller`. Each reconcile goes through the finalizer helper (a deleted Incident's session is
//! cancelled and its sandbox removed before the object goes), writes the whole status by
//! server-side apply on `/status`, and announces transitions as Events through one `Recorder`.

pub mod leader;
pub mod transition;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::audit::IncidentRecord;
use crate::incident::{Incident, IncidentStatus, Phase};
use crate::reconcile::{self, Context, plan};
use crate::session::Wake;
use crate::{Error, ObjectKey, Result};

pub use crate::config::{KubeSettings, LeaseSettings};

/// Marks Incidents whose session and sandbox must be cleaned up before they go.
pub const FINALIZER: &str = "opslab.dev/cleanup";
/// The field manager of the status opslab applies.
pub const FIELD_MANAGER: &str = "opslab";
/// The controller's name in Events.
pub const REPORTER: &str = "opslab-controller";
/// The `source` of Incidents in the store.
const SOURCE: &str = "kube";
/// A resync, in case a change was missed; sessions wake their Incident themselves.
const RESYNC: Duration = Duration::from_secs(300);

/// What the Kubernetes reconciler shares.
pub struct KubeContext {
    pub ctx: Arc<Context>,
    pub client: Client,
    /// Who publishes the Events.
    reporter: Reporter,
    /// One Recorder per Incident attempt, by uid: a Recorder folds repeats of an Event into one
    /// series (its key leaves the note out), so a new attempt's Events start new series.
    recorders: Mutex<HashMap<String, (u32, Recorder)>>,
    /// Per-Incident backoff after failed reconciles; a success forgets it.
    failures: Mutex<HashMap<ObjectRef<Incident>, ExponentialBackoff>>,
    /// Only the Incidents it selects are this controller's (`--incident-selector`).
    pub incident_selector: Option<crate::label_selector::LabelSelector>,
}

impl KubeContext {
    pub fn new(ctx: Arc<Context>, client: Client, instance: Option<String>) -> KubeContext {
        KubeContext {
            ctx,
            client,
            reporter: Reporter {
                controller: REPORTER.into(),
                instance,
            },
            recorders: Mutex::default(),
            failures: Mutex::default(),
            incident_selector: None,
        }
    }

    /// The Recorder of this attempt of the Incident `uid` (a new one when the attempt is new).
    fn recorder(&self, uid: &str, attempt: u32) -> Recorder {
        let mut recorders = self
            .recorders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match recorders.get(uid) {
            Some((known, recorder)) if *known == attempt => recorder.clone(),
            _ => {
                let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                recorders.insert(uid.to_string(), (attempt, recorder.clone()));
                recorder
            }
        }
    }

    /// The Incident is gone: so are its Event series.
    fn forget_recorder(&self, uid: &str) {
        self.recorders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(uid);
    }

    /// The wait before this Incident's next retry: 1 s, then doubling up to 5 min, each with up to
    /// as much again of jitter; a successful reconcile starts it over.
    pub fn retry_delay(&self, object: &ObjectRef<Incident>) -> Duration {
        self.failures()
            .entry(object.clone())
            .or_insert_with(new_backoff)
            .next()
            .unwrap_or(MAX_BACKOFF)
    }

    fn failures(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Incident>, ExponentialBackoff>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client for `settings`: the kubeconfig named, or the inferred one.
pub async fn client(settings: &KubeSettings) -> Result<Client> {
    Ok(Client::try_from(config(settings).await?)?)
}

/// The client's configuration for `settings`: the kubeconfig named, or the inferred one. Its
/// requests say who sends them: the API server names the field manager of an update without one
/// (the finalizer helper's patches) after the user agent, else `unknown`.
pub async fn config(settings: &KubeSettings) -> Result<kube::Config> {
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|error| Error::KubeConfig(format!("{}: {error}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|error| Error::KubeConfig(format!("{}: {error}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|error| Error::KubeConfig(error.to_string()))?,
    };
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(concat!("opslab/", env!("CARGO_PKG_VERSION"))),
    ));
    Ok(config)
}

/// Runs the controller (as leader, if elected) until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    settings: &KubeSettings,
    wake: mpsc::UnboundedReceiver<Wake>,
    shutdown: CancellationToken,
) -> Result<()> {
    let client = client(settings).await?;
    // Events name the replica that published them: its lease identity (also what its spare
    // sandboxes carry), with or without leader election.
    let identity = settings.leader_election.as_ref().map_or_else(
        || ctx.config.sandbox.replica.clone(),
        |lease| lease.identity.clone(),
    );
    let mut kctx = KubeContext::new(ctx.clone(), client.clone(), Some(identity));
    kctx.incident_selector = settings.incident_selector.clone();
    let kctx = Arc::new(kctx);
    match &settings.leader_election {
        None => run_controller(kctx, wake, shutdown).await,
        Some(lease) => {
            let readiness = ctx.readiness.clone();
            leader::run_as_leader(
                client,
                lease,
                shutdown,
                // A follower is ready: it is a healthy standby (a rollout must not wait on it).
                move || readiness.mark_synced(),
                |leadership| run_controller(kctx, wake, leadership),
            )
            .await
        }
    }
}

/// kube-runtime's Controller on every namespace's Incidents, until `shutdown`.
pub async fn run_controller(
    kctx: Arc<KubeContext>,
    wake: mpsc::UnboundedReceiver<Wake>,
    shutdown: CancellationToken,
) -> Result<()> {
    let incidents: Api<Incident> = Api::all(kctx.client.clone());
    // Fail at start, with a clear error, when the CRD is missing or RBAC forbids the list.
    incidents
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|error| {
            warn!(%error, "cannot list Incidents: is the CRD installed (opslab crd | kubectl apply -f -) and may this account list incidents.opslab.dev?");
            Error::Kube(error)
        })?;
    // The watch is ours, so that its first complete listing is seen here: readiness and the phase
    // gauge follow the reflector's store. (A second waiter on the store's readiness would race
    // the controller's own wait: that future keeps one waker, and the loser is never woken.)
    let (reader, writer) = reflector::store();
    let observed = {
        let reader = reader.clone();
        let kctx = kctx.clone();
        let mut listed = false;
        move |event: &watcher::Event<Incident>| {
            if matches!(event, watcher::Event::InitDone) && !listed {
                listed = true;
                kctx.ctx.readiness.mark_synced();
                info!("Incidents listed: ready");
            }
            if listed {
                let incidents = reader.state();
                kctx.ctx.metrics.incidents_by_phase(&phase_counts(
                    incidents.iter().map(|incident| &**incident),
                ));
            }
        }
    };
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = &kctx.incident_selector {
        config = config.labels_from(selector.selector());
    }
    let objects = watcher(incidents, config)
        .reflect(writer)
        .inspect_ok(observed)
        .applied_objects();
    let controller = Controller::for_stream(objects, reader.clone());
    // Sessions report progress: reconcile that Incident (or all, when a slot came free).
    let wakes = wake_requests(wake, reader);
    let graceful = shutdown.clone();
    match &kctx.incident_selector {
        Some(selector) => info!(
            ?selector,
            "watching the Incidents it selects in every namespace"
        ),
        None => info!("watching Incidents in every namespace"),
    }
    controller
        .reconcile_on(wakes)
        .graceful_shutdown_on(async move { graceful.cancelled().await })
        .run(reconcile_incident, error_policy, kctx)
        .for_each(|result| async move {
            use kube::runtime::controller::Error as ControllerError;
            match result {
                // Logged by the error policy.
                Ok(_) | Err(ControllerError::ReconcilerFailed(..)) => {}
                // A session's wake-up for an Incident deleted meanwhile: nothing is left to do.
                Err(error @ ControllerError::ObjectNotFound(..)) => {
                    debug!(%error, "a wake-up for an Incident that is gone");
                }
                // The watch's own.
                Err(error) => warn!(%error, "controller"),
            }
        })
        .await;
    Ok(())
}

/// How many Incidents are in each phase (one without a status yet is Pending). Pure.
pub fn phase_counts<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
) -> std::collections::BTreeMap<Phase, i64> {
    let mut counts = std::collections::BTreeMap::new();
    for incident in incidents {
        let phase = incident
            .status
            .as_ref()
            .map_or(Phase::Pending, |status| status.phase);
        *counts.entry(phase).or_insert(0) += 1;
    }
    counts
}

/// Turns session wake-ups into object references for the controller.
fn wake_requests(
    wake: mpsc::UnboundedReceiver<Wake>,
    reader: kube::runtime::reflector::Store<Incident>,
) -> impl futures::Stream<Item = ObjectRef<Incident>> + Send + 'static {
    futures::stream::unfold(wake, |mut wake| async move {
        wake.recv().await.map(|item| (item, wake))
    })
    .flat_map(move |wake| {
        let refs: Vec<ObjectRef<Incident>> = match wake {
            Wake::One(key) => vec![ObjectRef::new(&key.name).within(&key.namespace)],
            Wake::All => reader
                .state()
                .iter()
                .map(|incident| ObjectRef::from_obj(incident.as_ref()))
                .collect(),
        };
        futures::stream::iter(refs)
    })
}

/// One reconcile, through the finalizer: Apply brings the session in line and writes the status;
/// Cleanup cancels the session and removes its sandbox, then the finalizer is removed.
pub async fn reconcile_incident(incident: Arc<Incident>, kctx: Arc<KubeContext>) -> Result<Action> {
    let key = ObjectKey::of(&incident)?;
    let span = tracing::info_span!("reconcile", incident = %key);
    let started = Instant::now();
    let api: Api<Incident> = Api::namespaced(kctx.client.clone(), &key.namespace);
    let object = ObjectRef::from_obj(incident.as_ref());
    let result = finalizer(&api, FINALIZER, incident, |event| async {
        match event {
            finalizer::Event::Apply(incident) => apply(&incident, &api, &kctx).await,
            finalizer::Event::Cleanup(incident) => clean_up(&incident, &kctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)));
    let error_label = result.as_ref().err().map(Error::metric_label);
    kctx.ctx.metrics.reconciled(started.elapsed(), error_label);
    if result.is_ok() {
        kctx.failures().remove(&object);
    }
    result
}

/// After a failure: retry this Incident with its own exponential backoff (with jitter, up to 5 min).
pub fn error_policy(incident: Arc<Incident>, error: &Error, kctx: Arc<KubeContext>) -> Action {
    let object = ObjectRef::from_obj(incident.as_ref());
    let delay = kctx.retry_delay(&object);
    warn!(incident = %object, %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

const MAX_BACKOFF: Duration = Duration::from_secs(300);

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn apply(incident: &Incident, api: &Api<Incident>, kctx: &KubeContext) -> Result<Action> {
    let ctx = &kctx.ctx;
    let generation = incident.metadata.generation.unwrap_or(1);
    let status = match incident.spec.validate() {
        // The API server checked the schema; these are the checks it cannot make.
        Err(message) => {
            warn!(%message, "invalid Incident");
            plan::invalid_status(
                incident.status.as_ref(),
                generation,
                &message,
                &jiff::Timestamp::now().to_string(),
            )
        }
        Ok(()) => reconcile::reconcile(incident, ctx).await?,
    };
    if incident.status.as_ref() != Some(&status) {
        write_status(api, incident, &status).await?;
        remember(incident, &status, ctx).await?;
        if let Some(event) = transition::event_for(incident.status.as_ref(), &status) {
            let reference = incident.object_ref(&());
            let recorder = kctx.recorder(
                incident.metadata.uid.as_deref().unwrap_or_default(),
                status.attempt,
            );
            // An Event is a courtesy: failing to publish one must not fail the reconcile.
            if let Err(error) = recorder.publish(&event, &reference).await {
                warn!(%error, reason = %event.reason, "could not publish an Event");
            }
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// The whole status, by server-side apply on the status subresource.
async fn write_status(
    api: &Api<Incident>,
    incident: &Incident,
    status: &IncidentStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": Incident::api_version(&()),
        "kind": Incident::kind(&()),
        "status": status,
    });
    api.patch_status(
        &incident.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Keeps the Incident in the store too, so the CLI (`opslab get incidents`) sees both modes alike.
async fn remember(incident: &Incident, status: &IncidentStatus, ctx: &Context) -> Result<()> {
    let key = ObjectKey::of(incident)?;
    let mut stored = incident.clone();
    stored.status = Some(status.clone());
    stored.metadata.managed_fields = None;
    let value = serde_json::to_value(&stored).map_err(|e| Error::Serialize(e.to_string()))?;
    ctx.store
        .put_incident(IncidentRecord {
            namespace: key.namespace,
            name: key.name,
            uid: incident.metadata.uid.clone().unwrap_or_default(),
            generation: incident.metadata.generation.unwrap_or(1),
            spec_hash: String::new(),
            source: SOURCE.into(),
            incident: value,
            error: None,
            updated_at: jiff::Timestamp::now().to_string(),
        })
        .await?;
    Ok(())
}

async fn clean_up(incident: &Incident, kctx: &KubeContext) -> Result<Action> {
    let key = ObjectKey::of(incident)?;
    let uid = incident.required_uid()?;
    info!(incident = %key, "the Incident is being deleted: cancelling its session");
    reconcile::cleanup(uid, &kctx.ctx).await?;
    // The finalizer promises a removed sandbox: wait for the cancelled task to finish its clean-up.
    kctx.ctx.sessions.stopped(uid).await;
    kctx.forget_recorder(uid);
    kctx.ctx
        .store
        .delete_incident(&key.namespace, &key.name)
        .await?;
    Ok(Action::await_change())
}
