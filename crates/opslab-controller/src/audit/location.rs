//! Where the store is: an SQLite file (a plain path, or `sqlite:PATH`), or a PostgreSQL database
//! (`postgres://…` / `postgresql://…`). Pure: parsing, and a display that never shows a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The store's location, chosen by its form.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A libpq-style URL; it may hold a password, so it is shown only through [`fmt::Display`].
    Postgres(String),
}

/// A store location that names no store. Never repeats the input: it may be a URL with a password.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("the store URL {redacted} is not a valid PostgreSQL URL: {problem}")]
    BadPostgresUrl { redacted: String, problem: String },
    #[error("the store location is empty: give an SQLite file path or a postgres:// URL")]
    Empty,
}

impl FromStr for StoreLocation {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<StoreLocation, LocationError> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return match tokio_postgres::Config::from_str(text) {
                Ok(_) => Ok(StoreLocation::Postgres(text.to_string())),
                Err(error) => Err(LocationError::BadPostgresUrl {
                    redacted: redact_url(text),
                    problem: postgres_message(&error),
                }),
            };
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.is_empty() {
            return Err(LocationError::Empty);
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Debug shows what Display shows: configs are debug-printed, and the URL may hold a password.
impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(_) => write!(f, "Sqlite({self})"),
            StoreLocation::Postgres(_) => write!(f, "Postgres({self})"),
        }
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> StoreLocation {
        StoreLocation::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for StoreLocation {
    fn from(path: &PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(path.clone())
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(path)
    }
}

impl From<&StoreLocation> for StoreLocation {
    fn from(location: &StoreLocation) -> StoreLocation {
        location.clone()
    }
}

const HIDDEN: &str = "***";

/// The URL with its password (in the user part or a `password=` parameter) replaced by `***`.
fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Unparsable here: show no more than the scheme.
        let scheme = text.split("://").next().unwrap_or("postgres");
        return format!("{scheme}://{HIDDEN}");
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(HIDDEN));
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    HIDDEN.to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// The driver's error with its cause: its own text alone is as short as "db error".
pub(crate) fn postgres_message(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StoreLocation {
        text.parse().unwrap()
    }

    #[test]
    fn paths_and_sqlite_prefixes_are_sqlite_files() {
        assert_eq!(
            parse("opslab.db"),
            StoreLocation::Sqlite("opslab.db".into())
        );
        assert_eq!(
            parse("sqlite:/var/lib/opslab.db"),
            StoreLocation::Sqlite("/var/lib/opslab.db".into())
        );
        assert_eq!(
            parse("sqlite:///var/lib/opslab.db"),
            StoreLocation::Sqlite("/var/lib/opslab.db".into())
        );
        assert!("".parse::<StoreLocation>().is_err());
        assert!("sqlite:".parse::<StoreLocation>().is_err());
    }

    #[test]
    fn postgres_urls_are_postgres_and_never_show_their_password() {
        for url in [
            "postgres://opslab:s3cret@db:5432/opslab",
            "postgresql://opslab@db/opslab?password=s3cret&sslmode=disable",
        ] {
            let location = parse(url);
            assert!(matches!(location, StoreLocation::Postgres(_)));
            let shown = location.to_string();
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(!format!("{location:?}").contains("s3cret"));
        }
        assert_eq!(
            parse("postgres://opslab:s3cret@db:5432/opslab").to_string(),
            "postgres://opslab:***@db:5432/opslab"
        );
        assert_eq!(
            parse("postgresql:///opslab?host=/run/pg").to_string(),
            "postgresql:///opslab?host=/run/pg"
        );
    }

    #[test]
    fn a_bad_postgres_url_is_refused_without_its_password() {
        let error = "postgres://opslab:s3cret@db:5432/opslab?sslmode=bogus"
            .parse::<StoreLocation>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a valid PostgreSQL URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}
