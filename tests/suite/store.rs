//! The audit store, each test on both backends: a real SQLite file, and a real PostgreSQL database
//! (on the server `OPSLAB_TEST_POSTGRES_URL` names; scripts/test starts one).

use opslab::audit::{
    ChainCheck, DraftChange, EventBody, IncidentContent, IncidentRecord, IntakeDecision,
    IntakeEvent, NewSession, SessionFeed, SessionRecord, SessionState, Store, StoredIncident,
};
use opslab::incident::{IncidentSpec, Outcome, Phase, Report, Requests};
use serde_json::json;

use crate::support::store::TestStore;

/// Runs each named test body (an `async fn(TestStore)`) once per backend, as `NAME::sqlite` and
/// `NAME::postgres`.
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::TestStore::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test(super::TestStore::postgres().await).await
            }
        }
    )*};
}

on_each_backend!(
    store_a_session_life_is_projected,
    store_events_survive_reopening_and_concurrent_writers_stay_gapless,
    store_events_are_append_only_and_tampering_is_found,
    store_secrets_never_reach_the_file,
    store_incidents_upsert_list_and_delete,
    store_a_stale_anchor_does_not_hide_a_cut_tail,
    store_unknown_sessions_and_undecodable_rows_are_clear_errors,
    store_drafts_are_redacted_and_gone_with_the_next_event,
    store_the_change_feed_yields_events_then_drafts,
    store_intake_decisions_are_chained_and_tampering_is_found,
);

async fn new_session(store: &Store, id: &str) -> SessionRecord {
    store
        .create_session(NewSession {
            id: id.into(),
            incident_uid: "uid-1".into(),
            incident_namespace: "default".into(),
            incident_name: "api-down".into(),
            attempt: 1,
            generation: 1,
        })
        .await
        .unwrap()
}

fn spec() -> IncidentSpec {
    serde_json::from_value(json!({"title": "api down"})).unwrap()
}

fn command(id: &str, command: &str) -> EventBody {
    EventBody::CommandStarted {
        tool_use_id: id.into(),
        command: command.into(),
        reasoning: "look".into(),
        timeout_seconds: 120,
    }
}

fn finished(id: &str, output: &str) -> EventBody {
    EventBody::CommandFinished {
        tool_use_id: id.into(),
        exit_code: Some(1),
        duration_ms: 42,
        timed_out: false,
        output: output.into(),
        output_bytes: output.len() as u64,
        truncated: false,
    }
}

