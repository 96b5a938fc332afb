//! The reconciler's decisions, pure: from what is observed to what to do and what the status says.

use crate::audit::{SessionRecord, SessionState};
use crate::incident::{
    Condition, ConditionStatus, ConditionType, IncidentStatus, LastCommand, Phase, Requests, Tokens,
};

/// What the reconciler sees of one Incident.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The spec generation.
    pub generation: i64,
    /// The Incident's newest session in the store.
    pub latest: Option<&'a SessionRecord>,
    /// Whether a session task for the Incident is alive in this process.
    pub has_task: bool,
    /// Whether another session may start now.
    pub slot_free: bool,
    /// The retry and cancel requests the Incident carries now.
    pub requests: &'a Requests,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a new session, the given attempt.
    Start { attempt: u32 },
    /// Wait for a free session slot.
    Queue { attempt: u32 },
    /// The store has a running session with no task here (the controller restarted): continue it.
    Resume,
    /// The spec changed while the session runs: tell the agent.
    UpdateTicket,
    /// A person asked for the running session to stop (the value of the cancel request).
    Cancel { request: String },
    /// The session runs; report its progress.
    Observe,
    /// The last session's task is still finishing its clean-up: look again when it is gone.
    Wait,
    /// The last session ended and the spec has not changed since: nothing to do.
    Idle,
}

pub fn decide(observed: &Observed<'_>) -> Decision {
    let start_or_queue = |attempt| {
        if observed.slot_free {
            Decision::Start { attempt }
        } else {
            Decision::Queue { attempt }
        }
    };
    match observed.latest {
        Some(session) if session.state == SessionState::Running => {
            if !observed.has_task {
                Decision::Resume
            } else if let Some(request) =
                new_request(&observed.requests.cancel, &session.requests.cancel)
            {
                Decision::Cancel {
                    request: request.clone(),
                }
            } else if observed.generation > session.generation {
                Decision::UpdateTicket
            } else {
                Decision::Observe
            }
        }
        Some(_) | None if observed.has_task => Decision::Wait,
        Some(session) => {
            let retry = new_request(&observed.requests.retry, &session.requests.retry);
            if observed.generation > session.generation || retry.is_some() {
                start_or_queue(session.attempt + 1)
            } else {
                Decision::Idle
            }
        }
        None => start_or_queue(1),
    }
}

/// A request that the latest session did not start with: it is to be honoured.
fn new_request<'a>(asked: &'a Option<String>, seen: &Option<String>) -> Option<&'a String> {
    asked.as_ref().filter(|asked| Some(*asked) != seen.as_ref())
}

/// The status to write, from the decision and the session it concerns. `previous` keeps the
/// conditions' transition times; `now` is RFC 3339.
pub fn status(
    previous: Option<&IncidentStatus>,
    generation: i64,
    decision: &Decision,
    session: Option<&SessionRecord>,
    last_command: Option<LastCommand>,
    active_sessions: usize,
    now: &str,
) -> IncidentStatus {
    let mut status = match (decision, session) {
        (Decision::Queue { attempt }, _) => IncidentStatus {
            phase: Phase::Queued,
            attempt: *attempt,
            ..IncidentStatus::default()
        },
        (_, Some(session)) => from_session(session, last_command),
        (_, None) => IncidentStatus::default(),
    };
    status.observed_generation = Some(generation);
    let (active, resolved) = match (decision, status.phase) {
        (Decision::Queue { .. }, _) => (
            condition(
                ConditionStatus::False,
                "Queued",
                format!("waiting for a free session slot ({active_sessions} sessions running)"),
            ),
            condition(ConditionStatus::Unknown, "Queued", String::new()),
        ),
        (Decision::Cancel { request }, _) => (
            condition(
                ConditionStatus::True,
                "Cancelling",
                format!("the session is being cancelled on request: {request}"),
            ),
            condition(ConditionStatus::Unknown, "Cancelling", String::new()),
        ),
        (_, Phase::Investigating | Phase::Pending | Phase::Queued) => {
            // Where the session has something to say (the model API being retried), it says it.
            let message = session
                .and_then(|session| session.message.clone())
                .unwrap_or_else(|| "an agent session is running".into());
            (
                condition(ConditionStatus::True, "Investigating", message),
                condition(ConditionStatus::Unknown, "Investigating", String::new()),
            )
        }
        (_, phase) => {
            let reason = session
                .and_then(|session| session.reason.clone())
                .unwrap_or_else(|| phase.to_string());
            // The cause in words: the session's own (an API error, a missing network, a budget
            // with its figure), else the phase.
            let cause = session
                .and_then(|session| session.message.clone())
                .filter(|message| !message.is_empty())
                .unwrap_or_else(|| format!("the session ended: {phase}"));
            let outcome = status
                .report
                .as_ref()
                .map_or_else(|| cause.clone(), |report| report.summary.clone());
            let resolved = ConditionStatus::from(phase == Phase::Resolved);
            (
                condition(ConditionStatus::False, &reason, cause),
                condition(resolved, &reason, outcome),
            )
        }
    };
    let valid = condition(ConditionStatus::True, "Valid", "the spec is valid".into());
    let conditions = [
        (ConditionType::Valid, valid),
        (ConditionType::SessionActive, active),
        (ConditionType::Resolved, resolved),
    ];
    status.conditions = merge_conditions(previous, conditions, generation, now);
    status
}

