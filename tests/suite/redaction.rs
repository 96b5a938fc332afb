//! Redaction, end to end: a corpus of secret shapes placed in command output, in the ticket, in the
//! model's reasoning and in a tool argument, then looked for in every place a session writes or
//! sends text: the store's file, the controller's log, `opslab show` in every format, the status
//! file, and what the model server and the summariser received. Also placed across the output cap
//! and across the chunks the output arrives in: not one fragment of 8 characters may be kept.

use std::time::Duration;

use opslab::audit::Redactor;
use opslab::incident::Phase;

use crate::support::controller::{Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
use crate::support::secrets::{CONTROL, Shape, assert_nothing_leaked, base64, corpus, leaked};

const SESSION_TIMEOUT: Duration = Duration::from_secs(180);

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
