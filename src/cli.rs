//! The command line: clap definitions, every operator flag also readable from the environment. Raw
//! flags become a validated [`Config`] once, in [`ControllerArgs::into_config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use opslab::audit::{Durability, LocationError, StoreLocation};
use opslab::config::{AgentKubeAccess, KubeSettings, LeaseSettings, WatchMode, WatchScope};
use opslab::config::{AgentLimits, Config, SourceConfig};
use opslab::console::ConsoleOptions;
use opslab::cost::CostTable;
use opslab::llm::{ProviderConfig, ProviderKind, retry::RetryPolicy};
use opslab::sandbox::{DockerAccess, SandboxConfig, SandboxInternet};
use opslab::telemetry::LogFormat;
use opslab::view::{ListFormat, OutputFormat};
use opslab_scenario::ScenarioError;
use opslab_scenario::replay::{self, ReplayServer};

use opslab::label_selector::LabelSelector;

/// `opslab --version`: the package version and the commit it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OPSLAB_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(name = "opslab", version = VERSION, about = "An autonomous incident responder")]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "OPSLAB_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller: watch Incidents and run an agent session for each.
    Controller(Box<ControllerArgs>),
    /// Print the Incident CustomResourceDefinition as YAML.
    Crd,
    /// List resources.
    Get(GetArgs),
    /// Show one resource in detail.
    Describe(DescribeArgs),
    /// List agent sessions, newest first.
    Sessions(SessionsArgs),
    /// Print a session's whole conversation: reasoning, commands, exit codes, outputs, summaries.
    Show(ShowArgs),
    /// Stream a session as it happens, until it ends; says on stderr what it waits for.
    Follow(FollowArgs),
    /// Start a new attempt of an Incident whose session has ended (audited, with who asked).
    Retry(RequestArgs),
    /// Stop an Incident's running session now: its command killed, its sandbox removed (audited,
    /// with who asked and why).
    Cancel(RequestArgs),
    /// Check the audit trail.
    Audit(AuditArgs),
    /// Serve the read-only web console (/ui/) on a store, e.g. a copy taken after an incident.
    Console(ConsoleArgs),
    /// Fault scenarios: break a demo stack, file an Incident, and judge the agent.
    Scenario(ScenarioArgs),
    /// Print a shell completion script, e.g. `opslab completion bash > /etc/bash_completion.d/opslab`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `opslab man > /usr/local/share/man/man1/opslab.1`.
    Man,
}

/// Where the audit store is.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The audit store: an SQLite file (a path, or sqlite:PATH), or a PostgreSQL database
    /// (postgres://USER:PASSWORD@HOST/DB), which several replicas can share.
    #[arg(
        long = "store",
        env = "OPSLAB_STORE",
        default_value = "opslab.db",
        hide_env_values = true
    )]
    location: String,
}

impl StoreArgs {
    /// The parsed location. Parsed here rather than by clap, whose errors repeat the value (and
    /// with it a URL's password).
    pub fn location(&self) -> Result<StoreLocation, LocationError> {
        self.location.parse()
    }
}

/// The location may hold a password: shown through [`StoreLocation`]'s redacting display.
impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.location() {
            Ok(location) => write!(f, "StoreArgs({location})"),
            Err(_) => f.write_str("StoreArgs(invalid)"),
        }
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(subcommand)]
    pub resource: GetResource,
}

#[derive(Subcommand, Debug)]
pub enum GetResource {
    /// Incidents with their phase, severity, commands, reason and age; invalid manifests are listed
    /// too (with -o table or wide, and no -l or NAME).
    #[command(visible_aliases = ["incident", "inc"])]
    Incidents(GetIncidentsArgs),
}

#[derive(Args, Debug)]
pub struct GetIncidentsArgs {
    /// Only these Incidents.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    /// Only Incidents whose metadata.labels match: `k=v`, `k!=v`, `k` or `!k`, comma-separated
    /// (all must match).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<LabelSelector>,
    /// Output format: `wide` adds the session and the reason's message; `name` prints
    /// incident.opslab.dev/NAME.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: ListFormat,
    /// Leave out the header row (table and wide).
    #[arg(long)]
    pub no_headers: bool,
    /// After the list, print each Incident again whenever it changes in the store, until
    /// interrupted.
    #[arg(short, long)]
    pub watch: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Which namespaces a command looks at, as kubectl's `-n` and `-A`.
#[derive(Args, Debug)]
pub struct NamespaceArgs {
    /// The namespace [default: `default`, as kubectl without a context namespace].
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(subcommand)]
    pub resource: DescribeResource,
}

#[derive(Subcommand, Debug)]
pub enum DescribeResource {
    /// An Incident: spec, status, conditions with their reasons and messages, the last commands,
    /// the report, and its sessions. Kubernetes Events are not in the store: in kube mode,
    /// `kubectl describe incident NAME` shows them.
    #[command(visible_aliases = ["incidents", "inc"])]
    Incident(DescribeIncidentArgs),
}

