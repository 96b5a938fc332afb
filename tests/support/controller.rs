//! Drives the real `opslab` binary: a controller process on a temporary incidents folder and store,
//! and the CLI against the same store.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use opslab::incident::Phase;
use opslab::source::files::StatusFile;

pub const BIN: &str = env!("CARGO_BIN_EXE_opslab");

/// How the controller is started.
pub struct Options {
    /// `anthropic` or `openai`.
    pub provider: &'static str,
    pub base_url: String,
    pub args: Vec<String>,
    /// The store, when not the SQLite file in the test's folder (a PostgreSQL URL).
    pub store: Option<String>,
}

impl Options {
    pub fn new(provider: &'static str, base_url: String) -> Options {
        Options {
            provider,
            base_url,
            args: Vec::new(),
            store: None,
        }
    }

    /// Runs the controller (and the CLI) on this store instead of the folder's SQLite file.
    pub fn store(mut self, location: impl ToString) -> Options {
        self.store = Some(location.to_string());
        self
    }

    pub fn arg(mut self, flag: &str, value: impl ToString) -> Options {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

pub struct Controller {
    pub dir: tempfile::TempDir,
    options: Options,
    /// Extra environment for the controller process.
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
    /// Unique per test, so that controllers running at once never collect each other's sandboxes.
    instance: String,
}

impl Controller {
    pub fn start(options: Options) -> Controller {
        Controller::start_with_env(options, &[])
    }

    pub fn start_with_env(options: Options, env: &[(&str, &str)]) -> Controller {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("incidents")).unwrap();
        let mut controller = Controller {
            dir,
            options,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            starts: 0,
            instance: format!("test-{}", uuid::Uuid::new_v4().simple()),
        };
        controller.spawn();
        controller
    }

    pub fn incidents(&self) -> PathBuf {
        self.dir.path().join("incidents")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("opslab.db")
    }

    /// What `--store` says: the options' store, or the SQLite file in the test's folder.
    fn store_location(&self) -> std::ffi::OsString {
        match &self.options.store {
            Some(location) => location.into(),
            None => self.store().into_os_string(),
        }
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("controller-{start}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("controller")
            .arg("--incidents")
            .arg(self.incidents())
            .arg("--store")
            .arg(self.store_location())
            .arg("--provider")
            .arg(self.options.provider)
            .arg("--sandbox-image")
            .arg(super::docker::SANDBOX_IMAGE)
            .arg("--instance")
            .arg(&self.instance)
            .arg("--proxy-socket-dir")
            .arg(self.dir.path().join("sockets"))
            .args(["--llm-max-retries", "4"])
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.options.args)
            // Quick retries, unless the test asks for its own delay.
            .args(
                (!self
                    .options
                    .args
                    .iter()
                    .any(|arg| arg == "--llm-retry-delay-ms"))
                .then_some(["--llm-retry-delay-ms", "20"])
                .into_iter()
                .flatten(),
            )
            .env_remove("OPSLAB_MODEL")
            .env_remove("OPSLAB_SUMMARY_MODEL")
            .env("RUST_LOG", "info,opslab=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match self.options.provider {
            "anthropic" => command
                .env("ANTHROPIC_BASE_URL", &self.options.base_url)
                .env("ANTHROPIC_API_KEY", "sk-ant-test-key-0123456789abcdef"),
            _ => command
                .env("OPENAI_BASE_URL", &self.options.base_url)
                .env_remove("OPENAI_API_KEY"),
        };
        self.child = Some(command.spawn().expect("the opslab binary starts"));
    }

    /// SIGKILL: no clean-up runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().unwrap();
        }
    }

    /// SIGTERM, as `docker stop` or a service manager sends; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the controller runs");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        self.child = None;
        status
    }

    /// Starts the controller again on the same folder and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the controller still runs");
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The base URL of the running controller's HTTP port, from its log.
    pub fn http_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let address = log
                .lines()
                .filter(|line| line.contains("serving /metrics"))
                .find_map(|line| line.split("address=").nth(1))
                .map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                });
            if let Some(address) = address {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "the controller never served HTTP:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every log line the controller wrote, across restarts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|start| std::fs::read_to_string(self.log_path(start)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn write_manifest(&self, file: &str, text: &str) {
        // Written beside and renamed in, as an editor or `kubectl`-like tool would.
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.incidents().join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.incidents().join(file)).unwrap();
    }

    pub fn status_file(&self, name: &str) -> PathBuf {
        self.incidents()
            .join(".status")
            .join(format!("default.{name}.yaml"))
    }

    /// The Incident's identity and status, as its status file shows them, if written.
    pub fn incident(&self, name: &str) -> Option<StatusFile> {
        let text = std::fs::read_to_string(self.status_file(name)).ok()?;
        Some(serde_saphyr::from_str(&text).expect("the status file is a valid status file"))
    }

    /// Polls until `check` passes on the Incident, or fails with the controller's log.
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&StatusFile) -> bool,
    ) -> StatusFile {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(incident) = self.incident(name)
                && check(&incident)
            {
                return incident;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}\nlast status: {:#?}\ncontroller log:\n{}",
                    self.incident(name).and_then(|i| i.status),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for_commands(&self, name: &str, commands: u32, timeout: Duration) -> StatusFile {
        self.wait_for(name, &format!("{commands} commands"), timeout, |incident| {
            incident
                .status
                .as_ref()
                .is_some_and(|status| status.commands == commands)
        })
    }

    pub fn wait_for_phase(&self, name: &str, phase: Phase, timeout: Duration) -> StatusFile {
        self.wait_for(name, &format!("phase {phase}"), timeout, |incident| {
            incident
                .status
                .as_ref()
                .is_some_and(|status| status.phase == phase)
        })
    }

    /// Runs the CLI against this controller's store; fails the test on a non-zero exit.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args);
        assert!(
            output.status.success(),
            "opslab {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the CLI prints UTF-8")
    }

    pub fn cli_output(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--store")
            .arg(self.store_location())
            .output()
            .expect("the opslab binary runs")
    }

    /// The session's events, from `opslab show -o json`.
    pub fn events(&self, target: &str) -> Vec<serde_json::Value> {
        let json: serde_json::Value =
            serde_json::from_str(&self.cli(&["show", target, "-o", "json"])).unwrap();
        json["events"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Controller {
    /// Kills the controller and removes the sandboxes it left: a test may end with a session still
    /// running, and killed controllers clean up nothing.
    fn drop(&mut self) {
        self.kill9();
        let label = format!("opslab.dev/instance={}", self.instance);
        for id in super::docker::containers_with_label(&label) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

/// An Incident manifest with the given name and extra spec lines (indented two spaces).
pub fn manifest(name: &str, title: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata:\n  name: {name}\nspec:\n  title: \"{title}\"\n  severity: high\n{extra_spec}"
    )
}

/// A scripted model server (Anthropic's protocol) and a controller on it with summaries off, as
/// most end-to-end tests want; `options` adds flags.
pub async fn scripted(
    script: Vec<super::fake_llm::Turn>,
    options: impl FnOnce(Options) -> Options,
) -> (super::fake_llm::FakeLlm, Controller) {
    super::docker::require_sandbox_image();
    let llm = super::fake_llm::FakeLlm::start(super::fake_llm::Protocol::Anthropic, script).await;
    let controller = Controller::start(options(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"),
    ));
    (llm, controller)
}
