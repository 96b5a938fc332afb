//! Fault scenarios: a folder with one directory per case, each holding how the fault is injected
//! (`inject.sh`), the Incident a person would file (`incident.yaml`), an oracle that checks the
//! system is healthy again (`check.sh`), and the commands a capable agent would run (`case.yaml`).
//! This module reads cases and fills in their names (pure); [`run`] runs them against a real demo
//! stack and controller, [`replay`] plays a case's commands as a model would, [`classify`] tells
//! state-changing commands apart, [`progress`] shows each case's steps as they happen, and
//! [`report`] prints the outcome.

pub mod classify;
pub mod progress;
pub mod replay;
pub mod report;
pub mod run;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::incident::{Outcome, Report};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Case { path: PathBuf, message: String },
    #[error("no scenario named {name:?} in {dir} (there are: {known})")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("{0}")]
    Run(String),
}

/// One case, as read from its directory.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub spec: CaseSpec,
    /// `incident.yaml`, with `${…}` names not yet filled in.
    pub incident: String,
}

/// `case.yaml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// One line saying what breaks.
    pub summary: String,
    /// False for the control case: nothing is broken and nothing should change.
    #[serde(default = "yes")]
    pub fault: bool,
    /// A regular expression (matched ignoring case) that the agent's report summary or root cause
    /// must match for the fault to count as detected.
    pub detect: String,
    /// The commands a capable agent would run, in order.
    pub commands: Vec<ScriptedCommand>,
    /// The report that agent would end with.
    pub report: ScriptedReport,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCommand {
    pub command: String,
    pub reasoning: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReport {
    pub outcome: Outcome,
    pub summary: String,
    #[serde(default)]
    pub root_cause: String,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub verification: String,
}

/// The names one case's demo stack is given; they fill `${WEB}`, `${API}`, `${STORE}`,
/// `${NETWORK}` and `${VOLUME}` in the case's files, and the scripts' environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The compose project and the prefix of every name (`OPSLAB_DEMO` in docker-compose.yml).
    pub prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Names {
        Names {
            prefix: prefix.into(),
        }
    }

    /// The placeholders and their values, as the compose file names things.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let p = &self.prefix;
        vec![
            ("WEB", format!("{p}-web")),
            ("API", format!("{p}-api")),
            ("STORE", format!("{p}-store")),
            ("NETWORK", format!("{p}-net")),
            ("VOLUME", format!("{p}-data")),
        ]
    }

    pub fn network(&self) -> String {
        format!("{}-net", self.prefix)
    }

    /// `text` with every `${NAME}` placeholder filled in; other text, `$VAR` and `{{…}}` included,
    /// is left as it is.
    pub fn fill(&self, text: &str) -> String {
        self.values()
            .iter()
            .fold(text.to_string(), |text, (key, value)| {
                text.replace(&format!("${{{key}}}"), value)
            })
    }
}

impl Case {
    /// The case's commands and report with its names filled in.
    pub fn script(&self, names: &Names) -> (Vec<ScriptedCommand>, Report) {
        let commands = self
            .spec
            .commands
            .iter()
            .map(|step| ScriptedCommand {
                command: names.fill(&step.command),
                reasoning: names.fill(&step.reasoning),
            })
            .collect();
        let report = &self.spec.report;
        let report = Report {
            outcome: report.outcome,
            summary: names.fill(&report.summary),
            root_cause: names.fill(&report.root_cause),
            actions: report.actions.iter().map(|a| names.fill(a)).collect(),
            verification: names.fill(&report.verification),
        };
        (commands, report)
    }

    /// Whether a report names this case's fault.
    pub fn detected_by(&self, report: &Report) -> bool {
        regex::RegexBuilder::new(&self.spec.detect)
            .case_insensitive(true)
            .build()
            .is_ok_and(|pattern| {
                pattern.is_match(&report.summary) || pattern.is_match(&report.root_cause)
            })
    }
}

/// The files every case directory holds.
pub const CASE_FILES: [&str; 4] = ["case.yaml", "incident.yaml", "inject.sh", "check.sh"];