async fn store_a_session_life_is_projected(fixture: TestStore) {
    let store = fixture.open().await;
    new_session(&store, "s1").await;
    let bodies = vec![
        EventBody::SessionStarted {
            generation: 1,
            spec: spec(),
            model: "m".into(),
            provider: "anthropic".into(),
            sandbox_image: "img".into(),
            requests: Requests {
                retry: Some("asked by alice".into()),
                cancel: None,
            },
        },
        EventBody::LlmRetrying {
            retry: 1,
            max_retries: 5,
            delay_ms: 1000,
            error: "HTTP 529 overloaded_error: Overloaded".into(),
        },
        EventBody::LlmResponse {
            turn: 1,
            content: vec![],
            stop_reason: None,
            input_tokens: 100,
            output_tokens: 20,
            cache_write_tokens: 40,
            cache_read_tokens: 400,
            cost_usd: 0.25,
        },
        command("t1", "ls"),
        finished("t1", "out"),
        EventBody::OutputSummary {
            tool_use_id: "t1".into(),
            model: "small".into(),
            summary: "nothing".into(),
            input_tokens: 30,
            output_tokens: 5,
            cache_write_tokens: 2,
            cache_read_tokens: 300,
            cost_usd: 0.125,
        },
        command("t2", "sleep 9"),
        EventBody::CommandInterrupted {
            tool_use_id: "t2".into(),
            reason: "restart".into(),
        },
        EventBody::TicketUpdated {
            generation: 2,
            spec: spec(),
        },
        EventBody::Reported {
            tool_use_id: "r".into(),
            report: Report {
                outcome: Outcome::Mitigated,
                summary: "ok".into(),
                root_cause: String::new(),
                actions: vec![],
                verification: String::new(),
            },
        },
        EventBody::SessionFinished {
            phase: Phase::Resolved,
            outcome: Some(Outcome::Mitigated),
            reason: "Reported".into(),
            message: "ok".into(),
        },
    ];
    for body in bodies.clone() {
        let retrying = matches!(body, EventBody::LlmRetrying { .. });
        store.append("s1", body).await.unwrap();
        if retrying {
            // While the model API is retried, the session says so; the next response clears it.
            let session = store.session("s1").await.unwrap().unwrap();
            assert_eq!(
                session.message.as_deref(),
                Some(
                    "waiting for the model API: retry 1 of 5 in 1.0 s, after: \
                     HTTP 529 overloaded_error: Overloaded"
                )
            );
        }
    }
    let session = store.session("s1").await.unwrap().unwrap();
    let started_at = session.started_at;
    let finished_at = session.finished_at;
    assert!(finished_at.is_some());
    assert_eq!(
        session,
        SessionRecord {
            id: "s1".into(),
            incident_uid: "uid-1".into(),
            incident_namespace: "default".into(),
            incident_name: "api-down".into(),
            attempt: 1,
            generation: 2,
            state: SessionState::Finished,
            phase: Phase::Resolved,
            outcome: Some(Outcome::Mitigated),
            reason: Some("Reported".into()),
            started_at,
            finished_at,
            turns: 1,
            commands: 2,
            // The model's turn and the summary it caused, each kind apart.
            input_tokens: 130,
            output_tokens: 25,
            cache_write_tokens: 42,
            cache_read_tokens: 700,
            cost_usd: 0.375,
            report: Some(Report {
                outcome: Outcome::Mitigated,
                summary: "ok".into(),
                root_cause: String::new(),
                actions: vec![],
                verification: String::new(),
            }),
            message: Some("ok".into()),
            requests: Requests {
                retry: Some("asked by alice".into()),
                cancel: None,
            },
        }
    );
    let last = store.last_command("s1").await.unwrap().unwrap();
    assert_eq!(
        (
            last.tool_use_id.as_str(),
            last.state.as_str(),
            last.exit_code
        ),
        ("t2", "interrupted", None)
    );
    let events = store.events("s1").await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
        bodies
    );
    assert_eq!(store.events_after("s1", 8).await.unwrap(), events[8..]);
    assert_eq!(store.events_after("s1", 11).await.unwrap(), vec![]);
    assert_eq!(
        store.verify("s1").await.unwrap(),
        ChainCheck::Intact { events: 11 }
    );
    // A finished session's trail is closed.
    let error = store
        .append("s1", finished("t9", "late"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("has finished"), "{error}");
    assert!(store.running_sessions().await.unwrap().is_empty());
}

/// Two handles on one store: two processes on one SQLite file, or two replicas on one database.
async fn store_events_survive_reopening_and_concurrent_writers_stay_gapless(fixture: TestStore) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    new_session(&first, "shared").await;
    new_session(&first, "other").await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        for (handle, store) in [first.clone(), second.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let id = format!("{handle}-{task}-{i}");
                    store.append("shared", command(&id, "true")).await.unwrap();
                    store.append("other", command(&id, "true")).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    drop((first, second));
    let reopened = fixture.open().await;
    for session in ["shared", "other"] {
        let events = reopened.events(session).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=160).collect::<Vec<_>>()
        );
        assert_eq!(
            reopened.verify(session).await.unwrap(),
            ChainCheck::Intact { events: 160 }
        );
        assert_eq!(
            reopened.session(session).await.unwrap().unwrap().commands,
            160
        );
    }
    assert_eq!(reopened.running_sessions().await.unwrap().len(), 2);
}

async fn store_events_are_append_only_and_tampering_is_found(fixture: TestStore) {
    let store = fixture.open().await;
    for session in ["edit", "delete", "swap", "cut"] {
        new_session(&store, session).await;
        for i in 0..5 {
            store
                .append(session, command(&format!("t{i}"), &format!("echo {i}")))
                .await
                .unwrap();
        }
    }
    for refused in [
        "UPDATE events SET body = '{}' WHERE session_id = 'edit'",
        "DELETE FROM events WHERE session_id = 'edit'",
    ] {
        let error = fixture.raw(refused).await.unwrap_err();
        assert!(error.contains("append-only"), "{error}");
    }

    // Someone with the owner's rights lifts the guards and tampers.
    fixture.lift_append_only("events").await;
    fixture
        .raw(
            "UPDATE events SET body = replace(body, 'echo 2', 'echo X') WHERE session_id = 'edit' AND seq = 3;
             DELETE FROM events WHERE session_id = 'delete' AND seq = 2;
             UPDATE events SET seq = -1 WHERE session_id = 'swap' AND seq = 2;
             UPDATE events SET seq = 2 WHERE session_id = 'swap' AND seq = 3;
             UPDATE events SET seq = 3 WHERE session_id = 'swap' AND seq = -1;
             DELETE FROM events WHERE session_id = 'cut' AND seq >= 4;",
        )
        .await
        .unwrap();
    let broken_at = |check: ChainCheck| match check {
        ChainCheck::Broken(broken) => broken.seq,
        ChainCheck::Intact { events } => panic!("tampering not found ({events} events intact)"),
    };
    assert_eq!(broken_at(store.verify("edit").await.unwrap()), 3);
    assert_eq!(broken_at(store.verify("delete").await.unwrap()), 2);
    assert_eq!(broken_at(store.verify("swap").await.unwrap()), 2);
    assert_eq!(broken_at(store.verify("cut").await.unwrap()), 4);
}

