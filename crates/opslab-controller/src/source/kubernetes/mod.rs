//! Kubernetes mode: Incidents come from the API server and are reconciled by kube-runtime's
//! `Controller`. Each reconcile goes through the finalizer helper (a deleted Incident's session is
//! cancelled and its sandbox removed before the object goes), writes the whole status by
//! server-side apply on `/status`, and announces transitions as Events through one `Recorder`.

pub mod alert_filing;
pub mod leader;
pub mod transition;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

use crate::incident::{Incident, IncidentStatus};
use crate::reconcile::{self, Context, StatusSink};
use crate::session::Wake;
use crate::{Error, ObjectKey, Result};

pub use crate::config::{KubeSettings, LeaseSettings, WatchScope};
pub use crate::kube_client::{client, config};

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
    /// Only the Incidents it selects are this controller's (`--incident-selector`).
    pub incident_selector: Option<crate::label_selector::LabelSelector>,
    /// The namespaces whose Incidents it watches (`--watch-namespace`).
    pub watch: WatchScope,
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
            incident_selector: None,
            watch: WatchScope::Cluster,
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
    kctx.watch = settings.watch.clone();
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

/// kube-runtime's Controller on the watched namespaces' Incidents, until `shutdown`: one for every
/// namespace at once, or one per watched namespace (a Role grants no cluster-wide list, and a
/// reflector's store holds one listing: each watch relists into its own).
pub async fn run_controller(
    kctx: Arc<KubeContext>,
    wake: mpsc::UnboundedReceiver<Wake>,
    shutdown: CancellationToken,
) -> Result<()> {
    let scopes: Vec<Option<String>> = match &kctx.watch {
        WatchScope::Cluster => vec![None],
        WatchScope::Namespaces(namespaces) => namespaces.iter().cloned().map(Some).collect(),
    };
    let mut watched = Vec::with_capacity(scopes.len());
    for namespace in scopes {
        watched.push(Watch::open(&kctx.client, namespace).await?);
    }
    let listing = Arc::new(Listing {
        readers: watched.iter().map(|watch| watch.reader.clone()).collect(),
        listed: Mutex::new(vec![false; watched.len()]),
    });
    announce(&kctx, &watched);
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = &kctx.incident_selector {
        config = config.labels_from(selector.selector());
    }
    let mut routes = Vec::with_capacity(watched.len());
    let mut controllers = Vec::with_capacity(watched.len());
    for (index, watch) in watched.into_iter().enumerate() {
        // Sessions report progress: reconcile that Incident (or all, when a slot came free).
        let (route, wakes) = mpsc::unbounded_channel();
        routes.push((watch.namespace.clone(), route));
        let observed = Observed {
            index,
            listing: listing.clone(),
        };
        let controller = watch.controller(&config, observed, wakes, &kctx, &shutdown);
        controllers.push(controller);
    }
    // The router outlives no controller: it waits on sessions' wake-ups forever.
    let router = async move {
        route_wakes(wake, &routes).await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = futures::future::join_all(controllers) => {}
        () = router => {}
    }
    Ok(())
}

/// Logs what is watched.
fn announce(kctx: &KubeContext, watched: &[Watch]) {
    let namespaces: Vec<String> = watched
        .iter()
        .filter_map(|watch| watch.namespace.clone())
        .collect();
    match (&kctx.incident_selector, namespaces.is_empty()) {
        (Some(selector), true) => info!(
            ?selector,
            "watching the Incidents it selects in every namespace"
        ),
        (None, true) => info!("watching Incidents in every namespace"),
        (selector, false) => info!(
            ?selector,
            ?namespaces,
            "watching Incidents in these namespaces only"
        ),
    }
}

/// Which watch an event came from, and the listings it counts toward.
struct Observed {
    index: usize,
    listing: Arc<Listing>,
}

/// One watch of Incidents (a namespace's, or every namespace's) and the store it fills.
struct Watch {
    /// None: every namespace.
    namespace: Option<String>,
    incidents: Api<Incident>,
    reader: reflector::Store<Incident>,
    writer: reflector::store::Writer<Incident>,
}

