//! Redaction of secrets from everything stored, logged, summarised or sent back to the model.
//! Applied before hashing, so the chain covers exactly what is kept.
//!
//! Three layers, in this order:
//! 1. the configured secret values (the API key, `--secret-env`), as whole tokens;
//! 2. our own rules ([`OWN_RULES`]): the shapes an incident trail is full of and a provider catalogue
//!    does not cover: `KEY=value`, `"key": "value"` and `--password value` where the key names a
//!    secret, `mysql -p<pw>`, `Authorization:` headers, URLs with credentials, webhook URLs, PEM
//!    private keys (also when cut open), JWTs; and the shapes the trail's markers are named after;
//! 3. the provider catalogue of the `redact-secret` crate (120 built-in detectors: GitHub, GitLab,
//!    Stripe, Google, npm, Slack, AWS, Azure, Twilio, SendGrid, Hugging Face, …, each checked against
//!    the provider's published format), with its default policy (a known credential type is
//!    redacted at any confidence, anything else only at high confidence).
//!
//! Why that crate: it is a library made for this job (text scanned before it reaches logs, storage
//! or a model's context), kept (frequent releases, a conformance corpus, a published support
//! matrix), and small to depend on (one dependency, no I/O, no unsafe). Its peers were not usable
//! as a library: ripsecrets keeps its rules private to a file-walking binary; secretscan exposes
//! its rules but drags in a CLI's dependencies and flags every quoted 40-hex string (a git SHA) and
//! long base64 (an image); keyhunter is GPL-3.0 and for JavaScript bundles; cribra needs a newer
//! Rust than ours.
//!
//! What stays readable, by rule: a `KEY=value` whose key names a policy about a secret rather than
//! the secret (a word like MIN, MAX, LENGTH, TTL, EXPIRES, FILE, PATH, TYPE in the key:
//! `PASSWORD_MIN_LENGTH=8`, `POSTGRES_PASSWORD_FILE=/run/secrets/db`, `token_type: bearer`); a key
//! whose secret word runs on into another word (`input_tokens`, `TOKENIZER`); prose (`reset your
//! password`); a keyed value that only says whether there is one (`using password: YES`,
//! `password: null`, `token: ***`); git SHAs, UUIDs and base64 data (no rule matches them without a secret's key).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, LazyLock, RwLock};

use redact_secret::{
    BuiltInRegistry, DefaultPolicy, Finding, FormatterFailure, PlaceholderContext,
};
use regex::{Regex, RegexSet};

/// Configured secrets shorter than this are refused at start: as whole tokens they would still
/// erase ordinary words (a key called `replay` would redact the model of the same name).
pub const MIN_CONFIGURED_SECRET_LEN: usize = 8;

/// The words that make a key name a secret (case-insensitive; `API_KEY` also as `api-key`, `apikey`).
const SECRET_WORDS: &str = r"pass(?:word|wd|phrase)|pwd|secret|token|api[_\-]?key|access[_\-]?key|account[_\-]?key|private[_\-]?key|credentials?|auth[_\-]?key|session[_\-]?key|signing[_\-]?key|encryption[_\-]?key|client[_\-]?secret";

/// A key name that holds a secret word as a whole part: `DB_PASSWORD`, `aws_session_token`,
/// `X-Api-Key`, `SECRET_KEY_BASE`; not `input_tokens` or `TOKENIZER`.
fn secret_key() -> String {
    format!(r"[A-Za-z0-9_.\-]*?(?i:{SECRET_WORDS})(?:[_.\-][A-Za-z0-9_.\-]*)?")
}

/// Words that make such a key name a setting about the secret rather than the secret itself.
static POLICY_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:^|[_.\-])(?:min|max|minimum|maximum|length|len|size|ttl|expiry|expires|expiration|expire|age|lifetime|timeout|file|path|dir|policy|enabled|required|count|attempts|retries|type|algorithm|rotation|header|name|prefix|url|endpoint|id)(?:$|[_.\-])",
    )
    .expect("a valid regex")
});

