//! When a failed reconcile is tried again, the same for every source.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::ObjectKey;

/// The longest wait before a retry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Per-Incident backoff after failed reconciles: 1 s, then doubling up to 5 min, each with up to as
/// much again of jitter; a successful reconcile starts it over.
#[derive(Default)]
pub struct Retries(Mutex<HashMap<ObjectKey, ExponentialBackoff>>);

impl Retries {
    /// The wait before this Incident's next try, one step further along its backoff.
    pub fn next(&self, key: &ObjectKey) -> Duration {
        self.lock()
            .entry(key.clone())
            .or_insert_with(new_backoff)
            .next()
            .unwrap_or(MAX_BACKOFF)
    }

    /// The Incident reconciled well: its next failure waits the shortest time again.
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, ExponentialBackoff>> {
        // A panic while holding this lock leaves the map itself consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}
