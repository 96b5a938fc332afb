//! The chain of the intake's decisions: one for the store, apart from the sessions', linked as a
//! session's events are ([`chain::link_hash`]) and checked by the same [`chain::verify`]. Pure: the
//! backends read the head and run the statements in one transaction under their write lock.

use super::chain::{self, Link, Trail};
use super::rows::{self, Columns, Param, Statement};
use super::{IntakeEvent, StoreError};

/// The chain's name where a session's id stands (in the hash, and in the anchors): not a UUID, so
/// never a session's.
pub const CHAIN: &str = "intake";
/// The `kind` every link of the chain has, in its column and its body.
const KIND: &str = "intake";

/// The last chained decision's `seq, hash` (none before the first).
pub const HEAD: &str =
    "SELECT seq, hash FROM intake_events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1";
/// The chained decisions in the order they were inserted: reordered `seq` values must show.
pub const LINKS: &str = "SELECT at, producer, decision, reason, alert_group, incident, message, seq, \
     hash FROM intake_events WHERE seq IS NOT NULL ORDER BY id";
const INSERT: &str = "INSERT INTO intake_events (at, producer, decision, reason, alert_group, \
     incident, message, seq, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// What a link's hash covers: the decision as stored (its message already redacted), with the
/// chain's kind, in one canonical JSON form. A parsed time gives the text it is stored as.
fn body<At: serde::Serialize>(event: &IntakeEvent<At>) -> Result<String, StoreError> {
    let mut value = serde_json::to_value(event)?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("kind".into(), KIND.into());
    }
    Ok(serde_json::to_string(&value)?)
}

/// Chains the decision after `head`: the new head, and the statement that stores it.
pub fn link(
    event: IntakeEvent,
    head: Option<(i64, String)>,
) -> Result<((i64, String), Statement), StoreError> {
    let (previous_seq, previous_hash) = head.unwrap_or_default();
    let seq = previous_seq + 1;
    let at = event.at.to_string();
    let hash = chain::link_hash(&previous_hash, CHAIN, seq, &at, &body(&event)?);
    let params: Vec<Param> = vec![
        at.into(),
        event.producer.into(),
        event.decision.as_str().into(),
        event.reason.into(),
        event.alert_group.into(),
        event.incident.into(),
        event.message.into(),
        seq.into(),
        hash.as_str().into(),
    ];
    Ok(((seq, hash), Statement::new(INSERT, params)))
}

/// One row of [`LINKS`], as the chain sees it: its time as stored text, byte for byte, since
/// that is what was hashed.
pub fn link_row(row: &dyn Columns) -> Result<Link, StoreError> {
    let event: IntakeEvent<String> = rows::intake_columns(row, Ok)?;
    Ok(Link {
        seq: row.integer(7)?,
        at: event.at.clone(),
        kind: KIND.into(),
        body: body(&event)?,
        hash: row.text(8)?,
    })
}

/// The chain as read: its head is its last link (the rows cannot be changed, and a cut tail shows
/// against the anchors).
pub fn trail(links: Vec<Link>, anchored: Option<(i64, String)>) -> Trail {
    let recorded = links
        .last()
        .map(|link| (link.seq, link.hash.clone()))
        .unwrap_or_default();
    Trail {
        recorded,
        anchored,
        links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::IntakeDecision;

    fn decision(n: usize) -> IntakeEvent {
        IntakeEvent {
            at: format!("2026-12-06T10:00:0{n}.25Z").parse().unwrap(),
            producer: "alertmanager".into(),
            decision: IntakeDecision::Created,
            reason: None,
            alert_group: Some("3f2a".into()),
            incident: Some(format!("default/redisdown-{n}")),
            message: format!("filed {n}"),
        }
    }

    /// The links as the backends would store and read them back.
    fn stored(n: usize) -> Vec<Link> {
        let mut head = None;
        let mut links = Vec::new();
        for index in 1..=n {
            let event = decision(index);
            let ((seq, hash), statement) = link(event.clone(), head.clone()).unwrap();
            let Param::Text(Some(at)) = &statement.params[0] else {
                panic!("{:?}", statement.params)
            };
            let stored = IntakeEvent {
                at: at.clone(),
                producer: event.producer,
                decision: event.decision,
                reason: event.reason,
                alert_group: event.alert_group,
                incident: event.incident,
                message: event.message,
            };
            links.push(Link {
                seq,
                at: at.clone(),
                kind: KIND.into(),
                body: body(&stored).unwrap(),
                hash: hash.clone(),
            });
            head = Some((seq, hash));
        }
        links
    }

    #[test]
    fn decisions_chain_and_an_edit_or_a_cut_tail_shows() {
        let links = stored(3);
        assert_eq!(trail(links.clone(), None).verify(CHAIN), Ok(3));
        assert_eq!(trail(Vec::new(), None).verify(CHAIN), Ok(0));

        let mut edited = links.clone();
        edited[1].body = edited[1].body.replace("filed 2", "filed nothing");
        assert_eq!(trail(edited, None).verify(CHAIN).unwrap_err().seq, 2);

        let anchored = Some((3, links[2].hash.clone()));
        let cut = links[..2].to_vec();
        assert_eq!(trail(cut, anchored).verify(CHAIN).unwrap_err().seq, 3);
    }

    /// A decision is hashed and stored as the word it always was: the links already stored verify.
    #[test]
    fn a_decision_is_its_word_in_the_hashed_body_and_the_column() {
        let body = body(&decision(1)).unwrap();
        assert!(body.contains(r#""decision":"created""#), "{body}");
        for word in [
            "created",
            "updated",
            "resolved",
            "deduplicated",
            "ignored",
            "refused",
            "failed",
        ] {
            let decision: IntakeDecision = serde_json::from_value(word.into()).unwrap();
            assert_eq!(decision.as_str(), word);
            assert_eq!(serde_json::to_value(decision).unwrap(), word);
        }
    }
}
