//! Docker sandboxes through bollard: one container per session, where the agent's commands run.
//!
//! Every sandbox is made the same way: created and started as a *spare* that no session owns, then
//! *claimed* by a session (renamed after it, moved to its networks, its Docker socket served). The
//! controller keeps `--sandbox-spares` of them ready, so a new session does not wait for Docker to
//! create and start a container; when none is ready, one is made on the spot.
//!
//! Isolation: a sandbox is on its Incident's networks and no other. A spare waits where no other
//! container is: with `--sandbox-internet off`, on no network at all (`none`); with `on`, on a bridge
//! network made for it alone ([`own_network_name`]). A session that names no networks keeps that
//! place; one that names networks is moved to them at claim. Nothing is ever on the default bridge.

mod output;
pub mod proxy;
mod settings;
mod spares;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ExecConfig, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::Redactor;
use crate::metrics::Metrics;
use spares::{Spare, Spares};

pub use output::{CappedOutput, Captured, printable};
pub use proxy::{Audit, PROTECTED_LABEL_PREFIX, Proxies, ProxyError};
pub use settings::{DockerAccess, SandboxConfig, SandboxInternet};

pub const LABEL_MANAGED: &str = "opslab.dev/managed";
/// The sandbox's key, given when it is made (before any session owns it): it names the sandbox's
/// socket folder. Which session owns a sandbox is told by its name (see [`sandbox_name`]).
pub const LABEL_SANDBOX: &str = "opslab.dev/sandbox";
/// Which controller owns the sandbox: orphan collection never touches another controller's.
pub const LABEL_INSTANCE: &str = "opslab.dev/instance";
/// Which replica of the controller made the sandbox: a spare is its maker's alone (see
/// [`spare_is_orphan`]).
pub const LABEL_REPLICA: &str = "opslab.dev/replica";
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
    #[error(
        "the Docker network {0:?} is opslab's own (a sandbox's or the controller's) and cannot be an Incident's network"
    )]
    ProtectedNetwork(String),
    #[error("{0}")]
    Exec(String),
    #[error("the Docker API proxy: {0}")]
    Proxy(#[from] ProxyError),
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
    spares: Arc<Spares>,
    metrics: Arc<Metrics>,
    /// The store's redactor: output is redacted before it is cut.
    redactor: Redactor,
}

impl Sandboxes {
    /// Connects to the engine at `config.docker_socket`, at the API version both sides speak; in
    /// `guarded` mode, prepares the proxies, whose decisions go to `audit`.
    pub async fn connect(config: SandboxConfig, audit: Audit) -> Result<Self, SandboxError> {
        let sandboxes = Sandboxes::unchecked(config, audit).await?;
        let docker = sandboxes.docker.clone().negotiate_version().await?;
        if let Ok(engine) = docker.version().await
            && let Some(version) = engine.version
            && bridge_isolation_lapses(&version)
        {
            warn!(
                engine = %version,
                "this Docker engine (before 28.0) lifts the isolation between bridge networks for an instant whenever a network is created: a sandbox may then reach containers on other networks, the controller's published port among them; Docker 28 or later keeps it (see the README's network isolation)"
            );
        }
        Ok(Sandboxes {
            docker,
            ..sandboxes
        })
    }

    /// As [`Sandboxes::connect`], without asking the engine anything: at the API version this
    /// client speaks, and whether an engine answers on the socket is found at the first call.
    pub async fn unchecked(config: SandboxConfig, audit: Audit) -> Result<Self, SandboxError> {
        let socket = config.docker_socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)?;
        let metrics = audit.metrics.clone();
        let redactor = audit.store.redactor();
        let proxies = match config.docker_access {
            DockerAccess::Guarded => Some(Arc::new(
                Proxies::new(
                    &config.proxy_socket_dir,
                    &config.docker_socket,
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
            spares: Arc::default(),
            metrics,
            redactor,
        })
    }

    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.docker.ping().await?;
        Ok(())
    }

