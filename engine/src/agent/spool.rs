//! The spool: every result is written to disk before it is sent, and its
//! file is deleted only once the engine has acknowledged it. A result
//! survives an engine that is away (the worker keeps running and replays the
//! spool on reconnect) and a worker that dies first (the next process with
//! the same id finds the files, lists their leases in its Hello and sends
//! them).
//!
//! One file per result, `result-<finished ms>-<lease id>.json`, written
//! atomically: a temporary file, fsync, rename, fsync of the directory. A
//! half-written file is never read as a result: temporary files start with
//! a dot and are removed on open. The directory is locked (`flock` on
//! `.lock`) so two processes claiming the same worker id on one host cannot
//! replay each other's results.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};
use opsdeck_proto::names::Word as _;
use opsdeck_proto::v1::{Outcome, StepResult};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// What a spool file holds: a result and the tail of its step's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// "result"; the file name starts with it.
    kind: String,
    worker_id: String,
    lease_id: String,
    fencing_token: u64,
    /// succeeded, failed, timed_out or cancelled.
    outcome: String,
    exit_code: Option<i32>,
    message: String,
    finished_at_ms: i64,
    /// The last few KiB of the step's output, as text (invalid UTF-8 replaced).
    output_tail: String,
    /// Output bytes that could not be sent while the engine was away.
    output_lost_bytes: u64,
}

const KIND: &str = "result";

impl Record {
    fn from_result(worker_id: &str, r: &StepResult) -> Self {
        let outcome = Outcome::try_from(r.outcome).unwrap_or(Outcome::Failed);
        Self {
            kind: KIND.to_owned(),
            worker_id: worker_id.to_owned(),
            lease_id: r.lease_id.clone(),
            fencing_token: r.fencing_token,
            outcome: outcome.word(),
            exit_code: r.has_exit_code.then_some(r.exit_code),
            message: r.message.clone(),
            finished_at_ms: r.finished_at_ms,
            output_tail: String::from_utf8_lossy(&r.output_tail).into_owned(),
            output_lost_bytes: r.output_lost_bytes,
        }
    }

    fn into_result(self) -> StepResult {
        StepResult {
            lease_id: self.lease_id,
            fencing_token: self.fencing_token,
            outcome: Outcome::from_word(&self.outcome).unwrap_or(Outcome::Failed) as i32,
            exit_code: self.exit_code.unwrap_or_default(),
            has_exit_code: self.exit_code.is_some(),
            message: self.message,
            finished_at_ms: self.finished_at_ms,
            output_tail: self.output_tail.into_bytes(),
            output_lost_bytes: self.output_lost_bytes,
        }
    }
}

/// A worker's spool directory, locked for this process.
pub(super) struct Spool {
    dir: PathBuf,
    worker_id: String,
    /// Spooled files by lease id.
    files: BTreeMap<String, PathBuf>,
    /// Held for the life of the spool; released when the process exits or
    /// execs (the file is close-on-exec), so a recycle can take it again.
    _lock: Flock<File>,
}

