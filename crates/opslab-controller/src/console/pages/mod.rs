//! The console's HTML, compiled into the binary with maud: every interpolated value is escaped
//! unless wrapped in `PreEscaped`, which this module never does with stored text (the only
//! `PreEscaped` is maud's own DOCTYPE). Pure: data in, markup out.

mod incidents;
mod layout;
mod session;

pub use incidents::{IncidentFilter, incident_page, incident_rows, incidents_page, rows_digest};
pub use layout::{error_page, login};
pub use session::{
    Verification, draft, event_items, gantt, session_page, session_timeline, summary,
};

use maud::Markup;

/// Text from the trail, safe to show: control characters (ANSI escapes) and bidi overrides made
/// visible rather than obeyed. maud escapes the result for HTML.
fn shown(text: &str) -> String {
    crate::view::printable(text)
}

/// A path segment, percent-encoded: names reach URLs only this way.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn incident_href(namespace: &str, name: &str) -> String {
    format!("/ui/incidents/{}/{}", segment(namespace), segment(name))
}

pub fn session_href(id: &str) -> String {
    format!("/ui/sessions/{}", segment(id))
}

/// A page as a response body.
pub fn html(markup: Markup) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// How the pages show times: in UTC.
fn utc() -> crate::view::Clock {
    crate::view::Clock::new(jiff::tz::TimeZone::UTC)
}

/// A time in full, in UTC (`2026-12-06 18:30:28 UTC`); "-" for none.
fn when(at: Option<jiff::Timestamp>) -> String {
    at.map_or_else(|| "-".into(), |at| utc().full(at))
}

/// A time kept as RFC 3339 text (a condition's) in full, in UTC; "-" for none; as it is if it
/// does not parse.
fn when_text(at: &str) -> String {
    if at.is_empty() {
        "-".into()
    } else {
        shown(&utc().full_text(at))
    }
}

fn dollars(cost: f64) -> String {
    format!("${cost:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reach_urls_encoded() {
        assert_eq!(segment("web-1.prod"), "web-1.prod");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("\"><script>"), "%22%3E%3Cscript%3E");
        assert_eq!(incident_href("ops", "db"), "/ui/incidents/ops/db");
    }
}
