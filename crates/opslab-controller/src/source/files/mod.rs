//! Files mode: Incidents are YAML manifests in a folder, watched.
//!
//! The controller keeps what the API server would: each Incident's `uid`, its `generation` (moved
//! only when the spec changes) and its status, in the store, and mirrors the status to
//! `.status/<namespace>.<name>.yaml` in the folder ([`StatusFile`]). The user's manifests are never
//! written; the alert intake writes its own, in `alerts/` ([`alert_filing`]).

pub mod alert_filing;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::core::ObjectMeta;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache, new_debouncer,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use super::manifest::{self, ManifestError};
use super::requests::{self, REQUESTS_DIR};
use crate::audit::{IncidentContent, IncidentRecord, Redactor};
use crate::config::WatchMode;
use crate::incident::{Incident, IncidentStatus};
use crate::reconcile::{self, Context, StatusSink};
use crate::session::Wake;
use crate::{Error, ObjectKey, Result};

/// The folder, beside the manifests, that holds the status files.
pub const STATUS_DIR: &str = ".status";
/// The folder, inside the watched one, where the alert intake files its Incidents: its manifests
/// are read like the folder's own.
pub const ALERTS_DIR: &str = "alerts";
/// The `source` column of the store's incidents written by this source.
const SOURCE: &str = "files";
/// How long the folder must be quiet before a changed file is read: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often the debouncer looks for quiet files. Its default (a quarter of the debounce) wakes an
/// idle controller 200 times a second.
const DEBOUNCE_TICK: Duration = Duration::from_millis(10);
/// A full re-scan and reconcile of everything, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(30);

/// What a status file holds: which Incident (its identity and generation) and its status, redacted
/// as the store redacts. Not the spec, labels or annotations: the manifest beside it has them, and a
/// copy here would repeat whatever was pasted into the ticket.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
}

impl StatusFile {
    /// The status file of an Incident, its text redacted.
    pub fn of(incident: &Incident, redactor: &Redactor) -> Result<StatusFile> {
        let metadata = &incident.metadata;
        let file = StatusFile {
            api_version: Incident::api_version(&()).into_owned(),
            kind: Incident::kind(&()).into_owned(),
            metadata: ObjectMeta {
                name: metadata.name.clone(),
                namespace: metadata.namespace.clone(),
                uid: metadata.uid.clone(),
                generation: metadata.generation,
                creation_timestamp: metadata.creation_timestamp.clone(),
                ..ObjectMeta::default()
            },
            status: incident.status.clone(),
        };
        let serialize = |error: serde_json::Error| Error::Serialize(error.to_string());
        let mut value = serde_json::to_value(file).map_err(serialize)?;
        redactor.redact_json(&mut value);
        serde_json::from_value(value).map_err(serialize)
    }
}

/// One Incident the folder defines.
#[derive(Clone, Debug)]
struct Known {
    /// The Incident with the controller-kept metadata and its last status.
    incident: Incident,
    spec_hash: String,
}

/// A problem with a manifest, shown as its own row (named after the file) in `opslab get incidents`.
#[derive(Clone, Debug, PartialEq)]
struct Problem {
    path: PathBuf,
    message: String,
}

pub struct FilesSource {
    dir: PathBuf,
    watch: WatchMode,
    /// What each manifest file yielded when last read.
    files: BTreeMap<PathBuf, manifest::Parsed>,
    known: BTreeMap<ObjectKey, Known>,
    problems: BTreeMap<ObjectKey, Problem>,
    /// The retry and cancel requests of `.requests/`, laid over the manifests' annotations.
    requests: BTreeMap<ObjectKey, requests::Annotations>,
    /// Redacts the status files as the store redacts what it keeps (set with the secrets to
    /// redact when the source runs).
    redactor: Redactor,
}

impl FilesSource {
    pub fn new(dir: PathBuf, watch: WatchMode) -> FilesSource {
        FilesSource {
            dir,
            watch,
            files: BTreeMap::new(),
            known: BTreeMap::new(),
            problems: BTreeMap::new(),
            requests: BTreeMap::new(),
            redactor: Redactor::default(),
        }
    }

