//! The Incidents list (with its filters and the invalid manifests) and one Incident's page.

use maud::{Markup, html};

use super::layout::page;
use super::{dollars, incident_href, session_href, shown, when, when_text};
use crate::audit::{IncidentContent, IncidentRecord, SessionRecord, StoredIncident};
use crate::incident::{Condition, Incident, Phase, Report};
use crate::view;

/// The list's filters, from the query string (an empty value is no filter).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IncidentFilter {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub namespace: String,
}

impl IncidentFilter {
    fn keeps(&self, record: &IncidentRecord, phase: Phase) -> bool {
        (self.namespace.is_empty() || record.namespace == self.namespace)
            && (self.phase.is_empty() || phase.to_string() == self.phase)
    }

    /// The filter as a query string, for the live feed.
    pub fn query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("phase", &self.phase)
            .append_pair("namespace", &self.namespace)
            .finish()
    }
}

fn decode(stored: &StoredIncident) -> Option<Incident> {
    stored.decode().ok()
}

fn phase_badge(phase: &str) -> Markup {
    html! { span class=(format!("phase phase-{phase}")) { (phase) } }
}

/// A short digest of the rows, what the live feed compares: rendered at a fixed time, so that ages
/// moving on alone do not count as a change.
pub fn rows_digest(records: &[IncidentRecord], filter: &IncidentFilter) -> String {
    use sha2::Digest;
    let rows = incident_rows(records, filter, jiff::Timestamp::UNIX_EPOCH).into_string();
    hex::encode(&sha2::Sha256::digest(rows.as_bytes())[..12])
}

/// The table body: one row per Incident the filter keeps. Also what the live feed replaces.
pub fn incident_rows(
    records: &[IncidentRecord],
    filter: &IncidentFilter,
    now: jiff::Timestamp,
) -> Markup {
    html! {
        tbody id="incident-rows" {
            @for (record, stored) in records.iter().filter_map(|record| Some((record, record.stored()?))) {
                @let incident = decode(stored);
                @let status = incident.as_ref().and_then(|incident| incident.status.clone()).unwrap_or_default();
                @if filter.keeps(record, status.phase) {
                    @let explained = view::explanation(&status);
                    tr {
                        td { a href=(incident_href(&record.namespace, &record.name)) { (shown(&record.name)) } }
                        td { (shown(&record.namespace)) }
                        td {
                            (phase_badge(&status.phase.to_string()))
                            @if let Some(explained) = explained.filter(|e| view::reason_says_something(status.phase, e.reason)) {
                                span.reason title=(shown(explained.message)) { (shown(explained.reason)) }
                            }
                        }
                        td { (incident.as_ref().map(|i| i.spec.severity.to_string()).unwrap_or_default()) }
                        td { (shown(&record.source)) }
                        td.num { (status.commands) }
                        td.num { (dollars(status.cost_usd)) }
                        td.num {
                            (incident.as_ref()
                                .and_then(|i| i.metadata.creation_timestamp.as_ref())
                                .map(|created| view::age(created.0, now))
                                .unwrap_or_else(|| "-".into()))
                        }
                    }
                }
            }
        }
    }
}

