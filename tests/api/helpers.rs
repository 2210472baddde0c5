//! The test application: a real PostgreSQL database per test (a throwaway
//! cluster started from the system's binaries when `DATABASE_URL` is unset),
//! a real object store on disk, and the real router driven in-process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use custodian::app::{AppState, build_router};
use custodian::auth::{Authenticator, Role};
use custodian::config::Config;
use custodian::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use custodian::metrics::Metrics;
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use tower::ServiceExt;

/// Registry (pseudonymization) key of every test app.
pub const TEST_REGISTRY_KEY: &str = "test-registry-key-test-registry-key-0123456789";

/// HS256 secret of every test app.
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

struct TestServer {
    admin: PgConnectOptions,
    /// URL of the server without a database name, for child processes.
    url: url::Url,
    template: String,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        // Runs once, on its own runtime: each #[tokio::test] has a runtime of its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(start_server())
        })
        .join()
        .expect("starting the test database server")
    })
}

async fn start_server() -> TestServer {
    let (admin, url) = if let Ok(url) = std::env::var("DATABASE_URL") {
        (
            PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL"),
            url::Url::parse(&url).expect("DATABASE_URL is a URL"),
        )
    } else {
        {
            // A short path in the temporary directory: Unix socket paths are limited to
            // 107 bytes, and a checkout can be anywhere (in root's 0700 home, say).
            let checkout =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, env!("CARGO_TARGET_TMPDIR").as_bytes());
            let root = std::env::temp_dir().join(format!("custodian-test-pg-{}", hex::encode(&checkout.as_ref()[..6])));
            let cluster = EmbeddedPostgres::start(
                &root,
                &EmbeddedOptions { install_if_missing: true, ..EmbeddedOptions::default() },
            )
            .await
            .expect("starting the throwaway PostgreSQL cluster (are the server binaries installed?)");
            cluster.stop_when_process_exits(std::process::id()).expect("watching the test process");
            let url = url::Url::parse_with_params(
                &format!("postgres://{}@localhost/postgres", custodian::db::embedded::DB_NAME),
                [("host", cluster.socket_dir().to_str().unwrap())],
            )
            .unwrap();
            (cluster.connect_options_for("postgres"), url)
        }
    };
    let admin = admin.database("postgres").disable_statement_logging();
    let mut conn = PgConnection::connect_with(&admin).await.expect("connecting to the test server");
    drop_leftovers(&mut conn).await;
    let pid = std::process::id();
    let template = format!("custodian_tpl_{pid}");
    exec(&mut conn, &format!("create database {template}")).await;
    let pool = PgPoolOptions::new().max_connections(1).connect_with(admin.clone().database(&template)).await.unwrap();
    custodian::db::migrate(&pool).await.expect("migrating the template database");
    pool.close().await;
    conn.close().await.unwrap();
    TestServer { admin, url, template }
}

/// Drops databases of earlier test runs whose process is gone.
async fn drop_leftovers(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("select datname from pg_database where datname like 'custodian\\_t%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for name in names {
        let pid = name
            .trim_start_matches("custodian_tpl_")
            .trim_start_matches("custodian_t_")
            .split('_')
            .next()
            .unwrap_or("");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            exec(conn, &format!("drop database if exists {name} with (force)")).await;
        }
    }
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A fresh, migrated database of its own.
pub async fn fresh_database() -> (PgPool, String) {
    let server = server();
    let name = format!("custodian_t_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let mut conn = PgConnection::connect_with(&server.admin).await.unwrap();
    exec(&mut conn, &format!("create database {name} template {}", server.template)).await;
    conn.close().await.unwrap();
    let pool =
        PgPoolOptions::new().max_connections(20).connect_with(server.admin.clone().database(&name)).await.unwrap();
    (pool, name)
}

/// URL of `database` on the test server, for child processes.
pub fn database_url(database: &str) -> String {
    let mut url = server().url.clone();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Connection options of the test server's superuser for `database`.
pub fn superuser_options(database: &str) -> PgConnectOptions {
    server().admin.clone().database(database)
}

static LOGS: OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();

/// Everything the code under test logs, at every level, is kept for leak scans
/// (and echoed to stderr with `TEST_LOG=1`).
fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone(), std::env::var_os("TEST_LOG").is_some());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("trace,h2=info,hyper=info,hyper_util=info,rustls=info,aws_smithy=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
    .clone()
}

/// A copy of all log output so far.
pub fn captured_logs() -> Vec<u8> {
    capture_logs().lock().unwrap().clone()
}

#[derive(Clone)]
struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>, bool);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if self.1 {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The application under test.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub db: PgPool,
    pub db_name: String,
    _objects: tempfile::TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    /// A test app whose configuration `adjust` may change.
    #[allow(clippy::field_reassign_with_default)]
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        capture_logs();
        let (db, db_name) = fresh_database().await;
        let objects = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.data_dir = objects.path().to_path_buf();
        config.database.url = Some(SecretString::from("postgres://unused-in-tests"));
        config.auth.hs256_secret = Some(SecretString::from(TEST_SECRET));
        config.deid.registry_key = Some(SecretString::from(TEST_REGISTRY_KEY));
        config.release.signing_key = Some(custodian::release::manifest::generate_signing_key().unwrap());
        adjust(&mut config);
        let auth = Authenticator::from_config(&config.auth, None).expect("test auth config");
        let store = custodian::storage::open(&config).expect("test object store");
        let ingest = custodian::ingest::Ingestor::new(&config, db.clone(), store.clone()).expect("test ingest");
        let discovery = Arc::new(if config.discovery.memory_index {
            custodian::discovery::memory::Index::default()
        } else {
            custodian::discovery::memory::Index::disabled()
        });
        let release_signer =
            Arc::new(custodian::release::manifest::ReleaseSigner::load(&config).expect("test release key"));
        let state = AppState {
            discovery,
            release_signer,
            ingest: Arc::new(ingest),
            db: db.clone(),
            store,
            auth: Arc::new(auth),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
        };
        Self { router: build_router(state.clone()), state, db, db_name, _objects: objects }
    }

    /// A Custodian-signed JWT for `user` with `roles`, valid for an hour.
    pub fn token(&self, user: &str, roles: &[Role]) -> String {
        self.state.auth.issue(user, roles, std::time::Duration::from_hours(1)).unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.send(Method::POST, path, token, Some(Body::from(body.to_string()))).await
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.send(Method::PUT, path, token, Some(Body::from(body.to_string()))).await
    }

    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.send(Method::PATCH, path, token, Some(Body::from(body.to_string()))).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.send(Method::DELETE, path, token, None).await
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Body>) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let has_body = body.is_some();
        if has_body {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        self.call(request.body(body.unwrap_or_else(Body::empty)).unwrap()).await
    }

    /// Sends any request through the full middleware stack.
    pub async fn call(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        TestResponse { status, headers, body }
    }

    /// Every row of `tables` as text, for scans for original identifiers.
    pub async fn rows_as_text(&self, tables: &[&str]) -> String {
        let mut all = String::new();
        for table in tables {
            let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select coalesce(string_agg(t::text, '|'), '') from {table} t"
            )))
            .fetch_one(&self.db)
            .await
            .unwrap();
            all.push_str(&rows);
        }
        all
    }

    /// Actions recorded in the audit log, in order.
    pub async fn audit_actions(&self) -> Vec<String> {
        sqlx::query_scalar("select action from audit_event order by seq").fetch_all(&self.db).await.unwrap()
    }
}

