//! Which Kubernetes Event a status change deserves. Pure: the controller publishes what this returns.

use kube::runtime::events::{Event, EventType};

use crate::incident::{ConditionType, IncidentStatus, Phase};

/// An Event's note is limited to 1 kB by the API server.
const NOTE_LIMIT: usize = 1024;

/// The Event announcing the move from `previous` to `next`, if it is a transition people care
/// about: a new phase, or a new attempt. Progress within a phase (turns, commands) is not one.
pub fn event_for(previous: Option<&IncidentStatus>, next: &IncidentStatus) -> Option<Event> {
    let unchanged = previous
        .is_some_and(|previous| previous.phase == next.phase && previous.attempt == next.attempt);
    if unchanged {
        return None;
    }
    let reason = condition_reason(next);
    let session = next.session_id.as_deref().unwrap_or("none");
    let (type_, action, reason, note) = match next.phase {
        Phase::Pending => return None,
        Phase::Queued => (
            EventType::Normal,
            "QueueSession",
            "Queued".to_string(),
            message_of(next, ConditionType::SessionActive)
                .unwrap_or_else(|| "waiting for a free session slot".into()),
        ),
        Phase::Investigating => (
            EventType::Normal,
            "StartSession",
            "SessionStarted".to_string(),
            format!("session {session}, attempt {}", next.attempt),
        ),
        Phase::Resolved => (
            EventType::Normal,
            "EndSession",
            "Resolved".to_string(),
            summary_or(next, "the agent reported the incident resolved"),
        ),
        Phase::Cancelled => (
            EventType::Normal,
            "EndSession",
            "Cancelled".to_string(),
            message_of(next, ConditionType::SessionActive)
                .unwrap_or_else(|| format!("session {session} was cancelled")),
        ),
        Phase::Unresolved => (
            EventType::Warning,
            "EndSession",
            reason.unwrap_or_else(|| "Unresolved".into()),
            // The report's summary, or the cause (a budget reached, with its figure).
            message_of(next, ConditionType::Resolved)
                .unwrap_or_else(|| "the session ended without a fix".into()),
        ),
        Phase::Failed => (
            EventType::Warning,
            if reason.as_deref() == Some("InvalidSpec") {
                "ValidateSpec"
            } else {
                "EndSession"
            },
            reason.unwrap_or_else(|| "Failed".into()),
            // The invalid spec's problem, or the session's cause (the API's error, the missing
            // network, the store fault).
            message_of(next, ConditionType::Valid)
                .filter(|_| next.session_id.is_none())
                .or_else(|| message_of(next, ConditionType::Resolved))
                .unwrap_or_else(|| format!("session {session} failed")),
        ),
    };
    Some(Event {
        type_,
        reason,
        note: Some(truncate(note)),
        action: action.into(),
        secondary: None,
    })
}

/// The reason of the `Resolved` condition: why the session ended as it did.
fn condition_reason(status: &IncidentStatus) -> Option<String> {
    status
        .condition(ConditionType::Resolved)
        .map(|condition| condition.reason.clone())
        .filter(|reason| !reason.is_empty())
}

fn message_of(status: &IncidentStatus, condition_type: ConditionType) -> Option<String> {
    status
        .condition(condition_type)
        .map(|condition| condition.message.clone())
        .filter(|message| !message.is_empty())
}

