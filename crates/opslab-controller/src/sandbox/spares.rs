//! The bookkeeping of spare sandboxes: which are ready for a session, and which this controller
//! made and still keeps (ready, being made, or being claimed), so orphan collection leaves them be.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A started sandbox that no session owns.
pub struct Spare {
    /// Names its socket folder ([`super::LABEL_SANDBOX`]).
    pub key: String,
    pub container_id: String,
    /// The Incident networks it was made on; none: it is where spares wait (see `waiting_place`).
    pub networks: Vec<String>,
    /// When it was started: an old spare is replaced (see `SandboxConfig::spare_max_age`).
    pub made: Instant,
}

#[derive(Default)]
pub struct Spares {
    state: Mutex<State>,
    /// Told when a spare is taken, so the keeper makes another.
    taken: Notify,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Spare>,
    kept: HashSet<String>,
}

impl Spares {
    /// The oldest ready spare, if any.
    pub fn take(&self) -> Option<Spare> {
        let spare = self.state().ready.pop_front();
        self.taken.notify_one();
        spare
    }

    /// Waits until a spare is taken (at once if one was taken since the last wait).
    pub async fn taken(&self) {
        self.taken.notified().await;
    }

    /// Marks the spare `key` as this controller's, from before its container exists.
    pub fn keep(&self, key: &str) {
        self.state().kept.insert(key.to_string());
    }

    /// Whether the spare `key` is this controller's.
    pub fn keeps(&self, key: &str) -> bool {
        self.state().kept.contains(key)
    }

    /// The spare `key` is claimed by a session, or gone.
    pub fn forget(&self, key: &str) {
        self.state().kept.remove(key);
    }

    /// A spare made and started, ready for a session.
    pub fn offer(&self, spare: Spare) {
        self.state().ready.push_back(spare);
    }

    /// The oldest ready spare if it is older than `max_age` (taken out of the ready ones, still
    /// kept until forgotten).
    pub fn take_older_than(&self, max_age: Duration) -> Option<Spare> {
        let mut state = self.state();
        let stale = state
            .ready
            .front()
            .is_some_and(|spare| spare.made.elapsed() >= max_age);
        if stale { state.ready.pop_front() } else { None }
    }

    /// How long until the oldest ready spare is older than `max_age`; None without one.
    pub fn until_older_than(&self, max_age: Duration) -> Option<Duration> {
        self.state()
            .ready
            .front()
            .map(|spare| max_age.saturating_sub(spare.made.elapsed()))
    }

    pub fn ready(&self) -> usize {
        self.state().ready.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(key: &str) -> Spare {
        Spare {
            key: key.into(),
            container_id: format!("c-{key}"),
            networks: Vec::new(),
            made: Instant::now(),
        }
    }

    #[test]
    fn spares_are_taken_oldest_first_and_kept_until_forgotten() {
        let spares = Spares::default();
        assert!(spares.take().is_none());
        for key in ["a", "b"] {
            spares.keep(key);
            spares.offer(spare(key));
        }
        assert_eq!(spares.ready(), 2);
        let taken = spares.take().unwrap();
        assert_eq!(taken.key, "a");
        assert_eq!(spares.ready(), 1);
        // Being claimed: still this controller's until the claim is done.
        assert!(spares.keeps("a"));
        spares.forget("a");
        assert!(!spares.keeps("a"));
        assert!(spares.keeps("b"));
    }

    #[test]
    fn only_a_spare_older_than_the_limit_is_taken_for_replacement() {
        let spares = Spares::default();
        assert!(spares.take_older_than(Duration::ZERO).is_none());
        assert_eq!(spares.until_older_than(Duration::from_secs(60)), None);
        spares.keep("a");
        spares.offer(Spare {
            made: Instant::now() - Duration::from_secs(120),
            ..spare("a")
        });
        spares.keep("b");
        spares.offer(spare("b"));
        assert_eq!(
            spares.until_older_than(Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
        let stale = spares.take_older_than(Duration::from_secs(60)).unwrap();
        assert_eq!(stale.key, "a");
        assert!(spares.keeps("a"), "kept until its removal is done");
        assert!(spares.take_older_than(Duration::from_secs(60)).is_none());
        assert!(
            spares.until_older_than(Duration::from_secs(60)).unwrap() > Duration::from_secs(50)
        );
        assert_eq!(spares.ready(), 1);
    }

    #[tokio::test]
    async fn a_take_wakes_the_keeper_even_before_it_waits() {
        let spares = Spares::default();
        spares.take();
        tokio::time::timeout(std::time::Duration::from_secs(5), spares.taken())
            .await
            .expect("the take was remembered");
    }
}
