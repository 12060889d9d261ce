//! PostgreSQL: for teams that run several engines against one database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};

use super::sql::{Dialect, LabelMatch, Sql};
use super::write::Hot;
use super::{
    Approval, Encoded, IdMatches, IdTable, Leadership, Loaded, Prune, Pruned, Run, RunFilter,
    Store, StoreError, Turn,
};

pub struct PostgresStore {
    pool: PgPool,
    /// The epoch this engine leads with; 0 until it leads. Every commit
    /// checks it against the `leader` row.
    fence: AtomicU64,
}

/// A leader's commit reads the epoch with a share lock on the `leader`
/// row, and in the same round trip limits how long its transaction may sit
/// idle before the server ends it (`set_config(…, true)` is `SET LOCAL`): a
/// leader paused mid-commit (SIGSTOP, a VM freeze) holds that lock, which
/// would keep a standby from taking over.
const FENCE: &str = "SELECT epoch, \
    set_config('idle_in_transaction_session_timeout', '5s', true) \
    FROM leader WHERE id = 1 FOR SHARE";

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const DIALECT: Dialect = Dialect {
    // The wire protocol counts parameters in 16 bits.
    max_binds: 65_535,
    json_cast: "::jsonb",
    labels_text: "labels::text",
    labels: LabelMatch::Contains,
};

type Body = Sql<Postgres>;

/// The busiest tables' rows of a commit in one statement: each table's
/// rows bound as arrays (a column an array) and unnested, its insert (or
/// delete) one part of a `WITH`. Every statement is a round trip to the
/// server, and a commit waits for each; this one has a single shape, so
/// it is prepared once. The parts touch different rows (a lease is either
/// upserted or deleted), as PostgreSQL requires of one statement.
const WRITE_HOT: &str = "WITH \
    runs_written AS (\
        INSERT INTO runs (id, name, state, created_at, idempotency_key, submitted_by, \
            finished_at, labels, body, template) \
        SELECT id, name, state, created_at, idempotency_key, submitted_by, \
            finished_at, labels::jsonb, body, template \
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
            $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[]) \
            AS r (id, name, state, created_at, idempotency_key, submitted_by, \
                finished_at, labels, body, template) \
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
            finished_at = excluded.finished_at, body = excluded.body), \
    steps_written AS (\
        INSERT INTO steps (run_id, idx, state, body) \
        SELECT * FROM UNNEST($11::text[], $12::bigint[], $13::text[], $14::text[]) \
        ON CONFLICT (run_id, idx) DO UPDATE SET state = excluded.state, body = excluded.body), \
    leases_written AS (\
        INSERT INTO leases (id, run_id, state, body) \
        SELECT * FROM UNNEST($15::text[], $16::text[], $17::text[], $18::text[]) \
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body), \
    leases_ended AS (DELETE FROM leases WHERE id = ANY($19::text[])), \
    events_written AS (\
        INSERT INTO events (seq, at, kind, run_id, actor, body, last_seq) \
        SELECT * FROM UNNEST($20::bigint[], $21::bigint[], $22::text[], $23::text[], \
            $24::text[], $25::bytea[], $26::bigint[])) \
    SELECT 1";

/// Writes the busiest tables' rows ([`WRITE_HOT`]) inside the caller's
/// transaction.
async fn write_hot(c: &mut sqlx::PgConnection, hot: Hot<'_>) -> Result<(), StoreError> {
    if hot.is_empty() {
        return Ok(());
    }
    let mut runs = RunColumns::default();
    for r in hot.runs {
        runs.id.push(r.0);
        runs.name.push(r.1);
        runs.state.push(r.2);
        runs.created_at.push(r.3);
        runs.idempotency_key.push(r.4);
        runs.submitted_by.push(r.5);
        runs.finished_at.push(r.6);
        runs.labels.push(r.7);
        runs.body.push(r.8);
        runs.template.push(r.9);
    }
    let step_cols = columns4(hot.steps);
    let lease_cols = columns4(hot.leases);
    let mut events = EventColumns::default();
    for e in hot.events {
        events.seq.push(e.seq);
        events.at.push(e.at);
        events.kind.push(e.kind);
        events.run_id.push(e.run_id);
        events.actor.push(e.actor);
        events.body.push(e.body);
        events.last_seq.push(e.last_seq);
    }
    sqlx::query(WRITE_HOT)
        .bind(runs.id)
        .bind(runs.name)
        .bind(runs.state)
        .bind(runs.created_at)
        .bind(runs.idempotency_key)
        .bind(runs.submitted_by)
        .bind(runs.finished_at)
        .bind(runs.labels)
        .bind(runs.body)
        .bind(runs.template)
        .bind(step_cols.0)
        .bind(step_cols.1)
        .bind(step_cols.2)
        .bind(step_cols.3)
        .bind(lease_cols.0)
        .bind(lease_cols.1)
        .bind(lease_cols.2)
        .bind(lease_cols.3)
        .bind(hot.ended_leases)
        .bind(events.seq)
        .bind(events.at)
        .bind(events.kind)
        .bind(events.run_id)
        .bind(events.actor)
        .bind(events.body)
        .bind(events.last_seq)
        .execute(c)
        .await?;
    Ok(())
}

/// Rows of four columns as four columns, each bound as an array.
fn columns4<A, B, C, D>(rows: Vec<(A, B, C, D)>) -> (Vec<A>, Vec<B>, Vec<C>, Vec<D>) {
    let (a, (b, (c, d))) = rows
        .into_iter()
        .map(|(a, b, c, d)| (a, (b, (c, d))))
        .unzip();
    (a, b, c, d)
}

/// A batch's run rows as columns, bound as arrays.
#[derive(Default)]
struct RunColumns {
    id: Vec<String>,
    name: Vec<String>,
    state: Vec<String>,
    created_at: Vec<i64>,
    idempotency_key: Vec<Option<String>>,
    submitted_by: Vec<String>,
    finished_at: Vec<Option<i64>>,
    labels: Vec<String>,
    body: Vec<String>,
    template: Vec<Option<String>>,
}

/// A batch's event rows as columns, bound as arrays.
#[derive(Default)]
struct EventColumns<'a> {
    seq: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<&'a str>,
    run_id: Vec<Option<&'a str>>,
    actor: Vec<&'a str>,
    body: Vec<Vec<u8>>,
    last_seq: Vec<Option<i64>>,
}

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

    async fn write(&self, rows: Encoded<'_>, mut turn: Turn) -> Result<(), StoreError> {
        turn.before_ran().await;
        let mut t = self.pool.begin().await?;
        let mine = self.fence.load(Ordering::SeqCst);
        if mine != 0 {
            // The share lock makes a takeover wait for this commit, so the
            // new leader loads everything a deposed one committed.
            let now: i64 = sqlx::query_scalar(FENCE).fetch_one(&mut *t).await?;
            if now as u64 != mine {
                return Err(StoreError::Fenced {
                    mine,
                    now: now as u64,
                });
            }
        }
        let mut rows = rows;
        write_hot(&mut t, rows.take_hot()).await?;
        Body::write(&mut t, &DIALECT, rows).await?;
        // The statements ran while the commit before committed (one that
        // touched a row it holds waited for it); this one commits after
        // it, or not at all (the transaction rolls back as it drops).
        turn.ran();
        turn.before_written().await?;
        t.commit().await?;
        Ok(())
    }

    fn overlaps_writes(&self) -> bool {
        true
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
