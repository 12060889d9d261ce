//! The body both dialects share: every statement of `commit`, `load`, the
//! run reads and `prune`, written once over [`sqlx::Database`] with
//! [`QueryBuilder`] writing the placeholders (`?` or `$n`). What differs
//! between SQLite and PostgreSQL is in a [`Dialect`].

use std::collections::HashMap;
use std::marker::PhantomData;

use serde_json::Value;
use sqlx::query_builder::Separated;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::codec::{body, json, parse, state_word, with_columns};
use super::events::event_rows;
use super::rows::{lease_from_row, prefix_end, run_from_row};
use super::{Batch, IdMatches, IdTable, Loaded, Prune, Pruned, RunFilter, SUFFIX_SCAN, StoreError};
use crate::domain::schedule::Schedule;
use crate::domain::{Approval, Lease, Quarantine, Queue, Run, Step, Worker};

/// What SQLite and PostgreSQL spell differently.
pub(super) struct Dialect {
    /// The most bind parameters one statement may carry.
    pub max_binds: usize,
    /// Appended to a bound labels value: PostgreSQL's column is `jsonb`.
    pub json_cast: &'static str,
    /// The labels column read back as JSON text.
    pub labels_text: &'static str,
    pub labels: LabelMatch,
}

/// How a run's labels are matched against a filter's.
pub(super) enum LabelMatch {
    /// One `EXISTS (… json_each(labels) …)` per label (SQLite): keys are
    /// bound, never spliced into a JSON path, so no key needs quoting.
    JsonEach,
    /// `labels @> filter` (PostgreSQL, served by a GIN index).
    Contains,
}

/// The query result's count of rows a statement changed.
pub(super) trait Affected {
    fn rows(&self) -> u64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

const FINAL: &str = "('succeeded', 'failed', 'cancelled')";
const RUN_COLUMNS: &str = "id, name, state, created_at, idempotency_key, submitted_by, finished_at";
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

pub(super) struct Sql<DB>(PhantomData<DB>);

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

