//! The intake's decision, pure: from a notification, the rules and the Incidents the group already
//! has, what to file. Deduplication needs no memory of its own: each alert Incident carries its
//! group (a label holding a hash of the groupKey) and the alerts it has seen (an annotation), so the
//! state survives a restart and follows a person's edits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::payload::{Alert, AlertStatus, Payload, Refusal};
use super::rules::{Rule, Rules, most_urgent};
use super::{
    ALERTS_ANNOTATION, GROUP_KEY_ANNOTATION, GROUP_LABEL, PREVIOUS_ANNOTATION, RESOLVED_ANNOTATION,
    SEQUENCE_ANNOTATION,
};
use crate::ObjectKey;
use crate::audit::IntakeDecision;
use crate::incident::{Environment, IncidentSpec, NOTE_ANNOTATION, Phase};

/// The description's limit (the CRD's).
const MAX_DESCRIPTION: usize = 65536;
/// The title's limit (the CRD's).
const MAX_TITLE: usize = 512;
/// A note's limit: an annotation (all of an object's together may hold 256 KiB).
const MAX_NOTE: usize = 16384;

/// One alert as an Incident remembers it: an alert is the same alert while its fingerprint and
/// start are; Alertmanager's repeats carry both unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub fingerprint: String,
    pub starts_at: jiff::Timestamp,
    pub status: AlertStatus,
}

impl Seen {
    fn of(alert: &Alert) -> Seen {
        Seen {
            fingerprint: alert.fingerprint.clone(),
            starts_at: alert.starts_at,
            status: alert.status,
        }
    }

    fn same_alert(&self, other: &Seen) -> bool {
        self.fingerprint == other.fingerprint && self.starts_at == other.starts_at
    }
}

/// What the intake knows of one Incident of the group, read from the Incident itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Filed {
    pub key: ObjectKey,
    /// 1 for the group's first Incident, then 2, 3… as it fires again after one ended.
    pub sequence: u32,
    /// None before the controller has written a status.
    pub phase: Option<Phase>,
    pub spec: IncidentSpec,
    pub annotations: BTreeMap<String, String>,
    pub seen: Vec<Seen>,
}

impl Filed {
    fn terminal(&self) -> bool {
        self.phase.is_some_and(Phase::is_terminal)
    }

    fn resolved(&self) -> bool {
        self.annotations.contains_key(RESOLVED_ANNOTATION)
    }
}

/// A new Incident to file.
#[derive(Clone, Debug, PartialEq)]
pub struct NewIncident {
    pub key: ObjectKey,
    pub spec: IncidentSpec,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A change to an Incident of the group.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: ObjectKey,
    /// The new spec; None leaves it (an ended Incident's spec is not touched: a change would start
    /// another attempt).
    pub spec: Option<IncidentSpec>,
    /// Annotations to set (Some) or remove (None).
    pub annotations: BTreeMap<String, Option<String>>,
}

/// What to do with a notification.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// File a new Incident.
    Create(NewIncident),
    /// Tell the group's open Incident about new or ended alerts.
    Update(Change),
    /// Record on the group's Incident that Alertmanager says the group resolved.
    Resolve(Change),
    /// Nothing new (Alertmanager's repeats): nothing changes.
    Deduplicated { key: ObjectKey },
    /// Nothing to file, and why (no rule matches, a rule drops them, a group resolved with no
    /// Incident).
    Ignored { reason: String },
}

impl Decision {
    /// What the audit event and the metric record of it.
    pub fn recorded(&self) -> IntakeDecision {
        match self {
            Decision::Create(_) => IntakeDecision::Created,
            Decision::Update(_) => IntakeDecision::Updated,
            Decision::Resolve(_) => IntakeDecision::Resolved,
            Decision::Deduplicated { .. } => IntakeDecision::Deduplicated,
            Decision::Ignored { .. } => IntakeDecision::Ignored,
        }
    }

    pub fn key(&self) -> Option<&ObjectKey> {
        match self {
            Decision::Create(new) => Some(&new.key),
            Decision::Update(change) | Decision::Resolve(change) => Some(&change.key),
            Decision::Deduplicated { key } => Some(key),
            Decision::Ignored { .. } => None,
        }
    }
}

