//! The example Incidents work where they are meant to be used: every manifest in the README's YAML
//! code blocks, in examples/ and in scenarios/ names only Docker networks and containers that
//! docker-compose.yml makes. Both sides are parsed (the compose file as YAML, the README as Markdown,
//! the manifests by opslab's own parser); no prose is matched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use opslab::incident::Incident;
use opslab::source::manifest;
use opslab_scenario::Names;
use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use regex::Regex;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `OPSLAB_DEMO`'s default in docker-compose.yml: the prefix the scenarios' names are filled with.
const DEMO_PREFIX: &str = "demo";

/// The names docker-compose.yml fixes: networks with a `name`, services with a `container_name`.
/// Other names depend on the compose project's name, so no manifest can rely on them.
#[derive(Debug, Default)]
struct ComposeNames {
    networks: BTreeSet<String>,
    containers: BTreeSet<String>,
}

/// `text` as Compose reads it with no variable set: `${VAR:-default}` and `${VAR-default}` become
/// their default, `$$` a `$`. A variable without a default has no known value: an error.
fn expand_defaults(text: &str) -> Result<String, String> {
    let variable = Regex::new(
        r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
    )
    .unwrap();
    let mut missing = Vec::new();
    let expanded = variable.replace_all(text, |found: &regex::Captures<'_>| {
        if &found[0] == "$$" {
            return "$".to_string();
        }
        match found.get(2) {
            Some(default) => default.as_str().to_string(),
            None => {
                missing.push(found[0].to_string());
                String::new()
            }
        }
    });
    if missing.is_empty() {
        Ok(expanded.into_owned())
    } else {
        Err(format!("{text:?} uses {missing:?}, which have no default"))
    }
}

fn compose_names(text: &str) -> ComposeNames {
    let compose: Value = serde_saphyr::from_str(text).expect("docker-compose.yml is YAML");
    let named = |section: &str, field: &str| -> BTreeSet<String> {
        compose[section]
            .as_object()
            .unwrap_or_else(|| panic!("docker-compose.yml has no {section}"))
            .values()
            .filter_map(|entry| entry.get(field).and_then(Value::as_str))
            .map(|name| expand_defaults(name).unwrap())
            .collect()
    };
    ComposeNames {
        networks: named("networks", "name"),
        containers: named("services", "container_name"),
    }
}

/// An example Incident and where it was found.
struct Example {
    place: String,
    incident: Incident,
}

/// The Incidents of one manifest text, which must all be valid.
fn incidents(place: &str, text: &str) -> Vec<Example> {
    let parsed = manifest::parse(text.as_bytes());
    assert!(
        parsed.errors.is_empty(),
        "{place} is not a valid Incident manifest: {:?}",
        parsed.errors
    );
    parsed
        .incidents
        .into_iter()
        .map(|incident| Example {
            place: place.to_string(),
            incident,
        })
        .collect()
}

/// The text of each fenced code block whose info string starts with `language`.
fn fenced_blocks(markdown: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info)))
                if info.split_whitespace().next() == Some(language) =>
            {
                current = Some(String::new());
            }
            Event::Text(text) => {
                if let Some(block) = current.as_mut() {
                    block.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => blocks.extend(current.take()),
            _ => {}
        }
    }
    blocks
}

/// The README's Incident manifests: its YAML blocks whose documents are of kind Incident.
fn readme_examples(readme: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    for (index, block) in fenced_blocks(readme, "yaml").iter().enumerate() {
        let documents: Vec<Value> = serde_saphyr::from_multiple(block).unwrap_or_else(|error| {
            panic!("README.md's yaml block {} is not YAML: {error}", index + 1)
        });
        if documents
            .iter()
            .any(|document| document["kind"] == "Incident")
        {
            examples.extend(incidents(
                &format!("README.md (yaml block {})", index + 1),
                block,
            ));
        }
    }
    examples
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn directory_examples() -> Vec<Example> {
    yaml_files(&Path::new(ROOT).join("examples"))
        .iter()
        .flat_map(|path| {
            incidents(
                &format!("examples/{}", path.file_name().unwrap().to_string_lossy()),
                &std::fs::read_to_string(path).unwrap(),
            )
        })
        .collect()
}

/// The Incidents of the scenarios on `stack` (their case's `stack:`, `demo` when unsaid), their
/// `${NETWORK}`-like names filled in as the harness fills them.
fn scenario_examples(stack: &str) -> Vec<Example> {
    let names = Names::new(DEMO_PREFIX);
    let stack_of = |dir: &Path| -> String {
        let case: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join("case.yaml")).unwrap())
                .unwrap();
        case.get("stack")
            .and_then(Value::as_str)
            .unwrap_or("demo")
            .to_string()
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("scenarios"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("incident.yaml").is_file() && stack_of(path) == stack)
        .collect();
    dirs.sort();
    dirs.iter()
        .flat_map(|dir| {
            let text = std::fs::read_to_string(dir.join("incident.yaml")).unwrap();
            incidents(
                &format!(
                    "scenarios/{}/incident.yaml",
                    dir.file_name().unwrap().to_string_lossy()
                ),
                &names.fill(&text),
            )
        })
        .collect()
}

/// A scenario stack's compose file as the harness brings it up: `OPSLAB_DEMO` set to the case's
/// prefix.
fn stack_names(file: &str) -> ComposeNames {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
    let prefixed = Regex::new(r"\$\{OPSLAB_DEMO:-[^}]*\}")
        .unwrap()
        .replace_all(&text, DEMO_PREFIX);
    compose_names(&prefixed)
}

