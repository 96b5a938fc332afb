//! Docker sandboxes through bollard: one container per session, where the agent's commands run.

mod output;
pub mod proxy;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use tracing::debug;

pub use output::{CappedOutput, Captured, printable};
pub use proxy::{Audit, PROTECTED_LABEL_PREFIX, Proxies, ProxyError};

pub const LABEL_MANAGED: &str = "opslab.dev/managed";
pub const LABEL_INCIDENT_UID: &str = "opslab.dev/incident-uid";
pub const LABEL_INCIDENT: &str = "opslab.dev/incident";
pub const LABEL_SESSION: &str = "opslab.dev/session-id";
/// Which controller owns the sandbox: orphan collection never touches another controller's.
pub const LABEL_INSTANCE: &str = "opslab.dev/instance";
/// The sandbox's Docker access mode: a sandbox found with another mode than the controller's is
/// replaced, so a changed mode never leaves an old sandbox with more access.
pub const LABEL_DOCKER_ACCESS: &str = "opslab.dev/docker-access";
/// Marks opslab's own objects for deployments (compose, Helm): `opslab.dev/component=controller` on
/// the controller's container, its store volume and its network. Like every `opslab.dev/` label, it
/// puts the object out of the agent's reach in `guarded` mode.
pub const LABEL_COMPONENT: &str = "opslab.dev/component";

/// Where the sandbox's home and working folder is: a tmpfs when the root is read-only.
pub const WORK_DIR: &str = "/work";

/// How much longer than the in-container `timeout` the controller waits before it kills a command.
const CONTROLLER_GRACE: Duration = Duration::from_secs(8);
/// `timeout -k`: how long a command may ignore SIGTERM before SIGKILL.
const KILL_AFTER_SECONDS: u64 = 5;
/// How often a running exec is inspected, to notice that its process has exited while a background
/// child still holds its output open.
const EXIT_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(
        "the sandbox image {0} is not on this Docker engine: build it with scripts/build-images, or set --sandbox-image"
    )]
    MissingImage(String),
    #[error("the Docker network {0:?} does not exist (spec.environment.networks)")]
    MissingNetwork(String),
    #[error("{0}")]
    Exec(String),
    #[error("the Docker API proxy: {0}")]
    Proxy(#[from] ProxyError),
}

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

/// Settings for every sandbox the controller creates.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The controller's name on this Docker engine; its sandboxes carry it as a label.
    pub instance: String,
    pub image: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    /// The only capabilities the sandbox keeps; all others are dropped.
    pub capabilities: Vec<String>,
    /// no-new-privileges: setuid binaries and file capabilities raise nothing.
    pub no_new_privileges: bool,
    /// A read-only root filesystem, with tmpfs at /tmp and [`WORK_DIR`].
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
    /// Bytes of output kept from the start and from the end of a command's output.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            instance: "opslab".into(),
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
            output_head_bytes: 16 * 1024,
            output_tail_bytes: 16 * 1024,
        }
    }
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

/// The Docker engine, for sandboxes.
#[derive(Clone)]
pub struct Sandboxes {
    docker: Docker,
    config: SandboxConfig,
    /// The sockets of `guarded` mode.
    proxies: Option<Arc<Proxies>>,
}

