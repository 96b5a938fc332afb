//! Reconciler contexts for tests: the settings of Kubernetes mode, and a context with nothing
//! running ([`offline_context`]): a real store, but no Docker engine and no model.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opslab::audit::{Redactor, Store};
use opslab::config::{AgentLimits, Config, SourceConfig};
use opslab::llm::{ProviderConfig, ProviderKind};
use opslab::reconcile::{self, Context};
use opslab::sandbox::{DockerAccess, SandboxConfig, Sandboxes};
use opslab::session::Wake;
use opslab::source::kubernetes::KubeSettings;
use tokio::sync::mpsc;

/// A Kubernetes-mode controller's settings for tests: its store in `dir`, its model at `base_url`,
/// its sandboxes labelled with `instance` and without Docker access.
pub fn kube_config(dir: &Path, base_url: String, instance: &str) -> Config {
    Config {
        source: SourceConfig::Kubernetes(KubeSettings {
            kubeconfig: None,
            leader_election: None,
            agent_access: None,
            incident_selector: None,
            watch: Default::default(),
        }),
        store: dir.join("audit.db").into(),
        store_durability: Default::default(),
        provider: ProviderConfig {
            kind: ProviderKind::Anthropic,
            base_url,
            api_key: Some("test-key".into()),
            request_timeout: Duration::from_secs(30),
            retry: Default::default(),
            prompt_cache: true,
            stream: false,
            summary_endpoint: None,
        },
        agent: AgentLimits {
            model: "fake-main".into(),
            max_turns: 10,
            timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(60),
            max_tokens: 1_000_000,
            max_cost_usd: None,
            response_max_tokens: 1024,
            context_tokens: None,
        },
        summary_model: None,
        sandbox: SandboxConfig {
            instance: instance.into(),
            docker_access: DockerAccess::None,
            proxy_socket_dir: dir.join("sockets"),
            ..SandboxConfig::default()
        },
        max_sessions: 4,
        secret_values: vec![],
        listen: "127.0.0.1:0".parse().unwrap(),
        costs: Default::default(),
        notify: Default::default(),
        alerts: None,
    }
}

/// A reconciler context with nothing running, built from its parts (controller-rs's
/// `Context::test()`): a real SQLite store in `dir`; a Docker socket nobody listens on, so that
/// every Docker call fails at once as with the engine down; and no model configured, so that a
/// session started ends at once as `NoModelConfigured`. Its sessions' wake-ups go to the receiver.
pub async fn offline_context(dir: &Path) -> (Arc<Context>, mpsc::UnboundedReceiver<Wake>) {
    let mut config = kube_config(dir, "https://api.anthropic.com".into(), "test-offline");
    config.provider.api_key = None;
    config.sandbox.docker_socket = dead_socket(dir);
    let store = Store::open(config.store.clone(), Redactor::default())
        .await
        .expect("a store in a temporary folder");
    let audit = reconcile::audit_of(&store);
    let metrics = audit.metrics.clone();
    let sandboxes = Sandboxes::unchecked(config.sandbox.clone(), audit)
        .await
        .expect("sandboxes on a socket, not reached");
    let (wake, wakes) = mpsc::unbounded_channel();
    let ctx = Context::from_parts(Arc::new(config), store, metrics, sandboxes, wake)
        .expect("a context from its parts");
    (Arc::new(ctx), wakes)
}

/// A Unix socket that refuses every connection: its listener is gone.
fn dead_socket(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("a socket in a temporary folder"));
    path
}