/// The group's hash: the value of [`GROUP_LABEL`] (a label value is at most 63 characters, a
/// groupKey may be any length).
pub fn group_hash(group_key: &str) -> String {
    hex::encode(Sha256::digest(group_key.as_bytes()))[..32].to_string()
}

/// Decides. `filed` is every Incident of the group (any order); `now` is for the texts.
pub fn decide(
    payload: &Payload,
    rules: &Rules,
    filed: &[Filed],
    now: jiff::Timestamp,
) -> Result<Decision, Refusal> {
    let Some(rule) = rules.rule_for(&payload.alerts) else {
        return Ok(Decision::Ignored {
            reason: "no rule matches the group's alerts".into(),
        });
    };
    if !rule.file {
        return Ok(Decision::Ignored {
            reason: format!("rule {:?} drops these alerts", rule.name),
        });
    }
    let group = Group::of(payload, rule, &rules.namespace, now)?;
    let Some(latest) = filed.iter().max_by_key(|filed| filed.sequence) else {
        return Ok(if group.firing().next().is_none() {
            Decision::Ignored {
                reason: "the group resolved, and no Incident was filed for it".into(),
            }
        } else {
            group.create(1, None)
        });
    };
    Ok(if latest.terminal() {
        group.after_end(latest)
    } else {
        group.while_open(latest)
    })
}

/// A notification's alerts that the rule keeps, with what the rule makes of them.
struct Group<'a> {
    payload: &'a Payload,
    rule: &'a Rule,
    /// Where the group's Incidents are filed.
    namespace: &'a str,
    alerts: Vec<&'a Alert>,
    prefix: String,
    networks: Vec<String>,
    targets: Vec<String>,
    now: jiff::Timestamp,
}

