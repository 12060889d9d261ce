//! Persistence behind one trait. The core writes a [`Batch`] per group
//! commit and reads its live set back with [`Store::load`] at start;
//! history (finished runs, old events, output) stays here and is read a
//! page at a time when asked, and pruned by [`Store::prune`].
//!
//! Objects are stored as JSON beside the columns queries need, so a new
//! field needs no migration and both dialects stay simple. A run's header
//! and each of its steps are rows of their own: a step's change rewrites
//! that step, not the run. Consecutive events of one run in one commit
//! share a row (see `events.rs`). A commit is encoded first ([`Encoded`], no
//! database needed) and then written ([`Store::write`]).

mod codec;
#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod conformance_disk;
#[cfg(test)]
mod conformance_events;
#[cfg(test)]
mod conformance_outbox;
#[cfg(test)]
mod conformance_prune;
#[cfg(test)]
pub(crate) mod conformance_runs;
mod events;
mod outbox;
mod output;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod write;

pub use outbox::{Attempt, GivenUp, Notification, NotificationState};
pub use output::{OutputPos, OutputQuery};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use write::Encoded;

use opsdeck_proto::v1 as pb;
use tokio::sync::{oneshot, watch};

use crate::domain::schedule::Schedule;
use crate::domain::{Approval, Lease, Millis, Quarantine, Queue, Run, RunState, Step, Worker};

/// What the engine loads from its store at start: the live set, never the
/// whole history, so that a start costs the same after a year as on the
/// first day.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Runs not final yet, with their steps; then the most recently
    /// finished ones (newest first, at most the `recent` asked for) for the
    /// console's cache.
    pub runs: Vec<Run>,
    /// Every stored worker (retention prunes long-gone ones).
    pub workers: Vec<Worker>,
    /// Active leases.
    pub leases: Vec<Lease>,
    /// Where each active lease's attempt's stored output ends (bytes), by
    /// lease id; absent for none.
    pub output_ends: std::collections::HashMap<String, u64>,
    /// Pending approvals.
    pub approvals: Vec<Approval>,
    pub queues: Vec<Queue>,
    pub quarantines: Vec<Quarantine>,
    /// Every schedule, paused or not.
    pub schedules: Vec<Schedule>,
    /// The last event's seq (0 for none). Pruning never deletes the last
    /// event, so this never goes back.
    pub seq: u64,
}

/// Which runs [`Store::list_runs`] returns; every field narrows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Any of these states; empty: every state.
    pub states: Vec<RunState>,
    /// The name, exactly, or a prefix when it ends in `*` (`deploy-*`).
    pub name: Option<String>,
    /// Runs carrying every one of these labels.
    pub labels: std::collections::BTreeMap<String, String>,
    pub submitted_by: Option<String>,
    /// Created at or after this time.
    pub since: Option<Millis>,
    /// Created before this time.
    pub until: Option<Millis>,
    /// The paging cursor: only runs whose id sorts before this one (ids are
    /// ULIDs, so older runs).
    pub before_id: Option<String>,
}

impl RunFilter {
    /// Whether `run` is one [`Store::list_runs`] would return for this
    /// filter: the same rules, for runs the engine holds in memory.
    pub fn matches(&self, run: &Run) -> bool {
        let name = match self.name.as_deref().map(|n| (n, n.strip_suffix('*'))) {
            None => true,
            Some((_, Some(prefix))) => run.name.starts_with(prefix),
            Some((name, None)) => run.name == name,
        };
        name && (self.states.is_empty() || self.states.contains(&run.state))
            && self
                .labels
                .iter()
                .all(|(k, v)| run.labels.get(k) == Some(v))
            && self
                .submitted_by
                .as_ref()
                .is_none_or(|by| run.submitted_by == *by)
            && self.since.is_none_or(|since| run.created_at >= since)
            && self.until.is_none_or(|until| run.created_at < until)
            && self
                .before_id
                .as_ref()
                .is_none_or(|before| run.id < *before)
    }
}

/// The tables whose objects people name by id, for [`Store::match_ids`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTable {
    Runs,
    Approvals,
    Leases,
    Workers,
}

