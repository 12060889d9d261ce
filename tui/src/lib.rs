//! opsdeck: the operator's side of an opsdeck engine.
//!
//! - [`client`]: finding the engine, authenticating, typed clients, and an
//!   event stream that resumes across engine restarts.
//! - [`cli`]: the scriptable subcommands (`opsdeck runs`, `opsdeck approve`,
//!   …), their text tables and JSON output.
//!
//! The interactive console (the default when no subcommand is given) will
//! live beside them, using the same [`client`].

// Tests state their expectations with unwrap; shipping code may not (the
// workspace denies it, and the non-test build is still linted).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod client;
