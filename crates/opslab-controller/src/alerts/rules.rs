//! The mapping from alerts to Incidents (`--alert-rules FILE`): which alerts become Incidents
//! (label matchers), and how their labels and annotations fill the spec. Parsed strictly at start;
//! filling a spec is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::payload::{Alert, Refusal, RefusalKind};
use crate::incident::{AgentOverrides, DEFAULT_NAMESPACE, InvalidSpec, Severity};

/// The rules file's largest size.
const MAX_RULES_BYTES: u64 = 1024 * 1024;

/// The whole rules file.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    /// The namespace alert Incidents are filed in (in files mode, the manifests name it).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Tried in order; the first rule that matches an alert of the group files the Incident.
    #[serde(default = "default_rules")]
    pub rules: Vec<Rule>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn default_rules() -> Vec<Rule> {
    vec![Rule::default()]
}

impl Default for Rules {
    /// With no file: every alert files an Incident, filled from the conventional labels.
    fn default() -> Rules {
        Rules {
            namespace: default_namespace(),
            rules: default_rules(),
        }
    }
}

/// One rule: which alerts, and how they fill the spec.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// A name for the audit trail.
    #[serde(default = "default_rule_name")]
    pub name: String,
    /// Labels that must equal these values.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// Labels whose whole value must match these regular expressions.
    #[serde(default)]
    pub match_regex: BTreeMap<String, String>,
    /// `false` drops the matching alerts: nothing is filed for them.
    #[serde(default = "yes")]
    pub file: bool,
    /// The label naming the Incident (lowercased, `_` as `-`; it must then be a DNS label).
    #[serde(default = "default_name_label")]
    pub name_label: String,
    /// The label whose value is the severity (critical, high/error/page, medium/warning, low, info).
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// The severity when the label is absent or unknown.
    #[serde(default)]
    pub severity: Severity,
    /// Docker networks the sandbox joins, whatever the labels.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Labels whose values (comma-separated) name more networks.
    #[serde(default = "default_network_labels")]
    pub network_labels: Vec<String>,
    /// Containers or services of interest, whatever the labels.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels whose values (comma-separated) name more targets.
    #[serde(default = "default_target_labels")]
    pub target_labels: Vec<String>,
    /// The agent's overrides for these Incidents.
    #[serde(default)]
    pub agent: AgentOverrides,
    /// Compiled `match_regex`, filled by [`Rules::parse`].
    #[serde(skip)]
    compiled: Vec<(String, regex::Regex)>,
}

fn yes() -> bool {
    true
}
fn default_rule_name() -> String {
    "default".into()
}
fn default_name_label() -> String {
    "alertname".into()
}
fn default_severity_label() -> String {
    "severity".into()
}
fn default_network_labels() -> Vec<String> {
    vec!["network".into()]
}
fn default_target_labels() -> Vec<String> {
    vec!["container".into(), "service".into()]
}

impl Default for Rule {
    fn default() -> Rule {
        Rule {
            name: default_rule_name(),
            matches: BTreeMap::new(),
            match_regex: BTreeMap::new(),
            file: true,
            name_label: default_name_label(),
            severity_label: default_severity_label(),
            severity: Severity::default(),
            networks: Vec::new(),
            network_labels: default_network_labels(),
            targets: Vec::new(),
            target_labels: default_target_labels(),
            agent: AgentOverrides::default(),
            compiled: Vec::new(),
        }
    }
}

/// What is wrong with alert rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Unreadable(std::io::Error),
    #[error("{0} bytes; the limit is {MAX_RULES_BYTES}")]
    TooLarge(u64),
    #[error("{0}")]
    Malformed(Box<serde_saphyr::Error>),
    #[error("namespace {0:?} is not a DNS label (lowercase letters, digits and '-', at most 63)")]
    NamespaceNotALabel(String),
    #[error(
        "rules: at least one rule is needed (or leave `rules` out for the default: every alert files an Incident)"
    )]
    NoRules,
    #[error("{at}: {label:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")]
    NotALabelName { at: RuleAt, label: String },
    #[error("{at}: matchRegex.{label}: not a regular expression: {problem}")]
    NotARegex {
        at: RuleAt,
        label: String,
        problem: regex::Error,
    },
    #[error("{at}: {field}: {name:?} is not a Docker name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")]
    NotADockerName {
        at: RuleAt,
        field: &'static str,
        name: String,
    },
    /// The rule's agent overrides, named as the rule writes them (`maxTurns`, not `spec.agent.maxTurns`).
    #[error("{at}: agent: {}", .problem.to_string().replace("spec.agent.", ""))]
    BadAgent { at: RuleAt, problem: InvalidSpec },
}

/// A rule, as errors name it: `rules[0] (redis)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleAt {
    pub index: usize,
    pub name: String,
}

impl std::fmt::Display for RuleAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rules[{}] ({})", self.index, self.name)
    }
}

