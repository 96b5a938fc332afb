//! The read-only web console under `/ui/`: the Incidents, one Incident, and a session as a
//! timeline, live while it runs. Served by the controller on its HTTP port and by `opslab console`
//! for a store reviewed offline. It reads only through [`Store`]'s calls, the ones the CLI uses.
//!
//! Built as small server-rendered UIs in Rust are: maud templates compiled into the binary (chosen
//! over askama because its markup is Rust, type-checked where it is used, and escapes every value
//! unless told otherwise, so there is no template file to keep in step and no way to forget an
//! escape), the stylesheet and one short script embedded, no Node build step. Every page works
//! with JavaScript off; only the live updates need it.

mod access;
mod assets;
mod handlers;
mod headers;
mod live;
pub mod pages;
pub mod timeline;

pub use access::{Access, ConsoleOptions, ConsoleToken};
pub use headers::CONTENT_SECURITY_POLICY;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::audit::Store;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub store: Store,
    /// Ends the live feeds, so that a server stopping gracefully is not held open by a browser.
    pub shutdown: CancellationToken,
}

/// A session's page on the controller whose base URL is `base` (without a trailing slash): the link
/// notifications carry, built from the path the router below serves.
pub fn session_url(base: &str, session_id: &str) -> String {
    format!("{base}{}", pages::session_href(session_id))
}

/// The console's routes, all under `/ui/`, behind `access` and with the security headers.
pub fn router(console: Console, access: Access) -> Router {
    if let Access::Off(why) = &access {
        tracing::warn!("{why}");
    }
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(handlers::incidents))
        .route("/ui/live", get(live::incidents))
        .route("/ui/incidents/{namespace}/{name}", get(handlers::incident))
        .route("/ui/sessions/{id}", get(handlers::session))
        .route("/ui/sessions/{id}/live", get(live::session))
        .route("/ui/sessions/{id}/output/{seq}", get(handlers::output))
        .route("/ui/assets/console.css", get(assets::css))
        .route("/ui/assets/live.js", get(assets::js))
        .with_state(console);
    let login = Router::new()
        .route(
            "/ui/login",
            get(|| async { pages::login(None) }).post(access::login),
        )
        .with_state(access.clone());
    pages
        .merge(login)
        .layer(axum::middleware::from_fn_with_state(access, access::check))
        .layer(axum::middleware::from_fn(headers::secure))
}

/// `opslab console`: the console alone on `listener` (and `/` sent to `/ui/`), until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    access: Access,
) -> std::io::Result<()> {
    let shutdown = console.shutdown.clone();
    let app = router(console, access).route("/", get(|| async { Redirect::to("/ui/") }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