    /// The session's sandbox, started and joined to `networks` (and no other): the one already there
    /// after a controller restart, else a spare, else a new one.
    pub async fn ensure(
        &self,
        session_id: &str,
        networks: &[String],
    ) -> Result<Sandbox, SandboxError> {
        if let Some(found) = self.find(session_id).await? {
            if found.docker_access.as_deref() == Some(self.config.docker_access.as_str()) {
                // Its socket first: the restarted controller serves it anew.
                if let Some(proxies) = &self.proxies {
                    proxies.start(&found.key, session_id, &found.id).await?;
                }
                self.docker
                    .start_container(&found.id, None)
                    .await
                    .or_else(already_started)?;
                self.settle_networks(&found, networks).await?;
                return Ok(self.sandbox(found.id));
            }
            info!(container = %found.id, access = ?found.docker_access, "the sandbox has another Docker access mode; replacing it");
            self.discard(&found.id, &found.key).await;
        }
        // Before a spare is spent on it.
        for network in networks {
            let inspected = match self.docker.inspect_network(network, None).await {
                Ok(inspected) => inspected,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Err(SandboxError::MissingNetwork(network.clone())),
                Err(other) => return Err(other.into()),
            };
            // Another sandbox's network, or the controller's: joining it would undo the isolation.
            let labels = inspected.labels.unwrap_or_default();
            if labels
                .keys()
                .any(|key| key.starts_with(PROTECTED_LABEL_PREFIX))
            {
                return Err(SandboxError::ProtectedNetwork(network.clone()));
            }
        }
        if let Some(spare) = self.spares.take() {
            self.metrics.set_sandbox_spares(self.spares.ready());
            match self.claim(&spare, session_id, networks).await {
                Ok(sandbox) => {
                    self.metrics.sandbox_claimed("spare");
                    return Ok(sandbox);
                }
                // Removed behind the controller's back, say: a new sandbox does as well.
                Err(error) => {
                    warn!(%error, container = %spare.container_id, "a spare sandbox could not be claimed; making a new one")
                }
            }
        }
        // Made on the session's networks, where a spare would have to move to them.
        let sandbox = self.make_spare(networks).await?;
        let claimed = self.claim(&sandbox, session_id, networks).await?;
        self.metrics.sandbox_claimed("new");
        Ok(claimed)
    }

    /// Makes the spare sandbox `spare` the session's: renamed after it, joined to those of `networks`
    /// it is not on (and off where it waited), its Docker socket served. A failed claim removes the
    /// container.
    async fn claim(
        &self,
        spare: &Spare,
        session_id: &str,
        networks: &[String],
    ) -> Result<Sandbox, SandboxError> {
        let claimed = self.join(spare, session_id, networks).await;
        if claimed.is_err() {
            self.discard(&spare.container_id, &spare.key).await;
        }
        self.spares.forget(&spare.key);
        claimed?;
        debug!(container = %spare.container_id, session = session_id, "sandbox claimed");
        Ok(self.sandbox(spare.container_id.clone()))
    }

    async fn join(
        &self,
        spare: &Spare,
        session_id: &str,
        networks: &[String],
    ) -> Result<(), SandboxError> {
        let id = &spare.container_id;
        let rename = RenameContainerOptionsBuilder::default()
            .name(&sandbox_name(session_id))
            .build();
        self.docker.rename_container(id, rename).await?;
        // A no-op for a running spare; one stopped behind the controller's back runs again.
        self.docker
            .start_container(id, None)
            .await
            .or_else(already_started)?;
        if spare.networks.is_empty() && !networks.is_empty() {
            self.leave_waiting_place(spare).await?;
        }
        for network in networks.iter().filter(|n| !spare.networks.contains(n)) {
            let request = NetworkConnectRequest {
                container: id.clone(),
                ..Default::default()
            };
            self.docker.connect_network(network, request).await?;
        }
        if let Some(proxies) = &self.proxies {
            proxies.start(&spare.key, session_id, id).await?;
        }
        Ok(())
    }

