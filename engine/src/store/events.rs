//! The events table, for both dialects.
//!
//! Consecutive events of one run in one commit share a row: a step's
//! result alone makes four (running, lease released, step and run
//! finished), and a row each cost a key, the run's id, an entry in the
//! run's index and the row's own overhead four times over. A row of one
//! event keeps the layout the table always had (`last_seq` null; the kind
//! and actor in their columns); a row of several holds the seqs from `seq`
//! to `last_seq`, its body their events one after the other, each
//! length-delimited, each with its own kind and actor.
//!
//! Reading by seq: a row starts at `seq`, so the row that holds a given
//! seq is the last one starting at or before it. Every read starts from
//! that row and drops the events outside the range asked for; at most the
//! rows at the two ends give fewer events than they hold, so one row more
//! than the limit always holds enough.

use opsdeck_proto::v1 as pb;
use prost::Message;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::StoreError;
use super::codec::{event_with_columns, restore_ids, stored_event};
use super::sql::{Affected, Sql};

/// The most events one row holds.
const MAX_GROUP: usize = 64;

/// The columns every read selects, in the order [`events_from_rows`] reads.
const COLUMNS: &str = "SELECT seq, at, kind, run_id, actor, body, last_seq FROM events";

/// A row to write.
pub(super) struct EventRow<'a> {
    pub seq: i64,
    /// `None` for a row of one event.
    pub last_seq: Option<i64>,
    pub at: i64,
    pub kind: &'a str,
    pub run_id: Option<&'a str>,
    pub actor: &'a str,
    pub body: Vec<u8>,
}

/// A commit's events as rows: runs of consecutive events of one run (same
/// instant, seqs one after another) share one.
pub(super) fn event_rows(events: &[pb::Event]) -> Vec<EventRow<'_>> {
    let mut rows = Vec::new();
    let mut rest = events;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .zip(rest.iter().skip(1))
            .take_while(|(a, b)| {
                b.seq == a.seq + 1 && b.run_id == first.run_id && b.at_ms == first.at_ms
            })
            .count()
            .min(MAX_GROUP - 1)
            + 1;
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let run_id = (!first.run_id.is_empty()).then_some(first.run_id.as_str());
        let (last_seq, body) = if let [only] = group {
            (None, super::codec::event_body(only))
        } else {
            let mut body = Vec::new();
            for e in group {
                let stored = stored_event(e, true);
                // Writing to a Vec cannot fail.
                let _ = stored.encode_length_delimited(&mut body);
            }
            (group.last().map(|e| e.seq as i64), body)
        };
        rows.push(EventRow {
            seq: first.seq as i64,
            last_seq,
            at: first.at_ms,
            kind: &first.kind,
            run_id,
            actor: &first.actor,
            body,
        });
    }
    rows
}

/// Rows read back as events, in seq order (the rows' order), keeping
/// those `keep` says of their seq.
pub(super) fn events_from_rows<DB>(
    rows: &[DB::Row],
    keep: impl Fn(u64) -> bool,
) -> Result<Vec<pb::Event>, StoreError>
where
    DB: Database,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let mut out = Vec::new();
    for r in rows {
        let seq: i64 = r.try_get(0)?;
        let at: i64 = r.try_get(1)?;
        let body: Vec<u8> = r.try_get(5)?;
        let run_id: Option<String> = r.try_get(3)?;
        let Some(last_seq) = r.try_get::<Option<i64>, _>(6)? else {
            if keep(seq as u64) {
                out.push(event_with_columns(
                    &body,
                    seq,
                    at,
                    r.try_get(2)?,
                    run_id,
                    r.try_get(4)?,
                )?);
            }
            continue;
        };
        let corrupt = |why: String| StoreError::Corrupt {
            what: format!("events {seq} to {last_seq}"),
            why,
        };
        let mut buf = body.as_slice();
        let mut next = seq;
        while !buf.is_empty() {
            let mut e =
                pb::Event::decode_length_delimited(&mut buf).map_err(|e| corrupt(e.to_string()))?;
            e.seq = next as u64;
            next += 1;
            if !keep(e.seq) {
                continue;
            }
            e.at_ms = at;
            e.run_id = run_id.clone().unwrap_or_default();
            restore_ids(&mut e);
            out.push(e);
        }
        if next != last_seq + 1 {
            return Err(corrupt(format!(
                "the row holds {} events, not {}",
                next - seq,
                last_seq - seq + 1
            )));
        }
    }
    Ok(out)
}