#[derive(Args, Debug)]
pub struct DescribeIncidentArgs {
    /// NAME or NAMESPACE/NAME.
    pub name: String,
    /// The namespace of NAME [default: `default`].
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// How many of the newest session's last commands to show.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub commands: usize,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct SessionsArgs {
    /// Only the sessions of this Incident: NAME (in namespace `default`) or NAMESPACE/NAME.
    #[arg(long, value_name = "INCIDENT")]
    pub incident: Option<String>,
    /// At most this many sessions, the newest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Output format: `wide` adds the cost, the start time and the reason's message; `name` prints
    /// the session ids.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: ListFormat,
    /// Leave out the header row (table and wide).
    #[arg(long)]
    pub no_headers: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A session id, or an Incident as NAME or NAMESPACE/NAME (its newest session).
    pub target: String,
    /// The namespace of an Incident NAME [default: `default`].
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Output format (`table` is the readable story).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Print whole outputs; by default a long output shows its first and last lines.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// A session id, or an Incident as NAME or NAMESPACE/NAME: its newest session, or, if it has
    /// none yet, the first to start. Fails at once if the store knows no such session or Incident.
    pub target: String,
    /// The namespace of an Incident NAME [default: `default`].
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print whole outputs.
    #[arg(long)]
    pub raw: bool,
    /// Give up (exit 1) if the session has not ended after this long: `90s`, `5m`, `1h30m`, or
    /// seconds [default: wait until it ends].
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

/// A duration as people write it (`90s`, `5m`, `1h30m`, `2 minutes`, ISO 8601), or seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let signed: jiff::SignedDuration = text.parse().map_err(|_| {
                format!("{text:?} is not a duration: write it as 90s, 5m, 1h30m, or seconds")
            })?;
            Duration::try_from(signed).map_err(|_| format!("{text:?}: must not be negative"))?
        }
    };
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// Where a retry or cancel request goes: in files mode a request file beside the manifests (never
/// the manifest itself), in Kubernetes mode an annotation on the Incident (`opslab.dev/retry`,
/// `opslab.dev/cancel`; `kubectl annotate --overwrite` with any new value does the same).
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The Incident, as NAME or NAMESPACE/NAME.
    pub incident: String,
    /// Why, for the audit trail (which also records who asked, from $USER, and when).
    #[arg(long)]
    pub reason: Option<String>,
    /// Where the Incident lives.
    #[arg(long, env = "OPSLAB_SOURCE", value_enum, default_value = "files")]
    pub source: SourceKind,
    /// The controller's folder of Incident manifests (files mode).
    #[arg(long, env = "OPSLAB_INCIDENTS")]
    pub incidents: Option<PathBuf>,
    /// A kubeconfig file (kube mode) [default: in-cluster config, then $KUBECONFIG, then
    /// ~/.kube/config].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chains and name the first broken link; exits 1 if any is broken.
    Verify {
        /// One session; every session when left out.
        session: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to serve the console. A non-loopback address needs --console-token (or
    /// --console-insecure).
    #[arg(long, env = "OPSLAB_CONSOLE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub access: ConsoleOptions,
}

/// Where Incidents come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Manifests in a folder (`--incidents`), with SQLite: compose mode, no cluster.
    Files,
    /// Incident resources on a Kubernetes API server.
    Kube,
}

#[derive(Args, Debug)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: ScenarioCommand,
}

#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// For each case: bring up its own demo stack, inject the fault, file the Incident, let a
    /// session run, check the oracle, tear the stack down; then print detected, fixed, time to fix,
    /// commands and tokens per case. Exits 1 unless every case was detected and fixed.
    Run(Box<ScenarioRunArgs>),
    /// List the cases.
    List {
        /// The folder of cases, one directory each.
        #[arg(long, env = "OPSLAB_SCENARIOS", default_value = "scenarios")]
        scenarios: PathBuf,
    },
}

/// What drives the sessions of a scenario run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverArg {
    /// A real model when ANTHROPIC_API_KEY or OPENAI_BASE_URL is set, else the replay.
    Auto,
    /// A local server replaying each case's own commands.
    Replay,
    /// The model the environment configures (as for `opslab controller`).
    Model,
}

#[derive(Args, Debug)]
pub struct ScenarioRunArgs {
    /// The cases to run [default: all].
    pub names: Vec<String>,
    /// The folder of cases, one directory each.
    #[arg(long, env = "OPSLAB_SCENARIOS", default_value = "scenarios")]
    pub scenarios: PathBuf,
    /// The compose file whose web, api and store services make each case's demo stack.
    #[arg(
        long,
        env = "OPSLAB_COMPOSE_FILE",
        default_value = "docker-compose.yml"
    )]
    pub compose_file: PathBuf,
    /// The compose file of the etcd demo (a three-member cluster and the kv service), for the
    /// cases of `stack: etcd`.
    #[arg(
        long,
        env = "OPSLAB_ETCD_COMPOSE_FILE",
        default_value = "docker/demo/etcd/docker-compose.yml"
    )]
    pub etcd_compose_file: PathBuf,
    /// The compose command [default: `docker compose` if present, else `docker-compose`].
    #[arg(long, env = "OPSLAB_COMPOSE")]
    pub compose: Option<String>,
    /// What drives the sessions.
    #[arg(long, value_enum, default_value = "auto")]
    pub driver: DriverArg,
    /// Where the run's audit store, Incidents, controller log and results.json go
    /// [default: scenario-runs/RUN].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The sandbox image (also used to probe the demo).
    #[arg(
        long,
        env = "OPSLAB_SANDBOX_IMAGE",
        default_value = "opslab-sandbox:latest"
    )]
    pub sandbox_image: String,
    /// The run's name: it prefixes every stack, network and volume, and labels the sandboxes
    /// [default: scn-RANDOM].
    #[arg(long)]
    pub name: Option<String>,
    /// Cases run at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// A session's time budget, in seconds.
    #[arg(long, default_value_t = 600)]
    pub session_timeout_seconds: u64,
    /// How long the oracle is retried after the session, in seconds.
    #[arg(long, default_value_t = 60)]
    pub oracle_timeout_seconds: u64,
    /// The durability check's wait after the oracle passed, before it checks again and restarts
    /// the case's components, in seconds.
    #[arg(long, default_value_t = 15)]
    pub durable_wait_seconds: u64,
    /// Replay each case's deliberately wrong session of this kind instead (cases without one are
    /// left out), to see the scoring catch it; with --driver replay.
    #[arg(long, value_enum)]
    pub replay_wrong: Option<opslab_scenario::WrongKind>,
    /// Let this model decide the root-cause score from each report (through the provider the
    /// environment configures, as for --driver model), instead of the deterministic keyword match;
    /// the keyword verdict is kept beside it in the JSON [default: the keyword match only].
    #[arg(long)]
    pub judge_model: Option<String>,
    /// Run every case K times; the report gives pass@1 and pass@K per case.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub repeat: u16,
    /// Models to compare, comma-separated (OPSLAB_MODEL for each; with the model driver): the
    /// cases run with each, and the report sets them side by side, with an SVG chart.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// The headings of `opslab controller --help`, so that its ~45 flags read in groups.
