//! Connections and statements: one pool (deadpool on tokio-postgres) whose
//! connections keep each statement prepared once ([`Db`]), error texts
//! with the server's reason, and databases made and dropped for tests and
//! benchmarks.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, NoTls, Row};

pub type Pool = deadpool_postgres::Pool;
pub type Conn = deadpool_postgres::Object;
pub type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Statements prepared once per connection and then reused: parsing each
/// on every call costs a round trip and the server's work each time. For
/// a connection and a transaction alike.
#[async_trait]
pub trait Db: GenericClient {
    async fn run(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let s = self.prepare_cached(sql).await?;
        self.execute(&s, p).await
    }
    async fn rows(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let s = self.prepare_cached(sql).await?;
        self.query(&s, p).await
    }
    async fn one(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let s = self.prepare_cached(sql).await?;
        self.query_one(&s, p).await
    }
    async fn opt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error> {
        let s = self.prepare_cached(sql).await?;
        self.query_opt(&s, p).await
    }
}

impl<T: GenericClient> Db for T {}

/// The pool: at most `size` connections, made as they are needed; a
/// connection that died is noticed when it comes back (no probe query
/// before each use, which would cost a round trip every time).
pub fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, String> {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| e.to_string())
}

/// An error with its causes: the postgres client's own text is often just
/// "db error", the server's message is in its source.
pub fn why(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

/// `postgres://user@host:port/db`, without a password, for messages.
pub fn display_url(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Makes a new, empty database on `server` (a URL without a database)
/// and returns its URL. For tests and benchmarks.
pub fn create_database(server: &str, tag: &str) -> Result<String, String> {
    let base = server.trim_end_matches('/').to_owned();
    let name = format!(
        "jumgw_{}_{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    admin(&base, format!("CREATE DATABASE {name}"))?;
    Ok(format!("{base}/{name}"))
}

/// Drops a database made by [`create_database`].
pub fn drop_database(server: &str, url: &str) -> Result<(), String> {
    let base = server.trim_end_matches('/');
    let name = url.rsplit('/').next().unwrap_or_default();
    if !name.starts_with("jumgw_")
        || name.contains(|c: char| !c.is_ascii_alphanumeric() && c != '_')
    {
        return Err(format!("{name}: not a database this program made"));
    }
    admin(base, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
}

/// One statement on the server's `postgres` database. On a thread with a
/// runtime of its own, so that tests and benchmarks may call it from
/// anywhere, inside a runtime or not.
fn admin(base: &str, sql: String) -> Result<(), String> {
    let url = format!("{base}/postgres");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(|e| format!("{url}: {}", why(&e)))?;
            let driver = tokio::spawn(conn);
            let out = c
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{url}: {}", why(&e)));
            drop(c);
            let _ = driver.await;
            out
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the database thread panicked".into()))
}
