//! Requests to the controller about one Incident in files mode — retry it, cancel its session —
//! made without rewriting the user's manifest: `opslab retry` and `opslab cancel` write the request
//! annotations into `.requests/<namespace>.<name>.yaml` in the folder, and the files source lays
//! them over the manifest's own annotations. In Kubernetes mode the same annotations are set on the
//! object through the API (`kubectl annotate` does the same), so the reconciler reads one contract.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ObjectKey;
use crate::incident::{CANCEL_ANNOTATION, Phase, RETRY_ANNOTATION};

/// The folder, beside the manifests, of request files.
pub const REQUESTS_DIR: &str = ".requests";
/// A request file is a few annotations; anything bigger is not one.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// What can be asked of the controller about one Incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start a new attempt of an Incident whose session has ended.
    Retry,
    /// Stop the running session now.
    Cancel,
}

impl Request {
    /// The annotation that carries the request.
    pub fn annotation(self) -> &'static str {
        match self {
            Request::Retry => RETRY_ANNOTATION,
            Request::Cancel => CANCEL_ANNOTATION,
        }
    }

    /// The annotation's value: unique per request (its time), saying who asked and why.
    pub fn value(now: jiff::Timestamp, by: &str, why: Option<&str>) -> String {
        match why.map(str::trim).filter(|why| !why.is_empty()) {
            Some(why) => format!("{now} by {by}: {why}"),
            None => format!("{now} by {by}"),
        }
    }
}

/// A request that makes no sense for the Incident as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    #[error(
        "{key} is {phase}: a new attempt can start only once its session has ended \
         (opslab cancel {key} stops it)"
    )]
    SessionNotEnded { key: ObjectKey, phase: Phase },
    #[error("{key} is {phase}: no session of it is running, so there is nothing to cancel")]
    NoSessionRunning { key: ObjectKey, phase: Phase },
}

impl Request {
    /// Whether the request makes sense for an Incident in `phase`, and if not, why. Pure.
    pub fn check(self, key: &ObjectKey, phase: Phase) -> Result<(), RequestRefused> {
        let key = key.clone();
        match (self, phase) {
            (Request::Retry, phase) if phase.is_terminal() => Ok(()),
            (Request::Retry, phase) => Err(RequestRefused::SessionNotEnded { key, phase }),
            (Request::Cancel, Phase::Investigating) => Ok(()),
            (Request::Cancel, phase) => Err(RequestRefused::NoSessionRunning { key, phase }),
        }
    }
}

/// The request annotations of one Incident.
pub type Annotations = BTreeMap<String, String>;

/// Why a request file's text is not one.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationsError {
    #[error("not a map of annotations: {0}")]
    NotAMap(Box<serde_saphyr::Error>),
    #[error("{0:?} is not a request annotation (known: {RETRY_ANNOTATION}, {CANCEL_ANNOTATION})")]
    NotARequest(String),
}

/// Why a request file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RequestFileError {
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: {bytes} bytes; request files are limited to {MAX_REQUEST_BYTES}")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("{path}: {problem}")]
    Invalid {
        path: PathBuf,
        problem: AnnotationsError,
    },
    #[error("{path}: {problem}")]
    Unwritable {
        path: PathBuf,
        problem: serde_saphyr::SerializeError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where an Incident's requests are kept.
pub fn request_path(dir: &Path, key: &ObjectKey) -> PathBuf {
    dir.join(REQUESTS_DIR)
        .join(format!("{}.{}.yaml", key.namespace, key.name))
}

/// The Incident a request file is about, from its name (`<namespace>.<name>.yaml`; a namespace
/// holds no dot).
pub fn key_of(path: &Path) -> Option<ObjectKey> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".yaml")?;
    let (namespace, name) = stem.split_once('.')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| ObjectKey::new(namespace, name))
}

/// Parses a request file: request annotations only, each a string. Pure.
pub fn parse(text: &str) -> Result<Annotations, AnnotationsError> {
    let annotations: Annotations =
        serde_saphyr::from_str(text).map_err(|error| AnnotationsError::NotAMap(Box::new(error)))?;
    let known = [RETRY_ANNOTATION, CANCEL_ANNOTATION];
    if let Some(unknown) = annotations
        .keys()
        .find(|key| !known.contains(&key.as_str()))
    {
        return Err(AnnotationsError::NotARequest(unknown.clone()));
    }
    Ok(annotations)
}