/// Values that say whether there is a secret, not what it is (`using password: YES`).
static NOT_A_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:yes|no|true|false|null|none|nil|on|off|enabled|disabled|required|set|unset|\*+)\)?$")
        .expect("a valid regex")
});

/// One of our own rules: a pattern, the marker's label, and which capture group is the secret
/// (0: the whole match; otherwise the text around the group is kept).
struct OwnRule {
    label: &'static str,
    pattern: String,
    secret_group: usize,
    /// Whether the key (capture group 1) must not name a policy, and the value must not be a marker.
    keyed: bool,
}

/// Our rules, in the order they apply.
fn own_rules() -> Vec<OwnRule> {
    [
        private_key_rules(),
        provider_token_rules(),
        request_credential_rules(),
        command_line_password_rules(),
        keyed_secret_rules(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A rule; `secret_group` and `keyed` as in [`OwnRule`].
fn rule(label: &'static str, pattern: &str, secret_group: usize, keyed: bool) -> OwnRule {
    OwnRule {
        label,
        pattern: pattern.to_string(),
        secret_group,
        keyed,
    }
}

fn private_key_rules() -> Vec<OwnRule> {
    vec![
        // PEM private keys, whole or cut open (a BEGIN line with its body and no END yet): the
        // header, base64 body lines, and `Proc-Type:`-style header lines up to the END line.
        rule(
            "private-key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[ \t]*\r?\n(?:[A-Za-z\-]+: [^\n]*|[A-Za-z0-9+/=]+)?)*(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?",
            0,
            false,
        ),
    ]
}

/// Tokens whose own shape names their provider.
fn provider_token_rules() -> Vec<OwnRule> {
    vec![
        rule("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{10,}", 0, false),
        rule(
            "openai-key",
            r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
            0,
            false,
        ),
        rule(
            "aws-access-key-id",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            0,
            false,
        ),
        rule(
            "github-token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
            0,
            false,
        ),
        rule("slack-token", r"\bxox[abeprs]-[A-Za-z0-9\-]{10,}", 0, false),
        rule(
            "gitlab-token",
            r"\bgl(?:pat|dt|rt|cbt|ptt|ft|imt|agent|oas|soat)-[A-Za-z0-9_\-]{20,}",
            0,
            false,
        ),
        rule(
            "stripe-key",
            r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
            0,
            false,
        ),
        rule("google-api-key", r"\bAIza[0-9A-Za-z_\-]{30,}", 0, false),
        rule("npm-token", r"\bnpm_[A-Za-z0-9]{30,}", 0, false),
        rule(
            "age-secret-key",
            r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b",
            0,
            false,
        ),
    ]
}

/// Credentials a request carries: JWTs, webhook URLs, `Authorization` headers, URL passwords.
fn request_credential_rules() -> Vec<OwnRule> {
    vec![
        rule(
            "jwt",
            r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
            0,
            false,
        ),
        rule(
            "webhook-url",
            r"https://(?:hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]+|(?:discord(?:app)?\.com)/api/webhooks/[0-9]+/[A-Za-z0-9_\-]+|[a-z0-9\-]+\.webhook\.office\.com/[^\s\x22']+)",
            0,
            false,
        ),
        // `Authorization: Basic …`, `Authorization: Bearer …`, `Authorization: token …`, as a header
        // or a JSON/YAML field.
        rule(
            "authorization",
            r#"(?i)(authorization["']?\s*[:=]\s*["']?(?:basic|bearer|token|digest|negotiate|apikey)?\s*)([A-Za-z0-9+/_.~=\-]{8,})"#,
            2,
            false,
        ),
        rule(
            "bearer-token",
            r"(?i)(\bbearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)",
            2,
            false,
        ),
        rule(
            "password",
            r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^@\s/]+)(@)",
            2,
            false,
        ),
    ]
}

/// Passwords given to a command on its command line.
fn command_line_password_rules() -> Vec<OwnRule> {
    vec![
        // `mysql -p<pw>` (and mysqldump, mysqladmin, mariadb): the password is glued to -p.
        rule(
            "password",
            r"(\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b[^\n|;&]*?\s-p)([^\s]+)",
            2,
            false,
        ),
        // `curl -u user:password`, `curl --user user:password`.
        rule(
            "password",
            r#"(\bcurl\b[^\n|;&]*?\s(?:-u|--user)[ =]?["']?[^\s:"']+:)([^\s"'@]+)"#,
            2,
            false,
        ),
        // `redis-cli -a <pw>`, `sshpass -p <pw>`.
        rule(
            "password",
            r"(\b(?:redis-cli\b[^\n|;&]*?\s-a|sshpass\b[^\n|;&]*?\s-p)\s+)([^\s]+)",
            2,
            false,
        ),
        // `--password value`, `--db-password=value`, `--api-key value`, `--token value`.
        rule(
            "password",
            &format!(
                r#"(\s--?(?:[A-Za-z0-9]+-)*(?i:{SECRET_WORDS})(?:=|\s+))([^\s"'-][^\s"']*|"[^"\n]*"|'[^'\n]*')"#
            ),
            2,
            false,
        ),
    ]
}

/// Values whose key names a secret.
fn keyed_secret_rules() -> Vec<OwnRule> {
    let key = secret_key();
    vec![
        // `"key": "value"`, `key: 'value'`, `KEY="value"`: quoted values, which may hold spaces.
        rule(
            "secret",
            &format!(r#"(\b{key})(["']?\s*[=:]\s*)("(?:[^"\\\n]|\\.)+"|'[^'\n]+')"#),
            3,
            true,
        ),
        // `KEY=value`, `key: value`: the value up to white space, a quote or a separator.
        rule(
            "secret",
            &format!(r#"(\b{key})(["']?[ \t]*[=:][ \t]*)([^\s"',;&}}{{\]\[<>][^\s"',;&}}{{<>]*)"#),
            3,
            true,
        ),
    ]
}

/// Word boundaries in ASCII terms: the Unicode ones keep the regex engine off its fast path on
/// non-ASCII text, and every shape here is ASCII.
fn ascii_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)")
}

/// How a marker this redactor wrote begins. Markers are kept as they are, so a configured value
/// that occurs inside one (`password`, `REDACTED`) or a rule that would match one cannot rewrite
/// it: redaction stays idempotent.
const MARKER_PREFIX: &str = "[REDACTED:";

/// The provider catalogue, built once: it is immutable and shared by every redactor.
static CATALOGUE: LazyLock<Option<BuiltInRegistry>> =
    LazyLock::new(|| BuiltInRegistry::with_built_in().ok());

/// Our rules, compiled once.
struct Compiled {
    any: RegexSet,
    rules: Vec<(Regex, &'static str, usize, bool)>,
}

static OWN_RULES: LazyLock<Compiled> = LazyLock::new(|| {
    let rules = own_rules();
    let any = RegexSet::new(rules.iter().map(|rule| ascii_boundaries(&rule.pattern)))
        .expect("the redaction rules are valid regexes");
    let rules = rules
        .into_iter()
        .map(|rule| {
            (
                Regex::new(&ascii_boundaries(&rule.pattern))
                    .expect("the redaction rules are valid regexes"),
                rule.label,
                rule.secret_group,
                rule.keyed,
            )
        })
        .collect();
    Compiled { any, rules }
});

#[derive(Clone)]
pub struct Redactor {
    /// The secret values, shared by every clone: a value held for a while (a session's token) is
    /// redacted by the store, the sandboxes' output and the notifications alike.
    values: Arc<RwLock<Values>>,
}

/// The configured values, those held now, and all of them as one alternation, longest first.
#[derive(Default)]
struct Values {
    configured: Vec<String>,
    held: Vec<String>,
    compiled: Option<Arc<Regex>>,
}

impl Values {
    fn compile(&mut self) {
        let mut values: Vec<&String> = self.configured.iter().chain(&self.held).collect();
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        self.compiled = (!values.is_empty()).then(|| {
            let alternation: Vec<String> =
                values.iter().map(|value| regex::escape(value)).collect();
            Arc::new(Regex::new(&alternation.join("|")).expect("escaped values form a valid regex"))
        });
    }
}

/// A secret the redactor redacts for as long as this is kept (see [`Redactor::hold`]).
#[must_use = "the value is redacted only while this is kept"]
pub struct HeldSecret {
    values: Arc<RwLock<Values>>,
    value: String,
}

impl Drop for HeldSecret {
    fn drop(&mut self) {
        let mut values = self
            .values
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = values.held.iter().position(|held| *held == self.value) {
            values.held.swap_remove(index);
            values.compile();
        }
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values themselves.
        f.debug_struct("Redactor")
            .field("configured_values", &self.compiled().is_some())
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(Vec::new())
    }
}

/// A configured secret too short to redact: a shorter one would erase ordinary words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "it is {length} characters long; a secret to redact must be at least {MIN_CONFIGURED_SECRET_LEN} (a shorter one would erase ordinary words from the trail)"
)]
pub struct SecretTooShort {
    pub length: usize,
}

