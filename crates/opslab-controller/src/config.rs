//! The controller's validated settings, built once from the command line (see [`crate::cli`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::cost::CostTable;
use crate::incident::AgentOverrides;
use crate::llm::{ProviderConfig, ProviderKind};
use crate::sandbox::SandboxConfig;

/// Everything the controller needs, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where Incidents come from.
    pub source: SourceConfig,
    /// The audit store (an SQLite file, or a PostgreSQL URL shown without its password).
    pub store: crate::audit::StoreLocation,
    /// What an SQLite store's commits survive.
    pub store_durability: crate::audit::Durability,
    pub provider: ProviderConfig,
    pub agent: AgentLimits,
    /// The model that summarises long command output for the audit trail; None turns it off.
    pub summary_model: Option<String>,
    pub sandbox: SandboxConfig,
    /// Sessions that may run at once; the rest wait in `Queued`.
    pub max_sessions: usize,
    /// Values (API keys and the like) redacted from everything stored, logged or sent to the model.
    pub secret_values: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: std::net::SocketAddr,
    pub costs: CostTable,
    /// Where notifications of results go, and how (see [`crate::notify`]).
    pub notify: crate::notify::NotifyConfig,
    /// The Alertmanager intake on the HTTP port; None keeps it off.
    pub alerts: Option<crate::alerts::IntakeConfig>,
}

impl Config {
    /// The part of the settings a session works with.
    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            agent: self.agent.clone(),
            summary_model: self.summary_model.clone(),
            provider: self.provider.kind,
            missing_model: self.provider.missing(),
            costs: self.costs.clone(),
            sandbox_image: self.sandbox.image.clone(),
            kubernetes: match &self.source {
                SourceConfig::Kubernetes(settings) => Some(settings.clone()),
                SourceConfig::Files { .. } => None,
            },
        }
    }
}

/// What a session needs of the settings: its budgets and what they cost, the models, the sandbox
/// image, and in Kubernetes mode the API server the agent's account is on.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub agent: AgentLimits,
    /// The model that summarises long command output for the audit trail; None turns it off.
    pub summary_model: Option<String>,
    pub provider: ProviderKind,
    /// What must be set before a session can run (see [`ProviderConfig::missing`]).
    pub missing_model: Option<String>,
    pub costs: CostTable,
    pub sandbox_image: String,
    /// Set in Kubernetes mode (its `agent_access` says whether the agent gets an account).
    pub kubernetes: Option<KubeSettings>,
}

/// Where Incidents come from, and where their status goes.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// Manifests in a folder; status files beside them (compose mode).
    Files { dir: PathBuf, watch: WatchMode },
    /// Incident resources on a Kubernetes API server.
    Kubernetes(KubeSettings),
}

/// How changes in the Incidents folder are noticed (files mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// Filesystem events (inotify), debounced: changes are read within milliseconds.
    Events,
    /// A re-scan at this interval, for filesystems that send no events (NFS, some bind mounts).
    Poll(Duration),
}

/// How to reach the API server, and whether to elect a leader (Kubernetes mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// A kubeconfig file; None infers (in-cluster, then `KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub leader_election: Option<LeaseSettings>,
    /// The Kubernetes account sessions get in their sandbox; None: none.
    pub agent_access: Option<AgentKubeAccess>,
    /// Only the Incidents these labels select are this controller's; None: every Incident.
    pub incident_selector: Option<crate::label_selector::LabelSelector>,
    /// Which namespaces' Incidents are watched.
    pub watch: WatchScope,
}

/// Which namespaces' Incidents the controller watches (Kubernetes mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace, with one cluster-wide watch (RBAC: a ClusterRole).
    #[default]
    Cluster,
    /// Only these namespaces (never empty, no repeats), a watch each: a namespace's Role suffices.
    Namespaces(Vec<String>),
}

/// What a session's sandbox may see of Kubernetes: a kubeconfig for a ServiceAccount of the
/// agent's own (its rights are the RBAC its installer binds to it), with a token minted for the
/// session and expiring with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKubeAccess {
    pub service_account: String,
    /// The ServiceAccount's namespace; None: the client's default (the pod's namespace in a
    /// cluster).
    pub namespace: Option<String>,
    /// The API server's URL as the sandbox reaches it; None: the URL the controller uses (in a
    /// cluster, the `kubernetes` Service's address).
    pub server: Option<String>,
}

/// Where the lease is and who this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    /// The client's default namespace when None.
    pub namespace: Option<String>,
    /// This replica's name in the lease: its pod name.
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

/// The agent's defaults and the controller's caps on what an Incident may ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentLimits {
    pub model: String,
    pub max_turns: u32,
    pub timeout: Duration,
    pub command_timeout: Duration,
    pub max_tokens: u64,
    /// The session's spend budget in US dollars; None is unlimited.
    pub max_cost_usd: Option<f64>,
    /// `max_tokens` of one model response.
    pub response_max_tokens: u32,
    /// The most tokens one request may hold; None: the model's context window
    /// ([`crate::session::context::window`]).
    pub context_tokens: Option<u64>,
}

impl AgentLimits {
    /// The budgets one session gets: the Incident's overrides, each capped by the controller's limit.
    pub fn effective(&self, overrides: &AgentOverrides) -> AgentLimits {
        AgentLimits {
            model: overrides
                .model
                .clone()
                .unwrap_or_else(|| self.model.clone()),
            max_turns: overrides
                .max_turns
                .map_or(self.max_turns, |v| v.min(self.max_turns)),
            timeout: overrides
                .timeout_seconds
                .map_or(self.timeout, |v| Duration::from_secs(v).min(self.timeout)),
            command_timeout: overrides
                .command_timeout_seconds
                .map_or(self.command_timeout, |v| {
                    Duration::from_secs(v).min(self.command_timeout)
                }),
            max_tokens: overrides
                .max_tokens
                .map_or(self.max_tokens, |v| v.min(self.max_tokens)),
            max_cost_usd: match (overrides.max_cost_usd, self.max_cost_usd) {
                (Some(asked), Some(cap)) => Some(asked.min(cap)),
                (asked, cap) => asked.or(cap),
            },
            response_max_tokens: self.response_max_tokens,
            context_tokens: self.context_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_capped_by_the_controller() {
        let limits = AgentLimits {
            model: "m".into(),
            max_turns: 40,
            timeout: Duration::from_secs(1800),
            command_timeout: Duration::from_secs(120),
            max_tokens: 1_000_000,
            max_cost_usd: Some(10.0),
            response_max_tokens: 4096,
            context_tokens: None,
        };
        let overrides = AgentOverrides {
            model: Some("other".into()),
            max_turns: Some(100),
            timeout_seconds: Some(60),
            command_timeout_seconds: Some(600),
            max_tokens: Some(5000),
            max_cost_usd: Some(20.0),
        };
        assert_eq!(
            limits.effective(&overrides),
            AgentLimits {
                model: "other".into(),
                max_turns: 40,
                timeout: Duration::from_secs(60),
                command_timeout: Duration::from_secs(120),
                max_tokens: 5000,
                max_cost_usd: Some(10.0),
                response_max_tokens: 4096,
                context_tokens: None,
            }
        );
        assert_eq!(limits.effective(&AgentOverrides::default()), limits);
    }
}