impl<'a> Group<'a> {
    /// Checks the names the rule makes whatever is decided, so that a bad name is refused the
    /// first time it is seen.
    fn of(
        payload: &'a Payload,
        rule: &'a Rule,
        namespace: &'a str,
        now: jiff::Timestamp,
    ) -> Result<Group<'a>, Refusal> {
        let alerts: Vec<&Alert> = payload
            .alerts
            .iter()
            .filter(|alert| rule.matches_labels(&alert.labels))
            .collect();
        let prefix = rule.name_prefix(&alerts)?;
        let (networks, targets) = rule.environment(&alerts)?;
        Ok(Group {
            payload,
            rule,
            namespace,
            alerts,
            prefix,
            networks,
            targets,
            now,
        })
    }

    fn resolved(&self) -> bool {
        self.payload.status == AlertStatus::Resolved
    }

    fn with_status(&self, status: AlertStatus) -> impl Iterator<Item = &'a Alert> + '_ {
        self.alerts
            .iter()
            .copied()
            .filter(move |alert| alert.status == status)
    }

    fn firing(&self) -> impl Iterator<Item = &'a Alert> + '_ {
        self.with_status(AlertStatus::Firing)
    }

    fn seen(&self) -> Vec<Seen> {
        self.alerts.iter().map(|alert| Seen::of(alert)).collect()
    }

    /// Firing alerts the Incident has not seen.
    fn new_firing(&self, latest: &Filed) -> Vec<&'a Alert> {
        self.firing()
            .filter(|alert| {
                let seen = Seen::of(alert);
                !latest.seen.iter().any(|known| known.same_alert(&seen))
            })
            .collect()
    }

    /// Ended alerts the Incident has not seen end.
    fn newly_ended(&self, latest: &Filed) -> Vec<&'a Alert> {
        self.with_status(AlertStatus::Resolved)
            .filter(|alert| {
                let seen = Seen::of(alert);
                !latest
                    .seen
                    .iter()
                    .any(|known| known.same_alert(&seen) && known.status == AlertStatus::Resolved)
            })
            .collect()
    }

    /// The group's `sequence`th Incident, naming the one before it if there was one.
    fn create(&self, sequence: u32, previous: Option<&Filed>) -> Decision {
        let hash = group_hash(&self.payload.group_key);
        let name = match sequence {
            1 => format!("{}-{}", self.prefix, &hash[..10]),
            n => format!("{}-{}-{n}", self.prefix, &hash[..10]),
        };
        let spec = IncidentSpec {
            title: title(self.payload, &self.alerts),
            description: description(self.payload, &self.alerts, previous),
            severity: self.rule.severity(&self.alerts),
            environment: Environment {
                networks: self.networks.clone(),
                targets: self.targets.clone(),
            },
            agent: self.rule.agent.clone(),
        };
        let mut annotations = BTreeMap::from([
            (
                GROUP_KEY_ANNOTATION.to_string(),
                self.payload.group_key.clone(),
            ),
            (SEQUENCE_ANNOTATION.to_string(), sequence.to_string()),
            (ALERTS_ANNOTATION.to_string(), seen_json(&self.seen())),
        ]);
        if let Some(previous) = previous {
            annotations.insert(PREVIOUS_ANNOTATION.to_string(), previous.key.to_string());
        }
        Decision::Create(NewIncident {
            key: ObjectKey::new(self.namespace, name),
            spec,
            labels: BTreeMap::from([(GROUP_LABEL.to_string(), hash)]),
            annotations,
        })
    }

    /// The group's latest Incident has ended.
    fn after_end(&self, latest: &Filed) -> Decision {
        if !self.new_firing(latest).is_empty() {
            // It fires again after its Incident ended: a new Incident, naming the earlier one.
            return self.create(latest.sequence + 1, Some(latest));
        }
        if self.resolved() && !latest.resolved() {
            // Recorded on the ended Incident, its spec untouched (a change would start an attempt).
            let merged = merge(&latest.seen, &self.seen());
            return Decision::Resolve(Change {
                key: latest.key.clone(),
                spec: None,
                annotations: BTreeMap::from([
                    (
                        RESOLVED_ANNOTATION.to_string(),
                        Some(resolved_at(&self.alerts, self.now)),
                    ),
                    (ALERTS_ANNOTATION.to_string(), Some(seen_json(&merged))),
                ]),
            });
        }
        Decision::Deduplicated {
            key: latest.key.clone(),
        }
    }

    /// The group's latest Incident is open. Alerts joining are new work: the spec changes, so a
    /// running agent is told the ticket was updated, and a session that has just ended gets
    /// another attempt. Alerts ending and the group resolving are not new work, and most often
    /// they are the agent's own fix taking effect, landing as it reports: they are a note (the
    /// Incident's `opslab.dev/note`, told to a running agent once), never a spec change, so they
    /// cannot send an agent that has reported back to work.
    fn while_open(&self, latest: &Filed) -> Decision {
        let merged = merge(&latest.seen, &self.seen());
        let new_firing = self.new_firing(latest);
        let resolves = self.resolved() && !latest.resolved();
        let refires = !self.resolved() && latest.resolved() && !new_firing.is_empty();
        if merged == latest.seen && !resolves && !refires {
            return Decision::Deduplicated {
                key: latest.key.clone(),
            };
        }
        let mut spec = latest.spec.clone();
        if !new_firing.is_empty() {
            self.join(&mut spec, &new_firing);
        }
        let mut annotations =
            BTreeMap::from([(ALERTS_ANNOTATION.to_string(), Some(seen_json(&merged)))]);
        if resolves {
            let at = resolved_at(&self.alerts, self.now);
            annotations.insert(RESOLVED_ANNOTATION.to_string(), Some(at.clone()));
            annotations.insert(
                NOTE_ANNOTATION.to_string(),
                Some(format!(
                    "Alertmanager reports the alert group resolved at {at}: its alerts have ended. \
                     This does not end the session by itself: verify the service and report."
                )),
            );
        } else if refires {
            // The group fires again: what the note said (it resolved) is no longer so.
            annotations.insert(RESOLVED_ANNOTATION.to_string(), None);
            annotations.insert(NOTE_ANNOTATION.to_string(), None);
        } else if !self.newly_ended(latest).is_empty() {
            annotations.insert(NOTE_ANNOTATION.to_string(), Some(self.ended_note()));
        }
        let change = Change {
            key: latest.key.clone(),
            spec: (spec != latest.spec).then_some(spec),
            annotations,
        };
        if resolves {
            Decision::Resolve(change)
        } else {
            Decision::Update(change)
        }
    }

    /// Alerts joining the group: told in the description, and their severity, networks and
    /// targets added.
    fn join(&self, spec: &mut IncidentSpec, new_firing: &[&Alert]) {
        let update = format!(
            "Update from Alertmanager at {}: {} more alert(s) joined the group:\n{}",
            self.now,
            new_firing.len(),
            alert_list(new_firing)
        );
        spec.description = append(&spec.description, &update);
        spec.severity = most_urgent(spec.severity, self.rule.severity(new_firing));
        for (have, add) in [
            (&mut spec.environment.networks, &self.networks),
            (&mut spec.environment.targets, &self.targets),
        ] {
            for name in add {
                if !have.contains(name) {
                    have.push(name.clone());
                }
            }
        }
    }

    /// The note for alerts that ended while others still fire: every ended alert of the group, not
    /// only the newest, since a note replaces the one before.
    fn ended_note(&self) -> String {
        let ended: Vec<&Alert> = self.with_status(AlertStatus::Resolved).collect();
        let note = format!(
            "Alertmanager at {}: {} of the group's {} alert(s) have ended; the others still \
             fire:\n{}",
            self.now,
            ended.len(),
            self.alerts.len(),
            alert_list(&ended)
        );
        cut(&note, MAX_NOTE)
    }
}