    /// Puts a found sandbox back on exactly its session's networks (or its waiting place), should a
    /// claim have been cut short by a crash, or someone have moved it since.
    async fn settle_networks(
        &self,
        found: &Found,
        networks: &[String],
    ) -> Result<(), SandboxError> {
        let wanted = if networks.is_empty() {
            vec![waiting_place(self.config.internet, &found.key)]
        } else {
            networks.to_vec()
        };
        let (leave, join) = network_moves(&found.networks, &wanted);
        if leave.is_empty() && join.is_empty() {
            return Ok(());
        }
        info!(container = %found.id, ?leave, ?join, "the sandbox is not on its session's networks; moving it");
        for network in leave {
            let request = NetworkDisconnectRequest {
                container: found.id.clone(),
                force: Some(true),
            };
            self.docker.disconnect_network(&network, request).await?;
        }
        for network in join {
            // Made again if it is gone (the engine would make a second network of the same name).
            if network == own_network_name(&found.key)
                && let Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                }) = self.docker.inspect_network(&network, None).await
            {
                self.create_own_network(&found.key).await?;
            }
            let request = NetworkConnectRequest {
                container: found.id.clone(),
                ..Default::default()
            };
            self.docker.connect_network(&network, request).await?;
        }
        Ok(())
    }

    /// Takes a spare off where it waited, before it joins its session's networks: off `none` (which
    /// admits no other network beside it), or off its own network, which is then removed.
    async fn leave_waiting_place(&self, spare: &Spare) -> Result<(), SandboxError> {
        let place = waiting_place(self.config.internet, &spare.key);
        let request = NetworkDisconnectRequest {
            container: spare.container_id.clone(),
            force: Some(true),
        };
        self.docker.disconnect_network(&place, request).await?;
        if self.config.internet {
            // Not waited for: nothing is on it any more; orphan collection takes it if this fails.
            let docker = self.docker.clone();
            tokio::spawn(async move { remove_network(&docker, &place).await });
        }
        Ok(())
    }

    /// Keeps `config.spares` started sandboxes ready for new sessions until `shutdown`, then
    /// removes them. A failure to make one (no image yet, the engine away) is retried with backoff.
    pub async fn keep_spares(&self, shutdown: CancellationToken) {
        let wanted = self.config.spares;
        if wanted == 0 {
            return;
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times();
        let max_age = self.config.spare_max_age;
        loop {
            // An old spare makes way for a fresh one: replicas judge each other's as abandoned by
            // their age.
            if let Some(stale) = self.spares.take_older_than(max_age) {
                debug!(container = %stale.container_id, "replacing an old spare sandbox");
                self.discard(&stale.container_id, &stale.key).await;
                self.spares.forget(&stale.key);
                self.metrics.set_sandbox_spares(self.spares.ready());
                continue;
            }
            if self.spares.ready() >= wanted {
                let refresh = self.spares.until_older_than(max_age).unwrap_or(max_age);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.spares.taken() => continue,
                    () = tokio::time::sleep(refresh) => continue,
                }
            }
            let made = (|| self.make_spare(&[]))
                .retry(backoff)
                .notify(|error, delay| {
                    warn!(%error, ?delay, "could not make a spare sandbox; trying again");
                });
            tokio::select! {
                () = shutdown.cancelled() => break,
                spare = made => {
                    if let Ok(spare) = spare {
                        self.spares.offer(spare);
                        self.metrics.set_sandbox_spares(self.spares.ready());
                    }
                }
            }
        }
        self.remove_spares().await;
    }

    /// Creates and starts a sandbox no session owns yet, on `networks` (none: its waiting place, see
    /// [`waiting_place`]), with its socket folder made (`guarded`) but nothing served in it.
    async fn make_spare(&self, networks: &[String]) -> Result<Spare, SandboxError> {
        let key = uuid::Uuid::now_v7().simple().to_string();
        // Counted from before its container exists, so orphan collection never takes it for a stray.
        self.spares.keep(&key);
        let made = self.create_started(&key, networks).await;
        if made.is_err() {
            self.spares.forget(&key);
        }
        made
    }

    async fn create_started(&self, key: &str, networks: &[String]) -> Result<Spare, SandboxError> {
        let docker_bind = match self.config.docker_access {
            DockerAccess::Guarded => {
                let proxies = self.proxies.as_ref().expect("guarded mode has proxies");
                Some(format!("{}:/run:ro", proxies.prepare(key)?.display()))
            }
            DockerAccess::Full => Some(format!(
                "{}:/var/run/docker.sock",
                self.config.docker_socket.display()
            )),
            DockerAccess::None => None,
        };
        let place = waiting_place(self.config.internet, key);
        if networks.is_empty()
            && self.config.internet
            && let Err(error) = self.create_own_network(key).await
        {
            self.stop_proxy(key);
            return Err(error);
        }
        let network = networks.first().unwrap_or(&place);
        let body = container_body(&self.config, key, network, docker_bind);
        let name = format!("{SPARE_PREFIX}{key}");
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(error) => {
                self.stop_proxy(key);
                remove_network(&self.docker, &own_network_name(key)).await;
                return Err(self.creation_error(error).await);
            }
        };
        let id = created.id;
        let mut started = Ok(());
        for network in networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: id.clone(),
                ..Default::default()
            };
            started = self.docker.connect_network(network, request).await;
            if started.is_err() {
                break;
            }
        }
        if started.is_ok() {
            started = self.docker.start_container(&id, None).await;
        }
        if let Err(error) = started {
            self.discard(&id, key).await;
            return Err(error.into());
        }
        debug!(container = %id, "sandbox started");
        Ok(Spare {
            key: key.to_string(),
            container_id: id,
            networks: networks.to_vec(),
            made: Instant::now(),
        })
    }

    /// The bridge network a spare waits on when sandboxes may reach the internet: labelled as the
    /// sandbox's, so the proxy hides it and orphan collection finds it.
    async fn create_own_network(&self, key: &str) -> Result<(), SandboxError> {
        let request = NetworkCreateRequest {
            name: own_network_name(key),
            driver: Some("bridge".into()),
            labels: Some(self.labels(key)),
            ..Default::default()
        };
        self.docker.create_network(request).await?;
        Ok(())
    }

    fn labels(&self, key: &str) -> HashMap<String, String> {
        sandbox_labels(&self.config, key)
    }

    /// A failed create, explained: a 404 is a missing image (networks are checked before), unless
    /// the image is there after all.
    async fn creation_error(&self, error: bollard::errors::Error) -> SandboxError {
        match error {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } if self.docker.inspect_image(&self.config.image).await.is_err() => {
                SandboxError::MissingImage(self.config.image.clone())
            }
            other => other.into(),
        }
    }

    fn sandbox(&self, container_id: String) -> Sandbox {
        Sandbox {
            docker: self.docker.clone(),
            container_id,
            head_bytes: self.config.output_head_bytes,
            tail_bytes: self.config.output_tail_bytes,
            redactor: self.redactor.clone(),
        }
    }

    /// The session's sandbox, found by its name.
    async fn find(&self, session_id: &str) -> Result<Option<Found>, SandboxError> {
        let inspect = match self
            .docker
            .inspect_container(&sandbox_name(session_id), None)
            .await
        {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let labels = inspect
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default();
        if !self.owns(&labels) {
            return Ok(None);
        }
        let networks = inspect
            .network_settings
            .and_then(|settings| settings.networks)
            .map(|networks| networks.into_keys().collect())
            .unwrap_or_default();
        Ok(inspect.id.map(|id| Found {
            id,
            key: sandbox_key(&labels, session_id),
            docker_access: labels.get(LABEL_DOCKER_ACCESS).cloned(),
            networks,
        }))
    }

    /// Whether a container with these labels is one of this controller's sandboxes.
    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && labels.get(LABEL_INSTANCE) == Some(&self.config.instance)
    }

    /// Removes the session's sandbox (killing what runs in it) and its Docker socket; succeeds when
    /// there is none.
    pub async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        if let Some(found) = self.find(session_id).await? {
            self.remove_container(&found.id).await?;
            self.stop_proxy(&found.key);
            if self.config.internet {
                remove_network(&self.docker, &own_network_name(&found.key)).await;
            }
        }
        Ok(())
    }

    /// Removes a container and its socket, logging rather than failing: for clean-ups on paths that
    /// already have an error to report; orphan collection takes what is left.
    async fn discard(&self, container_id: &str, key: &str) {
        if let Err(error) = self.remove_container(container_id).await {
            warn!(%error, container = container_id, "could not remove a sandbox");
        }
        self.stop_proxy(key);
        if self.config.internet {
            remove_network(&self.docker, &own_network_name(key)).await;
        }
    }

    fn stop_proxy(&self, key: &str) {
        if let Some(proxies) = &self.proxies
            && let Err(error) = proxies.stop(key)
        {
            warn!(%error, "could not remove a sandbox's socket folder");
        }
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

    /// This controller's sandboxes: id, name and labels.
    async fn list(&self) -> Result<Vec<Listed>, SandboxError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={}", self.config.instance),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                Some(Listed {
                    id: container.id?,
                    name: container.names?.into_iter().next()?,
                    labels: container.labels.unwrap_or_default(),
                    created: container
                        .created
                        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok()),
                })
            })
            .collect())
    }

    /// Removes every sandbox whose session is not in `keep`, every spare this controller is not
    /// keeping (a previous run's), and the own networks of those gone; returns the names of the
    /// containers and networks removed.
    pub async fn remove_orphans(
        &self,
        keep: &HashSet<String>,
    ) -> Result<Vec<String>, SandboxError> {
        let mut removed = Vec::new();
        for listed in self.list().await? {
            let name = listed.name.trim_start_matches('/');
            let key = match owner_of(name) {
                Some(Owner::Session(session)) if !keep.contains(session) => {
                    sandbox_key(&listed.labels, session)
                }
                Some(Owner::Spare(key))
                    if listed.spare_is_orphan(&self.config, self.spares.keeps(key)) =>
                {
                    key.to_string()
                }
                _ => continue,
            };
            self.remove_container(&listed.id).await?;
            self.stop_proxy(&key);
            removed.push(name.to_string());
        }
        removed.extend(self.remove_orphan_networks().await?);
        Ok(removed)
    }

    /// Removes this controller's own sandbox networks whose sandbox is gone (a spare being made
    /// keeps its network); returns their names.
    async fn remove_orphan_networks(&self) -> Result<Vec<String>, SandboxError> {
        let sandboxes: HashSet<String> = self
            .list()
            .await?
            .into_iter()
            .filter_map(|listed| listed.labels.get(LABEL_SANDBOX).cloned())
            .collect();
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={}", self.config.instance),
            ],
        )]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut removed = Vec::new();
        for network in self.docker.list_networks(Some(options)).await? {
            let mut labels = network.labels.unwrap_or_default();
            let (Some(name), Some(key)) = (network.name, labels.remove(LABEL_SANDBOX)) else {
                continue;
            };
            if sandboxes.contains(&key) {
                continue;
            }
            // No sandbox on it: a spare being made, or one gone; whose, decides as for spares.
            let created = network
                .created
                .and_then(|created| created.to_string().parse::<jiff::Timestamp>().ok());
            let orphan = spare_is_orphan(
                &self.config.replica,
                self.spares.keeps(&key),
                labels.get(LABEL_REPLICA).map(String::as_str),
                age_of(created),
                self.config.spare_max_age,
            );
            if !orphan {
                continue;
            }
            remove_network(&self.docker, &name).await;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Removes this replica's spares (at shutdown), and those of replicas that are gone; another
    /// live replica's are left to it.
    async fn remove_spares(&self) {
        let listed = match self.list().await {
            Ok(listed) => listed,
            Err(error) => {
                warn!(%error, "could not list the spare sandboxes to remove them");
                return;
            }
        };
        for listed in listed {
            let name = listed.name.trim_start_matches('/');
            if let Some(Owner::Spare(key)) = owner_of(name)
                && listed.spare_is_orphan(&self.config, false)
            {
                self.discard(&listed.id, key).await;
                self.spares.forget(key);
            }
        }
        self.metrics.set_sandbox_spares(0);
    }
}

