//! The store's error, from either backend's driver or from the store's own checks.

use super::location::postgres_message;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migrating the store: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migrating the store to version {version}: {message}")]
    PostgresMigration { version: i64, message: String },
    #[error("the store's connection pool: {0}")]
    Pool(String),
    #[error("cannot reach the audit store at {location}: {message}")]
    Unreachable { location: String, message: String },
    #[error("the store location {0}")]
    Location(String),
    #[error("a stored {table} row does not decode: {message}")]
    Row {
        table: &'static str,
        message: String,
    },
    #[error("encoding an event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no session {0} in the store")]
    UnknownSession(String),
    #[error("session {0} has finished; its trail is closed")]
    SessionClosed(String),
    #[error("session {session}, event {seq}: {message}")]
    Corrupt {
        session: String,
        seq: i64,
        message: String,
    },
    #[error("the store task failed: {0}")]
    Task(String),
}
