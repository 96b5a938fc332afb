//! The SQLite backend. One connection per `Store`, used from blocking threads; writes are
//! `BEGIN IMMEDIATE` transactions, so writers queue on the database lock instead of failing mid-way,
//! and several processes (the controller, the CLI) share the file through WAL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use super::append::{self, Pending};
use super::chain::Trail;
use super::intake;
use super::rows::{self, Columns, Decode, Param, Statement};
use super::{Durability, Event, IntakeEvent, StoreError};

/// Numbered migrations, embedded in the binary.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/sqlite/0001_init.sql")),
    M::up(include_str!("migrations/sqlite/0002_session_cost.sql")),
    M::up(include_str!("migrations/sqlite/0003_session_message.sql")),
    M::up(include_str!("migrations/sqlite/0004_intake_events.sql")),
    M::up(include_str!("migrations/sqlite/0005_cache_tokens.sql")),
    M::up(include_str!("migrations/sqlite/0006_drafts.sql")),
    M::up(include_str!("migrations/sqlite/0007_intake_chain.sql")),
];

/// Events in the order they were inserted: reordered `seq` values must show in `verify`.
const LINKS: &str =
    "SELECT seq, at, kind, body, hash FROM events WHERE session_id = ?1 ORDER BY rowid";

#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Mutex<Connection>,
    /// `<store>.anchors`: every chain head, appended after its commit. The store's own rows cannot
    /// rewrite it, so a trail cut short together with its session row is still found.
    anchors: Mutex<std::fs::File>,
    anchors_path: PathBuf,
}

impl Sqlite {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub async fn open(path: PathBuf, durability: Durability) -> Result<Sqlite, StoreError> {
        let anchors_path = anchors_path(&path);
        let anchors_file = anchors_path.clone();
        let (connection, anchors) = tokio::task::spawn_blocking(move || {
            let connection = open_connection(&path, durability)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&anchors_file)
                .map_err(|source| StoreError::Io {
                    path: anchors_file.clone(),
                    source,
                })?;
            Ok::<_, StoreError>((connection, file))
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))??;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                connection: Mutex::new(connection),
                anchors: Mutex::new(anchors),
                anchors_path,
            }),
        })
    }

    /// Runs `work` on the connection in a blocking thread.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another call leaves the connection usable: SQLite rolled back.
            let mut connection = inner
                .connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))?
    }

    pub async fn execute(&self, statement: Statement) -> Result<(), StoreError> {
        self.with(move |connection| run(connection, &statement))
            .await
    }

    pub async fn query<T: Send + 'static>(
        &self,
        statement: Statement,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.with(move |connection| select(connection, &statement, decode))
            .await
    }

    /// Chains the event under the write lock (`BEGIN IMMEDIATE`), then anchors the new head.
    pub async fn append(&self, pending: Pending) -> Result<Event, StoreError> {
        let event = self
            .with(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let head = select(
                    &transaction,
                    &Statement::new(append::HEAD, vec![pending.session_id.as_str().into()]),
                    append::head,
                )?
                .pop();
                let (event, statements) = append::link(pending, head, jiff::Timestamp::now())?;
                for statement in &statements {
                    run(&transaction, statement)?;
                }
                transaction.commit()?;
                Ok(event)
            })
            .await?;
        self.anchor(&event.session_id, event.seq, &event.hash)?;
        Ok(event)
    }

    /// Chains an intake decision under the write lock, then anchors the intake chain's new head.
    pub async fn append_intake(&self, event: IntakeEvent) -> Result<(), StoreError> {
        let (seq, hash) = self
            .with(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let head = select(
                    &transaction,
                    &Statement::new(intake::HEAD, vec![]),
                    rows::head,
                )?
                .pop();
                let (head, statement) = intake::link(event, head)?;
                run(&transaction, &statement)?;
                transaction.commit()?;
                Ok(head)
            })
            .await?;
        self.anchor(intake::CHAIN, seq, &hash)
    }

    /// The intake chain's anchor and links (read after the anchor, as for a session).
    pub async fn intake_trail(&self) -> Result<Trail, StoreError> {
        let anchored = highest_anchor(&self.inner.anchors_path, intake::CHAIN)?;
        let links = self
            .query(Statement::new(intake::LINKS, vec![]), intake::link_row)
            .await?;
        Ok(intake::trail(links, anchored))
    }

    /// Appends the new chain head to the anchors file (one short line: an atomic append).
    fn anchor(&self, chain: &str, seq: i64, hash: &str) -> Result<(), StoreError> {
        use std::io::Write;
        let line = format!("{chain} {seq} {hash}\n");
        let mut file = self
            .inner
            .anchors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes())
            .map_err(|source| StoreError::Io {
                path: self.inner.anchors_path.clone(),
                source,
            })
    }

    /// The session's head, anchor and events. The anchors are read first: they are written after
    /// each commit, so they never run ahead of the snapshot read after them.
    pub async fn trail(&self, session_id: String) -> Result<Option<Trail>, StoreError> {
        let anchored = highest_anchor(&self.inner.anchors_path, &session_id)?;
        self.with(move |connection| {
            // One read transaction: one snapshot of the head and the events.
            let transaction = connection.transaction()?;
            let key: Vec<Param> = vec![session_id.as_str().into()];
            let Some(recorded) = select(
                &transaction,
                &Statement::new(rows::RECORDED_HEAD, key.clone()),
                rows::head,
            )?
            .pop() else {
                return Ok(None);
            };
            let links = select(&transaction, &Statement::new(LINKS, key), rows::link)?;
            Ok(Some(Trail {
                recorded,
                anchored,
                links,
            }))
        })
        .await
    }
}

fn run(connection: &Connection, statement: &Statement) -> Result<(), StoreError> {
    connection
        .prepare_cached(&statement.sql)?
        .execute(rusqlite::params_from_iter(&statement.params))?;
    Ok(())
}

fn select<T>(
    connection: &Connection,
    statement: &Statement,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let mut prepared = connection.prepare_cached(&statement.sql)?;
    let mut rows = prepared.query(rusqlite::params_from_iter(&statement.params))?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(value) => value.to_sql(),
            Param::Integer(value) => value.to_sql(),
            Param::Real(value) => value.to_sql(),
            Param::Bool(value) => value.to_sql(),
        }
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        Ok(self.get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, StoreError> {
        Ok(self.get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(index)?)
    }

    fn real(&self, index: usize) -> Result<f64, StoreError> {
        Ok(self.get(index)?)
    }
}

fn anchors_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".anchors");
    PathBuf::from(name)
}

/// The highest head anchored for the session, if any. Not the last line: two appends (from two
/// tasks, or two processes) may write their anchors in the other order than they committed.
fn highest_anchor(path: &Path, session_id: &str) -> Result<Option<(i64, String)>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (session, seq, hash) = (parts.next()?, parts.next()?, parts.next()?);
            (session == session_id).then(|| Some((seq.parse::<i64>().ok()?, hash)))?
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(seq, hash)| (seq, hash.to_string())))
}

fn open_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // WAL lets the CLI read while the controller writes. See [`Durability`] for what each
    // synchronous level keeps.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Migrations::from_slice(MIGRATIONS).to_latest(&mut connection)?;
    Ok(connection)
}