const SOURCE: &str = "Source";
const LEADER_ELECTION: &str = "Leader election (kube mode)";
const AGENT_KUBE: &str = "The agent's Kubernetes access (kube mode)";
const STORE: &str = "Store";
const MODEL_API: &str = "Model API";
const BUDGETS: &str = "Budgets";
const SANDBOX: &str = "Sandbox";
const DOCKER_ACCESS: &str = "Docker access (sandboxes)";
const HTTP: &str = "HTTP";
const REDACTION: &str = "Redaction";
const ALERTS: &str = "Alert intake";

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Where Incidents come from.
    #[arg(help_heading = SOURCE)]
    #[arg(long, env = "OPSLAB_SOURCE", value_enum, default_value = "files")]
    pub source: SourceKind,
    /// The folder of Incident manifests to watch (files mode).
    #[arg(help_heading = SOURCE)]
    #[arg(long, env = "OPSLAB_INCIDENTS")]
    pub incidents: Option<PathBuf>,
    /// A kubeconfig file (kube mode) [default: in-cluster config, then $KUBECONFIG, then
    /// ~/.kube/config].
    #[arg(help_heading = SOURCE)]
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Elect a leader on a Lease (kube mode), so that of several replicas only one reconciles.
    #[arg(help_heading = LEADER_ELECTION)]
    #[arg(long, env = "OPSLAB_LEADER_ELECTION")]
    pub leader_election: bool,
    /// The Lease's name.
    #[arg(help_heading = LEADER_ELECTION)]
    #[arg(long, env = "OPSLAB_LEASE_NAME", default_value = "opslab-controller")]
    pub lease_name: String,
    /// The Lease's namespace [default: the pod's namespace, or the kubeconfig's].
    #[arg(help_heading = LEADER_ELECTION)]
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease and in Events [default: the host name and the process id].
    #[arg(help_heading = LEADER_ELECTION)]
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// Seconds a Lease lasts without renewal.
    #[arg(help_heading = LEADER_ELECTION)]
    #[arg(long, env = "OPSLAB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Reconcile only the Incidents with these labels (kube mode; kubectl's equality-based form:
    /// `team=sre,tier!=test`), so that several controllers can share a cluster.
    #[arg(help_heading = SOURCE)]
    #[arg(long, env = "OPSLAB_INCIDENT_SELECTOR")]
    pub incident_selector: Option<LabelSelector>,
    /// Watch only this namespace's Incidents (kube mode; repeat it, or a comma list in
    /// OPSLAB_WATCH_NAMESPACES), a watch each, so that Roles in those namespaces suffice
    /// [default: every namespace, which needs a ClusterRole].
    #[arg(help_heading = SOURCE)]
    #[arg(long = "watch-namespace", value_name = "NAMESPACE")]
    #[arg(env = "OPSLAB_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Give each session's sandbox a kubeconfig for this ServiceAccount (kube mode): a token minted
    /// per session (TokenRequest), expiring with it, redacted from everything kept. Its rights are
    /// the RBAC bound to it (the chart binds the `view` ClusterRole). Unset: no Kubernetes access.
    #[arg(help_heading = AGENT_KUBE)]
    #[arg(long, env = "OPSLAB_AGENT_SERVICE_ACCOUNT")]
    pub agent_service_account: Option<String>,
    /// The agent's ServiceAccount's namespace [default: the pod's namespace, or the kubeconfig's].
    #[arg(help_heading = AGENT_KUBE)]
    #[arg(long, env = "OPSLAB_AGENT_SERVICE_ACCOUNT_NAMESPACE")]
    pub agent_service_account_namespace: Option<String>,
    /// The API server's URL as a sandbox reaches it [default: the controller's own, in a cluster
    /// the `kubernetes` Service's address].
    #[arg(help_heading = AGENT_KUBE)]
    #[arg(long, env = "OPSLAB_AGENT_KUBE_SERVER")]
    pub agent_kube_server: Option<String>,
    /// Re-scan the folder every this many milliseconds instead of watching its events: for network
    /// filesystems and mounts that send no inotify events.
    #[arg(help_heading = SOURCE)]
    #[arg(long, env = "OPSLAB_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    #[command(flatten, next_help_heading = STORE)]
    pub store: StoreArgs,
    /// What an SQLite store's commits survive: `full`, a power loss (each commit is synced to
    /// disk); `normal`, a crash of the process only (faster; after a power loss the last events
    /// may be gone, and a command whose start was lost may run again).
    #[arg(
        long,
        env = "OPSLAB_STORE_DURABILITY",
        value_enum,
        default_value_t,
        help_heading = STORE
    )]
    pub store_durability: Durability,
    /// The model API to speak.
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_PROVIDER", value_enum, default_value = "anthropic")]
    pub provider: ProviderKind,
    /// The agent's model [default: claude-sonnet-4-5 (anthropic), gpt-4.1 (openai)].
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_MODEL")]
    pub model: Option<String>,
    /// The small model that summarises long command output; `off` turns summaries off
    /// [default: claude-haiku-4-5 (anthropic), gpt-4.1-mini (OpenAI), off on other
    /// OpenAI-compatible servers, where summaries would queue in front of the agent's turns].
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_SUMMARY_MODEL")]
    pub summary_model: Option<String>,
    /// The Anthropic API's base URL, without /v1.
    #[arg(help_heading = MODEL_API)]
    #[arg(
        long,
        env = "ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_base_url: String,
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true, hide = true)]
    pub anthropic_api_key: Option<String>,
    /// An OpenAI-compatible API's base URL, with /v1 (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM…).
    #[arg(help_heading = MODEL_API)]
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true, hide = true)]
    pub openai_api_key: Option<String>,
    #[command(flatten, next_help_heading = MODEL_API)]
    pub replay: ReplayArgs,
    /// Mark each request's unchanging prefix (tools, system prompt, earlier turns) for the Anthropic
    /// API's prompt cache, so each turn re-reads it at a tenth of the price; `off` for a server
    /// that refuses `cache_control` [default: on (anthropic), off (replay); OpenAI-compatible
    /// servers cache by themselves].
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_PROMPT_CACHE", value_enum)]
    pub prompt_cache: Option<opslab::llm::Switch>,
    /// The most tokens one request may hold: older command outputs are shortened in what is sent
    /// (never in what is stored) to stay within it [default: the model's context window, or 32768
    /// for a model opslab does not know].
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_CONTEXT_TOKENS")]
    pub context_tokens: Option<u64>,
    /// Ask for responses as server-sent events (`stream: true`); the stored response is the same.
    /// (A server that streams unasked is read either way.)
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_STREAM")]
    pub stream: bool,
    /// The summariser's own server, of the provider's protocol (as ANTHROPIC_BASE_URL or
    /// OPENAI_BASE_URL), so that summaries never wait in the agent's queue on a one-slot server;
    /// name its model with --summary-model [default: the agent's server].
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_SUMMARY_BASE_URL")]
    pub summary_base_url: Option<String>,
    #[arg(help_heading = MODEL_API)]
    #[arg(
        long,
        env = "OPSLAB_SUMMARY_API_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub summary_api_key: Option<String>,
    /// Model calls retried at most this many times (429, 5xx, 529, connection errors).
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_LLM_MAX_RETRIES", default_value_t = 5)]
    pub llm_max_retries: usize,
    /// The first retry's delay, in milliseconds; it doubles (with jitter) up to 30 s.
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_LLM_RETRY_DELAY_MS", default_value_t = 1000)]
    pub llm_retry_delay_ms: u64,
    /// Seconds one model request may take (with `--stream`: the longest silence in its stream).
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_LLM_TIMEOUT_SECONDS", default_value_t = 300)]
    pub llm_timeout_seconds: u64,
    /// Sessions that may run at once; more Incidents wait in Queued.
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_MAX_SESSIONS", default_value_t = 4)]
    pub max_sessions: usize,
    /// The most model turns a session may take.
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_MAX_TURNS", default_value_t = 40)]
    pub max_turns: u32,
    /// A session's wall-clock budget, in seconds.
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_SESSION_TIMEOUT_SECONDS", default_value_t = 1800)]
    pub session_timeout_seconds: u64,
    /// How long one command may run, in seconds.
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_COMMAND_TIMEOUT_SECONDS", default_value_t = 120)]
    pub command_timeout_seconds: u64,
    /// On SIGTERM, how long a running command may still finish before it is stopped (the session
    /// resumes from the store at the next start either way) [default: the command timeout].
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// A session's token budget (input and output together).
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_MAX_TOKENS", default_value_t = 2_000_000)]
    pub max_tokens: u64,
    /// A session's spend budget in US dollars, estimated from the cost table [default: none].
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_MAX_COST_USD")]
    pub max_cost_usd: Option<f64>,
    /// A YAML or JSON file of model prices per million tokens (`model: {input: 3, output: 15}`),
    /// laid over the built-in table.
    #[arg(help_heading = BUDGETS)]
    #[arg(long, env = "OPSLAB_COST_TABLE")]
    pub cost_table: Option<PathBuf>,
    /// Where to serve /metrics, /healthz and /readyz. The loopback by default, where no sandbox can
    /// reach it; in a container, listen on 0.0.0.0 and publish the port on the host's loopback (see
    /// docker-compose.yml).
    #[arg(help_heading = HTTP)]
    #[arg(long, env = "OPSLAB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Who may read the web console under /ui/ on the same port.
    #[command(flatten, next_help_heading = HTTP)]
    pub console: ConsoleOptions,
    /// `max_tokens` of one model response.
    #[arg(help_heading = MODEL_API)]
    #[arg(long, env = "OPSLAB_RESPONSE_MAX_TOKENS", default_value_t = 4096)]
    pub response_max_tokens: u32,
    /// This controller's name on the Docker engine: it labels its sandboxes, and removes orphans
    /// only among its own.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_INSTANCE", default_value = "opslab")]
    pub instance: String,
    /// The sandbox image.
    #[arg(help_heading = SANDBOX)]
    #[arg(
        long,
        env = "OPSLAB_SANDBOX_IMAGE",
        default_value = "opslab-sandbox:latest"
    )]
    pub sandbox_image: String,
    /// The Docker engine's socket: the controller's connection, the proxy's upstream, and what
    /// `--docker-access full` mounts into sandboxes.
    #[arg(help_heading = DOCKER_ACCESS)]
    #[arg(
        long,
        env = "OPSLAB_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
    /// What the agent can reach of the Docker engine: `guarded` (its own socket, served by opslab's
    /// proxy, which enforces the policy and audits every call), `full` (the engine's socket, for
    /// labs) or `none`.
    #[arg(help_heading = DOCKER_ACCESS)]
    #[arg(long, env = "OPSLAB_DOCKER_ACCESS", value_enum, default_value_t)]
    pub docker_access: DockerAccess,
    /// Where the proxy makes each sandbox's socket (`guarded`). When the controller runs in a
    /// container, a host folder mounted at this same path.
    #[arg(help_heading = DOCKER_ACCESS)]
    #[arg(long, env = "OPSLAB_PROXY_SOCKET_DIR", default_value = "/run/opslab")]
    pub proxy_socket_dir: PathBuf,
    /// Let the agent create containers through the proxy (`guarded`); never privileged, with host
    /// paths, host namespaces, added capabilities or opslab's objects.
    #[arg(help_heading = DOCKER_ACCESS)]
    #[arg(long, env = "OPSLAB_DOCKER_ALLOW_CREATE")]
    pub docker_allow_create: bool,
    /// Sandboxes kept started before any session needs them, so a new session does not wait for
    /// Docker to create and start one; 0 makes each one when its session starts.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_SPARES", default_value_t = 1)]
    pub sandbox_spares: usize,
    /// Whether a sandbox whose Incident names no networks can reach the internet: `on` gives it a
    /// network of its own with a route out, `off` no network at all. Either way it reaches no other
    /// sandbox and not the controller. An Incident's own networks are as their owner made them.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_INTERNET", value_enum, default_value_t)]
    pub sandbox_internet: SandboxInternet,
    /// Memory limit of a sandbox, in MiB.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_MEMORY_MB", default_value_t = 512)]
    pub sandbox_memory_mb: i64,
    /// CPU limit of a sandbox, in CPUs.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_CPUS", default_value_t = 1.0)]
    pub sandbox_cpus: f64,
    /// Process limit of a sandbox.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_PIDS", default_value_t = 256)]
    pub sandbox_pids: i64,
    /// The only Linux capabilities a sandbox keeps (comma-separated); all others are dropped.
    /// NET_RAW is what ping needs.
    #[arg(help_heading = SANDBOX)]
    #[arg(
        long,
        env = "OPSLAB_SANDBOX_CAPABILITIES",
        value_delimiter = ',',
        default_value = "NET_RAW"
    )]
    pub sandbox_capabilities: Vec<String>,
    /// Give sandboxes no-new-privileges (setuid binaries raise nothing).
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_NO_NEW_PRIVILEGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub sandbox_no_new_privileges: bool,
    /// Give sandboxes a read-only root filesystem, with tmpfs at /tmp and /work (the home folder).
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_READ_ONLY_ROOT", default_value_t = true, action = clap::ArgAction::Set)]
    pub sandbox_read_only_root: bool,
    /// Size of each tmpfs of a read-only sandbox (/tmp and /work), in MiB; it counts against the
    /// memory limit as it fills.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_TMPFS_MB", default_value_t = 256)]
    pub sandbox_tmpfs_mb: i64,
    /// A seccomp profile (JSON file) for sandboxes instead of the engine's default.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_SANDBOX_SECCOMP_PROFILE")]
    pub sandbox_seccomp_profile: Option<PathBuf>,
    /// Bytes kept from the start and from the end of a command's output.
    #[arg(help_heading = SANDBOX)]
    #[arg(long, env = "OPSLAB_OUTPUT_KEEP_BYTES", default_value_t = 16 * 1024)]
    pub output_keep_bytes: usize,
    /// Names of environment variables whose values are secrets to redact everywhere (comma-separated).
    #[arg(help_heading = REDACTION)]
    #[arg(long, env = "OPSLAB_SECRET_ENV", value_delimiter = ',')]
    pub secret_env: Vec<String>,
    #[command(flatten)]
    pub notify: opslab::notify::NotifyArgs,
    /// Turns on the Alertmanager intake (POST /api/v1/alerts on the HTTP port), protected by this
    /// bearer token (Alertmanager's http_config.authorization). Off when unset.
    #[arg(help_heading = ALERTS)]
    #[arg(long, env = "OPSLAB_ALERTS_TOKEN", hide_env_values = true)]
    pub alerts_token: Option<String>,
    /// A YAML file of rules: which alerts become Incidents and how they fill the spec [default:
    /// every alert, from its summary, description and severity, service and network labels].
    #[arg(help_heading = ALERTS)]
    #[arg(long, env = "OPSLAB_ALERT_RULES")]
    pub alert_rules: Option<PathBuf>,
}

