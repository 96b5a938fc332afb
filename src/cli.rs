//! The command line: clap definitions, every operator flag also readable from the environment. Raw
//! flags become a validated [`Config`] once, in [`ControllerArgs::into_config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use opslab::config::{AgentLimits, Config};
use opslab::cost::CostTable;
use opslab::llm::{ProviderConfig, ProviderKind, retry::RetryPolicy};
use opslab::sandbox::SandboxConfig;
use opslab::source::files::WatchMode;
use opslab::telemetry::LogFormat;
use opslab::view::OutputFormat;

#[derive(Parser, Debug)]
#[command(name = "opslab", version, about = "An autonomous incident responder")]
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
    /// List agent sessions, newest first.
    Sessions(ListArgs),
    /// Print a session's whole conversation: reasoning, commands, exit codes, outputs, summaries.
    Show(ShowArgs),
    /// Stream a session as it happens, until it ends.
    Follow(FollowArgs),
    /// Check the audit trail.
    Audit(AuditArgs),
    /// Fault scenarios: break a demo stack, file an Incident, and judge the agent.
    Scenario(ScenarioArgs),
}

/// Where the audit store is.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The audit store (an SQLite file).
    #[arg(long = "store", env = "OPSLAB_STORE", default_value = "opslab.db")]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(subcommand)]
    pub resource: GetResource,
}