/// Another session holding the audit chain head: audited actions wait until it is released.
pub struct ChainHold(PgConnection);

impl ChainHold {
    pub async fn release(mut self) {
        sqlx::raw_sql("rollback").execute(&mut self.0).await.unwrap();
    }
}

impl TestApp {
    /// Locks the audit chain head from another session, so audited requests stay in flight.
    pub async fn hold_audit_chain(&self) -> ChainHold {
        let mut conn = PgConnection::connect_with(&superuser_options(&self.db_name)).await.unwrap();
        sqlx::raw_sql("begin; select * from audit_head for update;").execute(&mut conn).await.unwrap();
        ChainHold(conn)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let name = self.db_name.clone();
        let admin = server().admin.clone();
        // Best effort, off the test's runtime; leftovers are dropped by the next run.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database if exists {name} with (force)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
    }
}

/// A response read to its end.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    #[track_caller]
    pub fn assert_status(&self, expected: StatusCode) -> &Self {
        assert_eq!(self.status, expected, "unexpected status; body: {}", String::from_utf8_lossy(&self.body));
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error response with `status` and `code`, returning its message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) -> String {
        self.assert_status(status);
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "error bodies are JSON"
        );
        body["message"].as_str().expect("error message").to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// De-identifies a file held in a slice (the service passes shared `Bytes`).
/// Engine settings for tests: the given key and site, no safe private
/// attributes, the product's limits and handling of a missing Patient ID.
pub fn deid_settings<'a>(key: &'a custodian::deid::RegistryKey, site: &'a str) -> custodian::deid::DeidSettings<'a> {
    custodian::deid::DeidSettings {
        key,
        site,
        max_shift_days: 3650,
        safe_private: &[],
        max_inflated_bytes: 64 << 20,
        missing_patient_id: custodian::deid::MissingPatientId::default(),
    }
}

pub fn deidentify_slice(
    bytes: &[u8],
    settings: &custodian::deid::DeidSettings<'_>,
) -> Result<custodian::deid::Deidentified, custodian::deid::Rejection> {
    custodian::deid::deidentify(&bytes::Bytes::copy_from_slice(bytes), settings)
}

/// Makes sure `program` runs, installing the Debian `package` that has it
/// (with apt-get, as root or through `sudo -n`) when it does not.
pub fn ensure_debian_package(program: &str, package: &str) -> Result<(), String> {
    // Spawning tells whether the program is there, whatever it thinks of no arguments.
    let present = || std::process::Command::new(program).arg("--version").output().is_ok();
    if present() {
        return Ok(());
    }
    apt_install(&[package])?;
    if present() { Ok(()) } else { Err(format!("{program} is still missing after installing {package}")) }
}

/// Installs Debian packages with `apt-get` (as root, or with password-less
/// `sudo`), the way the harness installs PostgreSQL when it is missing.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    if !std::path::Path::new("/usr/bin/apt-get").exists() {
        return Err(format!("{} is missing and this is not a Debian-like system", packages.join(", ")));
    }
    let root = custodian::db::embedded::running_as_root().map_err(|e| format!("{e:#}"))?;
    let install = [&["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"][..], packages].concat();
    for args in [&["apt-get", "update", "-q"][..], &install[..]] {
        let mut command = if root {
            std::process::Command::new(args[0])
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.arg("-n").arg(args[0]);
            sudo
        };
        let status = command
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("running {}: {e}", args.join(" ")))?;
        if !status.success() {
            return Err(format!("`{}` failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// The app served on a real socket of this machine, for clients that speak
/// HTTP themselves (Python tools, the CLI); stopped with [`Served::stop`].
pub struct Served {
    /// `host:port` it listens on.
    pub host: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Stops the server once its requests are done.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

impl TestApp {
    /// Serves this app on a free local port until [`Served::stop`].
    pub async fn serve(&self) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(custodian::app::serve(
            listener,
            self.router.clone(),
            shutdown,
            std::time::Duration::from_secs(5),
        ));
        Served { host, stop, server }
    }
}