impl Sandboxes {
    /// Connects to the engine at `config.docker_socket`, at the API version both sides speak; in
    /// `guarded` mode, prepares the proxies, whose decisions go to `audit`.
    pub async fn connect(config: SandboxConfig, audit: Audit) -> Result<Self, SandboxError> {
        let socket = config.docker_socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await?;
        let proxies = match config.docker_access {
            DockerAccess::Guarded => Some(Arc::new(
                Proxies::new(
                    &config.proxy_socket_dir,
                    &config.docker_socket,
                    &config.instance,
                    config.allow_create,
                    audit,
                )
                .await?,
            )),
            DockerAccess::Full | DockerAccess::None => None,
        };
        Ok(Sandboxes {
            docker,
            config,
            proxies,
        })
    }

    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.docker.ping().await?;
        Ok(())
    }

    /// The session's sandbox, started and joined to `networks`: created, or — after a controller
    /// restart — the one already there.
    pub async fn ensure(
        &self,
        owner: &SandboxOwner,
        networks: &[String],
    ) -> Result<Sandbox, SandboxError> {
        // The socket first: a sandbox resumed after a restart needs it back.
        let docker_bind = match self.config.docker_access {
            DockerAccess::Guarded => {
                let proxies = self.proxies.as_ref().expect("guarded mode has proxies");
                let dir = proxies.start(&owner.session_id).await?;
                Some(format!("{}:/run:ro", dir.display()))
            }
            DockerAccess::Full => Some(format!(
                "{}:/var/run/docker.sock",
                self.config.docker_socket.display()
            )),
            DockerAccess::None => None,
        };
        if let Some((id, access)) = self.find(&owner.session_id).await? {
            if access.as_deref() == Some(self.config.docker_access.as_str()) {
                self.docker
                    .start_container(&id, None)
                    .await
                    .or_else(already_started)?;
                return Ok(self.sandbox(id));
            }
            tracing::info!(container = %id, ?access, "the sandbox has another Docker access mode; replacing it");
            self.remove_container(&id).await?;
        }
        if let Err(error) = self.docker.inspect_image(&self.config.image).await {
            return Err(match error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => SandboxError::MissingImage(self.config.image.clone()),
                other => other.into(),
            });
        }
        for network in networks {
            if let Err(error) = self.docker.inspect_network(network, None).await {
                return Err(match error {
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404, ..
                    } => SandboxError::MissingNetwork(network.clone()),
                    other => other.into(),
                });
            }
        }
        let body = container_body(&self.config, owner, networks.first(), docker_bind);
        // The whole id: v7 uuids of sessions started together share their first digits.
        let name = format!("opslab-sbx-{}", owner.session_id);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self.docker.create_container(Some(options), body).await?;
        let id = created.id;
        for network in networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: id.clone(),
                ..Default::default()
            };
            self.docker.connect_network(network, request).await?;
        }
        self.docker.start_container(&id, None).await?;
        debug!(container = %id, "sandbox started");
        Ok(self.sandbox(id))
    }

    fn sandbox(&self, container_id: String) -> Sandbox {
        Sandbox {
            docker: self.docker.clone(),
            container_id,
            head_bytes: self.config.output_head_bytes,
            tail_bytes: self.config.output_tail_bytes,
        }
    }

    /// The session's sandbox and its Docker access mode.
    async fn find(
        &self,
        session_id: &str,
    ) -> Result<Option<(String, Option<String>)>, SandboxError> {
        let found = self
            .list(&[format!("{LABEL_SESSION}={session_id}")])
            .await?;
        Ok(found
            .into_iter()
            .next()
            .map(|sandbox| (sandbox.id, sandbox.docker_access)))
    }

    /// Opslab's sandboxes matching the label filters.
    async fn list(&self, labels: &[String]) -> Result<Vec<Listed>, SandboxError> {
        let mut label_filters = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_INSTANCE}={}", self.config.instance),
        ];
        label_filters.extend(labels.iter().cloned());
        let filters = HashMap::from([("label".to_string(), label_filters)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let labels = container.labels.as_ref()?;
                Some(Listed {
                    session: labels.get(LABEL_SESSION)?.clone(),
                    docker_access: labels.get(LABEL_DOCKER_ACCESS).cloned(),
                    id: container.id?,
                })
            })
            .collect())
    }

    /// Removes the session's sandbox (killing what runs in it) and its Docker socket; succeeds when
    /// there is none.
    pub async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        for sandbox in self
            .list(&[format!("{LABEL_SESSION}={session_id}")])
            .await?
        {
            self.remove_container(&sandbox.id).await?;
        }
        if let Some(proxies) = &self.proxies {
            proxies.stop(session_id)?;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), SandboxError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone already, or being removed by another call: either way it will not be there.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes every opslab sandbox whose session is not in `keep`; returns their session ids.
    pub async fn remove_orphans(
        &self,
        keep: &HashSet<String>,
    ) -> Result<Vec<String>, SandboxError> {
        let mut removed = Vec::new();
        for sandbox in self.list(&[]).await? {
            if keep.contains(&sandbox.session) {
                continue;
            }
            self.remove_container(&sandbox.id).await?;
            if let Some(proxies) = &self.proxies {
                proxies.stop(&sandbox.session)?;
            }
            removed.push(sandbox.session);
        }
        Ok(removed)
    }
}

/// A sandbox as listed by its labels.
struct Listed {
    id: String,
    session: String,
    docker_access: Option<String>,
}

fn already_started(error: bollard::errors::Error) -> Result<(), bollard::errors::Error> {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        } => Ok(()),
        other => Err(other),
    }
}

