//! Who may read the console: open on a loopback address, behind a token elsewhere (a bearer token,
//! or a login that sets an HttpOnly, SameSite cookie), off on a non-loopback address without one
//! unless the operator says the address is private (`--console-insecure`). The decision is pure
//! ([`Access::decide`]); the check runs as a middleware on every console route.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

/// The console's secret. Never shown: its `Debug` says only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleToken(String);

impl ConsoleToken {
    /// The value, for registering with redaction's configured secrets.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// What the login cookie holds: a digest of the token, so that the cookie jar never holds the
    /// token itself.
    fn cookie_value(&self) -> String {
        digest(&format!("opslab-console-cookie\0{}", self.0))
    }

    /// Whether `offered` is the token (compared as digests, so in time independent of where they
    /// differ).
    fn matches(&self, offered: &str) -> bool {
        same_digest(&digest(offered), &digest(&self.0))
    }
}

impl std::fmt::Debug for ConsoleToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleToken(<redacted>)")
    }
}

/// Parsing never fails: a parse error would have clap repeat the value. [`ConsoleOptions::check`]
/// says what is wrong with it, without it.
impl std::str::FromStr for ConsoleToken {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(ConsoleToken(value.trim().to_string()))
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Equal-length digests compared without an early exit.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The console's access flags, shared by `opslab controller` and `opslab console`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConsoleOptions {
    /// A token for the web console (/ui/): sent as `Authorization: Bearer TOKEN`, or typed into its
    /// login page, which sets an HttpOnly cookie. Required on a non-loopback listen address unless
    /// --console-insecure; redacted everywhere like any configured secret.
    #[arg(
        long,
        env = "OPSLAB_CONSOLE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub console_token: Option<ConsoleToken>,
    /// Serve the console without a token on a non-loopback address: only where that address is
    /// private (a port published on the host's loopback, a Service behind an authenticating proxy).
    #[arg(long, env = "OPSLAB_CONSOLE_INSECURE")]
    pub console_insecure: bool,
}

impl ConsoleOptions {
    /// The token, if one is set (an empty value, as an unset variable in a compose file gives, is
    /// none).
    pub fn token(&self) -> Option<&ConsoleToken> {
        self.console_token
            .as_ref()
            .filter(|token| !token.secret().is_empty())
    }

    /// Whether the token can be used: it is registered with redaction, so it needs the length of
    /// any configured secret.
    pub fn check(&self) -> Result<(), UnredactableToken> {
        match self.token() {
            Some(token) => {
                crate::audit::check_configured_secret(token.secret()).map_err(UnredactableToken)
            }
            None => Ok(()),
        }
    }
}

/// A console token too short to be redacted from the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--console-token cannot be redacted safely: {0}")]
pub struct UnredactableToken(crate::audit::SecretTooShort);

/// What the console does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the address may read.
    Open,
    /// Only with the token.
    Token(ConsoleToken),
    /// Not served; the reason is said to whoever asks, and logged at start.
    Off(String),
}

impl Access {
    /// The console's access on `listen`: a configured token always applies; without one the
    /// console is open on loopback, or anywhere with `insecure`, and off elsewhere.
    pub fn decide(listen: SocketAddr, options: &ConsoleOptions) -> Access {
        match (options.token(), options.console_insecure) {
            (Some(token), _) => Access::Token(token.clone()),
            (None, true) => Access::Open,
            (None, false) if listen.ip().is_loopback() => Access::Open,
            (None, false) => Access::Off(format!(
                "the console is off: {listen} is not a loopback address and no token is configured \
                 (set --console-token or OPSLAB_CONSOLE_TOKEN, or --console-insecure if the address \
                 is private)"
            )),
        }
    }
}

/// The login cookie's name.
const COOKIE: &str = "opslab_console";
/// How long a login lasts.
const COOKIE_MAX_AGE_SECONDS: u64 = 12 * 3600;

