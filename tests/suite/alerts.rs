//! The Alertmanager intake in files mode, against the real controller: a real Alertmanager sending
//! to it (fire, repeat, join, resolve, fire again), hostile payloads, and a restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opslab::alerts::{
    ALERTS_ANNOTATION, GROUP_LABEL, PREVIOUS_ANNOTATION, RESOLVED_ANNOTATION, SEQUENCE_ANNOTATION,
};
use opslab::audit::{IntakeDecision, Redactor, Store};
use opslab::incident::{ConditionStatus, ConditionType, Incident, NOTE_ANNOTATION, Phase};
use serde_json::{Value, json};

use crate::support::alertmanager::{self, Alertmanager};
use crate::support::controller::{Controller, Options};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

const TOKEN: &str = "am-intake-token-7f3a9c2e51d84b06";
const WAIT: Duration = Duration::from_secs(60);

/// A controller with the intake on (its token from the environment, as a deployment sets it).
fn controller(llm: &FakeLlm) -> Controller {
    Controller::start_with_env(
        Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"),
        &[("OPSLAB_ALERTS_TOKEN", TOKEN)],
    )
}

/// The manifests the intake wrote, each with the Incident it holds.
fn filed(controller: &Controller) -> Vec<(PathBuf, Incident)> {
    let dir = controller.incidents().join("alerts");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') || !name.ends_with(".yaml") {
            continue;
        }
        let parsed = opslab::source::manifest::parse(&std::fs::read(&path).unwrap());
        assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors);
        for incident in parsed.incidents {
            found.push((path.clone(), incident));
        }
    }
    found.sort_by_key(|(_, incident)| annotation(incident, SEQUENCE_ANNOTATION));
    found
}

pub(super) fn annotation(incident: &Incident, name: &str) -> String {
    incident
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(name))
        .cloned()
        .unwrap_or_default()
}

pub(super) fn seen_alerts(incident: &Incident) -> usize {
    serde_json::from_str::<Vec<Value>>(&annotation(incident, ALERTS_ANNOTATION))
        .map_or(0, |seen| seen.len())
}