/// While the audit store fails, a running session waits (nothing it does could be recorded), and
/// its status says so. Pure; the reason keeps `lastTransitionTime`, which moves with the status.
pub fn with_store_problem(mut status: IncidentStatus, problem: Option<&str>) -> IncidentStatus {
    if let Some(problem) = problem
        && status.phase == Phase::Investigating
        && let Some(active) = status
            .conditions
            .iter_mut()
            .find(|condition| condition.type_ == ConditionType::SessionActive)
    {
        active.reason = "StoreUnavailable".into();
        active.message = format!("{problem}; the session waits and resumes when it works");
    }
    status
}

/// The status of an Incident whose spec is invalid: it fails alone, saying why.
pub fn invalid_status(
    previous: Option<&IncidentStatus>,
    generation: i64,
    message: &str,
    now: &str,
) -> IncidentStatus {
    let mut status = IncidentStatus {
        phase: Phase::Failed,
        observed_generation: Some(generation),
        ..IncidentStatus::default()
    };
    let valid = condition(ConditionStatus::False, "InvalidSpec", message.to_string());
    let active = condition(
        ConditionStatus::False,
        "InvalidSpec",
        "no session runs for an invalid spec".into(),
    );
    let resolved = condition(ConditionStatus::Unknown, "InvalidSpec", String::new());
    let conditions = [
        (ConditionType::Valid, valid),
        (ConditionType::SessionActive, active),
        (ConditionType::Resolved, resolved),
    ];
    status.conditions = merge_conditions(previous, conditions, generation, now);
    status
}

fn from_session(session: &SessionRecord, last_command: Option<LastCommand>) -> IncidentStatus {
    IncidentStatus {
        phase: session.current_phase(),
        observed_generation: None,
        session_id: Some(session.id.clone()),
        attempt: session.attempt,
        started_at: Some(session.started_at),
        finished_at: session.finished_at,
        turns: session.turns,
        commands: session.commands,
        last_command,
        tokens: Tokens {
            input: session.input_tokens,
            output: session.output_tokens,
            cache_write: session.cache_write_tokens,
            cache_read: session.cache_read_tokens,
        },
        cost_usd: session.cost_usd,
        report: session.report.clone(),
        conditions: Vec::new(),
    }
}

/// (status, reason, message) of a condition, before its type and times are set.
type ConditionParts = (ConditionStatus, String, String);

fn condition(status: ConditionStatus, reason: &str, message: String) -> ConditionParts {
    (status, reason.to_string(), message)
}

