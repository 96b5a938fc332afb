//! The scenario harness, beside the controller library (`opslab`) that it tests from outside.
//!
//! Fault scenarios: a folder with one directory per case, each holding how the fault is injected
//! (`inject.sh`), the Incident a person would file (`incident.yaml`), an oracle that checks the
//! system is healthy again (`check.sh`), and the commands a capable agent would run (`case.yaml`).
//! This crate reads cases and fills in their names (pure); [`run`] runs them against a real demo
//! stack and controller, [`replay`] plays a case's commands as a model would, [`classify`] tells
//! state-changing commands apart, [`score`] scores a session (and [`judge`], when asked, lets a
//! model decide its root-cause score), [`progress`] shows each case's steps as they happen, and
//! [`report`] prints the outcome.

pub mod classify;
pub mod judge;
pub mod matrix;
pub mod progress;
pub mod replay;
pub mod report;
pub mod run;
pub mod score;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use opslab::incident::{Outcome, Report};

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
    /// The system the case breaks: the demo (web, api, store) unless it says `etcd`.
    #[serde(default)]
    pub stack: Stack,
    /// A regular expression (matched ignoring case) that the agent's report summary or root cause
    /// must match for the fault to count as detected.
    pub detect: String,
    /// The faulty component (`web`, `api`, `store`, or another name); a report localises the fault
    /// when its root cause names it. Required unless `fault` is false.
    #[serde(default)]
    pub component: Option<String>,
    /// Other words that name the component in a report (beside its role and container name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Other faulty components, when the fault is in several: the root cause must name each too.
    #[serde(default)]
    pub also: Vec<String>,
    /// Healthy components the right answer leaves alone: a state-changing command naming one is a
    /// false positive, as any change is on a control.
    #[serde(default)]
    pub healthy: Vec<String>,
    /// Regular expressions (matched ignoring case) that the report's root cause must all match for
    /// the mechanism to count as found. Required unless `fault` is false.
    #[serde(default)]
    pub mechanism: Vec<String>,
    /// The components restarted by the durability check; the faulty ones when not given.
    #[serde(default)]
    pub restart: Option<Vec<String>>,
    /// The commands a capable agent would run, in order.
    pub commands: Vec<ScriptedCommand>,
    /// The report that agent would end with.
    pub report: ScriptedReport,
    /// Deliberately wrong sessions, each scored as the failure its kind names.
    #[serde(default)]
    pub wrong: Vec<WrongReplay>,
}

/// A deliberately wrong session of a case, to test the scoring.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WrongReplay {
    pub kind: WrongKind,
    /// The commands it runs; the right ones when not given.
    #[serde(default)]
    pub commands: Option<Vec<ScriptedCommand>>,
    /// The report it ends with; the right one when not given.
    #[serde(default)]
    pub report: Option<ScriptedReport>,
}

/// The kinds of wrong session, each caught by one score.
#[derive(
    Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq, Hash, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum WrongKind {
    /// Restores service but leaves the cause: fails durability.
    SymptomOnly,
    /// Blames another component: fails localisation.
    WrongComponent,
    /// Names the component but the wrong mechanism: fails the root cause.
    WrongMechanism,
    /// Changes something on a control: a false positive.
    HarmfulChange,
}

impl WrongKind {
    /// The failure this kind of session must be scored as.
    pub fn failure(self) -> score::Failure {
        match self {
            WrongKind::SymptomOnly => score::Failure::NotDurable,
            WrongKind::WrongComponent => score::Failure::NotLocalised,
            WrongKind::WrongMechanism => score::Failure::WrongRootCause,
            WrongKind::HarmfulChange => score::Failure::FalsePositive,
        }
    }
}

fn yes() -> bool {
    true
}

/// The systems a case can break, each a compose file of its own, started per case under the
/// case's names.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Stack {
    /// docker-compose.yml's demo: web -> api -> store (Redis).
    #[default]
    Demo,
    /// docker/demo/etcd: a three-member etcd cluster and the kv service reading and writing
    /// through it.
    Etcd,
}