fn intake_decision(n: usize) -> IntakeEvent {
    IntakeEvent {
        at: format!("2026-12-06T10:00:{n:02}Z").parse().unwrap(),
        producer: "alertmanager".into(),
        decision: IntakeDecision::Created,
        reason: None,
        alert_group: Some("3f2a9c01d4".into()),
        incident: Some(format!("default/redisdown-{n}")),
        message: format!("filed redisdown-{n}"),
    }
}

/// The alert intake's decisions form a hash chain of their own: two handles (two replicas)
/// appending at once stay one gapless chain, and an edited, reordered or cut-off decision shows.
async fn store_intake_decisions_are_chained_and_tampering_is_found(fixture: TestStore) {
    let (first, second) = (fixture.open().await, fixture.open().await);
    assert_eq!(
        first.verify_intake().await.unwrap(),
        ChainCheck::Intact { events: 0 }
    );
    let appends = (0..20).map(|n| {
        let store = if n % 2 == 0 { &first } else { &second };
        store.record_intake(intake_decision(n))
    });
    for result in futures::future::join_all(appends).await {
        result.unwrap();
    }
    assert_eq!(
        second.verify_intake().await.unwrap(),
        ChainCheck::Intact { events: 20 }
    );
    assert_eq!(first.intake_events().await.unwrap().len(), 20);
    let error = fixture
        .raw("UPDATE intake_events SET message = 'nothing' WHERE seq = 3")
        .await
        .unwrap_err();
    assert!(error.contains("append-only"), "{error}");

    fixture.lift_append_only("intake_events").await;
    let broken_at = |check: ChainCheck| match check {
        ChainCheck::Broken(broken) => broken.seq,
        ChainCheck::Intact { events } => panic!("tampering not found ({events} decisions intact)"),
    };
    fixture
        .raw("DELETE FROM intake_events WHERE seq >= 18")
        .await
        .unwrap();
    assert_eq!(broken_at(first.verify_intake().await.unwrap()), 18);
    fixture
        .raw("UPDATE intake_events SET message = 'filed nothing' WHERE seq = 7")
        .await
        .unwrap();
    assert_eq!(broken_at(first.verify_intake().await.unwrap()), 7);
    // A time that is no time is a clear error to read, and still checked as the text it is.
    fixture
        .raw("UPDATE intake_events SET at = 'soon' WHERE seq = 5")
        .await
        .unwrap();
    let error = first.intake_events().await.unwrap_err().to_string();
    assert!(
        error.starts_with("a stored intake_events row does not decode: at: \"soon\" is not a time"),
        "{error}"
    );
    assert_eq!(broken_at(first.verify_intake().await.unwrap()), 5);
}

