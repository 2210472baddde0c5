//! PostgreSQL: the connection pool, the embedded cluster and the migrations.
//!
//! All state lives here; data access goes through the free functions of each
//! capability's `db` module, which take an executor so handlers own the transaction.

pub mod embedded;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Config;
use embedded::{EmbeddedOptions, EmbeddedPostgres};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// An open database: the pool, and the embedded cluster when there is one.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to the configured server, or starts the embedded cluster first.
    pub async fn open(config: &Config) -> Result<Self> {
        let (options, embedded) = if let Some(url) = &config.database.url {
            let options = PgConnectOptions::from_str(url.expose_secret())
                .context("database.url is not a valid PostgreSQL URL")?;
            (options, None)
        } else {
            {
                let cluster = EmbeddedPostgres::start(
                    &config.data_dir.join("postgres"),
                    &EmbeddedOptions {
                        bin_dir: config.database.postgres_bin_dir.clone(),
                        user: config.database.embedded_user.clone(),
                        install_if_missing: true,
                    },
                )
                .await?;
                (cluster.connect_options(), Some(cluster))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(config.database.acquire_timeout_secs))
            // JIT compilation costs tens of milliseconds per query and pays off only for
            // long analytical scans; discovery counts are interactive.
            .connect_with(options.application_name("custodian").options([("jit", "off")]))
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Self { pool, embedded })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) -> Result<()> {
        self.pool.close().await;
        if let Some(cluster) = &self.embedded {
            cluster.stop_if_started_here().await?;
        }
        Ok(())
    }
}

/// Applies pending migrations to `pool`.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}