impl IdTable {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Approvals => "approvals",
            Self::Leases => "leases",
            Self::Workers => "workers",
        }
    }
}

/// The newest ids a suffix is looked for among: a suffix cannot use the
/// index on the id column, so its scan is bounded.
pub const SUFFIX_SCAN: u32 = 100_000;

/// What [`Store::match_ids`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMatches {
    /// The id itself when it is one, else the ids that start or end with
    /// the text, sorted, at most the limit asked for from each side.
    pub ids: Vec<String>,
    /// The table holds more than [`SUFFIX_SCAN`] ids, so older ones were
    /// not looked at for a suffix.
    pub bounded: bool,
}

/// What one call of [`Store::prune`] may delete: rows older than each
/// cutoff, at most `batch` rows of each table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prune {
    /// Final runs finished before this, with their steps, approvals, leases
    /// and output. Runs not final are never pruned, however old.
    pub runs_before: Millis,
    /// Events recorded before this.
    pub events_before: Millis,
    /// Output chunks written before this.
    pub output_before: Millis,
    /// Workers offline or stopped whose last heartbeat is before this.
    pub workers_before: Millis,
    pub batch: u32,
}

/// Rows one [`Store::prune`] call deleted, per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub steps: u64,
    pub approvals: u64,
    pub leases: u64,
    pub events: u64,
    pub output: u64,
    pub workers: u64,
    /// Delivered and given-up notifications (as old as events retention keeps).
    pub notifications: u64,
}

impl Pruned {
    /// Each table's count, by the table's name.
    pub fn tables(&self) -> [(&'static str, u64); 8] {
        [
            ("runs", self.runs),
            ("steps", self.steps),
            ("approvals", self.approvals),
            ("leases", self.leases),
            ("events", self.events),
            ("output", self.output),
            ("workers", self.workers),
            ("notify_outbox", self.notifications),
        ]
    }

    pub fn total(&self) -> u64 {
        self.tables().iter().map(|(_, n)| n).sum()
    }
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, other: Self) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.approvals += other.approvals;
        self.leases += other.leases;
        self.events += other.events;
        self.output += other.output;
        self.workers += other.workers;
        self.notifications += other.notifications;
    }
}

/// Everything one group commit writes, in one transaction, each table in a
/// few multi-row statements.
#[derive(Debug, Default)]
pub struct Batch {
    /// Runs made or whose header changed. Their `steps` are empty: the
    /// steps that changed (all of a new run's) are in `steps`. (A run
    /// given with its steps has them written too, before `steps`.)
    pub runs: Vec<Run>,
    /// Steps made or changed, with their run's id.
    pub steps: Vec<(String, Step)>,
    pub workers: Vec<Worker>,
    /// Workers an admin forgot (`opsdeck workers forget`), deleted.
    pub forgotten_workers: Vec<String>,
    pub leases: Vec<Lease>,
    pub approvals: Vec<Approval>,
    pub queues: Vec<Queue>,
    pub events: Vec<pb::Event>,
    pub outputs: Vec<pb::OutputChunk>,
    /// Quarantines set (`Some`) or cleared (`None`), by run name.
    pub quarantines: Vec<(String, Option<Quarantine>)>,
    /// Notifications of this batch's events, pending.
    pub notifications: Vec<Notification>,
    /// Notifications given up on (their `notification.failed` event is
    /// among `events`).
    pub given_up: Vec<GivenUp>,
    /// Schedules added or changed (`Some`, a fire among the changes) or
    /// removed (`None`), by name.
    pub schedules: Vec<(String, Option<Schedule>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable ({what}): {why}")]
    Corrupt { what: String, why: String },
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error(
        "this engine no longer leads: it led with epoch {mine}, and another engine now leads with epoch {now}; nothing was written"
    )]
    Fenced { mine: u64, now: u64 },
    /// The task writing a commit ended without an answer (it panicked): the
    /// commit may or may not have been written.
    #[error("the commit's task failed ({0}); whether it was written is unknown")]
    CommitTask(String),
    /// A batch builds on the one committed before it; that one was not
    /// written, so this one was not either.
    #[error("the commit before this one failed; this one was not written")]
    EarlierCommitFailed,
}

