//! Results go back out: when an Incident reaches a terminal phase (and, if asked, when a session
//! starts), a notification goes to each configured receiver, a Slack-compatible webhook or any
//! webhook taking CloudEvents.
//!
//! The reconciler, shared by both sources, calls [`Notifier::observe`] with the status it is about
//! to write; that call never waits on a receiver. A notification is due once per terminal
//! transition: the status before says otherwise, and the session's trail holds no notification of
//! the same kind yet. Each receiver's delivery is queued (recorded `queued` in the trail), then
//! every attempt is recorded; after a restart, the deliveries the trail shows unfinished continue
//! where they stopped, and the ones it shows finished are never sent again.

pub mod deliver;
pub mod message;
pub mod settings;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tracing::warn;

use crate::audit::{Delivery, EventBody, Store};
use crate::incident::{Incident, IncidentStatus};
use crate::metrics::Metrics;
use deliver::{Courier, Rendered};
pub use message::{CommandLine, Notice, What};
pub use settings::{NotifyArgs, NotifyConfig, Receiver, ReceiverKind};

/// Deliveries in flight at once; the rest wait in the queue.
const CONCURRENT_DELIVERIES: usize = 32;

/// What the reconcile just saw calls for. Pure.
///
/// `started`: the reconcile started a session. A terminal phase is news when the status before
/// was not terminal for the same session (a restart that finds the status already terminal
/// resumes unfinished deliveries instead; see [`Notifier::observe`]).
pub fn due(
    previous: Option<&IncidentStatus>,
    now: &IncidentStatus,
    started: bool,
    on_start: bool,
) -> Option<What> {
    now.session_id.as_ref()?;
    if started {
        return on_start.then_some(What::Started);
    }
    if !now.phase.is_terminal() {
        return None;
    }
    let already = previous.is_some_and(|previous| {
        previous.phase.is_terminal() && previous.session_id == now.session_id
    });
    (!already).then_some(What::Ended(now.phase))
}

/// Which receivers still have a delivery to finish, from the trail's notification records of one
/// notice, and the attempt each continues with. A receiver the records never name is not added:
/// it was configured after the notice was queued. Pure.
pub fn unfinished(records: &[(String, u32, Delivery)]) -> BTreeMap<String, u32> {
    let mut last: BTreeMap<String, (u32, Delivery)> = BTreeMap::new();
    for (receiver, attempt, outcome) in records {
        let entry = last.entry(receiver.clone()).or_insert((*attempt, *outcome));
        if *attempt >= entry.0 {
            *entry = (*attempt, *outcome);
        }
    }
    last.into_iter()
        .filter(|(_, (_, outcome))| !outcome.is_final())
        .map(|(receiver, (attempt, _))| (receiver, attempt + 1))
        .collect()
}

/// Sends notifications; cheap to clone. With no receivers it does nothing.
#[derive(Clone)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    courier: Courier,
    queue: mpsc::Sender<Job>,
    /// (session id, notice) this process has queued or found finished: looked up in the store once.
    seen: Mutex<HashSet<(String, String)>>,
}

struct Job {
    rendered: Arc<Rendered>,
    receivers: Vec<(Receiver, u32)>,
}

impl Notifier {
    /// Starts the delivery worker (on the current Tokio runtime).
    pub fn start(config: NotifyConfig, store: Store, metrics: Arc<Metrics>) -> Notifier {
        if config.receivers.is_empty() {
            return Notifier { inner: None };
        }
        for receiver in &config.receivers {
            tracing::info!(receiver = %receiver.name, kind = receiver.kind.as_str(), host = %receiver.host(), "notifications go to this receiver");
        }
        let courier = Courier {
            client: Courier::client(&config),
            redactor: store.redactor(),
            store,
            metrics,
            config: Arc::new(config),
        };
        let (queue, jobs) = mpsc::channel(settings::QUEUE_CAPACITY);
        tokio::spawn(work(courier.clone(), jobs));
        Notifier {
            inner: Some(Arc::new(Inner {
                courier,
                queue,
                seen: Mutex::default(),
            })),
        }
    }

    /// A notifier that sends nothing.
    pub fn off() -> Notifier {
        Notifier { inner: None }
    }

    /// Called by the reconciler with the Incident as observed and the status it will write;
    /// queues what is due. Never waits on a receiver, and never fails the reconcile: a store that
    /// cannot be read is tried again at a later reconcile.
    pub async fn observe(&self, incident: &Incident, status: &IncidentStatus, started: bool) {
        let Some(inner) = &self.inner else {
            return;
        };
        let on_start = inner.courier.config.on_start;
        match due(incident.status.as_ref(), status, started, on_start) {
            Some(what) => inner.queue_due(incident, status, what).await,
            // A terminal Incident seen for the first time since the controller started: finish
            // what the trail shows unfinished.
            None if status.phase.is_terminal() => {
                inner
                    .resume(incident, status, What::Ended(status.phase))
                    .await
            }
            None => {}
        }
    }
}