#[derive(Subcommand, Debug)]
pub enum GetResource {
    /// Incidents with their phase, severity, commands and age; invalid manifests are listed too.
    #[command(visible_aliases = ["incident", "inc"])]
    Incidents(ListArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A session id, or an Incident as NAME or NAMESPACE/NAME (its newest session).
    pub target: String,
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
    /// A session id, or an Incident as NAME or NAMESPACE/NAME (its newest session, or the next to
    /// start).
    pub target: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print whole outputs.
    #[arg(long)]
    pub raw: bool,
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
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: ScenarioCommand,
}

#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// For each case: bring up its own demo stack, inject the fault, file the Incident, let a
    /// session run, check the oracle, tear the stack down; then print detected, fixed, time to fix,
    /// commands and tokens per case. Exits 1 unless every case was detected and fixed.
    Run(ScenarioRunArgs),
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
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// The folder of Incident manifests to watch (files mode).
    #[arg(long, env = "OPSLAB_INCIDENTS")]
    pub incidents: PathBuf,
    /// Re-scan the folder every this many milliseconds instead of watching its events: for network
    /// filesystems and mounts that send no inotify events.
    #[arg(long, env = "OPSLAB_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The model API to speak.
    #[arg(long, env = "OPSLAB_PROVIDER", value_enum, default_value = "anthropic")]
    pub provider: ProviderKind,
    /// The agent's model [default: claude-sonnet-4-5 (anthropic), gpt-4.1 (openai)].
    #[arg(long, env = "OPSLAB_MODEL")]
    pub model: Option<String>,
    /// The small model that summarises long command output; `off` turns summaries off
    /// [default: claude-haiku-4-5 (anthropic), gpt-4.1-mini (OpenAI), the agent's model (other
    /// OpenAI-compatible servers)].
    #[arg(long, env = "OPSLAB_SUMMARY_MODEL")]
    pub summary_model: Option<String>,
    /// The Anthropic API's base URL, without /v1.
    #[arg(
        long,
        env = "ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_base_url: String,
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true, hide = true)]
    pub anthropic_api_key: Option<String>,
    /// An OpenAI-compatible API's base URL, with /v1 (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM…).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true, hide = true)]
    pub openai_api_key: Option<String>,
    /// Model calls retried at most this many times (429, 5xx, 529, connection errors).
    #[arg(long, env = "OPSLAB_LLM_MAX_RETRIES", default_value_t = 5)]
    pub llm_max_retries: usize,
    /// The first retry's delay, in milliseconds; it doubles (with jitter) up to 30 s.
    #[arg(long, env = "OPSLAB_LLM_RETRY_DELAY_MS", default_value_t = 1000)]
    pub llm_retry_delay_ms: u64,
    /// Seconds one model request may take.
    #[arg(long, env = "OPSLAB_LLM_TIMEOUT_SECONDS", default_value_t = 300)]
    pub llm_timeout_seconds: u64,
    /// Sessions that may run at once; more Incidents wait in Queued.
    #[arg(long, env = "OPSLAB_MAX_SESSIONS", default_value_t = 4)]
    pub max_sessions: usize,
    /// The most model turns a session may take.
    #[arg(long, env = "OPSLAB_MAX_TURNS", default_value_t = 40)]
    pub max_turns: u32,
    /// A session's wall-clock budget, in seconds.
    #[arg(long, env = "OPSLAB_SESSION_TIMEOUT_SECONDS", default_value_t = 1800)]
    pub session_timeout_seconds: u64,
    /// How long one command may run, in seconds.
    #[arg(long, env = "OPSLAB_COMMAND_TIMEOUT_SECONDS", default_value_t = 120)]
    pub command_timeout_seconds: u64,
    /// A session's token budget (input and output together).
    #[arg(long, env = "OPSLAB_MAX_TOKENS", default_value_t = 2_000_000)]
    pub max_tokens: u64,
    /// A session's spend budget in US dollars, estimated from the cost table [default: none].
    #[arg(long, env = "OPSLAB_MAX_COST_USD")]
    pub max_cost_usd: Option<f64>,
    /// A YAML or JSON file of model prices per million tokens (`model: {input: 3, output: 15}`),
    /// laid over the built-in table.
    #[arg(long, env = "OPSLAB_COST_TABLE")]
    pub cost_table: Option<PathBuf>,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "OPSLAB_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// `max_tokens` of one model response.
    #[arg(long, env = "OPSLAB_RESPONSE_MAX_TOKENS", default_value_t = 4096)]
    pub response_max_tokens: u32,
    /// This controller's name on the Docker engine: it labels its sandboxes, and removes orphans
    /// only among its own.
    #[arg(long, env = "OPSLAB_INSTANCE", default_value = "opslab")]
    pub instance: String,
    /// The sandbox image.
    #[arg(
        long,
        env = "OPSLAB_SANDBOX_IMAGE",
        default_value = "opslab-sandbox:latest"
    )]
    pub sandbox_image: String,
    /// The host's Docker socket, given to each sandbox; `none` gives none.
    #[arg(
        long,
        env = "OPSLAB_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: String,
    /// Memory limit of a sandbox, in MiB.
    #[arg(long, env = "OPSLAB_SANDBOX_MEMORY_MB", default_value_t = 512)]
    pub sandbox_memory_mb: i64,
    /// CPU limit of a sandbox, in CPUs.
    #[arg(long, env = "OPSLAB_SANDBOX_CPUS", default_value_t = 1.0)]
    pub sandbox_cpus: f64,
    /// Process limit of a sandbox.
    #[arg(long, env = "OPSLAB_SANDBOX_PIDS", default_value_t = 256)]
    pub sandbox_pids: i64,
    /// The only Linux capabilities a sandbox keeps (comma-separated); all others are dropped.
    /// NET_RAW is what ping needs.
    #[arg(
        long,
        env = "OPSLAB_SANDBOX_CAPABILITIES",
        value_delimiter = ',',
        default_value = "NET_RAW"
    )]
    pub sandbox_capabilities: Vec<String>,
    /// Bytes kept from the start and from the end of a command's output.
    #[arg(long, env = "OPSLAB_OUTPUT_KEEP_BYTES", default_value_t = 16 * 1024)]
    pub output_keep_bytes: usize,
    /// Names of environment variables whose values are secrets to redact everywhere (comma-separated).
    #[arg(long, env = "OPSLAB_SECRET_ENV", value_delimiter = ',')]
    pub secret_env: Vec<String>,
}

