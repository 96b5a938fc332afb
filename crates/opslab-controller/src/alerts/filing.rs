//! What the intake needs of the place it files Incidents in: the group's Incidents read back for the
//! next decision, a new one filed, one changed. The places themselves belong to the sources: the
//! watched folder of files mode, the API server of Kubernetes mode.

use std::collections::BTreeMap;
use std::future::Future;

use super::decide::{Change, Filed, NewIncident, Seen};
use super::{ALERTS_ANNOTATION, GROUP_LABEL, SEQUENCE_ANNOTATION};
use crate::ObjectKey;
use crate::incident::Incident;

/// Where the intake files Incidents. Its Debug form names the place in the log.
pub trait Target: std::fmt::Debug + Send + Sync + 'static {
    /// What the target needs to change an Incident it found.
    type Handle: Send + Sync;

    /// The group's Incidents in `namespace` (`hash` is the value of their [`GROUP_LABEL`]).
    fn group(
        &self,
        namespace: &str,
        hash: &str,
    ) -> impl Future<Output = Result<Vec<Found<Self::Handle>>, FilingError>> + Send;

    /// Files a new Incident.
    fn create(&self, new: &NewIncident) -> impl Future<Output = Result<(), FilingError>> + Send;

    /// Changes an Incident of the group (its spec and annotations; a person's other edits stay).
    fn update(
        &self,
        found: &Found<Self::Handle>,
        change: &Change,
    ) -> impl Future<Output = Result<(), FilingError>> + Send;
}

/// Why filing failed: the sender is told to try again (503), nothing half-done is left.
#[derive(Debug, thiserror::Error)]
pub enum FilingError {
    /// The target's own trouble (a file's I/O, the API's answer), in its words.
    #[error(transparent)]
    Target(Box<dyn std::error::Error + Send + Sync>),
    #[error("encoding the Incident: {0}")]
    Encode(String),
    #[error("the Incident {0} is gone")]
    Gone(ObjectKey),
}

/// One Incident of the group, as the target found it.
#[derive(Clone, Debug)]
pub struct Found<Handle> {
    /// What the decision reads of it.
    pub filed: Filed,
    pub handle: Handle,
}

/// The Incident a decision files, as any target stores it.
pub fn new_incident(new: &NewIncident) -> Incident {
    let mut incident = Incident::new(&new.key.name, new.spec.clone());
    incident.metadata.namespace = Some(new.key.namespace.clone());
    incident.metadata.labels = Some(new.labels.clone());
    incident.metadata.annotations = Some(new.annotations.clone());
    incident
}

/// What the intake reads of an Incident it filed.
pub fn filed_of(incident: &Incident) -> Option<Filed> {
    let key = ObjectKey::of(incident).ok()?;
    let annotations: BTreeMap<String, String> = incident.metadata.annotations.clone()?;
    let sequence = annotations
        .get(SEQUENCE_ANNOTATION)
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    // A person's edit that broke the list leaves an Incident that has seen nothing: the next
    // notification updates it rather than filing another.
    let seen: Vec<Seen> = annotations
        .get(ALERTS_ANNOTATION)
        .and_then(|value| serde_json::from_str(value).ok())
        .unwrap_or_default();
    Some(Filed {
        key,
        sequence,
        phase: incident.status.as_ref().map(|status| status.phase),
        spec: incident.spec.clone(),
        annotations,
        seen,
    })
}

/// Whether the Incident is of the group whose hash is `hash`.
pub fn in_group(incident: &Incident, hash: &str) -> bool {
    incident
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(GROUP_LABEL))
        .is_some_and(|value| value == hash)
}
