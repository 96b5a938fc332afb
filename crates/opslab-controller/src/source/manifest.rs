//! Parsing Incident manifests from files: pure, so every malformed shape can be unit-tested.
//!
//! A file may hold several YAML documents. Each document is checked on its own, so one bad document
//! names itself and does not hide its neighbours; a file that is not YAML at all fails as a whole.

use std::collections::BTreeSet;
use std::fmt;

use kube::core::ObjectMeta;
use serde::Deserialize;

use crate::incident::{Incident, IncidentSpec, InvalidSpec};

/// The largest manifest file read; a larger one is refused rather than parsed.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The most documents one file may hold.
const MAX_DOCUMENTS: usize = 1000;

pub const API_VERSION: &str = "opslab.dev/v1alpha1";
pub const KIND: &str = "Incident";

/// Why a manifest (or one document in it) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// The whole file is unusable.
    File(String),
    /// One document is unusable. `index` counts from 1; `name` is set when the document named itself.
    Document {
        index: usize,
        name: Option<String>,
        message: String,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::File(message) => f.write_str(message),
            ManifestError::Document {
                index,
                name: Some(name),
                message,
            } => write!(f, "document {index} ({name}): {message}"),
            ManifestError::Document {
                index,
                name: None,
                message,
            } => write!(f, "document {index}: {message}"),
        }
    }
}

/// What one file yielded: the valid Incidents and the errors, in document order.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub incidents: Vec<Incident>,
    pub errors: Vec<ManifestError>,
}

/// Parses a manifest file's bytes. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return file_error(format!(
            "the file is {} bytes; manifests are limited to {} bytes",
            bytes.len(),
            MAX_MANIFEST_BYTES
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            return file_error(format!(
                "the file is not UTF-8 text (binary data?): invalid byte at offset {}",
                error.valid_up_to()
            ));
        }
    };
    if text.contains('\0') {
        return file_error("the file holds NUL bytes: it is binary data, not YAML".to_string());
    }
    // YAML 1.2 booleans: a name like `y` or `no` stays a string, as kubectl reads it.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_documents: MAX_DOCUMENTS },
        strict_booleans: true,
    };
    let documents: Vec<serde_json::Value> =
        match serde_saphyr::from_multiple_with_options(text, options) {
            Ok(documents) => documents,
            // The parser's message is the first line; a source snippet follows, not for one-line logs.
            Err(error) => {
                let message = error.to_string();
                let first = message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                return file_error(format!("invalid YAML: {first}"));
            }
        };
    let mut parsed = Parsed::default();
    for (position, document) in documents.into_iter().enumerate() {
        // An empty document (`---` followed by nothing) is allowed and skipped, as kubectl does.
        if document.is_null() {
            continue;
        }
        match parse_document(document) {
            Ok(incident) => parsed.incidents.push(incident),
            Err((name, message)) => parsed.errors.push(ManifestError::Document {
                index: position + 1,
                name,
                message,
            }),
        }
    }
    parsed
}

fn file_error(message: String) -> Parsed {
    Parsed {
        incidents: Vec::new(),
        errors: vec![ManifestError::File(message)],
    }
}

/// The top level of a manifest, before the spec is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<ManifestMeta>,
    spec: Option<serde_json::Value>,
    /// Ignored: status is the controller's to write.
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