/// Why a configured secret cannot be used.
pub fn check_configured_secret(value: &str) -> Result<(), SecretTooShort> {
    let length = value.trim().chars().count();
    if length < MIN_CONFIGURED_SECRET_LEN {
        return Err(SecretTooShort { length });
    }
    Ok(())
}

impl Redactor {
    /// A redactor for the known shapes and these exact values. Values shorter than
    /// [`MIN_CONFIGURED_SECRET_LEN`] are left out (the CLI refuses them at start).
    pub fn new(secret_values: Vec<String>) -> Self {
        let mut values = Values {
            configured: secret_values
                .into_iter()
                .map(|value| value.trim().to_string())
                .filter(|value| check_configured_secret(value).is_ok())
                .collect(),
            ..Values::default()
        };
        values.compile();
        // Build the shared rules now rather than on the first event.
        LazyLock::force(&OWN_RULES);
        LazyLock::force(&CATALOGUE);
        Redactor {
            values: Arc::new(RwLock::new(values)),
        }
    }

    /// Redacts `value` as a configured secret, here and in every clone, until the returned guard
    /// is dropped: for a secret that lives as long as a session (its Kubernetes token). A value
    /// too short to redact safely is refused.
    pub fn hold(&self, value: &str) -> Result<HeldSecret, SecretTooShort> {
        let value = value.trim().to_string();
        check_configured_secret(&value)?;
        let mut values = self
            .values
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        values.held.push(value.clone());
        values.compile();
        Ok(HeldSecret {
            values: self.values.clone(),
            value,
        })
    }

