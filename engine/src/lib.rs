//! opsdeckd: the opsdeck engine and its worker.
//!
//! - [`domain`]: runs, steps, queues, workers, leases, approvals and the run
//!   spec — plain data and rules, no I/O.
//! - [`core`]: the single task that owns the live state, applies every
//!   change in order, group-commits it and then answers and publishes.
//! - [`store`]: persistence behind one trait (SQLite).
//! - [`api`]: the gRPC services, the auth interceptor and the listeners.
//! - [`agent`]: the worker process (`opsdeckd worker`): runs exec steps as
//!   real processes, heartbeats, drains and recycles.
//! - [`config`]: the engine's configuration file and flags.
//! - [`serve`]: puts an engine together and runs it until shutdown.
//! - [`bench`]: `opsdeckd bench`.
//! - [`convert`]: domain values to opsdeck.v1 messages.
//! - [`error`]: the engine's errors and their gRPC codes.

pub mod agent;
pub mod api;
pub mod bench;
pub mod config;
pub mod convert;
pub mod core;
pub mod domain;
pub mod error;
pub mod serve;
pub mod store;