/// Builds the conditions, keeping `lastTransitionTime` from `previous` unless the status changed.
fn merge_conditions(
    previous: Option<&IncidentStatus>,
    conditions: [(ConditionType, ConditionParts); 3],
    generation: i64,
    now: &str,
) -> Vec<Condition> {
    conditions
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            let before = previous.and_then(|previous| previous.condition(type_.clone()));
            let last_transition_time = match before {
                Some(before) if before.status == status => before.last_transition_time.clone(),
                Some(_) | None => now.to_string(),
            };
            Condition {
                type_,
                status,
                reason,
                message,
                last_transition_time,
                observed_generation: Some(generation),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Outcome, Report};

    fn session(state: SessionState, generation: i64) -> SessionRecord {
        SessionRecord {
            id: "s1".into(),
            incident_uid: "u".into(),
            incident_namespace: "default".into(),
            incident_name: "x".into(),
            attempt: 1,
            generation,
            state,
            phase: if state == SessionState::Running {
                Phase::Investigating
            } else {
                Phase::Resolved
            },
            outcome: None,
            reason: (state != SessionState::Running).then(|| "Reported".to_string()),
            started_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            finished_at: None,
            turns: 3,
            commands: 2,
            input_tokens: 100,
            output_tokens: 10,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            report: None,
            cost_usd: 0.0,
            message: None,
            requests: Requests::default(),
        }
    }

    const NO_REQUESTS: &Requests = &Requests {
        retry: None,
        cancel: None,
    };

    fn observed(
        latest: Option<&SessionRecord>,
        generation: i64,
        has_task: bool,
        slot_free: bool,
    ) -> Observed<'_> {
        Observed {
            generation,
            latest,
            has_task,
            slot_free,
            requests: NO_REQUESTS,
        }
    }

    #[test]
    fn a_new_incident_starts_or_queues() {
        assert_eq!(
            decide(&observed(None, 1, false, true)),
            Decision::Start { attempt: 1 }
        );
        assert_eq!(
            decide(&observed(None, 1, false, false)),
            Decision::Queue { attempt: 1 }
        );
    }

    #[test]
    fn a_running_session_is_observed_updated_or_resumed() {
        let running = session(SessionState::Running, 1);
        assert_eq!(
            decide(&observed(Some(&running), 1, true, false)),
            Decision::Observe
        );
        assert_eq!(
            decide(&observed(Some(&running), 2, true, false)),
            Decision::UpdateTicket
        );
        assert_eq!(
            decide(&observed(Some(&running), 1, false, false)),
            Decision::Resume
        );
    }

    #[test]
    fn a_finished_session_is_idle_until_the_spec_changes() {
        let finished = session(SessionState::Finished, 1);
        assert_eq!(
            decide(&observed(Some(&finished), 1, false, true)),
            Decision::Idle
        );
        assert_eq!(
            decide(&observed(Some(&finished), 2, false, true)),
            Decision::Start { attempt: 2 }
        );
        assert_eq!(
            decide(&observed(Some(&finished), 2, false, false)),
            Decision::Queue { attempt: 2 }
        );
        assert_eq!(
            decide(&observed(Some(&finished), 2, true, true)),
            Decision::Wait
        );
    }

    #[test]
    fn the_status_follows_the_session() {
        let mut finished = session(SessionState::Finished, 1);
        finished.report = Some(Report {
            outcome: Outcome::Resolved,
            summary: "restarted redis".into(),
            root_cause: String::new(),
            actions: vec![],
            verification: String::new(),
        });
        let status = status(None, 1, &Decision::Idle, Some(&finished), None, 0, "T1");
        assert_eq!(status.phase, Phase::Resolved);
        assert_eq!(
            (status.turns, status.commands, status.tokens.total()),
            (3, 2, 110)
        );
        let resolved = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Resolved)
            .unwrap();
        assert_eq!(
            resolved,
            &Condition {
                type_: ConditionType::Resolved,
                status: ConditionStatus::True,
                reason: "Reported".into(),
                message: "restarted redis".into(),
                last_transition_time: "T1".into(),
                observed_generation: Some(1),
            }
        );
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let running = session(SessionState::Running, 1);
        let first = status(None, 1, &Decision::Observe, Some(&running), None, 1, "T1");
        let second = status(
            Some(&first),
            1,
            &Decision::Observe,
            Some(&running),
            None,
            1,
            "T2",
        );
        assert!(
            second
                .conditions
                .iter()
                .all(|c| c.last_transition_time == "T1")
        );
        let finished = session(SessionState::Finished, 1);
        let third = status(
            Some(&second),
            1,
            &Decision::Idle,
            Some(&finished),
            None,
            0,
            "T3",
        );
        let active = third
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::SessionActive)
            .unwrap();
        assert_eq!(
            (active.status, active.last_transition_time.as_str()),
            (ConditionStatus::False, "T3")
        );
        let valid = third
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Valid)
            .unwrap();
        assert_eq!(valid.last_transition_time, "T1");
    }

    #[test]
    fn a_queued_incident_says_why() {
        let status = status(None, 1, &Decision::Queue { attempt: 1 }, None, None, 4, "T");
        assert_eq!(status.phase, Phase::Queued);
        let active = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::SessionActive)
            .unwrap();
        assert_eq!(
            active.message,
            "waiting for a free session slot (4 sessions running)"
        );
    }

    fn with_requests<'a>(observed: Observed<'a>, requests: &'a Requests) -> Observed<'a> {
        Observed {
            requests,
            ..observed
        }
    }

    fn requests(retry: Option<&str>, cancel: Option<&str>) -> Requests {
        Requests {
            retry: retry.map(String::from),
            cancel: cancel.map(String::from),
        }
    }

    #[test]
    fn a_retry_request_starts_one_new_attempt_of_an_ended_incident() {
        let mut finished = session(SessionState::Finished, 1);
        let asked = requests(Some("by alice"), None);
        assert_eq!(
            decide(&with_requests(
                observed(Some(&finished), 1, false, true),
                &asked
            )),
            Decision::Start { attempt: 2 }
        );
        assert_eq!(
            decide(&with_requests(
                observed(Some(&finished), 1, false, false),
                &asked
            )),
            Decision::Queue { attempt: 2 }
        );
        // The attempt it started recorded the request: it is not honoured twice.
        finished.requests = asked.clone();
        assert_eq!(
            decide(&with_requests(
                observed(Some(&finished), 1, false, true),
                &asked
            )),
            Decision::Idle
        );
        // A running session is not restarted by it.
        let running = session(SessionState::Running, 1);
        assert_eq!(
            decide(&with_requests(
                observed(Some(&running), 1, true, true),
                &asked
            )),
            Decision::Observe
        );
    }

    #[test]
    fn a_cancel_request_stops_only_the_session_running_when_it_is_made() {
        let mut running = session(SessionState::Running, 1);
        let asked = requests(None, Some("by bob: wrong ticket"));
        assert_eq!(
            decide(&with_requests(
                observed(Some(&running), 1, true, true),
                &asked
            )),
            Decision::Cancel {
                request: "by bob: wrong ticket".into()
            }
        );
        // A session that started with the request already there (a later attempt) runs on.
        running.requests = asked.clone();
        assert_eq!(
            decide(&with_requests(
                observed(Some(&running), 1, true, true),
                &asked
            )),
            Decision::Observe
        );
        // An ended Incident is not restarted by a cancel request.
        let finished = session(SessionState::Finished, 1);
        assert_eq!(
            decide(&with_requests(
                observed(Some(&finished), 1, false, true),
                &asked
            )),
            Decision::Idle
        );
    }

    #[test]
    fn a_failed_session_says_why_in_both_conditions() {
        let mut failed = session(SessionState::Finished, 1);
        failed.phase = Phase::Failed;
        failed.reason = Some("ModelApiFailed".into());
        failed.message =
            Some("the model API failed: HTTP 401 authentication_error: invalid x-api-key".into());
        let status = status(None, 1, &Decision::Idle, Some(&failed), None, 0, "T");
        let reasons: Vec<(&str, &str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                )
            })
            .collect();
        let cause = "the model API failed: HTTP 401 authentication_error: invalid x-api-key";
        assert_eq!(
            reasons,
            vec![
                ("Valid", "True", "Valid", "the spec is valid"),
                ("SessionActive", "False", "ModelApiFailed", cause),
                ("Resolved", "False", "ModelApiFailed", cause),
            ]
        );
    }

    #[test]
    fn a_running_session_says_what_it_waits_for() {
        let mut running = session(SessionState::Running, 1);
        running.message = Some("waiting for the model API: retry 3 of 5 in 4.0 s, after: transport: connection refused".into());
        let status = status(None, 1, &Decision::Observe, Some(&running), None, 1, "T");
        let active = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::SessionActive)
            .unwrap();
        assert_eq!(
            (active.status, active.message.as_str()),
            (
                ConditionStatus::True,
                "waiting for the model API: retry 3 of 5 in 4.0 s, after: transport: connection refused"
            )
        );
    }

    #[test]
    fn a_failing_store_shows_in_a_running_session_status() {
        let running = session(SessionState::Running, 1);
        let investigating = status(None, 1, &Decision::Observe, Some(&running), None, 1, "T");
        let problem =
            "the audit store is failing since 2026-12-02 04:00:00 UTC (3 errors): disk full";
        let waiting = with_store_problem(investigating.clone(), Some(problem));
        let active = waiting
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::SessionActive)
            .unwrap();
        assert_eq!(active.reason, "StoreUnavailable");
        assert!(active.message.starts_with(problem), "{}", active.message);
        assert_eq!(
            with_store_problem(investigating.clone(), None),
            investigating
        );
        // An ended Incident is not touched: its session no longer needs the store.
        let finished = session(SessionState::Finished, 1);
        let resolved = status(None, 1, &Decision::Idle, Some(&finished), None, 0, "T");
        assert_eq!(
            with_store_problem(resolved.clone(), Some(problem)),
            resolved
        );
    }
}