/// Reads every case in `dir` (each subdirectory holding `case.yaml`), sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Case>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|error| ScenarioError::Case {
        path: dir.to_path_buf(),
        message: format!("cannot read the scenarios folder: {error}"),
    })?;
    let mut cases = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join("case.yaml").is_file() {
            cases.push(load(&path)?);
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// The named cases, in the order given; every case when `names` is empty.
pub fn select(dir: &Path, names: &[String]) -> Result<Vec<Case>, ScenarioError> {
    let all = load_all(dir)?;
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|case| &case.name == name)
                .cloned()
                .ok_or_else(|| ScenarioError::Unknown {
                    name: name.clone(),
                    dir: dir.to_path_buf(),
                    known: all
                        .iter()
                        .map(|case| case.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

/// Reads one case directory.
pub fn load(dir: &Path) -> Result<Case, ScenarioError> {
    let error = |path: &Path, message: String| ScenarioError::Case {
        path: path.to_path_buf(),
        message,
    };
    for file in CASE_FILES {
        if !dir.join(file).is_file() {
            return Err(error(
                dir,
                format!("a case needs {}", CASE_FILES.join(", ")),
            ));
        }
    }
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map_err(|e| error(&dir.join(file), format!("cannot read: {e}")))
    };
    let case_path = dir.join("case.yaml");
    let spec: CaseSpec = serde_saphyr::from_str(&read("case.yaml")?)
        .map_err(|e| error(&case_path, e.to_string()))?;
    parse_checks(&spec).map_err(|message| error(&case_path, message))?;
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Case {
        name,
        dir: dir.to_path_buf(),
        spec,
        incident: read("incident.yaml")?,
    })
}

fn parse_checks(spec: &CaseSpec) -> Result<(), String> {
    regex::Regex::new(&spec.detect).map_err(|e| format!("`detect` is not a regex: {e}"))?;
    if spec.commands.is_empty() {
        return Err("`commands` is empty: give the commands a capable agent would run".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fill_placeholders_only() {
        let names = Names::new("x1");
        assert_eq!(
            names.fill("docker start ${STORE} # {{.Names}} $STORE ${HOME} on ${NETWORK}"),
            "docker start x1-store # {{.Names}} $STORE ${HOME} on x1-net"
        );
    }

    #[test]
    fn the_shipped_cases_load_and_fill() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let cases = load_all(&dir).unwrap();
        let names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        for needed in [
            "container-stopped",
            "container-paused",
            "wrong-env-crash-loop",
            "network-disconnected",
            "volume-full",
            "oom-killed",
            "no-fault",
        ] {
            assert!(
                names.contains(&needed),
                "{needed} is missing from {names:?}"
            );
        }
        let names = Names::new("t");
        for case in &cases {
            let (commands, report) = case.script(&names);
            assert!(!commands.is_empty());
            assert!(
                case.detected_by(&report),
                "{}: the scripted report must name the fault",
                case.name
            );
            let incident = names.fill(&case.incident);
            assert!(!incident.contains("${"), "{}: {incident}", case.name);
            let parsed = crate::source::manifest::parse(incident.as_bytes());
            assert!(
                parsed.errors.is_empty(),
                "{}: {:?}",
                case.name,
                parsed.errors
            );
            assert_eq!(parsed.incidents.len(), 1, "{}", case.name);
        }
    }

    #[test]
    fn detection_needs_the_fault_named() {
        let case = Case {
            name: "c".into(),
            dir: PathBuf::new(),
            spec: CaseSpec {
                summary: "s".into(),
                fault: true,
                detect: "oom|memory limit".into(),
                commands: vec![],
                report: ScriptedReport {
                    outcome: Outcome::Resolved,
                    summary: String::new(),
                    root_cause: String::new(),
                    actions: vec![],
                    verification: String::new(),
                },
            },
            incident: String::new(),
        };
        let report = |summary: &str| Report {
            outcome: Outcome::Resolved,
            summary: summary.into(),
            root_cause: String::new(),
            actions: vec![],
            verification: String::new(),
        };
        assert!(case.detected_by(&report("It was OOM-killed")));
        assert!(!case.detected_by(&report("I restarted it")));
    }

    #[test]
    fn bad_cases_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("broken");
        std::fs::create_dir(&case).unwrap();
        for file in CASE_FILES {
            std::fs::write(case.join(file), "").unwrap();
        }
        std::fs::write(
            case.join("case.yaml"),
            "summary: x\ndetect: '('\ncommands: []\nreport: {outcome: resolved, summary: s}\n",
        )
        .unwrap();
        let error = load(&case).unwrap_err().to_string();
        assert!(
            error.contains("case.yaml") && error.contains("regex"),
            "{error}"
        );
        // One broken case stops the run, rather than being skipped silently.
        let error = select(dir.path(), &[]).unwrap_err().to_string();
        assert!(error.contains("broken"), "{error}");
        std::fs::remove_dir_all(&case).unwrap();
        let error = select(dir.path(), &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("no scenario named \"nope\""), "{error}");
    }
}
