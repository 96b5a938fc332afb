//! The Alertmanager intake: `POST /api/v1/alerts` turns Alertmanager's webhook notifications into
//! Incidents, filed where a person would file them — a manifest in the watched folder (files mode)
//! or an object through the Kubernetes API — so everything after the source stays the same. The
//! intake only produces Incidents: each source brings the [`Target`] it files them in.
//!
//! - [`payload`]: the webhook's payload (version 4), parsed and checked;
//! - [`rules`]: which alerts become Incidents and how they fill the spec (`--alert-rules`);
//! - [`decide`]: the intake's decision, pure (create, update, resolve, deduplicate, ignore);
//! - [`filing`]: what the intake needs of the place it files Incidents in;
//! - [`condition`]: the `AlertResolved` condition the reconciler shows;
//! - [`handler`]: the HTTP handler: the token, the body's limit, the audit event and the metric;
//! - [`settings`]: the intake's settings, held by the controller's configuration.

pub mod condition;
pub mod decide;
pub mod filing;
pub mod handler;
pub mod payload;
pub mod rules;
pub mod settings;

pub use filing::Target;
pub use handler::{Intake, routes};
pub use rules::Rules;
pub use settings::IntakeConfig;

/// The label every alert Incident carries: a hash of its Alertmanager groupKey. Deduplication
/// finds the group's Incidents by it.
pub const GROUP_LABEL: &str = "opslab.dev/alert-group";
/// The groupKey itself, for people.
pub const GROUP_KEY_ANNOTATION: &str = "opslab.dev/alert-group-key";
/// Which of the group's Incidents this is: 1, then 2, 3… as the group fires again after one ended.
pub const SEQUENCE_ANNOTATION: &str = "opslab.dev/alert-sequence";
/// The alerts the Incident has seen (JSON: fingerprint, startsAt, status): repeats are told apart
/// from alerts firing anew by it.
pub const ALERTS_ANNOTATION: &str = "opslab.dev/alerts";
/// Set when Alertmanager says the group resolved (its value: when); shown as `AlertResolved`.
pub const RESOLVED_ANNOTATION: &str = "opslab.dev/alert-resolved";
/// The group's earlier Incident, when the group fired again after it ended.
pub const PREVIOUS_ANNOTATION: &str = "opslab.dev/previous-incident";
