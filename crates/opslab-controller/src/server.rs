//! The HTTP port: `/metrics` for Prometheus, `/healthz` (the process answers) and `/readyz` (the
//! source is synced, and the store and the Docker engine answer), and the web console under `/ui/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::audit::Store;
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;

/// What readiness depends on.
pub struct Readiness {
    /// Set once the source has listed every Incident once (see [`Readiness::mark_synced`]).
    synced: AtomicBool,
    /// What must be set before a session can run (see [`crate::llm::ProviderConfig::missing`]).
    model_missing: Option<String>,
    pub store: Store,
    pub sandboxes: Sandboxes,
}

impl Readiness {
    pub fn new(store: Store, sandboxes: Sandboxes, model_missing: Option<String>) -> Readiness {
        Readiness {
            synced: AtomicBool::new(false),
            model_missing,
            store,
            sandboxes,
        }
    }

    /// The source has listed every Incident once (or, as a follower, has nothing to list).
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Why the controller is not ready, or None when it is.
    async fn not_ready(&self) -> Option<String> {
        if let Some(missing) = &self.model_missing {
            return Some(missing.clone());
        }
        if !self.synced.load(Ordering::Acquire) {
            return Some("the Incident source has not synced yet".into());
        }
        if let Some(problem) = self.store.health().problem() {
            return Some(problem);
        }
        const PROBE: Duration = Duration::from_secs(2);
        match tokio::time::timeout(PROBE, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Some(format!("the audit store does not answer: {error}")),
            Err(_) => return Some("the audit store did not answer within 2 s".into()),
        }
        match tokio::time::timeout(PROBE, self.sandboxes.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("the Docker engine does not answer: {error}")),
            Err(_) => Some("the Docker engine did not answer within 2 s".into()),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Serves until `shutdown`. `routes` are merged in: the web console's, and the alert intake's when it
/// is on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    routes: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
        .merge(routes);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics to clients that ask for it (Prometheus does), the classic text format to the rest.
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS)],
            state.metrics.openmetrics(),
        )
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            state.metrics.prometheus_text(),
        )
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.not_ready().await {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
