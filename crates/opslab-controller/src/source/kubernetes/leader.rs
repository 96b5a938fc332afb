//! Leader election on a coordination.k8s.io Lease: of several replicas, only the holder reconciles
//! and writes status. Losing the lease, or the lease task dying, ends the process's work at once
//! (Kubernetes restarts it as a follower): a controller that might no longer lead must not act.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LeaseSettings;
use crate::{Error, Result};

/// Waits to hold the lease, then runs `lead` until it returns, `shutdown` fires, or the lease is
/// lost. `lead` is given a token that is cancelled when leadership ends.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    settings: &LeaseSettings,
    shutdown: CancellationToken,
    on_following: impl FnOnce(),
    lead: F,
) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let seconds = settings.duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&namespace)
        .with_identity(&settings.identity)
        .with_duration(seconds)
        // Renew with a third of the lease left, so one slow API call does not lose it.
        .with_grace((seconds / 3).max(1))
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, mut lease_task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{}", settings.name), identity = %settings.identity, "waiting to lead");
    on_following();

    // Follow until this replica holds the lease.
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return release(leading, lease_task).await,
            changed = leading.changed() => if changed.is_err() {
                return Err(task_ended(&mut lease_task).await);
            },
        }
    }
    info!(identity = %settings.identity, "leading: reconciling Incidents");
    let leadership = shutdown.child_token();
    let work = lead(leadership.clone());
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            result = &mut work => break result,
            changed = leading.changed() => {
                let lost = changed.is_err() || !*leading.borrow_and_update();
                if lost {
                    warn!("the lease was lost: stopping");
                    leadership.cancel();
                    // Let the controller stop cleanly; it writes nothing once cancelled.
                    let _ = (&mut work).await;
                    break Err(Error::LeaderElection("the lease was lost to another replica".into()));
                }
            }
        }
    };
    let released = release(leading, lease_task).await;
    outcome.and(released)
}

/// Dropping the receiver makes the lease task release the lease and end.
async fn release(
    leading: tokio::sync::watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<
        std::result::Result<kube_lease_manager::LeaseManager, LeaseManagerError>,
    >,
) -> Result<()> {
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(lease_error(error)),
        Err(error) => Err(Error::LeaderElection(format!(
            "the lease task failed: {error}"
        ))),
    }
}

async fn task_ended(
    lease_task: &mut tokio::task::JoinHandle<
        std::result::Result<kube_lease_manager::LeaseManager, LeaseManagerError>,
    >,
) -> Error {
    match lease_task.await {
        Ok(Ok(_)) => Error::LeaderElection("the lease task ended".into()),
        Ok(Err(error)) => lease_error(error),
        Err(error) => Error::LeaderElection(format!("the lease task failed: {error}")),
    }
}

fn lease_error(error: LeaseManagerError) -> Error {
    Error::LeaderElection(error.to_string())
}