fn summary_or(status: &IncidentStatus, fallback: &str) -> String {
    status
        .report
        .as_ref()
        .map(|report| report.summary.clone())
        .filter(|summary| !summary.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

fn truncate(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut cut = NOTE_LIMIT - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Condition, ConditionStatus, Outcome, Report};

    fn status(phase: Phase, attempt: u32) -> IncidentStatus {
        IncidentStatus {
            phase,
            attempt,
            session_id: Some("s-1".into()),
            ..IncidentStatus::default()
        }
    }

    fn with_condition(
        mut status: IncidentStatus,
        type_: ConditionType,
        reason: &str,
        message: &str,
    ) -> IncidentStatus {
        status.conditions.push(Condition {
            type_,
            status: ConditionStatus::False,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: "2026-11-25T00:00:00Z".into(),
            observed_generation: Some(1),
        });
        status
    }

    #[test]
    fn progress_within_a_phase_is_not_an_event() {
        let before = status(Phase::Investigating, 1);
        let mut after = before.clone();
        after.commands = 3;
        after.turns = 4;
        assert!(event_for(Some(&before), &after).is_none());
    }

    #[test]
    fn a_session_start_is_a_normal_event_naming_the_session() {
        let event = event_for(
            Some(&status(Phase::Pending, 0)),
            &status(Phase::Investigating, 1),
        )
        .expect("an event");
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.reason, "SessionStarted");
        assert_eq!(event.note.as_deref(), Some("session s-1, attempt 1"));
        // The first status an Incident gets is a transition too.
        assert!(event_for(None, &status(Phase::Investigating, 1)).is_some());
        assert!(event_for(None, &status(Phase::Pending, 0)).is_none());
    }

    #[test]
    fn a_new_attempt_in_the_same_phase_is_an_event() {
        let event = event_for(
            Some(&status(Phase::Investigating, 1)),
            &status(Phase::Investigating, 2),
        )
        .expect("an event");
        assert_eq!(event.note.as_deref(), Some("session s-1, attempt 2"));
    }

    #[test]
    fn resolution_carries_the_report_summary() {
        let mut resolved = status(Phase::Resolved, 1);
        resolved.report = Some(Report {
            outcome: Outcome::Resolved,
            summary: "restarted redis".into(),
            root_cause: String::new(),
            actions: vec![],
            verification: String::new(),
        });
        let event = event_for(Some(&status(Phase::Investigating, 1)), &resolved).unwrap();
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (EventType::Normal, "Resolved")
        );
        assert_eq!(event.note.as_deref(), Some("restarted redis"));
    }

    #[test]
    fn failures_are_warnings_with_the_condition_reason() {
        let failed = with_condition(
            status(Phase::Unresolved, 1),
            ConditionType::Resolved,
            "TokenBudgetExhausted",
            "",
        );
        let event = event_for(Some(&status(Phase::Investigating, 1)), &failed).unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "TokenBudgetExhausted");
        assert_eq!(event.action, "EndSession");
    }

    #[test]
    fn a_failed_session_is_a_warning_saying_the_cause() {
        let cause = "the model API failed: HTTP 401 authentication_error: invalid x-api-key";
        let failed = with_condition(
            status(Phase::Failed, 1),
            ConditionType::Resolved,
            "ModelApiFailed",
            cause,
        );
        let event = event_for(Some(&status(Phase::Investigating, 1)), &failed).unwrap();
        assert_eq!(
            (
                event.type_,
                event.reason.as_str(),
                event.action.as_str(),
                event.note.as_deref()
            ),
            (
                EventType::Warning,
                "ModelApiFailed",
                "EndSession",
                Some(cause)
            )
        );
    }

    #[test]
    fn an_invalid_spec_is_a_warning_saying_what_is_wrong() {
        let mut invalid = IncidentStatus {
            phase: Phase::Failed,
            ..IncidentStatus::default()
        };
        invalid = with_condition(
            invalid,
            ConditionType::Valid,
            "InvalidSpec",
            "spec.title is required",
        );
        invalid = with_condition(invalid, ConditionType::Resolved, "InvalidSpec", "");
        let event = event_for(None, &invalid).unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(
            (event.action.as_str(), event.reason.as_str()),
            ("ValidateSpec", "InvalidSpec")
        );
        assert_eq!(event.note.as_deref(), Some("spec.title is required"));
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        let mut resolved = status(Phase::Resolved, 1);
        resolved.report = Some(Report {
            outcome: Outcome::Resolved,
            summary: "é".repeat(1000),
            root_cause: String::new(),
            actions: vec![],
            verification: String::new(),
        });
        let note = event_for(None, &resolved).unwrap().note.unwrap();
        assert!(note.len() <= NOTE_LIMIT, "{}", note.len());
        assert!(note.ends_with("..."));
    }
}
