//! The `Incident` custom resource: the ticket a person files, and the status opslab writes back.
//!
//! The same type serves both modes. In kube mode it is read from the API server; in files mode it is
//! parsed from a manifest (see [`crate::source::manifest`]) and the controller keeps `uid`,
//! `generation` and `resourceVersion` itself, so the reconciler sees one contract.

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An incident ticket: what is wrong, where, and how much the agent may spend on it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "opslab.dev",
    version = "v1alpha1",
    kind = "Incident",
    namespaced,
    status = "IncidentStatus",
    shortname = "inc",
    doc = "An incident ticket, reconciled by opslab into an audited agent session.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Severity","type":"string","jsonPath":".spec.severity"}"#,
    printcolumn = r#"{"name":"Commands","type":"integer","jsonPath":".status.commands"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSpec {
    /// One line saying what is wrong, as a person would title a ticket.
    #[schemars(length(min = 1, max = 512))]
    pub title: String,
    /// Free text: what was seen, since when, what was already tried.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 65536))]
    pub description: String,
    /// How urgent the incident is.
    #[serde(default)]
    pub severity: Severity,
    /// Where the affected services run.
    #[serde(default)]
    pub environment: Environment,
    /// Overrides of the agent's settings, bounded by the controller's limits.
    #[serde(default, skip_serializing_if = "AgentOverrides::is_empty")]
    pub agent: AgentOverrides,
}

impl IncidentSpec {
    /// The checks of the CRD schema that serde does not make: lengths, ranges, non-empty names.
    /// A domain rule, applied by both sources.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let spec = self;
        if spec.title.trim().is_empty() {
            return Err(InvalidSpec::NoTitle);
        }
        if spec.title.len() > MAX_TITLE_BYTES {
            return Err(InvalidSpec::TitleTooLong(spec.title.len()));
        }
        if spec.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(InvalidSpec::DescriptionTooLong(spec.description.len()));
        }
        for (field, values) in [
            ("spec.environment.networks", &spec.environment.networks),
            ("spec.environment.targets", &spec.environment.targets),
        ] {
            if values.iter().any(|value| value.trim().is_empty()) {
                return Err(InvalidSpec::EmptyName { field });
            }
        }
        let agent = &spec.agent;
        let positive = [
            ("spec.agent.maxTurns", agent.max_turns.map(u64::from)),
            ("spec.agent.timeoutSeconds", agent.timeout_seconds),
            (
                "spec.agent.commandTimeoutSeconds",
                agent.command_timeout_seconds,
            ),
            ("spec.agent.maxTokens", agent.max_tokens),
        ];
        for (field, value) in positive {
            if value == Some(0) {
                return Err(InvalidSpec::NotPositive { field });
            }
        }
        if let Some(cost) = agent.max_cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(InvalidSpec::BadCost);
        }
        Ok(())
    }
}

const MAX_TITLE_BYTES: usize = 512;
const MAX_DESCRIPTION_BYTES: usize = 65536;

/// What is wrong with a spec the schema let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("spec.title is required and must not be empty")]
    NoTitle,
    #[error("spec.title is {0} bytes; the limit is {MAX_TITLE_BYTES}")]
    TitleTooLong(usize),
    #[error("spec.description is {0} bytes; the limit is {MAX_DESCRIPTION_BYTES}")]
    DescriptionTooLong(usize),
    #[error("{field} must not hold empty names")]
    EmptyName { field: &'static str },
    #[error("{field} must be at least 1")]
    NotPositive { field: &'static str },
    #[error("spec.agent.maxCostUsd must be a number, 0 or more")]
    BadCost,
}

/// How urgent an incident is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    #[default]
    Medium,
    Low,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        })
    }
}

/// The Docker environment the sandbox joins.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Docker networks the sandbox container joins, so the agent can reach the services on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Containers or services of interest: hints for the agent, not a limit on what it may touch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// Per-Incident overrides of the agent's settings. Each is capped by the controller's own limit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentOverrides {
    /// The model to use instead of the controller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The most model turns the session may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_turns: Option<u32>,
    /// The session's wall-clock budget, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// How long one command may run, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub command_timeout_seconds: Option<u64>,
    /// The hard budget of model tokens (input and output together) for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u64>,
    /// The hard budget of estimated model spend for the session, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_cost_usd: Option<f64>,
}

impl AgentOverrides {
    fn is_empty(&self) -> bool {
        self == &AgentOverrides::default()
    }
}

impl Incident {
    /// The uid its source gave it: sessions, sandboxes and the finalizer's clean-up are keyed by it.
    pub fn required_uid(&self) -> Result<&str, MissingMetadata> {
        self.metadata.uid.as_deref().ok_or(MissingMetadata("uid"))
    }

    /// The note it carries for its running session ([`NOTE_ANNOTATION`]), if any.
    pub fn note(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(NOTE_ANNOTATION))
            .map(|note| note.trim())
            .filter(|note| !note.is_empty())
    }
}

