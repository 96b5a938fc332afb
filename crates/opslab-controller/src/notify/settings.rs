//! Where notifications go and how they are sent: the controller's flags, the receivers (from the
//! environment or a file), checked once at start.
//!
//! A receiver's URL is a secret (an incoming webhook's URL is its own credential): it is read from
//! the environment or a file, never from the command line (where `ps` shows it), is shown only as
//! its host, and is added to the values every redaction removes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The environment variable holding a Slack-compatible incoming webhook URL (receiver `slack`).
pub const SLACK_URL_ENV: &str = "OPSLAB_NOTIFY_SLACK_URL";
/// The environment variable holding a generic webhook URL that gets CloudEvents (receiver `webhook`).
pub const WEBHOOK_URL_ENV: &str = "OPSLAB_NOTIFY_WEBHOOK_URL";

const NOTIFICATIONS: &str = "Notifications";

/// The controller's notification flags (flattened into `opslab controller`).
#[derive(clap::Args, Debug, Clone)]
pub struct NotifyArgs {
    /// A YAML file of receivers (`receivers: [{name, type: slack|cloudevents, url}]`), beside the
    /// ones OPSLAB_NOTIFY_SLACK_URL and OPSLAB_NOTIFY_WEBHOOK_URL name. Their URLs are secrets.
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_NOTIFY_RECEIVERS", value_name = "FILE")]
    pub notify_receivers: Option<PathBuf>,
    /// Also notify when a session starts, not only when an Incident reaches a terminal phase.
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_NOTIFY_ON_START")]
    pub notify_on_start: bool,
    /// How long one delivery attempt may take, in seconds.
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_NOTIFY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub notify_timeout_seconds: u64,
    /// Attempts per notification and receiver before it is given up (retries back off
    /// exponentially, with jitter).
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_NOTIFY_ATTEMPTS", default_value_t = 6)]
    pub notify_attempts: u32,
    /// The first wait between attempts, in milliseconds; it doubles each time, up to a minute.
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_NOTIFY_RETRY_DELAY_MS", default_value_t = 2000)]
    pub notify_retry_delay_ms: u64,
    /// The base URL of the controller as reviewers reach it (e.g. `https://opslab.example.com`,
    /// where its console is `/ui/`); notifications link to the session's page there,
    /// `<URL>/ui/sessions/<session id>`, beside the `opslab show` command.
    #[arg(help_heading = NOTIFICATIONS)]
    #[arg(long, env = "OPSLAB_CONSOLE_URL", value_name = "URL")]
    pub console_url: Option<String>,
}

/// How many notifications may wait for delivery; more are dropped (and recorded as such) rather
/// than holding up the reconciler.
pub const QUEUE_CAPACITY: usize = 256;

/// The checked notification settings.
#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    pub receivers: Vec<Receiver>,
    pub on_start: bool,
    /// The budget of one attempt.
    pub timeout: Duration,
    /// Attempts per notification and receiver (at least 1).
    pub attempts: u32,
    /// The first backoff delay.
    pub retry_delay: Duration,
    /// The controller's base URL, without a trailing slash or `/ui`.
    pub console_url: Option<String>,
}

impl NotifyConfig {
    /// The receivers' URLs: secrets every redaction must remove.
    pub fn secret_values(&self) -> Vec<String> {
        self.receivers
            .iter()
            .map(|receiver| receiver.url.as_str().to_string())
            .collect()
    }
}

/// What a receiver understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// A Slack-compatible incoming webhook: `text` and Block Kit `blocks`.
    Slack,
    /// Any HTTP endpoint: a CloudEvents 1.0 event in structured JSON mode.
    Cloudevents,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Slack => "slack",
            ReceiverKind::Cloudevents => "cloudevents",
        }
    }
}

/// Where notifications go. Its `Debug` shows the URL's host only.
#[derive(Clone)]
pub struct Receiver {
    /// A short name for logs, metrics and the trail.
    pub name: String,
    pub kind: ReceiverKind,
    url: url::Url,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.host())
            .finish()
    }
}

/// A receiver that cannot be used. The URL's text is never in it: it is a secret.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver name {0:?}: use 1 to 63 lowercase letters, digits, '-' or '_'")]
    BadName(String),
    #[error("receiver {name}: its URL does not parse ({problem})")]
    UnparsableUrl {
        name: String,
        problem: url::ParseError,
    },
    #[error("receiver {name}: its URL must be http:// or https:// with a host")]
    NotHttp { name: String },
    #[error("receiver {name}: its URL cannot be redacted safely: {problem}")]
    Unredactable {
        name: String,
        problem: crate::audit::SecretTooShort,
    },
}

