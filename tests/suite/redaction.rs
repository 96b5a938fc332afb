//! Redaction, end to end: a corpus of secret shapes placed in command output, in the ticket, in the
//! model's reasoning and in a tool argument, then looked for in every place a session writes or
//! sends text: the store's file, the controller's log, `opslab show` in every format, the status
//! file, and what the model server and the summariser received. Also placed across the output cap
//! and across the chunks the output arrives in: not one fragment of 8 characters may be kept.

use std::collections::HashSet;
use std::time::Duration;

use opslab::audit::Redactor;
use opslab::incident::Phase;

use crate::support::controller::{Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

const SESSION_TIMEOUT: Duration = Duration::from_secs(180);

/// The shortest piece of a secret that must not be kept.
const FRAGMENT: usize = 8;

/// One secret as it is placed in text, and the part of it that is secret (what must not leak; the
/// context around it, like `DB_PASSWORD=`, may stay).
struct Shape {
    name: &'static str,
    placed: String,
    secret: String,
}

/// `length` characters from `alphabet`, different for each `seed`, random-looking enough for the
/// redactor's checks on a real credential.
fn body(seed: usize, length: usize, alphabet: &[u8]) -> String {
    // xorshift64*, seeded per shape.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (seed as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    (0..length)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
            alphabet[(value % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BECH32: &[u8] = b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(kind: &str, seed: usize) -> (String, String) {
    let lines: Vec<String> = (0..12).map(|i| body(seed * 100 + i, 64, BASE64)).collect();
    let key_body = lines.join("\n");
    (
        format!("-----BEGIN {kind}-----\n{key_body}\n-----END {kind}-----"),
        key_body,
    )
}

/// The corpus: at least 60 shapes, the 30 of the hostile test among them.
fn corpus() -> Vec<Shape> {
    let mut shapes = Vec::new();
    let mut add = |name: &'static str, placed: String, secret: String| {
        shapes.push(Shape {
            name,
            placed,
            secret,
        })
    };
    let s = |seed: usize, length: usize| body(seed, length, ALNUM);
    // A public prefix and the secret after it: the prefix alone is not looked for.
    let prefixed = |prefix: &str, secret: String| (format!("{prefix}{secret}"), secret);
    let keyed = |prefix: &str, secret: String| (format!("{prefix}{secret}"), secret);

    macro_rules! shape {
        ($name:expr, $pair:expr) => {{
            let (placed, secret) = $pair;
            add($name, placed, secret);
        }};
    }
    shape!("anthropic", prefixed("sk-ant-api03-", s(1, 90)));
    shape!("openai project", prefixed("sk-proj-", s(2, 48)));
    shape!("openai legacy", prefixed("sk-", s(3, 48)));
    shape!("aws access key id", prefixed("AKIA", body(4, 16, UPPER)));
    shape!("aws temporary key id", prefixed("ASIA", body(5, 16, UPPER)));
    shape!(
        "aws secret key",
        keyed("aws_secret_access_key = ", body(6, 40, BASE64))
    );
    shape!(
        "aws session token",
        keyed(
            "aws_session_token=",
            format!("IQoJb3JpZ2luX2Vj{}", body(7, 120, BASE64))
        )
    );
    shape!("github classic", prefixed("ghp_", s(8, 36)));
    shape!("github oauth", prefixed("gho_", s(9, 36)));
    shape!("github app", prefixed("ghs_", s(10, 36)));
    shape!("github fine-grained", prefixed("github_pat_", s(11, 82)));
    shape!("gitlab", prefixed("glpat-", s(12, 20)));
    shape!("stripe secret", prefixed("sk_live_", s(13, 24)));
    shape!("stripe restricted", prefixed("rk_live_", s(14, 24)));
    shape!("google api key", prefixed("AIza", s(15, 35)));
    shape!("npm", prefixed("npm_", s(16, 36)));
    shape!(
        "slack bot",
        prefixed("xoxb-1234567890-1234567890-", s(17, 24))
    );
    shape!(
        "slack user",
        prefixed("xoxp-1234567890-1234567890-", s(18, 24))
    );
    shape!(
        "slack webhook",
        prefixed(
            "https://hooks.slack.com/services/",
            format!(
                "T{}/B{}/{}",
                body(19, 8, UPPER),
                body(20, 10, UPPER),
                s(21, 24)
            )
        )
    );
    shape!(
        "discord webhook",
        prefixed(
            "https://discord.com/api/webhooks/123456789012345678/",
            s(22, 68)
        )
    );
    shape!(
        "jwt",
        prefixed(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
            format!(
                "{}.{}",
                base64(format!("{{\"sub\":\"{}\",\"role\":\"admin\"}}", s(23, 20)).as_bytes())
                    .trim_end_matches('='),
                s(24, 43)
            )
        )
    );
    shape!(
        "basic auth header",
        keyed(
            "Authorization: Basic ",
            base64(format!("{}:{}", s(125, 8), s(25, 16)).as_bytes())
        )
    );
    shape!("bearer header", keyed("Authorization: Bearer ", s(26, 40)));
    shape!("bearer", keyed("curl -H 'x: Bearer ", s(27, 32)));
    shape!("api key header", keyed("x-api-key: ", s(28, 40)));
    shape!("postgres url", {
        let pw = s(29, 16);
        (format!("postgres://admin:{pw}@db:5432/app"), pw)
    });
    shape!("mysql url", {
        let pw = s(30, 16);
        (format!("mysql://root:{pw}@db:3306/app"), pw)
    });
    shape!("redis url", {
        let pw = s(31, 16);
        (format!("redis://:{pw}@cache:6379/0"), pw)
    });
    shape!("mongodb url", {
        let pw = s(32, 16);
        (
            format!("mongodb+srv://app:{pw}@cluster0.example.net/db"),
            pw,
        )
    });
    shape!("amqp url", {
        let pw = s(33, 16);
        (format!("amqp://guest:{pw}@rabbit:5672/"), pw)
    });
    shape!("https url", {
        let pw = s(34, 16);
        (format!("https://deploy:{pw}@git.example.com/app.git"), pw)
    });
    shape!("DB_PASSWORD", keyed("DB_PASSWORD=", s(35, 14)));
    shape!("POSTGRES_PASSWORD", keyed("POSTGRES_PASSWORD=", s(36, 14)));
    shape!(
        "MYSQL_ROOT_PASSWORD",
        keyed("MYSQL_ROOT_PASSWORD=", s(37, 14))
    );
    shape!("password=", keyed("password=", s(38, 12)));
    shape!("PGPASSWORD", keyed("PGPASSWORD=", s(39, 12)));
    shape!("REDIS_PASSWORD quoted", {
        let pw = s(40, 14);
        (format!("REDIS_PASSWORD='{pw}'"), pw)
    });
    shape!("json password", {
        let pw = format!("{} {}", s(41, 8), s(42, 8));
        (format!("{{\"password\": \"{pw}\"}}"), pw)
    });
    shape!("json api_key", {
        let key = s(43, 32);
        (format!("{{\"api_key\":\"{key}\"}}"), key)
    });
    shape!("yaml client_secret", keyed("client_secret: ", s(44, 32)));
    shape!("SECRET_KEY", keyed("SECRET_KEY=", s(45, 50)));
    shape!("export API_TOKEN", {
        let token = s(46, 32);
        (format!("export API_TOKEN=\"{token}\""), token)
    });
    shape!(
        "ANTHROPIC_API_KEY env",
        keyed("ANTHROPIC_API_KEY=", s(47, 40))
    );
    shape!("PRIVATE_KEY env", keyed("JWT_PRIVATE_KEY=", s(48, 40)));
    shape!("CREDENTIALS env", keyed("GOOGLE_CREDENTIALS=", s(49, 40)));
    shape!("--password", keyed("psql --password ", s(50, 14)));
    shape!("--password=", keyed("app --db-password=", s(51, 14)));
    shape!("--token", keyed("vault login --token ", s(52, 26)));
    shape!("mysql -p", {
        let pw = s(53, 12);
        (format!("mysql -uroot -p{pw} -h db app"), pw)
    });
    shape!("rsa private key", pem("RSA PRIVATE KEY", 54));
    shape!("openssh private key", pem("OPENSSH PRIVATE KEY", 55));
    shape!("ec private key", pem("EC PRIVATE KEY", 56));
    shape!("pkcs8 private key", pem("PRIVATE KEY", 57));
    shape!(
        "sendgrid",
        prefixed("SG.", format!("{}.{}", s(58, 22), s(59, 43)))
    );
    shape!("hugging face", prefixed("hf_", s(60, 34)));
    shape!("digitalocean", prefixed("dop_v1_", body(61, 64, HEX)));
    shape!(
        "azure storage",
        keyed("AccountKey=", format!("{}==", body(62, 86, BASE64)))
    );
    shape!("docker hub", prefixed("dckr_pat_", s(63, 27)));
    shape!("pypi", prefixed("pypi-AgEIcHlwaS5vcmc", s(64, 70)));
    shape!("shopify", prefixed("shpat_", body(65, 32, HEX)));
    shape!("databricks", prefixed("dapi", body(66, 32, HEX)));
    shape!(
        "age secret key",
        prefixed("AGE-SECRET-KEY-1", body(67, 58, BECH32))
    );
    shape!("linear", prefixed("lin_api_", s(68, 40)));
    shape!("telegram bot", prefixed("123456789:AA", s(69, 33)));
    shape!(
        "SLACK_SIGNING_SECRET",
        keyed("SLACK_SIGNING_SECRET=", body(70, 32, HEX))
    );
    shapes
}

/// Ordinary text that must stay readable.
const CONTROL: &[&str] = &[
    "PASSWORD_MIN_LENGTH=8",
    "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345",
    "request 123e4567-e89b-12d3-a456-426614174000 failed",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "the user forgot their password and asked for a reset",
    "POSTGRES_PASSWORD_FILE=/run/secrets/db",
    "Access denied for user 'root'@'localhost' (using password: YES)",
];

/// Every piece of `FRAGMENT` bytes of the secrets, to look for.
fn fragments(shapes: &[Shape]) -> HashSet<Vec<u8>> {
    shapes
        .iter()
        .flat_map(|shape| {
            shape
                .secret
                .as_bytes()
                .windows(FRAGMENT)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The shapes any of whose fragments occur in `text`.
fn leaked<'a>(shapes: &'a [Shape], text: &str) -> Vec<&'a str> {
    let all = fragments(shapes);
    let found: HashSet<&[u8]> = text
        .as_bytes()
        .windows(FRAGMENT)
        .filter(|window| all.contains(*window))
        .collect();
    shapes
        .iter()
        .filter(|shape| {
            shape
                .secret
                .as_bytes()
                .windows(FRAGMENT)
                .any(|window| found.contains(window))
        })
        .map(|shape| shape.name)
        .collect()
}

#[test]
fn the_corpus_has_sixty_shapes_and_the_redactor_finds_each() {
    let shapes = corpus();
    assert!(shapes.len() >= 60, "{} shapes", shapes.len());
    let redactor = Redactor::default();
    let mut missed = Vec::new();
    for shape in &shapes {
        let text = format!("before {} after", shape.placed);
        let redacted = redactor.redact(&text);
        if !leaked(std::slice::from_ref(shape), &redacted).is_empty()
            || !redacted.starts_with("before ")
            || !redacted.ends_with(" after")
        {
            missed.push(format!("{}: {redacted}", shape.name));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
    for text in CONTROL {
        assert_eq!(redactor.redact(text), *text);
    }
}

/// A command that prints `text` without holding it: the text travels base64-encoded, in pieces
/// written a moment apart, so the output reaches the controller in several chunks split inside
/// the text.
fn print_in_chunks(text: &str, pieces: usize) -> String {
    let bytes = text.as_bytes();
    let size = bytes.len().div_ceil(pieces.max(1)).max(1);
    bytes
        .chunks(size)
        .map(|piece| format!("printf %s '{}' | base64 -d; sleep 0.05", base64(piece)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every place a session leaves or sends text: (place, text).
fn places(
    controller: &Controller,
    llm: &FakeLlm,
    name: &str,
    session: &str,
) -> Vec<(String, String)> {
    let mut places = vec![
        (
            "the model's requests".to_string(),
            serde_json::to_string(&llm.requests()).unwrap(),
        ),
        (
            "the summariser's requests".to_string(),
            serde_json::to_string(&llm.summary_requests()).unwrap(),
        ),
        ("the controller's log".to_string(), controller.logs()),
        (
            "the status file".to_string(),
            std::fs::read_to_string(controller.status_file(name)).unwrap(),
        ),
    ];
    for format in ["table", "json", "yaml"] {
        for target in [name, session] {
            places.push((
                format!("opslab show {target} -o {format}"),
                controller.cli(&["show", target, "-o", format]),
            ));
        }
    }
    // The store's bytes as they are on disk: the database and its write-ahead log.
    for entry in std::fs::read_dir(controller.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            places.push((
                format!("the file {}", path.display()),
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    places
}

fn assert_nothing_leaked(shapes: &[Shape], places: &[(String, String)]) {
    let mut leaks = Vec::new();
    for (place, text) in places {
        for name in leaked(shapes, text) {
            leaks.push(format!("{name} reached {place}"));
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// The ticket's description: the corpus as a YAML block.
fn described(shapes: &[Shape]) -> String {
    let lines: Vec<String> = shapes
        .iter()
        .flat_map(|shape| {
            shape
                .placed
                .lines()
                .map(|line| format!("    {line}"))
                .collect::<Vec<_>>()
        })
        .collect();
    format!("  description: |\n{}\n", lines.join("\n"))
}

/// Each shape in command output, in the ticket, in the model's reasoning and in a tool argument:
/// none reaches the store, the log, `show`, the status file, the model or the summariser; the
/// ordinary text stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_is_redacted_everywhere() {
    docker::require_sandbox_image();
    let shapes = corpus();
    let all: String = shapes
        .iter()
        .map(|shape| format!("{}\n", shape.placed))
        .collect();
    let control: String = CONTROL.iter().map(|line| format!("{line}\n")).collect();
    // The tool argument holds the secrets itself (a here-document nothing reads); the output comes
    // from a base64 copy, so that it is redacted on its own account.
    let command = format!(
        "cat > /dev/null <<'CORPUS'\n{all}CORPUS\n{}",
        print_in_chunks(&format!("{all}{control}"), 4)
    );
    let reasoning = format!("the ticket lists these:\n{all}");
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell(&command, &reasoning),
            Turn::report("resolved", "redacted"),
        ],
    )
    .await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "fake-summary"),
    );
    controller.write_manifest(
        "corpus.yaml",
        &manifest("corpus", "secrets in every place", &described(&shapes)),
    );
    let incident = controller.wait_for_phase("corpus", Phase::Resolved, SESSION_TIMEOUT);
    let session = incident.status.unwrap().session_id.unwrap();
    let events = controller.events(&session);
    let output = events
        .iter()
        .find(|event| event["kind"] == "command_finished")
        .and_then(|event| event["output"].as_str())
        .unwrap()
        .to_string();
    assert!(
        output.matches("[REDACTED:").count() >= shapes.len(),
        "{output}"
    );
    for line in CONTROL {
        assert!(
            output.contains(line),
            "{line:?} is not readable in {output}"
        );
    }
    assert!(
        !llm.summary_requests().is_empty(),
        "the output was summarised"
    );
    assert_nothing_leaked(&shapes, &places(&controller, &llm, "corpus", &session));
}

/// Secrets across the cut of the output and across the chunks it arrives in: not one fragment of 8
/// characters is kept, anywhere. (The cut is set at 4 KiB, not the default 16, to keep the test
/// quick: where it falls changes nothing in how it is made.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_across_the_cut_leave_no_fragment() {
    docker::require_sandbox_image();
    const KEEP: usize = 4 * 1024;
    let shapes = corpus();
    // Each command puts one shape across the head's cut and the next across the tail's, each
    // written in three pieces; the padding is made in the sandbox.
    let dots = |count: usize| format!("head -c {count} /dev/zero | tr '\\0' .");
    let mut script = Vec::new();
    for (index, pair) in shapes.chunks(2).enumerate() {
        // A middle the cut is made in view of, or one that is dropped unseen (more than the
        // margins the capture keeps past each limit).
        let middle = if index % 2 == 0 { 1000 } else { 40_000 };
        let head = &pair[0].placed;
        let tail = &pair.get(1).unwrap_or(&pair[0]).placed;
        let command = [
            dots(KEEP - head.len() / 2 - 1),
            print_in_chunks(&format!(" {head} "), 3),
            dots(middle),
            print_in_chunks(&format!(" {tail} "), 3),
            dots(KEEP - (tail.len() - tail.len() / 2) - 1),
        ]
        .join("; ");
        script.push(Turn::shell(&command, "print the output"));
    }
    let commands = script.len();
    script.push(Turn::report("resolved", "cut"));
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "fake-summary")
            .arg("--output-keep-bytes", KEEP),
    );
    controller.write_manifest("cut.yaml", &manifest("cut", "secrets at the cut", ""));
    let incident = controller.wait_for_phase("cut", Phase::Resolved, SESSION_TIMEOUT);
    let session = incident.status.unwrap().session_id.unwrap();
    let events = controller.events(&session);
    let outputs: Vec<&str> = events
        .iter()
        .filter(|event| event["kind"] == "command_finished")
        .filter_map(|event| event["output"].as_str())
        .collect();
    assert_eq!(outputs.len(), commands);
    for output in &outputs {
        assert!(output.contains(" bytes cut: "), "{output}");
    }
    assert_nothing_leaked(&shapes, &places(&controller, &llm, "cut", &session));
}

/// A configured secret shorter than 8 characters is refused at start, saying which and why, never
/// showing the value.
#[test]
fn short_configured_secrets_are_refused_at_start() {
    use crate::support::controller::BIN;
    let dir = tempfile::tempdir().unwrap();
    let start = |env: &[(&str, &str)], args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("controller")
            .arg("--incidents")
            .arg(dir.path())
            .arg("--store")
            .arg(dir.path().join("opslab.db"))
            .args(args)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let short_env = start(
        &[("OPSLAB_TEST_LAB_PASSWORD", "admin")],
        &["--secret-env", "OPSLAB_TEST_LAB_PASSWORD"],
    );
    assert!(!short_env.status.success());
    let stderr = String::from_utf8_lossy(&short_env.stderr);
    assert!(
        stderr.contains("--secret-env OPSLAB_TEST_LAB_PASSWORD")
            && stderr.contains("5 characters long")
            && stderr.contains("at least 8"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("admin"),
        "the value is not shown: {stderr}"
    );

    let short_key = start(&[("ANTHROPIC_API_KEY", "replay")], &[]);
    assert!(!short_key.status.success());
    let stderr = String::from_utf8_lossy(&short_key.stderr);
    assert!(
        stderr.contains("the model API key cannot be redacted safely")
            && stderr.contains("6 characters long"),
        "{stderr}"
    );
}
