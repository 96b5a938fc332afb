//! Live updates over Server-Sent Events, from the store's change feed ([`crate::audit::feed`]),
//! the one `opslab follow` and `get incidents --watch` read. Each change goes out as a `patch`
//! event: "append ID" or "replace ID", then server-rendered HTML.

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
use crate::audit::{DraftChange, Event, IncidentFeed, SessionFeed, SessionState};

/// The Incidents list changes less often and costs more to read.
const LIST_POLL: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
pub struct After {
    #[serde(default)]
    after: i64,
}

/// What one session's page feed holds between reads.
struct LivePage {
    console: Console,
    feed: SessionFeed,
    /// Every event so far: a new command's end needs its start, the cost its predecessors.
    events: Vec<Event>,
    /// The last seq the page has.
    sent: i64,
    pending: VecDeque<SseEvent>,
    done: bool,
}

fn patch(action: &str, target: &str, html: String) -> SseEvent {
    SseEvent::default()
        .event("patch")
        .data(format!("{action} {target}\n{html}"))
}

impl LivePage {
    /// Waits for the feed's next change, and queues the page's patches.
    async fn read(&mut self) {
        let next = tokio::select! {
            next = self.feed.next() => next,
            () = self.console.shutdown.cancelled() => {
                self.done = true;
                return;
            }
        };
        let update = match next {
            Ok(Some(update)) => update,
            Ok(None) => {
                self.pending
                    .push_back(SseEvent::default().event("end").data("finished"));
                self.done = true;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, session = %self.feed.session_id(), "the console's live feed could not read the store");
                return;
            }
        };
        self.events.extend(update.events);
        let last = self.events.last().map_or(0, |event| event.seq);
        if last > self.sent {
            let id = self.feed.session_id().to_string();
            let entries = timeline::entries(&self.events);
            let items = pages::event_items(&id, &entries, self.sent).into_string();
            self.pending
                .push_back(patch("append", "timeline", items).id(last.to_string()));
            self.sent = last;
            if let Ok(Some(session)) = self.console.store.session(&id).await {
                let check = verification(&self.console.store, &id).await;
                self.pending.push_back(patch(
                    "replace",
                    "summary",
                    pages::summary(&session, &check).into_string(),
                ));
                let running = session.state == SessionState::Running;
                let axis = timeline::gantt(&self.events, running.then(jiff::Timestamp::now));
                self.pending.push_back(patch(
                    "replace",
                    "gantt",
                    pages::gantt(&axis).into_string(),
                ));
            }
        }
        let draft = match update.draft {
            DraftChange::Same => return,
            DraftChange::Now(draft) => Some(draft),
            DraftChange::Gone => None,
        };
        self.pending.push_back(patch(
            "replace",
            "draft",
            pages::draft(draft.as_ref()).into_string(),
        ));
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
    let page = LivePage {
        feed: SessionFeed::new(console.store.clone(), id, 0),
        console,
        events: Vec::new(),
        sent,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(page, |mut page| async move {
        loop {
            if let Some(event) = page.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), page));
            }
            if page.done {
                return None;
            }
            page.read().await;
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
    let feed = IncidentFeed::new(console.store.clone()).every(LIST_POLL);
    let state = (console, feed, filter, seen.seen);
    let stream = futures::stream::unfold(state, |(console, mut feed, filter, last)| async move {
        loop {
            let next = tokio::select! {
                next = feed.next() => next,
                () = console.shutdown.cancelled() => return None,
            };
            let Ok(changes) = next else {
                continue;
            };
            let digest = pages::rows_digest(&changes.all, &filter);
            if digest != last {
                let rows = pages::incident_rows(&changes.all, &filter, jiff::Timestamp::now());
                let event = patch("replace", "incident-rows", rows.into_string());
                return Some((Ok::<_, Infallible>(event), (console, feed, filter, digest)));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
