//! From a source's change to the written status, the same for every source: the one part that
//! differs (where the status goes, and what is said when it changes) is the source's [`StatusSink`].

use std::future::Future;

use tracing::{debug, warn};

use super::{Context, plan};
use crate::audit::{IncidentContent, IncidentRecord, StoredIncident};
use crate::incident::{Incident, IncidentStatus};
use crate::{Error, ObjectKey, Result};

/// Where a source keeps an Incident's status: files mode a status file, Kubernetes mode the
/// object's status subresource (and its Events). The store keeps a copy of every source's.
pub trait StatusSink: Sync {
    /// The store's `source` of this source's Incidents.
    fn source(&self) -> &'static str;

    /// The hash of the spec the source compares on a restart, kept with the stored copy ("" when
    /// the source keeps none).
    fn spec_hash(&self) -> &str {
        ""
    }

    /// Writes the whole status where the source keeps it. A failure fails the reconcile, which is
    /// tried again.
    fn write(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Says what changed, once the new status is written (Kubernetes mode: an Event). A courtesy:
    /// it never fails the reconcile.
    fn announce(
        &self,
        _incident: &Incident,
        _status: &IncidentStatus,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The Incident is gone and its session cleaned up: drops what the source kept of it.
    fn forget(&self, incident: &Incident) -> impl Future<Output = Result<()>> + Send;
}

/// One reconcile of an Incident as its source sees it now: checks the spec, brings the session in
/// line ([`super::reconcile`]) and, when the status changed, writes it through `sink`, keeps a copy
/// in the store and announces it. Returns the status written, or None when it had not changed.
pub async fn apply<S: StatusSink>(
    incident: &Incident,
    ctx: &Context,
    sink: &S,
) -> Result<Option<IncidentStatus>> {
    let status = match incident.spec.validate() {
        // A source checks what it can (an API server the schema); these are the checks it cannot.
        Err(invalid) => {
            warn!(message = %invalid, "invalid Incident");
            plan::invalid_status(
                incident.status.as_ref(),
                incident.metadata.generation.unwrap_or(1),
                &invalid.to_string(),
                &jiff::Timestamp::now().to_string(),
            )
        }
        Ok(()) => super::reconcile(incident, ctx).await?,
    };
    if incident.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    sink.write(incident, &status).await?;
    keep(incident, &status, ctx, sink).await;
    sink.announce(incident, &status).await;
    Ok(Some(status))
}

/// The Incident is gone: its session is cancelled and its sandbox removed ([`super::cleanup`]),
/// then the source and the store forget it. Every step is tried; the first failure is returned.
pub async fn delete<S: StatusSink>(incident: &Incident, ctx: &Context, sink: &S) -> Result<()> {
    let key = ObjectKey::of(incident)?;
    let cleaned = match &incident.metadata.uid {
        Some(uid) => super::cleanup(uid, ctx).await,
        None => Ok(()),
    };
    let forgotten = sink.forget(incident).await;
    let dropped = ctx
        .store
        .delete_incident(&key.namespace, &key.name)
        .await
        .map_err(Error::from);
    cleaned.and(forgotten).and(dropped)
}

/// Keeps the Incident with its new status in the store, so that the CLI sees every source alike.
/// The source's own copy is written already: a failing store is said by the store's health (once,
/// then as reminders), not by every status write.
async fn keep<S: StatusSink>(
    incident: &Incident,
    status: &IncidentStatus,
    ctx: &Context,
    sink: &S,
) {
    let kept = match record(incident, status, sink.source(), sink.spec_hash()) {
        Ok(record) => ctx.store.put_incident(record).await.map_err(Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = kept {
        // (The reconcile's span names the Incident.)
        if ctx.store.health().problem().is_some() {
            debug!(%error, "could not keep the status in the store");
        } else {
            warn!(%error, "could not keep the status in the store");
        }
    }
}

/// The store's row of an Incident with its status (without the server's field bookkeeping).
fn record(
    incident: &Incident,
    status: &IncidentStatus,
    source: &str,
    spec_hash: &str,
) -> Result<IncidentRecord> {
    let key = ObjectKey::of(incident)?;
    let mut stored = incident.clone();
    stored.status = Some(status.clone());
    stored.metadata.managed_fields = None;
    let value = serde_json::to_value(&stored).map_err(|e| Error::Serialize(e.to_string()))?;
    Ok(IncidentRecord {
        namespace: key.namespace,
        name: key.name,
        source: source.to_string(),
        content: IncidentContent::Incident(StoredIncident {
            uid: incident.metadata.uid.clone().unwrap_or_default(),
            generation: incident.metadata.generation.unwrap_or(1),
            spec_hash: spec_hash.to_string(),
            incident: value,
        }),
        updated_at: jiff::Timestamp::now(),
    })
}