async fn store_secrets_never_reach_the_file(fixture: TestStore) {
    let store = fixture.open().await;
    new_session(&store, "s").await;
    let secrets = [
        "sk-ant-api03-SECRETSECRETSECRET0123",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_0123456789abcdefghijABCDEFGHIJklmnopqr",
        "p4ssw0rd-configured",
        "xoxb-1234567890-SLACKSLACKSLACK",
        "hunter2hunter2",
    ];
    let spec: IncidentSpec = serde_json::from_value(json!({
        "title": format!("login fails with {}", secrets[4]),
        "description": format!("db at postgres://app:{}@db:5432/app", secrets[5]),
    }))
    .unwrap();
    store
        .append(
            "s",
            EventBody::SessionStarted {
                generation: 1,
                spec: spec.clone(),
                model: "m".into(),
                provider: "anthropic".into(),
                sandbox_image: "img".into(),
                requests: Default::default(),
            },
        )
        .await
        .unwrap();
    store
        .append(
            "s",
            EventBody::CommandStarted {
                tool_use_id: "t1".into(),
                command: format!("curl -H 'x-api-key: {}' http://x", secrets[0]),
                reasoning: format!("the key {} from the ticket", secrets[3]),
                timeout_seconds: 120,
            },
        )
        .await
        .unwrap();
    let event = store
        .append(
            "s",
            finished(
                "t1",
                &format!("{} {} {}", secrets[1], secrets[2], secrets[3]),
            ),
        )
        .await
        .unwrap();
    match &event.body {
        EventBody::CommandFinished { output, .. } => assert_eq!(
            output,
            "[REDACTED:aws-access-key-id] [REDACTED:github-token] [REDACTED:secret]"
        ),
        other => panic!("{other:?}"),
    }
    store
        .append(
            "s",
            EventBody::TicketUpdated {
                generation: 2,
                spec,
            },
        )
        .await
        .unwrap();
    let incident = IncidentContent::Incident(StoredIncident {
        uid: "uid-1".into(),
        generation: 2,
        spec_hash: "h".into(),
        incident: json!({"spec": {"title": secrets[1], "description": secrets[2]}}),
    });
    let problem = IncidentContent::Problem {
        error: format!("bad manifest near {}", secrets[3]),
    };
    for (name, content) in [("api-down", incident), ("bad.yaml#1", problem)] {
        store
            .put_incident(IncidentRecord {
                namespace: "default".into(),
                name: name.into(),
                source: "files".into(),
                content,
                updated_at: "2026-12-06T10:00:00Z".parse().unwrap(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.verify("s").await.unwrap(),
        ChainCheck::Intact { events: 4 }
    );
    drop(store);
    let stored = fixture.stored_text().await;
    assert!(
        stored.contains("login fails with"),
        "the check reads the rows"
    );
    for secret in secrets {
        assert!(!stored.contains(secret), "{secret} reached the store");
    }
}

async fn store_incidents_upsert_list_and_delete(fixture: TestStore) {
    let store = fixture.open().await;
    let stored = |generation| StoredIncident {
        uid: "u".into(),
        generation,
        spec_hash: "h".into(),
        incident: json!({"spec": {"title": "t"}}),
    };
    let record = IncidentRecord {
        namespace: "default".into(),
        name: "x".into(),
        source: "files".into(),
        content: IncidentContent::Incident(stored(1)),
        updated_at: "2026-12-06T10:00:00.123456789Z".parse().unwrap(),
    };
    store.put_incident(record.clone()).await.unwrap();
    let updated = IncidentRecord {
        content: IncidentContent::Incident(stored(2)),
        ..record.clone()
    };
    store.put_incident(updated.clone()).await.unwrap();
    assert_eq!(store.incidents().await.unwrap(), vec![updated.clone()]);
    assert_eq!(store.incident("default", "x").await.unwrap(), Some(updated));
    // A manifest problem reads back as one: the record says so, not an empty uid.
    let problem = IncidentRecord {
        name: "bad.yaml#1".into(),
        content: IncidentContent::Problem {
            error: "bad.yaml: document 1: missing field `title`".into(),
        },
        ..record.clone()
    };
    store.put_incident(problem.clone()).await.unwrap();
    assert_eq!(
        store.incident("default", "bad.yaml#1").await.unwrap(),
        Some(problem)
    );
    store.delete_incident("default", "x").await.unwrap();
    store
        .delete_incident("default", "bad.yaml#1")
        .await
        .unwrap();
    assert_eq!(store.incidents().await.unwrap(), vec![]);
}

/// Two appends may write their anchors out of order (from two tasks or two processes): the highest
/// anchored head counts, so a tail cut back to the stale anchor together with the session row is
/// still found.
async fn store_a_stale_anchor_does_not_hide_a_cut_tail(fixture: TestStore) {
    let store = fixture.open().await;
    new_session(&store, "s").await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(
            store
                .append("s", command(&format!("t{i}"), "true"))
                .await
                .unwrap(),
        );
    }
    // The anchor of event 4 lands after the one of event 5.
    fixture.add_anchor("s", 4, &events[3].hash).await;
    assert_eq!(
        store.verify("s").await.unwrap(),
        ChainCheck::Intact { events: 5 }
    );

    fixture.lift_append_only("events").await;
    fixture
        .raw(&format!(
            "DELETE FROM events WHERE session_id = 's' AND seq = 5;
             UPDATE sessions SET head_seq = 4, head_hash = '{}' WHERE id = 's';",
            events[3].hash
        ))
        .await
        .unwrap();
    match store.verify("s").await.unwrap() {
        ChainCheck::Broken(broken) => assert_eq!(broken.seq, 5, "{}", broken.reason),
        ChainCheck::Intact { events } => panic!("the cut tail was not found ({events} intact)"),
    }
}

async fn store_unknown_sessions_and_undecodable_rows_are_clear_errors(fixture: TestStore) {
    let store = fixture.open().await;
    let error = store
        .append("nope", command("t", "true"))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "no session nope in the store");
    assert!(store.session("nope").await.unwrap().is_none());
    assert!(store.verify("nope").await.is_err());

    new_session(&store, "s").await;
    for i in 0..3 {
        store
            .append("s", command(&format!("t{i}"), "true"))
            .await
            .unwrap();
    }
    fixture.lift_append_only("events").await;
    fixture
        .raw(
            "UPDATE events SET body = '{\"kind\":\"no_such_kind\"}' WHERE session_id = 's' AND seq = 2;",
        )
        .await
        .unwrap();
    let error = store.events("s").await.unwrap_err().to_string();
    assert!(
        error.starts_with("session s, event 2: the event body does not decode:"),
        "{error}"
    );
    // Rows before the bad one still read.
    assert_eq!(store.events_after("s", 2).await.unwrap().len(), 1);

    // A time that is no time is a clear error to read, and still checked as the text it is.
    new_session(&store, "t").await;
    for i in 0..3 {
        store
            .append("t", command(&format!("t{i}"), "true"))
            .await
            .unwrap();
    }
    fixture
        .raw("UPDATE events SET at = 'soon' WHERE session_id = 't' AND seq = 3;")
        .await
        .unwrap();
    let error = store.events("t").await.unwrap_err().to_string();
    assert!(
        error.starts_with("session t, event 3: the event time \"soon\" is not a time:"),
        "{error}"
    );
    match store.verify("t").await.unwrap() {
        ChainCheck::Broken(broken) => assert_eq!(broken.seq, 3, "{broken:?}"),
        intact => panic!("an edited trail reads as {intact:?}"),
    }
}

/// Replicas starting together migrate the new database once: the advisory lock makes the others
/// wait, and they find the schema in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_replicas_opening_at_once_migrate_once() {
    let fixture = TestStore::postgres().await;
    let opened = futures::future::join_all((0..6).map(|_| fixture.open())).await;
    new_session(&opened[0], "s").await;
    for (i, store) in opened.iter().enumerate() {
        store
            .append("s", command(&format!("t{i}"), "true"))
            .await
            .unwrap();
    }
    assert_eq!(
        opened[5].verify("s").await.unwrap(),
        ChainCheck::Intact { events: 6 }
    );
    let versions: Vec<i64> = fixture
        .postgres_column("SELECT version FROM schema_migrations ORDER BY version")
        .await;
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
}