impl Watch {
    /// The watch of one namespace (None: every namespace). Fails at start, with a clear error,
    /// when the CRD is missing or RBAC forbids the list.
    async fn open(client: &kube::Client, namespace: Option<String>) -> Result<Watch> {
        let incidents: Api<Incident> = match &namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        incidents
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|error| {
                let scope = namespace.as_deref().unwrap_or("every namespace");
                warn!(%error, scope, "cannot list Incidents: is the CRD installed (opslab crd | kubectl apply -f -) and may this account list incidents.opslab.dev there?");
                Error::Kube(error)
            })?;
        let (reader, writer) = reflector::store();
        Ok(Watch {
            namespace,
            incidents,
            reader,
            writer,
        })
    }

    /// kube-runtime's Controller on this watch, reconciling also on sessions' `wakes`, until
    /// `shutdown`.
    fn controller(
        self,
        config: &watcher::Config,
        observed: Observed,
        wakes: mpsc::UnboundedReceiver<Wake>,
        kctx: &Arc<KubeContext>,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = ()> + use<> {
        let Watch {
            incidents,
            reader,
            writer,
            ..
        } = self;
        // The watches are ours, so that each first complete listing is seen here: readiness and
        // the phase gauge follow the reflectors' stores. (A second waiter on a store's readiness
        // would race the controller's own wait: that future keeps one waker, and the loser is
        // never woken.)
        let observe = {
            let kctx = kctx.clone();
            move |event: &watcher::Event<Incident>| {
                observed.listing.observe(observed.index, event, &kctx.ctx);
            }
        };
        let objects = watcher(incidents, config.clone())
            .reflect(writer)
            .inspect_ok(observe)
            .applied_objects();
        let graceful = shutdown.clone();
        Controller::for_stream(objects, reader.clone())
            .reconcile_on(wake_requests(wakes, reader))
            .graceful_shutdown_on(async move { graceful.cancelled().await })
            .run(reconcile_incident, error_policy, kctx.clone())
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
    }
}

/// The first complete listing of every watch, and the stores they fill.
struct Listing {
    readers: Vec<reflector::Store<Incident>>,
    /// Which watches have listed their namespace once.
    listed: Mutex<Vec<bool>>,
}

impl Listing {
    /// After watch `index`'s event: ready once every watch has listed, and from then on the phase
    /// gauge counts the Incidents of all the stores.
    fn observe(&self, index: usize, event: &watcher::Event<Incident>, ctx: &Context) {
        let all_listed = {
            let mut listed = self
                .listed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = listed.iter().all(|listed| *listed);
            if matches!(event, watcher::Event::InitDone) {
                listed[index] = true;
            }
            let now = listed.iter().all(|listed| *listed);
            if now && !before {
                ctx.readiness.mark_synced();
                info!("Incidents listed: ready");
            }
            now
        };
        if all_listed {
            let incidents: Vec<Arc<Incident>> = self
                .readers
                .iter()
                .flat_map(|reader| reader.state())
                .collect();
            ctx.metrics.incidents_by_phase(&reconcile::phase_counts(
                incidents.iter().map(|incident| &**incident),
            ));
        }
    }
}

/// Forwards sessions' wake-ups to the controller watching the Incident's namespace (every
/// controller for `Wake::All`), until the sessions' sender is gone.
async fn route_wakes(
    mut wake: mpsc::UnboundedReceiver<Wake>,
    routes: &[(Option<String>, mpsc::UnboundedSender<Wake>)],
) {
    while let Some(request) = wake.recv().await {
        for (namespace, route) in routes {
            let concerned = match (&request, namespace) {
                (Wake::One(key), Some(namespace)) => key.namespace == *namespace,
                (Wake::One(_), None) | (Wake::All, _) => true,
            };
            if concerned {
                let _ = route.send(request.clone());
            }
        }
    }
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
    let ctx = &kctx.ctx;
    let api: Api<Incident> = Api::namespaced(kctx.client.clone(), &key.namespace);
    let sink = ApiSink {
        api: &api,
        kctx: &kctx,
    };
    let guarded = finalizer(&api, FINALIZER, incident, |event| async {
        match event {
            finalizer::Event::Apply(incident) => {
                reconcile::apply(&incident, ctx, &sink).await?;
                Ok(Action::requeue(RESYNC))
            }
            finalizer::Event::Cleanup(incident) => {
                info!(incident = %key, "the Incident is being deleted: cancelling its session");
                reconcile::delete(&incident, ctx, &sink).await?;
                Ok(Action::await_change())
            }
        }
    });
    let guarded = async {
        match guarded.await {
            // An earlier reconcile removed the finalizer and the object is gone; this one read it
            // from the cache before (a session's wake-up): nothing is left to do.
            Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(status)))
                if status.code == 404 =>
            {
                debug!(incident = %key, "the Incident was deleted meanwhile");
                Ok(Action::await_change())
            }
            result => result.map_err(|error| Error::Finalizer(Box::new(error))),
        }
    };
    reconcile::counted(ctx, &key, guarded)
        .instrument(span)
        .await
}

