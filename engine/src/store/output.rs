//! Reads of steps' output by position, for both dialects: what a follower
//! of a run's output reads before it goes live, and where each live
//! attempt's output ends, so that the offsets go on after a restart.

use opsdeck_proto::v1 as pb;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::StoreError;
use super::sql::{Affected, Sql};
use crate::domain::Lease;

/// A place in a run's output: output is ordered by step, then attempt,
/// then byte offset within the attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutputPos {
    pub step_index: u32,
    pub attempt: u32,
    pub offset: u64,
}

impl OutputPos {
    /// Where a chunk starts.
    pub fn of(chunk: &pb::OutputChunk) -> Self {
        Self {
            step_index: chunk.step_index,
            attempt: chunk.attempt,
            offset: chunk.offset,
        }
    }

    /// Just after a chunk's last byte.
    pub fn after(chunk: &pb::OutputChunk) -> Self {
        Self {
            offset: chunk.offset + chunk.data.len() as u64,
            ..Self::of(chunk)
        }
    }

    /// The part of `chunk` at or after this position, if any: a chunk this
    /// position falls inside is cut to start here.
    pub fn keep(&self, mut chunk: pb::OutputChunk) -> Option<pb::OutputChunk> {
        if Self::after(&chunk) <= *self {
            return None;
        }
        let start = Self::of(&chunk);
        if start < *self {
            // Same step and attempt: the position is inside the chunk.
            let skip = (self.offset - chunk.offset) as usize;
            chunk.data.drain(..skip);
            chunk.offset = self.offset;
        }
        Some(chunk)
    }
}

/// Which output [`super::Store::output_from`] reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputQuery {
    pub run_id: String,
    /// Only this step's.
    pub step: Option<u32>,
    /// Only this attempt's (of `step`).
    pub attempt: Option<u32>,
    /// From here on.
    pub from: OutputPos,
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
    /// See [`super::Store::output_from`]: by the `output_offset` index.
    pub async fn output_from(
        c: &mut DB::Connection,
        q: &OutputQuery,
        limit: u32,
    ) -> Result<Vec<pb::OutputChunk>, StoreError> {
        let from = q.from;
        let mut b = QueryBuilder::<DB>::new(
            "SELECT step_index, attempt, stream, at, truncated, data, byte_offset FROM output WHERE run_id = ",
        );
        b.push_bind(q.run_id.clone());
        if let Some(step) = q.step {
            b.push(" AND step_index = ");
            b.push_bind(i64::from(step));
        }
        if let Some(attempt) = q.attempt {
            b.push(" AND attempt = ");
            b.push_bind(i64::from(attempt));
        }
        // After `from` in (step, attempt, end of chunk) order.
        b.push(" AND (step_index > ");
        b.push_bind(i64::from(from.step_index));
        b.push(" OR (step_index = ");
        b.push_bind(i64::from(from.step_index));
        b.push(" AND attempt > ");
        b.push_bind(i64::from(from.attempt));
        b.push(") OR (step_index = ");
        b.push_bind(i64::from(from.step_index));
        b.push(" AND attempt = ");
        b.push_bind(i64::from(from.attempt));
        b.push(" AND byte_offset + LENGTH(data) > ");
        b.push_bind(from.offset as i64);
        b.push(")) ORDER BY step_index, attempt, byte_offset LIMIT ");
        b.push_bind(i64::from(limit));
        let rows = b.build().fetch_all(&mut *c).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let chunk = pb::OutputChunk {
                run_id: q.run_id.clone(),
                step_index: r.try_get::<i64, _>(0)? as u32,
                attempt: r.try_get::<i64, _>(1)? as u32,
                stream: r.try_get(2)?,
                at_ms: r.try_get(3)?,
                truncated: r.try_get(4)?,
                data: r.try_get(5)?,
                offset: r.try_get::<i64, _>(6)? as u64,
            };
            out.extend(from.keep(chunk));
        }
        Ok(out)
    }

    /// Where each lease's attempt's stored output ends, by lease id.
    pub async fn output_ends(
        c: &mut DB::Connection,
        leases: &[Lease],
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let mut ends = std::collections::HashMap::new();
        for l in leases {
            let mut b = QueryBuilder::<DB>::new(
                "SELECT MAX(byte_offset + LENGTH(data)) FROM output WHERE run_id = ",
            );
            b.push_bind(l.run_id.clone());
            b.push(" AND step_index = ");
            b.push_bind(i64::from(l.step_index));
            b.push(" AND attempt = ");
            b.push_bind(i64::from(l.attempt));
            let end: Option<i64> = b.build().fetch_one(&mut *c).await?.try_get(0)?;
            if let Some(end) = end {
                ends.insert(l.id.clone(), end as u64);
            }
        }
        Ok(ends)
    }
}
