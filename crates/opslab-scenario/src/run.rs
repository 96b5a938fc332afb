//! Runs scenario cases end to end against real parts: for each case, a stack of its own
//! (`docker-compose.yml`'s web, api and store, or the etcd demo's cluster and kv service, under
//! unique names), the fault injected, the Incident
//! filed to an `opslab controller` process, the session driven by the replaying server or a real
//! model, the oracle checked, and the stack removed — whatever happened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::judge::Judge;
use super::matrix::{MatrixReport, ModelResult};
use super::progress::{Progress, Step};
use super::replay::{ReplayServer, Script};
use super::report::{CaseResult, RunReport};
use super::score::{self, Observed};
use super::{Case, Names, ScenarioError, Stack, WrongKind, classify};
use opslab::audit::{EventBody, Redactor, Store};
use opslab::source::files::StatusFile;

/// What drives the sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The local server replaying each case's commands.
    Replay,
    /// The model the environment configures (ANTHROPIC_API_KEY, or OPENAI_BASE_URL).
    Model,
}

/// The driver: the one requested, or (`auto`) a real model when the environment configures one,
/// else the replay. A real model that the environment does not configure is an error saying what
/// to set (pure).
pub fn choose_driver(
    requested: Option<Driver>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Driver, ScenarioError> {
    let configured = model_provider(&env).is_some();
    match requested {
        Some(Driver::Model) if !configured => Err(run_error(
            "no model is configured: set ANTHROPIC_API_KEY, or OPENAI_BASE_URL (and OPENAI_API_KEY), \
             or use --driver replay"
                .into(),
        )),
        Some(driver) => Ok(driver),
        None if configured => Ok(Driver::Model),
        None => Ok(Driver::Replay),
    }
}

/// The provider a real model is reached with: OPSLAB_PROVIDER, else `anthropic` when its key is
/// set, else `openai` when its base URL is; none when neither is set (pure).
pub fn model_provider(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let provider = if get("ANTHROPIC_API_KEY").is_some() {
        "anthropic"
    } else if get("OPENAI_BASE_URL").is_some() {
        "openai"
    } else {
        return None;
    };
    Some(get("OPSLAB_PROVIDER").unwrap_or_else(|| provider.to_string()))
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenarios_dir: PathBuf,
    /// The cases to run; all when empty.
    pub names: Vec<String>,
    /// The compose file whose web, api and store services make each case's demo stack.
    pub compose_file: PathBuf,
    /// The compose file of the etcd demo (three members and the kv service), for the cases of
    /// `stack: etcd`.
    pub etcd_compose_file: PathBuf,
    /// The compose command (`docker compose` or `docker-compose`); found when not given.
    pub compose_command: Option<Vec<String>>,
    /// Where the run's store, Incidents, controller log and results.json go.
    pub out_dir: PathBuf,
    /// The `opslab` binary, run as the controller.
    pub controller_bin: PathBuf,
    pub driver: Driver,
    pub sandbox_image: String,
    /// Cases run at once.
    pub parallel: usize,
    /// How long a session may take before the case is judged without it.
    pub session_timeout: Duration,
    /// How long the oracle is retried after the session (a restarted service needs a moment).
    pub oracle_timeout: Duration,
    /// Unique to the run: it prefixes every stack, network and volume, and labels the sandboxes.
    pub prefix: String,
    /// How long the durability check waits after the oracle passed, before checking again and
    /// restarting the case's components.
    pub durable_wait: Duration,
    /// Replay each case's wrong session of this kind instead of its right one (cases without one
    /// are left out): shows that the scoring catches it.
    pub wrong: Option<WrongKind>,
    /// The model the sessions use (`OPSLAB_MODEL`), with the model driver; the environment's when
    /// not given.
    pub model: Option<String>,
    /// A model that decides the root-cause score instead of the keyword match, reached through the
    /// provider the environment configures; none (the keyword match) by default.
    pub judge_model: Option<String>,
}

/// Runs the cases `repeat` times with each model (`[None]`: the driver's own), each run in its own
/// folder under the output folder, and writes the matrix there as results.json, results.md and
/// results.svg.
pub async fn run_matrix(
    options: RunOptions,
    models: Vec<Option<String>>,
    repeat: usize,
    progress: &dyn Progress,
) -> Result<MatrixReport, ScenarioError> {
    let repeat = repeat.max(1);
    let mut results = Vec::new();
    for (index, model) in models.iter().enumerate() {
        let label = match (&options.driver, model) {
            (Driver::Replay, _) => "replay".to_string(),
            (Driver::Model, Some(model)) => model.clone(),
            (Driver::Model, None) => model_description(),
        };
        let mut runs = Vec::new();
        for round in 1..=repeat {
            let mut one = options.clone();
            one.model = model.clone();
            one.prefix = format!("{}-m{index}r{round}", options.prefix);
            one.out_dir = options
                .out_dir
                .join(sanitise(&label))
                .join(round.to_string());
            runs.push(run(one, progress).await?);
        }
        results.push(ModelResult::of(label, runs));
    }
    let matrix = MatrixReport {
        repeat,
        models: results,
    };
    let json = serde_json::to_string_pretty(&matrix).unwrap_or_default() + "\n";
    for (file, text) in [
        ("results.json", json),
        ("results.md", matrix.markdown()),
        ("results.svg", matrix.svg()),
    ] {
        let path = options.out_dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| run_error(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(matrix)
}

/// A model's name as a folder name.
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs the cases, showing each one's steps on `progress` as they happen, and writes
/// `results.json` into the output folder.
pub async fn run(options: RunOptions, progress: &dyn Progress) -> Result<RunReport, ScenarioError> {
    let mut cases = super::select(&options.scenarios_dir, &options.names)?;
    if let Some(kind) = options.wrong {
        cases = cases
            .iter()
            .filter_map(|case| case.as_wrong(kind))
            .collect();
        if cases.is_empty() {
            return Err(run_error(format!(
                "none of the chosen cases has a wrong replay of kind {kind:?}"
            )));
        }
    }
    // Made first: a judge the environment cannot reach stops the run before any stack is made.
    let judge = options
        .judge_model
        .clone()
        .map(|model| Judge::from_env(model, |name| std::env::var(name).ok()))
        .transpose()?;
    let compose = match &options.compose_command {
        Some(command) => command.clone(),
        None => find_compose().await?,
    };
    let mut compose_files = HashMap::new();
    for stack in cases.iter().map(|case| case.spec.stack) {
        if let std::collections::hash_map::Entry::Vacant(entry) = compose_files.entry(stack) {
            let file = match stack {
                Stack::Demo => &options.compose_file,
                Stack::Etcd => &options.etcd_compose_file,
            };
            entry.insert(absolute(file)?);
        }
    }
    let incidents = options.out_dir.join("incidents");
    std::fs::create_dir_all(&incidents)
        .map_err(|e| run_error(format!("cannot create {}: {e}", incidents.display())))?;
    let store_path = options.out_dir.join("opslab.db");
    let names: HashMap<String, Names> = cases
        .iter()
        .map(|case| {
            let names = Names::new(format!("{}-{}", options.prefix, case.name));
            (case.name.clone(), names)
        })
        .collect();
    let replay = match options.driver {
        Driver::Replay => {
            let scripts = cases
                .iter()
                .map(|case| Script::of(case, &names[&case.name]))
                .collect::<Result<Vec<_>, _>>()?;
            Some(
                ReplayServer::start(scripts)
                    .await
                    .map_err(|e| run_error(format!("cannot start the replay server: {e}")))?,
            )
        }
        Driver::Model => None,
    };
    let controller = Controller::start(
        &options,
        &incidents,
        &store_path,
        cases.len(),
        replay.as_ref().map(ReplayServer::base_url),
    )?;
    if let Err(error) = controller
        .ready(&options.out_dir.join("controller.log"))
        .await
    {
        controller.stop().await;
        return Err(error);
    }
    // Read as sessions go, to show each command as it is stored; without it, progress shows less.
    let store = Store::open(store_path.as_path(), Redactor::default())
        .await
        .ok();
    let context = CaseContext {
        options: &options,
        compose: &compose,
        compose_files: &compose_files,
        incidents: &incidents,
        controller_died: controller.died.clone(),
        store,
        progress,
    };
    let mut results: Vec<CaseResult> = futures::stream::iter(&cases)
        .map(|case| context.run_case(case, &names[&case.name]))
        .buffered(options.parallel.max(1))
        .collect()
        .await;
    progress.finish();
    controller.stop().await;
    sweep(&options.prefix, names.values()).await;
    drop(replay);
    add_commands(&store_path, &cases, &names, &mut results).await;
    if let Some(judge) = &judge {
        rejudge(judge, &cases, &names, &mut results).await;
    }
    let driver = match (&options.driver, options.wrong) {
        (Driver::Replay, None) => "replay".into(),
        (Driver::Replay, Some(kind)) => format!("replay of the {kind:?} wrong sessions"),
        (Driver::Model, _) => match &options.model {
            Some(model) => format!(
                "{} {model}",
                model_provider(&|name: &str| std::env::var(name).ok()).unwrap_or_default()
            ),
            None => model_description(),
        },
    };
    let driver = match &options.judge_model {
        Some(model) => format!("{driver}; root cause judged by {model}"),
        None => driver,
    };
    let report = RunReport::new(driver, store_path.display().to_string(), results);
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    for (file, text) in [
        ("results.json", json + "\n"),
        ("results.md", report.markdown()),
    ] {
        let path = options.out_dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| run_error(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(report)
}

fn run_error(message: String) -> ScenarioError {
    ScenarioError::Run(message)
}

fn absolute(path: &Path) -> Result<PathBuf, ScenarioError> {
    path.canonicalize()
        .map_err(|e| run_error(format!("{}: {e}", path.display())))
}

fn model_description() -> String {
    let env = |name: &str| std::env::var(name).ok();
    let provider = model_provider(&env).unwrap_or_default();
    let model = env("OPSLAB_MODEL")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "(default model)".into());
    format!("{provider} {model}")
}

/// `docker compose` (v2) when the plugin is there, else `docker-compose` (1.29).
async fn find_compose() -> Result<Vec<String>, ScenarioError> {
    for command in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let found = Command::new(command[0])
            .args(&command[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if found {
            return Ok(command.into_iter().map(String::from).collect());
        }
    }
    Err(run_error(
        "neither `docker compose` nor `docker-compose` runs: install Compose (apt-get install docker-compose)"
            .into(),
    ))
}

/// The controller process of the run.
struct Controller {
    pid: Option<u32>,
    died: CancellationToken,
    waiter: tokio::task::JoinHandle<()>,
    instance: String,
}

impl Controller {
    fn start(
        options: &RunOptions,
        incidents: &Path,
        store: &Path,
        sessions: usize,
        replay_url: Option<String>,
    ) -> Result<Controller, ScenarioError> {
        let log_path = options.out_dir.join("controller.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| run_error(format!("cannot create {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| run_error(format!("{}: {e}", log_path.display())))?;
        let mut command = Command::new(&options.controller_bin);
        command
            .arg("controller")
            .arg("--incidents")
            .arg(incidents)
            .arg("--store")
            .arg(store)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--instance", &options.prefix])
            .args(["--sandbox-image", &options.sandbox_image])
            .args(["--max-sessions", &sessions.max(1).to_string()])
            .arg("--session-timeout-seconds")
            .arg(options.session_timeout.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(url) = replay_url {
            command
                .env("OPSLAB_PROVIDER", "anthropic")
                .env("ANTHROPIC_BASE_URL", url)
                // A server on loopback needs no key, and a person's real key is not its to see.
                .env_remove("ANTHROPIC_API_KEY")
                .env("OPSLAB_MODEL", super::replay::MODEL)
                .env("OPSLAB_SUMMARY_MODEL", "off");
        } else if let Some(provider) = model_provider(&|name: &str| std::env::var(name).ok()) {
            command.env("OPSLAB_PROVIDER", provider);
            if let Some(model) = &options.model {
                command.env("OPSLAB_MODEL", model);
            }
        }
        let mut child = command.spawn().map_err(|e| {
            run_error(format!(
                "cannot run the controller {}: {e}",
                options.controller_bin.display()
            ))
        })?;
        let pid = child.id();
        let died = CancellationToken::new();
        let signal = died.clone();
        let waiter = tokio::spawn(async move {
            let _ = child.wait().await;
            signal.cancel();
        });
        Ok(Controller {
            pid,
            died,
            waiter,
            instance: options.prefix.clone(),
        })
    }

    /// Waits until the controller has started, so that a configuration error stops the run before
    /// any stack is made.
    async fn ready(&self, log: &Path) -> Result<(), ScenarioError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("controller started") {
                return Ok(());
            }
            if self.died.is_cancelled() || Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(run_error(format!(
                    "the controller did not start ({}): {}",
                    log.display(),
                    tail.join(" | ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; then its sandboxes go.
    async fn stop(self) {
        if let Some(pid) = self.pid
            && !self.died.is_cancelled()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(10), self.died.cancelled())
                .await
                .is_err()
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        let _ = self.waiter.await;
        let label = format!("label=opslab.dev/instance={}", self.instance);
        for id in docker_lines(&["ps", "-aq", "--filter", &label]).await {
            let _ = docker(&["rm", "-f", &id]).await;
        }
    }
}

/// Removes what a failed tear-down may have left: the cases' containers, networks and volumes.
async fn sweep<'a>(prefix: &str, names: impl Iterator<Item = &'a Names>) {
    let name_filter = format!("name={prefix}-");
    for id in docker_lines(&["ps", "-aq", "--filter", &name_filter]).await {
        let _ = docker(&["rm", "-f", &id]).await;
    }
    for names in names {
        let _ = docker(&["network", "rm", &names.network()]).await;
    }
    // Every stack's volumes carry the run's prefix (`PREFIX-CASE-data`, `PREFIX-CASE-etcd1-data`).
    for volume in docker_lines(&["volume", "ls", "-q", "--filter", &name_filter]).await {
        if volume.starts_with(&format!("{prefix}-")) {
            let _ = docker(&["volume", "rm", &volume]).await;
        }
    }
}

async fn docker(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("docker").args(args).output().await
}

async fn docker_lines(args: &[&str]) -> Vec<String> {
    match docker(args).await {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

struct CaseContext<'a> {
    options: &'a RunOptions,
    compose: &'a [String],
    /// The compose file of each stack the run's cases use.
    compose_files: &'a HashMap<Stack, PathBuf>,
    incidents: &'a Path,
    controller_died: CancellationToken,
    /// The run's audit store, read for progress.
    store: Option<Store>,
    progress: &'a dyn Progress,
}

/// One case's progress: its steps, timed from its start.
struct CaseProgress<'a> {
    case: &'a str,
    started: Instant,
    progress: &'a dyn Progress,
}

impl CaseProgress<'_> {
    fn step(&self, step: Step) {
        self.progress.step(self.case, self.started.elapsed(), step);
    }
}

/// How long a fresh stack may take to pass the oracle, and a fault to show.
const STACK_READY_TIMEOUT: Duration = Duration::from_secs(180);
const FAULT_VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);

impl CaseContext<'_> {
    async fn run_case(&self, case: &Case, names: &Names) -> CaseResult {
        let mut result = CaseResult {
            case: case.name.clone(),
            summary: case.spec.summary.clone(),
            fault: case.spec.fault,
            ..CaseResult::default()
        };
        let progress = CaseProgress {
            case: &case.name,
            started: Instant::now(),
            progress: self.progress,
        };
        if let Err(error) = self.attempt(case, names, &mut result, &progress).await {
            progress.step(Step::Failed { why: error.clone() });
            result.error = Some(error);
        }
        let down = self
            .compose_run(case, names, &["down", "-v", "--remove-orphans", "-t", "1"])
            .await;
        if let Err(error) = down
            && result.error.is_none()
        {
            result.error = Some(format!("tearing the stack down: {error}"));
        }
        result
    }

    async fn attempt(
        &self,
        case: &Case,
        names: &Names,
        result: &mut CaseResult,
        progress: &CaseProgress<'_>,
    ) -> Result<(), String> {
        progress.step(Step::StackStarting);
        // Compose gives up when a dependency is not healthy in time, as on a busy machine; `up`
        // again carries on from where it stopped.
        let up_args = ["up", "-d", case.spec.stack.entry_service()];
        let mut up = self.compose_run(case, names, &up_args).await;
        for _ in 0..2 {
            if up.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            up = self.compose_run(case, names, &up_args).await;
        }
        up.map_err(|e| format!("bringing the demo stack up: {e}"))?;
        self.poll_script(case, names, "check.sh", true, STACK_READY_TIMEOUT)
            .await
            .map_err(|e| format!("the demo stack never became healthy: {e}"))?;
        progress.step(Step::StackHealthy);
        self.script(case, names, "inject.sh")
            .await
            .map_err(|e| format!("injecting the fault: {e}"))?;
        progress.step(Step::Injected);
        if case.spec.fault {
            self.poll_script(case, names, "check.sh", false, FAULT_VISIBLE_TIMEOUT)
                .await
                .map_err(|_| "the fault never showed: the oracle kept passing".to_string())?;
            progress.step(Step::FaultVisible);
        }
        let manifest = names.fill(&case.incident);
        let parsed = opslab::source::manifest::parse(manifest.as_bytes());
        let incident = parsed
            .incidents
            .first()
            .ok_or_else(|| format!("incident.yaml is not a valid Incident: {:?}", parsed.errors))?;
        let key = opslab::ObjectKey::of(incident).map_err(|e| e.to_string())?;
        let status_path = self
            .incidents
            .join(".status")
            .join(format!("{}.{}.yaml", key.namespace, key.name));
        let filed = Instant::now();
        let file = self.incidents.join(format!("{}.yaml", case.name));
        let tmp = self.incidents.join(format!(".{}.yaml.tmp", case.name));
        std::fs::write(&tmp, &manifest)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| format!("filing the Incident: {e}"))?;
        progress.step(Step::Filed {
            incident: key.to_string(),
        });
        let incident = self.wait_terminal(&status_path, progress).await?;
        let status = incident.status.unwrap_or_default();
        result.phase = Some(status.phase.to_string());
        if status.phase == opslab::incident::Phase::Failed {
            let why = status
                .conditions
                .iter()
                .map(|condition| condition.message.as_str())
                .filter(|message| !message.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            result.error = Some(format!("the session failed: {why}"));
        }
        result.commands = status.commands;
        result.report = status.report.clone();
        result.input_tokens = status.tokens.input;
        result.output_tokens = status.tokens.output;
        result.cost_usd = status.cost_usd;
        result.session_id = status.session_id.clone();
        result.session_seconds = seconds_between(status.started_at, status.finished_at);
        if let Some(report) = &status.report {
            result.outcome = Some(
                serde_json::to_value(report.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            );
            result.detected = case.detected_by(report);
        }
        progress.step(Step::SessionEnded {
            phase: status.phase.to_string(),
            outcome: result.outcome.clone(),
        });
        match self
            .poll_script(case, names, "check.sh", true, self.options.oracle_timeout)
            .await
        {
            Ok(()) => {
                result.fixed = true;
                result.mitigated = true;
                result.time_to_fix_seconds = Some(filed.elapsed().as_secs_f64());
                progress.step(Step::OraclePassed);
                let durable = self.durable(case, names).await;
                progress.step(Step::Durable {
                    why: durable.clone().err(),
                });
                result.durable = Some(durable.is_ok());
                result.not_durable_because = durable.err();
            }
            Err(error) => {
                progress.step(Step::OracleFailed { why: error.clone() });
                result.error = Some(format!("the oracle fails: {error}"));
            }
        }
        Ok(())
    }

    /// The durability check: after a wait, the oracle passes again, and again (given time) after
    /// the case's components are restarted.
    async fn durable(&self, case: &Case, names: &Names) -> Result<(), String> {
        tokio::time::sleep(self.options.durable_wait).await;
        self.script(case, names, "check.sh")
            .await
            .map_err(|e| format!("after {:?}: {e}", self.options.durable_wait))?;
        for container in case.restarts(names) {
            let output = docker(&["restart", "-t", "2", &container])
                .await
                .map_err(|e| format!("cannot run docker: {e}"))?;
            if !output.status.success() {
                return Err(last_lines(&output, "docker restart"));
            }
        }
        // A restarted service needs longer than a fixed one: a minute more than the oracle's time.
        let timeout = self.options.oracle_timeout + Duration::from_secs(60);
        self.poll_script(case, names, "check.sh", true, timeout)
            .await
            .map_err(|e| format!("after a restart: {e}"))
    }

    /// Waits for the Incident's status to reach a terminal phase, showing its session's start and
    /// each command as the store gets it.
    async fn wait_terminal(
        &self,
        status_path: &Path,
        progress: &CaseProgress<'_>,
    ) -> Result<StatusFile, String> {
        let deadline = Instant::now() + self.options.session_timeout + Duration::from_secs(60);
        let mut session: Option<String> = None;
        let mut seen = 0;
        loop {
            let incident = std::fs::read_to_string(status_path)
                .ok()
                .and_then(|text| serde_saphyr::from_str::<StatusFile>(&text).ok());
            let status = incident
                .as_ref()
                .and_then(|incident| incident.status.as_ref());
            if let Some(id) = status.and_then(|status| status.session_id.as_ref())
                && session.as_ref() != Some(id)
            {
                progress.step(Step::SessionStarted {
                    session: id.clone(),
                });
                session = Some(id.clone());
                seen = 0;
            }
            let terminal = status.is_some_and(|status| status.phase.is_terminal());
            if let Some(session) = &session {
                seen = self.show_commands(session, seen, progress).await;
            }
            if let Some(incident) = incident
                && terminal
            {
                return Ok(incident);
            }
            if self.controller_died.is_cancelled() {
                return Err(format!(
                    "the controller exited; see {}",
                    self.options.out_dir.join("controller.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err("the session did not end in time".into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Shows the session's commands stored after event `seen`; returns the last event seen.
    async fn show_commands(&self, session: &str, seen: i64, progress: &CaseProgress<'_>) -> i64 {
        let Some(store) = &self.store else {
            return seen;
        };
        let Ok(events) = store.events_after(session, seen).await else {
            return seen;
        };
        for event in &events {
            if let EventBody::CommandStarted { command, .. } = &event.body {
                progress.step(Step::Command {
                    command: command.clone(),
                });
            }
        }
        events.last().map_or(seen, |event| event.seq)
    }

    /// Runs a case's script until it succeeds (`want_success`) or fails, or the time is up.
    async fn poll_script(
        &self,
        case: &Case,
        names: &Names,
        script: &str,
        want_success: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let outcome = self.script(case, names, script).await;
            if outcome.is_ok() == want_success {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(outcome
                    .err()
                    .unwrap_or_else(|| format!("{script} kept passing")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `bash CASE/SCRIPT` with the case's names in its environment.
    async fn script(&self, case: &Case, names: &Names, script: &str) -> Result<(), String> {
        let mut command = Command::new("bash");
        command
            .arg(case.dir.join(script))
            .envs(names.values())
            .env("OPSLAB_DEMO", &names.prefix)
            .env("COMPOSE", self.compose_line(case, names))
            .env("SANDBOX_IMAGE", &self.options.sandbox_image)
            .stdin(Stdio::null());
        let output = command
            .output()
            .await
            .map_err(|e| format!("cannot run bash: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(last_lines(&output, script))
        }
    }

    /// The compose file of the case's stack (found for every case of the run before it starts).
    fn compose_file(&self, case: &Case) -> &Path {
        self.compose_files
            .get(&case.spec.stack)
            .map_or(Path::new("docker-compose.yml"), PathBuf::as_path)
    }

    fn compose_line(&self, case: &Case, names: &Names) -> String {
        format!(
            "{} -f {} -p {}",
            self.compose.join(" "),
            self.compose_file(case).display(),
            names.prefix
        )
    }

    async fn compose_run(&self, case: &Case, names: &Names, args: &[&str]) -> Result<(), String> {
        let output = Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .arg("-f")
            .arg(self.compose_file(case))
            .args(["-p", &names.prefix])
            .args(args)
            .env("OPSLAB_DEMO", &names.prefix)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.compose.join(" ")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(last_lines(&output, &self.compose.join(" ")))
        }
    }
}

fn last_lines(output: &std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    format!("{what} exited with {}: {tail}", output.status)
}

fn seconds_between(start: Option<jiff::Timestamp>, end: Option<jiff::Timestamp>) -> Option<f64> {
    Some((end?.as_millisecond() - start?.as_millisecond()) as f64 / 1000.0)
}

/// Fills in each case's turns and state-changing commands from its session's audit trail, then its
/// scores; for a control, any state-changing command means it was not handled right.
async fn add_commands(
    store_path: &Path,
    cases: &[Case],
    names: &HashMap<String, Names>,
    results: &mut [CaseResult],
) {
    fill_commands(store_path, cases, results).await;
    for (case, result) in cases.iter().zip(results.iter_mut()) {
        let observed = Observed {
            report: result.report.clone(),
            mitigated: result.mitigated,
            durable: result.durable,
            commands: std::mem::take(&mut result.all_commands),
        };
        result.scores = score::score(case, &names[&case.name], &observed);
        result.failures = result.scores.failures();
        result.passed = result.failures.is_empty() && result.error.is_none();
    }
}

/// Lets the judge decide each fault case's root-cause score from its report; the keyword score
/// stays where the judge gave no verdict (the verdict says why).
async fn rejudge(
    judge: &Judge,
    cases: &[Case],
    names: &HashMap<String, Names>,
    results: &mut [CaseResult],
) {
    for (case, result) in cases.iter().zip(results.iter_mut()) {
        let Some(report) = result.report.as_ref().filter(|_| case.spec.fault) else {
            continue;
        };
        let verdict = judge
            .verdict(case, &names[&case.name], report, result.scores.root_cause)
            .await;
        if let Some(matches) = verdict.root_cause {
            result.scores.root_cause = Some(matches);
            result.failures = result.scores.failures();
            result.passed = result.failures.is_empty() && result.error.is_none();
        }
        result.judge = Some(verdict);
    }
}

async fn fill_commands(store_path: &Path, cases: &[Case], results: &mut [CaseResult]) {
    let store = match Store::open(store_path, Redactor::default()).await {
        Ok(store) => store,
        Err(error) => {
            for result in results.iter_mut() {
                result
                    .error
                    .get_or_insert(format!("cannot read the audit store: {error}"));
            }
            return;
        }
    };
    for (case, result) in cases.iter().zip(results.iter_mut()) {
        let Some(session) = &result.session_id else {
            continue;
        };
        let events = match store.events(session).await {
            Ok(events) => events,
            Err(error) => {
                result
                    .error
                    .get_or_insert(format!("cannot read the session's events: {error}"));
                continue;
            }
        };
        result.all_commands = events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::CommandStarted { command, .. } => Some(command.clone()),
                _ => None,
            })
            .collect();
        result.turns = events
            .iter()
            .filter(|event| matches!(event.body, EventBody::LlmResponse { .. }))
            .count() as u32;
        result.state_changing_commands = result
            .all_commands
            .iter()
            .filter(|command| classify::changes_state(command))
            .cloned()
            .collect();
        if !case.spec.fault && !result.state_changing_commands.is_empty() {
            result.fixed = false;
            result.time_to_fix_seconds = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_follows_the_environment_unless_chosen() {
        let none = |_: &str| None;
        assert_eq!(choose_driver(None, none).unwrap(), Driver::Replay);
        let key = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk".to_string());
        assert_eq!(choose_driver(None, key).unwrap(), Driver::Model);
        assert_eq!(model_provider(&key).as_deref(), Some("anthropic"));
        let url = |name: &str| (name == "OPENAI_BASE_URL").then(|| "http://x/v1".to_string());
        assert_eq!(choose_driver(None, url).unwrap(), Driver::Model);
        assert_eq!(model_provider(&url).as_deref(), Some("openai"));
        let empty = |_: &str| Some(" ".to_string());
        assert_eq!(choose_driver(None, empty).unwrap(), Driver::Replay);
        assert_eq!(
            choose_driver(Some(Driver::Replay), key).unwrap(),
            Driver::Replay
        );
        let error = choose_driver(Some(Driver::Model), none).unwrap_err();
        assert!(error.to_string().contains("ANTHROPIC_API_KEY"), "{error}");
    }

    #[test]
    fn session_seconds_come_from_the_status_times() {
        let at = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            seconds_between(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:02.5Z")),
            Some(2.5)
        );
        assert_eq!(seconds_between(None, at("2026-01-01T00:00:00Z")), None);
    }
}
