//! The `AlertResolved` condition of an Incident the intake filed: whether Alertmanager says its
//! alert group has resolved. Pure; derived from the Incident's annotations, which the intake sets.

use super::{GROUP_LABEL, RESOLVED_ANNOTATION};
use crate::incident::{Condition, ConditionStatus, ConditionType, Incident, IncidentStatus};

/// The condition, for an Incident filed from an alert (None for the rest). `previous` keeps its
/// transition time while its status stays.
pub fn alert_resolved(
    incident: &Incident,
    previous: Option<&IncidentStatus>,
    generation: i64,
    now: &str,
) -> Option<Condition> {
    let from_alert = incident
        .metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(GROUP_LABEL));
    if !from_alert {
        return None;
    }
    let resolved = incident
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(RESOLVED_ANNOTATION));
    let (status, reason, message) = match resolved {
        Some(at) => (
            ConditionStatus::True,
            "AlertResolved",
            format!("Alertmanager reports the alert group resolved at {at}"),
        ),
        None => (
            ConditionStatus::False,
            "AlertFiring",
            "the alert group is firing".to_string(),
        ),
    };
    let last_transition_time = previous
        .and_then(|previous| previous.condition(ConditionType::AlertResolved))
        .filter(|before| before.status == status)
        .map_or_else(
            || now.to_string(),
            |before| before.last_transition_time.clone(),
        );
    Some(Condition {
        type_: ConditionType::AlertResolved,
        status,
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: Some(generation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::IncidentSpec;

    fn incident(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Incident {
        let mut incident = Incident::new(
            "x",
            IncidentSpec {
                title: "t".into(),
                description: String::new(),
                severity: Default::default(),
                environment: Default::default(),
                agent: Default::default(),
            },
        );
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        incident.metadata.labels = Some(map(labels));
        incident.metadata.annotations = Some(map(annotations));
        incident
    }

    #[test]
    fn only_alert_incidents_get_it_and_it_follows_the_annotation() {
        assert_eq!(alert_resolved(&incident(&[], &[]), None, 1, "T1"), None);
        let firing = alert_resolved(&incident(&[(GROUP_LABEL, "h")], &[]), None, 1, "T1").unwrap();
        assert_eq!(
            (firing.status, firing.reason.as_str()),
            (ConditionStatus::False, "AlertFiring")
        );
        let previous = IncidentStatus {
            conditions: vec![firing],
            ..IncidentStatus::default()
        };
        let resolved = alert_resolved(
            &incident(
                &[(GROUP_LABEL, "h")],
                &[(RESOLVED_ANNOTATION, "2026-12-06T10:04:00Z")],
            ),
            Some(&previous),
            1,
            "T2",
        )
        .unwrap();
        assert_eq!(
            resolved,
            Condition {
                type_: ConditionType::AlertResolved,
                status: ConditionStatus::True,
                reason: "AlertResolved".into(),
                message: "Alertmanager reports the alert group resolved at 2026-12-06T10:04:00Z"
                    .into(),
                last_transition_time: "T2".into(),
                observed_generation: Some(1),
            }
        );
        let kept = alert_resolved(
            &incident(&[(GROUP_LABEL, "h")], &[]),
            Some(&previous),
            1,
            "T3",
        )
        .unwrap();
        assert_eq!(kept.last_transition_time, "T1");
    }
}
