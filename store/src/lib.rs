//! kite-store: the Postgres system of record. Pool, migrations, and one module a table family.

pub mod cache;
pub mod events;
pub mod federation;
pub mod grants;
pub mod identity;
pub mod keys;
pub mod notify;
pub mod operational;
pub mod outbox;
pub mod peers;
pub mod rotation;
pub mod senders;
pub mod sources;
pub mod story;
pub mod stream;
pub mod teams;
pub mod types;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use deadpool_postgres::Object as Conn;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// A store failure, split by what a caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres cannot be reached or the connection broke: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint refused the write (409).
    #[error("already exists")]
    Conflict,
    /// The row does not exist (404).
    #[error("not found")]
    NotFound,
    /// The database refused a value it was given (Postgres class 22, a data exception: text
    /// with a NUL character, a number or time out of range): the caller's input (400).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Any other database error (a bug or a schema mismatch).
    #[error("database error: {0}")]
    Db(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The database URL is invalid.
    #[error("invalid database url: {0}")]
    Config(String),
    /// A secret could not be sealed or opened (no key, or the wrong one).
    #[error("secret key: {0}")]
    Secret(String),
    /// A stored value could not be read as the type asked for.
    #[error("cannot read column {column}: {reason}")]
    Decode {
        /// The column's position.
        column: usize,
        /// What went wrong.
        reason: String,
    },
}

/// Reading a column without panicking: a value that does not decode is an error.
pub(crate) trait RowExt {
    /// The column at `i`, or [`StoreError::Decode`].
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T>;
}

impl RowExt for tokio_postgres::Row {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.try_get(i).map_err(|e| StoreError::Decode {
            column: i,
            reason: e.to_string(),
        })
    }
}

/// A type glob (`*`, `?`) as a SQL `LIKE` pattern (with `\` as its escape).
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for ch in glob.chars() {
        match ch {
            '\\' | '%' | '_' => {
                out.push('\\');
                out.push(ch);
            }
            '*' => out.push('%'),
            '?' => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict;
            }
            let class = &db.code().code()[..2];
            // 08: connection exception, 57: operator intervention (terminated), 53: resources.
            if matches!(class, "08" | "57" | "53") {
                return StoreError::Unavailable(db.message().to_string());
            }
            if class == "22" {
                return StoreError::Invalid(db.message().to_string());
            }
            return StoreError::Db(db.message().to_string());
        }
        if e.is_closed() || e.code().is_none() {
            return StoreError::Unavailable(e.to_string());
        }
        StoreError::Db(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // Every pool error is about getting a connection (connecting, recycling, waiting),
        // so the database is unavailable for now, whatever the server said.
        StoreError::Unavailable(e.to_string())
    }
}

