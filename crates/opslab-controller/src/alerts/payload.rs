//! Alertmanager's webhook payload (version 4), parsed and checked. Pure: every refusal is a
//! [`Refusal`] saying what is wrong, so a hostile payload never reaches the filing.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::audit::Redactor;

/// The largest body read; a larger one is refused before it is parsed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most alerts one notification may carry (set `max_alerts` in Alertmanager's webhook_config
/// to stay under it).
pub const MAX_ALERTS: usize = 100;
const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE_BYTES: usize = 1024;
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
const MAX_GROUP_KEY_BYTES: usize = 4096;
const MAX_URL_BYTES: usize = 4096;

/// Whether an alert (or the whole group) fires or has ended.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One notification, as Alertmanager's webhook receiver sends it.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of the group.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: jiff::Timestamp,
    pub ends_at: jiff::Timestamp,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Payload {
    /// The payload with every secret in it redacted, before anything is decided or written: its
    /// text reaches the Incident's manifest (beside the user's own), the Kubernetes object, the
    /// agent's model, the notifications and the trail. A label or an annotation named like a
    /// secret (`db_password`) is redacted whole. The group key is redacted like the rest, so the
    /// group's identity is the same on every notification.
    pub fn redacted(mut self, redactor: &Redactor) -> Payload {
        let entries = |map: &mut BTreeMap<String, String>| {
            for (key, value) in map.iter_mut() {
                *value = redactor.redact_entry(key, value);
            }
        };
        self.group_key = redactor.redact(&self.group_key);
        self.receiver = redactor.redact(&self.receiver);
        self.external_url = redactor.redact(&self.external_url);
        entries(&mut self.group_labels);
        entries(&mut self.common_labels);
        entries(&mut self.common_annotations);
        for alert in &mut self.alerts {
            entries(&mut alert.labels);
            entries(&mut alert.annotations);
            alert.generator_url = redactor.redact(&alert.generator_url);
        }
        self
    }
}

/// Why a request was refused: its HTTP status and a sentence for the sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// The kinds of refusal, each with its HTTP status and its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// No token, or the wrong one.
    Unauthorized,
    /// The body is over [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not JSON, or not the payload's shape.
    Malformed,
    /// A version other than 4.
    Version,
    /// More alerts than [`MAX_ALERTS`], or none.
    AlertCount,
    /// A value the intake will not file (control characters, a name that is not a DNS label…).
    Invalid,
    /// Not JSON (the Content-Type says so).
    MediaType,
}

impl RefusalKind {
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::Unauthorized => 401,
            RefusalKind::TooLarge => 413,
            RefusalKind::MediaType => 415,
            RefusalKind::Malformed => 400,
            RefusalKind::Version | RefusalKind::AlertCount | RefusalKind::Invalid => 422,
        }
    }

    /// The `reason` of the audit event and the tail of the metric's decision label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Unauthorized => "unauthorized",
            RefusalKind::TooLarge => "too_large",
            RefusalKind::MediaType => "media_type",
            RefusalKind::Malformed => "malformed",
            RefusalKind::Version => "version",
            RefusalKind::AlertCount => "alert_count",
            RefusalKind::Invalid => "invalid",
        }
    }
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

fn invalid(message: String) -> Refusal {
    Refusal::new(RefusalKind::Invalid, message)
}

/// Parses and checks a body. The shape first (with the path of a field that does not fit), then
/// the version, the count of alerts, and every name and value that could reach a manifest.
pub fn parse(body: &[u8]) -> Result<Payload, Refusal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::new(
            RefusalKind::TooLarge,
            format!(
                "the body is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    // The version is checked before the shape: a version 3 payload should be told so, not that
    // it lacks a field.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        Refusal::new(
            RefusalKind::Malformed,
            format!("the body is not JSON: {error}"),
        )
    })?;
    match value.get("version") {
        Some(serde_json::Value::String(version)) if version == "4" => {}
        Some(version) => {
            return Err(Refusal::new(
                RefusalKind::Version,
                format!(
                    "version {version} is not supported; opslab reads Alertmanager's webhook payload version \"4\""
                ),
            ));
        }
        None if value.is_object() => {
            return Err(Refusal::new(
                RefusalKind::Malformed,
                "missing field `version` (Alertmanager's webhook payload, version \"4\")",
            ));
        }
        None => {
            return Err(Refusal::new(
                RefusalKind::Malformed,
                "the body is not a JSON object: Alertmanager's webhook payload is one",
            ));
        }
    }
    let payload: Payload = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        };
        Refusal::new(RefusalKind::Malformed, message)
    })?;
    check(&payload)?;
    Ok(payload)
}

/// The checks serde does not make.
fn check(payload: &Payload) -> Result<(), Refusal> {
    if payload.alerts.is_empty() {
        return Err(Refusal::new(
            RefusalKind::AlertCount,
            "the notification holds no alerts",
        ));
    }
    if payload.alerts.len() > MAX_ALERTS {
        return Err(Refusal::new(
            RefusalKind::AlertCount,
            format!(
                "the notification holds {} alerts; the limit is {MAX_ALERTS} (set max_alerts: {MAX_ALERTS} in Alertmanager's webhook_config)",
                payload.alerts.len()
            ),
        ));
    }
    text("groupKey", &payload.group_key, MAX_GROUP_KEY_BYTES, false)?;
    if payload.group_key.trim().is_empty() {
        return Err(invalid("groupKey must not be empty".into()));
    }
    text("receiver", &payload.receiver, MAX_LABEL_VALUE_BYTES, false)?;
    url("externalURL", &payload.external_url)?;
    labels("groupLabels", &payload.group_labels)?;
    labels("commonLabels", &payload.common_labels)?;
    annotations("commonAnnotations", &payload.common_annotations)?;
    for (index, alert) in payload.alerts.iter().enumerate() {
        let at = |field: &str| format!("alerts[{index}].{field}");
        labels(&at("labels"), &alert.labels)?;
        annotations(&at("annotations"), &alert.annotations)?;
        url(&at("generatorURL"), &alert.generator_url)?;
        let fingerprint = &alert.fingerprint;
        if fingerprint.is_empty()
            || fingerprint.len() > 64
            || !fingerprint.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(invalid(format!(
                "{}: {fingerprint:?} is not a fingerprint (hexadecimal digits)",
                at("fingerprint")
            )));
        }
    }
    Ok(())
}