/// The alerts an Incident has seen, with the incoming ones added or their status updated.
fn merge(known: &[Seen], incoming: &[Seen]) -> Vec<Seen> {
    let mut merged = known.to_vec();
    for seen in incoming {
        match merged.iter_mut().find(|known| known.same_alert(seen)) {
            Some(known) => known.status = seen.status,
            None => merged.push(seen.clone()),
        }
    }
    merged
}

pub fn seen_json(seen: &[Seen]) -> String {
    serde_json::to_string(seen).unwrap_or_else(|_| "[]".into())
}

/// When the group ended: the latest end of its alerts, else now.
fn resolved_at(alerts: &[&Alert], now: jiff::Timestamp) -> String {
    let end = alerts
        .iter()
        .filter(|alert| alert.status == AlertStatus::Resolved)
        .map(|alert| alert.ends_at)
        .max()
        .unwrap_or(now);
    end.to_string()
}

fn title(payload: &Payload, alerts: &[&Alert]) -> String {
    let summary = alerts
        .iter()
        .find_map(|alert| alert.annotations.get("summary"))
        .or_else(|| payload.common_annotations.get("summary"))
        .map(|summary| summary.trim().to_string())
        .filter(|summary| !summary.is_empty());
    let title = summary.unwrap_or_else(|| {
        let name = alerts
            .iter()
            .find_map(|alert| alert.labels.get("alertname"))
            .map_or("an alert", String::as_str);
        format!("{name} is firing")
    });
    cut(&title, MAX_TITLE)
}

fn description(payload: &Payload, alerts: &[&Alert], previous: Option<&Filed>) -> String {
    let mut text = String::new();
    let main = payload
        .common_annotations
        .get("description")
        .or_else(|| {
            alerts
                .iter()
                .find_map(|alert| alert.annotations.get("description"))
        })
        .map(|description| description.trim().to_string())
        .filter(|description| !description.is_empty());
    if let Some(main) = &main {
        text.push_str(main);
        text.push_str("\n\n");
    }
    let group: Vec<String> = payload
        .group_labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    text.push_str(&format!(
        "Filed from an Alertmanager notification (receiver {}, group {{{}}}, {}).\n",
        payload.receiver,
        group.join(", "),
        payload.external_url
    ));
    if let Some(previous) = previous {
        let ended = previous
            .phase
            .map_or_else(|| "ended".to_string(), |phase| format!("ended {phase}"));
        text.push_str(&format!(
            "This alert group fired before: Incident {} ({ended}).\n",
            previous.key
        ));
    }
    if payload.truncated_alerts > 0 {
        text.push_str(&format!(
            "Alertmanager left {} more alert(s) out of the notification.\n",
            payload.truncated_alerts
        ));
    }
    text.push_str("\nAlerts:\n");
    text.push_str(&alert_list(alerts));
    cut(&text, MAX_DESCRIPTION)
}

