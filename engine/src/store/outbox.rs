//! The notification outbox: rows written in the same commit as the event
//! they announce, then delivered (or given up on) by the leader's delivery
//! task, which reads the due ones and records each attempt.

use std::str::FromStr;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::StoreError;
use super::sql::{Affected, Sql};
use crate::domain::Millis;

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationState {
    /// Not delivered yet; tried again at `next_at`.
    Pending,
    Delivered,
    /// Given up on after the configured time.
    Failed,
}

impl NotificationState {
    pub fn word(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for NotificationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(format!(
                "{other:?} is not a notification state; write pending, delivered or failed"
            )),
        }
    }
}

/// One notification of one event to one notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The idempotency id: `<event seq>-<notifier>`.
    pub id: String,
    pub notifier: String,
    pub event_seq: u64,
    pub event_kind: String,
    pub state: NotificationState,
    pub attempts: u32,
    pub created_at: Millis,
    /// When the next attempt is due (pending ones).
    pub next_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// Why the last attempt failed; empty when none did.
    pub last_error: String,
    /// The JSON body delivered.
    pub payload: String,
}

impl Notification {
    /// A new pending notification, due at once.
    pub fn new(
        event_seq: u64,
        event_kind: &str,
        notifier: &str,
        at: Millis,
        payload: String,
    ) -> Self {
        Self {
            id: Self::id_of(event_seq, notifier),
            notifier: notifier.to_owned(),
            event_seq,
            event_kind: event_kind.to_owned(),
            state: NotificationState::Pending,
            attempts: 0,
            created_at: at,
            next_at: at,
            updated_at: at,
            last_error: String::new(),
            payload,
        }
    }

    /// The idempotency id of an event's notification to a notifier.
    pub fn id_of(event_seq: u64, notifier: &str) -> String {
        format!("{event_seq}-{notifier}")
    }
}

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub at: Millis,
    /// `None`: delivered. `Some((error, next_at))`: failed, to be tried
    /// again at `next_at`.
    pub retry: Option<(String, Millis)>,
}

/// A notification given up on, written in the commit of the event that
/// says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenUp {
    pub id: String,
    pub at: Millis,
    pub last_error: String,
}

const COLUMNS: &str = "id, notifier, event_seq, event_kind, state, attempts, created_at, next_at, \
                       updated_at, last_error, payload";

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
    /// Writes a batch's new notifications (a row already there stays as
    /// it is) and its given-up ones, inside the caller's transaction.
    pub async fn commit_outbox(
        c: &mut DB::Connection,
        new: &[Notification],
        given_up: &[GivenUp],
    ) -> Result<(), StoreError> {
        for n in new {
            let mut q = QueryBuilder::<DB>::new(format!("INSERT INTO notify_outbox ({COLUMNS}) "));
            q.push_values([n], |mut s, n| {
                s.push_bind(n.id.clone())
                    .push_bind(n.notifier.clone())
                    .push_bind(n.event_seq as i64)
                    .push_bind(n.event_kind.clone())
                    .push_bind(n.state.word().to_owned())
                    .push_bind(i64::from(n.attempts))
                    .push_bind(n.created_at)
                    .push_bind(n.next_at)
                    .push_bind(n.updated_at)
                    .push_bind(n.last_error.clone())
                    .push_bind(n.payload.clone());
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *c).await?;
        }
        for g in given_up {
            let mut q =
                QueryBuilder::<DB>::new("UPDATE notify_outbox SET state = 'failed', updated_at = ");
            q.push_bind(g.at);
            q.push(", last_error = ");
            q.push_bind(g.last_error.clone());
            q.push(" WHERE state = 'pending' AND id = ");
            q.push_bind(g.id.clone());
            q.build().execute(&mut *c).await?;
        }
        Ok(())
    }

    /// Pending notifications due at `now`, the longest due first.
    pub async fn due_notifications(
        c: &mut DB::Connection,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut q = QueryBuilder::<DB>::new(format!(
            "SELECT {COLUMNS} FROM notify_outbox WHERE state = 'pending' AND next_at <= "
        ));
        q.push_bind(now);
        q.push(" ORDER BY next_at, event_seq, id LIMIT ");
        q.push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *c).await?;
        rows.iter().map(notification_from_row::<DB>).collect()
    }

    /// Records an attempt on a pending notification; false when it is not
    /// pending (any more).
    pub async fn notification_attempted(
        c: &mut DB::Connection,
        id: &str,
        a: &Attempt,
    ) -> Result<bool, StoreError> {
        let mut q = QueryBuilder::<DB>::new(
            "UPDATE notify_outbox SET attempts = attempts + 1, updated_at = ",
        );
        q.push_bind(a.at);
        match &a.retry {
            None => {
                q.push(", state = 'delivered', last_error = ''");
            }
            Some((error, next_at)) => {
                q.push(", last_error = ");
                q.push_bind(error.clone());
                q.push(", next_at = ");
                q.push_bind(*next_at);
            }
        }
        q.push(" WHERE state = 'pending' AND id = ");
        q.push_bind(id.to_owned());
        Ok(q.build().execute(&mut *c).await?.rows() == 1)
    }

    /// Notifications in any of `states` (every state when empty), newest
    /// event first.
    pub async fn list_notifications(
        c: &mut DB::Connection,
        states: &[NotificationState],
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut q = QueryBuilder::<DB>::new(format!("SELECT {COLUMNS} FROM notify_outbox"));
        if !states.is_empty() {
            q.push(" WHERE state IN (");
            let mut list = q.separated(", ");
            for s in states {
                list.push_bind(s.word().to_owned());
            }
            q.push(")");
        }
        q.push(" ORDER BY event_seq DESC, id LIMIT ");
        q.push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *c).await?;
        rows.iter().map(notification_from_row::<DB>).collect()
    }

    /// How many notifications are pending.
    pub async fn pending_notifications(c: &mut DB::Connection) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar::<DB, i64>(
            "SELECT COUNT(*) FROM notify_outbox WHERE state = 'pending'",
        )
        .fetch_one(&mut *c)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// Deletes up to `batch` delivered or given-up notifications last
    /// changed before `before`; pending ones stay, however old.
    pub async fn prune_outbox(
        c: &mut DB::Connection,
        before: Millis,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<DB>::new(
            "DELETE FROM notify_outbox WHERE id IN (SELECT id FROM notify_outbox \
             WHERE state IN ('delivered', 'failed') AND updated_at < ",
        );
        q.push_bind(before);
        q.push(" ORDER BY updated_at LIMIT ");
        q.push_bind(batch);
        q.push(")");
        Ok(q.build().execute(&mut *c).await?.rows())
    }
}

fn notification_from_row<DB>(r: &DB::Row) -> Result<Notification, StoreError>
where
    DB: Database,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let state: String = r.try_get(4)?;
    Ok(Notification {
        id: r.try_get(0)?,
        notifier: r.try_get(1)?,
        event_seq: r.try_get::<i64, _>(2)?.max(0) as u64,
        event_kind: r.try_get(3)?,
        state: state.parse().map_err(|why| StoreError::Corrupt {
            what: "notification".into(),
            why,
        })?,
        attempts: u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(u32::MAX),
        created_at: r.try_get(6)?,
        next_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        last_error: r.try_get(9)?,
        payload: r.try_get(10)?,
    })
}