/// The `replay` provider: no model, opslab's scripted replay of the scenarios, served on loopback.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The scenarios the `replay` provider plays (one directory per case, as `opslab scenario`
    /// reads them).
    #[arg(long, env = "OPSLAB_REPLAY_SCENARIOS", default_value = "scenarios")]
    pub replay_scenarios: PathBuf,
    /// The prefix of the compose demo's names that the `replay` provider's commands use
    /// (docker-compose.yml's OPSLAB_DEMO).
    #[arg(long, env = "OPSLAB_DEMO", default_value = "demo")]
    pub replay_demo: String,
    /// The scenario the `replay` provider also plays for any other Incident on the demo's network:
    /// one an alert filed while the demo has that scenario's fault (scripts/demo sets it).
    #[arg(long, env = "OPSLAB_REPLAY_CASE", value_name = "SCENARIO")]
    pub replay_case: Option<String>,
    /// The base URL of the replay server, once [`ControllerArgs::start_replay`] has started it.
    #[arg(skip)]
    pub started_url: Option<String>,
}

impl ControllerArgs {
    /// With the `replay` provider, starts its server on loopback; it serves for as long as the
    /// returned value lives. Other providers need nothing.
    pub async fn start_replay(&mut self) -> Result<Option<ReplayServer>, ScenarioError> {
        if self.provider != ProviderKind::Replay {
            return Ok(None);
        }
        let alerted = self
            .replay
            .replay_case
            .as_deref()
            .filter(|case| !case.trim().is_empty());
        let server = ReplayServer::for_demo(
            &self.replay.replay_scenarios,
            &self.replay.replay_demo,
            alerted,
        )
        .await?;
        self.replay.started_url = Some(server.base_url());
        Ok(Some(server))
    }