/// Notification settings that cannot be used, naming the flag or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum NotifySettingsError {
    #[error("{variable}: {problem}")]
    Variable {
        variable: &'static str,
        problem: ReceiverError,
    },
    #[error("--notify-receivers {path}: {problem}")]
    UnreadableFile {
        path: PathBuf,
        problem: std::io::Error,
    },
    #[error(
        "--notify-receivers {path}: not a receivers file (receivers: [{{name, type: slack|cloudevents, url}}]) {location}"
    )]
    NotAReceiversFile { path: PathBuf, location: String },
    #[error("--notify-receivers {path}: {problem}")]
    BadReceiver {
        path: PathBuf,
        problem: ReceiverError,
    },
    #[error("two notification receivers are named {0:?}; names must be unique")]
    DuplicateName(String),
    #[error("--notify-timeout-seconds must be at least 1")]
    NoTimeout,
    #[error("--notify-attempts must be at least 1")]
    NoAttempts,
    #[error("--console-url {0:?} must start with http:// or https://")]
    BadConsoleUrl(String),
}

impl Receiver {
    /// Checks the name and the URL (http or https, with a host).
    pub fn new(name: &str, kind: ReceiverKind, url: &str) -> Result<Receiver, ReceiverError> {
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(ReceiverError::BadName(name.to_string()));
        }
        // The URL's text never goes into an error: it is a secret.
        let parsed =
            url::Url::parse(url.trim()).map_err(|problem| ReceiverError::UnparsableUrl {
                name: name.to_string(),
                problem,
            })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ReceiverError::NotHttp {
                name: name.to_string(),
            });
        }
        crate::audit::check_configured_secret(parsed.as_str()).map_err(|problem| {
            ReceiverError::Unredactable {
                name: name.to_string(),
                problem,
            }
        })?;
        Ok(Receiver {
            name: name.to_string(),
            kind,
            url: parsed,
        })
    }

    /// The URL to post to. A secret: never log it.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// What logs may say of where it goes.
    pub fn host(&self) -> String {
        let host = self.url.host_str().unwrap_or("?");
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

/// The receivers file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiversFile {
    #[serde(default)]
    receivers: Vec<ReceiverEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverEntry {
    name: String,
    #[serde(rename = "type")]
    kind: ReceiverKind,
    url: String,
}

impl NotifyArgs {
    /// Checks the flags and reads the receivers; `env` looks up an environment variable.
    pub fn into_config(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NotifyConfig, NotifySettingsError> {
        let mut receivers = Vec::new();
        for (name, kind, variable) in [
            ("slack", ReceiverKind::Slack, SLACK_URL_ENV),
            ("webhook", ReceiverKind::Cloudevents, WEBHOOK_URL_ENV),
        ] {
            if let Some(url) = env(variable).filter(|url| !url.trim().is_empty()) {
                receivers.push(
                    Receiver::new(name, kind, &url)
                        .map_err(|problem| NotifySettingsError::Variable { variable, problem })?,
                );
            }
        }
        if let Some(path) = &self.notify_receivers {
            receivers.extend(read_receivers(path)?);
        }
        for (index, receiver) in receivers.iter().enumerate() {
            if receivers[..index]
                .iter()
                .any(|other| other.name == receiver.name)
            {
                return Err(NotifySettingsError::DuplicateName(receiver.name.clone()));
            }
        }
        if self.notify_timeout_seconds == 0 {
            return Err(NotifySettingsError::NoTimeout);
        }
        if self.notify_attempts == 0 {
            return Err(NotifySettingsError::NoAttempts);
        }
        let console_url = match self.console_url {
            Some(url) if !url.trim().is_empty() => {
                // The console's own address (`.../ui`) names the same controller: links add `/ui/`.
                let trimmed = url.trim().trim_end_matches('/');
                let trimmed = trimmed.strip_suffix("/ui").unwrap_or(trimmed).to_string();
                if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
                    return Err(NotifySettingsError::BadConsoleUrl(trimmed));
                }
                Some(trimmed)
            }
            _ => None,
        };
        Ok(NotifyConfig {
            receivers,
            on_start: self.notify_on_start,
            timeout: Duration::from_secs(self.notify_timeout_seconds),
            attempts: self.notify_attempts,
            retry_delay: Duration::from_millis(self.notify_retry_delay_ms),
            console_url,
        })
    }
}

fn read_receivers(path: &Path) -> Result<Vec<Receiver>, NotifySettingsError> {
    let text =
        std::fs::read_to_string(path).map_err(|problem| NotifySettingsError::UnreadableFile {
            path: path.to_path_buf(),
            problem,
        })?;
    // The parser's message may quote the text, which holds URLs: say where, not what.
    let file: ReceiversFile = serde_saphyr::from_str(&text).map_err(|error| {
        let location = error
            .to_string()
            .lines()
            .find(|line| line.contains("line"))
            .map(|line| line.chars().take(120).collect::<String>())
            .unwrap_or_default();
        NotifySettingsError::NotAReceiversFile {
            path: path.to_path_buf(),
            location,
        }
    })?;
    file.receivers
        .into_iter()
        .map(|entry| {
            Receiver::new(&entry.name, entry.kind, &entry.url).map_err(|problem| {
                NotifySettingsError::BadReceiver {
                    path: path.to_path_buf(),
                    problem,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NotifyArgs {
        NotifyArgs {
            notify_receivers: None,
            notify_on_start: false,
            notify_timeout_seconds: 10,
            notify_attempts: 3,
            notify_retry_delay_ms: 100,
            console_url: None,
        }
    }

    const SLACK: &str = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX";

    #[test]
    fn receivers_come_from_the_environment_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("receivers.yaml");
        std::fs::write(
            &file,
            "receivers:\n  - name: pager\n    type: cloudevents\n    url: https://events.example.com/in/abcdef\n",
        )
        .unwrap();
        let config = NotifyArgs {
            notify_receivers: Some(file),
            console_url: Some("https://console.example.com/".into()),
            ..args()
        }
        .into_config(|name| (name == SLACK_URL_ENV).then(|| SLACK.to_string()))
        .unwrap();
        let names: Vec<_> = config
            .receivers
            .iter()
            .map(|r| (r.name.as_str(), r.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("slack", ReceiverKind::Slack),
                ("pager", ReceiverKind::Cloudevents)
            ]
        );
        assert_eq!(
            config.console_url.as_deref(),
            Some("https://console.example.com")
        );
        assert_eq!(config.secret_values().len(), 2);
        // Debug output (what a log of the config would show) names the host, never the path.
        let shown = format!("{config:?}");
        assert!(shown.contains("hooks.slack.com"), "{shown}");
        assert!(!shown.contains("XXXXXXXX"), "{shown}");
        assert!(!shown.contains("abcdef"), "{shown}");
    }

    #[test]
    fn the_console_url_is_the_controllers_base_url() {
        let base = |url: &str| {
            NotifyArgs {
                console_url: Some(url.into()),
                ..args()
            }
            .into_config(|_| None)
            .map(|config| config.console_url)
            .map_err(|error| error.to_string())
        };
        for given in [
            "https://opslab.example.com",
            "https://opslab.example.com/",
            "https://opslab.example.com/ui",
            "https://opslab.example.com/ui/",
        ] {
            assert_eq!(
                base(given),
                Ok(Some("https://opslab.example.com".into())),
                "{given}"
            );
        }
        // A controller behind a proxy's path prefix keeps it.
        assert_eq!(
            base("https://example.com/opslab/"),
            Ok(Some("https://example.com/opslab".into()))
        );
        assert_eq!(base(" "), Ok(None));
        assert!(base("opslab.example.com").unwrap_err().contains("http://"));
    }

    #[test]
    fn bad_receivers_are_refused_without_showing_their_url() {
        let refused = |url: &str| {
            args()
                .into_config(|name| (name == WEBHOOK_URL_ENV).then(|| url.to_string()))
                .unwrap_err()
                .to_string()
        };
        let error = refused("ftp://files.example.com/secret-path-123");
        assert!(error.contains("http:// or https://"), "{error}");
        assert!(!error.contains("secret-path-123"), "{error}");
        let error = refused("not a url secret-path-123");
        assert!(error.contains("does not parse"), "{error}");
        assert!(!error.contains("secret-path-123"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("receivers.yaml");
        std::fs::write(
            &file,
            "receivers:\n  - name: Bad Name\n    type: slack\n    url: https://x.example.com/hook-secret\n",
        )
        .unwrap();
        let error = NotifyArgs {
            notify_receivers: Some(file.clone()),
            ..args()
        }
        .into_config(|_| None)
        .unwrap_err()
        .to_string();
        assert!(error.contains("receiver name"), "{error}");
        std::fs::write(&file, "receivers:\n  - name: a\n    type: email\n    url: https://x.example.com/hook-secret\n").unwrap();
        let error = NotifyArgs {
            notify_receivers: Some(file.clone()),
            ..args()
        }
        .into_config(|_| None)
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a receivers file"), "{error}");
        assert!(!error.contains("hook-secret"), "{error}");
        let error = NotifyArgs {
            notify_attempts: 0,
            ..args()
        }
        .into_config(|_| None)
        .unwrap_err()
        .to_string();
        assert!(error.contains("--notify-attempts"), "{error}");
    }
}
