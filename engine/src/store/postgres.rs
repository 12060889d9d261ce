//! PostgreSQL: for teams that run several engines against one database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use prost::Message;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::codec::{decode_event, json, parse, state_word};
use super::{Batch, Leadership, Store, StoreError};
use crate::core::Loaded;

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

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

/// Inserts or replaces one object stored whole: (id, [run_id,] state, body).
async fn upsert_body(
    t: &mut sqlx::PgConnection,
    table: &'static str,
    id: &str,
    run_id: Option<&str>,
    state: &str,
    body: &str,
) -> Result<(), sqlx::Error> {
    let (cols, vals) = if run_id.is_some() {
        ("id, run_id, state, body", "$1, $2, $3, $4")
    } else {
        ("id, state, body", "$1, $2, $3")
    };
    let sql = format!(
        "INSERT INTO {table} ({cols}) VALUES ({vals}) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
    if let Some(run) = run_id {
        q = q.bind(run);
    }
    q.bind(state).bind(body).execute(t).await?;
    Ok(())
}

async fn bodies<T: DeserializeOwned>(
    pool: &PgPool,
    what: &str,
    sql: &'static str,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| parse(what, r.try_get::<&str, _>("body")?))
        .collect()
}

fn events(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<pb::Event>, StoreError> {
    rows.iter()
        .map(|r| decode_event(r.try_get::<&[u8], _>("body")?))
        .collect()
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let queues = sqlx::query("SELECT name, paused FROM queues ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(crate::domain::Queue {
                    name: r.try_get("name")?,
                    paused: r.try_get("paused")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(Loaded {
            runs: bodies(&self.pool, "run", "SELECT body FROM runs ORDER BY id").await?,
            workers: bodies(&self.pool, "worker", "SELECT body FROM workers ORDER BY id").await?,
            leases: bodies(
                &self.pool,
                "lease",
                "SELECT body FROM leases WHERE state = 'active'",
            )
            .await?,
            approvals: bodies(
                &self.pool,
                "approval",
                "SELECT body FROM approvals ORDER BY id",
            )
            .await?,
            quarantines: bodies(
                &self.pool,
                "quarantine",
                "SELECT body FROM quarantines ORDER BY name",
            )
            .await?,
            queues,
            seq: seq.unwrap_or(0) as u64,
        })
    }

    async fn commit(&self, b: &Batch) -> Result<(), StoreError> {
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
        for r in &b.runs {
            sqlx::query(
                "INSERT INTO runs (id, name, state, created_at, idempotency_key, body) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            )
            .bind(&r.id)
            .bind(&r.name)
            .bind(state_word(&r.state)?)
            .bind(r.created_at)
            .bind(&r.idempotency_key)
            .bind(json(r)?)
            .execute(&mut *t)
            .await?;
        }
        for w in &b.workers {
            upsert_body(
                &mut t,
                "workers",
                &w.id,
                None,
                &state_word(&w.state)?,
                &json(w)?,
            )
            .await?;
        }
        for l in &b.leases {
            upsert_body(
                &mut t,
                "leases",
                &l.id,
                Some(&l.run_id),
                &state_word(&l.state)?,
                &json(l)?,
            )
            .await?;
        }
        for a in &b.approvals {
            upsert_body(
                &mut t,
                "approvals",
                &a.id,
                Some(&a.run_id),
                &state_word(&a.state)?,
                &json(a)?,
            )
            .await?;
        }
        for q in &b.queues {
            sqlx::query(
                "INSERT INTO queues (name, paused) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            )
            .bind(&q.name)
            .bind(q.paused)
            .execute(&mut *t)
            .await?;
        }
        for e in &b.events {
            sqlx::query("INSERT INTO events (seq, at, kind, run_id, actor, body) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(e.seq as i64)
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind((!e.run_id.is_empty()).then_some(&e.run_id))
                .bind(&e.actor)
                .bind(e.encode_to_vec())
                .execute(&mut *t)
                .await?;
        }
        for o in &b.outputs {
            sqlx::query(
                "INSERT INTO output (run_id, step_index, attempt, stream, at, truncated, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&o.run_id)
            .bind(i64::from(o.step_index))
            .bind(i64::from(o.attempt))
            .bind(&o.stream)
            .bind(o.at_ms)
            .bind(o.truncated)
            .bind(&o.data)
            .execute(&mut *t)
            .await?;
        }
        for (name, q) in &b.quarantines {
            match q {
                Some(q) => {
                    sqlx::query(
                        "INSERT INTO quarantines (name, body) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                    )
                    .bind(name)
                    .bind(json(q)?)
                    .execute(&mut *t)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM quarantines WHERE name = $1")
                        .bind(name)
                        .execute(&mut *t)
                        .await?;
                }
            }
        }
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

    async fn events_after(
        &self,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM events WHERE seq > $1 AND ($2::TEXT IS NULL OR run_id = $2) ORDER BY seq LIMIT $3",
        )
        .bind(after as i64)
        .bind(run_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        events(&rows)
    }

    async fn events_between(&self, after: u64, until: u64) -> Result<Vec<pb::Event>, StoreError> {
        let rows = sqlx::query("SELECT body FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq")
            .bind(after as i64)
            .bind(until as i64)
            .fetch_all(&self.pool)
            .await?;
        events(&rows)
    }

    async fn output(
        &self,
        run_id: &str,
        step: Option<u32>,
    ) -> Result<Vec<pb::OutputChunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_index, attempt, stream, at, truncated, data FROM output
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
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