    /// How long a stop waits for running commands: the flag, else the command timeout.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(
            self.shutdown_grace_seconds
                .unwrap_or(self.command_timeout_seconds),
        )
    }

    /// Checks the flags once; later code trusts the result. The checks run in this order, so
    /// that of several mistakes the same one is named first.
    pub fn into_config(self) -> Result<Config, String> {
        let (source, replica) = self.source_config()?;
        self.check_bounds()?;
        let seccomp_profile = read_seccomp_profile(self.sandbox_seccomp_profile.as_deref())?;
        let endpoint = self.model_endpoint()?;
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| endpoint.default_model.to_string());
        let costs = self.cost_table(&model)?;
        let summary_endpoint = self.summary_endpoint()?;
        let summary_model = self.summary_model(&endpoint);
        let mut secret_values =
            self.secret_values(endpoint.api_key.as_ref(), summary_endpoint.as_ref())?;
        // Receiver URLs are secrets (an incoming webhook's URL is its credential).
        let notify = self
            .notify
            .clone()
            .into_config(|name| std::env::var(name).ok())
            .map_err(|error| error.to_string())?;
        secret_values.extend(notify.secret_values());
        let alerts = self.alert_intake()?;
        secret_values.extend(alerts.as_ref().map(|alerts| alerts.token.clone()));
        Ok(Config {
            source,
            store: self.store.location().map_err(|error| error.to_string())?,
            store_durability: self.store_durability,
            provider: self.provider_config(endpoint, summary_endpoint),
            agent: self.agent_limits(model),
            summary_model,
            sandbox: self.sandbox_config(replica, seccomp_profile),
            max_sessions: self.max_sessions,
            secret_values,
            listen: self.listen,
            costs,
            notify,
            alerts,
        })
    }

    /// Where Incidents come from, and in kube mode this replica's identity: replicas tell their
    /// spare sandboxes apart by it (in files mode there is one controller per instance).
    fn source_config(&self) -> Result<(SourceConfig, Option<String>), String> {
        match self.source {
            SourceKind::Files => Ok((self.files_source()?, None)),
            SourceKind::Kube => {
                let (settings, identity) = self.kube_source()?;
                Ok((SourceConfig::Kubernetes(settings), Some(identity)))
            }
        }
    }

    fn files_source(&self) -> Result<SourceConfig, String> {
        let Some(incidents) = &self.incidents else {
            return Err("files mode needs --incidents DIR (or OPSLAB_INCIDENTS); for a cluster, use --source kube".into());
        };
        // Absolute, so that watch events and folder listings name files the same way.
        let dir = match incidents.canonicalize() {
            Ok(path) if path.is_dir() => path,
            Ok(_) | Err(_) => {
                return Err(format!(
                    "--incidents {}: not a folder (create it, or point OPSLAB_INCIDENTS at one)",
                    incidents.display()
                ));
            }
        };
        let watch = match self.poll_interval_ms {
            Some(0) => return Err("--poll-interval-ms must be at least 1".into()),
            Some(millis) => WatchMode::Poll(Duration::from_millis(millis)),
            None => WatchMode::Events,
        };
        Ok(SourceConfig::Files { dir, watch })
    }

    /// The cluster's settings, and this replica's identity in the Lease.
    fn kube_source(&self) -> Result<(KubeSettings, String), String> {
        if self.lease_duration_seconds < 3 {
            return Err("--lease-duration-seconds must be at least 3".into());
        }
        let identity = self
            .lease_identity
            .clone()
            .filter(|identity| !identity.trim().is_empty())
            .unwrap_or_else(|| replica_identity(host_name(), std::process::id()));
        let lease_namespace = self
            .lease_namespace
            .clone()
            .filter(|namespace| !namespace.is_empty());
        let agent_access = agent_kube_access(
            self.agent_service_account.clone(),
            self.agent_service_account_namespace
                .clone()
                .or_else(|| lease_namespace.clone()),
            self.agent_kube_server.clone(),
        )?;
        let settings = KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            leader_election: self.leader_election.then(|| LeaseSettings {
                name: self.lease_name.clone(),
                namespace: lease_namespace,
                identity: identity.clone(),
                duration: Duration::from_secs(self.lease_duration_seconds),
            }),
            agent_access,
            incident_selector: self.incident_selector.clone(),
            watch: watch_scope(self.watch_namespaces.clone())?,
        };
        Ok((settings, identity))
    }

    /// Budgets and limits that must not be zero or too small, and the Docker flags that must fit
    /// together.
    fn check_bounds(&self) -> Result<(), String> {
        let positive = [
            ("--max-sessions", self.max_sessions as u64),
            ("--max-turns", u64::from(self.max_turns)),
            ("--session-timeout-seconds", self.session_timeout_seconds),
            ("--command-timeout-seconds", self.command_timeout_seconds),
            ("--max-tokens", self.max_tokens),
            ("--response-max-tokens", u64::from(self.response_max_tokens)),
            ("--llm-timeout-seconds", self.llm_timeout_seconds),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        let cpus_ok = self.sandbox_cpus.is_finite() && self.sandbox_cpus > 0.0;
        if !cpus_ok || self.sandbox_memory_mb < 6 || self.sandbox_pids < 16 {
            return Err(
                "sandbox limits too small: --sandbox-cpus > 0, --sandbox-memory-mb >= 6, --sandbox-pids >= 16"
                    .into(),
            );
        }
        if self.docker_socket.as_os_str() == "none" {
            return Err(
                "--docker-socket names the engine's socket; to give sandboxes no Docker access, use --docker-access none"
                    .into(),
            );
        }
        if self.sandbox_tmpfs_mb < 1 {
            return Err("--sandbox-tmpfs-mb must be at least 1".into());
        }
        if self.docker_access == DockerAccess::Guarded && !self.proxy_socket_dir.is_absolute() {
            return Err(format!(
                "--proxy-socket-dir {}: must be an absolute path (the engine mounts it into sandboxes)",
                self.proxy_socket_dir.display()
            ));
        }
        Ok(())
    }

    /// The provider's server (an http(s) URL), its key (none when blank) and default models.
    fn model_endpoint(&self) -> Result<ModelEndpoint, String> {
        let (base_url, api_key, default_model, default_summary) = match self.provider {
            ProviderKind::Anthropic => (
                self.anthropic_base_url.clone(),
                self.anthropic_api_key.clone(),
                "claude-sonnet-4-5",
                "claude-haiku-4-5",
            ),
            ProviderKind::OpenAi => (
                self.openai_base_url.clone(),
                self.openai_api_key.clone(),
                "gpt-4.1",
                "gpt-4.1-mini",
            ),
            ProviderKind::Replay => (
                self.replay.started_url.clone().ok_or(
                    "the replay provider's server is not started (ControllerArgs::start_replay)",
                )?,
                None,
                replay::MODEL,
                replay::MODEL,
            ),
        };
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!(
                "the {} base URL {base_url:?} must start with http:// or https://",
                self.provider.as_str()
            ));
        }
        Ok(ModelEndpoint {
            base_url,
            api_key: api_key.filter(|key| !key.trim().is_empty()),
            default_model,
            default_summary,
        })
    }

    /// The price table, with the spend budget checked against it: a budget is enforced only for
    /// a model whose price is known.
    fn cost_table(&self, model: &str) -> Result<CostTable, String> {
        if let Some(cost) = self.max_cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err("--max-cost-usd must be a number, 0 or more".into());
        }
        let costs = match &self.cost_table {
            Some(path) => CostTable::with_file(path).map_err(|error| error.to_string())?,
            None => CostTable::default(),
        };
        costs
            .check_budget(model, self.max_cost_usd)
            .map_err(|error| format!("--max-cost-usd: {error}"))?;
        Ok(costs)
    }

    /// The summariser's own server, when one is named (with the model it serves).
    fn summary_endpoint(&self) -> Result<Option<opslab::llm::Endpoint>, String> {
        let Some(url) = &self.summary_base_url else {
            return Ok(None);
        };
        let url = url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--summary-base-url {url:?} must start with http:// or https://"
            ));
        }
        if self.summary_model.is_none() {
            return Err(
                "--summary-base-url needs --summary-model: the model its server serves".into(),
            );
        }
        Ok(Some(opslab::llm::Endpoint {
            base_url: url,
            api_key: self
                .summary_api_key
                .clone()
                .filter(|key| !key.trim().is_empty()),
        }))
    }

    /// The model that summarises long outputs, if any.
    fn summary_model(&self, endpoint: &ModelEndpoint) -> Option<String> {
        // A self-hosted OpenAI-compatible server usually serves one model, often with one slot:
        // summaries there would queue in front of the agent's own turns, so they are off unless a
        // summary model is named.
        let self_hosted = self.provider == ProviderKind::OpenAi
            && !endpoint.base_url.starts_with("https://api.openai.com");
        match self.summary_model.as_deref() {
            Some("off" | "none" | "") => None,
            Some(model) => Some(model.to_string()),
            // The replay has nothing to say about output: its summaries would only clutter the trail.
            None if self.provider == ProviderKind::Replay => None,
            None if self_hosted => None,
            None => Some(endpoint.default_summary.to_string()),
        }
    }

    /// The configured secrets, to redact as whole tokens: the model API's and the summariser's
    /// keys, the console's token and the values of `--secret-env`. A short one would still erase
    /// ordinary words from the trail, so it is refused rather than quietly left out.
    fn secret_values(
        &self,
        api_key: Option<&String>,
        summary_endpoint: Option<&opslab::llm::Endpoint>,
    ) -> Result<Vec<String>, String> {
        let mut secret_values: Vec<String> = Vec::new();
        if let Some(key) = api_key {
            opslab::audit::check_configured_secret(key).map_err(|why| {
                format!(
                    "the model API key cannot be redacted safely: {why}; a server of your own \
                         that needs no key (OPENAI_BASE_URL, ANTHROPIC_BASE_URL) takes none: unset \
                         the key instead of setting a placeholder"
                )
            })?;
            secret_values.push(key.clone());
        }
        // The console's token is a secret like the API key: redacted wherever it might show.
        self.console.check().map_err(|error| error.to_string())?;
        if let Some(token) = self.console.token() {
            secret_values.push(token.secret().to_string());
        }
        if let Some(key) = summary_endpoint.and_then(|endpoint| endpoint.api_key.as_ref()) {
            opslab::audit::check_configured_secret(key).map_err(|why| {
                format!("the summariser's API key cannot be redacted safely: {why}")
            })?;
            secret_values.push(key.clone());
        }
        for name in &self.secret_env {
            let Ok(value) = std::env::var(name) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            opslab::audit::check_configured_secret(&value).map_err(|why| {
                format!("--secret-env {name}: the value of {name} cannot be redacted safely: {why}")
            })?;
            secret_values.push(value);
        }
        Ok(secret_values)
    }

    /// The Alertmanager intake, on when its token is set; its token is a secret too.
    fn alert_intake(&self) -> Result<Option<opslab::alerts::IntakeConfig>, String> {
        let Some(token) = self
            .alerts_token
            .clone()
            .filter(|token| !token.trim().is_empty())
        else {
            if self.alert_rules.is_some() {
                return Err(
                    "--alert-rules is set but the alert intake is off: set --alerts-token (OPSLAB_ALERTS_TOKEN) to turn it on"
                        .into(),
                );
            }
            return Ok(None);
        };
        opslab::audit::check_configured_secret(&token).map_err(|why| {
            format!("--alerts-token (OPSLAB_ALERTS_TOKEN) cannot be redacted safely: {why}")
        })?;
        let rules = match &self.alert_rules {
            Some(path) => opslab::alerts::Rules::load(path)
                .map_err(|error| format!("--alert-rules {error}"))?,
            None => opslab::alerts::Rules::default(),
        };
        Ok(Some(opslab::alerts::IntakeConfig { token, rules }))
    }

    fn provider_config(
        &self,
        endpoint: ModelEndpoint,
        summary_endpoint: Option<opslab::llm::Endpoint>,
    ) -> ProviderConfig {
        ProviderConfig {
            kind: self.provider,
            base_url: endpoint.base_url,
            api_key: endpoint.api_key,
            request_timeout: Duration::from_secs(self.llm_timeout_seconds),
            retry: RetryPolicy {
                max_retries: self.llm_max_retries,
                min_delay: Duration::from_millis(self.llm_retry_delay_ms),
                max_delay: Duration::from_secs(30),
            },
            prompt_cache: match self.prompt_cache {
                Some(switch) => switch == opslab::llm::Switch::On,
                None => self.provider == ProviderKind::Anthropic,
            },
            stream: self.stream,
            summary_endpoint,
        }
    }

    fn agent_limits(&self, model: String) -> AgentLimits {
        AgentLimits {
            model,
            max_turns: self.max_turns,
            timeout: Duration::from_secs(self.session_timeout_seconds),
            command_timeout: Duration::from_secs(self.command_timeout_seconds),
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost_usd,
            response_max_tokens: self.response_max_tokens,
            context_tokens: self.context_tokens,
        }
    }

    /// The sandboxes' settings; `replica` names this controller's spares (the instance when
    /// there is one controller).
    fn sandbox_config(
        &self,
        replica: Option<String>,
        seccomp_profile: Option<String>,
    ) -> SandboxConfig {
        SandboxConfig {
            replica: replica.unwrap_or_else(|| self.instance.clone()),
            spare_max_age: SandboxConfig::default().spare_max_age,
            instance: self.instance.clone(),
            image: self.sandbox_image.clone(),
            memory_bytes: self.sandbox_memory_mb * 1024 * 1024,
            nano_cpus: (self.sandbox_cpus * 1e9) as i64,
            pids_limit: self.sandbox_pids,
            capabilities: self
                .sandbox_capabilities
                .iter()
                .map(|capability| capability.trim().to_ascii_uppercase())
                .filter(|capability| !capability.is_empty())
                .collect(),
            no_new_privileges: self.sandbox_no_new_privileges,
            read_only_root: self.sandbox_read_only_root,
            tmpfs_bytes: self.sandbox_tmpfs_mb * 1024 * 1024,
            seccomp_profile,
            docker_access: self.docker_access,
            docker_socket: self.docker_socket.clone(),
            proxy_socket_dir: self.proxy_socket_dir.clone(),
            allow_create: self.docker_allow_create,
            spares: self.sandbox_spares,
            internet: self.sandbox_internet == SandboxInternet::On,
            output_head_bytes: self.output_keep_bytes,
            output_tail_bytes: self.output_keep_bytes,
        }
    }
}

