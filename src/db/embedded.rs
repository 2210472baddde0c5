//! The embedded PostgreSQL cluster: Custodian's zero-setup database.
//!
//! Layout under `<data_dir>/postgres`: `data/` (PGDATA), `run/` (the Unix socket,
//! the only way in: TCP is switched off) and `postgres.log`. When Custodian runs
//! as root the cluster runs as an unprivileged account (`initdb` refuses root),
//! `postgres` when it exists, else `nobody`.
//!
//! A cluster left running by a crashed process is adopted; a stale
//! `postmaster.pid` left by a crashed cluster is removed before starting.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Name of the superuser and of the database inside the embedded cluster.
pub const DB_NAME: &str = "custodian";

/// Unix sockets paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;

/// A cluster started (or adopted) from the system's PostgreSQL binaries.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    run_dir: PathBuf,
    log_file: PathBuf,
    run_as: Option<Account>,
    started_here: bool,
}

enum Postmaster {
    Absent,
    Running(u32),
    Stale(u32),
}

#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

/// Options for [`EmbeddedPostgres::start`].
#[derive(Debug, Default, Clone)]
pub struct EmbeddedOptions {
    /// Where `initdb`/`pg_ctl` live; searched for when absent.
    pub bin_dir: Option<PathBuf>,
    /// Account to run the cluster as when we are root.
    pub user: Option<String>,
    /// Install the Debian `postgresql` package when no binaries are found.
    pub install_if_missing: bool,
}