/// Whether an engine of this version lets bridge networks reach each other for an instant when a
/// network is created: before 28.0, each creation deleted and re-inserted the `FORWARD` chain's jump
/// to `DOCKER-ISOLATION-STAGE-1`, and traffic between bridges passed while it was gone (measured
/// on 20.10: 86 of 1,500 connections opened while 60 networks came and went). An unreadable version
/// is not judged. Pure.
pub fn bridge_isolation_lapses(engine_version: &str) -> bool {
    engine_version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major < 28)
}

/// The name of a session's sandbox. A container's name is the one thing about it Docker lets change
/// after creation, so it is what ties a sandbox, made before its session as a spare, to the session.
pub fn sandbox_name(session_id: &str) -> String {
    format!("{SESSION_PREFIX}{session_id}")
}

const SESSION_PREFIX: &str = "opslab-sbx-";
const SPARE_PREFIX: &str = "opslab-spare-";
const NETWORK_PREFIX: &str = "opslab-net-";
/// Docker's network mode with no interface but loopback.
const NO_NETWORK: &str = "none";

/// The network made for the sandbox `key` alone (`--sandbox-internet on`). Named by the sandbox's key,
/// not its session's id: it is made with the spare, before any session owns it.
pub fn own_network_name(key: &str) -> String {
    format!("{NETWORK_PREFIX}{key}")
}

