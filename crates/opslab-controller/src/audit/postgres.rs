//! The PostgreSQL backend, for several controller replicas sharing one store: a pool of
//! tokio-postgres connections (deadpool). Appends to one session are serialized by a row lock on
//! the session (`SELECT … FOR UPDATE`), so replicas appending at once stay gapless and chained.
//!
//! Chain anchors live in the `anchors` table. Replicas share nothing but the database, so a file
//! beside one replica (as SQLite keeps) would miss the other replicas' appends. The table is
//! insert-only (triggers refuse UPDATE, DELETE and TRUNCATE) and separate from the session row, so a
//! trail cut back together with its session row still shows against the highest anchor; it is
//! written in the append's own transaction, so it never names a head that was rolled back. Whoever
//! may drop triggers may rewrite it too: to rule that out, grant the controller's role only INSERT
//! and SELECT on it, and let another role own the schema.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};

use super::append::{self, Pending};
use super::chain::Trail;
use super::intake;
use super::location::StoreLocation;
use super::rows::{self, Columns, Decode, Param, Statement, postgres_placeholders};
use super::{Event, IntakeEvent, StoreError};

/// Numbered migrations, embedded in the binary, applied in order once per database.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("migrations/postgres/0002_session_message.sql"),
    ),
    (
        3,
        include_str!("migrations/postgres/0003_intake_events.sql"),
    ),
    (4, include_str!("migrations/postgres/0004_cache_tokens.sql")),
    (5, include_str!("migrations/postgres/0005_drafts.sql")),
    (6, include_str!("migrations/postgres/0006_intake_chain.sql")),
];

/// The advisory lock key that serializes migrations between replicas opening the store at once.
const MIGRATION_LOCK: i64 = 0x6f70_736c_6162; // "opslab"

/// Events in the order they were inserted (`id`): reordered `seq` values must show in `verify`.
const LINKS: &str =
    "SELECT seq, at, kind, body, hash FROM events WHERE session_id = ?1 ORDER BY id";

const HIGHEST_ANCHOR: &str =
    "SELECT seq, hash FROM anchors WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1";

const ANCHOR: &str = "INSERT INTO anchors (session_id, seq, hash) VALUES (?1, ?2, ?3)";

/// Used when the URL sets no `connect_timeout`: an unreachable server fails the start, not hangs it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
}

impl Postgres {
    /// Connects to `url` (failing at once, in one line naming `location`, the URL without its
    /// password, when the server cannot be reached) and brings the schema up to date.
    pub async fn open(url: &str, location: &StoreLocation) -> Result<Postgres, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|error| StoreError::Location(format!("{location}: {error}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Enough for the sessions a replica runs at once (each writes one event at a time) plus
        // the reconciler and the HTTP checks; PostgreSQL's default allows 100 connections.
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|error| StoreError::Pool(error.to_string()))?;
        let mut client = pool.get().await.map_err(|error| StoreError::Unreachable {
            location: location.to_string(),
            message: pool_message(error),
        })?;
        migrate(&mut client).await?;
        drop(client);
        Ok(Postgres { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => StoreError::Postgres(error),
            other => StoreError::Pool(other.to_string()),
        })
    }

    pub async fn execute(&self, statement: Statement) -> Result<(), StoreError> {
        let client = self.client().await?;
        run(&client, &statement).await
    }

