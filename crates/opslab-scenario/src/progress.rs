//! What `opslab scenario run` shows while it runs: each case's steps as they happen, with the time
//! since the case began. On a terminal, a spinner per case (indicatif) under the lines so far;
//! elsewhere (CI, a pipe), plain lines. Both go to stderr, so that stdout keeps only the report.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One step of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    StackStarting,
    StackHealthy,
    Injected,
    /// The oracle fails: the fault shows.
    FaultVisible,
    Filed {
        incident: String,
    },
    SessionStarted {
        session: String,
    },
    /// A command the agent runs, as its start is stored.
    Command {
        command: String,
    },
    SessionEnded {
        phase: String,
        outcome: Option<String>,
    },
    OraclePassed,
    OracleFailed {
        why: String,
    },
    /// The durability check's verdict: the reason it failed, if it did.
    Durable {
        why: Option<String>,
    },
    /// The case could not be run to its end.
    Failed {
        why: String,
    },
}

impl Step {
    /// What happened, for people (pure).
    pub fn describe(&self) -> String {
        match self {
            Step::StackStarting => "bringing its demo stack up".into(),
            Step::StackHealthy => "demo stack healthy".into(),
            Step::Injected => "fault injected".into(),
            Step::FaultVisible => "the fault shows: the oracle fails".into(),
            Step::Filed { incident } => format!("Incident {incident} filed"),
            Step::SessionStarted { session } => format!("session {session} started"),
            Step::Command { command } => format!("$ {}", one_line(command)),
            Step::SessionEnded { phase, outcome } => match outcome {
                Some(outcome) => format!("session ended {phase} (reported {outcome})"),
                None => format!("session ended {phase}"),
            },
            Step::OraclePassed => "oracle passed: fixed".into(),
            Step::OracleFailed { why } => format!("oracle failed: {}", one_line(why)),
            Step::Durable { why: None } => {
                "durable: the oracle passes after a wait and a restart".into()
            }
            Step::Durable { why: Some(why) } => format!("not durable: {}", one_line(why)),
            Step::Failed { why } => format!("failed: {}", one_line(why)),
        }
    }

    /// Whether the case has come to its end.
    pub fn is_last(&self) -> bool {
        match self {
            Step::Durable { .. } | Step::OracleFailed { .. } | Step::Failed { .. } => true,
            Step::OraclePassed
            | Step::StackStarting
            | Step::StackHealthy
            | Step::Injected
            | Step::FaultVisible
            | Step::Filed { .. }
            | Step::SessionStarted { .. }
            | Step::Command { .. }
            | Step::SessionEnded { .. } => false,
        }
    }
}

/// One plain line: `[  12.3s] container-stopped: fault injected` (pure).
pub fn line(case: &str, elapsed: Duration, step: &Step) -> String {
    format!(
        "[{:>6.1}s] {case}: {}",
        elapsed.as_secs_f64(),
        step.describe()
    )
}

/// Long commands are cut, and multi-line ones shown on one line.
fn one_line(text: &str) -> String {
    const MAX: usize = 120;
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// Where the steps go.
pub trait Progress: Send + Sync {
    fn step(&self, case: &str, elapsed: Duration, step: Step);
    /// The run is over: the final report follows.
    fn finish(&self) {}
}

/// Shows nothing (for callers that only want the report).
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _: &str, _: Duration, _: Step) {}
}

/// One line per step.
pub struct Lines<W>(Mutex<W>);

impl<W: Write + Send> Lines<W> {
    pub fn new(out: W) -> Self {
        Lines(Mutex::new(out))
    }
}

impl<W: Write + Send> Progress for Lines<W> {
    fn step(&self, case: &str, elapsed: Duration, step: Step) {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Progress is best effort: a closed stderr must not stop the run.
        let _ = writeln!(out, "{}", line(case, elapsed, &step));
        let _ = out.flush();
    }
}

/// A spinner per case showing its latest step, under the lines of the steps so far.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, case: &str) -> ProgressBar {
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bars.entry(case.to_string())
            .or_insert_with(|| {
                let style =
                    ProgressStyle::with_template("{spinner} {prefix:<24} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
                bar.set_prefix(case.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Progress for Bars {
    fn step(&self, case: &str, elapsed: Duration, step: Step) {
        let bar = self.bar(case);
        let _ = self.multi.println(line(case, elapsed, &step));
        if step.is_last() {
            bar.finish_with_message(step.describe());
        } else {
            bar.set_message(step.describe());
        }
    }

    fn finish(&self) {
        let bars = self
            .bars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for bar in bars.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Bars when stderr is a terminal, plain lines otherwise.
pub fn to_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::new(std::io::stderr()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_case_the_time_and_the_step() {
        let step = Step::Command {
            command: "docker start\n  demo-store".into(),
        };
        assert_eq!(
            line("container-stopped", Duration::from_millis(12_345), &step),
            "[  12.3s] container-stopped: $ docker start demo-store"
        );
        let ended = Step::SessionEnded {
            phase: "Resolved".into(),
            outcome: Some("resolved".into()),
        };
        assert_eq!(
            ended.describe(),
            "session ended Resolved (reported resolved)"
        );
        let long = Step::Command {
            command: "x".repeat(300),
        };
        assert_eq!(long.describe().chars().count(), 2 + 120 + 1);
    }

    #[test]
    fn plain_lines_are_written_as_steps_come() {
        let lines = Lines::new(Vec::new());
        lines.step("a", Duration::from_secs(1), Step::Injected);
        lines.step("a", Duration::from_secs(2), Step::OraclePassed);
        let text = String::from_utf8(lines.0.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "[   1.0s] a: fault injected\n[   2.0s] a: oracle passed: fixed\n"
        );
    }
}
