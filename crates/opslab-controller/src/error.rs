//! The library's error type. `anyhow` is used only in the binary (`main`, `cli`, `commands`).

use crate::audit::StoreError;
use crate::sandbox::SandboxError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("model API: {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error(transparent)]
    MissingMetadata(#[from] crate::incident::MissingMetadata),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: std::path::PathBuf,
        source: notify_debouncer_full::notify::Error,
    },
    #[error("{0}")]
    Serialize(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(String),
    /// Adding or removing the finalizer failed, or the work it guards did.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("leader election: {0}")]
    LeaderElection(String),
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Sandbox(_) => "sandbox",
            Error::Llm(_) => "llm",
            Error::MissingMetadata(_) => "metadata",
            Error::Io { .. } => "io",
            Error::Watch { .. } => "watch",
            Error::Serialize(_) => "serialize",
            Error::Kube(_) | Error::KubeConfig(_) => "kube",
            Error::Finalizer(error) => match error.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "finalizer",
            },
            Error::LeaderElection(_) => "leader_election",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