    fn compiled(&self) -> Option<Arc<Regex>> {
        self.values
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .compiled
            .clone()
    }

    /// The text with every secret replaced by a `[REDACTED:…]` marker. Idempotent.
    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    /// A text still being written (a streamed answer), redacted: its last word is held back until
    /// it ends, since a secret cut off mid-way matches no rule yet; the rest is redacted as any
    /// text is.
    pub fn redact_unfinished(&self, text: &str) -> String {
        self.redact(text.trim_end_matches(|c: char| !c.is_whitespace()))
    }

    fn redact_cow<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        if let Some(replaced) = self.redact_values(&text) {
            text = Cow::Owned(replaced);
        }
        if let Some(replaced) = redact_own(&text) {
            text = Cow::Owned(replaced);
        }
        if let Some(replaced) = redact_catalogue(&text) {
            text = Cow::Owned(replaced);
        }
        text
    }

    /// Where secrets are in `text`, as byte ranges (overlapping ones may be listed apart). A cut
    /// that falls outside them never splits a secret.
    pub fn secret_spans(&self, text: &str) -> Vec<Range<usize>> {
        let mut spans: Vec<Range<usize>> = Vec::new();
        if let Some(values) = self.compiled() {
            spans.extend(whole_tokens(&values, text));
        }
        let own = &*OWN_RULES;
        for index in own.any.matches(text).iter() {
            let (rule, ..) = &own.rules[index];
            spans.extend(rule.find_iter(text).map(|found| found.range()));
        }
        if let Some(catalogue) = &*CATALOGUE
            && may_hold_a_credential(text)
            && let Ok(findings) = catalogue.scan(text, &DefaultPolicy)
        {
            spans.extend(
                findings
                    .iter()
                    .map(|finding| finding.range().start()..finding.range().end()),
            );
        }
        spans
    }

    fn redact_values(&self, text: &str) -> Option<String> {
        let values = self.compiled()?;
        let found = whole_tokens(&values, text);
        if found.is_empty() {
            return None;
        }
        let markers = markers(text);
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for range in found {
            // Part of a marker already written (a value like `REDACTED`): keep it.
            if overlaps_marker(&markers, &range) {
                continue;
            }
            out.push_str(&text[last..range.start]);
            out.push_str("[REDACTED:secret]");
            last = range.end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// A value stored under a name (a label, an annotation, a JSON key): whole when the name
    /// says it is a secret (`DB_PASSWORD`), as with `DB_PASSWORD=...` in text; else as text.
    pub fn redact_entry(&self, key: &str, value: &str) -> String {
        if holds_a_secret(key, value) {
            "[REDACTED:secret]".to_string()
        } else {
            self.redact(value)
        }
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
                    // `{"DB_PASSWORD": "..."}` as data rather than text: the key says what the
                    // value is, as in `DB_PASSWORD=...`.
                    if let serde_json::Value::String(text) = &mut item {
                        *text = self.redact_entry(&key, text);
                    } else {
                        self.redact_json(&mut item);
                    }
                    map.insert(self.redact(&key), item);
                }
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            }
        }
    }
}

