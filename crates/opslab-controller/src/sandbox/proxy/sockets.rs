//! [`Proxies`]: one socket per sandbox, each served by its own proxy task with the sandbox's scope.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::server::{self, Shared};
use super::upstream::Upstream;
use super::{Audit, ProxyError, SOCKET_NAME, Scope, identity};

struct Running {
    cancel: CancellationToken,
}

/// The proxies of one controller's sandboxes.
pub struct Proxies {
    dir: PathBuf,
    upstream: Upstream,
    /// The scope shared by every socket (its session and sandbox are filled per socket).
    base: Scope,
    audit: Audit,
    running: Mutex<HashMap<String, Running>>,
}

impl Proxies {
    /// Prepares `dir` (created, private to the controller's user) and learns which objects are the
    /// controller's own when it runs in a container.
    pub async fn new(
        dir: &Path,
        engine_socket: &Path,
        allow_create: bool,
        audit: Audit,
    ) -> Result<Proxies, ProxyError> {
        std::fs::create_dir_all(dir).map_err(|source| ProxyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // The sandboxes get their own folders mounted; nobody else needs to get in here.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| ProxyError::Io {
                path: dir.to_path_buf(),
                source,
            },
        )?;
        let upstream = Upstream::new(engine_socket.to_path_buf());
        let (protected_containers, protected_volumes) = own_container(&upstream).await?;
        Ok(Proxies {
            dir: dir.to_path_buf(),
            upstream,
            base: Scope {
                protected_containers,
                protected_volumes,
                allow_create,
                ..Scope::default()
            },
            audit,
            running: Mutex::default(),
        })
    }

    /// The folder the sandbox `key` gets as its `/run`.
    fn sandbox_dir(&self, key: &str) -> Result<PathBuf, ProxyError> {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(ProxyError::BadSandboxKey(key.to_string()));
        }
        Ok(self.dir.join(key))
    }

    /// Makes the sandbox's folder, before its container is created (the engine would make a missing
    /// one itself, owned by root, where a controller not running as root could not bind).
    pub fn prepare(&self, key: &str) -> Result<PathBuf, ProxyError> {
        let dir = self.sandbox_dir(key)?;
        let io = |source| ProxyError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(dir)
    }

    /// Serves the socket of sandbox `key`, the container `container`, for `session_id` (a new socket
    /// after a restart); does nothing if it is served.
    pub async fn start(
        &self,
        key: &str,
        session_id: &str,
        container: &str,
    ) -> Result<(), ProxyError> {
        if self.running().contains_key(key) {
            return Ok(());
        }
        let socket = self.prepare(key)?.join(SOCKET_NAME);
        let io = |source| ProxyError::Io {
            path: socket.clone(),
            source,
        };
        match std::fs::remove_file(&socket) {
            Ok(()) => debug!(socket = %socket.display(), "removed a stale proxy socket"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(error)),
        }
        let listener = UnixListener::bind(&socket).map_err(io)?;
        // The sandbox's root has no CAP_DAC_OVERRIDE, and may not share the controller's uid.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        let shared = Arc::new(Shared {
            upstream: self.upstream.clone(),
            scope: Scope {
                session_id: session_id.to_string(),
                sandbox: container.to_string(),
                ..self.base.clone()
            },
            audit: self.audit.clone(),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(server::serve(listener, shared, cancel.clone()));
        self.running().insert(key.to_string(), Running { cancel });
        info!(session = session_id, socket = %socket.display(), "serving the sandbox's Docker API");
        Ok(())
    }

    /// Stops serving the sandbox's socket (ending its open streams) and removes its folder.
    pub fn stop(&self, key: &str) -> Result<(), ProxyError> {
        if let Some(running) = self.running().remove(key) {
            running.cancel.cancel();
        }
        let dir = self.sandbox_dir(key)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProxyError::Io { path: dir, source }),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for running in self.running().values() {
            running.cancel.cancel();
        }
    }
}

/// The controller's own container and the volumes it mounts, when it runs in a container of this
/// engine; none otherwise.
async fn own_container(
    upstream: &Upstream,
) -> Result<(HashSet<String>, HashSet<String>), ProxyError> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(Default::default());
    };
    let Some(id) = identity::container_id_from_mountinfo(&mountinfo) else {
        return Ok(Default::default());
    };
    match upstream.get_json(&format!("/containers/{id}/json")).await? {
        Ok(inspect) => {
            let volumes: HashSet<String> = identity::volume_names(&inspect).into_iter().collect();
            info!(container = %id, ?volumes, "the controller runs in a container: it and its volumes are protected");
            Ok((HashSet::from([id]), volumes))
        }
        Err((status, message)) => {
            debug!(container = %id, status, message, "the controller's container is not on this engine");
            Ok(Default::default())
        }
    }
}
