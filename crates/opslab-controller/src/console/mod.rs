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
mod routes;
pub mod timeline;

pub use access::{Access, ConsoleOptions, ConsoleToken};
pub use headers::CONTENT_SECURITY_POLICY;
pub use routes::{router, serve};

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
/// notifications carry, built from the path the router serves.
pub fn session_url(base: &str, session_id: &str) -> String {
    format!("{base}{}", pages::session_href(session_id))
}
