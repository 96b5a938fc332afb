//! The settings of every sandbox, apart from the Docker wiring that uses them: the controller's
//! configuration holds them without depending on the engine's client.

use std::path::PathBuf;
use std::time::Duration;

/// What the agent can reach of the Docker engine from its sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerAccess {
    /// A per-sandbox socket served by opslab's proxy, which enforces the policy and audits each call.
    #[default]
    Guarded,
    /// The engine's own socket: everything the engine can do (for labs).
    Full,
    /// No Docker socket at all.
    None,
}

impl DockerAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            DockerAccess::Guarded => "guarded",
            DockerAccess::Full => "full",
            DockerAccess::None => "none",
        }
    }
}

/// Whether a sandbox whose Incident names no networks can reach the internet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxInternet {
    /// A bridge network made for the sandbox alone, with a route out.
    On,
    /// No network at all (`none`): loopback only.
    #[default]
    Off,
}

/// Settings for every sandbox the controller creates.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The controller's name on this Docker engine; its sandboxes carry it as a label.
    pub instance: String,
    /// This replica of the controller, among those sharing `instance` (its lease identity): the
    /// spares it makes are its own.
    pub replica: String,
    /// A spare older than this is replaced by a fresh one, so that one twice as old belongs to a
    /// replica that is gone.
    pub spare_max_age: Duration,
    pub image: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    /// The only capabilities the sandbox keeps; all others are dropped.
    pub capabilities: Vec<String>,
    /// no-new-privileges: setuid binaries and file capabilities raise nothing.
    pub no_new_privileges: bool,
    /// A read-only root filesystem, with tmpfs at /tmp and [`super::WORK_DIR`].
    pub read_only_root: bool,
    /// Size of each of those tmpfs mounts (they count against the memory limit as they fill).
    pub tmpfs_bytes: i64,
    /// A seccomp profile (JSON) instead of the engine's default one; None keeps the default.
    pub seccomp_profile: Option<String>,
    /// What the agent can reach of the Docker engine.
    pub docker_access: DockerAccess,
    /// The engine's socket: the controller's connection, the proxy's upstream, and what `full`
    /// mode mounts into sandboxes.
    pub docker_socket: PathBuf,
    /// Where the proxy's per-sandbox sockets are made (`guarded`): a host path, mounted at the same
    /// path when the controller runs in a container.
    pub proxy_socket_dir: PathBuf,
    /// Whether the agent may create containers through the proxy (`guarded`).
    pub allow_create: bool,
    /// How many started sandboxes to keep ready for new sessions.
    pub spares: usize,
    /// Whether a sandbox whose Incident names no networks gets a network of its own with a route out
    /// (true), or no network at all (false). An Incident's own networks are as their owner made them.
    pub internet: bool,
    /// Bytes of output kept from the start and from the end of a command's output.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            instance: "opslab".into(),
            replica: "opslab".into(),
            spare_max_age: Duration::from_secs(3600),
            image: "opslab-sandbox:latest".into(),
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids_limit: 256,
            // ping: iputils' ping carries the NET_RAW file capability and cannot even be executed
            // without it in the bounding set (no-new-privileges then keeps it from being raised).
            capabilities: vec!["NET_RAW".into()],
            no_new_privileges: true,
            read_only_root: true,
            tmpfs_bytes: 256 * 1024 * 1024,
            seccomp_profile: None,
            docker_access: DockerAccess::Guarded,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            proxy_socket_dir: PathBuf::from("/run/opslab"),
            allow_create: false,
            spares: 1,
            internet: false,
            output_head_bytes: 16 * 1024,
            output_tail_bytes: 16 * 1024,
        }
    }
}