/// A rules file that cannot be used: which file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct RulesFileError {
    pub path: PathBuf,
    pub problem: RulesError,
}

impl Rules {
    /// Reads and checks a rules file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Rules, RulesFileError> {
        let in_file = |problem| RulesFileError {
            path: path.to_path_buf(),
            problem,
        };
        let meta =
            std::fs::metadata(path).map_err(|error| in_file(RulesError::Unreadable(error)))?;
        if meta.len() > MAX_RULES_BYTES {
            return Err(in_file(RulesError::TooLarge(meta.len())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| in_file(RulesError::Unreadable(error)))?;
        Rules::parse(&text).map_err(in_file)
    }

    /// Parses and checks the rules' text. Pure.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let mut rules: Rules =
            serde_saphyr::from_str(text).map_err(|error| RulesError::Malformed(Box::new(error)))?;
        rules.check()?;
        Ok(rules)
    }

    /// The checks serde does not make; compiles the regular expressions.
    pub fn check(&mut self) -> Result<(), RulesError> {
        if !is_dns_label(&self.namespace) {
            return Err(RulesError::NamespaceNotALabel(self.namespace.clone()));
        }
        if self.rules.is_empty() {
            return Err(RulesError::NoRules);
        }
        for (index, rule) in self.rules.iter_mut().enumerate() {
            let at = RuleAt {
                index,
                name: rule.name.clone(),
            };
            let names = rule
                .matches
                .keys()
                .chain(rule.match_regex.keys())
                .chain(std::iter::once(&rule.name_label))
                .chain(std::iter::once(&rule.severity_label))
                .chain(&rule.network_labels)
                .chain(&rule.target_labels);
            for label in names {
                if !super::payload::is_label_name(label) {
                    return Err(RulesError::NotALabelName {
                        at,
                        label: label.clone(),
                    });
                }
            }
            rule.compiled.clear();
            for (label, pattern) in &rule.match_regex {
                let regex = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|problem| {
                    RulesError::NotARegex {
                        at: at.clone(),
                        label: label.clone(),
                        problem,
                    }
                })?;
                rule.compiled.push((label.clone(), regex));
            }
            for (field, names) in [("networks", &rule.networks), ("targets", &rule.targets)] {
                if let Some(bad) = names.iter().find(|name| !is_docker_name(name)) {
                    return Err(RulesError::NotADockerName {
                        at,
                        field,
                        name: bad.clone(),
                    });
                }
            }
            let probe = crate::incident::IncidentSpec {
                title: "probe".into(),
                description: String::new(),
                severity: rule.severity,
                environment: Default::default(),
                agent: rule.agent.clone(),
            };
            probe
                .validate()
                .map_err(|problem| RulesError::BadAgent { at, problem })?;
        }
        Ok(())
    }

    /// The first rule that matches one of the alerts.
    pub fn rule_for<'a>(&'a self, alerts: &[Alert]) -> Option<&'a Rule> {
        self.rules.iter().find(|rule| {
            alerts
                .iter()
                .any(|alert| rule.matches_labels(&alert.labels))
        })
    }
}

impl Rule {
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = |label: &str| labels.get(label).map_or("", String::as_str);
        self.matches
            .iter()
            .all(|(label, wanted)| value(label) == wanted)
            && self
                .compiled
                .iter()
                .all(|(label, regex)| regex.is_match(value(label)))
    }

    /// The Incident's name prefix, from the name label of the first alert that has it.
    pub fn name_prefix(&self, alerts: &[&Alert]) -> Result<String, Refusal> {
        let Some(value) = alerts
            .iter()
            .find_map(|alert| alert.labels.get(&self.name_label))
        else {
            return Ok("alert".into());
        };
        let name = value.to_ascii_lowercase().replace('_', "-");
        // Room for the group hash and the sequence: `-0123456789-99`.
        if name.len() > 40 || !is_dns_label(&name) {
            return Err(Refusal::new(
                RefusalKind::Invalid,
                format!(
                    "label {}={value:?} cannot name an Incident: not a DNS label once lowercased \
                     (letters, digits and '-', at most 40 characters here)",
                    self.name_label
                ),
            ));
        }
        Ok(name)
    }

    /// The severity: the highest the alerts' labels name, else the rule's.
    pub fn severity(&self, alerts: &[&Alert]) -> Severity {
        alerts
            .iter()
            .filter_map(|alert| alert.labels.get(&self.severity_label))
            .filter_map(|value| severity_of(value))
            .min_by_key(|severity| rank(*severity))
            .unwrap_or(self.severity)
    }

    /// Networks and targets: the rule's own, then the labels' (comma-separated), each once.
    pub fn environment(&self, alerts: &[&Alert]) -> Result<(Vec<String>, Vec<String>), Refusal> {
        let collect = |fixed: &[String], labels: &[String]| -> Result<Vec<String>, Refusal> {
            let mut seen = BTreeSet::new();
            let mut names = Vec::new();
            for name in fixed {
                if seen.insert(name.clone()) {
                    names.push(name.clone());
                }
            }
            for alert in alerts {
                for label in labels {
                    let Some(value) = alert.labels.get(label) else {
                        continue;
                    };
                    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        if !is_docker_name(name) {
                            return Err(Refusal::new(
                                RefusalKind::Invalid,
                                format!(
                                    "label {label}={value:?}: {name:?} is not a Docker name \
                                     ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128)"
                                ),
                            ));
                        }
                        if seen.insert(name.to_string()) {
                            names.push(name.to_string());
                        }
                    }
                }
            }
            Ok(names)
        };
        Ok((
            collect(&self.networks, &self.network_labels)?,
            collect(&self.targets, &self.target_labels)?,
        ))
    }
}

