//! A scenario's engine: a child process of this binary's `serve`, on a
//! fresh database of its own.

use super::*;

/// A scenario's database: a SQLite file in a temporary directory, or a
/// fresh database on the PostgreSQL server. The directory is also the
/// engine's.
pub(super) struct Database {
    pub(super) dir: tempfile::TempDir,
    pub(super) url: String,
    /// (server URL, database name) to drop afterwards, on PostgreSQL.
    pub(super) postgres: Option<(String, String)>,
}

impl Database {
    pub(super) async fn fresh(ctx: &Ctx, what: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("opsdeck-bench-{what}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        Ok(match &ctx.args.postgres {
            Some(server) => {
                let (url, name) = fresh_postgres_database(server).await?;
                Self {
                    dir,
                    url,
                    postgres: Some((server.clone(), name)),
                }
            }
            None => {
                let path = dir.path().join("bench.db");
                Self {
                    url: format!("sqlite://{}", path.display()),
                    dir,
                    postgres: None,
                }
            }
        })
    }

    /// Drops a PostgreSQL database (the directory goes with `self`).
    pub(super) async fn remove(mut self) {
        if let Some((server, name)) = self.postgres.take()
            && let Err(e) = drop_postgres_database(&server, &name).await
        {
            warn_not_dropped(&name, &e);
        }
    }
}

/// A scenario that did not get to [`Database::remove`] (a panic, or its
/// future dropped at ctrl-c) still drops its database.
impl Drop for Database {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // A drop cannot await, and runs inside the bench's runtime, where
        // another cannot start: a thread with a runtime of its own.
        let dropped = std::thread::spawn({
            let name = name.clone();
            move || -> anyhow::Result<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(drop_postgres_database(&server, &name))
            }
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread dropping it panicked")));
        if let Err(e) = dropped {
            warn_not_dropped(&name, &e);
        }
    }
}

pub(super) fn warn_not_dropped(name: &str, e: &anyhow::Error) {
    tracing::warn!(database = %name, error = %format!("{e:#}"), "cannot drop the bench database; drop it by hand");
}

/// Makes an empty database on a PostgreSQL server: its URL and name.
pub(super) async fn fresh_postgres_database(server: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!(
        "opsdeck_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| format!("cannot connect to {}", crate::store::redacted(server)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create the database {name}"))?;
    let (base, _) = server
        .rsplit_once('/')
        .context("--postgres must end in /DATABASE")?;
    Ok((format!("{base}/{name}"), name))
}

pub(super) async fn drop_postgres_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// An engine started as a child process: `opsdeckd serve` on its own
/// data dir, TCP on a free loopback port, with one token for the bench.
pub(super) struct Engine {
    pub(super) child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) addr: SocketAddr,
    pub(super) log: PathBuf,
}

impl Engine {
    /// Starts one and waits until it answers Whoami with the token: the
    /// engine, and how long that took from the spawn.
    pub(super) async fn spawn(
        ctx: &Ctx,
        dir: &Path,
        database: &str,
    ) -> anyhow::Result<(Self, Duration)> {
        let config = dir.join("engine.toml");
        let data = dir.join("engine");
        let log = dir.join("engine.log");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let entry = format!(
            "[[token]]\nidentity = \"bench\"\nsha256 = \"{}\"\nroles = [\"operator\", \"agent\"]\n",
            crate::api::auth::token_hash(&ctx.token)
        );
        std::fs::write(&config, entry)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(&ctx.exe);
        // The engine under test is the one the flags describe, whatever
        // this shell's OPSDECK_* settings say.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--socket", "none"])
            .args(["--metrics-listen", "none"])
            .arg("--database")
            .arg(database)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} serve", ctx.exe.display()))?;
        let pid = child.id().context("the engine exited at once")?;
        let addr_file = data.join(crate::serve::ADDR_FILE);
        let deadline = spawned + START_BOUND;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the engine exited ({status}) before it answered{}",
                    log_tail(&log)
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the engine did not answer within {START_BOUND:?}{}",
                log_tail(&log)
            );
            let addr = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(addr) = addr
                && let Ok(client) = Client::connect(addr, &ctx.token).await
                && client.head_seq().await.is_ok()
            {
                let ready = spawned.elapsed();
                return Ok((
                    Self {
                        child,
                        pid,
                        addr,
                        log,
                    },
                    ready,
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (VmRSS, VmHWM) in MiB, from /proc.
    pub(super) fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kb: f64 = line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{path}: cannot read {line:?}"))?;
            Ok(kb / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then a kill if it has not stopped within [`STOP_BOUND`].
    pub(super) async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_BOUND, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    "the bench engine did not stop on SIGTERM; killing it"
                );
                let _ = self.child.kill().await;
            }
        }
    }

    /// A scenario's error with the end of the engine's log.
    pub(super) fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{e:#}; the engine's log ends:{}", log_tail(&self.log))
    }
}

/// The last lines of an engine's log, for an error.
pub(super) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
    if tail.is_empty() {
        format!(" ({} is empty)", log.display())
    } else {
        format!("\n  {tail}\n(all of it in {})", log.display())
    }
}
