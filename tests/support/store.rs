//! Audit stores on each backend for the store tests: a fresh SQLite file, or a fresh database on the
//! PostgreSQL server named by `OPSLAB_TEST_POSTGRES_URL` (scripts/test starts one), and raw access to
//! each for the tests that tamper with the rows.

use std::path::Path;

use opslab::audit::{EventBody, NewSession, Redactor, Store, StoreLocation};

pub const POSTGRES_URL_VAR: &str = "OPSLAB_TEST_POSTGRES_URL";

/// One backend's fresh store.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres { url: String },
}

pub struct TestStore {
    pub backend: Backend,
}

impl TestStore {
    pub fn sqlite() -> TestStore {
        TestStore {
            backend: Backend::Sqlite(tempfile::tempdir().unwrap()),
        }
    }

    /// A new database of its own on the test server, so tests run in parallel.
    pub async fn postgres() -> TestStore {
        let url = fresh_postgres_database().await;
        TestStore {
            backend: Backend::Postgres { url },
        }
    }

    pub fn location(&self) -> StoreLocation {
        match &self.backend {
            Backend::Sqlite(dir) => StoreLocation::Sqlite(dir.path().join("audit.db")),
            Backend::Postgres { url } => url.parse().unwrap(),
        }
    }

    /// Opens (another handle on) the store, as a second process or replica would.
    pub async fn open(&self) -> Store {
        Store::open(
            self.location(),
            Redactor::new(vec!["p4ssw0rd-configured".into()]),
        )
        .await
        .expect("the store opens")
    }

    /// Runs SQL on the database directly, past the store; the error as text.
    pub async fn raw(&self, sql: &str) -> Result<(), String> {
        match &self.backend {
            Backend::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("audit.db"))
                .unwrap()
                .execute_batch(sql)
                .map_err(|error| error.to_string()),
            Backend::Postgres { url } => {
                connect(url)
                    .await
                    .batch_execute(sql)
                    .await
                    .map_err(|error| match std::error::Error::source(&error) {
                        Some(cause) => format!("{error}: {cause}"),
                        None => error.to_string(),
                    })
            }
        }
    }

    /// What someone with the database's owner rights does first: turn off the append-only guards
    /// of a table (`events`, `intake_events`).
    pub async fn lift_append_only(&self, table: &str) {
        let sql = match &self.backend {
            Backend::Sqlite(_) => {
                format!("DROP TRIGGER {table}_no_update; DROP TRIGGER {table}_no_delete;")
            }
            Backend::Postgres { .. } => format!("ALTER TABLE {table} DISABLE TRIGGER USER;"),
        };
        self.raw(&sql).await.unwrap();
    }

    /// Records a chain head for the session where the backend keeps its anchors, as a late anchor
    /// written out of order would.
    pub async fn add_anchor(&self, session: &str, seq: i64, hash: &str) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.path().join("audit.db.anchors"))
                    .unwrap();
                writeln!(file, "{session} {seq} {hash}").unwrap();
            }
            Backend::Postgres { .. } => self
                .raw(&format!(
                    "INSERT INTO anchors (session_id, seq, hash) VALUES ('{session}', {seq}, '{hash}')"
                ))
                .await
                .unwrap(),
        }
    }

    /// Everything the backend keeps: every byte of the SQLite files (the WAL checkpointed first), or
    /// every row of every table as text.
    pub async fn stored_text(&self) -> String {
        match &self.backend {
            Backend::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join("audit.db"))
                    .unwrap()
                    .pragma_update(None, "wal_checkpoint", "TRUNCATE")
                    .ok();
                let mut text = String::new();
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
                text
            }
            Backend::Postgres { url } => {
                let client = connect(url).await;
                let tables: Vec<String> = self
                    .postgres_column(
                        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
                    )
                    .await;
                assert!(tables.contains(&"events".to_string()), "{tables:?}");
                let mut text = String::new();
                for table in tables {
                    for row in client
                        .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
                        .await
                        .unwrap()
                    {
                        text.push_str(row.get::<_, &str>(0));
                        text.push('\n');
                    }
                }
                text
            }
        }
    }

    /// The first column of a query's rows, on the PostgreSQL database.
    pub async fn postgres_column<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let Backend::Postgres { url } = &self.backend else {
            panic!("not a PostgreSQL store");
        };
        connect(url)
            .await
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

/// The test server's URL; without it the PostgreSQL tests fail, saying how to run them.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: the PostgreSQL store tests need a server. Run \
             scripts/test (it starts a throwaway cluster), or `scripts/with-postgres cargo nextest \
             run`, or point {POSTGRES_URL_VAR} at a server where this user may CREATE DATABASE"
        )
    })
}

/// Creates a database with a unique name on the test server; its URL.
pub async fn fresh_postgres_database() -> String {
    let server = postgres_url();
    let name = format!("opslab_test_{}", uuid::Uuid::new_v4().simple());
    connect(&server)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|error| {
            panic!("cannot create a test database on {POSTGRES_URL_VAR}: {error}")
        });
    let mut url = url::Url::parse(&server).expect("the test server URL parses");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A plain connection, its driver task spawned.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test PostgreSQL server: {error}"));
    tokio::spawn(connection);
    client
}

/// A SQLite store at `path` holding, for each of `sessions`, a session of that id and name with five
/// commands `echo 1` … `echo 5`: what the audit-verify tests tamper with.
pub async fn sqlite_with_sessions(path: &Path, sessions: &[&str]) {
    let store = Store::open(path, Redactor::default()).await.unwrap();
    for session in sessions {
        store
            .create_session(NewSession {
                id: (*session).into(),
                incident_uid: "u".into(),
                incident_namespace: "default".into(),
                incident_name: (*session).into(),
                attempt: 1,
                generation: 1,
            })
            .await
            .unwrap();
        for i in 1..=5 {
            let body = EventBody::CommandStarted {
                tool_use_id: format!("t{i}"),
                command: format!("echo {i}"),
                reasoning: "r".into(),
                timeout_seconds: 1,
            };
            store.append(session, body).await.unwrap();
        }
    }
}