/// An Incident lacks a metadata field its source always sets (the field's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the Incident has no metadata.{0}")]
pub struct MissingMetadata(pub &'static str);

/// What opslab has done about the Incident.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Where the Incident is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The id of the current or last agent session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// How many sessions this Incident has had; a spec change after a terminal phase starts another.
    #[serde(default)]
    pub attempt: u32,
    /// When the current session started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "liberal_time"
    )]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<jiff::Timestamp>,
    /// When the current session ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "liberal_time"
    )]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<jiff::Timestamp>,
    /// Model turns taken by the current session.
    #[serde(default)]
    pub turns: u32,
    /// Commands run by the current session.
    #[serde(default)]
    pub commands: u32,
    /// The last command the agent ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<LastCommand>,
    /// Model tokens spent by the current session.
    #[serde(default)]
    pub tokens: Tokens,
    /// Estimated model spend of the current session, in US dollars (from the controller's cost table).
    #[serde(default)]
    pub cost_usd: f64,
    /// The agent's final report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// Observations of the Incident's state, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where an Incident is in its life.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Phase {
    /// Seen, no session yet.
    #[default]
    Pending,
    /// Waiting for a free session slot.
    Queued,
    /// An agent session is running.
    Investigating,
    /// The agent reported the incident resolved or mitigated.
    Resolved,
    /// The agent ended without a fix: it said so, needs a human, or ran out of budget.
    Unresolved,
    /// The session could not run: an invalid spec, or a fault in the model API or the sandbox.
    Failed,
    /// The session was cancelled.
    Cancelled,
}

impl Phase {
    /// Every phase, in the order an Incident goes through them.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Queued,
        Phase::Investigating,
        Phase::Resolved,
        Phase::Unresolved,
        Phase::Failed,
        Phase::Cancelled,
    ];

    /// A terminal phase ends the current attempt; only a spec change starts another.
    pub fn is_terminal(self) -> bool {
        match self {
            Phase::Resolved | Phase::Unresolved | Phase::Failed | Phase::Cancelled => true,
            Phase::Pending | Phase::Queued | Phase::Investigating => false,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The last command the agent ran.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastCommand {
    /// The command line, as the agent wrote it (secrets redacted).
    pub command: String,
    /// Its exit code; absent while it runs or when it was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// When it finished.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "liberal_time"
    )]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<jiff::Timestamp>,
}

/// Model tokens spent.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub input: u64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output: u64,
    /// Input tokens written to the model's prompt cache.
    #[serde(default)]
    pub cache_write: u64,
    /// Input tokens read from the model's prompt cache.
    #[serde(default)]
    pub cache_read: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.cache_write + self.cache_read + self.output
    }
}

/// The agent's final report.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The agent's verdict.
    pub outcome: Outcome,
    /// What happened, in a few sentences.
    pub summary: String,
    /// The cause the agent found, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root_cause: String,
    /// What the agent changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// How the agent checked the fix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verification: String,
}

/// The agent's verdict on an incident.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fixed and verified.
    Resolved,
    /// The impact is contained; the cause may remain.
    Mitigated,
    /// Not fixed.
    Unresolved,
    /// A person must act.
    NeedsHuman,
}

impl Outcome {
    /// The phase an Incident takes when its session reports this outcome.
    pub fn phase(self) -> Phase {
        match self {
            Outcome::Resolved | Outcome::Mitigated => Phase::Resolved,
            Outcome::Unresolved | Outcome::NeedsHuman => Phase::Unresolved,
        }
    }
}

/// One observation of the Incident's state (Kubernetes API conventions).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The kind of observation: `Valid`, `SessionActive` or `Resolved`.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub type_: ConditionType,
    /// `True`, `False` or `Unknown`.
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    /// A CamelCase word saying why.
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: String,
    /// The spec generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl IncidentStatus {
    /// The condition of that type, if the status has one.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|condition| condition.type_ == type_)
    }
}

/// The kind of observation a condition makes. Written as its name; the schema keeps it a free
/// string, so a status written by a person or another tool with a type opslab does not set still
/// reads, as [`ConditionType::Other`]: shown as it is, never acted on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum ConditionType {
    /// Whether the spec passed validation.
    Valid,
    /// Whether an agent session is running for the Incident.
    SessionActive,
    /// Whether the incident is resolved.
    Resolved,
    /// Whether Alertmanager says the alert that filed the Incident has resolved.
    AlertResolved,
    /// A type opslab does not set.
    Other(String),
}