/// Polls `check` until it gives a value, or fails saying what was awaited.
async fn until<T>(what: &str, controller: &Controller, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nfiled: {:#?}\ncontroller log:\n{}",
            filed(controller),
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn metric(controller: &Controller, decision: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", controller.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("opslab_alerts_received_total{{decision=\"{decision}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

pub(super) async fn intake_decisions(controller: &Controller) -> Vec<opslab::audit::IntakeEvent> {
    let store = Store::open(controller.store(), Redactor::default())
        .await
        .unwrap();
    store.intake_events().await.unwrap()
}

pub(super) fn alert_labels(alertname: &str, instance: &str) -> Value {
    json!({
        "alertname": alertname,
        "instance": instance,
        "severity": "critical",
        "service": format!("redis-{instance}"),
    })
}

pub(super) fn alert_annotations(instance: &str) -> Value {
    json!({
        "summary": format!("redis {instance} does not answer"),
        "description": "PING has failed for 1 minute",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_files_one_incident_updates_it_resolves_it_and_files_anew() {
    docker::require_sandbox_image();
    // Each session runs one long command (the group's updates arrive while it runs), then reports.
    let llm = FakeLlm::start_each(
        Protocol::Anthropic,
        vec![
            Turn::shell("sleep 20", "let the alerts settle"),
            Turn::report("resolved", "restarted redis"),
        ],
    )
    .await;
    let controller = controller(&llm);
    let webhook = format!("{}/api/v1/alerts", controller.http_url());
    // Repeats every 2 s: they must change nothing.
    let am = Alertmanager::start(&webhook, TOKEN, Duration::from_secs(2)).await;
    let alertname = format!(
        "RedisDown{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (a, b) = (alert_labels(&alertname, "a"), alert_labels(&alertname, "b"));

    // Fires: exactly one Incident, filled from the alert.
    am.post(&[alertmanager::firing(a.clone(), alert_annotations("a"))])
        .await;
    let (path, first) = until("the first Incident", &controller, || {
        filed(&controller).into_iter().next()
    })
    .await;
    let name = first.metadata.name.clone().unwrap();
    assert!(
        name.starts_with(&alertname.to_lowercase()),
        "{name} is named after the alert"
    );
    assert_eq!(first.spec.title, "redis a does not answer");
    assert_eq!(first.spec.severity, opslab::incident::Severity::Critical);
    assert_eq!(first.spec.environment.targets, vec!["redis-a".to_string()]);
    assert!(
        first
            .spec
            .description
            .contains("source: http://prometheus.test:9090/graph?g0.expr=up%3D%3D0"),
        "{}",
        first.spec.description
    );
    assert!(
        first
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(GROUP_LABEL)
    );
    let investigating = controller.wait_for_phase(&name, Phase::Investigating, WAIT);
    let uid = investigating.metadata.uid.clone();

    // The same alert again and a second one of the group: still one Incident, updated.
    am.post(&[
        alertmanager::firing(a.clone(), alert_annotations("a")),
        alertmanager::firing(b.clone(), alert_annotations("b")),
    ])
    .await;
    let updated = until("the second alert told to the Incident", &controller, || {
        let filed = filed(&controller);
        filed
            .first()
            .filter(|(_, incident)| seen_alerts(incident) == 2)
            .map(|(_, incident)| incident.clone())
    })
    .await;
    assert_eq!(filed(&controller).len(), 1, "one Incident for the group");
    assert!(
        updated
            .spec
            .description
            .contains("1 more alert(s) joined the group"),
        "{}",
        updated.spec.description
    );
    assert_eq!(
        updated.spec.environment.targets,
        vec!["redis-a".to_string(), "redis-b".to_string()]
    );
    // The running agent is told, as of any spec change.
    let told = controller.wait_for(&name, "generation 2 seen", WAIT, |incident| {
        incident.metadata.generation == Some(2)
    });
    assert_eq!(told.metadata.uid, uid, "the same Incident");
    let ended = controller.wait_for_phase(&name, Phase::Resolved, WAIT);
    let told_agent = llm.requests().iter().any(|request| {
        request
            .to_string()
            .contains("The ticket was updated (generation 2)")
            && request.to_string().contains("joined the group")
    });
    assert!(told_agent, "the agent was told the alert joined");
    assert_eq!(ended.metadata.uid, uid);

    // Resolved: recorded on the ended Incident, which stays ended (no new attempt).
    am.post(&[
        alertmanager::ended(a.clone(), alert_annotations("a")),
        alertmanager::ended(b.clone(), alert_annotations("b")),
    ])
    .await;
    let resolved = controller.wait_for(&name, "AlertResolved", WAIT, |incident| {
        incident.status.as_ref().is_some_and(|status| {
            status.conditions.iter().any(|condition| {
                condition.type_ == ConditionType::AlertResolved
                    && condition.status == ConditionStatus::True
            })
        })
    });
    let status = resolved.status.unwrap();
    assert_eq!(status.phase, Phase::Resolved);
    assert_eq!(status.attempt, 1, "a resolution starts no attempt");
    assert_eq!(filed(&controller).len(), 1);

    // Fires again after its Incident ended: a new Incident naming the first.
    am.post(&[alertmanager::firing(a.clone(), alert_annotations("a"))])
        .await;
    let (second_path, second) = until("the second Incident", &controller, || {
        filed(&controller).into_iter().nth(1)
    })
    .await;
    assert_ne!(second_path, path);
    assert_eq!(annotation(&second, SEQUENCE_ANNOTATION), "2");
    assert_eq!(
        annotation(&second, PREVIOUS_ANNOTATION),
        format!("default/{name}")
    );
    assert!(
        second.spec.description.contains(&format!(
            "fired before: Incident default/{name} (ended Resolved)"
        )),
        "{}",
        second.spec.description
    );
    assert_eq!(filed(&controller).len(), 2);

    // Every decision was counted and audited; the repeats changed nothing.
    assert_eq!(metric(&controller, "created").await, 2);
    assert!(metric(&controller, "updated").await >= 1);
    assert_eq!(metric(&controller, "resolved").await, 1);
    assert!(
        metric(&controller, "deduplicated").await >= 1,
        "Alertmanager's repeats (every 2 s) were seen and changed nothing"
    );
    let decisions: Vec<String> = intake_decisions(&controller)
        .await
        .into_iter()
        .map(|event| event.decision.as_str().to_string())
        .filter(|decision| decision != "deduplicated")
        .collect();
    assert_eq!(
        decisions.first().map(String::as_str),
        Some("created"),
        "{decisions:?}"
    );
    assert!(decisions.contains(&"resolved".to_string()), "{decisions:?}");
    assert_eq!(
        decisions.iter().filter(|d| *d == "created").count(),
        2,
        "{decisions:?}"
    );
    assert!(
        !controller.logs().contains(TOKEN),
        "the token is never logged"
    );
    drop(am);
}

/// Alertmanager says the group resolved while the agent works (most often its own fix taking
/// effect, as it reports): the agent is told in a note, the spec is untouched, and so no second
/// attempt can start however late the resolution lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_during_the_session_is_a_note_to_the_agent_and_starts_no_attempt() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("sleep 5", "watch the error rate"),
            Turn::report("resolved", "rolled the api back"),
        ],
    )
    .await;
    let controller = controller(&llm);
    let url = format!("{}/api/v1/alerts", controller.http_url());
    let alertname = format!(
        "ApiErrors{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let firing = notification(&alertname);
    let (code, answer) = post(&url, Some(TOKEN), firing.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    let (_, incident) = until("the Incident", &controller, || {
        filed(&controller).into_iter().next()
    })
    .await;
    let name = incident.metadata.name.clone().unwrap();
    controller.wait_for_commands(&name, 1, WAIT);

    let resolved = with(firing, |body| {
        body["status"] = "resolved".into();
        body["alerts"][0]["status"] = "resolved".into();
        body["alerts"][0]["endsAt"] = "2026-12-06T10:05:00Z".into();
    });
    let (code, answer) = post(&url, Some(TOKEN), resolved.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    let noted = until("the resolution noted on the Incident", &controller, || {
        filed(&controller)
            .into_iter()
            .map(|(_, incident)| incident)
            .find(|incident| !annotation(incident, NOTE_ANNOTATION).is_empty())
    })
    .await;
    assert_eq!(noted.spec, incident.spec, "the spec is untouched");
    assert_eq!(
        annotation(&noted, RESOLVED_ANNOTATION),
        "2026-12-06T10:05:00Z"
    );

    let ended = controller.wait_for_phase(&name, Phase::Resolved, WAIT);
    assert_eq!(ended.metadata.generation, Some(1));
    let status = ended.status.unwrap();
    assert_eq!(status.attempt, 1);
    assert!(
        status.conditions.iter().any(|condition| {
            condition.type_ == ConditionType::AlertResolved
                && condition.status == ConditionStatus::True
        }),
        "{:#?}",
        status.conditions
    );
    let told = llm.requests()[1].to_string();
    assert!(
        told.contains("A note on the ticket") && told.contains("resolved at 2026-12-06T10:05:00Z"),
        "{told}"
    );
    // Both decisions are in the intake's hash chain.
    let verified = controller.cli(&["audit", "verify"]);
    assert!(
        verified.contains("ok      intake decisions (2 decisions)"),
        "{verified}"
    );
}

/// Posts a body to the intake with a token (None: no Authorization header).
pub(super) async fn post(
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the intake answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A valid notification of one firing alert.
pub(super) fn notification(alertname: &str) -> Value {
    json!({
        "receiver": "opslab",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": alertname, "severity": "high", "service": "api"},
            "annotations": {"summary": "api answers 500", "description": "every request fails"},
            "startsAt": "2026-12-06T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0
    })
}

fn with(mut value: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_notifications_are_refused_with_a_reason_and_nothing_is_filed() {
    let llm = FakeLlm::start(Protocol::Anthropic, vec![]).await;
    let controller = controller(&llm);
    let base = controller.http_url();
    let url = format!("{base}/api/v1/alerts");
    let good = notification("ApiDown");
    let alert = good["alerts"][0].clone();
    let many = |count: usize| {
        with(good.clone(), |v| {
            v["alerts"] = Value::Array(
                (0..count)
                    .map(|i| {
                        with(alert.clone(), |a| {
                            a["fingerprint"] = format!("{i:016x}").into()
                        })
                    })
                    .collect(),
            )
        })
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not JSON", b"{not json".to_vec(), 400, "not JSON"),
        ("an empty body", Vec::new(), 400, "not JSON"),
        ("a JSON list", b"[1, 2]".to_vec(), 400, "not a JSON object"),
        (
            "no version",
            with(good.clone(), |v| {
                v.as_object_mut().unwrap().remove("version");
            })
            .to_string()
            .into_bytes(),
            400,
            "missing field `version`",
        ),
        (
            "version 3",
            with(good.clone(), |v| v["version"] = "3".into())
                .to_string()
                .into_bytes(),
            422,
            "version \"3\" is not supported",
        ),
        (
            "version as a number",
            with(good.clone(), |v| v["version"] = 4.into())
                .to_string()
                .into_bytes(),
            422,
            "is not supported",
        ),
        (
            "no alerts",
            with(good.clone(), |v| v["alerts"] = json!([]))
                .to_string()
                .into_bytes(),
            422,
            "holds no alerts",
        ),
        (
            "alerts missing",
            with(good.clone(), |v| {
                v.as_object_mut().unwrap().remove("alerts");
            })
            .to_string()
            .into_bytes(),
            400,
            "missing field `alerts`",
        ),
        (
            "alerts not a list",
            with(good.clone(), |v| v["alerts"] = json!({"a": 1}))
                .to_string()
                .into_bytes(),
            400,
            "alerts: invalid type",
        ),
        (
            "101 alerts",
            many(101).to_string().into_bytes(),
            422,
            "the limit is 100",
        ),
        (
            "10,000 alerts",
            many(10_000).to_string().into_bytes(),
            413,
            "over the limit",
        ),
        (
            "a 10 MB body",
            vec![b' '; 10 * 1024 * 1024],
            413,
            "over the limit",
        ),
        (
            "a label with an escape sequence",
            with(good.clone(), |v| {
                v["alerts"][0]["labels"]["service"] = "api\u{1b}[2J".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "alerts[0].labels.service holds a control character",
        ),
        (
            "a label with a newline",
            with(good.clone(), |v| v["commonLabels"]["team"] = "a\nb".into())
                .to_string()
                .into_bytes(),
            422,
            "commonLabels.team holds a control character",
        ),
        (
            "a description with NUL",
            with(good.clone(), |v| {
                v["alerts"][0]["annotations"]["description"] = "a\u{0}b".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "holds a control character",
        ),
        (
            "a title that injects YAML",
            with(good.clone(), |v| {
                v["alerts"][0]["annotations"]["summary"] =
                    "ok\nspec:\n  agent: {maxTurns: 100000}".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "it must be one line",
        ),
        (
            "a name that is not a DNS label",
            with(good.clone(), |v| {
                v["alerts"][0]["labels"]["alertname"] = "../../etc/passwd".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "not a DNS label",
        ),
        (
            "a label name with a dash",
            with(good.clone(), |v| {
                v["alerts"][0]["labels"]["bad-name"] = "x".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "is not a label name",
        ),
        (
            "a target that is not a Docker name",
            with(good.clone(), |v| {
                v["alerts"][0]["labels"]["service"] = "api; rm -rf /".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "not a Docker name",
        ),
        (
            "an unknown status",
            with(good.clone(), |v| v["status"] = "exploded".into())
                .to_string()
                .into_bytes(),
            400,
            "status: unknown variant",
        ),
        (
            "a start that is not a time",
            with(good.clone(), |v| {
                v["alerts"][0]["startsAt"] = "yesterday".into()
            })
            .to_string()
            .into_bytes(),
            400,
            "alerts[0].startsAt",
        ),
        (
            "a fingerprint that is not hex",
            with(good.clone(), |v| {
                v["alerts"][0]["fingerprint"] = "zz;rm".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "is not a fingerprint",
        ),
        (
            "a javascript: generator URL",
            with(good.clone(), |v| {
                v["alerts"][0]["generatorURL"] = "javascript:alert(1)".into()
            })
            .to_string()
            .into_bytes(),
            422,
            "not an http(s) URL",
        ),
        (
            "an empty groupKey",
            with(good.clone(), |v| v["groupKey"] = "".into())
                .to_string()
                .into_bytes(),
            422,
            "groupKey must not be empty",
        ),
        (
            "labels as a list",
            with(good.clone(), |v| v["alerts"][0]["labels"] = json!(["a"]))
                .to_string()
                .into_bytes(),
            400,
            "alerts[0].labels",
        ),
    ];
    assert!(cases.len() >= 20);
    for (what, body, status, message) in &cases {
        let (got, text) = post(&url, Some(TOKEN), body.clone()).await;
        assert_eq!(got, *status, "{what}: {text}");
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert_eq!(answer["decision"], "refused", "{what}: {text}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{what}: expected {message:?} in {error:?}"
        );
    }
    // No token, a wrong one, another scheme: 401, whatever the body.
    let body = good.to_string();
    for token in [None, Some("wrong-token-0000000000000000")] {
        let (got, text) = post(&url, token, body.clone()).await;
        assert_eq!(got, 401, "{text}");
        assert!(text.contains("bearer token is required"), "{text}");
    }
    let basic = reqwest::Client::new()
        .post(&url)
        .basic_auth("opslab", Some(TOKEN))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);

    // The controller is up, nothing was filed, and each refusal was counted and audited.
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert!(health.status().is_success());
    assert!(filed(&controller).is_empty(), "{:?}", filed(&controller));
    let refused = cases.len() as u64 + 3;
    assert_eq!(metric(&controller, "refused").await, refused);
    let events = intake_decisions(&controller).await;
    assert_eq!(events.len() as u64, refused);
    assert!(
        events
            .iter()
            .all(|event| event.decision == IntakeDecision::Refused)
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("unauthorized"))
            .count(),
        3
    );
    // A valid one still files after all that.
    let (got, text) = post(&url, Some(TOKEN), good.to_string()).await;
    assert_eq!(got, 200, "{text}");
    assert!(text.contains("\"decision\":\"created\""), "{text}");
    assert!(
        !controller.logs().contains(TOKEN),
        "the token is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_survives_a_restart() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start_each(
        Protocol::Anthropic,
        vec![
            Turn::shell("sleep 60", "wait"),
            Turn::report("resolved", "done"),
        ],
    )
    .await;
    let mut controller = controller(&llm);
    let alertname = format!("Restart{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let first = notification(&alertname);
    let url = format!("{}/api/v1/alerts", controller.http_url());
    let (status, text) = post(&url, Some(TOKEN), first.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let (_, incident) = until("the Incident", &controller, || {
        filed(&controller).into_iter().next()
    })
    .await;
    let name = incident.metadata.name.clone().unwrap();
    controller.wait_for_phase(&name, Phase::Investigating, WAIT);

    controller.restart();
    let url = format!("{}/api/v1/alerts", controller.http_url());
    let (status, text) = post(&url, Some(TOKEN), first.to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"decision\":\"deduplicated\""), "{text}");
    let joined = with(first.clone(), |v| {
        let mut second = v["alerts"][0].clone();
        second["fingerprint"] = "fedcba9876543210".into();
        second["labels"]["instance"] = "b".into();
        v["alerts"].as_array_mut().unwrap().push(second);
    });
    let (status, text) = post(&url, Some(TOKEN), joined.to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"decision\":\"updated\""), "{text}");
    let filed = filed(&controller);
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(seen_alerts(&filed[0].1), 2);
}

#[test]
fn a_bad_rules_file_or_rules_without_a_token_stop_the_controller_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n- name: x\n  matchRegex: {alertname: '(unclosed'}\n",
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        let output = std::process::Command::new(crate::support::controller::BIN)
            .args(["controller", "--incidents"])
            .arg(dir.path())
            .arg("--alert-rules")
            .arg(&rules)
            .env_remove("OPSLAB_ALERTS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8(output.stderr).unwrap()
    };
    let error = run(&[("OPSLAB_ALERTS_TOKEN", TOKEN)]);
    assert!(
        error.contains(&format!(
            "--alert-rules {}: rules[0] (x): matchRegex.alertname: not a regular expression",
            rules.display()
        )),
        "{error}"
    );
    assert!(!error.contains(TOKEN), "{error}");
    let error = run(&[]);
    assert!(
        error.contains("--alert-rules is set but the alert intake is off"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_intake_is_off() {
    let llm = FakeLlm::start(Protocol::Anthropic, vec![]).await;
    let controller = Controller::start(Options::new("anthropic", llm.base_url()));
    let url = format!("{}/api/v1/alerts", controller.http_url());
    let (status, _) = post(&url, Some(TOKEN), notification("ApiDown").to_string()).await;
    assert_eq!(status, 404, "no intake without --alerts-token");
    assert!(
        !controller.incidents().join("alerts").exists(),
        "no alerts folder is made in the user's folder"
    );
}

/// The intake's trail on each backend: appended, redacted, read back in order, and append-only.
async fn intake_trail_on(store: crate::support::store::TestStore) {
    let opened = store.open().await;
    for (decision, message) in [
        (IntakeDecision::Refused, "a bearer token is required"),
        (
            IntakeDecision::Created,
            "filed Incident default/x; the pasted p4ssw0rd-configured stays out",
        ),
    ] {
        opened
            .record_intake(opslab::audit::IntakeEvent {
                at: "2026-12-06T10:00:00Z".parse().unwrap(),
                producer: "alertmanager".into(),
                decision,
                reason: (decision == IntakeDecision::Refused).then(|| "unauthorized".into()),
                alert_group: Some("0123456789abcdef0123456789abcdef".into()),
                incident: (decision == IntakeDecision::Created).then(|| "default/x".into()),
                message: message.into(),
            })
            .await
            .unwrap();
    }
    let events = store.open().await.intake_events().await.unwrap();
    let decisions: Vec<&str> = events.iter().map(|e| e.decision.as_str()).collect();
    assert_eq!(decisions, ["refused", "created"]);
    assert_eq!(events[0].reason.as_deref(), Some("unauthorized"));
    assert!(
        !events[1].message.contains("p4ssw0rd-configured"),
        "{}",
        events[1].message
    );
    let update = store
        .raw("UPDATE intake_events SET decision = 'ignored'")
        .await
        .unwrap_err();
    assert!(update.contains("append-only"), "{update}");
    let delete = store.raw("DELETE FROM intake_events").await.unwrap_err();
    assert!(delete.contains("append-only"), "{delete}");
}

#[tokio::test]
async fn intake_trail_sqlite() {
    intake_trail_on(crate::support::store::TestStore::sqlite()).await;
}

#[tokio::test]
async fn intake_trail_postgres() {
    intake_trail_on(crate::support::store::TestStore::postgres().await).await;
}

/// Every secret shape in an alert — its labels, its annotations, its generatorURL — is redacted
/// before it is filed: not a fragment reaches the manifest written beside the user's, the status
/// file, the trail, the log, the intake's answer or the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_an_alert_are_redacted_before_it_is_filed() {
    use crate::support::secrets::{assert_nothing_leaked, corpus};
    docker::require_sandbox_image();
    let shapes = corpus();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![Turn::report("resolved", "nothing to do")],
    )
    .await;
    let controller = controller(&llm);
    let alertname = format!("Leaky{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let all: String = shapes
        .iter()
        .map(|shape| format!("{}\n", shape.placed))
        .collect();
    let body = with(notification(&alertname), |v| {
        let alert = &mut v["alerts"][0];
        // One-line shapes as label and annotation values (within the limit of 64 of each), under
        // ordinary names; every shape in the description; a password as a label named like one;
        // credentials in the source's URL.
        for (index, shape) in shapes.iter().enumerate() {
            if !shape.placed.contains('\n') {
                let field = if index < 32 { "labels" } else { "annotations" };
                alert[field][format!("note_{index}")] = shape.placed.clone().into();
            }
        }
        alert["labels"]["db_password"] = shapes[0].secret.clone().into();
        alert["annotations"]["description"] = format!("the log said:\n{all}").into();
        alert["generatorURL"] =
            format!("http://admin:{}@prometheus:9090/graph", shapes[1].secret).into();
    });
    let (status, answer) = post(
        &format!("{}/api/v1/alerts", controller.http_url()),
        Some(TOKEN),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (path, incident) = until("the Incident", &controller, || {
        filed(&controller).into_iter().next()
    })
    .await;
    let name = incident.metadata.name.clone().unwrap();
    controller.wait_for_phase(&name, Phase::Resolved, WAIT);
    assert!(
        incident.spec.description.matches("[REDACTED:").count() >= shapes.len(),
        "{}",
        incident.spec.description
    );
    let mut places = vec![
        ("the intake's answer".to_string(), answer),
        (
            "the filed manifest".to_string(),
            std::fs::read_to_string(&path).unwrap(),
        ),
        (
            "the status file".to_string(),
            std::fs::read_to_string(controller.status_file(&name)).unwrap(),
        ),
        (
            "the intake's trail".to_string(),
            format!("{:?}", intake_decisions(&controller).await),
        ),
        (
            "the model's requests".to_string(),
            serde_json::to_string(&llm.requests()).unwrap(),
        ),
        ("the controller's log".to_string(), controller.logs()),
    ];
    for entry in std::fs::read_dir(controller.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            places.push((
                format!("the file {}", path.display()),
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    assert_nothing_leaked(&shapes, &places);
}