/// Severities as Prometheus rules usually spell them.
fn severity_of(value: &str) -> Option<Severity> {
    match value.to_ascii_lowercase().as_str() {
        "critical" | "fatal" | "emergency" => Some(Severity::Critical),
        "high" | "error" | "page" | "major" => Some(Severity::High),
        "medium" | "warning" | "warn" | "minor" => Some(Severity::Medium),
        "low" => Some(Severity::Low),
        "info" | "informational" | "none" => Some(Severity::Info),
        _ => None,
    }
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 0,
        Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
        Severity::Info => 4,
    }
}

/// The more urgent of two severities.
pub fn most_urgent(a: Severity, b: Severity) -> Severity {
    if rank(a) <= rank(b) { a } else { b }
}

/// RFC 1123 label: what Kubernetes names and namespaces are.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A container or network name as the Docker engine accepts it.
pub fn is_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: super::super::payload::AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: "2026-12-06T10:00:00Z".parse().unwrap(),
            ends_at: "0001-01-01T00:00:00Z".parse().unwrap(),
            generator_url: String::new(),
            fingerprint: "ab".into(),
        }
    }

    #[test]
    fn no_file_files_every_alert_from_the_conventional_labels() {
        let rules = Rules::default();
        let a = alert(&[
            ("alertname", "Redis_Down"),
            ("severity", "warning"),
            ("service", "redis"),
            ("network", "demo_default"),
        ]);
        let b = alert(&[("alertname", "Redis_Down"), ("severity", "critical")]);
        let rule = rules.rule_for(std::slice::from_ref(&a)).unwrap();
        assert_eq!(rule.name_prefix(&[&a]).unwrap(), "redis-down");
        assert_eq!(rule.severity(&[&a, &b]), Severity::Critical);
        assert_eq!(
            rule.environment(&[&a, &b]).unwrap(),
            (vec!["demo_default".to_string()], vec!["redis".to_string()])
        );
    }

    #[test]
    fn a_rules_file_is_strict_and_its_matchers_choose() {
        let rules = Rules::parse(
            "namespace: ops\nrules:\n- name: redis\n  match: {team: data}\n  matchRegex: {alertname: 'Redis.*'}\n  networks: [demo_default]\n  targets: [redis]\n  agent: {maxTurns: 10}\n- name: rest\n  file: false\n",
        )
        .unwrap();
        assert_eq!(rules.namespace, "ops");
        let redis = alert(&[("alertname", "RedisDown"), ("team", "data")]);
        let other = alert(&[("alertname", "DiskFull"), ("team", "data")]);
        assert_eq!(rules.rule_for(&[redis]).unwrap().name, "redis");
        let rest = rules.rule_for(&[other]).unwrap();
        assert_eq!((rest.name.as_str(), rest.file), ("rest", false));

        let parse_error = |text| Rules::parse(text).unwrap_err().to_string();
        let unknown = parse_error("rules:\n- mtach: {a: b}\n");
        assert!(unknown.contains("mtach"), "{unknown}");
        let regex = parse_error("rules:\n- matchRegex: {a: '('}\n");
        assert!(
            regex.contains("rules[0] (default): matchRegex.a"),
            "{regex}"
        );
        let agent = parse_error("rules:\n- agent: {maxTurns: 0}\n");
        assert!(agent.contains("maxTurns must be at least 1"), "{agent}");
        let namespace = parse_error("namespace: Not_A_Label\n");
        assert!(namespace.contains("not a DNS label"), "{namespace}");
        let network = parse_error("rules:\n- networks: ['a b']\n");
        assert!(network.contains("not a Docker name"), "{network}");
    }

    #[test]
    fn names_and_environment_from_labels_are_checked() {
        let rule = Rule::default();
        let bad = alert(&[("alertname", "redis.down/../x")]);
        let refusal = rule.name_prefix(&[&bad]).unwrap_err();
        assert!(
            refusal.message.contains("not a DNS label"),
            "{}",
            refusal.message
        );
        let bad = alert(&[("service", "redis; rm -rf /")]);
        let refusal = rule.environment(&[&bad]).unwrap_err();
        assert!(
            refusal.message.contains("not a Docker name"),
            "{}",
            refusal.message
        );
    }
}
