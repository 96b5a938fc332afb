//! The effect of a decision, in each mode: files mode writes the Incident as a manifest (atomically)
//! into the `alerts/` folder inside the watched folder; Kubernetes mode creates and patches the
//! Incident through the API. Both read the group's Incidents back for the next decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use super::decide::{Change, Filed, NewIncident, Seen};
use super::{ALERTS_ANNOTATION, GROUP_LABEL, SEQUENCE_ANNOTATION};
use crate::ObjectKey;
use crate::incident::Incident;
use crate::source::files::{ALERTS_DIR, StatusFile, status_path};
use crate::source::manifest;

/// Where the intake files Incidents.
#[derive(Clone)]
pub enum Target {
    /// The watched folder of files mode.
    Files { dir: PathBuf },
    /// The Kubernetes API.
    Kube { client: kube::Client },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Files { dir } => write!(f, "files({})", dir.display()),
            Target::Kube { .. } => f.write_str("kube"),
        }
    }
}

/// Why filing failed: the sender is told to try again (503), nothing half-done is left.
#[derive(Debug, thiserror::Error)]
pub enum FilingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding the Incident: {0}")]
    Encode(String),
    #[error("the Incident {0} is gone")]
    Gone(ObjectKey),
}

/// One Incident of the group, as found, with what an update needs.
#[derive(Clone, Debug)]
pub struct Found {
    pub filed: Filed,
    pub incident: Incident,
    /// Its manifest (files mode).
    pub path: Option<PathBuf>,
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

fn in_group(incident: &Incident, hash: &str) -> bool {
    incident
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(GROUP_LABEL))
        .is_some_and(|value| value == hash)
}

impl Target {
    /// The group's Incidents in `namespace`.
    pub async fn group(&self, namespace: &str, hash: &str) -> Result<Vec<Found>, FilingError> {
        match self {
            Target::Files { dir } => {
                let dir = dir.clone();
                let (namespace, hash) = (namespace.to_string(), hash.to_string());
                tokio::task::spawn_blocking(move || files_group(&dir, &namespace, &hash))
                    .await
                    .map_err(|error| FilingError::Encode(error.to_string()))?
            }
            Target::Kube { client } => {
                let api: Api<Incident> = Api::namespaced(client.clone(), namespace);
                let list = api
                    .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={hash}")))
                    .await?;
                Ok(list
                    .items
                    .into_iter()
                    .filter_map(|incident| {
                        Some(Found {
                            filed: filed_of(&incident)?,
                            incident,
                            path: None,
                        })
                    })
                    .collect())
            }
        }
    }

    /// Files a new Incident.
    pub async fn create(&self, new: &NewIncident) -> Result<(), FilingError> {
        let mut incident = Incident::new(&new.key.name, new.spec.clone());
        incident.metadata.namespace = Some(new.key.namespace.clone());
        incident.metadata.labels = Some(new.labels.clone());
        incident.metadata.annotations = Some(new.annotations.clone());
        match self {
            Target::Files { dir } => {
                let path = dir
                    .join(ALERTS_DIR)
                    .join(format!("{}.{}.yaml", new.key.namespace, new.key.name));
                write_manifest(dir, path, incident, Mode::New).await
            }
            Target::Kube { client } => {
                let api: Api<Incident> = Api::namespaced(client.clone(), &new.key.namespace);
                api.create(&PostParams::default(), &incident).await?;
                Ok(())
            }
        }
    }

    /// Changes an Incident of the group (its spec and annotations; a person's other edits stay).
    pub async fn update(&self, found: &Found, change: &Change) -> Result<(), FilingError> {
        match self {
            Target::Files { dir } => {
                let path = found
                    .path
                    .clone()
                    .ok_or_else(|| FilingError::Gone(change.key.clone()))?;
                let mut incident = found.incident.clone();
                incident.status = None;
                if let Some(spec) = &change.spec {
                    incident.spec = spec.clone();
                }
                let annotations = incident.metadata.annotations.get_or_insert_default();
                for (name, value) in &change.annotations {
                    match value {
                        Some(value) => annotations.insert(name.clone(), value.clone()),
                        None => annotations.remove(name),
                    };
                }
                write_manifest(dir, path, incident, Mode::Replace).await
            }
            Target::Kube { client } => {
                let api: Api<Incident> = Api::namespaced(client.clone(), &change.key.namespace);
                let mut patch = serde_json::json!({
                    "metadata": {"annotations": change.annotations},
                });
                if let Some(spec) = &change.spec {
                    patch["spec"] = serde_json::to_value(spec)
                        .map_err(|error| FilingError::Encode(error.to_string()))?;
                }
                api.patch(
                    &change.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Ok(())
            }
        }
    }
}

/// The group's Incidents among the manifests of the `alerts/` folder, each with the phase its
/// status file shows.
fn files_group(dir: &Path, namespace: &str, hash: &str) -> Result<Vec<Found>, FilingError> {
    let folder = dir.join(ALERTS_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FilingError::Io { path, source }
    };
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(&folder)(error)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&folder))?.path();
        let visible_yaml = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
            });
        let regular = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file());
        if !visible_yaml || !regular {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() > manifest::MAX_MANIFEST_BYTES {
            continue;
        }
        for mut incident in manifest::parse(&bytes).incidents {
            let Ok(key) = ObjectKey::of(&incident) else {
                continue;
            };
            if key.namespace != namespace || !in_group(&incident, hash) {
                continue;
            }
            incident.status = read_status(dir, &key);
            if let Some(filed) = filed_of(&incident) {
                found.push(Found {
                    filed,
                    incident,
                    path: Some(path.clone()),
                });
            }
        }
    }
    Ok(found)
}

/// The status the controller wrote beside the manifests; None before it has.
fn read_status(dir: &Path, key: &ObjectKey) -> Option<crate::incident::IncidentStatus> {
    let text = std::fs::read_to_string(status_path(dir, key)).ok()?;
    let file: StatusFile = serde_saphyr::from_str(&text).ok()?;
    file.status
}

const HEADER: &str = "# Filed by opslab from an Alertmanager notification. It is an ordinary Incident:\n\
# edit it to change the ticket, delete this file to cancel its session. The opslab.dev/ labels and\n\
# annotations are how later notifications of the same alert group find it.\n";

/// Whether a manifest is new (a file already there is never overwritten) or replaces its own.
#[derive(Clone, Copy)]
enum Mode {
    New,
    Replace,
}

/// Writes the manifest atomically: a temp file in the folder, then a rename to the target.
async fn write_manifest(
    dir: &Path,
    path: PathBuf,
    incident: Incident,
    mode: Mode,
) -> Result<(), FilingError> {
    let folder = dir.join(ALERTS_DIR);
    let yaml = serde_saphyr::to_string(&incident)
        .map_err(|error| FilingError::Encode(error.to_string()))?;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FilingError::Io { path, source }
        };
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let mut file = tempfile::NamedTempFile::new_in(&folder).map_err(io(&folder))?;
        file.write_all(HEADER.as_bytes()).map_err(io(&path))?;
        file.write_all(yaml.as_bytes()).map_err(io(&path))?;
        file.as_file().sync_all().map_err(io(&path))?;
        match mode {
            Mode::New => file.persist_noclobber(&path),
            Mode::Replace => file.persist(&path),
        }
        .map_err(|error| io(&path)(error.error))?;
        Ok(())
    })
    .await
    .map_err(|error| FilingError::Encode(error.to_string()))?
}