/// A write's place among the commits in flight (the core keeps two): what
/// it waits for of the commit before it, and what it tells the next.
#[derive(Default)]
pub struct Turn {
    /// The commit before: its statements ran; it was written (or not).
    before: Option<(watch::Receiver<bool>, oneshot::Receiver<bool>)>,
    /// Tells the core and the next commit this one's statements ran.
    ran: Option<watch::Sender<bool>>,
}

impl Turn {
    /// A write after `before` (the commit in flight, if any: the ends of
    /// its `ran` and `written`), telling the next on `ran`.
    pub fn new(
        before: Option<(watch::Receiver<bool>, oneshot::Receiver<bool>)>,
        ran: watch::Sender<bool>,
    ) -> Self {
        Self {
            before,
            ran: Some(ran),
        }
    }

    /// Waits until the commit before ran its statements (or ended): then
    /// it only commits, and holds no lock it could wait for on this
    /// write's account.
    pub async fn before_ran(&mut self) {
        if let Some((ran, _)) = &mut self.before {
            // An error is a commit that ended without saying so.
            let _ = ran.wait_for(|ran| *ran).await;
        }
    }

    /// Says this write's statements ran: only its commit is left.
    pub fn ran(&mut self) {
        if let Some(ran) = self.ran.take() {
            let _ = ran.send(true);
        }
    }

    /// Waits until the commit before was written; an error if it was not
    /// (a sender dropped unanswered is a panicked commit).
    pub async fn before_written(&mut self) -> Result<(), StoreError> {
        match self.before.take() {
            Some((_, written)) => match written.await {
                Ok(true) => Ok(()),
                _ => Err(StoreError::EarlierCommitFailed),
            },
            None => Ok(()),
        }
    }
}

