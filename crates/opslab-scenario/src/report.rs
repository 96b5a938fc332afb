//! A scenario run's outcome per case and overall, as a table for a terminal, a Markdown table for
//! people and JSON for scripts. Pure.

use std::io::Write;

use serde::Serialize;

use super::score::{Failure, Scores};
use opslab::incident::Report;

/// What happened in one case.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CaseResult {
    pub case: String,
    /// What breaks, from the case.
    pub summary: String,
    /// Whether the case breaks something (false for the control).
    pub fault: bool,
    /// The Incident's final phase (`Resolved`, `Unresolved`, `Failed`…), when the session ended.
    pub phase: Option<String>,
    /// The agent's reported outcome.
    pub outcome: Option<String>,
    /// The agent's report named the fault.
    pub detected: bool,
    /// The oracle passed after the session (and, for the control, nothing was changed).
    pub fixed: bool,
    /// The oracle passed after the session.
    pub mitigated: bool,
    /// The oracle passed again after a wait and a restart; `None` when not checked.
    pub durable: Option<bool>,
    /// Why the durability check failed, when it did.
    pub not_durable_because: Option<String>,
    /// Every score of the case (see `score`).
    pub scores: Scores,
    /// The judge model's verdict on the root cause, when one was asked (`--judge-model`): the
    /// root-cause score is then its verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<super::judge::Verdict>,
    /// Failed in no way.
    pub passed: bool,
    /// How it failed, when it did.
    pub failures: Vec<Failure>,
    /// The model's answers in the session.
    pub turns: u32,
    /// The agent's report, when it sent one.
    pub report: Option<Report>,
    /// Every command of the session, for the scoring (the JSON lists the state-changing ones).
    #[serde(skip)]
    pub all_commands: Vec<String>,
    /// From filing the Incident to the oracle passing, in seconds.
    pub time_to_fix_seconds: Option<f64>,
    /// How long the session ran, in seconds.
    pub session_seconds: Option<f64>,
    pub commands: u32,
    /// The commands that may have changed state, in order.
    pub state_changing_commands: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub session_id: Option<String>,
    /// Why the case could not be run or judged, when it could not.
    pub error: Option<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunReport {
    /// `replay` (the cases' own commands) or the provider and model that drove the sessions.
    pub driver: String,
    /// The audit store holding every session of the run.
    pub store: String,
    pub cases: Vec<CaseResult>,
    /// The scores over every case.
    pub summary: Summary,
}

/// The scores over a run's cases: counts of cases with each score, and sums.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub cases: usize,
    pub passed: usize,
    /// Cases with a fault, and how many of them scored each.
    pub fault_cases: usize,
    pub detected: usize,
    pub localised: usize,
    pub root_cause: usize,
    pub mitigated: usize,
    pub durable: usize,
    /// No-fault controls.
    pub controls: usize,
    /// Cases checked for false positives (the controls, and fault cases naming healthy
    /// components), and how many of them changed what they should have left alone.
    pub guarded: usize,
    pub false_positives: usize,
    pub turns: u64,
    pub commands: u64,
    pub state_changing_commands: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// The mean time from filing to the oracle passing, over the mitigated cases.
    pub mean_time_to_mitigate_seconds: Option<f64>,
}

impl Summary {
    pub fn of(cases: &[CaseResult]) -> Summary {
        let faults: Vec<&CaseResult> = cases.iter().filter(|case| case.fault).collect();
        let count = |pick: &dyn Fn(&Scores) -> bool| {
            faults.iter().filter(|case| pick(&case.scores)).count()
        };
        let times: Vec<f64> = cases
            .iter()
            .filter_map(|case| case.time_to_fix_seconds)
            .collect();
        Summary {
            cases: cases.len(),
            passed: cases.iter().filter(|case| case.passed).count(),
            fault_cases: faults.len(),
            detected: count(&|s| s.detected),
            localised: count(&|s| s.localised == Some(true)),
            root_cause: count(&|s| s.root_cause == Some(true)),
            mitigated: count(&|s| s.mitigated),
            durable: count(&|s| s.durable == Some(true)),
            controls: cases.len() - faults.len(),
            guarded: cases
                .iter()
                .filter(|case| case.scores.false_positive.is_some())
                .count(),
            false_positives: cases
                .iter()
                .filter(|case| case.scores.false_positive == Some(true))
                .count(),
            turns: cases.iter().map(|case| u64::from(case.turns)).sum(),
            commands: cases.iter().map(|case| u64::from(case.commands)).sum(),
            state_changing_commands: cases
                .iter()
                .map(|case| case.state_changing_commands.len() as u64)
                .sum(),
            input_tokens: cases.iter().map(|case| case.input_tokens).sum(),
            output_tokens: cases.iter().map(|case| case.output_tokens).sum(),
            cost_usd: cases.iter().map(|case| case.cost_usd).sum(),
            mean_time_to_mitigate_seconds: (!times.is_empty())
                .then(|| times.iter().sum::<f64>() / times.len() as f64),
        }
    }
}