impl ConditionType {
    pub fn as_str(&self) -> &str {
        match self {
            ConditionType::Valid => "Valid",
            ConditionType::SessionActive => "SessionActive",
            ConditionType::Resolved => "Resolved",
            ConditionType::AlertResolved => "AlertResolved",
            ConditionType::Other(name) => name,
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for ConditionType {
    fn from(name: String) -> Self {
        match name.as_str() {
            "Valid" => ConditionType::Valid,
            "SessionActive" => ConditionType::SessionActive,
            "Resolved" => ConditionType::Resolved,
            "AlertResolved" => ConditionType::AlertResolved,
            _ => ConditionType::Other(name),
        }
    }
}

impl From<ConditionType> for String {
    fn from(type_: ConditionType) -> Self {
        match type_ {
            ConditionType::Other(name) => name,
            known => known.as_str().to_string(),
        }
    }
}

/// A status time, read liberally since the schema keeps it a free string: a value that is not an
/// RFC 3339 time (a person's edit) reads as no time rather than making the whole Incident
/// unreadable, which in Kubernetes mode would stall the watch of every Incident.
fn liberal_time<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<jiff::Timestamp>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value.as_str().and_then(|text| text.parse().ok()))
}

/// Whether a condition holds, in the Kubernetes conventions' three words. Written as `True`,
/// `False` or `Unknown`; read liberally, since the schema keeps it a free string: the words in any
/// case, and any other value (a person's typo, a tool's own word) as `Unknown`, which is what a
/// value opslab cannot read tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for ConditionStatus {
    fn from(word: String) -> Self {
        if word.eq_ignore_ascii_case("true") {
            ConditionStatus::True
        } else if word.eq_ignore_ascii_case("false") {
            ConditionStatus::False
        } else {
            ConditionStatus::Unknown
        }
    }
}

impl From<ConditionStatus> for String {
    fn from(status: ConditionStatus) -> Self {
        status.as_str().to_string()
    }
}

/// The namespace of an Incident whose manifest names none (as `kubectl apply` would put it).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The annotation that asks for a new attempt of an Incident whose session has ended: any new value
/// (`kubectl annotate --overwrite`, or `opslab retry`) starts one, once.
pub const RETRY_ANNOTATION: &str = "opslab.dev/retry";
/// The annotation that asks for the running session to be stopped now: any new value
/// (`kubectl annotate --overwrite`, or `opslab cancel`) cancels the session running when it is set.
/// The value is kept in the trail, so it says who asked and why.
pub const CANCEL_ANNOTATION: &str = "opslab.dev/cancel";

/// The annotation that tells the running session something without changing the ticket: its value
/// is told to the agent once, as a note (`kubectl annotate --overwrite`, or the alert intake when
/// an alert group resolves). Unlike a spec change it never starts another attempt, so a note that
/// lands as the agent reports does not send it back to work.
pub const NOTE_ANNOTATION: &str = "opslab.dev/note";

/// The retry and cancel requests an Incident carries (the values of its request annotations).
/// A session records the ones present when it started; a request is honoured when its value
/// differs from the one the latest session recorded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
}

impl Requests {
    /// The requests an Incident's annotations make.
    pub fn of(incident: &Incident) -> Requests {
        let annotation = |name: &str| {
            incident
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(name))
                .filter(|value| !value.trim().is_empty())
                .cloned()
        };
        Requests {
            retry: annotation(RETRY_ANNOTATION),
            cancel: annotation(CANCEL_ANNOTATION),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.retry.is_none() && self.cancel.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(json: serde_json::Value) -> Condition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn conditions_are_written_as_the_kubernetes_words() {
        let written = serde_json::json!({
            "type": "SessionActive", "status": "Unknown", "reason": "Queued", "message": "",
            "lastTransitionTime": "2026-12-06T10:00:00Z",
        });
        let read = condition(written.clone());
        assert_eq!(
            (&read.type_, read.status),
            (&ConditionType::SessionActive, ConditionStatus::Unknown)
        );
        assert_eq!(serde_json::to_value(&read).unwrap(), written);
    }

    #[test]
    fn status_times_are_written_as_rfc3339_and_a_person_s_edit_still_reads() {
        let written = serde_json::json!({
            "phase": "Resolved", "attempt": 1, "turns": 0, "commands": 0,
            "startedAt": "2026-12-06T10:00:00.5Z", "finishedAt": "2026-12-06T10:03:00Z",
        });
        let status: IncidentStatus = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(
            status.started_at,
            Some("2026-12-06T10:00:00.5Z".parse().unwrap())
        );
        let again = serde_json::to_value(&status).unwrap();
        assert_eq!(
            (&again["startedAt"], &again["finishedAt"]),
            (&written["startedAt"], &written["finishedAt"])
        );

        let edited: IncidentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Resolved", "startedAt": "yesterday", "finishedAt": null,
            "lastCommand": {"command": "ls", "finishedAt": 7},
        }))
        .unwrap();
        assert_eq!((edited.started_at, edited.finished_at), (None, None));
        assert_eq!(edited.last_command.unwrap().finished_at, None);
    }

    #[test]
    fn conditions_a_person_wrote_still_read() {
        let read = condition(serde_json::json!({
            "type": "Degraded", "status": "true", "reason": "Manual",
            "lastTransitionTime": "2026-12-06T10:00:00Z",
        }));
        assert_eq!(read.type_, ConditionType::Other("Degraded".into()));
        assert_eq!(read.status, ConditionStatus::True);
        assert_eq!(serde_json::to_value(&read).unwrap()["type"], "Degraded");
        for word in ["maybe", "", "yes"] {
            let read = condition(serde_json::json!({
                "type": "Resolved", "status": word, "reason": "Manual",
                "lastTransitionTime": "2026-12-06T10:00:00Z",
            }));
            assert_eq!(read.status, ConditionStatus::Unknown, "{word:?}");
        }
    }
}