/// One entry per alert: its name, summary, since when, its labels and where it comes from.
fn alert_list(alerts: &[&Alert]) -> String {
    let mut text = String::new();
    for alert in alerts {
        let name = alert
            .labels
            .get("alertname")
            .map_or("alert", String::as_str);
        let status = match alert.status {
            AlertStatus::Firing => format!("firing since {}", alert.starts_at),
            AlertStatus::Resolved => format!("ended at {}", alert.ends_at),
        };
        text.push_str(&format!("- {name} ({status})"));
        if let Some(summary) = alert.annotations.get("summary") {
            text.push_str(&format!(": {summary}"));
        }
        text.push('\n');
        let labels: Vec<String> = alert
            .labels
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        text.push_str(&format!("  labels: {}\n", labels.join(", ")));
        if let Some(description) = alert.annotations.get("description") {
            text.push_str(&format!(
                "  description: {}\n",
                description.trim().replace('\n', "\n    ")
            ));
        }
        if !alert.generator_url.is_empty() {
            text.push_str(&format!("  source: {}\n", alert.generator_url));
        }
        text.push_str(&format!("  fingerprint: {}\n", alert.fingerprint));
    }
    text
}

/// The description with an update added, within the limit: when it would not fit, a short note,
/// and when not even that fits, the description as it was.
fn append(description: &str, update: &str) -> String {
    if update.is_empty() {
        return description.to_string();
    }
    let joined = format!("{}\n\n{update}", description.trim_end());
    if joined.len() <= MAX_DESCRIPTION {
        return joined;
    }
    let note = format!(
        "{}\n\n(Alertmanager sent another update; the description is full.)\n",
        description.trim_end()
    );
    if note.len() <= MAX_DESCRIPTION {
        note
    } else {
        description.to_string()
    }
}