    /// Watches the folder and reconciles until `shutdown`.
    pub async fn run(
        mut self,
        ctx: Arc<Context>,
        mut wake: mpsc::UnboundedReceiver<Wake>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.redactor = Redactor::new(ctx.config.secret_values.clone());
        // The alert intake's folder is made (and watched) only when the intake is on, or when it
        // is there from an earlier run: its manifests are still Incidents.
        let alerts = ctx.config.alerts.is_some() || self.dir.join(ALERTS_DIR).is_dir();
        self.make_folders(alerts)?;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        // Kept alive for the loop: dropping the debouncer stops the watch.
        let _debouncer = match self.watch {
            WatchMode::Events => Some(self.watch_folders(alerts, events_tx)?),
            WatchMode::Poll(_) => None,
        };
        let polling = matches!(self.watch, WatchMode::Poll(_));
        let mut poll = tokio::time::interval(match self.watch {
            WatchMode::Poll(every) => every,
            WatchMode::Events => RESYNC,
        });
        info!(dir = %self.dir.display(), watch = ?self.watch, "watching for Incident manifests");

        self.restore(&ctx).await?;
        self.rescan_all();
        let (retry_tx, mut retries) = mpsc::unbounded_channel::<ObjectKey>();
        self.reconcile_all(&ctx, &retry_tx).await;
        ctx.readiness.mark_synced();
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(result) = events.recv() => match result {
                    Ok(batch) => self.files_changed(batch, &ctx, &retry_tx).await,
                    Err(errors) => {
                        warn!(?errors, "the folder watch failed; re-scanning the folder");
                        self.rescan_all();
                        self.reconcile_all(&ctx, &retry_tx).await;
                    }
                },
                Some(wake) = wake.recv() => match wake {
                    Wake::One(key) => self.reconcile_key(&ctx, &key, &retry_tx).await,
                    Wake::All => self.reconcile_all(&ctx, &retry_tx).await,
                },
                Some(key) = retries.recv() => self.reconcile_key(&ctx, &key, &retry_tx).await,
                _ = poll.tick(), if polling => {
                    self.rescan_all();
                    self.resolve(&ctx, &retry_tx).await;
                }
                _ = resync.tick() => {
                    self.rescan_all();
                    self.reconcile_all(&ctx, &retry_tx).await;
                    reconcile::collect_orphans(&ctx).await;
                }
            }
        }
        Ok(())
    }

    /// The status and requests folders, and the alert intake's when `alerts`.
    fn make_folders(&self, alerts: bool) -> Result<()> {
        let folders = [STATUS_DIR, REQUESTS_DIR, ALERTS_DIR];
        for folder in &folders[..if alerts { 3 } else { 2 }] {
            let path = self.dir.join(folder);
            std::fs::create_dir_all(&path).map_err(|source| Error::Io { path, source })?;
        }
        Ok(())
    }

    /// Watches the folder, its requests and (when `alerts`) the alert intake's folder: each
    /// debounced batch of changes goes to `events`.
    fn watch_folders(
        &self,
        alerts: bool,
        events: mpsc::UnboundedSender<DebounceEventResult>,
    ) -> Result<Debouncer<RecommendedWatcher, RecommendedCache>> {
        let forward = move |result: DebounceEventResult| {
            let _ = events.send(result);
        };
        let mut debouncer =
            new_debouncer(DEBOUNCE, Some(DEBOUNCE_TICK), forward).map_err(|source| {
                Error::Watch {
                    path: self.dir.clone(),
                    source,
                }
            })?;
        let watched = [
            self.dir.clone(),
            self.dir.join(REQUESTS_DIR),
            self.dir.join(ALERTS_DIR),
        ];
        for folder in &watched[..if alerts { 3 } else { 2 }] {
            debouncer
                .watch(folder, RecursiveMode::NonRecursive)
                .map_err(|source| Error::Watch {
                    path: folder.clone(),
                    source,
                })?;
        }
        Ok(debouncer)
    }

    /// Reads the manifests and requests a batch of changes touched, then acts on what changed.
    async fn files_changed(
        &mut self,
        batch: Vec<DebouncedEvent>,
        ctx: &Context,
        retry: &mpsc::UnboundedSender<ObjectKey>,
    ) {
        // Reads (ours included: inotify reports opens) change nothing.
        let paths: BTreeSet<PathBuf> = batch
            .into_iter()
            .filter(|event| !matches!(event.kind, EventKind::Access(_)))
            .flat_map(|event| event.event.paths)
            .collect();
        if paths.is_empty() {
            return;
        }
        debug!(?paths, "manifests changed");
        for path in paths {
            if self.is_manifest(&path) {
                self.read_file(&path);
            } else if path.parent() == Some(self.dir.join(REQUESTS_DIR).as_path()) {
                self.read_request(&path);
            }
        }
        self.resolve(ctx, retry).await;
    }

    /// Loads what the store remembers of this folder's Incidents: their uids, generations and
    /// statuses survive a restart, and an Incident deleted while the controller was down is found.
    async fn restore(&mut self, ctx: &Context) -> Result<()> {
        for record in ctx.store.incidents().await? {
            if record.source != SOURCE {
                continue;
            }
            let key = ObjectKey::new(&record.namespace, &record.name);
            let stored = match record.content {
                IncidentContent::Incident(stored) => stored,
                IncidentContent::Problem { error } => {
                    // Reported afresh by the scan, or dropped with its file. Its path is unknown
                    // here; a problem still there is reported again by the scan.
                    let problem = Problem {
                        path: PathBuf::new(),
                        message: error,
                    };
                    self.problems.insert(key, problem);
                    continue;
                }
            };
            match serde_json::from_value::<Incident>(stored.incident) {
                Ok(incident) => {
                    let spec_hash = stored.spec_hash;
                    self.known.insert(
                        key,
                        Known {
                            incident,
                            spec_hash,
                        },
                    );
                }
                Err(error) => {
                    warn!(incident = %key, %error, "the stored Incident does not decode; it is read anew from its manifest")
                }
            }
        }
        Ok(())
    }

    fn is_manifest(&self, path: &Path) -> bool {
        let visible = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| !name.starts_with('.'));
        let yaml = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extension == "yaml" || extension == "yml");
        let parent = path.parent();
        visible
            && yaml
            && (parent == Some(self.dir.as_path())
                || parent == Some(self.dir.join(ALERTS_DIR).as_path()))
    }

    /// Reads (or forgets, when it is gone) one manifest file.
    fn read_file(&mut self, path: &Path) {
        let meta = match entry_kind(&self.dir, path) {
            Entry::Gone => {
                self.files.remove(path);
                return;
            }
            Entry::Refused(problem) => {
                self.files.insert(path.to_path_buf(), file_problem(problem));
                return;
            }
            Entry::File(meta) => meta,
        };
        match meta {
            meta if meta.len() > manifest::MAX_MANIFEST_BYTES as u64 => {
                self.files.insert(
                    path.to_path_buf(),
                    file_problem(format!(
                        "the file is {} bytes; manifests are limited to {} bytes",
                        meta.len(),
                        manifest::MAX_MANIFEST_BYTES
                    )),
                );
                return;
            }
            _ => {}
        }
        let parsed = match std::fs::read(path) {
            Ok(bytes) => manifest::parse(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.files.remove(path);
                return;
            }
            Err(error) => file_problem(format!("cannot read: {error}")),
        };
        self.files.insert(path.to_path_buf(), parsed);
    }

    /// Reads (or forgets, when it is gone) one request file.
    fn read_request(&mut self, path: &Path) {
        let Some(key) = requests::key_of(path) else {
            return;
        };
        match requests::read(path) {
            Ok(Some(annotations)) => {
                self.requests.insert(key, annotations);
            }
            Ok(None) => {
                self.requests.remove(&key);
            }
            Err(error) => warn!(%error, "a request file cannot be read; it is ignored"),
        }
    }

    fn rescan_requests(&mut self) {
        let folder = self.dir.join(REQUESTS_DIR);
        let paths: Vec<PathBuf> = match std::fs::read_dir(&folder) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                warn!(dir = %folder.display(), %error, "cannot list the requests folder");
                return;
            }
        };
        let keys: BTreeSet<ObjectKey> = paths
            .iter()
            .filter_map(|path| requests::key_of(path))
            .collect();
        self.requests.retain(|key, _| keys.contains(key));
        for path in &paths {
            self.read_request(path);
        }
    }

    fn rescan_all(&mut self) {
        self.rescan_requests();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                error!(dir = %self.dir.display(), %error, "cannot list the Incidents folder");
                return;
            }
        };
        // The alert intake's folder too (it may not exist before the intake files anything).
        let alerts = std::fs::read_dir(self.dir.join(ALERTS_DIR))
            .into_iter()
            .flatten();
        let paths: Vec<PathBuf> = entries
            .chain(alerts)
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| self.is_manifest(path))
            .collect();
        self.files.retain(|path, _| paths.contains(path));
        for path in &paths {
            self.read_file(path);
        }
    }

    /// Turns what the files hold into Incidents and problems, then acts on what changed.
    async fn resolve(&mut self, ctx: &Context, retry: &mpsc::UnboundedSender<ObjectKey>) {
        let resolved = resolve(&self.dir, &self.files);
        self.delete_gone(ctx, &resolved).await;
        let mut changed = Vec::new();
        for (key, (incident, path)) in resolved.incidents {
            if self.admit(&key, incident, &path) {
                changed.push(key);
            }
        }
        self.report_problems(ctx, resolved.problems).await;
        for key in changed {
            self.reconcile_key(ctx, &key, retry).await;
        }
        self.count_phases(ctx);
    }

    /// Deletes the Incidents whose manifest is gone (or no longer names them).
    async fn delete_gone(&mut self, ctx: &Context, resolved: &Resolved) {
        let gone: Vec<ObjectKey> = self
            .known
            .keys()
            .filter(|key| !resolved.incidents.contains_key(*key) && !resolved.kept.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(known) = self.known.remove(&key) {
                self.delete(ctx, &key, &known).await;
            }
        }
    }

    /// Takes in an Incident as its manifest now says: a new one gets its identity, and the
    /// generation moves only with the spec. Whether it needs reconciling.
    fn admit(&mut self, key: &ObjectKey, mut incident: Incident, path: &Path) -> bool {
        if let Some(requests) = self.requests.get(key) {
            incident
                .metadata
                .annotations
                .get_or_insert_default()
                .extend(requests.clone());
        }
        let spec_hash = spec_hash(&incident);
        let Some(known) = self.known.get_mut(key) else {
            info!(incident = %key, file = %path.display(), "new Incident");
            incident.metadata = ObjectMeta {
                uid: Some(uuid::Uuid::new_v4().to_string()),
                generation: Some(1),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::now(),
                )),
                ..incident.metadata
            };
            let known = Known {
                incident,
                spec_hash,
            };
            self.known.insert(key.clone(), known);
            return true;
        };
        let metadata = &mut known.incident.metadata;
        if known.spec_hash == spec_hash {
            let labels_changed = metadata.labels != incident.metadata.labels
                || metadata.annotations != incident.metadata.annotations;
            if labels_changed {
                metadata.labels = incident.metadata.labels;
                metadata.annotations = incident.metadata.annotations;
            }
            return labels_changed || known.incident.status.is_none();
        }
        let generation = metadata.generation.unwrap_or(0) + 1;
        info!(incident = %key, generation, "the spec changed");
        metadata.generation = Some(generation);
        metadata.labels = incident.metadata.labels;
        metadata.annotations = incident.metadata.annotations;
        known.incident.spec = incident.spec;
        known.spec_hash = spec_hash;
        true
    }

    /// Logs and stores new or changed manifest problems; drops the fixed ones from the store.
    async fn report_problems(&mut self, ctx: &Context, problems: BTreeMap<ObjectKey, Problem>) {
        let fixed: Vec<ObjectKey> = self
            .problems
            .keys()
            .filter(|key| !problems.contains_key(*key))
            .cloned()
            .collect();
        for key in fixed {
            self.problems.remove(&key);
            if let Err(error) = ctx.store.delete_incident(&key.namespace, &key.name).await {
                warn!(%error, "could not drop a fixed manifest problem from the store");
            }
        }
        for (key, problem) in problems {
            if self.problems.get(&key) == Some(&problem) {
                continue;
            }
            error!(file = %problem.path.display(), "invalid Incident manifest: {}", problem.message);
            let record = IncidentRecord {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                source: SOURCE.into(),
                content: IncidentContent::Problem {
                    error: format!("{}: {}", problem.path.display(), problem.message),
                },
                updated_at: jiff::Timestamp::now(),
            };
            if let Err(error) = ctx.store.put_incident(record).await {
                warn!(%error, "could not store a manifest problem");
            }
            self.problems.insert(key, problem);
        }
    }

    async fn reconcile_all(&mut self, ctx: &Context, retry: &mpsc::UnboundedSender<ObjectKey>) {
        self.resolve(ctx, retry).await;
        let keys: Vec<ObjectKey> = self.known.keys().cloned().collect();
        for key in keys {
            self.reconcile_key(ctx, &key, retry).await;
        }
    }

    async fn reconcile_key(
        &mut self,
        ctx: &Context,
        key: &ObjectKey,
        retry: &mpsc::UnboundedSender<ObjectKey>,
    ) {
        let Some(known) = self.known.get(key) else {
            return;
        };
        let sink = self.sink(known);
        let span = tracing::info_span!("reconcile", incident = %key);
        let result = reconcile::counted(ctx, key, reconcile::apply(&known.incident, ctx, &sink))
            .instrument(span)
            .await;
        match result {
            Ok(Some(status)) => {
                if let Some(known) = self.known.get_mut(key) {
                    known.incident.status = Some(status);
                }
                self.count_phases(ctx);
            }
            Ok(None) => {}
            Err(error) => {
                let delay = reconcile::failed(ctx, key, &error);
                let (retry, key) = (retry.clone(), key.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = retry.send(key);
                });
            }
        }
    }

    /// Where this Incident's status goes.
    fn sink<'a>(&'a self, known: &'a Known) -> FolderSink<'a> {
        FolderSink {
            dir: &self.dir,
            redactor: &self.redactor,
            spec_hash: &known.spec_hash,
        }
    }

    fn count_phases(&self, ctx: &Context) {
        ctx.metrics.incidents_by_phase(&reconcile::phase_counts(
            self.known.values().map(|known| &known.incident),
        ));
    }

    async fn delete(&self, ctx: &Context, key: &ObjectKey, known: &Known) {
        info!(incident = %key, "the manifest is gone: deleting the Incident");
        if let Err(error) = reconcile::delete(&known.incident, ctx, &self.sink(known)).await {
            warn!(incident = %key, %error, "could not clean up after the deleted Incident");
        }
    }
}

