//! The store's change feed, read one way by every reader that follows it: `opslab follow`,
//! `get incidents --watch` and the console's live pages. The store sends no notifications (an
//! SQLite file shared by processes has none to send), so a feed reads it again every [`POLL`] and
//! yields only what changed since it last yielded.

use std::collections::HashMap;
use std::time::Duration;

use super::{Draft, Event, EventBody, IncidentRecord, Store, StoreError};

/// How often a feed reads the store again while nothing changes.
pub const POLL: Duration = Duration::from_millis(200);

/// What became of a session's draft (the answer being streamed) since the feed last yielded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DraftChange {
    Same,
    /// New, or grown: the text as it now stands.
    Now(Draft),
    /// Stored as an event, or abandoned.
    Gone,
}

/// What a session's feed yields: the events stored since, in order, and its draft's change.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionUpdate {
    pub events: Vec<Event>,
    pub draft: DraftChange,
}

impl SessionUpdate {
    /// Whether the session's end is among the events: the feed yields nothing after it.
    pub fn finished(&self) -> bool {
        self.events
            .iter()
            .any(|event| matches!(event.body, EventBody::SessionFinished { .. }))
    }
}

/// A session's new events, and its draft, as the store gets them.
pub struct SessionFeed {
    store: Store,
    session_id: String,
    /// The last seq yielded.
    after: i64,
    draft: Option<Draft>,
    interval: Duration,
    read_once: bool,
    ended: bool,
}

impl SessionFeed {
    /// The session's events after `after_seq` (0: all), then each one as it is stored.
    pub fn new(store: Store, session_id: impl Into<String>, after_seq: i64) -> SessionFeed {
        SessionFeed {
            store,
            session_id: session_id.into(),
            after: after_seq,
            draft: None,
            interval: POLL,
            read_once: false,
            ended: false,
        }
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The next change: read at once the first time, then every [`POLL`] until there is one.
    /// `None` once the session's end has been yielded. An error leaves the feed as it was: the next
    /// call reads again.
    pub async fn next(&mut self) -> Result<Option<SessionUpdate>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            if self.read_once {
                tokio::time::sleep(self.interval).await;
            }
            self.read_once = true;
            let events = self
                .store
                .events_after(&self.session_id, self.after)
                .await?;
            let after = events.last().map_or(self.after, |event| event.seq);
            let update = SessionUpdate {
                events,
                draft: DraftChange::Same,
            };
            let draft = if update.finished() {
                None
            } else {
                // A draft written after events not read yet waits for them.
                self.store
                    .draft(&self.session_id)
                    .await?
                    .filter(|draft| draft.after_seq <= after)
            };
            let update = SessionUpdate {
                draft: draft_change(self.draft.as_ref(), draft.as_ref()),
                ..update
            };
            if update.events.is_empty() && update.draft == DraftChange::Same {
                continue;
            }
            self.after = after;
            self.draft = draft;
            self.ended = update.finished();
            return Ok(Some(update));
        }
    }
}

/// How a draft changed between two reads.
fn draft_change(before: Option<&Draft>, now: Option<&Draft>) -> DraftChange {
    match (before, now) {
        (None, None) => DraftChange::Same,
        (Some(_), None) => DraftChange::Gone,
        (Some(before), Some(now)) if before.turn == now.turn && before.text == now.text => {
            DraftChange::Same
        }
        (_, Some(now)) => DraftChange::Now(now.clone()),
    }
}

/// What an Incidents feed yields: every record, and those new or changed (not only rewritten)
/// since the feed last yielded.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentChanges {
    pub all: Vec<IncidentRecord>,
    pub changed: Vec<IncidentRecord>,
}

/// The Incidents as the store gets them: everything first, then each change.
pub struct IncidentFeed {
    store: Store,
    seen: Option<HashMap<(String, String), IncidentRecord>>,
    interval: Duration,
    read_once: bool,
}

impl IncidentFeed {
    /// Its first read yields every record as changed.
    pub fn new(store: Store) -> IncidentFeed {
        IncidentFeed {
            store,
            seen: None,
            interval: POLL,
            read_once: false,
        }
    }

    /// A feed of the changes after `records`, as already read.
    pub fn after(store: Store, records: &[IncidentRecord]) -> IncidentFeed {
        IncidentFeed {
            seen: Some(by_key(records)),
            read_once: true,
            ..IncidentFeed::new(store)
        }
    }

    /// Reads every `interval` rather than every [`POLL`].
    pub fn every(self, interval: Duration) -> IncidentFeed {
        IncidentFeed { interval, ..self }
    }

    /// The next change (a record new, changed or gone): read at once the first time, then every
    /// interval until there is one. An error leaves the feed as it was: the next call reads again.
    pub async fn next(&mut self) -> Result<IncidentChanges, StoreError> {
        loop {
            if self.read_once {
                tokio::time::sleep(self.interval).await;
            }
            self.read_once = true;
            let all = self.store.incidents().await?;
            let changed: Vec<IncidentRecord> = match &self.seen {
                None => all.clone(),
                Some(seen) => {
                    let changed: Vec<IncidentRecord> = all
                        .iter()
                        .filter(|record| {
                            seen.get(&key(record))
                                .is_none_or(|before| !same_content(before, record))
                        })
                        .cloned()
                        .collect();
                    if changed.is_empty() && all.len() == seen.len() {
                        continue;
                    }
                    changed
                }
            };
            self.seen = Some(by_key(&all));
            return Ok(IncidentChanges { all, changed });
        }
    }
}

fn key(record: &IncidentRecord) -> (String, String) {
    (record.namespace.clone(), record.name.clone())
}

fn by_key(records: &[IncidentRecord]) -> HashMap<(String, String), IncidentRecord> {
    records
        .iter()
        .map(|record| (key(record), record.clone()))
        .collect()
}

/// Whether a stored Incident is unchanged but for when it was last written.
fn same_content(before: &IncidentRecord, after: &IncidentRecord) -> bool {
    before.content == after.content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(turn: u32, text: &str) -> Draft {
        Draft {
            session_id: "s".into(),
            after_seq: 1,
            turn,
            text: text.into(),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_draft_changes_when_its_text_or_turn_does() {
        assert_eq!(draft_change(None, None), DraftChange::Same);
        let a = draft(1, "I will");
        assert_eq!(draft_change(None, Some(&a)), DraftChange::Now(a.clone()));
        assert_eq!(draft_change(Some(&a), Some(&a)), DraftChange::Same);
        let grown = draft(1, "I will look");
        assert_eq!(
            draft_change(Some(&a), Some(&grown)),
            DraftChange::Now(grown.clone())
        );
        let next = draft(2, "I will");
        assert_eq!(draft_change(Some(&a), Some(&next)), DraftChange::Now(next));
        assert_eq!(draft_change(Some(&grown), None), DraftChange::Gone);
    }
}
