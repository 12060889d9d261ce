//! opsdeckd: the opsdeck engine and its worker.
//!
//! - [`domain`]: runs, steps, queues, workers, leases, approvals and the run
//!   spec — plain data and rules, no I/O.
//! - [`core`]: the single task that owns the live state, applies every
//!   change in order, group-commits it and then answers and publishes.
//! - [`store`]: persistence behind one trait (SQLite and PostgreSQL): the
//!   live set loaded at start, history read a page at a time.
//! - [`retention`]: prunes history older than `[retention]` in the background.
//! - [`notifications`]: `[[notify]]` webhooks and commands, fed by a
//!   durable outbox written with each event.
//! - [`api`]: the gRPC services, the auth interceptor and the listeners.
//! - [`agent`]: the worker process (`opsdeckd worker`): runs exec steps as
//!   real processes, heartbeats, drains and recycles.
//! - [`config`]: the engine's configuration file and flags.
//! - [`ha`]: several engines on one database: the lead, standbys, fencing.
//! - [`serve`]: puts an engine together and runs it until shutdown.
//! - [`secrets`]: the config's `[secrets]`, whose values only the steps
//!   that name them get.
//! - [`bench`]: `opsdeckd bench`.
//! - [`convert`]: domain values to opsdeck.v1 messages.
//! - [`error`]: the engine's errors and their gRPC codes.
//! - [`metrics`], [`notify`], [`logging`], [`backup`]: operating it —
//!   Prometheus and health endpoints, systemd's notify protocol, the log,
//!   and consistent copies of a live SQLite database.
//! - [`manual`]: shell completions and man pages, made from the command
//!   line's definition.
//! - [`private`]: files for the owner only (0700/0600 whatever the umask)
//!   and processes whose memory their steps cannot read.
//! - [`allocator`]: the memory allocator's settings (mimalloc).

pub mod agent;
pub mod allocator;
pub mod api;
pub mod backup;
pub mod bench;
pub mod config;
pub mod convert;
pub mod core;
pub mod domain;
pub mod error;
pub mod ha;
pub mod logging;
pub use opsdeck_manual as manual;
pub mod metrics;
pub mod notifications;
pub mod notify;
pub mod private;
pub mod retention;
pub mod secrets;
pub mod serve;
pub mod store;
