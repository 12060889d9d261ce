//! PostgreSQL: for teams that run several engines against one database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};

use super::sql::{Dialect, LabelMatch, Sql};
use super::{
    Approval, Encoded, IdMatches, IdTable, Leadership, Loaded, Prune, Pruned, Run, RunFilter,
    Store, StoreError,
};

pub struct PostgresStore {
    pool: PgPool,
    /// The epoch this engine leads with; 0 until it leads. Every commit
    /// checks it against the `leader` row.
    fence: AtomicU64,
}

/// How long a leader's commit transaction may sit idle before the server
/// ends it: a leader paused mid-commit (SIGSTOP, a VM freeze) holds a share
/// lock on the `leader` row, which would keep a standby from taking over.
const COMMIT_IDLE_LIMIT: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const DIALECT: Dialect = Dialect {
    // The wire protocol counts parameters in 16 bits.
    max_binds: 65_535,
    json_cast: "::jsonb",
    labels_text: "labels::text",
    labels: LabelMatch::Contains,
};

type Body = Sql<Postgres>;

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            fence: AtomicU64::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn load(&self, recent: u32) -> Result<Loaded, StoreError> {
        // One snapshot: the live set and the seq agree.
        let mut t = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *t)
            .await?;
        let loaded = Body::load(&mut t, &DIALECT, recent).await?;
        t.commit().await?;
        Ok(loaded)
    }

    async fn write(&self, rows: Encoded<'_>) -> Result<(), StoreError> {
        let mut t = self.pool.begin().await?;
        let mine = self.fence.load(Ordering::SeqCst);
        if mine != 0 {
            // The share lock makes a takeover wait for this commit, so the
            // new leader loads everything a deposed one committed.
            sqlx::query(COMMIT_IDLE_LIMIT).execute(&mut *t).await?;
            let now: i64 = sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1 FOR SHARE")
                .fetch_one(&mut *t)
                .await?;
            if now as u64 != mine {
                return Err(StoreError::Fenced {
                    mine,
                    now: now as u64,
                });
            }
        }
        Body::write(&mut t, &DIALECT, rows).await?;
        t.commit().await?;
        Ok(())
    }

    async fn lead(
        &self,
        holder: &str,
        address: &str,
        ttl: Duration,
        held: Option<u64>,
    ) -> Result<Leadership, StoreError> {
        let ttl = ttl.as_secs_f64();
        let won: Option<i64> = match held {
            None => {
                sqlx::query_scalar(
                    "UPDATE leader SET epoch = epoch + 1, holder = $1, address = $2,
                         expires_at = now() + make_interval(secs => $3)
                     WHERE id = 1 AND (expires_at < now() OR holder = $1)
                     RETURNING epoch",
                )
                .bind(holder)
                .bind(address)
                .bind(ttl)
                .fetch_optional(&self.pool)
                .await?
            }
            Some(epoch) => {
                sqlx::query_scalar(
                    "UPDATE leader SET expires_at = now() + make_interval(secs => $1)
                     WHERE id = 1 AND epoch = $2 RETURNING epoch",
                )
                .bind(ttl)
                .bind(epoch as i64)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        if let Some(epoch) = won {
            self.fence.store(epoch as u64, Ordering::SeqCst);
            return Ok(Leadership::Leader {
                epoch: epoch as u64,
            });
        }
        let row = sqlx::query(
            "SELECT epoch, address, expires_at > now() AS live FROM leader WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        let live: bool = row.try_get("live")?;
        Ok(Leadership::Follower {
            epoch: row.try_get::<i64, _>("epoch")? as u64,
            address: live.then(|| row.try_get("address")).transpose()?,
        })
    }

    async fn resign(&self, epoch: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE leader SET expires_at = '-infinity' WHERE id = 1 AND epoch = $1")
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
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
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *t)
            .await?;
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
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        Ok(size as u64)
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
             WHERE run_id = $1 AND ($2::BIGINT IS NULL OR step_index = $2) ORDER BY id",
        )
        .bind(run_id)
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
                    truncated: r.try_get("truncated")?,
                    data: r.try_get("data")?,
                    offset: r.try_get::<i64, _>("byte_offset")? as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