/// Reads a request file; None when it is gone.
pub fn read(path: &Path) -> Result<Option<Annotations>, RequestFileError> {
    let io = |source| RequestFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Not followed: a link could point anywhere, and a FIFO would block the read.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    if !meta.is_file() {
        return Err(RequestFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_REQUEST_BYTES {
        return Err(RequestFileError::TooLarge {
            path: path.to_path_buf(),
            bytes: meta.len(),
        });
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    parse(&text)
        .map(Some)
        .map_err(|problem| RequestFileError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
}

/// Records a request for the Incident, keeping its other request, atomically (temp file + rename).
pub fn write(
    dir: &Path,
    key: &ObjectKey,
    request: Request,
    value: &str,
) -> Result<PathBuf, RequestFileError> {
    let folder = dir.join(REQUESTS_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RequestFileError::Io { path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let path = request_path(dir, key);
    let mut annotations = read(&path)?.unwrap_or_default();
    annotations.insert(request.annotation().to_string(), value.to_string());
    let mut text = String::from(
        "# Requests to the opslab controller (opslab retry / opslab cancel), laid over the\n\
         # manifest's annotations. Deleting this file withdraws nothing already done.\n",
    );
    text.push_str(&serde_saphyr::to_string(&annotations).map_err(|problem| {
        RequestFileError::Unwritable {
            path: path.clone(),
            problem,
        }
    })?);
    let mut file = tempfile::NamedTempFile::new_in(&folder).map_err(io(&folder))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io(&path))?;
    file.persist(&path)
        .map_err(|error| io(&path)(error.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_files_are_named_after_their_incident() {
        let key = ObjectKey::new("default", "api.down");
        let path = request_path(Path::new("/i"), &key);
        assert_eq!(path, PathBuf::from("/i/.requests/default.api.down.yaml"));
        assert_eq!(key_of(&path), Some(key));
        assert_eq!(key_of(Path::new("/i/.requests/nodot.yaml")), None);
        assert_eq!(key_of(Path::new("/i/.requests/a.b.yml")), None);
    }

    #[test]
    fn only_request_annotations_are_taken() {
        let parsed = parse("opslab.dev/retry: \"T by alice\"\n").unwrap();
        assert_eq!(
            parsed.get(RETRY_ANNOTATION).map(String::as_str),
            Some("T by alice")
        );
        let error = parse("opslab.dev/retry: x\nother: y\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"other\" is not a request annotation"),
            "{error}"
        );
        assert!(parse("- a list\n").is_err());
    }

    #[test]
    fn retry_needs_an_ended_session_and_cancel_a_running_one() {
        let key = ObjectKey::new("default", "x");
        assert!(Request::Retry.check(&key, Phase::Failed).is_ok());
        assert!(Request::Retry.check(&key, Phase::Resolved).is_ok());
        let error = Request::Retry
            .check(&key, Phase::Investigating)
            .unwrap_err()
            .to_string();
        assert!(error.contains("opslab cancel default/x"), "{error}");
        assert!(Request::Cancel.check(&key, Phase::Investigating).is_ok());
        let error = Request::Cancel
            .check(&key, Phase::Resolved)
            .unwrap_err()
            .to_string();
        assert!(error.contains("nothing to cancel"), "{error}");
    }

    #[test]
    fn a_request_says_when_who_and_why() {
        let now: jiff::Timestamp = "2026-12-02T04:10:00Z".parse().unwrap();
        assert_eq!(
            Request::value(now, "alice", Some("wrong target")),
            "2026-12-02T04:10:00Z by alice: wrong target"
        );
        assert_eq!(
            Request::value(now, "alice", Some(" ")),
            "2026-12-02T04:10:00Z by alice"
        );
    }

    #[test]
    fn writing_a_request_keeps_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::new("default", "x");
        write(dir.path(), &key, Request::Cancel, "c1").unwrap();
        let path = write(dir.path(), &key, Request::Retry, "r1").unwrap();
        let annotations = read(&path).unwrap().unwrap();
        assert_eq!(
            annotations,
            Annotations::from([
                (CANCEL_ANNOTATION.to_string(), "c1".to_string()),
                (RETRY_ANNOTATION.to_string(), "r1".to_string()),
            ])
        );
        assert!(read(&dir.path().join("gone.yaml")).unwrap().is_none());
    }
}