/// A value that may go into a manifest: bounded, and without control characters (newlines and
/// tabs only where `multiline`).
fn text(field: &str, value: &str, max: usize, multiline: bool) -> Result<(), Refusal> {
    if value.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    let allowed = |c: char| multiline && (c == '\n' || c == '\t');
    if let Some(bad) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(invalid(format!(
            "{field} holds a control character ({:?}){}",
            bad,
            if multiline {
                ""
            } else {
                "; it must be one line"
            }
        )));
    }
    Ok(())
}

fn url(field: &str, value: &str) -> Result<(), Refusal> {
    text(field, value, MAX_URL_BYTES, false)?;
    if !(value.is_empty() || value.starts_with("http://") || value.starts_with("https://")) {
        return Err(invalid(format!("{field} {value:?} is not an http(s) URL")));
    }
    Ok(())
}

/// Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`), one-line values.
fn labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), Refusal> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "{field} holds {} labels; the limit is {MAX_LABELS}",
            labels.len()
        )));
    }
    for (name, value) in labels {
        if !is_label_name(name) {
            return Err(invalid(format!(
                "{field}: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            )));
        }
        text(
            &format!("{field}.{name}"),
            value,
            MAX_LABEL_VALUE_BYTES,
            false,
        )?;
    }
    Ok(())
}

/// Label names as keys; the values may be several lines (a description).
fn annotations(field: &str, annotations: &BTreeMap<String, String>) -> Result<(), Refusal> {
    if annotations.len() > MAX_LABELS {
        return Err(invalid(format!(
            "{field} holds {} annotations; the limit is {MAX_LABELS}",
            annotations.len()
        )));
    }
    for (name, value) in annotations {
        if !is_label_name(name) {
            return Err(invalid(format!(
                "{field}: {name:?} is not an annotation name ([a-zA-Z_][a-zA-Z0-9_]*)"
            )));
        }
        // A summary becomes a title: one line.
        let multiline = name != "summary";
        text(
            &format!("{field}.{name}"),
            value,
            MAX_ANNOTATION_BYTES,
            multiline,
        )?;
    }
    Ok(())
}

pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid notification with one firing alert.
    pub(crate) fn body() -> serde_json::Value {
        serde_json::json!({
            "receiver": "opslab",
            "status": "firing",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "RedisDown", "severity": "critical", "service": "redis"},
                "annotations": {"summary": "redis is down", "description": "no PONG for 1m"},
                "startsAt": "2026-12-06T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
                "fingerprint": "0123456789abcdef"
            }],
            "groupLabels": {"alertname": "RedisDown"},
            "commonLabels": {"alertname": "RedisDown", "severity": "critical", "service": "redis"},
            "commonAnnotations": {"summary": "redis is down"},
            "externalURL": "http://alertmanager:9093",
            "version": "4",
            "groupKey": "{}:{alertname=\"RedisDown\"}",
            "truncatedAlerts": 0
        })
    }

    fn refused(value: serde_json::Value) -> Refusal {
        parse(value.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn a_valid_notification_parses() {
        let payload = parse(body().to_string().as_bytes()).unwrap();
        assert_eq!(payload.status, AlertStatus::Firing);
        assert_eq!(payload.alerts.len(), 1);
        assert_eq!(payload.alerts[0].fingerprint, "0123456789abcdef");
    }

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let mut v3 = body();
        v3["version"] = "3".into();
        let refusal = refused(v3);
        assert_eq!(refusal.kind, RefusalKind::Version);
        assert!(refusal.message.contains("\"3\""), "{}", refusal.message);

        let mut missing = body();
        missing["alerts"][0]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let refusal = refused(missing);
        assert_eq!(refusal.kind, RefusalKind::Malformed);
        assert!(
            refusal
                .message
                .starts_with("alerts[0]: missing field `labels`"),
            "{}",
            refusal.message
        );

        let mut control = body();
        control["alerts"][0]["labels"]["service"] = "re\u{1b}[2Jdis".into();
        let refusal = refused(control);
        assert_eq!(refusal.kind, RefusalKind::Invalid);
        assert!(
            refusal.message.contains("alerts[0].labels.service"),
            "{}",
            refusal.message
        );

        let mut injection = body();
        injection["alerts"][0]["annotations"]["summary"] = "x\nspec:\n  agent: {}".into();
        assert!(refused(injection).message.contains("one line"));

        let mut none = body();
        none["alerts"] = serde_json::json!([]);
        assert_eq!(refused(none).kind, RefusalKind::AlertCount);

        let mut status = body();
        status["status"] = "exploded".into();
        let refusal = refused(status);
        assert!(
            refusal.message.starts_with("status: unknown variant"),
            "{}",
            refusal.message
        );

        assert_eq!(
            parse(b"{not json").unwrap_err().kind,
            RefusalKind::Malformed
        );
        assert_eq!(parse(b"[1]").unwrap_err().kind, RefusalKind::Malformed);
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse(&big).unwrap_err().kind, RefusalKind::TooLarge);
    }
}
