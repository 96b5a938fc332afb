//! Prometheus metrics. Names follow the conventions: an `opslab_` prefix, base units (seconds),
//! `_total` on counters, help text on every metric.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::incident::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    /// `success`, `failure` (non-zero exit), `timeout`, `error` (the sandbox could not run it), or
    /// `interrupted`.
    pub exit_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmLabels {
    pub provider: &'static str,
    pub model: String,
    /// The HTTP status, or `transport` / `decode` when there was none to read.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: &'static str,
    pub model: String,
    /// `input` or `output`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub provider: &'static str,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DockerApiLabels {
    /// `allowed` or `denied`.
    pub decision: &'static str,
    /// The proxy policy's name for the endpoint (`container_restart`, `exec_start`, `other`…).
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// `spare` (one was ready) or `new` (the session waited for one to be made).
    pub from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The receiver's name (never its URL).
    pub receiver: String,
    /// `queued`, `delivered`, `retrying`, `failed` or `dropped`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertDecisionLabels {
    /// `created`, `updated`, `resolved`, `deduplicated`, `ignored`, `refused` or `failed`.
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Every metric opslab keeps.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_failures: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    sessions_active: Gauge,
    sessions: Family<SessionLabels, Counter>,
    session_duration: Histogram,
    commands: Family<ExitLabels, Counter>,
    command_duration: Histogram,
    llm_requests: Family<LlmLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    incidents: Family<PhaseLabels, Gauge>,
    docker_api: Family<DockerApiLabels, Counter>,
    sandbox_spares: Gauge,
    sandboxes_claimed: Family<ClaimLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    alerts_received: Family<AlertDecisionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("opslab");
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Reconciles of Incidents, by result",
            reconciles.clone(),
        );
        let reconcile_failures = Family::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by error kind",
            reconcile_failures.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 4.0, 9));
        registry.register_with_unit(
            "reconcile_duration",
            "How long one reconcile took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Agent sessions running now",
            sessions_active.clone(),
        );
        let sessions = Family::default();
        registry.register(
            "sessions",
            "Agent sessions ended, by phase and reason",
            sessions.clone(),
        );
        let session_duration = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register_with_unit(
            "session_duration",
            "How long an agent session ran, start to end",
            Unit::Seconds,
            session_duration.clone(),
        );
        let commands = Family::default();
        registry.register(
            "commands",
            "Commands run in sandboxes, by exit class",
            commands.clone(),
        );
        let command_duration = Histogram::new(exponential_buckets(0.01, 4.0, 9));
        registry.register_with_unit(
            "command_duration",
            "How long one command ran in its sandbox",
            Unit::Seconds,
            command_duration.clone(),
        );
        let llm_requests = Family::default();
        registry.register(
            "llm_requests",
            "HTTP requests to the model API (each retry counts), by provider, model and status",
            llm_requests.clone(),
        );
        let llm_tokens = Family::default();
        registry.register(
            "llm_tokens",
            "Model tokens used, by provider, model and direction",
            llm_tokens.clone(),
        );
        let llm_cost = Family::default();
        registry.register(
            "llm_cost_usd",
            "Estimated model spend in US dollars, from the cost table",
            llm_cost.clone(),
        );
        let incidents = Family::default();
        registry.register("incidents", "Incidents known, by phase", incidents.clone());
        let docker_api = Family::default();
        registry.register(
            "docker_api_requests",
            "Docker API calls from sandboxes through the guarded proxy, by decision and action",
            docker_api.clone(),
        );
        let sandbox_spares = Gauge::default();
        registry.register(
            "sandbox_spares",
            "Started sandboxes waiting for a session",
            sandbox_spares.clone(),
        );
        let sandboxes_claimed = Family::default();
        registry.register(
            "sandboxes_claimed",
            "Sandboxes given to sessions, by whether a spare was ready or one was made",
            sandboxes_claimed.clone(),
        );
        let notifications = Family::default();
        registry.register(
            "notifications",
            "Notifications queued, and each attempt to deliver one, by receiver and outcome",
            notifications.clone(),
        );
        let alerts_received = Family::default();
        registry.register(
            "alerts_received",
            "Alertmanager notifications received by the intake, by decision",
            alerts_received.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            sessions_active,
            sessions,
            session_duration,
            commands,
            command_duration,
            llm_requests,
            llm_tokens,
            llm_cost,
            incidents,
            docker_api,
            sandbox_spares,
            sandboxes_claimed,
            notifications,
            alerts_received,
        }
    }

    /// Counts the audit store's failures (the store keeps the counter: it sees every call).
    pub fn register_store_errors(&mut self, errors: Counter) {
        self.registry.register(
            "store_errors",
            "Failed reads and writes of the audit store (a full disk, a server gone)",
            errors,
        );
    }

    pub fn notification(&self, receiver: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                receiver: receiver.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn reconciled(&self, duration: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(duration.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(error) = error {
            self.reconcile_failures
                .get_or_create(&ErrorLabels { error })
                .inc();
        }
    }

    pub fn session_started(&self) {
        self.sessions_active.inc();
    }

    /// A session task ended; `ended` says how the session itself ended, when it did.
    pub fn session_stopped(&self, ended: Option<(Phase, &str, Duration)>) {
        self.sessions_active.dec();
        if let Some((phase, reason, duration)) = ended {
            let labels = SessionLabels {
                phase: phase.to_string(),
                reason: reason.to_string(),
            };
            self.sessions.get_or_create(&labels).inc();
            self.session_duration.observe(duration.as_secs_f64());
        }
    }

    pub fn command_ran(&self, exit_class: &'static str, duration: Duration) {
        self.commands
            .get_or_create(&ExitLabels { exit_class })
            .inc();
        self.command_duration.observe(duration.as_secs_f64());
    }

    pub fn llm_request(&self, provider: &'static str, model: &str, status: String) {
        let labels = LlmLabels {
            provider,
            model: model.to_string(),
            status,
        };
        self.llm_requests.get_or_create(&labels).inc();
    }

    pub fn llm_usage(
        &self,
        provider: &'static str,
        model: &str,
        usage: &crate::llm::Usage,
        cost_usd: f64,
    ) {
        // Each kind of token is billed at its own price: `input` is fresh input only.
        for (direction, tokens) in [
            ("input", usage.input_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("output", usage.output_tokens),
        ] {
            let labels = TokenLabels {
                provider,
                model: model.to_string(),
                direction,
            };
            self.llm_tokens.get_or_create(&labels).inc_by(tokens);
        }
        let labels = ModelLabels {
            provider,
            model: model.to_string(),
        };
        self.llm_cost.get_or_create(&labels).inc_by(cost_usd);
    }

    /// A sandbox's Docker API call was judged by the proxy.
    pub fn docker_api_request(&self, allowed: bool, action: &'static str) {
        let decision = if allowed { "allowed" } else { "denied" };
        self.docker_api
            .get_or_create(&DockerApiLabels { decision, action })
            .inc();
    }

    /// One decision of the alert intake.
    pub fn alert_received(&self, decision: &'static str) {
        self.alerts_received
            .get_or_create(&AlertDecisionLabels { decision })
            .inc();
    }

    pub fn set_sandbox_spares(&self, ready: usize) {
        self.sandbox_spares
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    pub fn sandbox_claimed(&self, from: &'static str) {
        self.sandboxes_claimed
            .get_or_create(&ClaimLabels { from })
            .inc();
    }

    /// Sets the Incidents-by-phase gauge; phases with none read 0.
    pub fn incidents_by_phase(&self, counts: &BTreeMap<Phase, i64>) {
        for phase in Phase::ALL {
            let labels = PhaseLabels {
                phase: phase.to_string(),
            };
            self.incidents
                .get_or_create(&labels)
                .set(counts.get(&phase).copied().unwrap_or(0));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The classic Prometheus text format (0.0.4), for clients that ask for `text/plain`.
    pub fn prometheus_text(&self) -> String {
        classic_from_openmetrics(&self.openmetrics())
    }
}

/// Rewrites an OpenMetrics exposition in the classic text format: no `# EOF` or `# UNIT` lines, and a
/// counter's family named with its `_total` suffix, as its samples are. Pure.
pub fn classic_from_openmetrics(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_and_openmetrics_only_lines_dropped() {
        let openmetrics = "# HELP opslab_commands Commands run.\n# TYPE opslab_commands counter\nopslab_commands_total{exit_class=\"success\"} 2\n# HELP opslab_x_seconds X.\n# TYPE opslab_x_seconds histogram\n# UNIT opslab_x_seconds seconds\nopslab_x_seconds_sum 1.0\n# EOF\n";
        assert_eq!(
            classic_from_openmetrics(openmetrics),
            "# HELP opslab_commands_total Commands run.\n# TYPE opslab_commands_total counter\nopslab_commands_total{exit_class=\"success\"} 2\n# HELP opslab_x_seconds X.\n# TYPE opslab_x_seconds histogram\nopslab_x_seconds_sum 1.0\n"
        );
    }

    #[test]
    fn every_metric_has_help_and_the_exposition_ends_with_eof() {
        let metrics = Metrics::new();
        metrics.command_ran("success", Duration::from_millis(5));
        let text = metrics.openmetrics();
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
        }
    }
}
