//! A scenario run's outcome per case, as a table for people and as JSON for scripts. Pure.

use std::io::Write;

use serde::Serialize;

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
}

impl RunReport {
    /// Every case detected and fixed, and none failed to run.
    pub fn all_passed(&self) -> bool {
        self.cases
            .iter()
            .all(|case| case.detected && case.fixed && case.error.is_none())
    }

    pub fn table(&self) -> String {
        let mut out = tabwriter::TabWriter::new(Vec::new()).padding(2);
        let _ = writeln!(
            out,
            "CASE\tDETECTED\tFIXED\tTIME TO FIX\tCOMMANDS\tCHANGES\tTOKENS\tPHASE\tOUTCOME"
        );
        for case in &self.cases {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                case.case,
                yes_no(case.detected),
                yes_no(case.fixed),
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
        let passed = self
            .cases
            .iter()
            .filter(|case| case.detected && case.fixed && case.error.is_none())
            .count();
        text.push_str(&format!(
            "{passed} of {} cases detected and fixed (driver: {}; store: {})\n",
            self.cases.len(),
            self.driver,
            self.store
        ));
        text
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_states_each_case_and_the_total() {
        let report = RunReport {
            driver: "replay".into(),
            store: "runs/opslab.db".into(),
            cases: vec![
                CaseResult {
                    case: "container-stopped".into(),
                    detected: true,
                    fixed: true,
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
                    error: Some("the fault never showed".into()),
                    ..CaseResult::default()
                },
            ],
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CASE"));
        assert!(lines[1].split_whitespace().eq([
            "container-stopped",
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
        assert!(table.contains("1 of 2 cases detected and fixed"));
        assert!(!report.all_passed());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["cases"][0]["time_to_fix_seconds"], 12.34);
    }
}
