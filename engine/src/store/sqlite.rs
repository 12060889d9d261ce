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
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::rows::events_from_rows;
use super::sql::{Dialect, LabelMatch, Sql};
use super::{
    Approval, Batch, IdMatches, IdTable, Loaded, Prune, Pruned, Run, RunFilter, Store, StoreError,
};

pub struct SqliteStore {
    pool: SqlitePool,
}

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
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection to a file does not go stale: no ping before each
            // use (a round trip to the driver's thread on every commit).
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
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

    async fn commit(&self, b: &Batch) -> Result<(), StoreError> {
        let mut t = self.pool.begin().await?;
        Body::commit(&mut t, &DIALECT, b).await?;
        t.commit().await?;
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
        let mut c = self.pool.acquire().await?;
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
        Body::prune(&self.pool, what).await
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
        let rows = match run_id {
            Some(run) => {
                sqlx::query(
                    "SELECT seq, at, kind, run_id, actor, body FROM events
                     WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(run)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT seq, at, kind, run_id, actor, body FROM events
                     WHERE seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        events_from_rows::<Sqlite>(&rows)
    }

    async fn events_before(
        &self,
        before: u64,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let rows = match run_id {
            Some(run) => {
                sqlx::query(
                    "SELECT seq, at, kind, run_id, actor, body FROM events
                     WHERE run_id = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?",
                )
                .bind(run)
                .bind(before)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT seq, at, kind, run_id, actor, body FROM events
                     WHERE seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?",
                )
                .bind(before)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        events_from_rows::<Sqlite>(&rows)
    }

    async fn events_between(&self, after: u64, until: u64) -> Result<Vec<pb::Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, run_id, actor, body FROM events
             WHERE seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(after as i64)
        .bind(until as i64)
        .fetch_all(&self.pool)
        .await?;
        events_from_rows::<Sqlite>(&rows)
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