impl<DB> Sql<DB>
where
    DB: Database + sqlx::database::HasStatementCache,
    DB::Arguments: IntoArguments<DB>,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The last event's seq (0 for none).
    pub async fn last_event_seq(c: &mut DB::Connection) -> Result<u64, StoreError> {
        let row = sqlx::query::<DB>("SELECT seq, last_seq FROM events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *c)
            .await?;
        Ok(match row {
            Some(r) => {
                let seq: i64 = r.try_get(0)?;
                let last: Option<i64> = r.try_get(1)?;
                last.unwrap_or(seq).max(seq) as u64
            }
            None => 0,
        })
    }

    /// Up to `limit` events after `after`, oldest first (of one run, or all).
    pub async fn events_after(
        c: &mut DB::Connection,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut q = Self::rows_from(after, run_id);
        q.push(" ORDER BY seq LIMIT ");
        q.push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&mut *c).await?;
        let mut events = events_from_rows::<DB>(&rows, |seq| seq > after)?;
        events.truncate(limit as usize);
        Ok(events)
    }

    /// Up to `limit` events before `before` and after `after`, newest first
    /// (of one run, or all).
    pub async fn events_before(
        c: &mut DB::Connection,
        before: u64,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut q = Self::rows_from(after, run_id);
        q.push(" AND seq < ");
        q.push_bind(i64::try_from(before).unwrap_or(i64::MAX));
        q.push(" ORDER BY seq DESC LIMIT ");
        q.push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&mut *c).await?;
        // Newest row first; each row's events oldest first: turned around.
        let mut events = Vec::new();
        for row in rows.iter() {
            let mut of_row =
                events_from_rows::<DB>(std::slice::from_ref(row), |s| s > after && s < before)?;
            of_row.reverse();
            events.extend(of_row);
        }
        events.truncate(limit as usize);
        Ok(events)
    }

    /// Every event after `after` up to `until`, oldest first.
    pub async fn events_between(
        c: &mut DB::Connection,
        after: u64,
        until: u64,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut q = Self::rows_from(after, None);
        q.push(" AND seq <= ");
        q.push_bind(i64::try_from(until).unwrap_or(i64::MAX));
        q.push(" ORDER BY seq");
        let rows = q.build().fetch_all(&mut *c).await?;
        events_from_rows::<DB>(&rows, |seq| seq > after && seq <= until)
    }

    /// The rows from the one holding `seq` on (of one run, or all): a
    /// query to add more conditions and the order to.
    fn rows_from(seq: u64, run_id: Option<&str>) -> QueryBuilder<DB> {
        let mut q = QueryBuilder::<DB>::new(COLUMNS);
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        q.push(" WHERE seq >= COALESCE((SELECT MAX(seq) FROM events WHERE seq <= ");
        q.push_bind(seq);
        if let Some(run) = run_id {
            q.push(" AND run_id = ");
            q.push_bind(run.to_owned());
        }
        q.push("), 0)");
        if let Some(run) = run_id {
            q.push(" AND run_id = ");
            q.push_bind(run.to_owned());
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, run: &str, kind: &str) -> pb::Event {
        pb::Event {
            seq,
            at_ms: 1_000,
            kind: kind.into(),
            actor: "worker:w1".into(),
            run_id: run.into(),
            message: format!("event {seq}"),
            ..Default::default()
        }
    }

    #[test]
    fn consecutive_events_of_a_run_share_a_row() {
        let events = vec![
            ev(1, "r1", "lease.granted"),
            ev(2, "r2", "lease.granted"),
            ev(3, "r1", "step.running"),
            ev(4, "r1", "lease.released"),
            ev(5, "r1", "run.succeeded"),
            ev(6, "", "worker.registered"),
        ];
        let rows = event_rows(&events);
        let spans: Vec<(i64, Option<i64>)> = rows.iter().map(|r| (r.seq, r.last_seq)).collect();
        assert_eq!(
            spans,
            vec![(1, None), (2, None), (3, Some(5)), (6, None)],
            "one row per run of consecutive events of one run"
        );
        assert_eq!(rows[2].run_id, Some("r1"));
        assert_eq!(rows[3].run_id, None);
    }

    #[test]
    fn a_gap_in_seqs_or_a_new_instant_starts_a_row() {
        let mut later = ev(2, "r1", "step.running");
        later.at_ms = 2_000;
        let events = [ev(1, "r1", "a"), later, ev(4, "r1", "b")];
        let rows = event_rows(&events);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn a_long_run_of_events_is_cut_into_rows_of_at_most_the_cap() {
        let events: Vec<_> = (1..=(MAX_GROUP as u64 * 2 + 1))
            .map(|s| ev(s, "r1", "step.output"))
            .collect();
        let rows = event_rows(&events);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].last_seq, Some(MAX_GROUP as i64));
        assert_eq!(rows[2].last_seq, None, "the one left over is a row of one");
    }
}
