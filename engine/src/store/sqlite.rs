//! The embedded default: one SQLite file in WAL mode.
//!
//! Space: pruning frees pages onto the file's freelist and later inserts
//! reuse them, so the file stays at its high-water mark and never needs a
//! VACUUM. `auto_vacuum = INCREMENTAL` would hand freed pages back to the
//! file system, but only a VACUUM switches an existing file to it (and a
//! VACUUM rewrites the whole file, cannot run inside the migrations'
//! transaction, and needs as much free disk again as the file); it also
//! costs every commit pointer-map pages. With retention steady, what one
//! prune frees the next hours' writes fill again, so there is little to
//! hand back; an operator who shrinks retention for good can VACUUM once
//! (the backup command's copy is compact anyway).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::sql::{Dialect, LabelMatch, Sql};
use super::{
    Approval, Encoded, IdMatches, IdTable, Loaded, Prune, Pruned, Run, RunFilter, Store,
    StoreError, Turn,
};

pub struct SqliteStore {
    /// Reads: several at once, beside a write (WAL).
    pool: SqlitePool,
    /// Writes: one connection. SQLite takes one writer at a time anyway,
    /// and a connection that made every change since its last transaction
    /// keeps its page cache; one that did not (the next in a pool) starts
    /// each commit reading the b-trees' pages from the file again.
    writer: SqlitePool,
    /// Set by each commit; the checkpointer's cue.
    written: Arc<AtomicBool>,
    /// Stops the checkpointer with the store.
    _checkpointer: DropGuard,
}

/// How often WAL frames are copied back into the database file, when
/// anything was written since the last time.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const DIALECT: Dialect = Dialect {
    // SQLITE_MAX_VARIABLE_NUMBER is 32,766 since SQLite 3.32.
    max_binds: 32_766,
    json_cast: "",
    labels_text: "labels",
    labels: LabelMatch::JsonEach,
};

type Body = Sql<Sqlite>;

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an answered commit survives a crash of the machine, not
            // only of the process. Group commit keeps the fsyncs few.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            // A multi-row upsert keeps a statement journal (to undo the
            // statement alone): in memory, not a temporary file each commit
            // writes to.
            .pragma("temp_store", "memory")
            .foreign_keys(true);
        // A connection to a file does not go stale: no ping before each use
        // (a round trip to the driver's thread on every commit).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            // Commits do not checkpoint (SQLite's default does, every
            // 1,000 pages, inside the commit that crosses the mark, which
            // then waits for the copy and its fsync): the checkpointer does.
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        MIGRATOR.run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let written = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        tokio::spawn(checkpointer(pool.clone(), written.clone(), stop.clone()));
        Ok(Self {
            pool,
            writer,
            written,
            _checkpointer: stop.drop_guard(),
        })
    }
}

