//! The pages' handlers: read the store through the same calls the CLI makes (`get incidents`,
//! `describe incident`, `show`, `audit verify`), and render.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::pages::{self, IncidentFilter, Verification};
use crate::audit::{EventBody, Store, StoreError};

/// A store failure, as a page.
fn store_failed(error: StoreError) -> Response {
    tracing::warn!(%error, "the console could not read the store");
    let mut response = pages::html(pages::error_page(
        "The store did not answer",
        &error.to_string(),
    ));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn not_found(what: &str) -> Response {
    let mut response = pages::html(pages::error_page("Not found", what));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// `GET /ui/`.
pub async fn incidents(
    State(console): State<Console>,
    Query(filter): Query<IncidentFilter>,
) -> Response {
    match console.store.incidents().await {
        Ok(records) => pages::html(pages::incidents_page(
            &records,
            &filter,
            jiff::Timestamp::now(),
        )),
        Err(error) => store_failed(error),
    }
}

/// `GET /ui/incidents/NS/NAME`.
pub async fn incident(
    State(console): State<Console>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let record = match console.store.incident(&namespace, &name).await {
        Ok(Some(record)) => record,
        Ok(None) => return not_found(&format!("no Incident {namespace}/{name} in the store")),
        Err(error) => return store_failed(error),
    };
    let sessions = match record.stored() {
        None => Vec::new(),
        Some(stored) => match console.store.sessions_for_incident(&stored.uid).await {
            Ok(sessions) => sessions,
            Err(error) => return store_failed(error),
        },
    };
    pages::html(pages::incident_page(
        &record,
        &sessions,
        jiff::Timestamp::now(),
    ))
}

/// The chain check of `opslab audit verify`, for one session.
pub async fn verification(store: &Store, session_id: &str) -> Verification {
    match store.verify(session_id).await {
        Ok(check) => Verification::Checked(check),
        Err(error) => Verification::Failed(error.to_string()),
    }
}

/// `GET /ui/sessions/ID`. The chain check reads and hashes every event again: it runs beside the
/// reading and rendering of the timeline rather than before it.
pub async fn session(State(console): State<Console>, Path(id): Path<String>) -> Response {
    let session = match console.store.session(&id).await {
        Ok(Some(session)) => session,
        Ok(None) => return not_found(&format!("no session {id} in the store")),
        Err(error) => return store_failed(error),
    };
    let check = tokio::spawn({
        let (store, id) = (console.store.clone(), id.clone());
        async move { verification(&store, &id).await }
    });
    let events = match console.store.events(&id).await {
        Ok(events) => events,
        Err(error) => return store_failed(error),
    };
    let last = events.last().map_or(0, |event| event.seq);
    let timeline = pages::session_timeline(&session, &events, jiff::Timestamp::now());
    let verification = check
        .await
        .unwrap_or_else(|error| Verification::Failed(error.to_string()));
    pages::html(pages::session_page(&session, last, &verification, timeline))
}

/// `GET /ui/sessions/ID/output/SEQ`: a command's whole stored output, as plain text (which the
/// browser shows and never runs: `nosniff` is set on every response).
pub async fn output(
    State(console): State<Console>,
    Path((id, seq)): Path<(String, i64)>,
) -> Response {
    let events = match console.store.events_after(&id, seq - 1).await {
        Ok(events) => events,
        Err(error) => return store_failed(error),
    };
    match events.into_iter().find(|event| event.seq == seq) {
        Some(event) => match event.body {
            EventBody::CommandFinished { output, .. } => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                output,
            )
                .into_response(),
            _ => not_found(&format!(
                "event {seq} of session {id} is not a command's end"
            )),
        },
        None => not_found(&format!("no event {seq} in session {id}")),
    }
}