/// Who leads the engines that share a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// This engine leads; its commits are fenced by `epoch`.
    Leader { epoch: u64 },
    /// Another engine leads with `epoch`; `address` is where its clients
    /// reach it, `None` when its lead has lapsed and nobody took it yet.
    Follower { epoch: u64, address: Option<String> },
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The live set the core rebuilds its state from, plus up to `recent`
    /// of the most recently finished runs.
    async fn load(&self, recent: u32) -> Result<Loaded, StoreError>;
    /// Writes a batch atomically.
    async fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write(Encoded::new(batch)?, Turn::default()).await
    }
    /// Writes a batch encoded beforehand, atomically, in its `turn` (the
    /// core encodes the next batch while this one is written): it commits
    /// only once the commit before was written, and writes nothing if that
    /// one failed ([`StoreError::EarlierCommitFailed`]).
    async fn write(&self, rows: Encoded<'_>, turn: Turn) -> Result<(), StoreError>;
    /// Whether a write runs its statements while the commit before it is
    /// still committing (it waits for that one only to commit itself): the
    /// core then hands it the next batch as soon as it can.
    fn overlaps_writes(&self) -> bool {
        false
    }
    /// One run with its steps, final or not.
    async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    /// The run `submitted_by`'s idempotency key made, if any (keys are
    /// each submitter's own).
    async fn run_by_idempotency_key(
        &self,
        submitted_by: &str,
        key: &str,
    ) -> Result<Option<Run>, StoreError>;
    /// Runs matching `filter`, newest (greatest id) first, at most `limit`,
    /// with their steps.
    async fn list_runs(&self, filter: &RunFilter, limit: u32) -> Result<Vec<Run>, StoreError>;
    /// One approval, pending or decided.
    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError>;
    /// Ids in `table` that are `text`, or else start or end with it: a
    /// prefix by a range on the id column's index (ULIDs sort by time), a
    /// suffix among the newest [`SUFFIX_SCAN`] ids. At most `limit` of
    /// each kind.
    async fn match_ids(
        &self,
        table: IdTable,
        text: &str,
        limit: u32,
    ) -> Result<IdMatches, StoreError>;
    /// Decided approvals (approved, rejected, expired, cancelled), newest
    /// first, at most `limit`.
    async fn decided_approvals(&self, limit: u32) -> Result<Vec<Approval>, StoreError>;
    /// The oldest event seq still stored; 0 when there is none.
    async fn first_kept_seq(&self) -> Result<u64, StoreError>;
    /// Deletes one small batch of what retention lets go (see [`Prune`]),
    /// in short transactions that never hold the database for long.
    async fn prune(&self, what: &Prune) -> Result<Pruned, StoreError>;
    /// The database's size on disk, in bytes (pages in use and free).
    async fn size_bytes(&self) -> Result<u64, StoreError>;
    /// Events after `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError>;
    /// The newest events before `before` (and after `after`), newest first,
    /// at most `limit`: the tail of the log.
    async fn events_before(
        &self,
        before: u64,
        after: u64,
        limit: u32,
        run_id: Option<&str>,
    ) -> Result<Vec<pb::Event>, StoreError>;
    /// Up to `until` (inclusive) — for replaying exactly a range.
    async fn events_between(&self, after: u64, until: u64) -> Result<Vec<pb::Event>, StoreError>;
    /// Output of a run's steps, in order.
    async fn output(
        &self,
        run_id: &str,
        step: Option<u32>,
    ) -> Result<Vec<pb::OutputChunk>, StoreError>;
    /// Output of a run from a position on, in (step, attempt, offset)
    /// order, only the step's (and attempt's) the query names; a chunk the
    /// position falls inside is cut to start there. At most `limit` chunks.
    async fn output_from(
        &self,
        query: &OutputQuery,
        limit: u32,
    ) -> Result<Vec<pb::OutputChunk>, StoreError>;

    /// Pending notifications due at `now`, the longest due first, at most
    /// `limit`.
    async fn due_notifications(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;
    /// Records a delivery attempt of a pending notification: delivered, or
    /// failed and due again later. False when it is not pending.
    async fn notification_attempted(&self, id: &str, attempt: &Attempt)
    -> Result<bool, StoreError>;
    /// Notifications in any of `states` (all when empty), newest event
    /// first, at most `limit`.
    async fn list_notifications(
        &self,
        states: &[NotificationState],
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;
    /// How many notifications are pending.
    async fn pending_notifications(&self) -> Result<u64, StoreError>;

    /// Takes the lead (`held: None`) if it is free, lapsed or already
    /// `holder`'s, or renews the lead held with epoch `held`, for `ttl` on
    /// the database's clock. Once this answers `Leader`, every commit
    /// checks that epoch first and fails [`StoreError::Fenced`] when
    /// another engine has taken the lead since.
    ///
    /// A store only one engine can use (SQLite) always answers `Leader`
    /// with epoch 1.
    async fn lead(
        &self,
        holder: &str,
        address: &str,
        ttl: std::time::Duration,
        held: Option<u64>,
    ) -> Result<Leadership, StoreError> {
        let _ = (holder, address, ttl, held);
        Ok(Leadership::Leader { epoch: 1 })
    }

    /// Gives up the lead held with `epoch`, so that a standby takes over
    /// at once rather than when the lead lapses.
    async fn resign(&self, epoch: u64) -> Result<(), StoreError> {
        let _ = epoch;
        Ok(())
    }
}

/// A database URL fit to print: its password, if it has one, as `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only a URL that cannot have a password refuses one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Opens the store a database URL names, applying migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redacted(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_printed_database_url_shows_no_password() {
        assert_eq!(
            redacted("postgres://opsdeck:hunter2@db.internal:5432/opsdeck"),
            "postgres://opsdeck:***@db.internal:5432/opsdeck"
        );
        assert_eq!(
            redacted("postgres://opsdeck@db/opsdeck"),
            "postgres://opsdeck@db/opsdeck"
        );
        assert_eq!(
            redacted("sqlite:///var/lib/opsdeck/opsdeck.db"),
            "sqlite:///var/lib/opsdeck/opsdeck.db"
        );
    }
}