/// Where files mode keeps an Incident's status: a status file in the folder, written atomically
/// (a temp file, then rename), its text redacted as the store redacts.
struct FolderSink<'a> {
    dir: &'a Path,
    redactor: &'a Redactor,
    spec_hash: &'a str,
}

impl StatusSink for FolderSink<'_> {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn spec_hash(&self) -> &str {
        self.spec_hash
    }

    async fn write(&self, incident: &Incident, status: &IncidentStatus) -> Result<()> {
        let key = ObjectKey::of(incident)?;
        let mut incident = incident.clone();
        incident.status = Some(status.clone());
        let file = StatusFile::of(&incident, self.redactor)?;
        let yaml = serde_saphyr::to_string(&file).map_err(|e| Error::Serialize(e.to_string()))?;
        let path = status_path(self.dir, &key);
        let dir = self.dir.join(STATUS_DIR);
        tokio::task::spawn_blocking(move || write_atomically(&dir, &path, yaml.as_bytes()))
            .await
            .map_err(|e| Error::Serialize(e.to_string()))?
    }

    async fn forget(&self, incident: &Incident) -> Result<()> {
        let path = status_path(self.dir, &ObjectKey::of(incident)?);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                path,
                source: error,
            }),
            _ => Ok(()),
        }
    }
}