/// Whether the request carries the token, as a bearer or as the login cookie.
fn authorized(token: &ConsoleToken, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|offered| token.matches(offered.trim()));
    let expected = token.cookie_value();
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same_digest(value, &expected));
    bearer || cookie
}

/// Paths anyone may load: the login page and the stylesheet it uses.
fn public(path: &str) -> bool {
    path == "/ui/login" || path == "/ui/assets/console.css"
}

/// The middleware: lets the request through, or answers 401 (a login page for browsers) or 404
/// when the console is off.
pub async fn check(State(access): State<Access>, request: Request, next: Next) -> Response {
    match &access {
        Access::Open => next.run(request).await,
        Access::Off(why) => (StatusCode::NOT_FOUND, format!("{why}\n")).into_response(),
        Access::Token(token) => {
            if public(request.uri().path()) || authorized(token, request.headers()) {
                return next.run(request).await;
            }
            let mut response = super::pages::login(None).into_response();
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"opslab console\""),
            );
            response
        }
    }
}

/// The login form's fields.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`: the right token sets the cookie and goes to the Incidents.
pub async fn login(
    State(access): State<Access>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Access::Token(token) = &access else {
        return Redirect::to("/ui/").into_response();
    };
    if !token.matches(form.token.trim()) {
        let mut response =
            super::pages::login(Some("That is not the console's token.")).into_response();
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECONDS}",
        token.cookie_value()
    );
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(token: Option<&str>, insecure: bool) -> ConsoleOptions {
        ConsoleOptions {
            console_token: token.map(|token| token.parse().unwrap()),
            console_insecure: insecure,
        }
    }

    #[test]
    fn a_non_loopback_address_needs_a_token_or_the_operators_word() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(matches!(
            Access::decide(public, &options(None, false)),
            Access::Off(why) if why.contains("--console-token")
        ));
        assert_eq!(Access::decide(public, &options(None, true)), Access::Open);
        assert_eq!(
            Access::decide(loopback, &options(None, false)),
            Access::Open
        );
        assert_eq!(
            Access::decide(v6_loopback, &options(None, false)),
            Access::Open
        );
        // A configured token applies everywhere, the loopback too.
        for address in [public, loopback] {
            assert!(matches!(
                Access::decide(address, &options(Some("a-long-console-token-1234"), true)),
                Access::Token(_)
            ));
        }
    }

    #[test]
    fn the_token_is_checked_as_a_bearer_or_a_cookie_and_never_shown() {
        let token: ConsoleToken = "a-long-console-token-1234".parse().unwrap();
        assert_eq!(format!("{token:?}"), "ConsoleToken(<redacted>)");
        let headers = |name: header::HeaderName, value: &str| {
            let mut map = HeaderMap::new();
            map.insert(name, value.parse().unwrap());
            map
        };
        assert!(authorized(
            &token,
            &headers(header::AUTHORIZATION, "Bearer a-long-console-token-1234")
        ));
        assert!(!authorized(
            &token,
            &headers(header::AUTHORIZATION, "Bearer a-long-console-token-1235")
        ));
        let cookie = format!("other=1; {COOKIE}={}", token.cookie_value());
        assert!(authorized(&token, &headers(header::COOKIE, &cookie)));
        assert!(!cookie.contains(token.secret()));
        assert!(!authorized(
            &token,
            &headers(
                header::COOKIE,
                &format!("{COOKIE}=a-long-console-token-1234")
            )
        ));
        assert!(!authorized(&token, &HeaderMap::new()));
        let short = ConsoleOptions {
            console_token: Some("x9q2z".parse().unwrap()),
            console_insecure: false,
        };
        let why = short.check().unwrap_err().to_string();
        assert!(
            why.contains("--console-token") && !why.contains("x9q2z"),
            "{why}"
        );
        assert_eq!(
            options(Some("a-long-console-token-1234"), false).check(),
            Ok(())
        );
    }
}
