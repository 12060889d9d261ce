//! Writing a batch, for both dialects: first its rows encoded
//! ([`Encoded`]: JSON bodies, event rows; no database needed), then the
//! statements. The two halves are apart so that a batch can be encoded
//! while the one before it is still being written.

use std::collections::HashMap;

use sqlx::query_builder::Separated;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::codec::{body, json, state_word};
use super::events::{EventRow, event_rows};
use super::sql::{Affected, Dialect, Sql};
use super::{Batch, StoreError};
use crate::domain::schedule::Schedule;
use crate::domain::{Lease, LeaseState, Step};

/// The fields of a run's JSON that are columns of its row (and `steps`,
/// which are rows of their own).
const RUN_FIELDS: &[&str] = &[
    "id",
    "name",
    "state",
    "created_at",
    "idempotency_key",
    "submitted_by",
    "finished_at",
    "labels",
    "steps",
    "template",
];
const STEP_FIELDS: &[&str] = &["index", "state"];
const LEASE_FIELDS: &[&str] = &["id", "run_id", "state"];

/// A run's row: id, name, state, created at, idempotency key, submitted
/// by, finished at, labels, body, template.
pub(super) type RunRow = (
    String,
    String,
    String,
    i64,
    Option<String>,
    String,
    Option<i64>,
    String,
    String,
    Option<String>,
);
/// A step's row: run id, index, state, body.
pub(super) type StepRow = (String, i64, String, String);
/// A lease's row: id, run id, state, body.
pub(super) type LeaseRow = (String, String, String, String);

/// A batch with the rows of its busiest tables encoded, ready to write
/// ([`super::Store::write`]); the other tables' few rows are encoded as
/// they are written.
pub struct Encoded<'a> {
    batch: &'a Batch,
    runs: Vec<RunRow>,
    steps: Vec<StepRow>,
    /// Active leases, upserted.
    leases: Vec<LeaseRow>,
    /// Leases that ended, deleted: an ended lease is never read back (its
    /// history is its events'), so its row goes at once rather than by
    /// retention.
    ended_leases: Vec<String>,
    events: Vec<EventRow<'a>>,
}

/// The rows of the busiest tables, taken out of an [`Encoded`] by a
/// dialect that writes them its own way (PostgreSQL: one statement for
/// all of them).
pub(super) struct Hot<'a> {
    pub runs: Vec<RunRow>,
    pub steps: Vec<StepRow>,
    pub leases: Vec<LeaseRow>,
    pub ended_leases: Vec<String>,
    pub events: Vec<EventRow<'a>>,
}

impl Hot<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.steps.is_empty()
            && self.leases.is_empty()
            && self.ended_leases.is_empty()
            && self.events.is_empty()
    }
}

