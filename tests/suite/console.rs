//! The web console in a real browser (headless Chromium over WebDriver): against a controller with
//! real sessions (the scripted model, real sandboxes) and against a tampered store served offline
//! by `opslab console`. Also writes the README's screenshots (docs/console-*.png).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opslab::audit::{EventBody, NewSession, Redactor, Store};
use opslab::incident::Phase;
use serde_json::json;

use crate::support::browser::Browser;
use crate::support::controller::{BIN, Controller, Options, manifest, scripted};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

const TIMEOUT: Duration = Duration::from_secs(120);
const SOON: Duration = Duration::from_secs(15);

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(format!("console-{name}.png"))
}

/// Waits for the store to hold an event of the Incident's newest session that `matches`; the
/// session's id and the event's time in milliseconds.
async fn wait_for_event(
    store: &Store,
    incident: &str,
    matches: impl Fn(&EventBody) -> bool,
) -> (String, i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let sessions = store.sessions().await.unwrap();
        if let Some(session) = sessions.iter().find(|s| s.incident_name == incident) {
            let events = store.events(&session.id).await.unwrap();
            if let Some(event) = events.iter().find(|event| matches(&event.body)) {
                return (session.id.clone(), event.at.as_millisecond());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no such event of {incident} was stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn started(body: &EventBody, marker: &str) -> bool {
    matches!(body, EventBody::CommandStarted { command, .. } if command.contains(marker))
}

/// The list, an Incident and a session of a real run: each command with its exit code and output,
/// the time axis, the verified chain, deep links; a running session's new command shows without a
/// reload within a second of being stored, and the list follows the phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_real_session_and_follows_it_live() {
    let script = vec![
        Turn::shell(
            "echo first-output; sleep 4",
            "see what the service says first",
        ),
        Turn::shell("echo second-output-marker; sleep 3", "look again"),
        Turn::report("resolved", "the service answers again"),
    ];
    let (_llm, controller) = scripted(script, |options| options).await;
    let browser = Browser::start().await;
    controller.write_manifest(
        "web-down.yaml",
        &manifest(
            "web-down",
            "web is down",
            "  description: the front page answers 502\n",
        ),
    );
    controller.write_manifest(
        "broken.yaml",
        "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata:\n  name: broken\nspec:\n  severity: high\n",
    );
    let base = controller.http_url();
    let store = Store::open(controller.store(), Redactor::default())
        .await
        .unwrap();

    // A running session: its page adds the next command as it is stored, without a reload.
    let (session, _) =
        wait_for_event(&store, "web-down", |body| started(body, "first-output")).await;
    browser.goto(&format!("{base}/ui/sessions/{session}")).await;
    browser
        .wait_for_text("#timeline", "echo first-output", SOON)
        .await;
    browser
        .eval(
            "window.sameDocument = true; window.seenAt = null;
             const timeline = document.getElementById('timeline');
             new MutationObserver(() => {
               const shown = [...timeline.querySelectorAll('li.kind-command_started')]
                 .some(li => li.textContent.includes('second-output-marker'));
               if (shown && window.seenAt === null) { window.seenAt = Date.now(); }
             }).observe(timeline, {childList: true, subtree: true});
             return true;",
        )
        .await;
    let (_, stored_at) = wait_for_event(&store, "web-down", |body| {
        started(body, "second-output-marker")
    })
    .await;
    let deadline = Instant::now() + SOON;
    let seen_at = loop {
        if let Some(seen) = browser.eval("return window.seenAt;").await.as_i64() {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the running session's page never showed the second command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lag = seen_at - stored_at;
    println!("the second command showed {lag} ms after it was stored");
    assert!(lag < 1000, "the new command took {lag} ms to show");
    assert_eq!(
        browser.eval("return window.sameDocument === true;").await,
        json!(true),
        "the page was reloaded"
    );

    // The list follows the phase without a reload too.
    browser.goto(&format!("{base}/ui/")).await;
    let row = browser
        .wait_for_text("#incident-rows", "web-down", SOON)
        .await;
    assert!(row.contains("Investigating"), "{row}");
    browser
        .eval("window.sameDocument = true; return true;")
        .await;
    browser
        .wait_for_text("#incident-rows", "Resolved", TIMEOUT)
        .await;
    assert_eq!(
        browser.eval("return window.sameDocument === true;").await,
        json!(true)
    );
    controller.wait_for_phase("web-down", Phase::Resolved, TIMEOUT);

    // The list, with the invalid manifest and its error.
    browser.goto(&format!("{base}/ui/")).await;
    let rows = browser.text("#incident-rows").await.unwrap();
    for expected in ["web-down", "default", "Resolved", "high", "files"] {
        assert!(
            rows.contains(expected),
            "the list lacks {expected:?}:\n{rows}"
        );
    }
    let problems = browser.text("ul.errors").await.unwrap_or_default();
    assert!(
        problems.contains("broken.yaml") && problems.contains("title"),
        "the invalid manifest is not listed with its error: {problems:?}"
    );
    browser.screenshot(&screenshot_path("incidents")).await;
    browser.goto(&format!("{base}/ui/?phase=Failed")).await;
    let filtered = browser.text("#incident-rows").await.unwrap_or_default();
    assert!(!filtered.contains("web-down"), "{filtered}");
    browser
        .goto(&format!("{base}/ui/?phase=Resolved&namespace=default"))
        .await;
    let filtered = browser.text("#incident-rows").await.unwrap_or_default();
    assert!(filtered.contains("web-down"), "{filtered}");

    // The Incident: spec, status, conditions, report, sessions.
    browser
        .goto(&format!("{base}/ui/incidents/default/web-down"))
        .await;
    let page = browser.text("main").await.unwrap();
    for expected in [
        "web is down",
        "the front page answers 502",
        "the service answers again",
        "ran the scripted commands",
        "SessionActive",
        session.as_str(),
    ] {
        assert!(
            page.contains(expected),
            "the Incident page lacks {expected:?}:\n{page}"
        );
    }
    browser.screenshot(&screenshot_path("incident")).await;

    // The session, ended: every command, its exit code and its output; the time axis; the chain.
    browser.goto(&format!("{base}/ui/sessions/{session}")).await;
    let commands = browser.texts("#timeline li.kind-command_started").await;
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].contains("$ echo first-output; sleep 4"),
        "{commands:?}"
    );
    assert!(
        commands[0].contains("why: see what the service says first"),
        "{commands:?}"
    );
    assert!(
        commands[1].contains("$ echo second-output-marker; sleep 3"),
        "{commands:?}"
    );
    let ends = browser.texts("#timeline li.kind-command_finished").await;
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert!(
        ends[0].contains("exit 0 after ") && ends[0].contains("first-output"),
        "{ends:?}"
    );
    assert!(
        ends[1].contains("exit 0 after ") && ends[1].contains("second-output-marker"),
        "{ends:?}"
    );
    let badge = browser.text("#verification").await.unwrap();
    assert!(badge.starts_with("verified ("), "{badge}");
    let bars = browser
        .eval("return document.querySelectorAll('svg.gantt rect').length;")
        .await;
    assert_eq!(bars, json!(2));
    // Tall enough to show the first commands with their output.
    browser.client.set_window_size(1280, 1700).await.unwrap();
    browser.screenshot(&screenshot_path("session")).await;

    // A command's whole output, on demand, as plain text; only a command's end has one.
    let end_seq = browser
        .eval("return document.querySelector('#timeline li.kind-command_finished').id;")
        .await;
    let end_seq = end_seq
        .as_str()
        .unwrap()
        .trim_start_matches("event-")
        .to_string();
    let output = reqwest::get(format!("{base}/ui/sessions/{session}/output/{end_seq}"))
        .await
        .unwrap();
    assert_eq!(output.status(), 200);
    assert_eq!(
        output.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(output.text().await.unwrap(), "first-output\n");
    let not_an_end = reqwest::get(format!("{base}/ui/sessions/{session}/output/1"))
        .await
        .unwrap();
    assert_eq!(not_an_end.status(), 404);

    // A deep link lands on its event.
    browser
        .goto(&format!("{base}/ui/sessions/{session}#event-3"))
        .await;
    assert_eq!(
        browser
            .eval("const t = document.querySelector(':target'); return t && t.id;")
            .await,
        json!("event-3")
    );
    browser.close().await;
}

/// Command output, reasoning and a report that try to run script: shown as text, never run, and
/// nothing is fetched from anywhere but the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_is_shown_and_never_run() {
    let hostile = r#"printf '%s\n' '<script>window.pwned=1</script>' '<img src=x onerror="window.pwned=2">' '<a href="javascript:window.pwned=3">click me</a>'; printf 'ansi \033[31mred\033[0m bidi \342\200\256gnp.exe\n'"#;
    let script = vec![
        Turn::Tool {
            name: "shell".into(),
            input: json!({"command": hostile, "reasoning": "<img src=x onerror=\"window.pwned=4\"> check"}),
            text: Some("<script>window.pwned=5</script>".into()),
        },
        Turn::report("resolved", "<script>window.pwned=6</script>"),
    ];
    let (_llm, controller) = scripted(script, |options| options).await;
    let browser = Browser::start().await;
    controller.write_manifest(
        "xss.yaml",
        &manifest("xss", "<b onmouseover=window.pwned=7>bold</b>", ""),
    );
    controller.wait_for_phase("xss", Phase::Resolved, TIMEOUT);
    let base = controller.http_url();
    let session = controller
        .incident("xss")
        .and_then(|incident| incident.status)
        .and_then(|status| status.session_id)
        .expect("the Incident names its session");

    browser.goto(&format!("{base}/ui/sessions/{session}")).await;
    let text = browser.text("main").await.unwrap();
    for shown in [
        "<script>window.pwned=1</script>",
        "<img src=x onerror=\"window.pwned=2\">",
        "<a href=\"javascript:window.pwned=3\">click me</a>",
        "<img src=x onerror=\"window.pwned=4\"> check",
        "<script>window.pwned=5</script>",
        "<script>window.pwned=6</script>",
        // An ANSI colour and a right-to-left override are shown, not obeyed (the sandbox's output
        // capture already spells out escape characters).
        "ansi \\x1b[31mred\\x1b[0m bidi \\u{202e}gnp.exe",
    ] {
        assert!(
            text.contains(shown),
            "the page does not show {shown:?} as text:\n{text}"
        );
    }
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    for path in [
        format!("/ui/sessions/{session}"),
        "/ui/incidents/default/xss".to_string(),
        "/ui/".to_string(),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        let checks = browser
            .eval(
                "return {
                   pwned: typeof window.pwned,
                   images: document.querySelectorAll('img').length,
                   scripts: [...document.scripts].map(s => s.src),
                   javascriptLinks: document.querySelectorAll('a[href^=\"javascript:\"]').length,
                   bold: document.querySelectorAll('main b').length,
                   resources: performance.getEntriesByType('resource').map(e => e.name),
                 };",
            )
            .await;
        assert_eq!(checks["pwned"], json!("undefined"), "{path}: {checks}");
        assert_eq!(checks["images"], json!(0), "{path}: {checks}");
        assert_eq!(checks["javascriptLinks"], json!(0), "{path}: {checks}");
        assert_eq!(checks["bold"], json!(0), "{path}: {checks}");
        for src in checks["scripts"].as_array().unwrap() {
            assert_eq!(
                src,
                &json!(format!("{base}/ui/assets/live.js")),
                "{path}: {checks}"
            );
        }
        for resource in checks["resources"].as_array().unwrap() {
            assert!(
                resource
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{base}/ui/")),
                "{path}: a request left for {resource}: {checks}"
            );
        }
    }
    // Every response says how the browser must treat it.
    let response = reqwest::get(format!("{base}/ui/sessions/{session}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(
        headers["content-security-policy"],
        opslab::console::CONTENT_SECURITY_POLICY
    );
    assert!(!opslab::console::CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    browser.close().await;
}

const TOKEN: &str = "console-token-5f0c2e9a7b41d8";

/// A store with an intact session and one whose third event was edited (as the audit-verify tests
/// tamper).
async fn tampered_store(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("audit.db");
    crate::support::store::sqlite_with_sessions(&path, &["intact", "edited"]).await;
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;
         UPDATE events SET body = replace(body, 'echo 3', 'rm -rf /') WHERE session_id = 'edited' AND seq = 3;",
    )
    .unwrap();
    path
}

/// `opslab console` on a store whose event was edited: behind its token (401 without, 200 with,
/// the login form's cookie out of reach of scripts), the badge says where the chain breaks, as
/// `opslab audit verify` does. On a non-loopback address without a token it refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_console_shows_a_broken_chain_behind_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = tampered_store(&dir).await;

    let refused = Command::new(BIN)
        .args(["console", "--listen", "0.0.0.0:0", "--store"])
        .arg(&path)
        .env_remove("OPSLAB_CONSOLE_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("not a loopback address") && said.contains("--console-token"),
        "{said}"
    );

    let mut console = Command::new(BIN)
        .args(["console", "--listen", "127.0.0.1:0", "--store"])
        .arg(&path)
        .env("OPSLAB_CONSOLE_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(console.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .split(" at ")
        .nth(1)
        .and_then(|url| url.trim().strip_suffix("/ui/"))
        .unwrap_or_else(|| panic!("opslab console said {line:?}"))
        .to_string();

    let client = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    let session_url = format!("{base}/ui/sessions/edited");
    assert_eq!(status(client.get(&session_url)).await, 401);
    assert_eq!(status(client.get(format!("{base}/ui/live"))).await, 401);
    assert_eq!(
        status(
            client
                .get(&session_url)
                .bearer_auth("console-token-wrong-00000")
        )
        .await,
        401
    );
    let page = client
        .get(&session_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("broken at seq 3"));

    // In the browser: the login form, then the badges.
    let browser = Browser::start().await;
    browser.goto(&session_url).await;
    let login = browser.text("main").await.unwrap();
    assert!(login.contains("Log in"), "{login}");
    let field = browser
        .client
        .find(fantoccini::Locator::Css("#token"))
        .await
        .unwrap();
    field.send_keys(TOKEN).await.unwrap();
    browser
        .client
        .find(fantoccini::Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("h1", "Incidents", SOON).await;
    assert_eq!(
        browser
            .eval("return document.cookie.includes('opslab_console');")
            .await,
        json!(false),
        "the login cookie must be HttpOnly"
    );
    browser.goto(&session_url).await;
    let badge = browser.text("#verification").await.unwrap();
    assert_eq!(badge, "broken at seq 3");
    let edited = browser.text("#event-3").await.unwrap();
    assert!(edited.contains("rm -rf /"), "{edited}");
    browser.goto(&format!("{base}/ui/sessions/intact")).await;
    assert_eq!(
        browser.text("#verification").await.unwrap(),
        "verified (5 events)"
    );
    browser.close().await;

    // The same finding as `opslab audit verify`.
    let verify = Command::new(BIN)
        .args(["audit", "verify", "edited", "--store"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&verify.stderr).contains("first broken link at event 3"));

    console.kill().unwrap();
    console.wait().unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut said).unwrap();
    std::io::Read::read_to_string(&mut console.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!said.contains(TOKEN), "the token was printed: {said}");
}

/// The controller's console behind a token: 401 without, 200 with; the token is redacted from what
/// the console shows (it is one of redaction's configured secrets) and never logged; the rest of
/// the port needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_console_needs_its_token_and_never_shows_it() {
    let (_llm, controller) = scripted(vec![Turn::report("resolved", "nothing to do")], |options| {
        options.arg("--console-token", TOKEN)
    })
    .await;
    controller.write_manifest(
        "leaky.yaml",
        &manifest(
            "leaky",
            "a ticket that quotes the token",
            &format!("  description: \"someone pasted {TOKEN} here\"\n"),
        ),
    );
    controller.wait_for_phase("leaky", Phase::Resolved, TIMEOUT);
    let base = controller.http_url();
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/ui/", None).await.0, 401);
    assert_eq!(get("/ui/incidents/default/leaky", None).await.0, 401);
    let (code, list) = get("/ui/", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert!(list.contains("leaky"), "{list}");
    let (code, page) = get("/ui/incidents/default/leaky", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert!(page.contains("someone pasted [REDACTED"), "{page}");
    assert!(!page.contains(TOKEN));
    assert_eq!(get("/healthz", None).await.0, 200);
    assert!(!controller.logs().contains(TOKEN), "the token was logged");
}

/// Starts `opslab console` on `path` (loopback, no token); the process and its base URL.
fn start_console(path: &std::path::Path) -> (std::process::Child, String) {
    let mut console = Command::new(BIN)
        .args(["console", "--listen", "127.0.0.1:0", "--store"])
        .arg(path)
        .env_remove("OPSLAB_CONSOLE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(console.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split(" at ")
        .nth(1)
        .and_then(|url| url.trim().strip_suffix("/ui/"))
        .unwrap_or_else(|| panic!("opslab console said {line:?}"))
        .to_string();
    (console, base)
}

/// With `--stream`, a running session's page shows the model's answer as it is written, below the
/// timeline and before the turn's event is stored, then the event in its place; a secret in the
/// answer never shows, not even cut off half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_streamed_answer_as_it_is_written() {
    const SECRET: &str = "sk-ant-api03-STREAMEDSECRET0123456789";
    let text = format!(
        "I will look at the application log first; it holds the key {SECRET} which must be \
         rotated at once, and then I will check the API again."
    );
    let script = vec![
        Turn::shell(
            "echo first-output; sleep 2",
            "see what the service says first",
        ),
        Turn::Slowly {
            turn: Box::new(Turn::Tool {
                name: "shell".into(),
                input: json!({"command": "true", "reasoning": "look"}),
                text: Some(text),
            }),
            pieces: 40,
            gap: Duration::from_millis(300),
        },
        Turn::report("resolved", "streamed"),
    ];
    docker::require_sandbox_image();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start_with_env(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"),
        &[("OPSLAB_STREAM", "true")],
    );
    let browser = Browser::start().await;
    controller.write_manifest("stream.yaml", &manifest("stream", "stream me", ""));
    let base = controller.http_url();
    let store = Store::open(controller.store(), Redactor::default())
        .await
        .unwrap();
    let (session, _) = wait_for_event(&store, "stream", |body| started(body, "first-output")).await;
    browser.goto(&format!("{base}/ui/sessions/{session}")).await;
    browser
        .eval(
            "window.draftAt = null; window.turnAt = null; window.leaked = false;
             new MutationObserver(() => {
               const draft = document.getElementById('draft');
               const text = draft ? draft.textContent : '';
               if (text.includes('STREAMED')) { window.leaked = true; }
               if (text.includes('I will look at the application log first') && window.draftAt === null) {
                 window.draftAt = Date.now();
               }
               const turn = [...document.querySelectorAll('#timeline li.kind-llm_response')]
                 .some(li => li.textContent.includes('model turn 2'));
               if (turn && window.turnAt === null) { window.turnAt = Date.now(); }
             }).observe(document.body, {childList: true, subtree: true, characterData: true});
             return true;",
        )
        .await;
    browser
        .wait_for_text("#timeline", "session finished", TIMEOUT)
        .await;
    let seen = browser
        .eval("return {draftAt: window.draftAt, turnAt: window.turnAt, leaked: window.leaked, draft: document.getElementById('draft').textContent};")
        .await;
    let (draft_at, turn_at) = (seen["draftAt"].as_i64(), seen["turnAt"].as_i64());
    assert!(
        draft_at.is_some(),
        "the page never showed the answer being written: {seen}"
    );
    assert!(
        turn_at.is_some_and(|turn| draft_at.unwrap() < turn),
        "the draft showed before the turn's event: {seen}"
    );
    assert_eq!(seen["leaked"], json!(false), "{seen}");
    assert_eq!(
        seen["draft"],
        json!(""),
        "the event took the draft's place: {seen}"
    );
    let page = browser.text("#timeline").await.unwrap();
    assert!(page.contains("[REDACTED:"), "{page}");
    assert!(!page.contains("STREAMED"), "{page}");
    browser.close().await;
}

/// A benchmark figure, not a timed test: how long a 2,000-event session page takes in the browser,
/// from the request to the load event, beside a 20-event page (the baseline) in the same run. Run
/// with `cargo nextest run --run-ignored only -E 'test(benchmark_a_2000_event_session_page)'
/// --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark figure, not a test"]
async fn benchmark_a_2000_event_session_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = Store::open(&path, Redactor::default()).await.unwrap();
    // Each command is two events: started and finished.
    for (id, commands) in [("big", 1000), ("small", 10)] {
        store
            .create_session(NewSession {
                id: id.into(),
                incident_uid: "u".into(),
                incident_namespace: "default".into(),
                incident_name: id.into(),
                attempt: 1,
                generation: 1,
            })
            .await
            .unwrap();
        for i in 0..commands {
            let tool_use_id = format!("t{i}");
            store
                .append(
                    id,
                    EventBody::CommandStarted {
                        tool_use_id: tool_use_id.clone(),
                        command: format!("curl -s http://demo-api:8080/health?n={i}"),
                        reasoning: "check the API again".into(),
                        timeout_seconds: 60,
                    },
                )
                .await
                .unwrap();
            store
                .append(
                    id,
                    EventBody::CommandFinished {
                        tool_use_id,
                        exit_code: Some(i % 2),
                        duration_ms: 120,
                        timed_out: false,
                        output: (0..5).map(|line| format!("line {line} of {i}\n")).collect(),
                        output_bytes: 80,
                        truncated: false,
                    },
                )
                .await
                .unwrap();
        }
    }
    drop(store);
    let (mut console, base) = start_console(&path);
    let browser = Browser::start().await;
    for (id, events) in [("big", 2000), ("small", 20)] {
        let url = format!("{base}/ui/sessions/{id}");
        // Request to load event; of which the server's response (rendered and sent), and the
        // browser's parse of it (domInteractive): the rest is the browser's.
        let (mut loads, mut responses, mut parsed) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..7 {
            browser.goto(&url).await;
            let timing = browser
                .eval(
                    "const n = performance.getEntriesByType('navigation')[0];
                     return {load: n.loadEventEnd - n.startTime, response: n.responseEnd - n.startTime,
                             parsed: n.domInteractive - n.startTime,
                             items: document.querySelectorAll('#timeline li').length};",
                )
                .await;
            assert_eq!(timing["items"], json!(events));
            loads.push(timing["load"].as_f64().unwrap());
            responses.push(timing["response"].as_f64().unwrap());
            parsed.push(timing["parsed"].as_f64().unwrap());
        }
        for figures in [&mut loads, &mut responses, &mut parsed] {
            figures.sort_by(f64::total_cmp);
        }
        let median = |figures: &[f64]| figures[figures.len() / 2];
        println!(
            "{events}-event session page, request to load event: median {:.0} ms, min {:.0} ms, \
             max {:.0} ms over {} loads; of which the server's response (rendered and sent): \
             median {:.0} ms; parsed (domInteractive): median {:.0} ms",
            median(&loads),
            loads[0],
            loads[loads.len() - 1],
            loads.len(),
            median(&responses),
            median(&parsed),
        );
    }
    browser.close().await;
    console.kill().unwrap();
    console.wait().unwrap();
}