/// Where the sandbox `key` waits as a spare, and stays for a session that names no networks: its own
/// network when sandboxes may reach the internet, else no network at all. Pure.
fn waiting_place(internet: bool, key: &str) -> String {
    if internet {
        own_network_name(key)
    } else {
        NO_NETWORK.to_string()
    }
}

/// Removes a network, logging rather than failing (gone already is fine).
async fn remove_network(docker: &Docker, name: &str) {
    match docker.remove_network(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(error) => warn!(%error, network = name, "could not remove a sandbox's network"),
    }
}

/// Who a sandbox, by its container name, belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Owner<'a> {
    Session(&'a str),
    Spare(&'a str),
}

/// Pure.
fn owner_of(name: &str) -> Option<Owner<'_>> {
    if let Some(session) = name.strip_prefix(SESSION_PREFIX) {
        Some(Owner::Session(session))
    } else {
        name.strip_prefix(SPARE_PREFIX).map(Owner::Spare)
    }
}

/// The sandbox's key (its socket folder's name): its label; a sandbox made before spares existed
/// was keyed by its session. Pure.
fn sandbox_key(labels: &HashMap<String, String>, session_id: &str) -> String {
    labels
        .get(LABEL_SANDBOX)
        .cloned()
        .unwrap_or_else(|| session_id.to_string())
}

/// A session's sandbox, found.
struct Found {
    id: String,
    key: String,
    docker_access: Option<String>,
    /// The networks it is on (`none` among them when it has no network).
    networks: Vec<String>,
}

/// What moves `current` networks to `wanted`: the networks to leave (first: `none` admits no other
/// beside it), then those to join. Being on no network at all is as good as being on `none`. Pure.
fn network_moves(current: &[String], wanted: &[String]) -> (Vec<String>, Vec<String>) {
    let leave = current
        .iter()
        .filter(|network| !wanted.contains(network))
        .cloned()
        .collect();
    let join = wanted
        .iter()
        .filter(|network| !current.contains(network) && network.as_str() != NO_NETWORK)
        .cloned()
        .collect();
    (leave, join)
}

/// A sandbox as listed.
struct Listed {
    id: String,
    name: String,
    labels: HashMap<String, String>,
    created: Option<jiff::Timestamp>,
}

impl Listed {
    /// Whether this spare is for this replica to remove, when this replica keeps (`kept`) or no
    /// longer keeps it.
    fn spare_is_orphan(&self, config: &SandboxConfig, kept: bool) -> bool {
        spare_is_orphan(
            &config.replica,
            kept,
            self.labels.get(LABEL_REPLICA).map(String::as_str),
            age_of(self.created),
            config.spare_max_age,
        )
    }
}

/// How long ago `created` was; unknown: taken as new (so nothing is removed on a guess).
fn age_of(created: Option<jiff::Timestamp>) -> Duration {
    created
        .and_then(|created| {
            let elapsed = jiff::Timestamp::now().duration_since(created);
            Duration::try_from(elapsed).ok()
        })
        .unwrap_or(Duration::ZERO)
}

/// Whether a spare (or a spare's own network) of this controller is an orphan, for the replica
/// `own`: one of its own when it no longer keeps it (`kept`); another replica's (`replica`, none
/// for a spare made before replicas were told apart) only when older than twice `max_age`, which a
/// live replica's never is (it replaces its spares at `max_age`), so the replica is gone. Pure.
pub fn spare_is_orphan(
    own: &str,
    kept: bool,
    replica: Option<&str>,
    age: Duration,
    max_age: Duration,
) -> bool {
    match replica {
        Some(replica) if replica == own => !kept,
        _ => age > max_age.saturating_mul(2),
    }
}