    pub async fn query<T: Send + 'static>(
        &self,
        statement: Statement,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        select(&client, &statement, decode).await
    }

    /// Chains the event with the session row locked, and anchors the new head, in one transaction.
    pub async fn append(&self, pending: Pending) -> Result<Event, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let head = select(
            &transaction,
            &Statement::new(
                format!("{} FOR UPDATE", append::HEAD),
                vec![pending.session_id.as_str().into()],
            ),
            append::head,
        )
        .await?
        .pop();
        let (event, statements) = append::link(pending, head, jiff::Timestamp::now())?;
        for statement in &statements {
            run(&transaction, statement).await?;
        }
        let anchor = vec![
            event.session_id.as_str().into(),
            event.seq.into(),
            event.hash.as_str().into(),
        ];
        run(&transaction, &Statement::new(ANCHOR, anchor)).await?;
        transaction.commit().await?;
        Ok(event)
    }

    /// Chains an intake decision and anchors the chain's new head, in one transaction. The table
    /// lock (which only other appenders of decisions wait on) keeps replicas' links in one line.
    pub async fn append_intake(&self, event: IntakeEvent) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction
            .batch_execute("LOCK TABLE intake_events IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        let head = select(
            &transaction,
            &Statement::new(intake::HEAD, vec![]),
            rows::head,
        )
        .await?
        .pop();
        let ((seq, hash), statement) = intake::link(event, head)?;
        run(&transaction, &statement).await?;
        let anchor = vec![intake::CHAIN.into(), seq.into(), hash.as_str().into()];
        run(&transaction, &Statement::new(ANCHOR, anchor)).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The intake chain's anchor and links, from one snapshot.
    pub async fn intake_trail(&self) -> Result<Trail, StoreError> {
        let mut client = self.client().await?;
        let transaction = snapshot(&mut client).await?;
        let anchored = select(
            &transaction,
            &Statement::new(HIGHEST_ANCHOR, vec![intake::CHAIN.into()]),
            rows::head,
        )
        .await?
        .pop();
        let links = select(
            &transaction,
            &Statement::new(intake::LINKS, vec![]),
            intake::link_row,
        )
        .await?;
        transaction.commit().await?;
        Ok(intake::trail(links, anchored))
    }

    /// The session's head, anchor and events, from one snapshot.
    pub async fn trail(&self, session_id: String) -> Result<Option<Trail>, StoreError> {
        let mut client = self.client().await?;
        let transaction = snapshot(&mut client).await?;
        let key: Vec<Param> = vec![session_id.into()];
        let read = |sql: &'static str| Statement::new(sql, key.clone());
        let Some(recorded) = select(&transaction, &read(rows::RECORDED_HEAD), rows::head)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let anchored = select(&transaction, &read(HIGHEST_ANCHOR), rows::head)
            .await?
            .pop();
        let links = select(&transaction, &read(LINKS), rows::link).await?;
        transaction.commit().await?;
        Ok(Some(Trail {
            recorded,
            anchored,
            links,
        }))
    }
}

/// A read-only transaction on one snapshot: a chain read whole, as one moment saw it.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Applies the migrations not applied yet, in one transaction holding an advisory lock: replicas
/// opening the store at once wait for each other, and the later ones find nothing left to do.
/// PostgreSQL's DDL is transactional, so a failing migration leaves nothing half-applied. (A few
/// lines of our own rather than a migration crate: the version table and the lock are all it takes.)
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 applied_at TEXT NOT NULL
             )",
        )
        .await?;
    let applied: i64 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        transaction
            .batch_execute(sql)
            .await
            .map_err(|error| StoreError::PostgresMigration {
                version: *version,
                message: error.to_string(),
            })?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &jiff::Timestamp::now().to_string()],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// What a pool failure says, in one line (the driver's own error when it has one).
fn pool_message(error: deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(error) => super::postgres_message(&error),
        other => other.to_string(),
    }
}

fn params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| match param {
            Param::Text(value) => value as &(dyn ToSql + Sync),
            Param::Integer(value) => value,
            Param::Real(value) => value,
            Param::Bool(value) => value,
        })
        .collect()
}

async fn run<C: deadpool_postgres::GenericClient>(
    client: &C,
    statement: &Statement,
) -> Result<(), StoreError> {
    let prepared = client
        .prepare_cached(&postgres_placeholders(&statement.sql))
        .await?;
    client
        .execute(&prepared, &params(&statement.params))
        .await?;
    Ok(())
}

async fn select<T, C: deadpool_postgres::GenericClient>(
    client: &C,
    statement: &Statement,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let prepared = client
        .prepare_cached(&postgres_placeholders(&statement.sql))
        .await?;
    client
        .query(&prepared, &params(&statement.params))
        .await?
        .iter()
        .map(|row| decode(row))
        .collect()
}

impl Columns for tokio_postgres::Row {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        Ok(self.try_get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, StoreError> {
        Ok(self.try_get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(index)?)
    }

    fn real(&self, index: usize) -> Result<f64, StoreError> {
        Ok(self.try_get(index)?)
    }
}
