//! The `custodian` command line: run the service and administer it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::app::{self, AppState};
use crate::audit;
use crate::auth::{Authenticator, Role};
use crate::config::{self, Config, Overrides};
use crate::db::Database;
use crate::metrics::Metrics;

/// Custodian: a governed research data registry for medical imaging.
///
/// Settings come from defaults, then the TOML file given with --config, then
/// CUSTODIAN_* environment variables (nested with `__`, e.g.
/// CUSTODIAN_DATABASE__URL), then flags.
#[derive(Debug, Parser)]
#[command(name = "custodian", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the embedded database, generated secrets and local objects.
    #[arg(long, global = true, value_name = "DIR", env = "CUSTODIAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (starting the embedded PostgreSQL unless a database URL is set).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document to stdout.
    Openapi,
    /// Seed demo users, sites and cohorts (and with `--subjects`, a synthetic registry), print demo tokens, and exit.
    Demo(DemoArgs),
    /// Mint credentials.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Download a release: verify its signed manifest, fetch its files in
    /// parallel (resuming partial ones), and check every SHA-256.
    Fetch(crate::fetch::FetchArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Also generate a synthetic registry of this many subjects (imaging, labs, diagnoses,
    /// genotypes, annotations) at the demo sites.
    #[arg(long, value_name = "N")]
    pub subjects: Option<u32>,
    /// Seed of the synthetic registry (the same seed gives the same registry).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write the synthetic registry's imaging as catalog rows only, without
    /// DICOM objects behind them: fast enough for benchmark registries of
    /// 100,000 subjects, which ingesting would take minutes.
    #[arg(long)]
    pub catalog_only: bool,
}

/// Subjects of the synthetic registry `serve --demo` generates on a fresh registry.
const DEMO_SUBJECTS: u32 = 500;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", env = "CUSTODIAN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Seed demo content and print demo tokens before serving.
    #[arg(long)]
    pub demo: bool,
    /// Also accept DICOM C-STORE on this port (peers are configured under `[dicom]`).
    #[arg(long, value_name = "PORT", env = "CUSTODIAN_DICOM_PORT")]
    pub dicom_port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a signed bearer token (HS256) for a user, for bootstrap and scripts.
    ///
    /// Uses the same data directory and configuration as `serve`, so the token
    /// is accepted by a running server. The issue is recorded in the audit log.
    Issue {
        /// Username (the token's subject).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// Role(s): admin, steward, organizer, uploader, researcher. Repeat or separate with commas.
        #[arg(long = "role", value_name = "ROLE", required = true, value_delimiter = ',')]
        roles: Vec<String>,
        /// Lifetime, e.g. 30m, 12h, 7d (default: auth.default_token_ttl).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the whole hash chain; exits non-zero and names the first bad
    /// sequence number when the log was tampered with.
    Verify,
}

/// This node's job worker: claims due jobs of every kind it knows.
async fn run_jobs(
    db: sqlx::PgPool,
    store: crate::storage::Store,
    local_root: Option<std::path::PathBuf>,
    sweep_interval: Duration,
    sweep_grace: Duration,
    release: crate::release::build::Context,
) {
    let worker = format!("node-{}", uuid::Uuid::new_v4());
    let (lease, poll) = (Duration::from_mins(5), Duration::from_secs(2));
    crate::jobs::work(db.clone(), worker, lease, poll, |job| {
        let (db, store, local_root, release) = (db.clone(), store.clone(), local_root.clone(), release.clone());
        async move {
            match job.kind.as_str() {
                crate::ingest::sweep::SWEEP_JOB => {
                    crate::ingest::sweep::run_job(&db, &store, local_root.as_deref(), sweep_interval, sweep_grace).await
                }
                crate::dictionary::db::COVERAGE_JOB => crate::dictionary::db::run_coverage_job(&db).await,
                crate::release::downloaders::FORGET_JOB => crate::release::downloaders::run_forget_job(&db).await,
                crate::access::reminders::REMIND_JOB => crate::access::reminders::run_job(&db).await,
                crate::release::build::BUILD_JOB => Box::pin(crate::release::build::run_job(&release, &job)).await,
                crate::opencohort::challenge::SCORE_JOB => {
                    Box::pin(crate::opencohort::challenge::run_job(&release, &job)).await
                }
                crate::mail::DELIVER_JOB => crate::mail::run_job(&db, &release.config.mail, &job).await,
                other => anyhow::bail!("this node has no handler for jobs of kind `{other}`"),
            }
        }
    })
    .await;
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    // A researcher's command: no registry configuration to load.
    if let Command::Fetch(args) = cli.command {
        return crate::fetch::run(args).await;
    }
    let listen = match &cli.command {
        Command::Serve(args) => args.listen,
        _ => None,
    };
    let overrides = Overrides { data_dir: cli.global.data_dir.clone(), listen };
    let config = Config::load(cli.global.config.as_deref(), &overrides)?;
    crate::telemetry::init(&config.log);

    match cli.command {
        Command::Openapi => {
            print!("{}", crate::openapi::to_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let mut config = config;
            if args.dicom_port.is_some() {
                config.dicom.port = args.dicom_port;
            }
            if args.demo && config.dicom.peers.is_empty() {
                // A newcomer can try `storescu -aet DEMO -aec CUSTODIAN …` at once.
                config.dicom.peers.push(crate::config::DicomPeer {
                    ae_title: "DEMO".into(),
                    site: "local".into(),
                    cohort: "default".into(),
                });
            }
            Box::pin(serve(config, args.demo)).await
        }
        Command::Migrate => {
            let db = Database::open(&config).await?;
            let result = db.migrate().await;
            db.close().await?;
            result?;
            println!("migrations are up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let (db, auth) = open_for_admin(&config).await?;
            let result = demo(&config, &db.pool, args.subjects, args.seed, args.catalog_only).await;
            db.close().await?;
            result?;
            print_demo_tokens(&auth, &config);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Issue { user, roles, ttl }) => {
            issue_token(&config, &user, &roles, ttl.as_deref()).await
        }
        Command::Fetch(_) => unreachable!("dispatched before the configuration is read"),
        Command::Audit(AuditCommand::Verify) => {
            let db = Database::open(&config).await?;
            let report = audit::verify_chain(&db.pool).await;
            db.close().await?;
            let report = report?;
            if report.ok {
                println!("audit chain intact: {} events, head at sequence {}", report.events_checked, report.head_seq);
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "audit chain BROKEN at sequence {}: {} ({} events verified before it)",
                    report.first_bad_seq.unwrap_or_default(),
                    report.problem.as_deref().unwrap_or("unknown problem"),
                    report.events_checked
                );
                Ok(ExitCode::from(2))
            }
        }
    }
}

/// Seeds the demo content and, given `subjects`, generates a synthetic registry
/// (its imaging ingested as DICOM, or with `catalog_only` as catalog rows
/// only), then the approved project.
async fn demo(config: &Config, db: &sqlx::PgPool, subjects: Option<u32>, seed: u64, catalog_only: bool) -> Result<()> {
    crate::demo::seed(db).await?;
    let key = crate::deid::load_key(config)?;
    if let Some(subjects) = subjects {
        let started = std::time::Instant::now();
        let ingest = if catalog_only {
            None
        } else {
            Some(Arc::new(crate::ingest::Ingestor::new(config, db.clone(), crate::storage::open(config)?)?))
        };
        let imaging = ingest.as_ref().map_or(crate::demo::registry::Imaging::CatalogOnly, |ingest| {
            crate::demo::registry::Imaging::Ingest(ingest)
        });
        let made =
            crate::demo::registry::generate(db, &key, config.deid.max_date_shift_days, subjects, seed, imaging).await?;
        report_generated(&made, started);
    }
    crate::demo::project::seed(db, config, &key).await?;
    Ok(())
}

fn report_generated(made: &crate::demo::registry::Generated, started: std::time::Instant) {
    eprintln!(
        "generated a synthetic registry in {:.1} s: {} subjects, {} studies, {} series, {} instances, \
         {} lab values, {} diagnoses, {} genotypes, {} annotations",
        started.elapsed().as_secs_f64(),
        made.subjects,
        made.studies,
        made.series,
        made.instances,
        made.observations,
        made.diagnoses,
        made.genotypes,
        made.annotations
    );
}

async fn open_for_admin(config: &Config) -> Result<(Database, Authenticator)> {
    let db = Database::open(config).await?;
    if config.database.migrate_on_start {
        db.migrate().await?;
    }
    let auth =
        Authenticator::from_config(&config.auth, config.embedded_database().then_some(config.data_dir.as_path()))?;
    Ok((db, auth))
}

async fn issue_token(config: &Config, user: &str, role_names: &[String], ttl: Option<&str>) -> Result<ExitCode> {
    let mut roles = Vec::new();
    for name in role_names {
        let role = Role::parse(name.trim()).with_context(|| {
            format!("unknown role `{name}`; expected one of admin, steward, organizer, uploader, researcher")
        })?;
        roles.push(role);
    }
    roles.sort();
    roles.dedup();
    let ttl_text = ttl.unwrap_or(&config.auth.default_token_ttl);
    let ttl = config::parse_duration(ttl_text)
        .with_context(|| format!("--ttl `{ttl_text}` is not a duration such as 12h"))?;
    if user.trim().is_empty() {
        bail!("--user must not be empty");
    }
    let (db, auth) = open_for_admin(config).await?;
    let result = async {
        let mut tx = db.pool.begin().await?;
        let token = crate::auth::users::issue(&mut tx, &auth, "system:cli", user, &roles, ttl).await?;
        tx.commit().await?;
        anyhow::Ok(token)
    }
    .await;
    db.close().await?;
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, demo: bool) -> Result<ExitCode> {
    // Installed first: a SIGTERM during start-up still stops everything cleanly.
    let shutdown = app::shutdown_signal().context("installing signal handlers")?;
    let _lock = if config.embedded_database() { Some(lock_data_dir(&config)?) } else { None };
    let db = Database::open(&config).await?;
    let outcome = serve_with(&config, &db, demo, shutdown).await;
    if let Err(error) = db.close().await {
        tracing::error!(error = format!("{error:#}"), "stopping the database failed");
    }
    outcome?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Everything `serve --demo` seeds, reported as it is made.
async fn seed_demo(ingest: &Arc<crate::ingest::Ingestor>, config: &Config) -> Result<()> {
    let started = std::time::Instant::now();
    if let Some(made) = Box::pin(crate::demo::seed_all(ingest, config, DEMO_SUBJECTS, 42)).await? {
        report_generated(&made, started);
    }
    if crate::demo::challenge::seed(&ingest.db, &ingest.key).await?.is_some() {
        let slug = crate::demo::challenge::SLUG;
        println!("Published the open challenge `{slug}`, version 1 (built in the background).");
    }
    crate::demo::waiting::seed(ingest, config, &ingest.key).await?;
    Ok(())
}

async fn serve_with(
    config: &Config,
    db: &Database,
    demo: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Before anything changes: a node without its signing key does not start.
    let release_signer = Arc::new(crate::release::manifest::ReleaseSigner::load(config)?);
    if config.database.migrate_on_start {
        db.migrate().await?;
    }
    let store = crate::storage::open(config)?;
    let auth = Arc::new(Authenticator::from_config(
        &config.auth,
        config.embedded_database().then_some(config.data_dir.as_path()),
    )?);
    let ingest = Arc::new(crate::ingest::Ingestor::new(config, db.pool.clone(), store.clone())?);
    if demo {
        seed_demo(&ingest, config).await?;
    }
    let sweep_interval = Duration::from_secs(config.ingest.sweep_interval_secs);
    if config.ingest.sweep_interval_secs > 0 {
        crate::jobs::enqueue(&db.pool, &crate::ingest::sweep::next_sweep(sweep_interval)).await?;
    }
    // Past days' download keys go at every start, and then a minute into each UTC day.
    crate::jobs::enqueue(&db.pool, &crate::release::downloaders::next_forget(Duration::ZERO)).await?;
    // Reminders of duties coming due: at every start, then daily.
    crate::jobs::enqueue(&db.pool, &crate::access::reminders::next_remind(Duration::ZERO)).await?;
    tokio::spawn(run_jobs(
        db.pool.clone(),
        store.clone(),
        config.local_objects_dir(),
        sweep_interval,
        Duration::from_secs(config.ingest.sweep_grace_secs),
        crate::release::build::Context {
            db: db.pool.clone(),
            store: store.clone(),
            key: Arc::new(ingest.key.clone()),
            signer: release_signer.clone(),
            config: Arc::new(config.clone()),
        },
    ));
    let discovery = Arc::new(if config.discovery.memory_index {
        crate::discovery::memory::Index::default()
    } else {
        crate::discovery::memory::Index::disabled()
    });
    if config.discovery.memory_index {
        // Built before the first query needs it.
        let (index, pool) = (discovery.clone(), db.pool.clone());
        tokio::spawn(async move {
            if let Err(e) = index.refresh(&pool).await {
                tracing::warn!(error = %e, "the discovery index could not be built; PostgreSQL answers meanwhile");
            }
        });
    }
    let state = AppState {
        discovery,
        release_signer,
        ingest,
        db: db.pool.clone(),
        store,
        auth: auth.clone(),
        config: Arc::new(config.clone()),
        metrics: Arc::new(Metrics::default()),
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let dicom_listener = match config.dicom.port {
        Some(port) => Some(
            tokio::net::TcpListener::bind((config.dicom.bind, port))
                .await
                .with_context(|| format!("binding the DICOM port {}:{port}", config.dicom.bind))?,
        ),
        None => None,
    };
    tracing::info!(%address, embedded_database = config.embedded_database(), "listening");
    if demo {
        print_demo_tokens(&auth, config);
    }
    println!(
        "Custodian is listening on http://{address} (web pages: http://{address}/, API docs: http://{address}/docs)"
    );
    let dicom = match dicom_listener {
        Some(listener) => {
            println!("DICOM C-STORE SCP listening on {} as {}", listener.local_addr()?, config.dicom.ae_title);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let shutdown = async {
                let _ = stopped.await;
            };
            let ingest = state.ingest.clone();
            let task = tokio::spawn(crate::ingest::cstore::serve(listener, ingest, config.dicom.clone(), shutdown));
            Some((stop, task))
        }
        None => None,
    };
    app::serve(listener, app::build_router(state), shutdown, Duration::from_secs(config.http.shutdown_grace_secs))
        .await?;
    // The SCP stops after the HTTP server and closes its associations' sessions before the database stops.
    if let Some((stop, task)) = dicom {
        let _ = stop.send(());
        let _ = task.await;
    }
    Ok(())
}

fn print_demo_tokens(auth: &Authenticator, config: &Config) {
    if !auth.can_issue() {
        println!(
            "Demo content is seeded; sign in through your identity provider (no HS256 secret to sign demo tokens)."
        );
        return;
    }
    let ttl = Duration::from_hours(7 * 24);
    match crate::demo::tokens(auth, ttl) {
        Ok(tokens) => {
            println!("Demo users and bearer tokens (valid 7 days):");
            for (user, token) in &tokens {
                println!("  {:<7} {:<11} {token}", user.username, user.role.as_str());
            }
            let file = config.data_dir.join("demo-tokens.env");
            match write_demo_tokens(&file, &tokens) {
                Ok(()) => {
                    let names: Vec<String> = tokens.iter().map(|(u, _)| format!("${}", u.variable)).collect();
                    println!("The same as shell variables ({}): . {}", names.join(", "), file.display());
                }
                Err(error) => eprintln!("could not write {}: {error:#}", file.display()),
            }
            println!("Try: curl -H \"Authorization: Bearer $ADMIN\" http://{}/api/v1/cohorts", config.listen);
        }
        Err(error) => eprintln!("could not sign demo tokens: {error:#}"),
    }
}

/// The demo tokens as `export ROLE=token` lines, readable by the owner only.
fn write_demo_tokens(file: &std::path::Path, tokens: &[(&crate::demo::DemoUser, String)]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file)?;
    writeln!(out, "# Demo bearer tokens, valid 7 days; load with: . {}", file.display())?;
    for (user, token) in tokens {
        writeln!(out, "export {}={token}", user.variable)?;
    }
    Ok(())
}

/// One `serve` per data directory: a second one would fight over the cluster.
fn lock_data_dir(config: &Config) -> Result<std::fs::File> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("custodian.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another `custodian serve` is using {}", config.data_dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the data directory"),
    }
}
