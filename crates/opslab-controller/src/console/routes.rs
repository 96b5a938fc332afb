//! The console's router: each page's handler at its path, behind the access check and the
//! security headers.

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;

use super::{Access, Console, access, assets, handlers, headers, live, pages};

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