    /// Writes a batch on `c`, inside the caller's transaction.
    pub async fn commit(c: &mut DB::Connection, d: &Dialect, b: &Batch) -> Result<(), StoreError> {
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
            runs,
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
        Self::insert(
            c,
            d,
            "INSERT INTO steps (run_id, idx, state, body) ",
            4,
            " ON CONFLICT (run_id, idx) DO UPDATE SET state = excluded.state, body = excluded.body",
            steps,
            |mut s, r| {
                s.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3);
            },
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
        Self::insert(
            c,
            d,
            "INSERT INTO workers (id, state, last_heartbeat_at, body) ",
            4,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             last_heartbeat_at = excluded.last_heartbeat_at, body = excluded.body",
            workers,
            |mut s, r| {
                s.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3);
            },
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

        let leases = last_per_key(&b.leases, |l| l.id.clone())
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
        Self::insert(
            c,
            d,
            "INSERT INTO leases (id, run_id, state, body) ",
            4,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            leases,
            |mut s, r| {
                s.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3);
            },
        )
        .await?;

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
        Self::insert(
            c,
            d,
            "INSERT INTO approvals (id, run_id, state, body) ",
            4,
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
            approvals,
            |mut s, r| {
                s.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3);
            },
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
            event_rows(&b.events),
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
        Self::delete_names(c, d, "quarantines", &cleared).await?;
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
        Self::delete_names(c, d, "schedules", &removed).await
    }

    /// Deletes the rows of `table` whose `name` is one of `names`.
    async fn delete_names(
        c: &mut DB::Connection,
        d: &Dialect,
        table: &str,
        names: &[String],
    ) -> Result<(), StoreError> {
        for chunk in names.chunks(d.max_binds) {
            let mut q = QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE name IN ("));
            let mut list = q.separated(", ");
            for name in chunk {
                list.push_bind(name.clone());
            }
            q.push(")");
            q.build().persistent(false).execute(&mut *c).await?;
        }
        Ok(())
    }

    /// Runs (headers) a query selecting [`Self::run_select`] returns.
    async fn headers(
        c: &mut DB::Connection,
        mut q: QueryBuilder<DB>,
    ) -> Result<Vec<Run>, StoreError> {
        // Filters make many shapes of this query: none is kept prepared.
        let rows = q.build().persistent(false).fetch_all(&mut *c).await?;
        rows.iter().map(run_from_row::<DB>).collect()
    }

    fn run_select(d: &Dialect) -> QueryBuilder<DB> {
        QueryBuilder::new(format!(
            "SELECT {RUN_COLUMNS}, {}, body, template FROM runs ",
            d.labels_text
        ))
    }

    /// Fills in the steps of `runs`, in one query per bind limit's worth.
    async fn with_steps(
        c: &mut DB::Connection,
        d: &Dialect,
        mut runs: Vec<Run>,
    ) -> Result<Vec<Run>, StoreError> {
        let mut steps: HashMap<String, Vec<Step>> = HashMap::new();
        let ids: Vec<&String> = runs.iter().map(|r| &r.id).collect();
        for chunk in ids.chunks(d.max_binds) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT run_id, idx, state, body FROM steps WHERE run_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind((*id).clone());
            }
            q.push(") ORDER BY run_id, idx");
            for row in q.build().persistent(false).fetch_all(&mut *c).await? {
                let run: String = row.try_get(0)?;
                let step = with_columns(
                    "step",
                    &row.try_get::<String, _>(3)?,
                    [
                        ("index", Value::from(row.try_get::<i64, _>(1)?)),
                        ("state", Value::from(row.try_get::<String, _>(2)?)),
                    ],
                )?;
                steps.entry(run).or_default().push(step);
            }
        }
        for r in &mut runs {
            r.steps = steps.remove(&r.id).unwrap_or_default();
        }
        Ok(runs)
    }

    pub async fn load(
        c: &mut DB::Connection,
        d: &Dialect,
        recent: u32,
    ) -> Result<Loaded, StoreError> {
        let mut q = Self::run_select(d);
        q.push(format!("WHERE state NOT IN {FINAL} ORDER BY id"));
        let mut runs = Self::headers(c, q).await?;
        let mut q = Self::run_select(d);
        q.push(format!(
            "WHERE state IN {FINAL} ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT "
        ));
        q.push_bind(i64::from(recent));
        runs.extend(Self::headers(c, q).await?);
        let runs = Self::with_steps(c, d, runs).await?;

        let leases: Vec<Lease> = sqlx::query::<DB>(
            "SELECT id, run_id, state, body FROM leases WHERE state = 'active' ORDER BY id",
        )
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(lease_from_row::<DB>)
        .collect::<Result<_, _>>()?;
        let output_ends = Self::output_ends(c, &leases).await?;
        let queues =
            sqlx::query::<DB>("SELECT name, paused, max_running FROM queues ORDER BY name")
                .fetch_all(&mut *c)
                .await?
                .iter()
                .map(|r| {
                    let max: i64 = r.try_get(2)?;
                    Ok(Queue {
                        name: r.try_get(0)?,
                        paused: r.try_get(1)?,
                        max_running: u32::try_from(max).unwrap_or(u32::MAX),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
        let seq = Self::last_event_seq(c).await?;
        Ok(Loaded {
            runs,
            workers: Self::bodies::<Worker>(c, "worker", "SELECT body FROM workers ORDER BY id")
                .await?,
            leases,
            output_ends,
            approvals: Self::bodies::<Approval>(
                c,
                "approval",
                "SELECT body FROM approvals WHERE state = 'pending' ORDER BY id",
            )
            .await?,
            queues,
            quarantines: Self::bodies::<Quarantine>(
                c,
                "quarantine",
                "SELECT body FROM quarantines ORDER BY name",
            )
            .await?,
            schedules: Self::bodies::<Schedule>(
                c,
                "schedule",
                "SELECT body FROM schedules ORDER BY name",
            )
            .await?,
            seq,
        })
    }

    async fn bodies<T: serde::de::DeserializeOwned>(
        c: &mut DB::Connection,
        what: &str,
        sql: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query::<DB>(sql).fetch_all(&mut *c).await?;
        rows.iter()
            .map(|r| parse(what, &r.try_get::<String, _>(0)?))
            .collect()
    }

    /// The one run `column` = `value` names, with its steps.
    pub async fn run_where(
        c: &mut DB::Connection,
        d: &Dialect,
        column: &'static str,
        value: &str,
    ) -> Result<Option<Run>, StoreError> {
        let mut q = Self::run_select(d);
        q.push(format!("WHERE {column} = "));
        q.push_bind(value.to_owned());
        let runs = Self::headers(c, q).await?;
        Ok(Self::with_steps(c, d, runs).await?.pop())
    }

    pub async fn run_by_key(
        c: &mut DB::Connection,
        d: &Dialect,
        submitted_by: &str,
        key: &str,
    ) -> Result<Option<Run>, StoreError> {
        let mut q = Self::run_select(d);
        q.push("WHERE submitted_by = ");
        q.push_bind(submitted_by.to_owned());
        q.push(" AND idempotency_key = ");
        q.push_bind(key.to_owned());
        let runs = Self::headers(c, q).await?;
        Ok(Self::with_steps(c, d, runs).await?.pop())
    }

    pub async fn list_runs(
        c: &mut DB::Connection,
        d: &Dialect,
        f: &RunFilter,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError> {
        let mut q = Self::run_select(d);
        q.push("WHERE 1 = 1");
        if !f.states.is_empty() {
            q.push(" AND state IN (");
            let mut list = q.separated(", ");
            for s in &f.states {
                list.push_bind(state_word(s)?);
            }
            q.push(")");
        }
        match f.name.as_deref().map(|n| (n, n.strip_suffix('*'))) {
            None => {}
            // The prefix is compared, not matched as a LIKE pattern: no
            // character of it is a wildcard, and the comparison is
            // case-sensitive in both dialects (SQLite's LIKE is not).
            Some((_, Some(prefix))) => {
                q.push(" AND substr(name, 1, length(");
                q.push_bind(prefix.to_owned());
                q.push(")) = ");
                q.push_bind(prefix.to_owned());
            }
            Some((name, None)) => {
                q.push(" AND name = ");
                q.push_bind(name.to_owned());
            }
        }
        if !f.labels.is_empty() {
            match d.labels {
                LabelMatch::JsonEach => {
                    for (k, v) in &f.labels {
                        q.push(" AND EXISTS (SELECT 1 FROM json_each(runs.labels) WHERE key = ");
                        q.push_bind(k.clone());
                        q.push(" AND value = ");
                        q.push_bind(v.clone());
                        q.push(")");
                    }
                }
                LabelMatch::Contains => {
                    q.push(" AND labels @> ");
                    q.push_bind(json(&f.labels)?);
                    q.push(d.json_cast);
                }
            }
        }
        if let Some(who) = &f.submitted_by {
            q.push(" AND submitted_by = ");
            q.push_bind(who.clone());
        }
        if let Some(since) = f.since {
            q.push(" AND created_at >= ");
            q.push_bind(since);
        }
        if let Some(until) = f.until {
            q.push(" AND created_at < ");
            q.push_bind(until);
        }
        if let Some(before) = &f.before_id {
            q.push(" AND id < ");
            q.push_bind(before.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ");
        q.push_bind(i64::from(limit));
        let runs = Self::headers(c, q).await?;
        Self::with_steps(c, d, runs).await
    }

    pub async fn get_approval(
        c: &mut DB::Connection,
        id: &str,
    ) -> Result<Option<Approval>, StoreError> {
        let mut q = QueryBuilder::<DB>::new("SELECT body FROM approvals WHERE id = ");
        q.push_bind(id.to_owned());
        let row = q.build().fetch_optional(&mut *c).await?;
        row.map(|r| parse("approval", &r.try_get::<String, _>(0)?))
            .transpose()
    }

    /// See [`super::Store::match_ids`].
    pub async fn match_ids(
        c: &mut DB::Connection,
        table: IdTable,
        text: &str,
        limit: u32,
    ) -> Result<IdMatches, StoreError> {
        let name = table.table();
        let ids = |rows: Vec<DB::Row>| {
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut q = QueryBuilder::<DB>::new(format!("SELECT id FROM {name} WHERE id = "));
        q.push_bind(text.to_owned());
        if let Some(row) = q.build().fetch_optional(&mut *c).await? {
            return Ok(IdMatches {
                ids: vec![row.try_get(0)?],
                bounded: false,
            });
        }
        let limit = i64::from(limit.max(1));
        let mut found = std::collections::BTreeSet::new();
        // A prefix: a range on the primary key's index. The range is the
        // prefix's exactly in byte order (SQLite, and PostgreSQL's C
        // collation); the filter keeps that true under any other.
        let mut q = QueryBuilder::<DB>::new(format!("SELECT id FROM {name} WHERE id >= "));
        q.push_bind(text.to_owned());
        if let Some(end) = prefix_end(text) {
            q.push(" AND id < ");
            q.push_bind(end);
        }
        q.push(" ORDER BY id LIMIT ");
        q.push_bind(limit);
        let rows = q.build().fetch_all(&mut *c).await?;
        found.extend(ids(rows)?.into_iter().filter(|id| id.starts_with(text)));
        // A suffix: no index helps, so among the newest ids only.
        let chars = text.chars().count();
        let mut q = QueryBuilder::<DB>::new(format!(
            "SELECT id FROM (SELECT id FROM {name} ORDER BY id DESC LIMIT {SUFFIX_SCAN}) AS newest \
             WHERE substr(id, length(id) - {chars} + 1) = "
        ));
        q.push_bind(text.to_owned());
        q.push(" LIMIT ");
        q.push_bind(limit);
        let rows = q.build().fetch_all(&mut *c).await?;
        found.extend(ids(rows)?);
        let bounded = if found.is_empty() {
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT id FROM {name} ORDER BY id DESC LIMIT 1 OFFSET {SUFFIX_SCAN}"
            ));
            q.build().fetch_optional(&mut *c).await?.is_some()
        } else {
            false
        };
        Ok(IdMatches {
            ids: found.into_iter().collect(),
            bounded,
        })
    }

    /// Decided approvals, newest first.
    pub async fn decided_approvals(
        c: &mut DB::Connection,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT body FROM approvals WHERE state <> 'pending' ORDER BY id DESC LIMIT ",
        );
        q.push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *c).await?;
        rows.iter()
            .map(|r| parse("approval", &r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn first_kept_seq(c: &mut DB::Connection) -> Result<u64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar::<DB, Option<i64>>("SELECT MIN(seq) FROM events")
            .fetch_one(&mut *c)
            .await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Final runs first, each table's share in a statement of its own, so
    /// no transaction holds the database for long.
    pub async fn prune(pool: &sqlx::Pool<DB>, p: &Prune) -> Result<Pruned, StoreError> {
        let batch = i64::from(p.batch);
        let mut out = Pruned::default();
        let mut t = pool.begin().await?;
        Self::prune_runs(&mut *t, p.runs_before, batch, &mut out).await?;
        t.commit().await?;

        let mut c = pool.acquire().await?;
        // The oldest `batch` events by seq, those of them older than the
        // cutoff: `at` grows with `seq`, so this reads no more than a batch
        // of rows and needs no index on `at`. (An event stamped earlier
        // than one before it, after a clock step back on failover, waits
        // until that one is old enough too.) The last row stays, whatever
        // its age: it carries the seq the next event follows. A row may
        // hold several events (see `super::events`): they are counted.
        let mut q = QueryBuilder::<DB>::new(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ",
        );
        q.push_bind(batch);
        q.push(") AND at < ");
        q.push_bind(p.events_before);
        q.push(" AND seq < (SELECT MAX(seq) FROM events) RETURNING seq, last_seq");
        for row in q.build().fetch_all(&mut *c).await? {
            let seq: i64 = row.try_get(0)?;
            let last: Option<i64> = row.try_get(1)?;
            out.events += u64::try_from(last.unwrap_or(seq) - seq + 1).unwrap_or(1);
        }

        let mut q = QueryBuilder::<DB>::new(
            "DELETE FROM output WHERE id IN (SELECT id FROM output WHERE at < ",
        );
        q.push_bind(p.output_before);
        q.push(" ORDER BY at LIMIT ");
        q.push_bind(batch);
        q.push(")");
        out.output += q.build().execute(&mut *c).await?.rows();

        let mut q = QueryBuilder::<DB>::new(
            "DELETE FROM workers WHERE id IN (SELECT id FROM workers \
             WHERE state IN ('offline', 'stopped') AND last_heartbeat_at < ",
        );
        q.push_bind(p.workers_before);
        q.push(" ORDER BY last_heartbeat_at LIMIT ");
        q.push_bind(batch);
        q.push(")");
        out.workers = q.build().execute(&mut *c).await?.rows();
        out.notifications = Self::prune_outbox(&mut *c, p.events_before, batch).await?;
        Ok(out)
    }

    /// Deletes up to `batch` rows of each table belonging to final runs
    /// finished before `before`, then those runs nothing belongs to any
    /// more: a run with more steps or output than one batch goes over
    /// several calls, and never leaves rows behind without their run.
    async fn prune_runs(
        c: &mut DB::Connection,
        before: i64,
        batch: i64,
        out: &mut Pruned,
    ) -> Result<(), StoreError> {
        // The oldest prunable runs: final, finished before the cutoff,
        // holding neither an active lease nor a pending approval (which a
        // final run should never hold, but if one does it stays).
        let mut q = QueryBuilder::<DB>::new(format!(
            "SELECT id FROM runs WHERE state IN {FINAL} \
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.run_id = runs.id AND l.state = 'active') \
             AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.state = 'pending') \
             AND finished_at < "
        ));
        q.push_bind(before);
        q.push(" ORDER BY finished_at LIMIT ");
        q.push_bind(batch);
        let ids = q
            .build()
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Ok(());
        }
        let children: [(&str, &str, &str, &mut u64); 4] = [
            ("steps", "run_id, idx", "", &mut out.steps),
            (
                "approvals",
                "id",
                " AND state <> 'pending'",
                &mut out.approvals,
            ),
            ("leases", "id", " AND state <> 'active'", &mut out.leases),
            ("output", "id", "", &mut out.output),
        ];
        for (table, key, guard, count) in children {
            let mut q = QueryBuilder::<DB>::new(format!(
                "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE run_id IN ("
            ));
            push_list(&mut q, &ids);
            q.push(format!("){guard} LIMIT "));
            q.push_bind(batch);
            q.push(")");
            *count += q.build().persistent(false).execute(&mut *c).await?.rows();
        }
        let mut q = QueryBuilder::<DB>::new("DELETE FROM runs WHERE id IN (");
        push_list(&mut q, &ids);
        q.push(
            ") AND NOT EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.id) \
             AND NOT EXISTS (SELECT 1 FROM approvals WHERE approvals.run_id = runs.id) \
             AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.run_id = runs.id) \
             AND NOT EXISTS (SELECT 1 FROM output WHERE output.run_id = runs.id)",
        );
        out.runs = q.build().persistent(false).execute(&mut *c).await?.rows();
        Ok(())
    }
}

/// The most rows one insert statement holds.
const MAX_ROWS: usize = 128;

/// The largest power of two not above `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

fn push_list<DB>(q: &mut QueryBuilder<DB>, values: &[String])
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v.clone());
    }
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