/// Copies committed WAL frames back into the database file, beside the
/// commits rather than inside one, on a read connection. A PASSIVE
/// checkpoint takes no lock a commit waits for; it copies what no reader
/// still needs, and the WAL starts over from its beginning once all of it
/// was copied.
async fn checkpointer(pool: SqlitePool, written: Arc<AtomicBool>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !written.swap(false, Ordering::Relaxed) {
            continue;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            // The next tick tries again; the WAL grows meanwhile.
            tracing::warn!(error = %e, "WAL checkpoint failed");
            written.store(true, Ordering::Relaxed);
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn load(&self, recent: u32) -> Result<Loaded, StoreError> {
        // One read transaction: the live set and the seq agree.
        let mut t = self.pool.begin().await?;
        let loaded = Body::load(&mut t, &DIALECT, recent).await?;
        t.commit().await?;
        Ok(loaded)
    }

    async fn write(&self, rows: Encoded<'_>, mut turn: Turn) -> Result<(), StoreError> {
        // One writer: nothing to overlap with the commit before.
        turn.before_written().await?;
        let mut t = self.writer.begin().await?;
        Body::write(&mut t, &DIALECT, rows).await?;
        // The core seals the next batch now, and encodes it while this
        // one's commit writes the WAL and syncs it.
        turn.ran();
        t.commit().await?;
        self.written.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::run_where(&mut c, &DIALECT, "id", id).await
    }

    async fn run_by_idempotency_key(
        &self,
        submitted_by: &str,
        key: &str,
    ) -> Result<Option<Run>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::run_by_key(&mut c, &DIALECT, submitted_by, key).await
    }

    async fn list_runs(&self, filter: &RunFilter, limit: u32) -> Result<Vec<Run>, StoreError> {
        let mut t = self.pool.begin().await?;
        let runs = Body::list_runs(&mut t, &DIALECT, filter, limit).await?;
        t.commit().await?;
        Ok(runs)
    }

    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::get_approval(&mut c, id).await
    }

    async fn match_ids(
        &self,
        table: IdTable,
        text: &str,
        limit: u32,
    ) -> Result<IdMatches, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::match_ids(&mut c, table, text, limit).await
    }

    async fn decided_approvals(&self, limit: u32) -> Result<Vec<Approval>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::decided_approvals(&mut c, limit).await
    }

    async fn first_kept_seq(&self) -> Result<u64, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::first_kept_seq(&mut c).await
    }

    async fn due_notifications(
        &self,
        now: crate::domain::Millis,
        limit: u32,
    ) -> Result<Vec<super::Notification>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::due_notifications(&mut c, now, limit).await
    }

    async fn notification_attempted(
        &self,
        id: &str,
        attempt: &super::Attempt,
    ) -> Result<bool, StoreError> {
        let mut c = self.writer.acquire().await?;
        Body::notification_attempted(&mut c, id, attempt).await
    }

    async fn list_notifications(
        &self,
        states: &[super::NotificationState],
        limit: u32,
    ) -> Result<Vec<super::Notification>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::list_notifications(&mut c, states, limit).await
    }

    async fn pending_notifications(&self) -> Result<u64, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::pending_notifications(&mut c).await
    }

    async fn prune(&self, what: &Prune) -> Result<Pruned, StoreError> {
        Body::prune(&self.writer, what).await
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = sqlx::query_scalar("SELECT * FROM pragma_page_count()")
            .fetch_one(&self.pool)
            .await?;
        let size: i64 = sqlx::query_scalar("SELECT * FROM pragma_page_size()")
            .fetch_one(&self.pool)
            .await?;
        Ok((pages * size) as u64)
    }

    async fn events_after(
        &self,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::events_after(&mut c, after, limit, run_id).await
    }

    async fn events_before(
        &self,
        before: u64,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::events_before(&mut c, before, after, limit, run_id).await
    }

    async fn events_between(&self, after: u64, until: u64) -> Result<Vec<pb::Event>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::events_between(&mut c, after, until).await
    }

    async fn output_from(
        &self,
        query: &super::OutputQuery,
        limit: u32,
    ) -> Result<Vec<pb::OutputChunk>, StoreError> {
        let mut c = self.pool.acquire().await?;
        Body::output_from(&mut c, query, limit).await
    }

    async fn output(
        &self,
        run_id: &str,
        step: Option<u32>,
    ) -> Result<Vec<pb::OutputChunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_index, attempt, stream, at, truncated, data, byte_offset FROM output
             WHERE run_id = ? AND (? IS NULL OR step_index = ?) ORDER BY id",
        )
        .bind(run_id)
        .bind(step.map(i64::from))
        .bind(step.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(pb::OutputChunk {
                    run_id: run_id.to_owned(),
                    step_index: r.try_get::<i64, _>("step_index")? as u32,
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
                    stream: r.try_get("stream")?,
                    at_ms: r.try_get("at")?,
                    truncated: r.try_get::<i64, _>("truncated")? != 0,
                    data: r.try_get("data")?,
                    offset: r.try_get::<i64, _>("byte_offset")? as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;

    /// Commits leave their pages in the WAL; the checkpointer, not a
    /// commit, copies them into the database file soon after.
    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_a_commit_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsdeck.db");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let events = (1..=2_000)
            .map(|seq| pb::Event {
                seq,
                at_ms: seq as i64,
                kind: "run.submitted".into(),
                actor: "alice".into(),
                run_id: format!("r{seq}"),
                message: "x".repeat(200),
                ..Default::default()
            })
            .collect();
        store
            .commit(&Batch {
                events,
                ..Default::default()
            })
            .await
            .unwrap();
        let wal = path.with_extension("db-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 400_000,
            "the commit wrote its pages to the WAL"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now > before + 400_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint copied the WAL into the database file ({before} -> {now} bytes)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            store.events_after(0, 5_000, None).await.unwrap().len(),
            2_000
        );
    }
}