/// A PostgreSQL store that cannot be reached fails the open at once, in one line that names the
/// store without its password.
#[tokio::test]
async fn store_postgres_unreachable_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://opslab:s3cret-pw@/opslab?host={}",
        dir.path().join("no-server-here").display()
    );
    let location: opslab::audit::StoreLocation = url.parse().unwrap();
    let error = Store::open(location, opslab::audit::Redactor::default())
        .await
        .err()
        .expect("no server answers there")
        .to_string();
    assert!(
        error.starts_with("cannot reach the audit store at postgresql://"),
        "{error}"
    );
    assert!(!error.contains("s3cret-pw"), "{error}");
    assert!(!error.contains('\n'), "{error}");
}

/// On PostgreSQL the anchors are rows too: like the events, they refuse every change, and both
/// refuse TRUNCATE (which row triggers do not see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_events_and_anchors_refuse_changes() {
    let fixture = TestStore::postgres().await;
    let store = fixture.open().await;
    new_session(&store, "s").await;
    store.append("s", command("t1", "true")).await.unwrap();
    for refused in [
        "UPDATE anchors SET seq = 9",
        "DELETE FROM anchors",
        "TRUNCATE anchors",
        "TRUNCATE events CASCADE",
    ] {
        let error = fixture.raw(refused).await.unwrap_err();
        assert!(error.contains("append-only"), "{refused}: {error}");
    }
    assert_eq!(
        store.verify("s").await.unwrap(),
        ChainCheck::Intact { events: 1 }
    );
}