/// The agent's model API as the flags name it.
struct ModelEndpoint {
    base_url: String,
    /// None when unset or blank.
    api_key: Option<String>,
    default_model: &'static str,
    default_summary: &'static str,
}

/// A seccomp profile's JSON, read and checked at start.
fn read_seccomp_profile(path: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--sandbox-seccomp-profile {}: {error}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
        format!(
            "--sandbox-seccomp-profile {}: not JSON: {error}",
            path.display()
        )
    })?;
    Ok(Some(json.to_string()))
}

/// The agent's Kubernetes access from its flags: none without a ServiceAccount; the names must be
/// DNS labels and the server an http(s) URL.
fn agent_kube_access(
    service_account: Option<String>,
    namespace: Option<String>,
    server: Option<String>,
) -> Result<Option<AgentKubeAccess>, String> {
    let Some(service_account) = service_account.filter(|name| !name.trim().is_empty()) else {
        return Ok(None);
    };
    let namespace = namespace.filter(|namespace| !namespace.trim().is_empty());
    for (flag, name) in [
        ("--agent-service-account", Some(&service_account)),
        ("--agent-service-account-namespace", namespace.as_ref()),
    ] {
        if let Some(name) = name
            && !is_dns_subdomain(name)
        {
            return Err(format!(
                "{flag} {name:?}: not a Kubernetes name (lower-case letters, digits, '-' and '.')"
            ));
        }
    }
    let server = server.filter(|server| !server.trim().is_empty());
    if let Some(server) = &server {
        let parsed = url::Url::parse(server)
            .map_err(|error| format!("--agent-kube-server {server:?}: {error}"))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(format!(
                "--agent-kube-server {server:?}: must be an http(s) URL with a host"
            ));
        }
    }
    Ok(Some(AgentKubeAccess {
        service_account,
        namespace,
        server,
    }))
}

