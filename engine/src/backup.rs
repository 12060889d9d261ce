//! `opsdeckd backup PATH`: a consistent copy of a SQLite database, taken
//! while the engine serves.
//!
//! `VACUUM INTO` reads the database inside one read transaction on its own
//! connection, so the copy is exactly the state of one commit, however
//! busy the engine is (WAL lets the engine keep committing meanwhile). The
//! copy is written beside the target and renamed into place once checked,
//! so a failed backup never leaves a half-written file under PATH.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// Copies the database at `url` to `dest`, which must not exist yet.
pub async fn backup(url: &str, dest: &Path) -> anyhow::Result<()> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!(
            "opsdeckd backup copies SQLite databases; back up PostgreSQL with its own tools, \
             e.g. `pg_dump --format=custom --file=opsdeck.dump '{}'`",
            crate::store::redacted(url)
        );
    }
    if !url.starts_with("sqlite:") {
        bail!(
            "{:?} is not a database URL opsdeckd can back up; give a sqlite:// URL",
            crate::store::redacted(url)
        );
    }
    if dest.exists() {
        bail!(
            "{} already exists; give a new file name (a backup never overwrites)",
            dest.display()
        );
    }
    let partial = partial_path(dest);
    let _ = std::fs::remove_file(&partial);
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("{url:?} is not a SQLite URL"))?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = options
        .connect()
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    let target = partial
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", dest.display()))?;
    let copied = sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot copy {url} to {}", partial.display()));
    let _ = conn.close().await;
    // SQLite creates the copy under the umask (077 in `opsdeckd`); the copy
    // holds everything the database does, so it is the owner's alone even
    // when the engine runs as a library.
    let copied = copied.and_then(|_| {
        crate::private::restrict_file(&partial)
            .with_context(|| format!("cannot make {} private", partial.display()))
    });
    if let Err(e) = copied.and(check(&partial).await) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, dest)
        .with_context(|| format!("cannot move the copy into place at {}", dest.display()))?;
    Ok(())
}

/// `PRAGMA quick_check` on the copy.
async fn check(path: &Path) -> anyhow::Result<()> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("cannot open the copy {}", path.display()))?;
    let row = sqlx::query("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("cannot check the copy {}", path.display()))?;
    let verdict: String = row.try_get(0)?;
    let _ = conn.close().await;
    if verdict != "ok" {
        bail!("the copy {} is damaged: {verdict}", path.display());
    }
    Ok(())
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}
