//! Live updates over Server-Sent Events. The store sends no notifications: its change feed is
//! [`Store::events_after`](crate::audit::Store::events_after) read again every [`POLL`], as
//! `opslab follow` reads it, and the Incidents as `get incidents --watch` reads them. Each change
//! goes out as a `patch` event: "append ID" or "replace ID", then server-rendered HTML.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::handlers::verification;
use super::pages::{self, IncidentFilter};
use super::timeline;
use crate::audit::{Event, EventBody, SessionState};

/// How often a feed reads the store again: as `opslab follow` does.
pub const POLL: Duration = Duration::from_millis(200);
/// The Incidents list changes less often and costs more to read.
const LIST_POLL: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
pub struct After {
    #[serde(default)]
    after: i64,
}

/// What one session's feed holds between reads.
struct SessionFeed {
    console: Console,
    id: String,
    /// Every event so far: a new command's end needs its start, the cost its predecessors.
    events: Vec<Event>,
    /// The last seq the page has.
    sent: i64,
    pending: VecDeque<SseEvent>,
    first: bool,
    done: bool,
}

fn patch(action: &str, target: &str, html: String) -> SseEvent {
    SseEvent::default()
        .event("patch")
        .data(format!("{action} {target}\n{html}"))
}

/// Sleeps a poll interval; false once the server is stopping.
async fn pause(console: &Console, interval: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(interval) => true,
        () = console.shutdown.cancelled() => false,
    }
}

impl SessionFeed {
    /// Reads what is new, and queues the page's patches.
    async fn read(&mut self) {
        if !self.first && !pause(&self.console, POLL).await {
            self.done = true;
            return;
        }
        self.first = false;
        let known = self.events.last().map_or(0, |event| event.seq);
        match self.console.store.events_after(&self.id, known).await {
            Ok(new) => self.events.extend(new),
            Err(error) => {
                tracing::warn!(%error, session = %self.id, "the console's live feed could not read the store");
                return;
            }
        }
        let last = self.events.last().map_or(0, |event| event.seq);
        if last <= self.sent {
            return;
        }
        let entries = timeline::entries(&self.events);
        let items = pages::event_items(&self.id, &entries, self.sent).into_string();
        self.pending
            .push_back(patch("append", "timeline", items).id(last.to_string()));
        let ended = self.events.iter().any(|event| {
            event.seq > self.sent && matches!(event.body, EventBody::SessionFinished { .. })
        });
        self.sent = last;
        if let Ok(Some(session)) = self.console.store.session(&self.id).await {
            let check = verification(&self.console.store, &self.id).await;
            self.pending.push_back(patch(
                "replace",
                "summary",
                pages::summary(&session, &check).into_string(),
            ));
            let running = session.state == SessionState::Running;
            let axis = timeline::gantt(&self.events, running.then(jiff::Timestamp::now));
            self.pending
                .push_back(patch("replace", "gantt", pages::gantt(&axis).into_string()));
        }
        if ended {
            self.pending
                .push_back(SseEvent::default().event("end").data("finished"));
            self.done = true;
        }
    }
}

/// `GET /ui/sessions/ID/live?after=SEQ`: the events after SEQ (or after `Last-Event-ID` on a
/// reconnect), as they are stored, until the session ends.
pub async fn session(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Query<After>,
    headers: HeaderMap,
) -> Response {
    let sent = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(query.after);
    let feed = SessionFeed {
        console,
        id,
        events: Vec::new(),
        sent,
        pending: VecDeque::new(),
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), feed));
            }
            if feed.done {
                return None;
            }
            feed.read().await;
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct Seen {
    /// The digest of the rows the page already has.
    #[serde(default)]
    seen: String,
}

/// `GET /ui/live?phase=&namespace=&seen=DIGEST`: the Incidents table's body whenever it changes
/// from what the page has.
pub async fn incidents(
    State(console): State<Console>,
    Query(filter): Query<IncidentFilter>,
    Query(seen): Query<Seen>,
) -> Response {
    let state = (console, filter, seen.seen, true);
    let stream = futures::stream::unfold(state, |(console, filter, last, mut first)| async move {
        loop {
            if !first && !pause(&console, LIST_POLL).await {
                return None;
            }
            first = false;
            let Ok(records) = console.store.incidents().await else {
                continue;
            };
            let digest = pages::rows_digest(&records, &filter);
            if digest != last {
                let rows = pages::incident_rows(&records, &filter, jiff::Timestamp::now());
                let event = patch("replace", "incident-rows", rows.into_string());
                return Some((Ok::<_, Infallible>(event), (console, filter, digest, false)));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