/// A key name that is a secret's, whole (`DB_PASSWORD`, `api-key`), and not a setting about one.
static SECRET_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{}$", secret_key())).expect("a valid regex"));

/// Whether a value under `key` is a secret by its key, as our keyed rules judge it.
fn holds_a_secret(key: &str, value: &str) -> bool {
    !value.is_empty()
        && SECRET_KEY.is_match(key)
        && !POLICY_KEY.is_match(key)
        && !NOT_A_SECRET.is_match(value)
        && !value.starts_with(MARKER_PREFIX)
}

/// A character that continues a token: a configured value next to one is part of a longer word.
fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The occurrences of the values that stand as whole tokens, in order, not overlapping.
fn whole_tokens(values: &Regex, text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(hit) = values.find_at(text, at) {
        let before = text[..hit.start()].chars().next_back();
        let after = text[hit.end()..].chars().next();
        if before.is_some_and(is_token_char) || after.is_some_and(is_token_char) {
            // Part of a longer word: look again one character on.
            at = hit.start() + text[hit.start()..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        found.push(hit.range());
        at = hit.end();
    }
    found
}

/// The markers already in `text`.
static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[REDACTED:[a-z0-9\-]+\]").expect("a valid regex"));

/// Whether `range` overlaps a marker already in the text (`markers`: their ranges, in order).
fn overlaps_marker(markers: &[Range<usize>], range: &Range<usize>) -> bool {
    markers
        .iter()
        .any(|marker| marker.start < range.end && range.start < marker.end)
}

fn markers(text: &str) -> Vec<Range<usize>> {
    if !text.contains(MARKER_PREFIX) {
        return Vec::new();
    }
    MARKER.find_iter(text).map(|found| found.range()).collect()
}

fn redact_own(text: &str) -> Option<String> {
    let own = &*OWN_RULES;
    let matched = own.any.matches(text);
    if !matched.matched_any() {
        return None;
    }
    let mut text = text.to_string();
    for index in matched.iter() {
        let (rule, label, group, keyed) = &own.rules[index];
        let markers = markers(&text);
        let replaced = rule.replace_all(&text, |found: &regex::Captures<'_>| {
            let whole = found.get(0).expect("group 0 is the match");
            let secret = found.get(*group).expect("the rule has its secret group");
            let value = secret.as_str().trim_matches(['"', '\'']);
            let keep = value.starts_with(MARKER_PREFIX)
                || overlaps_marker(&markers, &secret.range())
                || (*keyed && (POLICY_KEY.is_match(&found[1]) || NOT_A_SECRET.is_match(value)));
            if keep {
                return whole.as_str().to_string();
            }
            let quote = match secret.as_str().chars().next() {
                Some(q @ ('"' | '\'')) if *group != 0 => q.to_string(),
                _ => String::new(),
            };
            let start = secret.start() - whole.start();
            let end = secret.end() - whole.start();
            format!(
                "{}{quote}[REDACTED:{label}]{quote}{}",
                &whole.as_str()[..start],
                &whole.as_str()[end..]
            )
        });
        if let Cow::Owned(replaced) = replaced {
            text = replaced;
        }
    }
    Some(text)
}

/// The catalogue's marker: `[REDACTED:<finding type>]`, the type in lower case with `-`.
fn catalogue_marker(
    finding: &Finding,
    _context: &PlaceholderContext,
) -> Result<String, FormatterFailure> {
    let label = finding
        .type_name()
        .to_ascii_lowercase()
        .replace(['.', '_'], "-");
    Ok(format!("[REDACTED:{label}]"))
}

/// The shortest run of token characters the catalogue is asked about: every provider format in it
/// is a token of at least this many (most of 20 to 100); shorter secrets come with a key, a
/// scheme or a flag, and are our own rules' to find. Most of what is redacted (commands, prose,
/// log lines, the events' field names) has no such run, and skips the catalogue's 120 detectors:
/// that keeps an append's redaction within a few microseconds.
const CATALOGUE_MIN_TOKEN: usize = 16;

/// Whether `text` has a run of [`CATALOGUE_MIN_TOKEN`] characters a credential is made of.
fn may_hold_a_credential(text: &str) -> bool {
    let mut run = 0;
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=' | b'_' | b'-' | b'.') {
            run += 1;
            if run >= CATALOGUE_MIN_TOKEN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn redact_catalogue(text: &str) -> Option<String> {
    let catalogue = CATALOGUE.as_ref()?;
    if !may_hold_a_credential(text) {
        return None;
    }
    match catalogue.scan_and_redact(text, &DefaultPolicy, &catalogue_marker) {
        Ok(result) if result.findings().is_empty() => None,
        Ok(result) => Some(result.into_parts().0),
        // The catalogue refused the text (its limits: 64 MiB, 50,000 findings): nothing of it is
        // kept rather than something unscanned.
        Err(_) => Some("[REDACTED:unscannable]".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Redactor::default().redact(text)
    }

    /// A body of `length` characters that looks random enough for the catalogue's checks.
    fn body(seed: usize, length: usize) -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..length)
            .map(|j| alphabet[(seed * 7919 + j * 104_729 + j * j) % alphabet.len()] as char)
            .collect()
    }

    #[test]
    fn each_known_shape_is_redacted_with_its_context_kept() {
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
                "token ghp_0123456789abcdefghijABCDEFGHIJklmnopqr",
                "token [REDACTED:github-token]",
            ),
            (
                "SLACK=xoxb-1234567890-abcdefghij",
                "SLACK=[REDACTED:slack-token]",
            ),
            (
                "postgres://admin:hunter2secret@db:5432/app",
                "postgres://admin:[REDACTED:password]@db:5432/app",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nafter",
                "[REDACTED:private-key]\nafter",
            ),
            (
                "DB_PASSWORD=Sup3rS3cretPass",
                "DB_PASSWORD=[REDACTED:secret]",
            ),
            (
                "POSTGRES_PASSWORD=hunter2hunter2 PGDATA=/var/lib/x",
                "POSTGRES_PASSWORD=[REDACTED:secret] PGDATA=/var/lib/x",
            ),
            ("password=correcthorse", "password=[REDACTED:secret]"),
            (
                r#"{"password": "Tr0ub4dor &3", "user": "app"}"#,
                r#"{"password": "[REDACTED:secret]", "user": "app"}"#,
            ),
            ("api_key: 'abc def 123'", "api_key: '[REDACTED:secret]'"),
            (
                "mysql -uroot -pS3cretPw9 -h db",
                "mysql -uroot -p[REDACTED:password] -h db",
            ),
            ("mysql -u root -p app", "mysql -u root -p app"),
            (
                "psql --password s3cr3tValue1 -h db",
                "psql --password [REDACTED:password] -h db",
            ),
            (
                "app --db-password=s3cr3tValue1 --verbose",
                "app --db-password=[REDACTED:password] --verbose",
            ),
            (
                "curl -s -u deploy:Zq8Wm2Lp5Rt9 https://x",
                "curl -s -u deploy:[REDACTED:password] https://x",
            ),
            (
                "Authorization: Basic YWRtaW46c2VjcmV0cGFzc3dvcmQ=",
                "Authorization: Basic [REDACTED:authorization]",
            ),
            (
                "curl -H 'Authorization: Bearer abcdefghijklmnop' x",
                "curl -H 'Authorization: Bearer [REDACTED:authorization]' x",
            ),
            (
                "aws_session_token=IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD",
                "aws_session_token=[REDACTED:secret]",
            ),
            (
                "url https://hooks.slack.com/services/T0ABCDEFG/B0ABCDEFG/abcdefghijklmnopqrstuvwx ok",
                "url [REDACTED:webhook-url] ok",
            ),
            ("glpat-abcdefghij0123456789 x", "[REDACTED:gitlab-token] x"),
            (
                "k sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "k [REDACTED:stripe-key]",
            ),
            (
                "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
                "[REDACTED:google-api-key]",
            ),
            (
                "npm_abcdefghijklmnopqrstuvwxyz0123456789",
                "[REDACTED:npm-token]",
            ),
            (
                "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
                "t=[REDACTED:jwt]",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn a_private_key_cut_open_is_redacted_to_its_last_body_line() {
        let text = format!(
            "before\n-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n{}",
            body(1, 70),
            body(2, 40)
        );
        assert_eq!(redact(&text), "before\n[REDACTED:private-key]");
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B\n\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(redact(encrypted), "[REDACTED:private-key]");
    }

    #[test]
    fn the_catalogue_finds_provider_formats_we_have_no_rule_for() {
        // SendGrid and Hugging Face: no rule of ours, the crate's catalogue.
        let sendgrid = format!("SG.{}.{}", body(3, 22), body(4, 43));
        let hugging_face = format!("hf_{}", body(5, 34));
        for secret in [sendgrid, hugging_face] {
            let redacted = redact(&format!("found {secret} here"));
            assert!(!redacted.contains(&secret), "{redacted}");
            assert!(redacted.contains("[REDACTED:"), "{redacted}");
        }
    }

    #[test]
    fn only_text_with_a_long_token_is_shown_to_the_catalogue() {
        assert!(!may_hold_a_credential(
            "docker logs --tail 50 api | grep -i error"
        ));
        assert!(!may_hold_a_credential("timeout_seconds"));
        assert!(may_hold_a_credential("key hf_abcdefghijklmnop"));
        assert!(may_hold_a_credential(
            "id 123e4567-e89b-12d3-a456-426614174000"
        ));
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in [
            "task-ant-farm is a service",
            "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345",
            "sha \"3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345\"",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "http://api:8080/health",
            "user@example.com wrote: sk is short",
            "ask-anyone-about-it",
            "PASSWORD_MIN_LENGTH=8",
            "password_max_age: 90",
            "POSTGRES_PASSWORD_FILE=/run/secrets/db",
            "token_type: bearer",
            r#"{"input_tokens": 1200, "output_tokens": 80}"#,
            "TOKENIZER=bert-base",
            "please reset your password at the portal; the secret is patience",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "mysql -u root -p app",
            "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)",
            "listen 0.0.0.0:5432; upstream db:5432 refused",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn a_held_secret_is_redacted_by_every_clone_until_let_go() {
        let redactor = Redactor::new(vec!["configured-value-1".into()]);
        let clone = redactor.clone();
        let text = "token held-token-0f3a9 and configured-value-1";
        assert_eq!(
            clone.redact(text),
            "token held-token-0f3a9 and [REDACTED:secret]"
        );
        let held = redactor.hold("held-token-0f3a9").unwrap();
        assert_eq!(
            clone.redact(text),
            "token [REDACTED:secret] and [REDACTED:secret]"
        );
        assert_eq!(clone.secret_spans(text).len(), 2);
        drop(held);
        assert_eq!(
            clone.redact(text),
            "token held-token-0f3a9 and [REDACTED:secret]"
        );
        assert!(
            redactor.hold("short").is_err(),
            "too short to redact safely"
        );
    }

    #[test]
    fn configured_values_are_whole_tokens_of_eight_characters_or_more() {
        let redactor = Redactor::new(vec![
            "hunter2-long".into(),
            "replay".into(),
            "abc".into(),
            "s3cretvalue".into(),
        ]);
        assert_eq!(
            redactor.redact("pw hunter2-long, model replay, abc, s3cretvalue."),
            "pw [REDACTED:secret], model replay, abc, [REDACTED:secret]."
        );
        // Inside a longer word it is not the secret.
        assert_eq!(
            redactor.redact("xs3cretvalue s3cretvalue_2"),
            "xs3cretvalue s3cretvalue_2"
        );
        assert_eq!(
            redactor.redact("u:s3cretvalue@db 's3cretvalue'"),
            "u:[REDACTED:secret]@db '[REDACTED:secret]'"
        );
        assert!(check_configured_secret("replay").is_err());
        assert!(check_configured_secret("test-key").is_ok());
    }

    #[test]
    fn redaction_is_idempotent() {
        let redactor = Redactor::new(vec!["s3cret-value".into()]);
        let once = redactor.redact(
            "s3cret-value Bearer abcdefghijkl sk-ant-0123456789abcdef DB_PASSWORD=x1y2z3w4 \"token\": \"abcdefgh\"",
        );
        assert_eq!(redactor.redact(&once), once);
    }

    #[test]
    fn configured_values_never_rewrite_a_marker() {
        // Values that occur inside the markers themselves.
        let redactor = Redactor::new(vec!["password".into(), "REDACTED".into()]);
        let once =
            redactor.redact("postgres://app:password@db/x, password, a sk-ant-0123456789abcdef");
        assert_eq!(
            once,
            "postgres://app:[REDACTED:secret]@db/x, [REDACTED:secret], a [REDACTED:anthropic-key]"
        );
        assert_eq!(redactor.redact(&once), once);
    }

    #[test]
    fn spans_cover_every_secret() {
        let redactor = Redactor::new(vec!["configured-123".into()]);
        let text = "a configured-123 b ghp_0123456789abcdefghijABCDEFGHIJklmnopqr c";
        let spans = redactor.secret_spans(text);
        for secret in [
            "configured-123",
            "ghp_0123456789abcdefghijABCDEFGHIJklmnopqr",
        ] {
            let start = text.find(secret).unwrap();
            assert!(
                spans
                    .iter()
                    .any(|span| span.start <= start && span.end >= start + secret.len()),
                "{secret}: {spans:?}"
            );
        }
        assert!(redactor.secret_spans("nothing here").is_empty());
    }

    #[test]
    fn json_values_under_a_secret_key_are_redacted() {
        let mut value = serde_json::json!({
            "env": {"DB_PASSWORD": "short pw", "PASSWORD_MIN_LENGTH": "8", "LOG_LEVEL": "debug"},
            "apiKey": "k1", "token": true, "input_tokens": "12"
        });
        Redactor::default().redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "env": {"DB_PASSWORD": "[REDACTED:secret]", "PASSWORD_MIN_LENGTH": "8", "LOG_LEVEL": "debug"},
                "apiKey": "[REDACTED:secret]", "token": true, "input_tokens": "12"
            })
        );
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
