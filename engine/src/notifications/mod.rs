//! Notifications: `[[notify]]` webhooks and commands told of chosen
//! events, through a durable outbox.
//!
//! The core writes one outbox row per matching notifier and event in the
//! event's own commit ([`rules`] says which match, [`payload`] makes the
//! JSON); the leader's [`deliver`] task delivers them at least once, each
//! with its idempotency id, retrying across restarts and failovers, and
//! gives up after `give_up_after` with a `notification.failed` event.

mod config;
pub mod deliver;
pub mod payload;
mod rules;

pub use config::{NotificationsSection, NotifierEntry, check};
pub use deliver::Delivery;
pub use rules::Rules;