impl<'a> Encoded<'a> {
    /// Takes the busiest tables' rows out: [`Sql::write`] then writes the
    /// rest.
    pub(super) fn take_hot(&mut self) -> Hot<'a> {
        Hot {
            runs: std::mem::take(&mut self.runs),
            steps: std::mem::take(&mut self.steps),
            leases: std::mem::take(&mut self.leases),
            ended_leases: std::mem::take(&mut self.ended_leases),
            events: std::mem::take(&mut self.events),
        }
    }

    pub fn new(b: &'a Batch) -> Result<Self, StoreError> {
        let runs = last_per_key(&b.runs, |r| r.id.clone())
            .into_iter()
            .map(|r| {
                Ok((
                    r.id.clone(),
                    r.name.clone(),
                    state_word(&r.state)?,
                    r.created_at,
                    r.idempotency_key.clone(),
                    r.submitted_by.clone(),
                    r.finished_at,
                    json(&r.labels)?,
                    body(r, RUN_FIELDS)?,
                    r.template.clone(),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // A run handed over whole (its steps in it) writes its steps too;
        // `steps` comes after, so it wins.
        let embedded = b
            .runs
            .iter()
            .flat_map(|r| r.steps.iter().map(move |s| (&r.id, s)));
        let all: Vec<(&String, &Step)> = embedded
            .chain(b.steps.iter().map(|(run, s)| (run, s)))
            .collect();
        let steps = last_per_key(&all, |(run, s)| ((*run).clone(), s.index))
            .into_iter()
            .map(|(run, s)| {
                Ok((
                    (*run).clone(),
                    i64::from(s.index),
                    state_word(&s.state)?,
                    body(*s, STEP_FIELDS)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (active, ended): (Vec<&Lease>, Vec<&Lease>) = last_per_key(&b.leases, |l| l.id.clone())
            .into_iter()
            .partition(|l| l.state == LeaseState::Active);
        let leases = active
            .into_iter()
            .map(|l| {
                Ok((
                    l.id.clone(),
                    l.run_id.clone(),
                    state_word(&l.state)?,
                    body(l, LEASE_FIELDS)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            batch: b,
            runs,
            steps,
            leases,
            ended_leases: ended.into_iter().map(|l| l.id.clone()).collect(),
            events: event_rows(&b.events),
        })
    }
}

impl<DB> Sql<DB>
where
    DB: Database + sqlx::database::HasStatementCache,
    DB::Arguments: IntoArguments<DB>,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Inserts `rows` in few statements: `head VALUES (…), (…) tail`,
    /// `cols` binds a row. Each statement holds a power of two of rows, at
    /// most [`MAX_ROWS`] (and the bind limit): the driver keeps prepared
    /// statements per connection, and this bounds how many shapes (and how
    /// much memory) there are to keep — at most eight a table.
    async fn insert<R: Send>(
        c: &mut DB::Connection,
        d: &Dialect,
        head: &str,
        cols: usize,
        tail: &str,
        rows: Vec<R>,
        mut bind: impl FnMut(Separated<'_, DB, &'static str>, R) + Send,
    ) -> Result<(), sqlx::Error> {
        let most = prev_power_of_two((d.max_binds / cols).clamp(1, MAX_ROWS));
        let mut rows = rows.into_iter();
        while rows.len() > 0 {
            let n = prev_power_of_two(rows.len()).min(most);
            let mut q = QueryBuilder::<DB>::new(head);
            q.push_values(rows.by_ref().take(n), &mut bind);
            q.push(tail);
            q.build().execute(&mut *c).await?;
        }
        Ok(())
    }

    /// [`insert`](Self::insert) of rows of four columns, bound in order.
    async fn insert4<A, B, C, E>(
        c: &mut DB::Connection,
        d: &Dialect,
        head: &str,
        tail: &str,
        rows: Vec<(A, B, C, E)>,
    ) -> Result<(), sqlx::Error>
    where
        A: for<'q> Encode<'q, DB> + Type<DB> + Send,
        B: for<'q> Encode<'q, DB> + Type<DB> + Send,
        C: for<'q> Encode<'q, DB> + Type<DB> + Send,
        E: for<'q> Encode<'q, DB> + Type<DB> + Send,
    {
        Self::insert(c, d, head, 4, tail, rows, |mut s, r| {
            s.push_bind(r.0)
                .push_bind(r.1)
                .push_bind(r.2)
                .push_bind(r.3);
        })
        .await
    }

    /// Writes an encoded batch on `c`, inside the caller's transaction.
    pub async fn write(
        c: &mut DB::Connection,
        d: &Dialect,
        e: Encoded<'_>,
    ) -> Result<(), StoreError> {
        let b = e.batch;
        Self::insert(
            c,
            d,
            "INSERT INTO runs (id, name, state, created_at, idempotency_key, submitted_by, \
             finished_at, labels, body, template) ",
            10,
            // A run's name, labels, submitter, key, creation time and spec
            // text are its first write's and never change: only what does
            // is set again, so no index on the others is rewritten.
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             finished_at = excluded.finished_at, body = excluded.body",
            e.runs,
            |mut s, r| {
                s.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(r.5)
                    .push_bind(r.6)
                    .push_bind(r.7)
                    .push_unseparated(d.json_cast)
                    .push_bind(r.8)
                    .push_bind(r.9);
            },
        )
        .await?;

        Self::insert4(
            c,
            d,
            "INSERT INTO steps (run_id, idx, state, body) ",
            " ON CONFLICT (run_id, idx) DO UPDATE SET state = excluded.state, body = excluded.body",
            e.steps,
        )
        .await?;

        let workers = last_per_key(&b.workers, |w| w.id.clone())
            .into_iter()
            .map(|w| {
                Ok((
                    w.id.clone(),
                    state_word(&w.state)?,
                    w.last_heartbeat_at,
                    json(w)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::insert4(
            c,
            d,
            "INSERT INTO workers (id, state, last_heartbeat_at, body) ",
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             last_heartbeat_at = excluded.last_heartbeat_at, body = excluded.body",
            workers,
        )
        .await?;

        if !b.forgotten_workers.is_empty() {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM workers WHERE id IN (");
            let mut ids = q.separated(", ");
            for id in &b.forgotten_workers {
                ids.push_bind(id.clone());
            }
            q.push(")");
            q.build().persistent(false).execute(&mut *c).await?;
        }

        Self::insert4(
            c,
            d,
            "INSERT INTO leases (id, run_id, state, body) ",
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            e.leases,
        )
        .await?;
        Self::delete_keys(c, d, "leases", "id", &e.ended_leases).await?;

        let approvals = last_per_key(&b.approvals, |a| a.id.clone())
            .into_iter()
            .map(|a| {
                Ok((
                    a.id.clone(),
                    a.run_id.clone(),
                    state_word(&a.state)?,
                    json(a)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::insert4(
            c,
            d,
            "INSERT INTO approvals (id, run_id, state, body) ",
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            approvals,
        )
        .await?;

        let queues = last_per_key(&b.queues, |q| q.name.clone());
        Self::insert(
            c,
            d,
            "INSERT INTO queues (name, paused, max_running) ",
            3,
            " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, \
             max_running = excluded.max_running",
            queues,
            |mut s, q| {
                s.push_bind(q.name.clone())
                    .push_bind(q.paused)
                    .push_bind(i64::from(q.max_running));
            },
        )
        .await?;

        Self::insert(
            c,
            d,
            "INSERT INTO events (seq, at, kind, run_id, actor, body, last_seq) ",
            7,
            "",
            e.events,
            |mut s, e| {
                s.push_bind(e.seq)
                    .push_bind(e.at)
                    .push_bind(e.kind.to_owned())
                    .push_bind(e.run_id.map(str::to_owned))
                    .push_bind(e.actor.to_owned())
                    .push_bind(e.body)
                    .push_bind(e.last_seq);
            },
        )
        .await?;

        Self::insert(
            c,
            d,
            "INSERT INTO output (run_id, step_index, attempt, stream, at, truncated, data, byte_offset) ",
            8,
            "",
            b.outputs.iter().collect(),
            |mut s, o| {
                s.push_bind(o.run_id.clone())
                    .push_bind(i64::from(o.step_index))
                    .push_bind(i64::from(o.attempt))
                    .push_bind(o.stream.clone())
                    .push_bind(o.at_ms)
                    .push_bind(o.truncated)
                    .push_bind(o.data.clone())
                    .push_bind(o.offset as i64);
            },
        )
        .await?;

        let quarantines = last_per_key(&b.quarantines, |(name, _)| name.clone());
        let (set, cleared): (Vec<_>, Vec<_>) =
            quarantines.into_iter().partition(|(_, q)| q.is_some());
        let set = set
            .into_iter()
            .filter_map(|(name, q)| q.as_ref().map(|q| Ok((name.clone(), json(q)?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::insert(
            c,
            d,
            "INSERT INTO quarantines (name, body) ",
            2,
            " ON CONFLICT (name) DO UPDATE SET body = excluded.body",
            set,
            |mut s, r| {
                s.push_bind(r.0).push_bind(r.1);
            },
        )
        .await?;
        let cleared: Vec<String> = cleared.into_iter().map(|(n, _)| n.clone()).collect();
        Self::delete_keys(c, d, "quarantines", "name", &cleared).await?;
        Self::write_schedules(c, d, &b.schedules).await?;
        Self::commit_outbox(c, &b.notifications, &b.given_up).await
    }

    /// Schedules set or removed, the last change of each name winning.
    async fn write_schedules(
        c: &mut DB::Connection,
        d: &Dialect,
        schedules: &[(String, Option<Schedule>)],
    ) -> Result<(), StoreError> {
        let schedules = last_per_key(schedules, |(name, _)| name.clone());
        let (set, removed): (Vec<_>, Vec<_>) =
            schedules.into_iter().partition(|(_, s)| s.is_some());
        let set = set
            .into_iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| Ok((s.clone(), json(s)?))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::insert(
            c,
            d,
            "INSERT INTO schedules (name, cron, timezone, paused, next_fire_at, last_fire_at, last_run_id, body) ",
            8,
            " ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
             paused = excluded.paused, next_fire_at = excluded.next_fire_at, \
             last_fire_at = excluded.last_fire_at, last_run_id = excluded.last_run_id, body = excluded.body",
            set,
            |mut q, (s, body)| {
                q.push_bind(s.name)
                    .push_bind(s.cron)
                    .push_bind(s.timezone)
                    .push_bind(s.paused)
                    .push_bind(s.next_fire_at)
                    .push_bind(s.last_fire_at)
                    .push_bind(s.last_run_id)
                    .push_bind(body);
            },
        )
        .await?;
        let removed: Vec<String> = removed.into_iter().map(|(n, _)| n.clone()).collect();
        Self::delete_keys(c, d, "schedules", "name", &removed).await
    }

    /// Deletes the rows of `table` whose `column` is one of `keys`.
    async fn delete_keys(
        c: &mut DB::Connection,
        d: &Dialect,
        table: &str,
        column: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        for chunk in keys.chunks(d.max_binds) {
            let mut q = QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            let mut list = q.separated(", ");
            for key in chunk {
                list.push_bind(key.clone());
            }
            q.push(")");
            q.build().persistent(false).execute(&mut *c).await?;
        }
        Ok(())
    }
}

/// The most rows one insert statement holds.
const MAX_ROWS: usize = 128;

/// The largest power of two not above `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// The last of each key, in the order of their first appearance: one
/// multi-row upsert may not touch a row twice (PostgreSQL refuses it), and
/// the last write is the one that counts.
fn last_per_key<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut at: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::with_capacity(items.len());
    for item in items {
        match at.entry(key(item)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = item,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(item);
            }
        }
    }
    out
}