impl RunReport {
    pub fn new(driver: String, store: String, cases: Vec<CaseResult>) -> RunReport {
        let summary = Summary::of(&cases);
        RunReport {
            driver,
            store,
            cases,
            summary,
        }
    }

    /// Every case passed (see `score`), and none failed to run.
    pub fn all_passed(&self) -> bool {
        self.cases
            .iter()
            .all(|case| case.passed && case.error.is_none())
    }

    /// The scores per case and overall, as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!("## Scenario run ({})\n\n", self.driver);
        out.push_str(
            "| case | passed | detected | localised | root cause | mitigated | durable | false positive | turns | commands | changes | tokens | cost (USD) | time to mitigate |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n");
        for case in &self.cases {
            let s = &case.scores;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {} |\n",
                case.case,
                mark(case.passed),
                mark(s.detected),
                maybe_mark(s.localised),
                maybe_mark(s.root_cause),
                mark(s.mitigated),
                maybe_mark(s.durable),
                maybe_mark(s.false_positive),
                case.turns,
                case.commands,
                case.state_changing_commands.len(),
                case.input_tokens + case.output_tokens,
                case.cost_usd,
                seconds(case.time_to_fix_seconds),
            ));
        }
        let t = &self.summary;
        out.push_str(&format!(
            "| **all** | {}/{} | {}/{f} | {}/{f} | {}/{f} | {}/{f} | {}/{f} | {}/{} | {} | {} | {} | {} | {:.4} | {} |\n",
            t.passed,
            t.cases,
            t.detected,
            t.localised,
            t.root_cause,
            t.mitigated,
            t.durable,
            t.false_positives,
            t.guarded,
            t.turns,
            t.commands,
            t.state_changing_commands,
            t.input_tokens + t.output_tokens,
            t.cost_usd,
            seconds(t.mean_time_to_mitigate_seconds),
            f = t.fault_cases,
        ));
        let failed: Vec<String> = self
            .cases
            .iter()
            .filter(|case| !case.failures.is_empty() || case.error.is_some())
            .map(|case| {
                let kinds: Vec<&str> = case.failures.iter().map(|f| f.name()).collect();
                format!(
                    "- {}: {}{}",
                    case.case,
                    kinds.join(", "),
                    case.error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                )
            })
            .collect();
        if !failed.is_empty() {
            out.push_str("\nFailures:\n\n");
            out.push_str(&failed.join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn table(&self) -> String {
        let mut out = tabwriter::TabWriter::new(Vec::new()).padding(2);
        let _ = writeln!(
            out,
            "CASE\tPASSED\tDETECTED\tLOCALISED\tROOT CAUSE\tFIXED\tDURABLE\tTIME TO FIX\tCOMMANDS\tCHANGES\tTOKENS\tPHASE\tOUTCOME"
        );
        for case in &self.cases {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                case.case,
                yes_no(case.passed),
                yes_no(case.detected),
                maybe(case.scores.localised),
                maybe(case.scores.root_cause),
                yes_no(case.fixed),
                maybe(case.scores.durable),
                case.time_to_fix_seconds
                    .map_or("-".to_string(), |s| format!("{s:.1}s")),
                case.commands,
                case.state_changing_commands.len(),
                case.input_tokens + case.output_tokens,
                case.phase.as_deref().unwrap_or("-"),
                case.outcome.as_deref().unwrap_or("-"),
            );
        }
        let mut text = String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default();
        for case in &self.cases {
            if let Some(error) = &case.error {
                text.push_str(&format!("{}: {error}\n", case.case));
            }
        }
        let t = &self.summary;
        text.push_str(&format!(
            "{} of {} cases passed; of {} faults: {} detected, {} localised, {} root cause, {} mitigated, {} durable; {} false positive(s) in {} case(s) with something to leave alone (driver: {}; store: {})\n",
            t.passed,
            t.cases,
            t.fault_cases,
            t.detected,
            t.localised,
            t.root_cause,
            t.mitigated,
            t.durable,
            t.false_positives,
            t.guarded,
            self.driver,
            self.store
        ));
        text
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A score that may not apply: `-` when it does not.
fn maybe(value: Option<bool>) -> &'static str {
    value.map_or("-", yes_no)
}

fn maybe_mark(value: Option<bool>) -> &'static str {
    value.map_or("-", mark)
}