/// `/ui/`: the Incidents, filtered, and the manifests that did not parse.
pub fn incidents_page(
    records: &[IncidentRecord],
    filter: &IncidentFilter,
    now: jiff::Timestamp,
) -> Markup {
    let mut namespaces: Vec<&str> = records
        .iter()
        .filter(|record| record.stored().is_some())
        .map(|record| record.namespace.as_str())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    // The feed sends the rows only once they differ from these.
    let seen = rows_digest(records, filter);
    let live = format!("/ui/live?{}&seen={seen}", filter.query());
    let invalid: Vec<(&str, &str)> = records
        .iter()
        .filter_map(|record| Some((record.name.as_str(), record.problem()?)))
        .collect();
    page(
        "Incidents",
        Some(&live),
        html! {
            h1 { "Incidents" }
            form.filters method="get" action="/ui/" {
                label { "Phase"
                    select name="phase" {
                        option value="" selected[filter.phase.is_empty()] { "any" }
                        @for phase in Phase::ALL {
                            @let name = phase.to_string();
                            option value=(name) selected[filter.phase == name] { (name) }
                        }
                    }
                }
                label { "Namespace"
                    select name="namespace" {
                        option value="" selected[filter.namespace.is_empty()] { "any" }
                        @for namespace in &namespaces {
                            option value=(namespace) selected[filter.namespace == *namespace] { (shown(namespace)) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            table.incidents {
                thead { tr {
                    th { "Name" } th { "Namespace" } th { "Phase" } th { "Severity" } th { "Source" }
                    th.num { "Commands" } th.num { "Cost" } th.num { "Age" }
                } }
                (incident_rows(records, filter, now))
            }
            @if !invalid.is_empty() {
                h2 { "Invalid manifests" }
                ul.errors {
                    @for (name, problem) in invalid {
                        li { code { (shown(name)) } ": " (shown(problem)) }
                    }
                }
            }
        },
    )
}

fn field(label: &str, value: Markup) -> Markup {
    html! { dt { (label) } dd { (value) } }
}

fn text(value: &str) -> Markup {
    if value.trim().is_empty() {
        html! { span.muted { "none" } }
    } else {
        html! { (shown(value)) }
    }
}

fn conditions_table(conditions: &[Condition]) -> Markup {
    html! {
        @if conditions.is_empty() {
            p.muted { "none" }
        } @else {
            table {
                thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Last transition" } th { "Message" } } }
                tbody {
                    @for condition in conditions {
                        tr {
                            td { (shown(condition.type_.as_str())) }
                            td { (shown(condition.status.as_str())) }
                            td { (shown(&condition.reason)) }
                            td { (when_text(&condition.last_transition_time)) }
                            td { (shown(&condition.message)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn report_fields(report: &Report) -> Markup {
    html! {
        dl.fields {
            (field("Outcome", html! { (serde_json::to_value(report.outcome).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }))
            (field("Summary", text(&report.summary)))
            (field("Root cause", text(&report.root_cause)))
            (field("Actions", html! {
                @if report.actions.is_empty() { span.muted { "none" } }
                @else { ul { @for action in &report.actions { li { (shown(action)) } } } }
            }))
            (field("Verification", text(&report.verification)))
        }
    }
}

fn sessions_table(sessions: &[SessionRecord]) -> Markup {
    html! {
        @if sessions.is_empty() {
            p.muted { "No session yet." }
        } @else {
            table {
                thead { tr {
                    th { "Session" } th.num { "Attempt" } th { "Phase" } th { "Reason" }
                    th.num { "Commands" } th.num { "Cost" } th { "Started" } th { "Finished" }
                } }
                tbody {
                    @for session in sessions {
                        tr {
                            td { a href=(session_href(&session.id)) { code { (shown(&session.id)) } } }
                            td.num { (session.attempt) }
                            td { (phase_badge(&session.current_phase().to_string())) }
                            td { (shown(session.reason.as_deref().unwrap_or("-"))) }
                            td.num { (session.commands) }
                            td.num { (dollars(session.cost_usd)) }
                            td { (when(Some(session.started_at))) }
                            td { (when(session.finished_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// `/ui/incidents/NS/NAME`: spec, status, conditions, report and sessions.
pub fn incident_page(
    record: &IncidentRecord,
    sessions: &[SessionRecord],
    now: jiff::Timestamp,
) -> Markup {
    let title = format!("{}/{}", record.namespace, record.name);
    let stored = match &record.content {
        IncidentContent::Incident(stored) => stored,
        IncidentContent::Problem { error } => {
            return page(
                &title,
                None,
                html! {
                    h1 { (shown(&record.name)) " " (phase_badge("Invalid")) }
                    p.errors { (shown(error)) }
                },
            );
        }
    };
    let Some(incident) = decode(stored) else {
        return super::error_page(&title, "the stored Incident does not decode");
    };
    let status = incident.status.clone().unwrap_or_default();
    let spec = &incident.spec;
    let explained = view::explanation(&status);
    page(
        &title,
        None,
        html! {
            h1 { (shown(&record.namespace)) "/" (shown(&record.name)) " " (phase_badge(&status.phase.to_string())) }
            h2 { "Spec" }
            dl.fields {
                (field("Title", text(&spec.title)))
                (field("Severity", html! { (spec.severity.to_string()) }))
                (field("Description", text(&spec.description)))
                (field("Networks", text(&spec.environment.networks.join(", "))))
                (field("Targets", text(&spec.environment.targets.join(", "))))
                (field("Agent", text(&view::agent_text(spec))))
                (field("Labels", text(&view::labels_text(&incident))))
                (field("Source", text(&record.source)))
                (field("Created", html! {
                    @if let Some(created) = &incident.metadata.creation_timestamp {
                        (when(Some(created.0))) " (" (view::age(created.0, now)) " ago)"
                    }
                }))
                (field("Generation", html! { (stored.generation) }))
            }
            h2 { "Status" }
            dl.fields {
                (field("Phase", phase_badge(&status.phase.to_string())))
                @if let Some(explained) = &explained {
                    (field("Reason", text(explained.reason)))
                    (field("Message", text(explained.message)))
                }
                (field("Attempt", html! { (status.attempt) }))
                @if let Some(session) = &status.session_id {
                    (field("Session", html! { a href=(session_href(session)) { code { (shown(session)) } } }))
                }
                (field("Started", html! { (when(status.started_at)) }))
                (field("Finished", html! { (when(status.finished_at)) }))
                (field("Usage", html! {
                    (status.turns) " turns, " (status.commands) " commands, "
                    (status.tokens.total()) " tokens (" (status.tokens.input) " in / " (status.tokens.output) " out), estimated "
                    (dollars(status.cost_usd))
                }))
            }
            h2 { "Conditions" }
            (conditions_table(&status.conditions))
            h2 { "Report" }
            @match &status.report {
                Some(report) => (report_fields(report)),
                None => p.muted { "No report yet." },
            }
            h2 { "Sessions" }
            (sessions_table(sessions))
        },
    )
}
