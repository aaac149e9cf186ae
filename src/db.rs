//! Connecting to SQLite or PostgreSQL with settings that hold under concurrent writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use crate::config::Config;

/// Counts the SQL statements the server has issued for requests; tests use it to prove
/// query counts do not grow with the rows returned.
#[derive(Clone, Debug, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

tokio::task_local! {
    /// Set while a background job runs: its statements are not a request's.
    static BACKGROUND: ();
}

/// Runs `job` with its statements left out of the [`StatementCounter`]. The timetable and
/// webhook workers poll on their own rhythm; counted, they would land in whatever request a
/// test happens to be measuring.
pub async fn background<F: std::future::Future>(job: F) -> F::Output {
    BACKGROUND.scope((), job).await
}

fn in_background() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

impl StatementCounter {
    /// Counts one statement, unless a background job issued it.
    pub fn add_one(&self) {
        if !in_background() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Statements executed so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A database that could not be opened; the message is one line, fit for a terminal.
#[derive(Debug, thiserror::Error)]
#[error("DATABASE_URL: cannot open the database: {0}")]
pub struct ConnectError(String);

/// The pools of one server: `db` for everything, `writer` for the hot write paths (a single
/// connection on SQLite, the same pool on PostgreSQL), and the statement counter of both.
pub struct Pools {
    /// The general pool.
    pub db: DatabaseConnection,
    /// The hot-path write pool.
    pub writer: DatabaseConnection,
    /// Statements issued through either.
    pub statements: StatementCounter,
}

/// Opens the pools for `config.database_url`.
pub async fn connect(config: &Config) -> Result<Pools, ConnectError> {
    let counter = StatementCounter::default();
    let db = open(config, config.database_max_connections, &counter).await?;
    let writer = if config.is_sqlite() {
        open(config, 1, &counter).await?
    } else {
        db.clone()
    };
    Ok(Pools {
        db,
        writer,
        statements: counter,
    })
}

async fn open(
    config: &Config,
    max_connections: u32,
    counter: &StatementCounter,
) -> Result<DatabaseConnection, ConnectError> {
    let url = loopback_without_tls(
        &config.database_url,
        std::env::var_os("PGSSLMODE").is_some(),
    );
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        // Fail fast while the database is down instead of queueing requests for long.
        .acquire_timeout(Duration::from_secs(3))
        .sqlx_logging(false);
    if config.is_sqlite() {
        enable_wal(&config.database_url).await?;
        // WAL lets readers run beside the writer; the busy timeout makes writers queue
        // instead of failing with "database is locked"; NORMAL sync is durable against
        // process crashes in WAL mode.
        options
            .idle_timeout(None::<Duration>)
            .max_lifetime(None::<Duration>)
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
    }
    let mut db = Database::connect(options)
        .await
        .map_err(|e| ConnectError(first_line(&e.to_string())))?;
    let counter = counter.clone();
    // sea-orm calls this inside the statement's own future, so the task-local is in scope.
    db.set_metric_callback(move |_| counter.add_one());
    Ok(db)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    Migrator::up(db, None).await
}

/// Why the database could not be opened with an up-to-date schema.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database cannot be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migrate(String),
}

/// Brings the schema up to date, then opens the pools the server runs on.
///
/// On SQLite the migrations run on a connection of their own, closed before those pools
/// open. Pooled connections that were open while a migration added a column (such as
/// `app_user.token_version`) were seen to read rows back without it for a while: sea-orm
/// then failed with "Missing value for column", often for the first account created or
/// read right after start-up. PostgreSQL migrates on the server's pool.
pub async fn connect_migrated(config: &Config) -> Result<Pools, OpenError> {
    if config.is_sqlite() {
        let migrating = open(config, 1, &StatementCounter::default()).await?;
        let migrated = migrate(&migrating).await;
        // Closing only waits for the connection to finish; a failure here changes nothing.
        let _ = migrating.close().await;
        migrated.map_err(|e| OpenError::Migrate(e.to_string()))?;
        return Ok(connect(config).await?);
    }
    let pools = connect(config).await?;
    migrate(&pools.db)
        .await
        .map_err(|e| OpenError::Migrate(e.to_string()))?;
    Ok(pools)
}

/// Switches a SQLite file to WAL once, on a single connection: several pool connections
/// switching a fresh file at the same time would fail with "database is locked".
async fn enable_wal(url: &str) -> Result<(), ConnectError> {
    use sea_orm::sqlx::sqlite::SqliteConnectOptions;
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr;
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| ConnectError(first_line(&e.to_string())))?
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    // SQLite's own message ("unable to open database file") does not say which file, and a
    // relative URL depends on the working directory: name the absolute path tried.
    let file = options.get_filename();
    let tried = std::env::current_dir()
        .map(|dir| dir.join(file))
        .unwrap_or_else(|_| file.to_path_buf());
    let connection = options.connect().await.map_err(|e| {
        ConnectError(format!(
            "{}: {}",
            tried.display(),
            first_line(&e.to_string())
        ))
    })?;
    connection
        .close()
        .await
        .map_err(|e| ConnectError(first_line(&e.to_string())))
}

/// PostgreSQL on this same host is reached without TLS unless the URL (`sslmode=`) or
/// `PGSSLMODE` (`pgsslmode_set`) asks for it. sqlx's default, `prefer`, encrypts traffic
/// that never leaves the machine: on a teacher's session page that encryption took a fifth
/// of the server's throughput (bench/RESULTS.md). Any other host keeps the default.
fn loopback_without_tls(url: &str, pgsslmode_set: bool) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    let chosen = parsed
        .query_pairs()
        .any(|(key, _)| key == "sslmode" || key == "ssl-mode");
    if pgsslmode_set || chosen || !loopback || !matches!(parsed.scheme(), "postgres" | "postgresql")
    {
        return url.to_owned();
    }
    let separator = if parsed.query().is_some() { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::loopback_without_tls;

    #[test]
    fn postgres_on_this_host_goes_without_tls_unless_asked() {
        for (url, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/db",
                "postgres://postgres@127.0.0.1:5432/db?sslmode=disable",
            ),
            (
                "postgresql://u:p%40ss@localhost/db?application_name=x",
                "postgresql://u:p%40ss@localhost/db?application_name=x&sslmode=disable",
            ),
            (
                "postgres://u@[::1]:5432/db",
                "postgres://u@[::1]:5432/db?sslmode=disable",
            ),
            // The URL's own choice, another host, and SQLite stay as they are.
            (
                "postgres://u@127.0.0.1/db?sslmode=require",
                "postgres://u@127.0.0.1/db?sslmode=require",
            ),
            (
                "postgres://u@db.example.org/db",
                "postgres://u@db.example.org/db",
            ),
            ("sqlite://attendance.db", "sqlite://attendance.db"),
        ] {
            assert_eq!(loopback_without_tls(url, false), expected, "{url}");
        }
        assert_eq!(
            loopback_without_tls("postgres://u@127.0.0.1/db", true),
            "postgres://u@127.0.0.1/db",
            "PGSSLMODE decides"
        );
    }
}
