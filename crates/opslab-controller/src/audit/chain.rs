//! The hash chain of a session's events. Pure: computing a link, and finding the first broken one.

use sha2::{Digest, Sha256};

/// An event as stored: the fields the hash covers, and the hash.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub body: String,
    pub hash: String,
}

/// The hash of one event: over the previous hash and the event's stored (redacted) content.
pub fn link_hash(previous: &str, session_id: &str, seq: i64, at: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [previous, session_id, &seq.to_string(), at, body] {
        // Length-prefixed, so that no shift of bytes between fields gives the same hash.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What a backend reads, in one snapshot, to check a session's chain.
pub struct Trail {
    /// The head kept with the session row.
    pub recorded: (i64, String),
    /// The highest head anchored outside the session row, if any.
    pub anchored: Option<(i64, String)>,
    /// The events, in the order they were inserted (not by `seq`: reordering must show).
    pub links: Vec<Link>,
}

impl Trail {
    /// Checks the links against the highest known head: the anchored head wins, since the session
    /// row could have been rewritten together with the events.
    pub fn verify(&self, session_id: &str) -> Result<usize, Broken> {
        let (seq, hash) = self
            .anchored
            .as_ref()
            .filter(|(seq, _)| *seq >= self.recorded.0)
            .unwrap_or(&self.recorded);
        verify(session_id, &self.links, (*seq, hash))
    }
}

/// Where a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// The sequence number of the first bad link (for a cut-off tail: the first missing one).
    pub seq: i64,
    pub reason: String,
}

/// Checks a session's links, in stored order, against the head kept with the session.
/// Returns the number of links checked.
pub fn verify(session_id: &str, links: &[Link], head: (i64, &str)) -> Result<usize, Broken> {
    let mut previous = String::new();
    for (index, link) in links.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        if link.seq != expected_seq {
            return Err(Broken {
                seq: expected_seq,
                reason: format!(
                    "event {expected_seq} is missing (the next stored event is {})",
                    link.seq
                ),
            });
        }
        let body_kind = serde_json::from_str::<serde_json::Value>(&link.body)
            .ok()
            .and_then(|body| {
                body.get("kind")
                    .and_then(|kind| kind.as_str())
                    .map(str::to_string)
            });
        if body_kind.as_deref() != Some(link.kind.as_str()) {
            return Err(Broken {
                seq: link.seq,
                reason: format!("the kind column {:?} does not match the body", link.kind),
            });
        }
        let hash = link_hash(&previous, session_id, link.seq, &link.at, &link.body);
        if hash != link.hash {
            return Err(Broken {
                seq: link.seq,
                reason: "the hash does not match: the event was edited, or events were reordered"
                    .into(),
            });
        }
        previous = hash;
    }
    let (head_seq, head_hash) = head;
    let last = links.len() as i64;
    if head_seq > last {
        return Err(Broken {
            seq: last + 1,
            reason: format!("the trail ends at event {last}, but {head_seq} were recorded"),
        });
    }
    if head_seq < last || (head_seq > 0 && head_hash != previous) {
        return Err(Broken {
            seq: head_seq.max(1),
            reason: "the recorded head of the chain does not match the events".into(),
        });
    }
    Ok(links.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Link> {
        let mut previous = String::new();
        (1..=n)
            .map(|seq| {
                let body = format!(r#"{{"kind":"k","n":{seq}}}"#);
                let at = format!("2026-01-01T00:00:0{seq}Z");
                let hash = link_hash(&previous, "s", seq, &at, &body);
                previous = hash.clone();
                Link {
                    seq,
                    at,
                    kind: "k".into(),
                    body,
                    hash,
                }
            })
            .collect()
    }

    fn head(links: &[Link]) -> (i64, String) {
        let last = links.last().unwrap();
        (last.seq, last.hash.clone())
    }

    #[test]
    fn an_intact_chain_verifies() {
        let links = chain(4);
        let (seq, hash) = head(&links);
        assert_eq!(verify("s", &links, (seq, &hash)), Ok(4));
        assert_eq!(verify("s", &[], (0, "")), Ok(0));
    }

    #[test]
    fn an_edited_event_is_found() {
        let mut links = chain(4);
        let (seq, hash) = head(&links);
        links[1].body = r#"{"kind":"k","n":99}"#.into();
        assert_eq!(verify("s", &links, (seq, &hash)).unwrap_err().seq, 2);
    }

    #[test]
    fn a_deleted_event_is_found() {
        let mut links = chain(4);
        let (seq, hash) = head(&links);
        links.remove(2);
        assert_eq!(verify("s", &links, (seq, &hash)).unwrap_err().seq, 3);
    }

    #[test]
    fn swapped_events_are_found() {
        let mut links = chain(4);
        let (seq, hash) = head(&links);
        links.swap(1, 2);
        // Renumbered to hide the swap, the hashes still break.
        links[1].seq = 2;
        links[2].seq = 3;
        assert_eq!(verify("s", &links, (seq, &hash)).unwrap_err().seq, 2);
    }

    #[test]
    fn a_cut_off_tail_is_found_against_the_head() {
        let mut links = chain(4);
        let (seq, hash) = head(&links);
        links.truncate(2);
        assert_eq!(verify("s", &links, (seq, &hash)).unwrap_err().seq, 3);
    }
}
