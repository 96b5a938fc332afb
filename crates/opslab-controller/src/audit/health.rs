//! Whether the audit store works, as the store's own calls find it: loud when that changes, calm
//! while it stays so. A failing store (a full disk, a server gone) is said once when it starts
//! failing, again every [`REMINDER`] while it goes on, and once when it works again; each failure
//! is counted. Readiness and the Incidents' status read [`StoreHealth::problem`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing::{debug, info, warn};

use super::StoreError;

/// How often a store that keeps failing is mentioned again in the log.
pub const REMINDER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct StoreHealth {
    state: Mutex<State>,
    /// Every failure of the store's I/O, for `opslab_store_errors_total`.
    errors: Counter,
}

#[derive(Default)]
struct State {
    failing: Option<Failing>,
}

struct Failing {
    since: jiff::Timestamp,
    failures: u64,
    last_error: String,
    last_said: Instant,
}

impl StoreHealth {
    /// Notes how a write went: a failure, or that the store works (again).
    pub fn observe_write<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(error) => self.observe_failure(error),
        }
    }

    /// Notes how a read went. Only its failure tells: a store whose disk is full still reads.
    pub fn observe_read<T>(&self, result: &Result<T, StoreError>) {
        if let Err(error) = result {
            self.observe_failure(error);
        }
    }

    fn observe_failure(&self, error: &StoreError) {
        match error {
            error if is_fault(error) => self.failed(error),
            // The store answered; the request was wrong (an unknown or closed session, a row that
            // does not decode): not a fault of the store's.
            _ => {}
        }
    }

    fn failed(&self, error: &StoreError) {
        self.errors.inc();
        let mut state = self.state();
        let text = error.to_string();
        match &mut state.failing {
            None => {
                warn!(error = %text, "the audit store is failing; sessions wait (nothing runs unrecorded) and retry with backoff");
                state.failing = Some(Failing {
                    since: jiff::Timestamp::now(),
                    failures: 1,
                    last_error: text,
                    last_said: Instant::now(),
                });
            }
            Some(failing) => {
                failing.failures += 1;
                if failing.last_said.elapsed() >= REMINDER {
                    warn!(error = %text, failures = failing.failures, since = %failing.since, "the audit store is still failing");
                    failing.last_said = Instant::now();
                } else {
                    debug!(error = %text, "the audit store failed again");
                }
                failing.last_error = text;
            }
        }
    }

    fn succeeded(&self) {
        let mut state = self.state();
        if let Some(failing) = state.failing.take() {
            info!(
                failures = failing.failures,
                since = %failing.since,
                "the audit store works again"
            );
        }
    }

    /// Why the store is not to be trusted now, or None when its last call worked.
    pub fn problem(&self) -> Option<String> {
        self.state().failing.as_ref().map(|failing| {
            format!(
                "the audit store is failing since {} ({} errors): {}",
                failing.since.strftime("%Y-%m-%d %H:%M:%S UTC"),
                failing.failures,
                failing.last_error
            )
        })
    }

    /// The failures counter, for the metrics registry.
    pub fn errors(&self) -> Counter {
        self.errors.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether an error is the store's I/O failing, rather than a request it refused.
fn is_fault(error: &StoreError) -> bool {
    match error {
        StoreError::Sqlite(_)
        | StoreError::Postgres(_)
        | StoreError::Pool(_)
        | StoreError::Unreachable { .. }
        | StoreError::Io { .. }
        | StoreError::Task(_) => true,
        StoreError::Migration(_)
        | StoreError::PostgresMigration { .. }
        | StoreError::Location(_)
        | StoreError::Row { .. }
        | StoreError::Json(_)
        | StoreError::UnknownSession(_)
        | StoreError::SessionClosed(_)
        | StoreError::Corrupt { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> Result<(), StoreError> {
        Err(StoreError::Io {
            path: "/store/opslab.db".into(),
            source: std::io::Error::other("No space left on device"),
        })
    }

    #[test]
    fn a_failing_store_is_a_problem_until_a_call_works() {
        let health = StoreHealth::default();
        assert_eq!(health.problem(), None);
        health.observe_write(&io_error());
        health.observe_write(&io_error());
        let problem = health.problem().unwrap();
        assert!(problem.contains("(2 errors)"), "{problem}");
        assert!(problem.ends_with("No space left on device"), "{problem}");
        assert_eq!(health.errors().get(), 2);
        // A read that works proves nothing of writes.
        health.observe_read(&Ok(()));
        assert!(health.problem().is_some());
        health.observe_write(&Ok(()));
        assert_eq!(health.problem(), None);
    }

    #[test]
    fn a_refused_request_is_not_a_fault() {
        let health = StoreHealth::default();
        health.observe_write::<()>(&Err(StoreError::SessionClosed("s".into())));
        assert_eq!(health.problem(), None);
        assert_eq!(health.errors().get(), 0);
    }
}