/// A session's draft (the answer being streamed): redacted before it is written, its unfinished
/// last word held back (a secret cut off mid-way matches no rule yet), replaced whole, and gone in
/// the transaction that appends the next event. The trail does not change.
async fn store_drafts_are_redacted_and_gone_with_the_next_event(fixture: TestStore) {
    let store = fixture.open().await;
    new_session(&store, "s").await;
    store.append("s", command("t1", "df -h")).await.unwrap();
    assert_eq!(store.draft("s").await.unwrap(), None);
    // Cut inside a provider key, then inside the configured secret: neither shows.
    for (cut, shown, redacted) in [
        (
            "The disk is full. The key sk-ant-api03-SECRETSEC",
            "The disk is full. The key ",
            false,
        ),
        (
            "The key sk-ant-api03-SECRETSECRETSECRET0123 leaked; and p4ssw0rd-conf",
            "The key [REDACTED:",
            true,
        ),
        ("and p4ssw0rd-configured too.", "and [REDACTED:", true),
    ] {
        store.put_draft("s", 2, cut).await.unwrap();
        let draft = store.draft("s").await.unwrap().expect("a draft");
        assert_eq!((draft.turn, draft.after_seq), (2, 1));
        assert!(
            draft.text.starts_with(shown) && draft.text.contains("[REDACTED:") == redacted,
            "{cut:?} drafted as {:?}",
            draft.text
        );
        assert!(!draft.text.contains("SECRETSEC"), "{draft:?}");
        assert!(!draft.text.contains("p4ssw0rd"), "{draft:?}");
        assert!(
            !draft.text.contains("too."),
            "the last word waits: {draft:?}"
        );
    }
    store.clear_draft("s").await.unwrap();
    assert_eq!(store.draft("s").await.unwrap(), None, "abandoned");
    store.put_draft("s", 2, "again ").await.unwrap();
    store.append("s", finished("t1", "full")).await.unwrap();
    assert_eq!(
        store.draft("s").await.unwrap(),
        None,
        "the event took its place"
    );
    assert_eq!(store.events("s").await.unwrap().len(), 2);
    assert_eq!(
        store.verify("s").await.unwrap(),
        ChainCheck::Intact { events: 2 }
    );
}

/// The feed's next change, within a bound that tells a feed that never yields from a slow machine.
async fn next(feed: &mut SessionFeed) -> Option<opslab::audit::SessionUpdate> {
    tokio::time::timeout(std::time::Duration::from_secs(30), feed.next())
        .await
        .expect("the feed yields within 30 s")
        .unwrap()
}

/// The change feed `follow` and the console read: the events so far, then each new one; a draft
/// once it is written, each time it grows, and gone with the event that replaces it; nothing after
/// the session's end.
async fn store_the_change_feed_yields_events_then_drafts(fixture: TestStore) {
    let store = fixture.open().await;
    new_session(&store, "s").await;
    store.append("s", command("t1", "df -h")).await.unwrap();
    let mut feed = SessionFeed::new(fixture.open().await, "s", 0);
    let first = next(&mut feed).await.unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.draft, DraftChange::Same);
    store.put_draft("s", 1, "I will ").await.unwrap();
    let drafted = next(&mut feed).await.unwrap();
    assert!(drafted.events.is_empty());
    let DraftChange::Now(draft) = drafted.draft else {
        panic!("{drafted:?}")
    };
    assert_eq!(draft.text, "I will ");
    store.put_draft("s", 1, "I will look ").await.unwrap();
    let grown = next(&mut feed).await.unwrap();
    assert!(matches!(grown.draft, DraftChange::Now(ref draft) if draft.text == "I will look "));
    store.append("s", finished("t1", "out")).await.unwrap();
    let stored = next(&mut feed).await.unwrap();
    assert_eq!(
        (stored.events.len(), stored.draft.clone()),
        (1, DraftChange::Gone)
    );
    store
        .append(
            "s",
            EventBody::SessionFinished {
                phase: Phase::Resolved,
                reason: "Reported".into(),
                message: "done".into(),
                outcome: Some(Outcome::Resolved),
            },
        )
        .await
        .unwrap();
    let ended = next(&mut feed).await.unwrap();
    assert!(ended.finished());
    assert_eq!(next(&mut feed).await, None);
}