/// The container: labelled, limited, hardened, with its Docker socket (`docker_bind`) if any. Pure.
fn container_body(
    config: &SandboxConfig,
    owner: &SandboxOwner,
    network: Option<&String>,
    docker_bind: Option<String>,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), config.instance.clone()),
        (LABEL_INCIDENT_UID.to_string(), owner.incident_uid.clone()),
        (
            LABEL_INCIDENT.to_string(),
            format!("{}/{}", owner.incident_namespace, owner.incident_name),
        ),
        (LABEL_SESSION.to_string(), owner.session_id.clone()),
        (
            LABEL_DOCKER_ACCESS.to_string(),
            config.docker_access.as_str().to_string(),
        ),
    ]);
    let mut security_opt = Vec::new();
    if config.no_new_privileges {
        security_opt.push("no-new-privileges:true".to_string());
    }
    if let Some(profile) = &config.seccomp_profile {
        security_opt.push(format!("seccomp={profile}"));
    }
    // The tools write only to /tmp (the exec wrapper's pid files too) and the home and working
    // folder (the docker CLI keeps ~/.docker there).
    let tmpfs = config.read_only_root.then(|| {
        let options = format!("rw,nosuid,nodev,size={}", config.tmpfs_bytes);
        HashMap::from([
            ("/tmp".to_string(), format!("{options},mode=1777")),
            (WORK_DIR.to_string(), format!("{options},mode=0755")),
        ])
    });
    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        labels: Some(labels),
        working_dir: Some(WORK_DIR.into()),
        env: Some(vec![format!("HOME={WORK_DIR}")]),
        host_config: Some(HostConfig {
            memory: Some(config.memory_bytes),
            nano_cpus: Some(config.nano_cpus),
            pids_limit: Some(config.pids_limit),
            security_opt: Some(security_opt),
            // Every capability is dropped but those configured; by default NET_RAW, for ping (see
            // SandboxConfig::default).
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(config.capabilities.clone()),
            readonly_rootfs: Some(config.read_only_root),
            tmpfs,
            // An init process reaps the zombies that agents' background commands leave behind.
            init: Some(true),
            binds: docker_bind.map(|bind| vec![bind]),
            network_mode: network.cloned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running sandbox.
#[derive(Clone)]
pub struct Sandbox {
    docker: Docker,
    pub container_id: String,
    head_bytes: usize,
    tail_bytes: usize,
}

impl Sandbox {
    /// Runs `command` with `bash -lc`, stdin closed, stderr merged into stdout, under `timeout` (to
    /// the millisecond) in the container and a timer here. Returns when the command's process exits,
    /// even if a background child keeps its output open.
    pub async fn exec(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        // Whole milliseconds, at least one: `timeout 0` would mean no limit at all.
        let limit = Duration::from_millis(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let seconds = format!("{}.{:03}s", limit.as_secs(), limit.subsec_millis());
        let pid_file = format!("/tmp/.opslab-exec-{}.pid", uuid::Uuid::new_v4().simple());
        // The wrapper records its pid (kept by `exec`; `timeout` leads its own process group) so the
        // controller can kill the group if the in-container timeout fails. The pid files go with the
        // container. The command is an argument, never interpolated. stderr goes into the same pipe
        // as stdout, so the two arrive in the order they were written.
        let wrapper = format!(
            "echo $$ > {pid_file}; exec timeout -k {KILL_AFTER_SECONDS}s {seconds} bash -lc \"$1\" </dev/null 2>&1"
        );
        let config = ExecConfig {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                wrapper,
                "opslab-exec".into(),
                command.into(),
            ]),
            ..Default::default()
        };
        let started = Instant::now();
        let exec = self.docker.create_exec(&self.container_id, config).await?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(64 * 1024),
        };
        let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, Some(options)).await?
        else {
            return Err(SandboxError::Exec("the exec started detached".into()));
        };
        let mut captured = CappedOutput::new(self.head_bytes, self.tail_bytes);
        let deadline = tokio::time::sleep(limit + CONTROLLER_GRACE);
        tokio::pin!(deadline);
        // The first look is after one period: most commands end before it, and their stream ends.
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + EXIT_POLL, EXIT_POLL);
        let mut killed_here = false;
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }
                        | LogOutput::Console { message } | LogOutput::StdIn { message })) => {
                        captured.push(&message);
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => break,
                },
                _ = poll.tick() => {
                    let inspect = self.docker.inspect_exec(&exec.id).await?;
                    if inspect.running == Some(false) {
                        // The process is gone; what is buffered arrives at once, a background
                        // child's later output is not waited for. (The child keeps running and may
                        // keep writing. Docker 20.10 itself then holds back the container's next exec
                        // until the child lets go of the output or ~4 s have passed.)
                        drain(&mut output, &mut captured).await;
                        break;
                    }
                }
                () = &mut deadline => {
                    killed_here = true;
                    self.kill_group(&pid_file).await;
                    drain(&mut output, &mut captured).await;
                    break;
                }
            }
        }
        let duration = started.elapsed();
        let exit_code = self.docker.inspect_exec(&exec.id).await?.exit_code;
        let captured = captured.finish();
        let timed_out = timed_out(killed_here, exit_code, duration, limit);
        Ok(ExecOutcome {
            exit_code,
            output: captured.text,
            output_bytes: captured.total_bytes,
            truncated: captured.truncated,
            timed_out,
            duration,
        })
    }

    /// Kills the command's process group from a second exec.
    async fn kill_group(&self, pid_file: &str) {
        let script = format!("kill -KILL -- -$(cat {pid_file}) 2>/dev/null; true");
        if let Err(error) = self.run_quietly(&script).await {
            debug!(%error, "could not kill a command that outlived its timeout");
        }
    }

    async fn run_quietly(&self, script: &str) -> Result<(), SandboxError> {
        let config = ExecConfig {
            cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
            ..Default::default()
        };
        let exec = self.docker.create_exec(&self.container_id, config).await?;
        let options = StartExecOptions {
            detach: true,
            tty: false,
            output_capacity: None,
        };
        self.docker.start_exec(&exec.id, Some(options)).await?;
        Ok(())
    }
}