impl EmbeddedPostgres {
    /// Initialises the cluster on first use and starts it unless it already runs.
    pub async fn start(root: &Path, options: &EmbeddedOptions) -> Result<Self> {
        let root = absolute(root)?;
        let bin_dir = match &options.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir(options.install_if_missing)?,
        };
        for tool in ["initdb", "pg_ctl", "postgres"] {
            if !bin_dir.join(tool).is_file() {
                bail!(
                    "{} has no `{tool}`; set database.postgres_bin_dir to PostgreSQL's bin directory",
                    bin_dir.display()
                );
            }
        }
        let run_as = if running_as_root()? { Some(unprivileged_account(options.user.as_deref())?) } else { None };
        let root = match &run_as {
            Some(account) => reachable_root(&root, account)?,
            None => root,
        };
        let cluster = Self {
            bin_dir,
            pgdata: root.join("data"),
            run_dir: root.join("run"),
            log_file: root.join("postgres.log"),
            run_as,
            started_here: false,
        };
        let socket = cluster.run_dir.join(".s.PGSQL.5432");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the data directory path is too long for a Unix socket ({} bytes > {MAX_SOCKET_PATH}); choose a shorter --data-dir",
                socket.as_os_str().len()
            );
        }
        cluster.prepare_directories(&root)?;
        let cluster = tokio::task::spawn_blocking(move || cluster.init_and_start())
            .await
            .context("embedded PostgreSQL start panicked")??;
        cluster.ensure_database().await?;
        Ok(cluster)
    }

    /// Connection options for the application database, over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options_for(DB_NAME)
    }

    /// Connection options for another database of the same cluster.
    pub fn connect_options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.run_dir).username(DB_NAME).database(database)
    }

    /// Directory holding the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Whether this process started the cluster (and so should stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the cluster, waiting for a clean shutdown.
    pub fn stop(&self) -> Result<()> {
        let status = self
            .pg_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "-t", "60"])
            .stdout(Stdio::null())
            .status()
            .context("running pg_ctl stop")?;
        if !status.success() {
            bail!("pg_ctl stop failed ({status}); see {}", self.log_file.display());
        }
        Ok(())
    }

    /// Stops the cluster if this process started it.
    pub async fn stop_if_started_here(&self) -> Result<()> {
        if !self.started_here {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.stop()).await.context("pg_ctl stop panicked")?
    }

    /// Starts a watcher process that stops the cluster once process `pid` has exited,
    /// however it exits. Test harnesses use this so no cluster outlives the tests.
    pub fn stop_when_process_exits(&self, pid: u32) -> Result<()> {
        let script = "while [ -d /proc/$0 ]; do sleep 0.5; done; exec \"$@\"";
        self.pg_command("sh")
            .arg("-c")
            .arg(script)
            .arg(pid.to_string())
            .arg(self.bin_dir.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cluster watcher")?;
        Ok(())
    }

    fn prepare_directories(&self, root: &Path) -> Result<()> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        for dir in [&self.pgdata, &self.run_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if let Some(account) = &self.run_as {
            // The cluster's account must reach its directories through ours.
            if let Some(data_dir) = root.parent() {
                let mode = std::fs::metadata(data_dir)?.permissions().mode();
                if mode & 0o001 == 0 {
                    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode | 0o001))?;
                }
            }
            for path in [root, &self.pgdata, &self.run_dir] {
                chown(path, Some(account.uid), Some(account.gid))
                    .with_context(|| format!("handing {} to `{}`", path.display(), account.name))?;
            }
            if self.log_file.exists() {
                chown(&self.log_file, Some(account.uid), Some(account.gid))?;
            }
        }
        Ok(())
    }

    fn init_and_start(mut self) -> Result<Self> {
        if !self.pgdata.join("PG_VERSION").exists() {
            // Without PG_VERSION this is no cluster, only what an interrupted initdb left.
            if std::fs::read_dir(&self.pgdata)?.next().is_some() {
                tracing::warn!(pgdata = %self.pgdata.display(), "clearing the remains of an interrupted initdb");
                std::fs::remove_dir_all(&self.pgdata)?;
                std::fs::create_dir(&self.pgdata)?;
                std::fs::set_permissions(&self.pgdata, std::fs::Permissions::from_mode(0o700))?;
                if let Some(account) = &self.run_as {
                    chown(&self.pgdata, Some(account.uid), Some(account.gid))?;
                }
            }
            tracing::info!(pgdata = %self.pgdata.display(), "initialising the embedded PostgreSQL cluster");
            let output = self
                .pg_command("initdb")
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-U", DB_NAME, "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C"])
                .arg("--no-instructions")
                .output()
                .context("running initdb")?;
            if !output.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            }
        }
        match self.postmaster()? {
            Postmaster::Running(pid) => {
                tracing::info!(pid, "adopting the embedded PostgreSQL cluster that is already running");
                return Ok(self);
            }
            Postmaster::Stale(pid) => {
                // The pid file names a process that is gone (or a zombie nobody reaped):
                // a crash leftover, which would otherwise block the start.
                tracing::warn!(pid, "removing a stale postmaster.pid left by an earlier crash");
                std::fs::remove_file(self.pgdata.join("postmaster.pid")).context("removing stale postmaster.pid")?;
                for leftover in [".s.PGSQL.5432.lock", ".s.PGSQL.5432"] {
                    let path = self.run_dir.join(leftover);
                    if path.exists() {
                        std::fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
                    }
                }
            }
            Postmaster::Absent => {}
        }
        let settings = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700 -c max_connections=200 -c fsync=on -c jit=off",
            self.run_dir.display()
        );
        let output = self
            .pg_command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "120", "-o"])
            .arg(settings)
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        if !output.status.success() {
            let tail = std::fs::read_to_string(&self.log_file).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            bail!(
                "the embedded PostgreSQL did not start: {}; last log lines: {}",
                String::from_utf8_lossy(&output.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        self.started_here = true;
        tracing::info!(socket = %self.run_dir.display(), "embedded PostgreSQL started");
        Ok(self)
    }

    /// What the cluster's `postmaster.pid` says, checked against the live processes.
    fn postmaster(&self) -> Result<Postmaster> {
        let text = match std::fs::read_to_string(self.pgdata.join("postmaster.pid")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Postmaster::Absent),
            Err(e) => return Err(e).context("reading postmaster.pid"),
        };
        let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            return Ok(Postmaster::Stale(0));
        };
        // /proc/<pid>/stat: "<pid> (<comm>) <state> ..."; a zombie (Z) or dead (X) process is gone.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(") ")
            .is_some_and(|(head, rest)| head.contains("(postgres") && !rest.starts_with('Z') && !rest.starts_with('X'));
        Ok(if alive { Postmaster::Running(pid) } else { Postmaster::Stale(pid) })
    }

    async fn ensure_database(&self) -> Result<()> {
        // An adopted cluster may still be recovering from a crash: give it time.
        let mut attempts = 0;
        let mut conn = loop {
            match PgConnection::connect_with(&self.connect_options_for("postgres")).await {
                Ok(conn) => break conn,
                Err(e) if attempts < 60 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "waiting for the embedded PostgreSQL");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("connecting to the embedded PostgreSQL"),
            }
        };
        let exists: bool = sqlx::query_scalar!(
            r#"select exists (select 1 from pg_database where datname = $1) as "exists!""#,
            DB_NAME
        )
        .fetch_one(&mut conn)
        .await?;
        if !exists {
            // Stays runtime: the database name is an identifier, which cannot be a bind parameter.
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {DB_NAME}"))).execute(&mut conn).await?;
        }
        conn.close().await?;
        Ok(())
    }

    fn pg_command(&self, tool: &str) -> Command {
        let program: OsString = if tool == "sh" { "sh".into() } else { self.bin_dir.join(tool).into() };
        let mut command = Command::new(program);
        command.env("LC_ALL", "C").env_remove("PGDATA").env_remove("PGHOST");
        if let Some(account) = &self.run_as {
            command.uid(account.uid).gid(account.gid).current_dir("/");
        }
        command
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() { Ok(path.to_path_buf()) } else { Ok(std::env::current_dir()?.join(path)) }
}