impl ControllerArgs {
    /// Checks the flags once; later code trusts the result.
    pub fn into_config(self) -> Result<Config, String> {
        // Destructured so that a new flag cannot be left unhandled.
        let ControllerArgs {
            incidents,
            poll_interval_ms,
            store,
            provider,
            model,
            summary_model,
            anthropic_base_url,
            anthropic_api_key,
            openai_base_url,
            openai_api_key,
            llm_max_retries,
            llm_retry_delay_ms,
            llm_timeout_seconds,
            max_sessions,
            max_turns,
            session_timeout_seconds,
            command_timeout_seconds,
            max_tokens,
            max_cost_usd,
            cost_table,
            listen,
            response_max_tokens,
            instance,
            sandbox_image,
            docker_socket,
            sandbox_memory_mb,
            sandbox_cpus,
            sandbox_pids,
            sandbox_capabilities,
            output_keep_bytes,
            secret_env,
        } = self;
        // Absolute, so that watch events and folder listings name files the same way.
        let incidents = match incidents.canonicalize() {
            Ok(path) if path.is_dir() => path,
            Ok(_) | Err(_) => {
                return Err(format!(
                    "--incidents {}: not a folder (create it, or point OPSLAB_INCIDENTS at one)",
                    incidents.display()
                ));
            }
        };
        let positive = [
            ("--max-sessions", max_sessions as u64),
            ("--max-turns", u64::from(max_turns)),
            ("--session-timeout-seconds", session_timeout_seconds),
            ("--command-timeout-seconds", command_timeout_seconds),
            ("--max-tokens", max_tokens),
            ("--response-max-tokens", u64::from(response_max_tokens)),
            ("--llm-timeout-seconds", llm_timeout_seconds),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        let cpus_ok = sandbox_cpus.is_finite() && sandbox_cpus > 0.0;
        if !cpus_ok || sandbox_memory_mb < 6 || sandbox_pids < 16 {
            return Err(
                "sandbox limits too small: --sandbox-cpus > 0, --sandbox-memory-mb >= 6, --sandbox-pids >= 16"
                    .into(),
            );
        }
        let (base_url, api_key, default_model, default_summary) = match provider {
            ProviderKind::Anthropic => (
                anthropic_base_url,
                anthropic_api_key,
                "claude-sonnet-4-5",
                "claude-haiku-4-5",
            ),
            ProviderKind::OpenAi => (openai_base_url, openai_api_key, "gpt-4.1", "gpt-4.1-mini"),
        };
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!(
                "the {} base URL {base_url:?} must start with http:// or https://",
                provider.as_str()
            ));
        }
        let api_key = api_key.filter(|key| !key.trim().is_empty());
        if let Some(cost) = max_cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err("--max-cost-usd must be a number, 0 or more".into());
        }
        let costs = match &cost_table {
            Some(path) => CostTable::with_file(path)?,
            None => CostTable::default(),
        };
        if provider == ProviderKind::Anthropic && api_key.is_none() {
            return Err(
                "ANTHROPIC_API_KEY is not set: export it, or use an OpenAI-compatible server with \
                 OPSLAB_PROVIDER=openai and OPENAI_BASE_URL"
                    .into(),
            );
        }
        let model = model.unwrap_or_else(|| default_model.to_string());
        // A self-hosted OpenAI-compatible server usually serves one model: summarise with it.
        let self_hosted =
            provider == ProviderKind::OpenAi && !base_url.starts_with("https://api.openai.com");
        let summary_model = match summary_model.as_deref() {
            Some("off" | "none" | "") => None,
            Some(model) => Some(model.to_string()),
            None if self_hosted => Some(model.clone()),
            None => Some(default_summary.to_string()),
        };
        let mut secret_values: Vec<String> = api_key.iter().cloned().collect();
        for name in secret_env {
            if let Ok(value) = std::env::var(&name) {
                secret_values.push(value);
            }
        }
        let watch = match poll_interval_ms {
            Some(0) => return Err("--poll-interval-ms must be at least 1".into()),
            Some(millis) => WatchMode::Poll(Duration::from_millis(millis)),
            None => WatchMode::Events,
        };
        Ok(Config {
            incidents_dir: incidents,
            watch,
            store_path: store.path,
            provider: ProviderConfig {
                kind: provider,
                base_url,
                api_key,
                request_timeout: Duration::from_secs(llm_timeout_seconds),
                retry: RetryPolicy {
                    max_retries: llm_max_retries,
                    min_delay: Duration::from_millis(llm_retry_delay_ms),
                    max_delay: Duration::from_secs(30),
                },
            },
            agent: AgentLimits {
                model,
                max_turns,
                timeout: Duration::from_secs(session_timeout_seconds),
                command_timeout: Duration::from_secs(command_timeout_seconds),
                max_tokens,
                max_cost_usd,
                response_max_tokens,
            },
            summary_model,
            sandbox: SandboxConfig {
                instance,
                image: sandbox_image,
                memory_bytes: sandbox_memory_mb * 1024 * 1024,
                nano_cpus: (sandbox_cpus * 1e9) as i64,
                pids_limit: sandbox_pids,
                capabilities: sandbox_capabilities
                    .into_iter()
                    .map(|capability| capability.trim().to_ascii_uppercase())
                    .filter(|capability| !capability.is_empty())
                    .collect(),
                docker_socket: (docker_socket != "none").then(|| PathBuf::from(docker_socket)),
                output_head_bytes: output_keep_bytes,
                output_tail_bytes: output_keep_bytes,
            },
            max_sessions,
            secret_values,
            listen,
            costs,
        })
    }
}
