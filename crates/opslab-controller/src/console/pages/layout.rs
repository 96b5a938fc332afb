//! The page shell, the login page and the error page.

use maud::{DOCTYPE, Markup, html};

/// A whole page. `live`: the feed the page's script follows (none: the page is static).
pub fn page(title: &str, live: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · opslab" }
                link rel="stylesheet" href="/ui/assets/console.css";
                @if live.is_some() {
                    script src="/ui/assets/live.js" defer {}
                }
            }
            body data-live=[live] {
                header.top {
                    a.brand href="/ui/" { "opslab" }
                    nav { a href="/ui/" { "Incidents" } }
                    span id="live-status" {}
                }
                main { (body) }
            }
        }
    }
}

/// The login form, with what went wrong the last time.
pub fn login(problem: Option<&str>) -> axum::response::Response {
    super::html(page(
        "Log in",
        None,
        html! {
            h1 { "Log in to the console" }
            @if let Some(problem) = problem {
                p.errors { (problem) }
            }
            form.login method="post" action="/ui/login" {
                label for="token" { "Console token" }
                input id="token" type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
            p.muted { "Scripts may send the token as " code { "Authorization: Bearer TOKEN" } " instead." }
        },
    ))
}

/// A page that says what went wrong.
pub fn error_page(title: &str, message: &str) -> Markup {
    page(
        title,
        None,
        html! {
            h1 { (title) }
            p { (super::shown(message)) }
            p { a href="/ui/" { "All Incidents" } }
        },
    )
}