/// The namespaces to watch from `--watch-namespace`: none named is every namespace; each must be
/// a namespace's name (an RFC 1123 label); repeats count once.
fn watch_scope(namespaces: Vec<String>) -> Result<WatchScope, String> {
    let mut namespaces: Vec<String> = namespaces
        .into_iter()
        .map(|namespace| namespace.trim().to_string())
        .filter(|namespace| !namespace.is_empty())
        .collect();
    if let Some(bad) = namespaces.iter().find(|namespace| {
        namespace.len() > 63 || namespace.contains('.') || !is_dns_subdomain(namespace)
    }) {
        return Err(format!(
            "--watch-namespace {bad:?}: not a namespace's name (lower-case letters, digits and '-')"
        ));
    }
    namespaces.sort();
    namespaces.dedup();
    Ok(if namespaces.is_empty() {
        WatchScope::Cluster
    } else {
        WatchScope::Namespaces(namespaces)
    })
}

/// RFC 1123 subdomain: what Kubernetes accepts as a ServiceAccount's or a namespace's name.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A replica's name when none is given (`POD_NAME` in the chart): the host name and the process
/// id, so that two controllers on one host never share a lease identity (both would lead).
fn replica_identity(host: Option<String>, pid: u32) -> String {
    format!("{}-{pid}", host.as_deref().unwrap_or("opslab"))
}