fn already_started(error: bollard::errors::Error) -> Result<(), bollard::errors::Error> {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        } => Ok(()),
        other => Err(other),
    }
}

/// What marks a sandbox's container and its own network as this controller's. Pure.
fn sandbox_labels(config: &SandboxConfig, key: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), config.instance.clone()),
        (LABEL_REPLICA.to_string(), config.replica.clone()),
        (LABEL_SANDBOX.to_string(), key.to_string()),
        (
            LABEL_DOCKER_ACCESS.to_string(),
            config.docker_access.as_str().to_string(),
        ),
    ])
}

/// The container: labelled, limited, hardened, with its Docker socket (`docker_bind`) if any, on
/// `network` (a network's name, or `none`). Pure.
fn container_body(
    config: &SandboxConfig,
    key: &str,
    network: &str,
    docker_bind: Option<String>,
) -> ContainerCreateBody {
    let labels = sandbox_labels(config, key);
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
            network_mode: Some(network.to_string()),
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
    redactor: Redactor,
}

impl Sandbox {
    /// Writes `contents` to `path` in the sandbox, readable by its owner only (the folder made),
    /// through the exec's stdin: never on a command line or in the container's configuration.
    pub async fn write_private_file(
        &self,
        path: &str,
        contents: &[u8],
    ) -> Result<(), SandboxError> {
        use tokio::io::AsyncWriteExt;
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                r#"umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1""#.into(),
                "opslab-write".into(),
                path.into(),
            ]),
            ..Default::default()
        };
        let exec = self.docker.create_exec(&self.container_id, config).await?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = self.docker.start_exec(&exec.id, None).await?
        else {
            return Err(SandboxError::Exec("the exec started detached".into()));
        };
        let written = async {
            input.write_all(contents).await?;
            input.shutdown().await
        }
        .await;
        drop(input);
        let mut said = Vec::new();
        while let Some(chunk) = output.next().await {
            said.extend_from_slice(&chunk?.into_bytes());
        }
        // The stream ends as the process does; its exit code may show a moment later.
        let mut inspected = self.docker.inspect_exec(&exec.id).await?;
        for _ in 0..50 {
            if inspected.running != Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            inspected = self.docker.inspect_exec(&exec.id).await?;
        }
        match (written, inspected.exit_code) {
            (Ok(()), Some(0)) => Ok(()),
            (written, code) => Err(SandboxError::Exec(format!(
                "writing {path} in the sandbox failed (exit code {code:?}{}): {}",
                written
                    .err()
                    .map(|error| format!(", {error}"))
                    .unwrap_or_default(),
                String::from_utf8_lossy(&said).trim()
            ))),
        }
    }

    /// Runs `command` with `bash -lc`, stdin closed, stderr merged into stdout, under `timeout` (to
    /// the millisecond) in the container and a timer here. Returns when the command's process exits,
    /// even if a background child keeps its output open.
    pub async fn exec(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        let mut attempt = 1;
        loop {
            let (outcome, started_process) = self.exec_once(command, timeout).await?;
            if attempt >= EXEC_START_ATTEMPTS || !never_started(&outcome, started_process) {
                return Ok(outcome);
            }
            debug!(attempt, output = %outcome.output, "the engine could not start the command; trying again");
            tokio::time::sleep(EXEC_START_RETRY_DELAY).await;
            attempt += 1;
        }
    }

    /// One try: the outcome, and whether the engine started the exec's process at all.
    async fn exec_once(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<(ExecOutcome, bool), SandboxError> {
        // Whole milliseconds, at least one: `timeout 0` would mean no limit at all.
        let limit = Duration::from_millis(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let seconds = format!("{}.{:03}s", limit.as_secs(), limit.subsec_millis());
        let pid_file = format!("/tmp/.opslab-exec-{}.pid", uuid::Uuid::new_v4().simple());
        let wrapper = exec_wrapper(&pid_file, &seconds);
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
        let mut captured =
            CappedOutput::new(self.head_bytes, self.tail_bytes, self.redactor.clone());
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
        let inspected = self.docker.inspect_exec(&exec.id).await?;
        let exit_code = inspected.exit_code;
        // The engine records no pid for a process it never started.
        let started_process = inspected.pid.is_some_and(|pid| pid != 0);
        let captured = captured.finish();
        let timed_out = timed_out(killed_here, exit_code, duration, limit);
        let outcome = ExecOutcome {
            exit_code,
            output: captured.text,
            output_bytes: captured.total_bytes,
            truncated: captured.truncated,
            timed_out,
            duration,
        };
        Ok((outcome, started_process))
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

/// How a command runs (POSIX sh, the image's dash): `timeout` starts it in its own process group,
/// whose leader's pid (a child shell's, which becomes `timeout`) goes to `pid_file` so the controller can kill the group if the in-container
/// timeout fails (the pid files go with the container). The command is an argument, never
/// interpolated; stderr goes into the same pipe as stdout, so the two arrive in the order they were
/// written. When it ends, [`SWEEP`] kills what it left running; before it starts, it waits for the
/// pids a command before it released (`opslab_headroom`). Pure.
fn exec_wrapper(pid_file: &str, seconds: &str) -> String {
    format!(
        "{SWEEP}\nopslab_headroom\nsh -c 'echo $$ > \"$0\"; exec timeout -k {KILL_AFTER_SECONDS}s {seconds} bash -lc \"$1\" </dev/null 2>&1' {pid_file} \"$1\"\n\
         status=$?\nopslab_sweep\nexit $status"
    )
}

/// Kills what a command left running: every process of the command's session (the exec's; `docker
/// exec` gives each its own) but those started under `nohup`, which ignore SIGHUP: that is how the
/// agent keeps a process running on purpose (a process in a session of its own, `setsid`, is left
/// alone too, as are other execs). A `nohup cmd &` the command ended right after may not have
/// started `nohup` yet: while a leftover is still a shell, `nohup` or `setsid` about to start its
/// program, the sweep waits (1 s at most). Then processes are stopped until none is left running,
/// and killed, so a fork bomb cannot outrun the sweep; a round that killed something is followed by
/// another (twenty at most), for what a busy machine let slip through. The killed hold their pids
/// until the container's init reaps them: the sweep waits for that (10 s at most), and then for the
/// container's pids cgroup to have room for a command again (16 free, 10 s at most), so the next
/// command can start. It never forks (dash gives up on a shell whose fork fails): shell builtins
/// only, and its waits watch the clock in /proc/uptime.
const SWEEP: &str = r#"opslab_clock() { read -r now _ < /proc/uptime; now=${now%.*}${now#*.}; }
opslab_sweep() {
  if opslab_sweep_round 1; then
    rounds=1
    while [ $rounds -lt 20 ] && opslab_sweep_round 0; do rounds=$((rounds + 1)); done
  fi
  opslab_headroom
}
opslab_headroom() {
  for dir in /sys/fs/cgroup /sys/fs/cgroup/pids; do
    { read -r max < "$dir/pids.max"; } 2>/dev/null || continue
    [ "$max" = max ] && return 0
    opslab_clock; until=$((now + 1000))
    while { read -r current < "$dir/pids.current"; } 2>/dev/null \
      && [ $((max - current)) -lt 16 ] && opslab_clock && [ $now -lt $until ]; do :; done
    return 0
  done
}
opslab_sweep_round() {
  opslab_clock; grace=$((now + 100)); waiting=$1; stops=0
  while [ $stops -lt 200 ]; do
    running=0; pending=0; stopped=""
    for dir in /proc/[0-9]*; do
      pid=${dir#/proc/}
      [ "$pid" = "$$" ] && continue
      { read -r stat < "$dir/stat"; } 2>/dev/null || continue
      set -- ${stat##*) }
      [ "$4" = "$$" ] || continue
      [ "$1" = Z ] && continue
      ignored=0
      { while read -r field value; do
          if [ "$field" = SigIgn: ]; then ignored=$((0x${value#${value%?}} & 1)); break; fi
        done < "$dir/status"; } 2>/dev/null
      [ $ignored = 1 ] && continue
      if [ "$1" = T ]; then stopped="$stopped $pid"; continue; fi
      running=1
      if [ $waiting = 1 ]; then
        comm=${stat#*(}; comm=${comm%%) *}
        case $comm in bash|nohup|setsid) pending=1 ;; esac
      else
        kill -STOP "$pid" 2>/dev/null
      fi
    done
    [ $running = 0 ] && break
    if [ $waiting = 1 ]; then
      opslab_clock
      if [ $pending = 0 ] || [ $now -ge $grace ]; then waiting=0; fi
    else
      stops=$((stops + 1))
    fi
  done
  [ -n "$stopped" ] || return 1
  kill -KILL $stopped 2>/dev/null
  opslab_clock; until=$((now + 1000))
  while [ -n "$stopped" ] && opslab_clock && [ $now -lt $until ]; do
    left=""
    for pid in $stopped; do [ -e "/proc/$pid" ] && left="$left $pid"; done
    stopped=$left
  done
  return 0
}"#;

/// How often a command the engine could not start is tried, and how long apart: the pids a killed
/// fork bomb held can take a moment to be released after the sweep.
const EXEC_START_ATTEMPTS: u32 = 3;
const EXEC_START_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Whether the engine failed to start the exec's process at all (runc could not make it: no pid to
/// spare, say), so that nothing of the command ran and trying again runs it at most once: no process
/// was started, and the engine says so. A command cannot pass for it by printing the same words. Pure.
fn never_started(outcome: &ExecOutcome, started_process: bool) -> bool {
    !started_process
        && outcome.exit_code == Some(126)
        && outcome.output.starts_with("OCI runtime exec failed")
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
    fn a_spare_is_removed_by_its_own_replica_or_once_its_replica_is_gone() {
        let hour = Duration::from_secs(3600);
        let young = Duration::from_secs(60);
        let old = hour * 2 + Duration::from_secs(1);
        // Its own: removed when no longer kept (a previous run of this replica), whatever its age.
        assert!(spare_is_orphan("a", false, Some("a"), young, hour));
        assert!(!spare_is_orphan("a", true, Some("a"), old, hour));
        // Another replica's, or one from before replicas were labelled: only once abandoned.
        for replica in [Some("b"), None] {
            assert!(!spare_is_orphan("a", false, replica, young, hour));
            assert!(!spare_is_orphan("a", false, replica, hour * 2, hour));
            assert!(spare_is_orphan("a", false, replica, old, hour));
        }
    }

    #[test]
    fn only_a_command_the_engine_never_started_is_tried_again() {
        let outcome = |exit_code, output: &str| ExecOutcome {
            exit_code,
            output: output.into(),
            output_bytes: output.len() as u64,
            truncated: false,
            timed_out: false,
            duration: Duration::from_millis(5),
        };
        let failed = outcome(
            Some(126),
            "OCI runtime exec failed: exec failed: unable to start container process: read init-p: connection reset by peer: unknown\n",
        );
        assert!(never_started(&failed, false));
        // The same words from a process that did start: the command's own.
        assert!(!never_started(&failed, true));
        assert!(!never_started(
            &outcome(Some(126), "bash: ./x: Permission denied\n"),
            false
        ));
        assert!(!never_started(
            &outcome(Some(0), "OCI runtime exec failed"),
            false
        ));
    }

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
        let bind = "/run/opslab/0190key:/run:ro".to_string();
        let body = container_body(
            &SandboxConfig::default(),
            "0190key",
            "net",
            Some(bind.clone()),
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SANDBOX], "0190key");
        assert_eq!(labels[LABEL_INSTANCE], "opslab");
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
    fn a_sandbox_belongs_to_a_session_or_is_a_spare_by_its_name() {
        let session = "0190a1b2-0000-7000-8000-000000000001";
        assert_eq!(
            owner_of(&sandbox_name(session)),
            Some(Owner::Session(session))
        );
        assert_eq!(
            owner_of("opslab-spare-0190abcd"),
            Some(Owner::Spare("0190abcd"))
        );
        assert_eq!(owner_of("web-1"), None);
        assert_eq!(owner_of("opslab"), None);
    }

    #[test]
    fn a_sandbox_made_before_spares_is_keyed_by_its_session() {
        let labelled = HashMap::from([(LABEL_SANDBOX.to_string(), "k1".to_string())]);
        assert_eq!(sandbox_key(&labelled, "s1"), "k1");
        assert_eq!(sandbox_key(&HashMap::new(), "s1"), "s1");
    }

    #[test]
    fn each_hardening_setting_can_be_turned_off() {
        let config = SandboxConfig {
            no_new_privileges: false,
            read_only_root: false,
            seccomp_profile: Some("{}".into()),
            docker_access: DockerAccess::None,
            ..SandboxConfig::default()
        };
        let host = container_body(&config, "key", NO_NETWORK, None)
            .host_config
            .unwrap();
        assert_eq!(host.security_opt, Some(vec!["seccomp={}".to_string()]));
        assert_eq!(host.readonly_rootfs, Some(false));
        assert_eq!(host.tmpfs, None);
        assert_eq!(host.binds, None);
        assert_eq!(host.network_mode.as_deref(), Some("none"));
    }

    #[test]
    fn a_sandbox_moved_off_its_networks_is_moved_back() {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            network_moves(&names(&["app"]), &names(&["app"])),
            (vec![], vec![])
        );
        // A claim cut short: still where it waited.
        assert_eq!(
            network_moves(&names(&["none"]), &names(&["app", "db"])),
            (names(&["none"]), names(&["app", "db"]))
        );
        // Joined to another network since.
        assert_eq!(
            network_moves(&names(&["app", "bridge"]), &names(&["app"])),
            (names(&["bridge"]), vec![])
        );
        // Back to no network: leaving the others is enough.
        assert_eq!(
            network_moves(&names(&["bridge"]), &names(&["none"])),
            (names(&["bridge"]), vec![])
        );
        assert_eq!(network_moves(&[], &names(&["none"])), (vec![], vec![]));
    }

    #[test]
    fn engines_before_28_are_known_to_lift_bridge_isolation_while_networks_are_made() {
        assert!(bridge_isolation_lapses("20.10.24+dfsg1"));
        assert!(bridge_isolation_lapses("27.5.1"));
        assert!(!bridge_isolation_lapses("28.0.0"));
        assert!(!bridge_isolation_lapses("29.1.2"));
        assert!(!bridge_isolation_lapses("dev"));
    }

    #[test]
    fn a_spare_waits_alone_and_never_on_the_default_bridge() {
        assert_eq!(waiting_place(false, "k1"), "none");
        assert_eq!(waiting_place(true, "k1"), "opslab-net-k1");
        assert_ne!(waiting_place(true, "k1"), waiting_place(true, "k2"));
        for internet in [false, true] {
            assert_ne!(waiting_place(internet, "k1"), "bridge");
        }
    }
}