/// What an example names that the compose file does not make, one line each.
fn unknown_names(examples: &[Example], compose: &ComposeNames) -> Vec<String> {
    let mut problems = Vec::new();
    for Example { place, incident } in examples {
        let name = incident.metadata.name.as_deref().unwrap_or("?");
        let environment = &incident.spec.environment;
        for network in &environment.networks {
            if !compose.networks.contains(network) {
                problems.push(format!(
                    "{place}: {name}: the network {network:?} is not one docker-compose.yml makes ({:?})",
                    compose.networks
                ));
            }
        }
        for target in &environment.targets {
            if !compose.containers.contains(target) {
                problems.push(format!(
                    "{place}: {name}: the target {target:?} is not a container docker-compose.yml makes ({:?})",
                    compose.containers
                ));
            }
        }
    }
    problems
}

#[test]
fn examples_name_what_docker_compose_makes() {
    let compose = compose_names(
        &std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml")).unwrap(),
    );
    assert!(
        !compose.networks.is_empty() && !compose.containers.is_empty(),
        "{compose:?}"
    );
    let readme =
        readme_examples(&std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap());
    let files = directory_examples();
    let scenarios = scenario_examples("demo");
    let etcd_scenarios = scenario_examples("etcd");
    assert!(
        etcd_scenarios.len() >= 4,
        "scenarios/ has {} etcd Incidents",
        etcd_scenarios.len()
    );
    assert!(!readme.is_empty(), "the README has no Incident manifest");
    assert!(files.len() >= 2, "examples/ has {} Incidents", files.len());
    assert!(
        scenarios.len() >= 5,
        "scenarios/ has {} Incidents",
        scenarios.len()
    );
    let all: Vec<Example> = readme.into_iter().chain(files).chain(scenarios).collect();
    for example in &all {
        assert!(
            !example.incident.spec.environment.networks.is_empty(),
            "{}: names no network: its sandbox could reach none of the demo",
            example.place
        );
    }
    let mut problems = unknown_names(&all, &compose);
    problems.extend(unknown_names(
        &etcd_scenarios,
        &stack_names("docker/demo/etcd/docker-compose.yml"),
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The compose demo's alerts name what the compose file makes: Prometheus labels every alert with
/// the demo's network and containers (its external labels, `${DEMO}` being `OPSLAB_DEMO`), and the
/// controller's rules file (docker/demo/alert-rules.yaml, which opslab's own parser accepts) reads
/// the Incident's networks and targets from those labels.
#[test]
fn the_demo_alerts_name_what_docker_compose_makes() {
    let root = Path::new(ROOT);
    let compose = compose_names(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap());
    let prometheus = std::fs::read_to_string(root.join("docker/demo/monitoring/prometheus.yml"))
        .unwrap()
        .replace("${DEMO}", DEMO_PREFIX);
    let prometheus: Value = serde_saphyr::from_str(&prometheus).unwrap();
    let labels = prometheus["global"]["external_labels"]
        .as_object()
        .expect("prometheus.yml has external labels");
    let rules = opslab::alerts::Rules::load(&root.join("docker/demo/alert-rules.yaml")).unwrap();
    let filing: Vec<_> = rules.rules.iter().filter(|rule| rule.file).collect();
    assert!(!filing.is_empty(), "the demo's rules file nothing");
    let values = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .map(|label| {
                labels
                    .get(label)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("prometheus.yml sets no external label {label:?}"))
            })
            .flat_map(|value| value.split(',').map(|name| name.trim().to_string()))
            .collect()
    };
    for rule in filing {
        let networks = values(&rule.network_labels);
        let targets = values(&rule.target_labels);
        assert!(!networks.is_empty(), "rule {}: no network", rule.name);
        for network in networks.iter().chain(&rule.networks) {
            assert!(
                compose.networks.contains(network),
                "rule {}: the network {network:?} is not one docker-compose.yml makes",
                rule.name
            );
        }
        for target in targets.iter().chain(&rule.targets) {
            assert!(
                compose.containers.contains(target),
                "rule {}: the target {target:?} is not a container docker-compose.yml makes",
                rule.name
            );
        }
    }
}

#[test]
fn examples_check_reads_compose_as_compose_does() {
    assert_eq!(
        expand_defaults("${OPSLAB_DEMO:-demo}-net").unwrap(),
        "demo-net"
    );
    assert_eq!(expand_defaults("${A-x}/${B:-}/$$HOME").unwrap(), "x//$HOME");
    assert!(expand_defaults("${OPSLAB_DEMO}-net").is_err());
    assert!(expand_defaults("$OPSLAB_DEMO-net").is_err());
    let compose = compose_names(
        "services:\n  a: {container_name: \"${P:-p}-a\"}\n  b: {image: x}\nnetworks:\n  n: {name: fixed}\n  m: {}\n",
    );
    assert_eq!(compose.containers, BTreeSet::from(["p-a".to_string()]));
    assert_eq!(compose.networks, BTreeSet::from(["fixed".to_string()]));
    let readme = "text\n\n```yaml\napiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {name: x}\nspec:\n  title: t\n  environment: {networks: [fixed], targets: [p-b]}\n```\n\n```yaml\nother: 1\n```\n\n```sh\nkind: Incident\n```\n";
    let examples = readme_examples(readme);
    assert_eq!(examples.len(), 1);
    let problems = unknown_names(&examples, &compose);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("\"p-b\""), "{problems:?}");
}