/// The metadata a manifest may set; the rest (uid, generation, …) is the controller's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestMeta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Checks one document; on error returns the name (when known) and a message.
fn parse_document(document: serde_json::Value) -> Result<Incident, (Option<String>, String)> {
    let name_hint = document
        .pointer("/metadata/name")
        .and_then(|name| name.as_str())
        .map(str::to_string);
    let fail = |message: String| (name_hint.clone(), message);
    if !document.is_object() {
        return Err(fail(format!(
            "expected a mapping with apiVersion, kind, metadata and spec, found {}",
            json_kind(&document)
        )));
    }
    let envelope: Envelope =
        serde_path_to_error::deserialize(document).map_err(|error| fail(error_text(&error)))?;
    match envelope.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(fail(format!(
                "apiVersion is {other:?}; expected {API_VERSION:?}"
            )));
        }
        None => {
            return Err(fail(format!(
                "apiVersion is missing; expected {API_VERSION:?}"
            )));
        }
    }
    match envelope.kind.as_deref() {
        Some(KIND) => {}
        Some(other) => return Err(fail(format!("kind is {other:?}; expected {KIND:?}"))),
        None => return Err(fail(format!("kind is missing; expected {KIND:?}"))),
    }
    let meta = envelope
        .metadata
        .ok_or_else(|| fail("metadata is missing: metadata.name is required".to_string()))?;
    let name = meta
        .name
        .ok_or_else(|| fail("metadata.name is required".to_string()))?;
    check_dns_label("metadata.name", &name).map_err(|error| fail(error.to_string()))?;
    let namespace = meta
        .namespace
        .unwrap_or_else(|| crate::incident::DEFAULT_NAMESPACE.to_string());
    check_dns_label("metadata.namespace", &namespace).map_err(|error| fail(error.to_string()))?;
    let spec_value = envelope
        .spec
        .ok_or_else(|| fail("spec is missing: spec.title is required".to_string()))?;
    let spec = parse_spec(spec_value).map_err(|error| fail(error.to_string()))?;
    let mut incident = Incident::new(&name, spec);
    incident.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: (!meta.labels.is_empty()).then_some(meta.labels),
        annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
        ..ObjectMeta::default()
    };
    Ok(incident)
}

/// Why a manifest's spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec: {0}")]
    Malformed(serde_json::Error),
    /// A typo often causes the error (`titel` leaves `title` missing): both are named.
    #[error("spec: {error} (unknown field(s): {fields})")]
    MalformedWithUnknown {
        error: serde_json::Error,
        fields: String,
    },
    #[error("unknown field(s): {0}")]
    UnknownFields(String),
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
}

/// Deserializes the spec, refusing unknown fields (a typo must not be silently dropped) and naming
/// the path of the first bad field. Then checks what the type alone cannot.
pub fn parse_spec(value: serde_json::Value) -> Result<IncidentSpec, SpecError> {
    let mut unknown = BTreeSet::new();
    let spec: IncidentSpec = serde_ignored::deserialize(value, |path| {
        unknown.insert(format!("spec.{path}"));
    })
    .map_err(|error: serde_json::Error| match unknown_list(&unknown) {
        Some(fields) => SpecError::MalformedWithUnknown { error, fields },
        None => SpecError::Malformed(error),
    })?;
    if let Some(fields) = unknown_list(&unknown) {
        return Err(SpecError::UnknownFields(fields));
    }
    spec.validate()?;
    Ok(spec)
}

fn unknown_list(unknown: &BTreeSet<String>) -> Option<String> {
    (!unknown.is_empty()).then(|| unknown.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// A metadata name that Kubernetes would refuse.
#[derive(Debug, thiserror::Error)]
#[error(
    "{field} {value:?} is not a valid name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
)]
pub struct InvalidName {
    field: &'static str,
    value: String,
}

/// Kubernetes names: RFC 1123 labels (lower-case alphanumerics and '-', at most 63 characters).
fn check_dns_label(field: &'static str, value: &str) -> Result<(), InvalidName> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(InvalidName {
            field,
            value: value.to_string(),
        })
    }
}