/// What a folder entry named like a manifest is, told without reading it.
enum Entry {
    /// Gone (deleted, or renamed away).
    Gone,
    /// Not to be read, and why: a link out of the folder (whose target is never shown), a
    /// dangling link, a directory, a FIFO (a read would block), a device or a socket.
    Refused(String),
    /// A regular file in the folder (directly, or through a link that stays in it).
    File(std::fs::Metadata),
}

fn entry_kind(dir: &Path, path: &Path) -> Entry {
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Entry::Gone,
        Err(error) => return Entry::Refused(format!("cannot read: {error}")),
    };
    if link.file_type().is_symlink() {
        match path.canonicalize() {
            Err(_) => return Entry::Refused("a symbolic link to nothing (dangling)".into()),
            Ok(target) if !target.starts_with(dir) => {
                return Entry::Refused(
                    "a symbolic link out of the Incidents folder: not read (link to a copy inside \
                     the folder, or put the manifest here)"
                        .into(),
                );
            }
            Ok(_) => {}
        }
    }
    // The link's target (a regular file inside the folder), or the entry itself.
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Entry::Gone,
        Err(error) => return Entry::Refused(format!("cannot read: {error}")),
    };
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Entry::File(meta);
    }
    use std::os::unix::fs::FileTypeExt;
    let what = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Entry::Refused(format!("{what}, not a manifest file: not read"))
}