/// At most `max` bytes, cut on a character boundary, saying so.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MARK: &str = " …(cut)";
    let mut end = max - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::payload::{self, tests::body};

    const NOW: &str = "2026-12-06T10:05:00Z";

    fn now() -> jiff::Timestamp {
        NOW.parse().unwrap()
    }

    fn payload(value: serde_json::Value) -> Payload {
        payload::parse(value.to_string().as_bytes()).unwrap()
    }

    fn created(decision: Decision) -> NewIncident {
        match decision {
            Decision::Create(new) => new,
            other => panic!("expected a new Incident, got {other:?}"),
        }
    }

    fn filed(new: &NewIncident, phase: Option<Phase>) -> Filed {
        Filed {
            key: new.key.clone(),
            sequence: new.annotations[SEQUENCE_ANNOTATION].parse().unwrap(),
            phase,
            spec: new.spec.clone(),
            annotations: new.annotations.clone(),
            seen: serde_json::from_str(&new.annotations[ALERTS_ANNOTATION]).unwrap(),
        }
    }

    fn apply(filed: &mut Filed, change: &Change) {
        if let Some(spec) = &change.spec {
            filed.spec = spec.clone();
        }
        for (name, value) in &change.annotations {
            match value {
                Some(value) => filed.annotations.insert(name.clone(), value.clone()),
                None => filed.annotations.remove(name),
            };
        }
        filed.seen = serde_json::from_str(&filed.annotations[ALERTS_ANNOTATION]).unwrap();
    }

    #[test]
    fn a_firing_group_files_one_incident_filled_from_the_alert() {
        let rules = Rules::default();
        let new = created(decide(&payload(body()), &rules, &[], now()).unwrap());
        let hash = group_hash("{}:{alertname=\"RedisDown\"}");
        assert_eq!(
            new.key,
            ObjectKey::new("default", format!("redisdown-{}", &hash[..10]))
        );
        assert_eq!(new.spec.title, "redis is down");
        assert_eq!(new.spec.severity, crate::incident::Severity::Critical);
        assert_eq!(new.spec.environment.targets, vec!["redis".to_string()]);
        assert!(new.spec.description.starts_with("no PONG for 1m\n\n"));
        assert!(
            new.spec
                .description
                .contains("labels: alertname=RedisDown, service=redis, severity=critical"),
            "{}",
            new.spec.description
        );
        assert!(
            new.spec
                .description
                .contains("source: http://prometheus:9090/graph?g0.expr=up")
        );
        assert_eq!(new.labels[GROUP_LABEL], hash);
        assert!(new.spec.validate().is_ok());
    }

    #[test]
    fn repeats_change_nothing_and_joining_alerts_update_the_open_incident() {
        let rules = Rules::default();
        let first = payload(body());
        let new = created(decide(&first, &rules, &[], now()).unwrap());
        let mut open = filed(&new, Some(Phase::Investigating));
        assert_eq!(
            decide(&first, &rules, std::slice::from_ref(&open), now()).unwrap(),
            Decision::Deduplicated {
                key: new.key.clone()
            }
        );
        let mut two = body();
        let mut second = two["alerts"][0].clone();
        second["fingerprint"] = "fedcba9876543210".into();
        second["labels"]["service"] = "redis-replica".into();
        two["alerts"].as_array_mut().unwrap().push(second);
        let Decision::Update(change) = decide(
            &payload(two.clone()),
            &rules,
            std::slice::from_ref(&open),
            now(),
        )
        .unwrap() else {
            panic!("expected an update");
        };
        assert_eq!(change.key, new.key);
        let spec = change.spec.clone().unwrap();
        assert!(
            spec.description.contains("1 more alert(s) joined"),
            "{}",
            spec.description
        );
        assert!(spec.description.contains("fedcba9876543210"));
        assert_eq!(
            spec.environment.targets,
            vec!["redis".to_string(), "redis-replica".to_string()]
        );
        apply(&mut open, &change);
        assert_eq!(open.seen.len(), 2);
        // And that notification repeated is nothing new.
        assert!(matches!(
            decide(&payload(two), &rules, std::slice::from_ref(&open), now()).unwrap(),
            Decision::Deduplicated { .. }
        ));
    }

    fn resolved_body() -> serde_json::Value {
        let mut resolved = body();
        resolved["status"] = "resolved".into();
        resolved["alerts"][0]["status"] = "resolved".into();
        resolved["alerts"][0]["endsAt"] = "2026-12-06T10:04:00Z".into();
        resolved
    }

    #[test]
    fn resolved_is_recorded_on_an_ended_incident_without_touching_its_spec() {
        let rules = Rules::default();
        let new = created(decide(&payload(body()), &rules, &[], now()).unwrap());
        let mut ended = filed(&new, Some(Phase::Resolved));
        let Decision::Resolve(change) = decide(
            &payload(resolved_body()),
            &rules,
            std::slice::from_ref(&ended),
            now(),
        )
        .unwrap() else {
            panic!("expected the resolution recorded");
        };
        assert_eq!(change.spec, None);
        assert_eq!(
            change.annotations[RESOLVED_ANNOTATION].as_deref(),
            Some("2026-12-06T10:04:00Z")
        );
        apply(&mut ended, &change);
        assert!(matches!(
            decide(
                &payload(resolved_body()),
                &rules,
                std::slice::from_ref(&ended),
                now()
            )
            .unwrap(),
            Decision::Deduplicated { .. }
        ));
    }

    #[test]
    fn resolved_is_a_note_to_an_open_incident_never_a_spec_change() {
        let rules = Rules::default();
        let new = created(decide(&payload(body()), &rules, &[], now()).unwrap());
        let mut open = filed(&new, Some(Phase::Investigating));
        let Decision::Resolve(change) = decide(
            &payload(resolved_body()),
            &rules,
            std::slice::from_ref(&open),
            now(),
        )
        .unwrap() else {
            panic!("expected the resolution recorded");
        };
        // A spec change would start another attempt if the agent has just reported.
        assert_eq!(change.spec, None);
        let note = change.annotations[NOTE_ANNOTATION].as_deref().unwrap();
        assert!(note.contains("resolved at 2026-12-06T10:04:00Z"), "{note}");
        assert!(note.contains("does not end the session"), "{note}");
        // Firing again takes the note back, and tells the agent as new work.
        apply(&mut open, &change);
        let mut again = body();
        again["alerts"][0]["startsAt"] = "2026-12-06T11:00:00Z".into();
        let Decision::Update(change) =
            decide(&payload(again), &rules, std::slice::from_ref(&open), now()).unwrap()
        else {
            panic!("expected an update");
        };
        assert_eq!(change.annotations[NOTE_ANNOTATION], None);
        assert_eq!(change.annotations[RESOLVED_ANNOTATION], None);
        assert!(
            change
                .spec
                .unwrap()
                .description
                .contains("joined the group")
        );
    }

    #[test]
    fn an_alert_ending_while_others_fire_is_a_note_listing_every_ended_alert() {
        let rules = Rules::default();
        let mut two = body();
        let mut second = two["alerts"][0].clone();
        second["fingerprint"] = "fedcba9876543210".into();
        second["labels"]["service"] = "redis-replica".into();
        two["alerts"].as_array_mut().unwrap().push(second);
        let new = created(decide(&payload(two.clone()), &rules, &[], now()).unwrap());
        let open = filed(&new, Some(Phase::Investigating));
        two["alerts"][1]["status"] = "resolved".into();
        two["alerts"][1]["endsAt"] = "2026-12-06T10:04:00Z".into();
        let Decision::Update(change) = decide(&payload(two), &rules, &[open], now()).unwrap()
        else {
            panic!("expected an update");
        };
        assert_eq!(change.spec, None);
        let note = change.annotations[NOTE_ANNOTATION].as_deref().unwrap();
        assert!(
            note.contains("1 of the group's 2 alert(s) have ended"),
            "{note}"
        );
        assert!(note.contains("fedcba9876543210"), "{note}");
        assert!(!change.annotations.contains_key(RESOLVED_ANNOTATION));
    }

    #[test]
    fn firing_again_after_the_incident_ended_files_a_new_one_naming_it() {
        let rules = Rules::default();
        let new = created(decide(&payload(body()), &rules, &[], now()).unwrap());
        let ended = filed(&new, Some(Phase::Resolved));
        // The same alert still firing (a repeat) is not a new Incident.
        assert!(matches!(
            decide(
                &payload(body()),
                &rules,
                std::slice::from_ref(&ended),
                now()
            )
            .unwrap(),
            Decision::Deduplicated { .. }
        ));
        let mut again = body();
        again["alerts"][0]["startsAt"] = "2026-12-06T11:00:00Z".into();
        let second = created(decide(&payload(again), &rules, &[ended], now()).unwrap());
        assert_eq!(second.key.name, format!("{}-2", new.key.name));
        assert_eq!(second.annotations[PREVIOUS_ANNOTATION], new.key.to_string());
        assert!(
            second.spec.description.contains(&format!(
                "fired before: Incident {} (ended Resolved)",
                new.key
            )),
            "{}",
            second.spec.description
        );
    }

    #[test]
    fn nothing_is_filed_for_unmatched_alerts_or_a_group_resolved_unseen() {
        let rules = Rules::parse("rules:\n- match: {team: data}\n").unwrap();
        assert!(matches!(
            decide(&payload(body()), &rules, &[], now()).unwrap(),
            Decision::Ignored { .. }
        ));
        assert_eq!(
            decide(&payload(resolved_body()), &Rules::default(), &[], now()).unwrap(),
            Decision::Ignored {
                reason: "the group resolved, and no Incident was filed for it".into()
            }
        );
    }

    #[test]
    fn a_yaml_looking_title_is_kept_as_text() {
        let mut hostile = body();
        hostile["alerts"][0]["annotations"]["summary"] = "x\" }\nspec: {agent: {maxTurns: 9999}} #"
            .replace('\n', " ")
            .into();
        let new = created(decide(&payload(hostile), &Rules::default(), &[], now()).unwrap());
        let yaml = serde_saphyr::to_string(&new.spec).unwrap();
        let back: IncidentSpec = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, new.spec);
        assert_eq!(back.agent, crate::incident::AgentOverrides::default());
    }
}