fn error_text(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let inner = error.inner().to_string();
    if path == "." {
        inner
    } else {
        format!("{path}: {inner}")
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Severity;

    const GOOD: &str = "apiVersion: opslab.dev/v1alpha1
kind: Incident
metadata: {name: api-down}
spec:
  title: api returns 500
  severity: high
  environment: {networks: [demo_default], targets: [api]}
";

    fn only_error(text: &str) -> String {
        let parsed = parse(text.as_bytes());
        assert!(parsed.incidents.is_empty(), "{parsed:?}");
        assert_eq!(parsed.errors.len(), 1, "{parsed:?}");
        parsed.errors[0].to_string()
    }

    #[test]
    fn a_good_manifest_parses() {
        let parsed = parse(GOOD.as_bytes());
        assert_eq!(parsed.errors, vec![]);
        let incident = &parsed.incidents[0];
        assert_eq!(incident.metadata.name.as_deref(), Some("api-down"));
        assert_eq!(incident.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(incident.spec.severity, Severity::High);
        assert_eq!(incident.spec.environment.networks, vec!["demo_default"]);
    }

    #[test]
    fn several_documents_are_checked_one_by_one() {
        let text = format!(
            "{GOOD}---\napiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {{name: second}}\nspec: {{}}\n---\n"
        );
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed.incidents.len(), 1);
        assert_eq!(
            parsed.errors,
            vec![ManifestError::Document {
                index: 2,
                name: Some("second".into()),
                message: "spec: missing field `title`".into()
            }]
        );
    }

    #[test]
    fn bad_yaml_is_a_file_error() {
        let message = only_error("kind: [unclosed\n");
        assert!(message.starts_with("invalid YAML"), "{message}");
    }

    #[test]
    fn wrong_kind_and_api_version_are_named() {
        let wrong_kind = GOOD.replace("kind: Incident", "kind: Pod");
        assert_eq!(
            only_error(&wrong_kind),
            "document 1 (api-down): kind is \"Pod\"; expected \"Incident\""
        );
        let wrong_version = GOOD.replace("opslab.dev/v1alpha1", "v1");
        assert_eq!(
            only_error(&wrong_version),
            "document 1 (api-down): apiVersion is \"v1\"; expected \"opslab.dev/v1alpha1\""
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        let no_title = GOOD.replace("  title: api returns 500\n", "");
        assert_eq!(
            only_error(&no_title),
            "document 1 (api-down): spec: missing field `title`"
        );
        let no_name = GOOD.replace("metadata: {name: api-down}", "metadata: {}");
        assert_eq!(
            only_error(&no_name),
            "document 1: metadata.name is required"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let typo = GOOD.replace("severity: high", "severity: high\n  severty: low");
        assert_eq!(
            only_error(&typo),
            "document 1 (api-down): unknown field(s): spec.severty"
        );
        let nested = GOOD.replace("targets: [api]", "targets: [api], netwrks: [x]");
        assert_eq!(
            only_error(&nested),
            "document 1 (api-down): unknown field(s): spec.environment.netwrks"
        );
        let top = format!("{GOOD}extra: 1\n");
        assert!(only_error(&top).contains("unknown field `extra`"));
    }

    #[test]
    fn mistyped_fields_are_named() {
        let text = GOOD.replace("severity: high", "severity: urgent");
        let message = only_error(&text);
        assert!(message.contains("unknown variant `urgent`"), "{message}");
        let text = format!("{GOOD}  agent: {{maxTurns: lots}}\n");
        let message = only_error(&text);
        assert!(
            message.contains("maxTurns") || message.contains("invalid type"),
            "{message}"
        );
        let text = format!("{GOOD}  agent: {{maxTurns: 0}}\n");
        assert_eq!(
            only_error(&text),
            "document 1 (api-down): spec.agent.maxTurns must be at least 1"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let text = GOOD.replace("name: api-down", "name: Api_Down");
        assert!(only_error(&text).contains("metadata.name \"Api_Down\" is not a valid name"));
    }

    #[test]
    fn binary_junk_and_huge_files_are_refused() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let parsed = parse(&junk);
        assert!(matches!(&parsed.errors[..], [ManifestError::File(m)] if m.contains("not UTF-8")));
        let nul = parse(b"kind: \0Incident");
        assert!(matches!(&nul.errors[..], [ManifestError::File(m)] if m.contains("NUL")));
        let huge = vec![b'#'; MAX_MANIFEST_BYTES + 1];
        let parsed = parse(&huge);
        assert!(matches!(&parsed.errors[..], [ManifestError::File(m)] if m.contains("limited to")));
    }

    #[test]
    fn a_scalar_document_is_refused() {
        assert_eq!(
            only_error("just a string\n"),
            "document 1: expected a mapping with apiVersion, kind, metadata and spec, found a string"
        );
    }

    #[test]
    fn an_empty_file_has_nothing() {
        for text in [&b""[..], b"---\n---\n"] {
            let parsed = parse(text);
            assert!(
                parsed.incidents.is_empty() && parsed.errors.is_empty(),
                "{parsed:?}"
            );
        }
    }
}
