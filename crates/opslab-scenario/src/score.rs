//! How one case's session is scored, from what was observed of it. Pure: the case, the agent's
//! report, the oracle's verdicts and the commands run, in; the scores out.
//!
//! - detected: the report's summary or root cause matches the case's `detect` pattern;
//! - localised: the report's root cause names the faulty component (its role, its container's name
//!   or one of its aliases, as a whole word), and each other one the case says is faulty too;
//! - root cause: every one of the case's `mechanism` patterns matches the report's root cause;
//! - mitigated: the oracle passes after the session;
//! - durable: the oracle passes again after a wait, and again after the case's components are
//!   restarted, so that a fix of the symptom alone fails;
//! - false positive: on a control, the session ran a state-changing command
//!   ([`super::classify::changes_state`]); on a case naming `healthy` components (the members of
//!   a cluster that still holds its quorum), a state-changing command named one of them.
//!
//! The matching is deterministic on purpose: the same report always scores the same.

use serde::{Deserialize, Serialize};

use super::{Case, Names, classify};
use opslab::incident::Report;

/// What was observed of one session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The agent's report, when it sent one.
    pub report: Option<Report>,
    /// The oracle passed after the session.
    pub mitigated: bool,
    /// The durability check's verdict; `None` when it was not run (nothing to keep).
    pub durable: Option<bool>,
    /// Every command the session ran, in order.
    pub commands: Vec<String>,
}

/// One case's scores. `None` means "does not apply": a control has no component to localise and no
/// mechanism, and only a control can have a false positive.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scores {
    pub detected: bool,
    pub localised: Option<bool>,
    pub root_cause: Option<bool>,
    pub mitigated: bool,
    pub durable: Option<bool>,
    pub false_positive: Option<bool>,
}

/// A way a session fails its case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    NotDetected,
    NotLocalised,
    WrongRootCause,
    NotMitigated,
    NotDurable,
    FalsePositive,
}

impl Failure {
    /// Its name, as the JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Failure::NotDetected => "not-detected",
            Failure::NotLocalised => "not-localised",
            Failure::WrongRootCause => "wrong-root-cause",
            Failure::NotMitigated => "not-mitigated",
            Failure::NotDurable => "not-durable",
            Failure::FalsePositive => "false-positive",
        }
    }
}

impl Scores {
    /// Every way the session failed its case, in the order the scores are listed.
    pub fn failures(&self) -> Vec<Failure> {
        let mut failures = Vec::new();
        if !self.detected {
            failures.push(Failure::NotDetected);
        }
        if self.localised == Some(false) {
            failures.push(Failure::NotLocalised);
        }
        if self.root_cause == Some(false) {
            failures.push(Failure::WrongRootCause);
        }
        if !self.mitigated {
            failures.push(Failure::NotMitigated);
        }
        // Not durable when checked and failed; unchecked only happens when not mitigated.
        if self.mitigated && self.durable != Some(true) {
            failures.push(Failure::NotDurable);
        }
        if self.false_positive == Some(true) {
            failures.push(Failure::FalsePositive);
        }
        failures
    }

    /// The case is passed when it failed in no way.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

/// Scores one session of `case`, whose stack had `names`.
pub fn score(case: &Case, names: &Names, observed: &Observed) -> Scores {
    let report = observed.report.as_ref();
    let root_cause = report.map_or("", |report| report.root_cause.as_str());
    let fault = case.spec.fault;
    Scores {
        detected: report.is_some_and(|report| case.detected_by(report)),
        localised: fault.then(|| names_component(case, names, root_cause)),
        root_cause: fault.then(|| matches_mechanism(case, root_cause)),
        mitigated: observed.mitigated,
        durable: if observed.mitigated {
            observed.durable
        } else {
            None
        },
        false_positive: false_positive(case, names, &observed.commands),
    }
}

/// Whether the session changed what it should have left alone: anything, on a control; a healthy
/// component the case names, on a fault case. `None` where neither applies.
fn false_positive(case: &Case, names: &Names, commands: &[String]) -> Option<bool> {
    if !case.spec.fault {
        return Some(
            commands
                .iter()
                .any(|command| classify::changes_state(command)),
        );
    }
    if case.spec.healthy.is_empty() {
        return None;
    }
    Some(commands.iter().any(|command| {
        classify::changing_steps(command).iter().any(|step| {
            case.spec
                .healthy
                .iter()
                .any(|component| names_word(&component_words(component, &[], names), step))
        })
    }))
}

/// The words that name a component in a report, besides its container's name.
fn role_words(component: &str) -> &'static [&'static str] {
    match component {
        "web" => &["web", "nginx", "front"],
        "api" => &["api"],
        "store" => &["store", "redis"],
        "kv" => &["kv", "key-value service"],
        _ => &[],
    }
}

/// Every word naming `component`: itself, its role, `aliases` and its container's name.
fn component_words(component: &str, aliases: &[String], names: &Names) -> Vec<String> {
    let mut words: Vec<String> = vec![component.to_string()];
    words.extend(role_words(component).iter().map(|w| w.to_string()));
    words.extend(aliases.iter().cloned());
    words.extend(names.container(component));
    words
}