impl Inner {
    /// Marks (session, notice) handled by this process; false when it already was.
    fn claim(&self, session_id: &str, notice: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((session_id.to_string(), notice.to_string()))
    }

    fn release(&self, session_id: &str, notice: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(session_id.to_string(), notice.to_string()));
    }

    /// The trail's notification records of this notice: (receiver, attempt, outcome).
    async fn records(
        &self,
        session_id: &str,
        notice: &str,
    ) -> Result<Vec<(String, u32, Delivery)>, crate::audit::StoreError> {
        let events = self
            .courier
            .store
            .events_of_kind(session_id, "notification")
            .await?;
        Ok(events
            .into_iter()
            .filter_map(|event| match event.body {
                EventBody::Notification {
                    notice: recorded,
                    receiver,
                    attempt,
                    outcome,
                    ..
                } if recorded == notice => Some((receiver, attempt, outcome)),
                _ => None,
            })
            .collect())
    }

    async fn queue_due(&self, incident: &Incident, status: &IncidentStatus, what: What) {
        let Some(session_id) = status.session_id.as_deref() else {
            return;
        };
        let notice = what.notice();
        if !self.claim(session_id, &notice) {
            return;
        }
        // A status write that failed after the notice was queued brings the transition back: the
        // trail says it was queued already.
        let records = match self.records(session_id, &notice).await {
            Ok(records) => records,
            Err(error) => {
                // Sending matters more than the trail: send, at the risk of a second copy later.
                warn!(%error, "cannot read the trail's notifications; sending anyway");
                Vec::new()
            }
        };
        let receivers: Vec<(Receiver, u32)> = if records.is_empty() {
            self.courier
                .config
                .receivers
                .iter()
                .map(|receiver| (receiver.clone(), 1))
                .collect()
        } else {
            self.receivers_to_resume(&records)
        };
        self.send(incident, status, what, receivers, records.is_empty())
            .await;
    }

    async fn resume(&self, incident: &Incident, status: &IncidentStatus, what: What) {
        let Some(session_id) = status.session_id.as_deref() else {
            return;
        };
        let notice = what.notice();
        if !self.claim(session_id, &notice) {
            return;
        }
        match self.records(session_id, &notice).await {
            Ok(records) => {
                let receivers = self.receivers_to_resume(&records);
                if !receivers.is_empty() {
                    tracing::info!(session = %session_id, %notice, receivers = receivers.len(), "resuming unfinished notifications");
                    self.send(incident, status, what, receivers, false).await;
                }
            }
            Err(error) => {
                warn!(%error, "cannot read the trail's notifications; looking again later");
                self.release(session_id, &notice);
            }
        }
    }

    fn receivers_to_resume(&self, records: &[(String, u32, Delivery)]) -> Vec<(Receiver, u32)> {
        let unfinished = unfinished(records);
        self.courier
            .config
            .receivers
            .iter()
            .filter_map(|receiver| {
                unfinished
                    .get(&receiver.name)
                    .map(|attempt| (receiver.clone(), *attempt))
            })
            .collect()
    }

    /// Renders the notice, records it queued (when new), and hands it to the worker.
    async fn send(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
        what: What,
        receivers: Vec<(Receiver, u32)>,
        new: bool,
    ) {
        if receivers.is_empty() {
            return;
        }
        let rendered = match self.render(incident, status, what).await {
            Some(rendered) => Arc::new(rendered),
            None => return,
        };
        if new {
            for (receiver, _) in &receivers {
                self.courier
                    .record_queued(&rendered, receiver, Delivery::Queued)
                    .await;
            }
        }
        let job = Job {
            rendered: rendered.clone(),
            receivers,
        };
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.queue.try_send(job)
        {
            warn!(notice = %rendered.notice, "the notification queue is full; notification dropped");
            for (receiver, _) in &job.receivers {
                self.courier
                    .record_queued(&rendered, receiver, Delivery::Dropped)
                    .await;
            }
        }
    }

    async fn render(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
        what: What,
    ) -> Option<Rendered> {
        let session_id = status.session_id.clone()?;
        let store = &self.courier.store;
        let commands = match store.commands(&session_id).await {
            Ok(commands) => commands,
            Err(error) => {
                warn!(%error, "cannot read the session's commands; the notification lists none");
                Vec::new()
            }
        };
        let time = match what {
            What::Started => status.started_at,
            What::Ended(_) => status.finished_at,
        }
        .unwrap_or_else(jiff::Timestamp::now)
        .to_string();
        let notice = Notice {
            what,
            namespace: incident
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| crate::incident::DEFAULT_NAMESPACE.into()),
            name: incident.metadata.name.clone().unwrap_or_default(),
            uid: incident.metadata.uid.clone().unwrap_or_default(),
            title: incident.spec.title.clone(),
            severity: incident.spec.severity,
            session_id: session_id.clone(),
            status: status.clone(),
            commands: commands
                .into_iter()
                .map(|command| CommandLine {
                    command: command.command,
                    exit_code: command.exit_code,
                })
                .collect(),
            time,
            console_url: self.courier.config.console_url.clone(),
        }
        .redacted(&self.courier.redactor);
        let encode = |mut value: serde_json::Value| {
            // Once more on the whole payload: nothing leaves unredacted.
            self.courier.redactor.redact_json(&mut value);
            serde_json::to_vec(&value).unwrap_or_default()
        };
        let cloud_event = serde_json::to_value(message::cloud_event(&notice)).ok()?;
        Some(Rendered {
            session_id,
            notice: what.notice(),
            id: notice.id(),
            slack: encode(message::slack_message(&notice)),
            cloud_event: encode(cloud_event),
        })
    }
}