impl Spool {
    /// Opens (creating it if need be) and locks `dir`, and returns the
    /// results left in it by an earlier process of this worker, oldest first.
    pub fn open(dir: &Path, worker_id: &str) -> anyhow::Result<(Self, Vec<StepResult>)> {
        crate::private::create_dir_all(dir)
            .with_context(|| format!("cannot create the spool dir {}", dir.display()))?;
        let lock_path = dir.join(".lock");
        let file = crate::private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "another worker process is using the spool dir {}: run one process per worker id, \
                 or give this one its own --id or --spool-dir",
                dir.display()
            ),
            Err((_, e)) => bail!("cannot lock {}: {e}", lock_path.display()),
        };
        let mut spool = Self {
            dir: dir.to_owned(),
            worker_id: worker_id.to_owned(),
            files: BTreeMap::new(),
            _lock: lock,
        };
        let results = spool.load()?;
        Ok((spool, results))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&mut self) -> anyhow::Result<Vec<StepResult>> {
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read the spool dir {}", self.dir.display()))?;
        let mut records = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read the spool dir {}", self.dir.display()))?
                .path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that never reached its rename: not a result.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !(name.starts_with(KIND) && name.ends_with(".json")) {
                continue;
            }
            let record = fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Record>(&bytes)?));
            match record {
                Ok(r) if r.worker_id == self.worker_id => {
                    self.files.insert(r.lease_id.clone(), path);
                    records.push(r);
                }
                Ok(r) => warn!(
                    file = %path.display(),
                    "leaving a spooled result of worker {:?} alone: this is worker {:?}",
                    r.worker_id,
                    self.worker_id
                ),
                Err(e) => {
                    let aside = path.with_extension("json.unreadable");
                    warn!(
                        file = %path.display(),
                        "a spooled result is unreadable ({e}); moving it to {}",
                        aside.display()
                    );
                    let _ = fs::rename(&path, &aside);
                }
            }
        }
        records
            .sort_by(|a, b| (a.finished_at_ms, &a.lease_id).cmp(&(b.finished_at_ms, &b.lease_id)));
        Ok(records.into_iter().map(Record::into_result).collect())
    }

    /// Writes `result` durably. On error nothing is left half-written and
    /// the result stays in memory: it is still sent, only not crash-proof.
    pub async fn write(&mut self, result: &StepResult) -> anyhow::Result<()> {
        let record = Record::from_result(&self.worker_id, result);
        let bytes = serde_json::to_vec_pretty(&record)?;
        let name = format!(
            "{KIND}-{}-{}.json",
            result.finished_at_ms,
            file_safe(&result.lease_id)
        );
        let dir = self.dir.clone();
        let path = tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .context("the spool write was interrupted")??;
        self.files.insert(result.lease_id.clone(), path);
        Ok(())
    }

    /// Deletes the file of an acknowledged result.
    pub fn remove(&mut self, lease_id: &str) {
        if let Some(path) = self.files.remove(lease_id)
            && let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            // Harmless beyond the disk space: replayed, the engine refuses it.
            warn!(file = %path.display(), "cannot delete an acknowledged spooled result: {e}");
        }
    }

    /// Results in the spool, not yet acknowledged.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Lease ids with a file in the spool.
    #[cfg(test)]
    pub fn leases(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
}

/// Temporary file, fsync, rename, fsync of the directory: after a crash the
/// file is either whole or absent.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let written = (|| -> std::io::Result<()> {
        let mut file = crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(
            anyhow::Error::from(e).context(format!("cannot write {} in the spool", path.display()))
        );
    }
    Ok(path)
}

/// A lease id as part of a file name: the engine's are ULIDs, but nothing
/// from the wire reaches the file system unchecked.
fn file_safe(id: &str) -> String {
    id.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn result(lease: &str, at: i64) -> StepResult {
        StepResult {
            lease_id: lease.into(),
            fencing_token: 4,
            outcome: Outcome::TimedOut as i32,
            exit_code: 0,
            has_exit_code: false,
            message: "timed out after 1s".into(),
            finished_at_ms: at,
            output_tail: b"last words\n".to_vec(),
            output_lost_bytes: 12,
        }
    }

    #[tokio::test]
    async fn a_spooled_result_survives_the_process_and_is_gone_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, old) = Spool::open(dir.path(), "w1").unwrap();
        assert!(old.is_empty());
        spool.write(&result("01B", 20)).await.unwrap();
        spool.write(&result("01A", 10)).await.unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert_eq!(names.len(), 2);
        assert!(
            names.contains(&"result-10-01A.json".to_owned()),
            "{names:?}"
        );
        drop(spool);

        let (mut again, found) = Spool::open(dir.path(), "w1").unwrap();
        assert_eq!(
            found,
            vec![result("01A", 10), result("01B", 20)],
            "oldest first, whole"
        );
        again.remove("01A");
        drop(again);
        let (_, left) = Spool::open(dir.path(), "w1").unwrap();
        assert_eq!(left, vec![result("01B", 20)]);
    }

    #[tokio::test]
    async fn a_second_process_cannot_use_a_locked_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = Spool::open(dir.path(), "w1").unwrap();
        let err = Spool::open(dir.path(), "w1").err().unwrap().to_string();
        assert!(err.contains("another worker process"), "{err}");
    }

    #[tokio::test]
    async fn half_written_and_unreadable_files_are_not_results() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".result-1-X.json.tmp"), b"{\"kind\":").unwrap();
        fs::write(dir.path().join("result-2-Y.json"), b"not json").unwrap();
        let (spool, found) = Spool::open(dir.path(), "w1").unwrap();
        assert!(found.is_empty());
        assert!(spool.leases().is_empty());
        assert!(!dir.path().join(".result-1-X.json.tmp").exists());
        assert!(dir.path().join("result-2-Y.json.unreadable").exists());
    }

    #[test]
    fn lease_ids_cannot_escape_the_directory() {
        assert_eq!(file_safe("../../etc/passwd"), "______etc_passwd");
    }
}