fn mark(value: bool) -> &'static str {
    if value { "✓" } else { "✗" }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |s| format!("{s:.1}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_states_each_case_and_the_total() {
        let scores = Scores {
            detected: true,
            localised: Some(true),
            root_cause: Some(true),
            mitigated: true,
            durable: Some(true),
            false_positive: None,
        };
        let report = RunReport::new(
            "replay".into(),
            "runs/opslab.db".into(),
            vec![
                CaseResult {
                    case: "container-stopped".into(),
                    fault: true,
                    detected: true,
                    fixed: true,
                    passed: true,
                    scores,
                    time_to_fix_seconds: Some(12.34),
                    commands: 5,
                    state_changing_commands: vec!["docker start x".into()],
                    input_tokens: 100,
                    output_tokens: 20,
                    phase: Some("Resolved".into()),
                    outcome: Some("resolved".into()),
                    ..CaseResult::default()
                },
                CaseResult {
                    case: "oom-killed".into(),
                    fault: true,
                    error: Some("the fault never showed".into()),
                    failures: vec![Failure::NotDetected, Failure::NotMitigated],
                    ..CaseResult::default()
                },
                CaseResult {
                    case: "no-fault".into(),
                    fault: false,
                    turns: 3,
                    state_changing_commands: vec!["docker restart x".into()],
                    scores: Scores {
                        detected: true,
                        mitigated: true,
                        durable: Some(true),
                        false_positive: Some(true),
                        ..Scores::default()
                    },
                    failures: vec![Failure::FalsePositive],
                    ..CaseResult::default()
                },
            ],
        );
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CASE"));
        assert!(lines[1].split_whitespace().eq([
            "container-stopped",
            "yes",
            "yes",
            "yes",
            "yes",
            "yes",
            "yes",
            "12.3s",
            "5",
            "1",
            "120",
            "Resolved",
            "resolved"
        ]));
        assert!(lines[2].starts_with("oom-killed"));
        assert!(table.contains("oom-killed: the fault never showed"));
        assert!(
            table.contains("1 of 3 cases passed; of 2 faults: 1 detected, 1 localised, 1 root cause, 1 mitigated, 1 durable; 1 false positive(s) in 1 case(s) with something to leave alone"),
            "{table}"
        );
        assert!(!report.all_passed());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["cases"][0]["time_to_fix_seconds"], 12.34);
        assert_eq!(json["cases"][2]["failures"][0], "false-positive");
        assert_eq!(json["summary"]["false_positives"], 1);
        assert_eq!(json["summary"]["guarded"], 1);
        assert_eq!(json["summary"]["turns"], 3);
        let markdown = report.markdown();
        let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 5, "{markdown}");
        assert!(
            rows[1].starts_with("| container-stopped | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | - |"),
            "{markdown}"
        );
        assert!(
            rows[3].starts_with("| no-fault | ✗ | ✓ | - | - | ✓ | ✓ | ✓ | 3 |"),
            "{markdown}"
        );
        assert!(
            rows[4].starts_with("| **all** | 1/3 | 1/2 | 1/2 | 1/2 | 1/2 | 1/2 | 1/1 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("- no-fault: false-positive"),
            "{markdown}"
        );
    }
}