impl Courier {
    async fn record_queued(&self, rendered: &Rendered, receiver: &Receiver, outcome: Delivery) {
        self.metrics.notification(&receiver.name, outcome.as_str());
        let body = EventBody::Notification {
            notice: rendered.notice.clone(),
            id: rendered.id.clone(),
            receiver: receiver.name.clone(),
            attempt: 0,
            outcome,
            status_code: None,
            error: (outcome == Delivery::Dropped)
                .then(|| "the notification queue was full".to_string()),
        };
        if let Err(error) = self.store.append(&rendered.session_id, body).await {
            warn!(receiver = %receiver.name, %error, "could not record a queued notification");
        }
    }
}

/// The worker: each job's deliveries run as their own tasks, at most [`CONCURRENT_DELIVERIES`]
/// at once, so one slow receiver does not hold up the others.
async fn work(courier: Courier, mut jobs: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    while let Some(job) = jobs.recv().await {
        for (receiver, first) in job.receivers {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let courier = courier.clone();
            let rendered = job.rendered.clone();
            tokio::spawn(async move {
                courier.deliver(rendered, receiver, first).await;
                drop(slot);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Phase;

    fn status(phase: Phase, session: &str) -> IncidentStatus {
        IncidentStatus {
            phase,
            session_id: Some(session.into()),
            ..IncidentStatus::default()
        }
    }

    #[test]
    fn a_terminal_phase_is_due_once_per_session() {
        let running = status(Phase::Investigating, "s1");
        let resolved = status(Phase::Resolved, "s1");
        assert_eq!(
            due(Some(&running), &resolved, false, false),
            Some(What::Ended(Phase::Resolved))
        );
        // Every later reconcile sees it terminal already.
        assert_eq!(due(Some(&resolved), &resolved, false, false), None);
        // No status yet (the first reconcile after files were restored without one).
        assert_eq!(
            due(None, &status(Phase::Failed, "s1"), false, false),
            Some(What::Ended(Phase::Failed))
        );
        // A new attempt's end is news again.
        assert_eq!(
            due(
                Some(&resolved),
                &status(Phase::Unresolved, "s2"),
                false,
                false
            ),
            Some(What::Ended(Phase::Unresolved))
        );
        assert_eq!(due(Some(&running), &running, false, true), None);
        // No session, nothing to tell (an invalid spec).
        let invalid = IncidentStatus {
            phase: Phase::Failed,
            ..IncidentStatus::default()
        };
        assert_eq!(due(None, &invalid, false, false), None);
    }

    #[test]
    fn a_start_is_due_only_when_asked_for() {
        let running = status(Phase::Investigating, "s1");
        assert_eq!(due(None, &running, true, false), None);
        assert_eq!(due(None, &running, true, true), Some(What::Started));
    }

    #[test]
    fn unfinished_deliveries_continue_after_their_last_attempt() {
        let records = vec![
            ("slack".to_string(), 0, Delivery::Queued),
            ("hook".to_string(), 0, Delivery::Queued),
            ("slack".to_string(), 1, Delivery::Retrying),
            ("hook".to_string(), 1, Delivery::Delivered),
            ("slack".to_string(), 2, Delivery::Retrying),
            ("late".to_string(), 0, Delivery::Queued),
        ];
        let left = unfinished(&records);
        assert_eq!(
            left.into_iter().collect::<Vec<_>>(),
            [("late".to_string(), 1), ("slack".to_string(), 3)]
        );
        let done = vec![
            ("slack".to_string(), 0, Delivery::Queued),
            ("slack".to_string(), 4, Delivery::Failed),
        ];
        assert!(unfinished(&done).is_empty());
    }
}