/// The host name (a pod's name, in Kubernetes), if it can be read.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_namespaces_are_names_counted_once_and_none_is_every_namespace() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(watch_scope(vec![]), Ok(WatchScope::Cluster));
        assert_eq!(watch_scope(names(&["", " "])), Ok(WatchScope::Cluster));
        assert_eq!(
            watch_scope(names(&["team-b", "team-a", " team-b"])),
            Ok(WatchScope::Namespaces(names(&["team-a", "team-b"])))
        );
        for bad in ["Team", "a.b", "-a", &"x".repeat(64)] {
            let error = watch_scope(names(&[bad])).unwrap_err();
            assert!(error.contains("--watch-namespace"), "{error}");
        }
    }

    #[test]
    fn two_controllers_on_one_host_get_distinct_lease_identities() {
        let host = Some("node-1".to_string());
        assert_eq!(replica_identity(host.clone(), 41), "node-1-41");
        assert_ne!(
            replica_identity(host.clone(), 41),
            replica_identity(host, 42)
        );
        assert_eq!(replica_identity(None, 7), "opslab-7");
    }

    #[test]
    fn the_agents_kubernetes_access_is_checked_at_start() {
        let some = |text: &str| Some(text.to_string());
        assert_eq!(agent_kube_access(None, some("ops"), None), Ok(None));
        assert_eq!(
            agent_kube_access(
                some("opslab-agent"),
                some("ops"),
                some("https://10.0.0.1:443")
            ),
            Ok(Some(AgentKubeAccess {
                service_account: "opslab-agent".into(),
                namespace: some("ops"),
                server: some("https://10.0.0.1:443"),
            }))
        );
        let error = agent_kube_access(some("Agent_1"), None, None).unwrap_err();
        assert!(
            error.contains("--agent-service-account \"Agent_1\""),
            "{error}"
        );
        let error = agent_kube_access(some("agent"), some("-ops"), None).unwrap_err();
        assert!(
            error.contains("--agent-service-account-namespace"),
            "{error}"
        );
        for server in ["kubernetes.default.svc", "ftp://host", "https://"] {
            let error = agent_kube_access(some("agent"), None, some(server)).unwrap_err();
            assert!(
                error.starts_with("--agent-kube-server"),
                "{server}: {error}"
            );
        }
    }
}