/// Result alias for store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A handle on kite's database: a connection pool plus the URL it came from.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: tokio_postgres::Config,
    secrets: Option<kite_wire::secret_box::SecretBox>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url`, creating the database first if it does not exist.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
        create_database_if_missing(&config).await?;
        Ok(Self {
            pool: build_pool(&config, pool_size)?,
            config,
            secrets: None,
        })
    }

    /// A second store on the same database for the router and delivery roles: their commits
    /// do not wait for the WAL flush (`synchronous_commit = off`). That is safe because what
    /// they write can be redone: a commit lost in a Postgres crash leaves an event unrouted
    /// or a delivery pending, which the sweeper republishes and the receiver deduplicates.
    /// Ingress keeps synchronous commits: a 202 promises durability.
    ///
    /// Its statements also keep their generic plan (`plan_cache_mode`): they are a few,
    /// run for every batch with different ids, and planning them each time cost more than
    /// running them. The sweeper's `analyze_changed` keeps those plans in step with the
    /// tables' size.
    pub fn relaxed(&self, pool_size: usize) -> Result<Self> {
        let mut config = self.config.clone();
        config.options("-c synchronous_commit=off -c plan_cache_mode=force_generic_plan");
        Ok(Self {
            pool: build_pool(&config, pool_size)?,
            config,
            secrets: self.secrets.clone(),
        })
    }

    /// The same store, sealing secrets at rest with `secrets`.
    pub fn with_secrets(mut self, secrets: kite_wire::secret_box::SecretBox) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Seals a secret for storage.
    pub(crate) fn seal(&self, plain: &str) -> Result<String> {
        self.secrets
            .as_ref()
            .map(|b| b.seal(plain))
            .ok_or_else(|| StoreError::Secret("no secret key configured".into()))
    }

    /// Opens a stored secret (a value stored before sealing existed is returned as it is,
    /// until [`Store::seal_legacy_secrets`] seals it).
    pub(crate) fn open(&self, stored: &str) -> Result<String> {
        if !kite_wire::secret_box::SecretBox::is_sealed(stored) {
            return Ok(stored.to_string());
        }
        let b = self
            .secrets
            .as_ref()
            .ok_or_else(|| StoreError::Secret("no secret key configured".into()))?;
        b.open(stored)
            .map_err(|e| StoreError::Secret(e.to_string()))
    }

    /// Opens an optional stored secret.
    pub(crate) fn open_opt(&self, stored: Option<String>) -> Result<Option<String>> {
        stored.map(|s| self.open(&s)).transpose()
    }

    /// Seals every secret still stored in plain text (from before encryption at rest), and
    /// checks that the sealed ones open with this key. Answers how many were sealed.
    pub async fn seal_legacy_secrets(&self) -> Result<u64> {
        const COLUMNS: &[(&str, &str)] = &[
            ("peers", "outbound_token"),
            ("peers", "previous_outbound_token"),
            ("trusted_senders", "inbound_token"),
            ("trusted_senders", "previous_inbound_token"),
            ("sources", "secret"),
            ("sources", "previous_secret"),
        ];
        let c = self.conn().await?;
        let mut sealed = 0;
        for (table, col) in COLUMNS {
            let rows = c
                .query(
                    &format!("SELECT id, {col} FROM {table} WHERE {col} IS NOT NULL"),
                    &[],
                )
                .await?;
            for r in rows {
                let id: uuid::Uuid = r.get(0);
                let v: String = r.get(1);
                if kite_wire::secret_box::SecretBox::is_sealed(&v) {
                    self.open(&v)?;
                    continue;
                }
                c.execute(
                    &format!("UPDATE {table} SET {col} = $2 WHERE id = $1"),
                    &[&id, &self.seal(&v)?],
                )
                .await?;
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// Applies pending migrations from `migrations/`.
    pub async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        embedded::migrations::runner()
            .run_async(client)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(())
    }

    /// The pool's connections: (in use, open, most it opens).
    pub fn pool_use(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size.saturating_sub(s.available), s.size, s.max_size)
    }

    /// A pooled connection.
    pub async fn conn(&self) -> Result<Conn> {
        Ok(self.pool.get().await?)
    }

    /// The connection settings (for dedicated LISTEN connections).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Round trip to Postgres, for health checks.
    pub async fn ping(&self) -> Result<()> {
        let c = self.conn().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }
}

fn build_pool(config: &tokio_postgres::Config, pool_size: usize) -> Result<Pool> {
    let mgr = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(pool_size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

async fn create_database_if_missing(config: &tokio_postgres::Config) -> Result<()> {
    let Some(db) = config.get_dbname().map(str::to_string) else {
        return Ok(());
    };
    // A direct connection succeeds when the database exists.
    match config.connect(NoTls).await {
        Ok(_) => return Ok(()),
        Err(e) => {
            let missing = e.as_db_error().is_some_and(|d| {
                d.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME
            });
            if !missing {
                return Err(e.into());
            }
        }
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, conn) = admin.connect(NoTls).await?;
    let task = tokio::spawn(conn);
    let quoted = format!("\"{}\"", db.replace('"', "\"\""));
    let res = client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await;
    drop(client);
    let _ = task.await;
    match res {
        Ok(()) => {
            tracing::info!(database = %db, "created database");
            Ok(())
        }
        Err(e)
            if e.as_db_error().is_some_and(|d| {
                d.code() == &tokio_postgres::error::SqlState::DUPLICATE_DATABASE
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
