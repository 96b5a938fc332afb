//! Which model-API failures are retried, and after how long. Pure; the one retry loop is
//! [`super::LlmClient::complete`], built on `backon`.

use std::time::Duration;

/// How many times, and how far apart, a failed model call is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Statuses worth another try: timeouts, conflicts, rate limits, server errors, Anthropic's
/// `overloaded` (529). Never 400/401/403/404/413: the same request would fail the same way.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// A 429 that means the account is out of money or quota, not that it is going too fast.
pub fn is_spend_limit(error_type: &str, message: &str) -> bool {
    let text = format!("{error_type} {message}").to_ascii_lowercase();
    [
        "insufficient_quota",
        "quota",
        "billing",
        "spend limit",
        "spending limit",
        "credit balance",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// The delay a server asks for: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date.
pub fn retry_after(headers: &http::HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(millis) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && millis.is_finite()
        && millis >= 0.0
    {
        return Some(Duration::from_secs_f64(millis / 1000.0));
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn only_transient_statuses_are_retried() {
        let retried: Vec<u16> = (100..600).filter(|s| retryable_status(*s)).collect();
        assert_eq!(retried, vec![408, 409, 429, 500, 502, 503, 504, 529]);
    }

    #[test]
    fn spend_limits_are_recognised() {
        assert!(is_spend_limit(
            "insufficient_quota",
            "You exceeded your current quota"
        ));
        assert!(is_spend_limit(
            "invalid_request_error",
            "Your credit balance is too low"
        ));
        assert!(!is_spend_limit(
            "rate_limit_error",
            "Number of requests has exceeded your rate limit"
        ));
    }

    #[test]
    fn retry_after_headers_are_read() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Thu, 01 Jan 2026 00:00:10 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(10)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_millis(250)));
        let mut bad = HeaderMap::new();
        bad.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&bad, now), None);
    }
}
