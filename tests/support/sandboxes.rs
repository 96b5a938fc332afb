//! Sandboxes for tests, with the audit store their Docker proxy records into.

use std::sync::Arc;

use opslab::audit::{NewSession, Redactor, Store};
use opslab::metrics::Metrics;
use opslab::sandbox::{
    Audit, LABEL_INSTANCE, LABEL_SANDBOX, SandboxConfig, Sandboxes, sandbox_name,
};

use super::docker::SANDBOX_IMAGE;

/// A controller's sandboxes on the real engine: their own instance label (so orphan collection in
/// one test never touches another's), proxy sockets and store in a temp folder. Every container of
/// the instance is removed when dropped, even when the test fails.
pub struct Harness {
    pub sandboxes: Sandboxes,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: SandboxConfig,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(configure: impl FnOnce(&mut SandboxConfig)) -> Harness {
        Harness::start_with(configure, Redactor::default()).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut SandboxConfig),
        redactor: Redactor,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = SandboxConfig {
            instance: format!("test-{}", uuid::Uuid::new_v4().simple()),
            image: SANDBOX_IMAGE.into(),
            proxy_socket_dir: dir.path().join("sockets"),
            ..SandboxConfig::default()
        };
        configure(&mut config);
        let store = Store::open(&dir.path().join("opslab.db"), redactor)
            .await
            .expect("the store opens");
        let metrics = Arc::new(Metrics::new());
        let sandboxes = Harness::connect(&config, &store, &metrics).await;
        Harness {
            sandboxes,
            store,
            metrics,
            config,
            dir,
        }
    }

    /// Another controller process on the same settings (as after a restart).
    pub async fn connect(
        config: &SandboxConfig,
        store: &Store,
        metrics: &Arc<Metrics>,
    ) -> Sandboxes {
        let audit = Audit {
            store: store.clone(),
            metrics: metrics.clone(),
        };
        Sandboxes::connect(config.clone(), audit)
            .await
            .expect("the Docker engine answers")
    }

    /// A session in the store, to own a sandbox: its id.
    pub async fn session(&self) -> String {
        let session_id = format!("test-{}", uuid::Uuid::now_v7());
        self.store
            .create_session(NewSession {
                id: session_id.clone(),
                incident_uid: "test-uid".into(),
                incident_namespace: "default".into(),
                incident_name: "sandbox-test".into(),
                attempt: 1,
                generation: 1,
            })
            .await
            .expect("the session is created");
        session_id
    }

    /// The proxy socket of a session's sandbox (guarded mode), as the host sees it: in the folder
    /// named by the sandbox's key.
    pub fn socket(&self, session_id: &str) -> std::path::PathBuf {
        let template = format!("{{{{index .Config.Labels \"{LABEL_SANDBOX}\"}}}}");
        let output = std::process::Command::new("docker")
            .args(["inspect", "-f", &template, &sandbox_name(session_id)])
            .output()
            .expect("the docker CLI runs");
        assert!(
            output.status.success(),
            "no sandbox for {session_id}: {output:?}"
        );
        let key = String::from_utf8_lossy(&output.stdout).trim().to_string();
        self.config
            .proxy_socket_dir
            .join(key)
            .join(opslab::sandbox::proxy::SOCKET_NAME)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let label = format!("{LABEL_INSTANCE}={}", self.config.instance);
        for id in super::docker::containers_with_label(&label) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &id])
                .output();
        }
        // The sandboxes' own networks (`--sandbox-internet on`), once their containers are gone.
        let networks = std::process::Command::new("docker")
            .args(["network", "ls", "-q", "--filter"])
            .arg(format!("label={label}"))
            .output();
        if let Ok(networks) = networks {
            for id in String::from_utf8_lossy(&networks.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["network", "rm", id])
                    .output();
            }
        }
    }
}
