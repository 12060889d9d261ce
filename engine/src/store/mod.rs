//! Persistence behind one trait. The core writes a [`Batch`] per group
//! commit and reads everything back with [`Store::load`] at start.
//!
//! Objects are stored whole (JSON) beside the columns queries need, so a
//! new field needs no migration and both dialects stay simple.

mod codec;
#[cfg(test)]
mod conformance;
mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use opsdeck_proto::v1 as pb;

use crate::core::Loaded;
use crate::domain::{Approval, Lease, Quarantine, Queue, Run, Worker};

/// Everything one group commit writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub runs: Vec<Run>,
    pub workers: Vec<Worker>,
    pub leases: Vec<Lease>,
    pub approvals: Vec<Approval>,
    pub queues: Vec<Queue>,
    pub events: Vec<pb::Event>,
    pub outputs: Vec<pb::OutputChunk>,
    /// Quarantines set (`Some`) or cleared (`None`), by run name.
    pub quarantines: Vec<(String, Option<Quarantine>)>,
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
    /// Everything the core needs to rebuild its live state.
    async fn load(&self) -> Result<Loaded, StoreError>;
    /// Writes a batch atomically.
    async fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Events after `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
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
