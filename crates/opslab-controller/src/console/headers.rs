//! The headers every console response carries: a strict Content-Security-Policy (scripts and styles
//! only from the console's own embedded assets, no inline script at all, so no nonce is needed),
//! no MIME sniffing, no framing, no referrer, no caching of pages that show an audit trail.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The policy. `connect-src 'self'` is what the live updates (EventSource) need; images are only
/// the console's own (none today), so a hostile `<img>` that slipped through could not call out.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

/// The middleware: sets the headers on every response, the 401s and 404s too.
pub async fn secure(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        // Assets set their own caching.
        if name == header::CACHE_CONTROL && headers.contains_key(header::CACHE_CONTROL) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
