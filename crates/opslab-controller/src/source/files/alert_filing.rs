//! Where the alert intake files Incidents in files mode: manifests, written atomically, in the
//! `alerts/` folder inside the watched folder, read like the folder's own.

use std::path::{Path, PathBuf};

use super::{ALERTS_DIR, StatusFile, status_path};
use crate::alerts::decide::{Change, NewIncident};
use crate::alerts::filing::{self, FilingError, Found, Target};
use crate::incident::{Incident, IncidentStatus};
use crate::source::manifest;
use crate::{Error, ObjectKey};

/// The watched folder, as the intake's target.
#[derive(Clone)]
pub struct FolderTarget {
    dir: PathBuf,
}

impl FolderTarget {
    pub fn new(dir: PathBuf) -> FolderTarget {
        FolderTarget { dir }
    }
}

impl std::fmt::Debug for FolderTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "files({})", self.dir.display())
    }
}

/// An Incident found in the folder: its manifest, and what the manifest holds.
#[derive(Clone, Debug)]
pub struct Manifest {
    path: PathBuf,
    incident: Incident,
}

impl Target for FolderTarget {
    type Handle = Manifest;

    async fn group(
        &self,
        namespace: &str,
        hash: &str,
    ) -> Result<Vec<Found<Manifest>>, FilingError> {
        let dir = self.dir.clone();
        let (namespace, hash) = (namespace.to_string(), hash.to_string());
        tokio::task::spawn_blocking(move || group(&dir, &namespace, &hash))
            .await
            .map_err(|error| FilingError::Encode(error.to_string()))?
    }

    async fn create(&self, new: &NewIncident) -> Result<(), FilingError> {
        let path = self
            .dir
            .join(ALERTS_DIR)
            .join(format!("{}.{}.yaml", new.key.namespace, new.key.name));
        write_manifest(&self.dir, path, filing::new_incident(new), Mode::New).await
    }

    async fn update(&self, found: &Found<Manifest>, change: &Change) -> Result<(), FilingError> {
        let mut incident = found.handle.incident.clone();
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
        write_manifest(
            &self.dir,
            found.handle.path.clone(),
            incident,
            Mode::Replace,
        )
        .await
    }
}

/// The error of an I/O operation on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilingError {
    let path = path.to_path_buf();
    move |source| FilingError::Target(Box::new(Error::Io { path, source }))
}

/// The group's Incidents among the manifests of the `alerts/` folder, each with the phase its
/// status file shows.
fn group(dir: &Path, namespace: &str, hash: &str) -> Result<Vec<Found<Manifest>>, FilingError> {
    let folder = dir.join(ALERTS_DIR);
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
            if key.namespace != namespace || !filing::in_group(&incident, hash) {
                continue;
            }
            incident.status = read_status(dir, &key);
            if let Some(filed) = filing::filed_of(&incident) {
                found.push(Found {
                    filed,
                    handle: Manifest {
                        path: path.clone(),
                        incident,
                    },
                });
            }
        }
    }
    Ok(found)
}

/// The status the controller wrote beside the manifests; None before it has.
fn read_status(dir: &Path, key: &ObjectKey) -> Option<IncidentStatus> {
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
