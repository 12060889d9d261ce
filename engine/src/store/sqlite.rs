//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use opsdeck_proto::v1 as pb;
use prost::Message;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::codec::{decode_event, json, parse, state_word};
use super::{Batch, Store, StoreError};
use crate::core::Loaded;

pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

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
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Inserts or replaces one object stored whole: (id, [run_id,] state, body).
async fn upsert_body(
    t: &mut sqlx::SqliteConnection,
    table: &'static str,
    id: &str,
    run_id: Option<&str>,
    state: &str,
    body: &str,
) -> Result<(), sqlx::Error> {
    let (cols, vals) = if run_id.is_some() {
        ("id, run_id, state, body", "?, ?, ?, ?")
    } else {
        ("id, state, body", "?, ?, ?")
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
    pool: &SqlitePool,
    what: &str,
    sql: &'static str,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| parse(what, r.try_get::<&str, _>("body")?))
        .collect()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let queues = sqlx::query("SELECT name, paused FROM queues ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(crate::domain::Queue {
                    name: r.try_get("name")?,
                    paused: r.try_get::<i64, _>("paused")? != 0,
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
        for r in &b.runs {
            sqlx::query(
                "INSERT INTO runs (id, name, state, created_at, idempotency_key, body) VALUES (?, ?, ?, ?, ?, ?)
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
                "INSERT INTO queues (name, paused) VALUES (?, ?)
                 ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            )
            .bind(&q.name)
            .bind(q.paused as i64)
            .execute(&mut *t)
            .await?;
        }
        for e in &b.events {
            sqlx::query(
                "INSERT INTO events (seq, at, kind, run_id, actor, body) VALUES (?, ?, ?, ?, ?, ?)",
            )
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
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&o.run_id)
            .bind(o.step_index as i64)
            .bind(o.attempt as i64)
            .bind(&o.stream)
            .bind(o.at_ms)
            .bind(o.truncated as i64)
            .bind(&o.data)
            .execute(&mut *t)
            .await?;
        }
        for (name, q) in &b.quarantines {
            match q {
                Some(q) => {
                    sqlx::query(
                        "INSERT INTO quarantines (name, body) VALUES (?, ?)
                         ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                    )
                    .bind(name)
                    .bind(json(q)?)
                    .execute(&mut *t)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM quarantines WHERE name = ?")
                        .bind(name)
                        .execute(&mut *t)
                        .await?;
                }
            }
        }
        t.commit().await?;
        Ok(())
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
                    "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(run)
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT body FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
                    .bind(after as i64)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| decode_event(r.try_get::<&[u8], _>("body")?))
            .collect()
    }

    async fn events_between(&self, after: u64, until: u64) -> Result<Vec<pb::Event>, StoreError> {
        let rows = sqlx::query("SELECT body FROM events WHERE seq > ? AND seq <= ? ORDER BY seq")
            .bind(after as i64)
            .bind(until as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode_event(r.try_get::<&[u8], _>("body")?))
            .collect()
    }

    async fn output(
        &self,
        run_id: &str,
        step: Option<u32>,
    ) -> Result<Vec<pb::OutputChunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_index, attempt, stream, at, truncated, data FROM output
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
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
