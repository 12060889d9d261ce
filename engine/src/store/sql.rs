//! The body both dialects share: every statement of `commit`, `load`, the
//! run reads and `prune`, written once over [`sqlx::Database`] with
//! [`QueryBuilder`] writing the placeholders (`?` or `$n`). What differs
//! between SQLite and PostgreSQL is in a [`Dialect`].

use std::collections::HashMap;
use std::marker::PhantomData;

use serde_json::Value;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::codec::{json, parse, state_word, with_columns};
use super::rows::{lease_from_row, prefix_end, run_from_row};
use super::{IdMatches, IdTable, Loaded, Prune, Pruned, RunFilter, SUFFIX_SCAN, StoreError};
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
