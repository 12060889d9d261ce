//! opsdeck: the operator's side of an opsdeck engine.
//!
//! The console (`opsdeck` with no subcommand), in the Elm style:
//! - [`app`]: the model, [`app::update`] and the messages and commands;
//!   no I/O, no view types.
//! - [`model`]: the mirror of the engine's state the app keeps, and the
//!   figures derived from it (stale leases, stuck workers, overdue
//!   approvals).
//! - [`view`]: one file per screen, rendering `&App` into a buffer.
//! - [`widgets`]: the pieces the screens share (table, sparkline, confirm
//!   dialog, help, message log, header, footer).
//! - [`keys`]: the one keymap the help, the footer and `update` read.
//! - [`roles`]: which role each change needs; the keys offered follow it.
//! - [`conn`]: the `Console.Watch` connection, reconnecting by itself.
//! - [`console`]: the main loop (one `select!`), engine calls as tasks,
//!   and the terminal, restored on exit and on panic.
//! - [`demo`]: `opsdeck demo`, an engine, workers and a workload to look at.
//!
//! Beside it, the scriptable CLI:
//! - [`client`]: finding the engine, authenticating, typed clients, and an
//!   event stream that resumes across engine restarts.
//! - [`cli`]: the subcommands (`opsdeck runs`, `opsdeck approve`, …),
//!   their text tables and JSON output.
//! - [`args`]: the command line of the `opsdeck` binary: the console's
//!   flags, `demo`, and every CLI subcommand.
//! - [`manual`]: shell completions and man pages, made from [`args`].

// Tests state their expectations with unwrap; shipping code may not (the
// workspace denies it, and the non-test build is still linted).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod args;
pub mod cli;
pub mod client;
pub mod conn;
pub mod console;
pub mod demo;
pub mod keys;
pub use opsdeck_manual as manual;
pub mod model;
pub mod roles;
pub mod text;
pub mod view;
pub mod widgets;