/// Whether a command was stopped for taking too long: killed by the controller, or stopped by
/// timeout(1), which exits 124 when it stopped the command and 137 when it had to SIGKILL it. The same
/// codes from a command that ended before its limit are its own.
fn timed_out(
    killed_here: bool,
    exit_code: Option<i64>,
    duration: Duration,
    limit: Duration,
) -> bool {
    killed_here || (duration >= limit && matches!(exit_code, Some(124) | Some(137)))
}

/// Takes what output is already buffered, waiting at most a moment.
async fn drain(
    output: &mut (impl futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin),
    captured: &mut CappedOutput,
) {
    let grace = tokio::time::sleep(Duration::from_millis(50));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }
                    | LogOutput::Console { message } | LogOutput::StdIn { message })) => captured.push(&message),
                Some(Err(_)) | None => return,
            },
            () = &mut grace => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_timed_out_when_stopped_at_its_limit() {
        let limit = Duration::from_millis(1500);
        let after = Duration::from_millis(1510);
        let before = Duration::from_millis(20);
        assert!(timed_out(false, Some(124), after, limit));
        assert!(timed_out(false, Some(137), after, limit));
        assert!(timed_out(true, None, limit + CONTROLLER_GRACE, limit));
        // The command's own exit codes, before the limit or other than timeout's.
        assert!(!timed_out(false, Some(124), before, limit));
        assert!(!timed_out(false, Some(137), before, limit));
        assert!(!timed_out(false, Some(0), after, limit));
        assert!(!timed_out(false, Some(143), after, limit));
        assert!(!timed_out(false, None, after, limit));
    }

    #[test]
    fn the_container_is_labelled_limited_and_unprivileged() {
        let owner = SandboxOwner {
            incident_uid: "uid".into(),
            incident_namespace: "default".into(),
            incident_name: "x".into(),
            session_id: "0190-session".into(),
        };
        let bind = "/run/opslab/0190-session:/run:ro".to_string();
        let body = container_body(
            &SandboxConfig::default(),
            &owner,
            Some(&"net".to_string()),
            Some(bind.clone()),
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SESSION], "0190-session");
        assert_eq!(labels[LABEL_INCIDENT], "default/x");
        assert_eq!(labels[LABEL_MANAGED], "true");
        let host = body.host_config.unwrap();
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.memory, Some(512 * 1024 * 1024));
        assert_eq!(host.network_mode.as_deref(), Some("net"));
        assert_eq!(host.binds, Some(vec![bind]));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.cap_add, Some(vec!["NET_RAW".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        let tmpfs = host.tmpfs.unwrap();
        assert!(tmpfs["/tmp"].contains("size=268435456"), "{tmpfs:?}");
        assert!(tmpfs.contains_key(WORK_DIR));
        assert_eq!(labels[LABEL_DOCKER_ACCESS], "guarded");
        assert_eq!(body.env, Some(vec!["HOME=/work".to_string()]));
    }

    #[test]
    fn each_hardening_setting_can_be_turned_off() {
        let owner = SandboxOwner {
            incident_uid: "uid".into(),
            incident_namespace: "default".into(),
            incident_name: "x".into(),
            session_id: "s".into(),
        };
        let config = SandboxConfig {
            no_new_privileges: false,
            read_only_root: false,
            seccomp_profile: Some("{}".into()),
            docker_access: DockerAccess::None,
            ..SandboxConfig::default()
        };
        let host = container_body(&config, &owner, None, None)
            .host_config
            .unwrap();
        assert_eq!(host.security_opt, Some(vec!["seccomp={}".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(false));
        assert_eq!(host.tmpfs, None);
        assert_eq!(host.binds, None);
    }
}
