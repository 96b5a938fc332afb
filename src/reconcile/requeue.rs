//! Counting reconciles and deciding when a failed one is tried again, the same for every source.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tracing::warn;

use super::Context;
use crate::{Error, ObjectKey, Result};

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

/// Runs one reconcile of `key` (whatever the source wraps around [`super::apply`]), timed and
/// counted in the metrics by result and error; a success forgets the Incident's failures.
pub async fn counted<T>(
    ctx: &Context,
    key: &ObjectKey,
    reconcile: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = reconcile.await;
    let error_label = result.as_ref().err().map(Error::metric_label);
    ctx.metrics.reconciled(started.elapsed(), error_label);
    if result.is_ok() {
        ctx.retries.forget(key);
    }
    result
}

/// After a failed reconcile: says so, and returns how long to wait before trying `key` again.
pub fn failed(ctx: &Context, key: &ObjectKey, error: &Error) -> Duration {
    let delay = ctx.retries.next(key);
    warn!(incident = %key, %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    delay
}