/// Whether `text` holds one of `words` as a whole word (ignoring case).
fn names_word(words: &[String], text: &str) -> bool {
    let alternatives: Vec<String> = words.iter().map(|word| regex::escape(word)).collect();
    regex::RegexBuilder::new(&format!(r"\b({})\b", alternatives.join("|")))
        .case_insensitive(true)
        .build()
        .is_ok_and(|pattern| pattern.is_match(text))
}

/// Whether `text` names the case's component as a whole word, and each other faulty one (those
/// by their own names; the aliases belong to the main one).
pub fn names_component(case: &Case, names: &Names, text: &str) -> bool {
    let Some(component) = &case.spec.component else {
        return false;
    };
    names_word(&component_words(component, &case.spec.aliases, names), text)
        && case
            .spec
            .also
            .iter()
            .all(|other| names_word(&component_words(other, &[], names), text))
}

/// Whether every one of the case's mechanism patterns matches `text` (ignoring case).
pub fn matches_mechanism(case: &Case, text: &str) -> bool {
    !case.spec.mechanism.is_empty()
        && case.spec.mechanism.iter().all(|pattern| {
            regex::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .is_ok_and(|pattern| pattern.is_match(text))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaseSpec, ScriptedReport, WrongKind};
    use opslab::incident::Outcome;
    use std::path::PathBuf;

    fn case(fault: bool) -> Case {
        Case {
            name: "c".into(),
            dir: PathBuf::new(),
            spec: CaseSpec {
                summary: "s".into(),
                fault,
                stack: crate::Stack::Demo,
                detect: "stopped|healthy".into(),
                component: fault.then(|| "store".to_string()),
                aliases: vec!["data store".into()],
                also: vec![],
                healthy: vec![],
                mechanism: if fault {
                    vec!["stopped|exited".into()]
                } else {
                    vec![]
                },
                restart: None,
                commands: vec![],
                report: ScriptedReport {
                    outcome: Outcome::Resolved,
                    summary: String::new(),
                    root_cause: String::new(),
                    actions: vec![],
                    verification: String::new(),
                },
                wrong: vec![],
            },
            incident: String::new(),
        }
    }

    fn report(root_cause: &str) -> Option<Report> {
        Some(Report {
            outcome: Outcome::Resolved,
            summary: root_cause.into(),
            root_cause: root_cause.into(),
            actions: vec![],
            verification: String::new(),
        })
    }

    #[test]
    fn a_right_fix_passes_every_score() {
        let observed = Observed {
            report: report("The data store container was stopped."),
            mitigated: true,
            durable: Some(true),
            commands: vec!["docker start x-store".into()],
        };
        let scores = score(&case(true), &Names::new("x"), &observed);
        assert_eq!(
            scores,
            Scores {
                detected: true,
                localised: Some(true),
                root_cause: Some(true),
                mitigated: true,
                durable: Some(true),
                false_positive: None,
            }
        );
        assert!(scores.passed());
    }

    #[test]
    fn each_kind_of_failure_is_told_apart() {
        let names = Names::new("x");
        let fault = case(true);
        let base = Observed {
            report: report("The data store container was stopped."),
            mitigated: true,
            durable: Some(true),
            commands: vec![],
        };
        let failures = |observed: Observed, case: &Case| score(case, &names, &observed).failures();
        // The container's name counts as naming it; another component does not.
        let named = Observed {
            report: report("x-store was stopped"),
            ..base.clone()
        };
        assert_eq!(failures(named, &fault), vec![]);
        let wrong_component = Observed {
            report: report("The API container was stopped."),
            ..base.clone()
        };
        assert_eq!(
            failures(wrong_component, &fault),
            vec![Failure::NotLocalised]
        );
        // "restore" holds "store", but not as a word.
        let vague = Observed {
            report: report("I had to restore service; it was stopped."),
            ..base.clone()
        };
        assert_eq!(failures(vague, &fault), vec![Failure::NotLocalised]);
        let wrong_mechanism = Observed {
            report: report("The data store ran out of memory; it was restarted."),
            ..base.clone()
        };
        assert_eq!(
            failures(wrong_mechanism, &fault),
            vec![Failure::NotDetected, Failure::WrongRootCause]
        );
        let symptom_only = Observed {
            durable: Some(false),
            ..base.clone()
        };
        assert_eq!(failures(symptom_only, &fault), vec![Failure::NotDurable]);
        let unfixed = Observed {
            mitigated: false,
            durable: Some(true),
            ..base.clone()
        };
        let scores = score(&fault, &names, &unfixed);
        assert_eq!(scores.durable, None, "durability needs a mitigation first");
        assert_eq!(scores.failures(), vec![Failure::NotMitigated]);
        let no_report = Observed {
            report: None,
            ..base.clone()
        };
        assert_eq!(
            failures(no_report, &fault),
            vec![
                Failure::NotDetected,
                Failure::NotLocalised,
                Failure::WrongRootCause
            ]
        );
        // A control: looking is fine, any change is a false positive, and nothing else applies.
        let control = case(false);
        let looked = Observed {
            report: report("Everything is healthy."),
            commands: vec!["docker ps".into(), "curl -sS http://web:8080/".into()],
            ..base.clone()
        };
        let scores = score(&control, &names, &looked);
        assert_eq!(scores.localised, None);
        assert_eq!(scores.root_cause, None);
        assert_eq!(scores.false_positive, Some(false));
        assert!(scores.passed());
        let restarted = Observed {
            report: report("Everything is healthy."),
            commands: vec!["docker ps".into(), "docker restart x-api".into()],
            ..base
        };
        assert_eq!(failures(restarted, &control), vec![Failure::FalsePositive]);
    }

    #[test]
    fn a_cluster_case_needs_every_faulty_member_named_and_the_healthy_ones_untouched() {
        let names = Names::new("x");
        let mut stopped = case(true);
        stopped.spec.stack = crate::Stack::Etcd;
        stopped.spec.component = Some("etcd2".into());
        stopped.spec.aliases = vec![];
        stopped.spec.healthy = vec!["etcd1".into(), "etcd3".into()];
        let observed = |root_cause: &str, commands: &[&str]| Observed {
            report: report(root_cause),
            mitigated: true,
            durable: Some(true),
            commands: commands.iter().map(|c| c.to_string()).collect(),
        };
        // Reading through a healthy member is fine; starting the stopped one is the fix.
        let right = observed(
            "etcd2 was stopped",
            &[
                "docker exec x-etcd1 etcdctl --endpoints=http://etcd1:2379 endpoint status",
                "docker start x-etcd2",
            ],
        );
        let scores = score(&stopped, &names, &right);
        assert_eq!(scores.false_positive, Some(false));
        assert!(scores.passed(), "{:?}", scores.failures());
        let restarted_all = observed(
            "etcd2 was stopped",
            &["docker restart x-etcd1 x-etcd2 x-etcd3"],
        );
        assert_eq!(
            score(&stopped, &names, &restarted_all).failures(),
            vec![Failure::FalsePositive]
        );
        // Two members down: the root cause names both.
        let mut lost = stopped.clone();
        lost.spec.healthy = vec![];
        lost.spec.also = vec!["etcd3".into()];
        let both = observed(
            "etcd2 and x-etcd3 were stopped",
            &["docker start x-etcd2 x-etcd3"],
        );
        assert!(score(&lost, &names, &both).passed());
        assert_eq!(score(&lost, &names, &both).false_positive, None);
        let one = observed("etcd2 was stopped", &["docker start x-etcd2 x-etcd3"]);
        assert_eq!(
            score(&lost, &names, &one).failures(),
            vec![Failure::NotLocalised]
        );
        assert_eq!(lost.restarts(&names), vec!["x-etcd2", "x-etcd3"]);
    }

    /// Every shipped case's wrong replays score as the failure they stand for, judged on their own
    /// report and commands (the symptom-only fixes need the real engine to fail their durability
    /// check: tests/suite/scenarios.rs runs them).
    #[test]
    fn the_shipped_wrong_replays_fail_as_they_should() {
        let dir = crate::shipped_scenarios();
        let names = Names::new("t");
        let mut kinds = std::collections::HashSet::new();
        for case in crate::load_all(&dir).unwrap() {
            let (commands, right) = case.script(&names);
            let observed = Observed {
                report: Some(right),
                mitigated: true,
                durable: Some(true),
                commands: commands.into_iter().map(|c| c.command).collect(),
            };
            let scores = score(&case, &names, &observed);
            assert!(scores.passed(), "{}: {:?}", case.name, scores.failures());
            if case.spec.fault {
                assert!(
                    !case.spec.wrong.is_empty(),
                    "{}: a fault case needs at least one wrong replay",
                    case.name
                );
            }
            for wrong in &case.spec.wrong {
                kinds.insert(wrong.kind);
                let (commands, report) = case.wrong_script(wrong, &names);
                // Played on the engine, a symptom-only fix mitigates but does not last.
                let observed = Observed {
                    report: Some(report),
                    mitigated: true,
                    durable: Some(wrong.kind != WrongKind::SymptomOnly),
                    commands: commands.into_iter().map(|c| c.command).collect(),
                };
                let failures = score(&case, &names, &observed).failures();
                assert!(
                    failures.contains(&wrong.kind.failure()),
                    "{} ({:?}): {failures:?}",
                    case.name,
                    wrong.kind
                );
                if wrong.kind == WrongKind::SymptomOnly {
                    // It names the right thing: only durability catches it.
                    assert_eq!(failures, vec![Failure::NotDurable], "{}", case.name);
                }
            }
        }
        for kind in [
            WrongKind::WrongComponent,
            WrongKind::WrongMechanism,
            WrongKind::HarmfulChange,
            WrongKind::SymptomOnly,
        ] {
            assert!(
                kinds.contains(&kind),
                "no shipped case has a {kind:?} replay"
            );
        }
    }
}