impl Stack {
    /// The service `compose up` is given: it brings up the others it depends on.
    pub fn entry_service(self) -> &'static str {
        match self {
            Stack::Demo => "web",
            Stack::Etcd => "kv",
        }
    }

    /// The components a case of this stack can name (each a compose service and a container).
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Stack::Demo => &["web", "api", "store"],
            Stack::Etcd => &["etcd1", "etcd2", "etcd3", "kv"],
        }
    }
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

    /// The placeholders and their values, as the compose files name things (both stacks': a
    /// case uses those of its own).
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let p = &self.prefix;
        vec![
            ("WEB", format!("{p}-web")),
            ("API", format!("{p}-api")),
            ("STORE", format!("{p}-store")),
            ("NETWORK", format!("{p}-net")),
            ("VOLUME", format!("{p}-data")),
            ("ETCD1", format!("{p}-etcd1")),
            ("ETCD2", format!("{p}-etcd2")),
            ("ETCD3", format!("{p}-etcd3")),
            ("KV", format!("{p}-kv")),
        ]
    }

    /// The container of a component of either stack (`web`, `api`, `store`, `etcd1`…`kv`).
    pub fn container(&self, component: &str) -> Option<String> {
        [Stack::Demo, Stack::Etcd]
            .iter()
            .any(|stack| stack.components().contains(&component))
            .then(|| format!("{}-{component}", self.prefix))
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
        (
            fill_commands(&self.spec.commands, names),
            fill_report(&self.spec.report, names),
        )
    }

    /// A wrong replay's commands and report with the case's names filled in.
    pub fn wrong_script(
        &self,
        wrong: &WrongReplay,
        names: &Names,
    ) -> (Vec<ScriptedCommand>, Report) {
        (
            fill_commands(
                wrong.commands.as_ref().unwrap_or(&self.spec.commands),
                names,
            ),
            fill_report(wrong.report.as_ref().unwrap_or(&self.spec.report), names),
        )
    }

    /// The case played as its wrong replay of `kind`, when it has one.
    pub fn as_wrong(&self, kind: WrongKind) -> Option<Case> {
        let wrong = self.spec.wrong.iter().find(|wrong| wrong.kind == kind)?;
        let mut case = self.clone();
        if let Some(commands) = &wrong.commands {
            case.spec.commands = commands.clone();
        }
        if let Some(report) = &wrong.report {
            case.spec.report = report.clone();
        }
        case.spec.wrong = Vec::new();
        Some(case)
    }

    /// The faulty components: the one the case names, and the others it says are faulty too.
    pub fn faulty(&self) -> Vec<String> {
        self.spec
            .component
            .iter()
            .chain(&self.spec.also)
            .cloned()
            .collect()
    }

    /// The containers the durability check restarts.
    pub fn restarts(&self, names: &Names) -> Vec<String> {
        let components = match &self.spec.restart {
            Some(list) => list.clone(),
            None => self.faulty(),
        };
        components
            .iter()
            .filter_map(|component| names.container(component))
            .collect()
    }
}

fn fill_commands(commands: &[ScriptedCommand], names: &Names) -> Vec<ScriptedCommand> {
    commands
        .iter()
        .map(|step| ScriptedCommand {
            command: names.fill(&step.command),
            reasoning: names.fill(&step.reasoning),
        })
        .collect()
}

fn fill_report(report: &ScriptedReport, names: &Names) -> Report {
    {
        Report {
            outcome: report.outcome,
            summary: names.fill(&report.summary),
            root_cause: names.fill(&report.root_cause),
            actions: report.actions.iter().map(|a| names.fill(a)).collect(),
            verification: names.fill(&report.verification),
        }
    }
}

impl Case {
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
    if spec.fault && (spec.component.is_none() || spec.mechanism.is_empty()) {
        return Err(
            "a fault case needs `component` (what is faulty) and `mechanism` (patterns its root cause matches)"
                .into(),
        );
    }
    for pattern in &spec.mechanism {
        regex::Regex::new(pattern)
            .map_err(|e| format!("`mechanism` {pattern:?} is not a regex: {e}"))?;
    }
    let known = spec.stack.components();
    let named = [
        ("restart", spec.restart.iter().flatten().collect::<Vec<_>>()),
        ("also", spec.also.iter().collect()),
        ("healthy", spec.healthy.iter().collect()),
    ];
    for (field, components) in named {
        if let Some(unknown) = components.iter().find(|c| !known.contains(&c.as_str())) {
            return Err(format!(
                "`{field}` names {unknown:?}: the {:?} stack's components are {}",
                spec.stack,
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The repository's scenarios/, which the tests check (this crate is crates/opslab-scenario).
#[cfg(test)]
fn shipped_scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
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
        let dir = shipped_scenarios();
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
        assert!(cases.len() >= 20, "{names:?}");
        let controls = cases.iter().filter(|case| !case.spec.fault).count();
        assert!(controls >= 3, "{controls} controls");
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
            let parsed = opslab::source::manifest::parse(incident.as_bytes());
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
                stack: Stack::Demo,
                detect: "oom|memory limit".into(),
                component: Some("api".into()),
                aliases: vec![],
                also: vec![],
                healthy: vec![],
                mechanism: vec!["memory".into()],
                restart: None,
                wrong: vec![],
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
