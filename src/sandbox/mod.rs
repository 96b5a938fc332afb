//! Docker sandboxes through bollard: one container per session.
//! CONTRACT STUB — replaced by the real implementation.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{0}")]
    Other(String),
}

/// Settings for every sandbox the controller creates.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub image: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    /// The Docker socket on the host, bind-mounted at /var/run/docker.sock; None mounts nothing.
    pub docker_socket: Option<PathBuf>,
    /// Bytes of output kept from the start and from the end of a command's output.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
}

/// Who a sandbox belongs to; becomes its labels.
#[derive(Clone, Debug)]
pub struct SandboxOwner {
    pub incident_uid: String,
    pub incident_namespace: String,
    pub incident_name: String,
    pub session_id: String,
}

/// The result of one command.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecOutcome {
    pub exit_code: Option<i64>,
    pub output: String,
    pub output_bytes: u64,
    pub truncated: bool,
    pub timed_out: bool,
    pub duration: Duration,
}

#[derive(Clone)]
pub struct Sandboxes {}

impl Sandboxes {
    pub async fn connect(_config: SandboxConfig) -> Result<Self, SandboxError> {
        todo!()
    }
    pub async fn ping(&self) -> Result<(), SandboxError> {
        todo!()
    }
    /// Creates (or, after a restart, finds) the session's sandbox, started and joined to `networks`.
    pub async fn ensure(
        &self,
        _owner: &SandboxOwner,
        _networks: &[String],
    ) -> Result<Sandbox, SandboxError> {
        todo!()
    }
    /// Removes the session's sandbox; succeeds when there is none.
    pub async fn remove(&self, _session_id: &str) -> Result<(), SandboxError> {
        todo!()
    }
    /// Removes every opslab sandbox whose session id is not in `keep`; returns the removed ids.
    pub async fn remove_orphans(
        &self,
        _keep: &HashSet<String>,
    ) -> Result<Vec<String>, SandboxError> {
        todo!()
    }
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub container_id: String,
}

impl Sandbox {
    pub async fn exec(
        &self,
        _command: &str,
        _timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        todo!()
    }
}