/// After a failure: retry this Incident with its own exponential backoff (with jitter, up to 5 min).
pub fn error_policy(incident: Arc<Incident>, error: &Error, kctx: Arc<KubeContext>) -> Action {
    let key = key_of(&ObjectRef::from_obj(incident.as_ref()));
    Action::requeue(reconcile::failed(&kctx.ctx, &key, error))
}

/// The namespace and name an object reference names.
fn key_of(object: &ObjectRef<Incident>) -> ObjectKey {
    ObjectKey::new(
        object
            .namespace
            .as_deref()
            .unwrap_or(crate::incident::DEFAULT_NAMESPACE),
        &object.name,
    )
}

/// Where Kubernetes mode keeps an Incident's status: the status subresource, written whole by
/// server-side apply; each transition is announced as an Event.
struct ApiSink<'a> {
    api: &'a Api<Incident>,
    kctx: &'a KubeContext,
}

impl StatusSink for ApiSink<'_> {
    fn source(&self) -> &'static str {
        SOURCE
    }

    async fn write(&self, incident: &Incident, status: &IncidentStatus) -> Result<()> {
        let patch = serde_json::json!({
            "apiVersion": Incident::api_version(&()),
            "kind": Incident::kind(&()),
            "status": status,
        });
        self.api
            .patch_status(
                &incident.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }

    async fn announce(&self, incident: &Incident, status: &IncidentStatus) {
        let Some(event) = transition::event_for(incident.status.as_ref(), status) else {
            return;
        };
        let reference = incident.object_ref(&());
        let recorder = self.kctx.recorder(
            incident.metadata.uid.as_deref().unwrap_or_default(),
            status.attempt,
        );
        // An Event is a courtesy: failing to publish one must not fail the reconcile.
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "could not publish an Event");
        }
    }

    /// The finalizer promises a removed sandbox: waits for the cancelled task's clean-up.
    async fn forget(&self, incident: &Incident) -> Result<()> {
        let uid = incident.required_uid()?;
        self.kctx.ctx.sessions.stopped(uid).await;
        self.kctx.forget_recorder(uid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_up_reaches_the_watch_of_its_namespace_and_a_free_slot_reaches_every_watch() {
        let (sessions, wake) = mpsc::unbounded_channel();
        let (to_a, mut at_a) = mpsc::unbounded_channel();
        let (to_b, mut at_b) = mpsc::unbounded_channel();
        let routes = vec![
            (Some("team-a".to_string()), to_a),
            (Some("team-b".to_string()), to_b),
        ];
        let one = Wake::One(ObjectKey::new("team-b", "outage"));
        sessions.send(one.clone()).unwrap();
        sessions.send(Wake::All).unwrap();
        drop(sessions);
        route_wakes(wake, &routes).await;
        drop(routes);
        assert_eq!(at_a.recv().await, Some(Wake::All));
        assert_eq!(at_a.recv().await, None);
        assert_eq!(at_b.recv().await, Some(one));
        assert_eq!(at_b.recv().await, Some(Wake::All));
        assert_eq!(at_b.recv().await, None);

        // Watching every namespace: every wake-up.
        let (sessions, wake) = mpsc::unbounded_channel();
        let (to_all, mut at_all) = mpsc::unbounded_channel();
        sessions.send(Wake::One(ObjectKey::new("x", "y"))).unwrap();
        drop(sessions);
        route_wakes(wake, &[(None, to_all)]).await;
        assert_eq!(
            at_all.recv().await,
            Some(Wake::One(ObjectKey::new("x", "y")))
        );
    }
}