/// Where the cluster can live so that `account` reaches it.
///
/// Normally `<data_dir>/postgres` itself. When a directory above the data dir
/// shuts the account out (root's home is `0700`, say), the cluster moves to
/// `/var/lib/custodian/embedded/<hash of the data dir>` and `<data_dir>/postgres`
/// becomes a symlink to it, so the data dir still names its cluster and nothing
/// of the operator's directory permissions is changed.
fn reachable_root(root: &Path, account: &Account) -> Result<PathBuf> {
    let resolved = if root.is_symlink() { std::fs::canonicalize(root)? } else { root.to_path_buf() };
    let Some(blocked) = resolved.ancestors().skip(2).find(|dir| !can_enter(dir, account)) else {
        return Ok(resolved);
    };
    if root.is_symlink() || (root.exists() && std::fs::read_dir(root)?.next().is_some()) {
        bail!(
            "the account `{}` that runs the embedded PostgreSQL cannot enter {}; make it traversable (chmod o+x) or choose another --data-dir",
            account.name,
            blocked.display()
        );
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, root.as_os_str().as_encoded_bytes());
    let base = Path::new("/var/lib/custodian/embedded");
    let target = base.join(hex::encode(&digest.as_ref()[..8]));
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    for dir in [base.parent().unwrap_or(base), base] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    if root.exists() {
        std::fs::remove_dir(root)?;
    }
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(&target, root)
        .with_context(|| format!("linking {} to {}", root.display(), target.display()))?;
    tracing::warn!(
        blocked = %blocked.display(),
        cluster = %target.display(),
        "the PostgreSQL account cannot enter the data directory; the cluster lives elsewhere, linked from the data directory"
    );
    Ok(target)
}

fn can_enter(dir: &Path, account: &Account) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else { return false };
    let mode = meta.permissions().mode();
    if meta.uid() == account.uid {
        mode & 0o100 != 0
    } else if meta.gid() == account.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Finds the newest PostgreSQL server binaries on this machine.
fn find_bin_dir(install_if_missing: bool) -> Result<PathBuf> {
    if let Some(dir) = search_bin_dir() {
        return Ok(dir);
    }
    if install_if_missing {
        install_postgres()?;
        if let Some(dir) = search_bin_dir() {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install them (Debian: `apt-get install postgresql`), \
         set database.postgres_bin_dir, or point database.url at an existing server"
    )
}

fn search_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CUSTODIAN_POSTGRES_BIN").map(PathBuf::from) {
        return Some(dir);
    }
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin, newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/pgsql/bin".into(), "/usr/pgsql/bin".into()])
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn install_postgres() -> Result<()> {
    let root = running_as_root()?;
    let sudo = |args: &[&str]| {
        let mut command = if root {
            Command::new(args[0])
        } else {
            let mut c = Command::new("sudo");
            c.arg("-n").arg(args[0]);
            c
        };
        command.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("PostgreSQL is not installed and this is not a Debian-like system; install PostgreSQL's server package");
    }
    tracing::warn!("PostgreSQL server binaries not found; installing the `postgresql` package with apt-get");
    for args in [
        &["apt-get", "update", "-q"][..],
        &["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", "postgresql"][..],
    ] {
        let status = sudo(args).status().context("running apt-get")?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); install PostgreSQL yourself (`sudo apt-get install postgresql`) and start again",
                args.join(" ")
            );
        }
    }
    Ok(())
}

/// Whether the effective user is root, read from `/proc/self/status`.
pub fn running_as_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).context("no Uid line in /proc/self/status")?;
    let effective = uid_line.split_whitespace().nth(2).context("malformed Uid line")?;
    Ok(effective == "0")
}

fn unprivileged_account(preferred: Option<&str>) -> Result<Account> {
    let candidates: Vec<&str> = match preferred {
        Some(name) => vec![name],
        None => vec!["postgres", "nobody"],
    };
    for name in &candidates {
        let output = Command::new("getent").args(["passwd", name]).output().context("running getent")?;
        if !output.status.success() {
            continue;
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.trim().split(':').collect();
        if fields.len() < 4 {
            continue;
        }
        let (uid, gid) = (fields[2].parse::<u32>()?, fields[3].parse::<u32>()?);
        if uid == 0 {
            bail!("database.embedded_user `{name}` is root; PostgreSQL must run as an unprivileged account");
        }
        return Ok(Account { name: (*name).to_owned(), uid, gid });
    }
    bail!("none of the accounts {candidates:?} exists to run the embedded PostgreSQL as; set database.embedded_user")
}
