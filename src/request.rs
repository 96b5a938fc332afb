//! `opslab retry` and `opslab cancel`: ask the controller to start a new attempt of an Incident or
//! to stop its running session. Files mode writes the request beside the manifests (never into
//! them); Kubernetes mode sets the request annotation through the API, as `kubectl annotate` would.

use kube::api::{Api, Patch, PatchParams};
use opslab::ObjectKey;
use opslab::audit::IncidentContent;
use opslab::incident::DEFAULT_NAMESPACE;
use opslab::incident::{Incident, Phase};
use opslab::source::requests::{self, Request};

use crate::cli::{RequestArgs, SourceKind};

/// Makes the request; returns what to tell the user.
pub async fn run(request: Request, args: RequestArgs) -> anyhow::Result<String> {
    let key = match args.incident.split_once('/') {
        Some((namespace, name)) => ObjectKey::new(namespace, name),
        None => ObjectKey::new(DEFAULT_NAMESPACE, &args.incident),
    };
    // The value is written beside the manifests (or onto the object): a secret pasted into the
    // reason is redacted like everything stored.
    let value = opslab::audit::Redactor::default().redact(&Request::value(
        jiff::Timestamp::now(),
        &who(),
        args.reason.as_deref(),
    ));
    match args.source {
        SourceKind::Files => {
            let Some(dir) = &args.incidents else {
                anyhow::bail!(
                    "files mode needs the controller's Incidents folder: --incidents DIR (or \
                     OPSLAB_INCIDENTS); for a cluster, use --source kube"
                );
            };
            let (store, location) = crate::commands::open_existing(&args.store).await?;
            let Some(record) = store.incident(&key.namespace, &key.name).await? else {
                anyhow::bail!("no Incident {key} is known to the store at {location}");
            };
            let invalid = |why: &dyn std::fmt::Display| {
                anyhow::anyhow!("{key} is not a valid Incident: {why}")
            };
            let incident: Incident = match &record.content {
                IncidentContent::Incident(stored) => stored.decode().map_err(|e| invalid(&e))?,
                IncidentContent::Problem { error } => return Err(invalid(error)),
            };
            request.check(&key, phase_of(&incident))?;
            requests::write(dir, &key, request, &value)?;
        }
        SourceKind::Kube => {
            let client = match &args.kubeconfig {
                Some(path) => {
                    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                    let options = kube::config::KubeConfigOptions::default();
                    kube::Client::try_from(
                        kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?,
                    )?
                }
                None => kube::Client::try_default().await?,
            };
            let api: Api<Incident> = Api::namespaced(client, &key.namespace);
            let Some(incident) = api.get_opt(&key.name).await? else {
                anyhow::bail!("no Incident {key} on the cluster");
            };
            request.check(&key, phase_of(&incident))?;
            let patch = serde_json::json!({
                "metadata": {"annotations": {request.annotation(): value}}
            });
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    let done = match request {
        Request::Retry => "a new attempt starts shortly",
        Request::Cancel => "the running session stops shortly",
    };
    Ok(format!(
        "{key}: {} requested ({value}); {done}\n",
        request.annotation()
    ))
}

fn phase_of(incident: &Incident) -> Phase {
    incident
        .status
        .as_ref()
        .map_or(Phase::Pending, |status| status.phase)
}

/// Who is asking, as the trail will say it.
fn who() -> String {
    ["OPSLAB_USER", "SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "an unnamed user".into())
}