fn file_problem(message: String) -> manifest::Parsed {
    manifest::Parsed {
        incidents: Vec::new(),
        errors: vec![ManifestError::File(message)],
    }
}

/// What the files define, as a whole.
#[derive(Debug, Default)]
struct Resolved {
    incidents: BTreeMap<ObjectKey, (Incident, PathBuf)>,
    problems: BTreeMap<ObjectKey, Problem>,
    /// Incidents whose document is now invalid: they keep their last valid spec (as an API server
    /// keeps an object whose update it refused) instead of being deleted.
    kept: BTreeSet<ObjectKey>,
}

/// Pure: the Incidents and problems of all files. The first definition of a name (by file path, then
/// document order) wins; a later one is a problem.
fn resolve(dir: &Path, files: &BTreeMap<PathBuf, manifest::Parsed>) -> Resolved {
    let mut resolved = Resolved::default();
    for (path, parsed) in files {
        let file = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        for incident in &parsed.incidents {
            let Ok(key) = ObjectKey::of(incident) else {
                continue;
            };
            if let Some((_, first)) = resolved.incidents.get(&key) {
                let first = first
                    .strip_prefix(dir)
                    .unwrap_or(first)
                    .display()
                    .to_string();
                let problem_key = ObjectKey::new("", format!("{file}:{}", key.name));
                resolved.problems.insert(
                    problem_key,
                    Problem {
                        path: path.clone(),
                        message: format!(
                            "duplicate Incident {key}: it is already defined in {first}"
                        ),
                    },
                );
                continue;
            }
            resolved
                .incidents
                .insert(key, (incident.clone(), path.clone()));
        }
        for error in &parsed.errors {
            let (label, named) = match error {
                ManifestError::File(_) => (file.clone(), None),
                ManifestError::Document { index, name, .. } => {
                    (format!("{file}#{index}"), name.clone())
                }
            };
            if let Some(name) = named {
                // The namespace is unknown if the document is broken; the default is the best guess.
                resolved
                    .kept
                    .insert(ObjectKey::new(crate::incident::DEFAULT_NAMESPACE, name));
            }
            let key = ObjectKey::new("", label);
            resolved.problems.insert(
                key,
                Problem {
                    path: path.clone(),
                    message: error.to_string(),
                },
            );
        }
    }
    resolved
}

