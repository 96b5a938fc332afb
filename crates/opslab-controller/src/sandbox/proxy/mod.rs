//! The Docker API proxy of `guarded` mode: each sandbox gets its own unix socket, served here, in
//! place of the engine's. Every call is judged by a pure policy ([`policy`]), recorded in the
//! session's audit trail and counted, and only then forwarded to the engine (or refused with 403).
//!
//! Each socket is `<dir>/<sandbox key>/docker.sock`; the sandbox gets its folder, read-only, as its
//! `/run` (so `/var/run/docker.sock` is the proxy). The folder, not the socket file, is mounted: it
//! is made with the container, before any session owns it (a spare sandbox waits without a socket),
//! and a restarted controller binds a new socket in the same folder, which the running sandbox sees.

pub mod body;
mod identity;
pub mod policy;
pub mod route;
mod server;
mod sockets;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

use crate::audit::Store;
use crate::metrics::Metrics;
pub use policy::{PROTECTED_LABEL_PREFIX, Scope};
pub use sockets::Proxies;

/// The socket's name in its session's folder.
pub const SOCKET_NAME: &str = "docker.sock";

/// Bodies of requests and answers on their way through.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the Docker engine: {0}")]
    Engine(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} cannot name a socket folder")]
    BadSandboxKey(String),
    #[error(
        "cannot prepare the proxy's socket folder {path}: {source} (set --proxy-socket-dir to a folder the controller can write)"
    )]
    SocketDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where decisions go: the audit store (redacted and chained like every event) and the metrics.
#[derive(Clone)]
pub struct Audit {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}
