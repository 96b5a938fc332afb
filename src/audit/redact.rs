//! Redaction of secrets from everything stored, logged, summarised or sent back to the model.
//! Applied before hashing, so the chain covers exactly what is kept.

use std::borrow::Cow;

use regex::{Regex, RegexSet};

/// Known secret shapes: (label, pattern, replacement). A replacement keeps the non-secret context
/// (`$1`) where the pattern captures one. Order matters: the narrower shape first.
const SHAPES: &[(&str, &str, &str)] = &[
    (
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
        "[REDACTED:private-key]",
    ),
    (
        "anthropic-key",
        r"sk-ant-[A-Za-z0-9_\-]{10,}",
        "[REDACTED:anthropic-key]",
    ),
    (
        "openai-key",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
        "[REDACTED:openai-key]",
    ),
    (
        "aws-access-key-id",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        "[REDACTED:aws-access-key-id]",
    ),
    (
        "aws-secret-key",
        r#"(?i)(aws_secret_access_key["']?\s*[=:]\s*["']?)[A-Za-z0-9/+=]{40}"#,
        "${1}[REDACTED:aws-secret-key]",
    ),
    (
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        "[REDACTED:github-token]",
    ),
    (
        "slack-token",
        r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
        "[REDACTED:slack-token]",
    ),
    (
        "bearer-token",
        r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
        "${1}[REDACTED:bearer-token]",
    ),
    (
        "url-password",
        r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+(@)",
        "${1}[REDACTED:password]${2}",
    ),
];

/// Values shorter than this are not redacted: they would shred ordinary text.
const MIN_SECRET_LEN: usize = 4;

/// A marker this redactor wrote. Matched ahead of the configured values and kept as it is, so a
/// value that occurs inside a marker (`secret`, `password`) cannot rewrite it: redaction stays
/// idempotent.
const MARKER: &str = r"\[REDACTED:[a-z\-]+\]";

#[derive(Clone, Debug)]
pub struct Redactor {
    /// A quick test: does any shape match at all?
    any: RegexSet,
    shapes: Vec<(Regex, &'static str)>,
    /// The configured secret values, as one alternation, longest first, after [`MARKER`] (group 1).
    values: Option<Regex>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(Vec::new())
    }
}

impl Redactor {
    /// A redactor for the known shapes and these exact values.
    pub fn new(secret_values: Vec<String>) -> Self {
        let patterns: Vec<&str> = SHAPES.iter().map(|(_, pattern, _)| *pattern).collect();
        let any = RegexSet::new(&patterns).expect("the secret shapes are valid regexes");
        let shapes = SHAPES
            .iter()
            .map(|(_, pattern, replacement)| {
                (
                    Regex::new(pattern).expect("the secret shapes are valid regexes"),
                    *replacement,
                )
            })
            .collect();
        let mut values: Vec<String> = secret_values
            .into_iter()
            .map(|value| value.trim().to_string())
            .filter(|value| value.len() >= MIN_SECRET_LEN)
            .collect();
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        let values = (!values.is_empty()).then(|| {
            let alternation: Vec<String> = std::iter::once(format!("({MARKER})"))
                .chain(values.iter().map(|value| regex::escape(value)))
                .collect();
            Regex::new(&alternation.join("|")).expect("escaped values form a valid regex")
        });
        Redactor {
            any,
            shapes,
            values,
        }
    }

    /// The text with every secret replaced by a `[REDACTED:…]` marker. Idempotent.
    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    fn redact_cow<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        if let Some(values) = &self.values
            && values.is_match(&text)
        {
            let replaced = values.replace_all(&text, |found: &regex::Captures<'_>| {
                if found.get(1).is_some() {
                    found[0].to_string()
                } else {
                    "[REDACTED:secret]".to_string()
                }
            });
            text = Cow::Owned(replaced.into_owned());
        }
        if !self.any.is_match(&text) {
            return text;
        }
        for (shape, replacement) in &self.shapes {
            if let Cow::Owned(replaced) = shape.replace_all(&text, *replacement) {
                text = Cow::Owned(replaced);
            }
        }
        text
    }

    /// Redacts every string (and object key) inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact_cow(text) {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|item| self.redact_json(item))
            }
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_json(&mut item);
                    map.insert(self.redact(&key), item);
                }
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Redactor::default().redact(text)
    }

    #[test]
    fn each_known_shape_is_redacted() {
        let cases = [
            (
                "key sk-ant-api03-AbCdEf0123456789_xyz-QQ end",
                "key [REDACTED:anthropic-key] end",
            ),
            (
                "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx123",
                "OPENAI_API_KEY=[REDACTED:openai-key]",
            ),
            (
                "id AKIAIOSFODNN7EXAMPLE.",
                "id [REDACTED:aws-access-key-id].",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED:aws-secret-key]",
            ),
            (
                "token ghp_0123456789abcdefghijABCDEFGHIJklmnopqr",
                "token [REDACTED:github-token]",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                "[REDACTED:github-token]",
            ),
            (
                "SLACK=xoxb-1234567890-abcdefghij",
                "SLACK=[REDACTED:slack-token]",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
                "Authorization: Bearer [REDACTED:bearer-token]",
            ),
            (
                "postgres://admin:hunter2secret@db:5432/app",
                "postgres://admin:[REDACTED:password]@db:5432/app",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nafter",
                "[REDACTED:private-key]\nafter",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in [
            "task-ant-farm is a service",
            "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345",
            "http://api:8080/health",
            "user@example.com wrote: sk is short",
            "ask-anyone-about-it",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn configured_values_are_redacted_longest_first_and_short_ones_ignored() {
        let redactor = Redactor::new(vec!["hunter2-long".into(), "hunter2".into(), "abc".into()]);
        assert_eq!(
            redactor.redact("pw hunter2-long or hunter2, abc"),
            "pw [REDACTED:secret] or [REDACTED:secret], abc"
        );
    }

    #[test]
    fn redaction_is_idempotent() {
        let redactor = Redactor::new(vec!["s3cret-value".into()]);
        let once = redactor.redact("s3cret-value Bearer abcdefghijkl sk-ant-0123456789abcdef");
        assert_eq!(redactor.redact(&once), once);
    }

    #[test]
    fn configured_values_never_rewrite_a_marker() {
        // Values that occur inside the markers themselves.
        let redactor = Redactor::new(vec!["password".into(), "secret".into(), "REDACTED".into()]);
        let once =
            redactor.redact("postgres://app:password@db/x, secret, a sk-ant-0123456789abcdef");
        assert_eq!(
            once,
            "postgres://app:[REDACTED:password]@db/x, [REDACTED:secret], a [REDACTED:anthropic-key]"
        );
        assert_eq!(redactor.redact(&once), once);
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let mut value = serde_json::json!({"output": ["x sk-ant-0123456789abcdef"], "n": 1});
        Redactor::default().redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"output": ["x [REDACTED:anthropic-key]"], "n": 1})
        );
    }
}