fn spec_hash(incident: &Incident) -> String {
    let bytes = serde_json::to_vec(&incident.spec).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

pub fn status_path(dir: &Path, key: &ObjectKey) -> PathBuf {
    dir.join(STATUS_DIR)
        .join(format!("{}.{}.yaml", key.namespace, key.name))
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|error| io(error.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> manifest::Parsed {
        manifest::parse(text.as_bytes())
    }

    fn doc(name: &str) -> String {
        format!(
            "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {{name: {name}}}\nspec: {{title: t}}\n"
        )
    }

    #[test]
    fn duplicate_names_keep_the_first_and_report_the_rest() {
        let dir = Path::new("/incidents");
        let files = BTreeMap::from([
            (dir.join("a.yaml"), parsed(&doc("x"))),
            (
                dir.join("b.yaml"),
                parsed(&format!("{}---\n{}", doc("x"), doc("y"))),
            ),
        ]);
        let resolved = resolve(dir, &files);
        assert_eq!(
            resolved.incidents.keys().cloned().collect::<Vec<_>>(),
            vec![
                ObjectKey::new("default", "x"),
                ObjectKey::new("default", "y")
            ]
        );
        assert_eq!(
            resolved.incidents[&ObjectKey::new("default", "x")].1,
            dir.join("a.yaml")
        );
        let problem = &resolved.problems[&ObjectKey::new("", "b.yaml:x")];
        assert_eq!(
            problem.message,
            "duplicate Incident default/x: it is already defined in a.yaml"
        );
    }

    #[test]
    fn a_broken_document_keeps_its_incident_and_is_reported() {
        let dir = Path::new("/incidents");
        let broken = doc("x").replace("title: t", "titel: t");
        let files = BTreeMap::from([(dir.join("a.yaml"), parsed(&broken))]);
        let resolved = resolve(dir, &files);
        assert!(resolved.incidents.is_empty());
        assert!(resolved.kept.contains(&ObjectKey::new("default", "x")));
        let problem = &resolved.problems[&ObjectKey::new("", "a.yaml#1")];
        assert!(problem.message.contains("titel"), "{}", problem.message);
    }

    #[test]
    fn a_status_file_keeps_the_identity_and_the_redacted_status_only() {
        let key = "sk-ant-api03-PASTEDINTOTHETICKET0123456789";
        let manifest = format!(
            "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata:\n  name: leak\n  \
             annotations: {{ticket: \"{key}\"}}\n  labels: {{team: \"{key}\"}}\n\
             spec:\n  title: t\n  description: \"the key {key} stopped working\"\n"
        );
        let mut incident = parsed(&manifest).incidents.remove(0);
        incident.metadata.uid = Some("u-1".into());
        incident.metadata.generation = Some(3);
        incident.status = Some(IncidentStatus {
            phase: crate::incident::Phase::Resolved,
            session_id: Some("s-1".into()),
            report: Some(crate::incident::Report {
                outcome: crate::incident::Outcome::Resolved,
                summary: format!("rotated {key}"),
                root_cause: String::new(),
                actions: Vec::new(),
                verification: String::new(),
            }),
            ..IncidentStatus::default()
        });
        let file = StatusFile::of(&incident, &Redactor::default()).unwrap();
        let text = serde_saphyr::to_string(&file).unwrap();
        assert!(!text.contains("PASTEDINTOTHETICKET"), "{text}");
        assert!(
            !text.contains("spec") && !text.contains("annotations"),
            "{text}"
        );
        let read: StatusFile = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(read.api_version, "opslab.dev/v1alpha1");
        assert_eq!(read.kind, "Incident");
        assert_eq!(read.metadata.name.as_deref(), Some("leak"));
        assert_eq!(read.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(read.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(read.metadata.generation, Some(3));
        let status = read.status.unwrap();
        assert_eq!(status.phase, crate::incident::Phase::Resolved);
        assert_eq!(status.session_id.as_deref(), Some("s-1"));
        assert_eq!(
            status.report.unwrap().summary,
            "rotated [REDACTED:anthropic-key]"
        );
    }

    #[test]
    fn status_files_are_named_after_the_incident() {
        assert_eq!(
            status_path(Path::new("/i"), &ObjectKey::new("default", "x")),
            PathBuf::from("/i/.status/default.x.yaml")
        );
    }
}
