//! The worker side of the Agent protocol: what `opsdeckd worker` runs, what
//! the engine's `--local-workers` runs in-process, and what `opsdeckd bench`
//! drives with an executor that spawns nothing.
//!
//! - [`run`]: serve one engine until shutdown or recycle; reconnects by itself.
//! - `worker`: its loop — one task owning the session, the leases in hand and
//!   the steps' tasks.
//! - `session`: one Agent.Session stream (Hello → Welcome, then messages).
//! - `ledger`: leases in hand — running steps and unacknowledged results —
//!   kept across reconnects.
//! - `spool`: each result on disk until the engine acknowledges it, kept
//!   across engine outages and worker restarts.
//! - [`executor`]: the [`Executor`] trait and [`InstantExecutor`];
//!   `process`: [`ProcessExecutor`], steps as real process groups.
//! - `command`: the `opsdeckd worker` command line, signals and re-exec.
//!
//! Protocol as the worker speaks it: the first message of every session is a
//! Hello listing the leases in hand (running, or finished with the result not
//! yet acknowledged, including results a previous process of this worker
//! left in the spool). Per step, StepStarted comes before its output and the
//! output before its StepResult. A result is resent after every reconnect
//! until a ResultAck for its lease arrives (accepted or refused), even when
//! the Welcome says its lease is no longer held: the engine decides, and
//! records a refusal. A worker that starts draining on
//! its own (SIGTERM) says so by closing its session and opening a new one
//! whose Hello has `draining` set.

pub(crate) mod backoff;
mod command;
pub mod executor;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod fake_engine_tests;
mod ledger;
mod mask;
mod process;
mod session;
mod spool;
mod worker;

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use anyhow::ensure;
use opsdeck_proto::failover::EngineList;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use command::{WorkerArgs, worker_command};
pub use executor::{Executor, InstantExecutor, StepContext, StepExit};
pub use process::ProcessExecutor;

/// How long a stopped step gets between SIGTERM and SIGKILL, unless the
/// engine's CancelStep names another grace.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Who this worker is and what it serves.
#[derive(Clone)]
pub struct AgentOptions {
    /// The engine, or several sharing a database: the session goes to the
    /// one that leads.
    pub engine: EngineList,
    /// Stable across restarts and recycles; the engine knows the worker by it.
    pub worker_id: String,
    pub queues: Vec<String>,
    /// How many steps may run at once.
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// For `https://` engines: the CA to trust and the client certificate
    /// to show (`--ca`, `--cert`, `--key`); `None` trusts the system's roots.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Increases with every recycle.
    pub generation: u64,
    /// SIGTERM-to-SIGKILL wait for cancels (unless CancelStep says) and timeouts.
    pub cancel_grace: Duration,
    /// Where results wait on disk until the engine acknowledges them; `None`
    /// keeps them in memory only (lost if the process dies first).
    pub spool_dir: Option<PathBuf>,
}

impl AgentOptions {
    /// Options with the defaults: one slot, no labels, no token, generation 1.
    pub fn new(
        engine: impl Into<EngineList>,
        worker_id: impl Into<String>,
        queues: Vec<String>,
    ) -> Self {
        Self {
            engine: engine.into(),
            worker_id: worker_id.into(),
            queues,
            slots: 1,
            labels: BTreeMap::new(),
            token: None,
            tls: None,
            generation: 1,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            spool_dir: None,
        }
    }

    /// Says what is wrong, if anything, in words a person can act on.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_worker_id(&self.worker_id)?;
        ensure!(
            !self.queues.is_empty(),
            "a worker needs at least one queue to serve"
        );
        for queue in &self.queues {
            check_queue_name(queue)?;
        }
        ensure!(self.slots >= 1, "slots must be at least 1");
        for key in self.labels.keys() {
            ensure!(
                !key.trim().is_empty(),
                "a label needs a name: use KEY=VALUE"
            );
        }
        if let Some(token) = &self.token {
            ensure!(
                !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
                "the token must be non-empty printable ASCII without spaces"
            );
        }
        Ok(())
    }
}

impl fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentOptions")
            .field("engine", &self.engine)
            .field("worker_id", &self.worker_id)
            .field("queues", &self.queues)
            .field("slots", &self.slots)
            .field("labels", &self.labels)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .field("generation", &self.generation)
            .field("cancel_grace", &self.cancel_grace)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentExit {
    /// Shut down as asked, with nothing left running.
    Stopped,
    /// The engine asked for a fresh process; start it with this generation.
    Recycle { next_generation: u64 },
}

/// Serves the engine at `opts.engine` until `shutdown` or a Recycle.
///
/// Reconnects forever (200 ms doubling to 10 s, jittered) while running;
/// steps keep running across reconnects. Cancelling `shutdown` drains: no
/// new steps, the engine is told, the running steps finish and their results
/// are delivered (waiting up to a few seconds for the acks), then it returns
/// [`AgentExit::Stopped`]. Dropping the future instead stops at once and
/// kills the running steps' process groups.
pub async fn run(
    opts: AgentOptions,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
) -> anyhow::Result<AgentExit> {
    run_until(opts, executor, shutdown, CancellationToken::new()).await
}

/// [`run`], plus `kill`: stop the running steps (SIGTERM, SIGKILL after the
/// grace), report them failed, and return.
pub(crate) async fn run_until(
    opts: AgentOptions,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> anyhow::Result<AgentExit> {
    opts.validate()?;
    let span = tracing::info_span!("worker", worker_id = %opts.worker_id);
    let (spool, spooled) = match &opts.spool_dir {
        Some(dir) => {
            let (spool, spooled) = spool::Spool::open(dir, &opts.worker_id)?;
            (Some(spool), spooled)
        }
        None => (None, Vec::new()),
    };
    let worker = worker::Worker::new(
        opts,
        executor,
        host_name().unwrap_or_default(),
        spool,
        spooled,
    );
    Ok(worker.run(shutdown, kill).instrument(span).await)
}

/// This machine's name, if it has a readable one.
pub(crate) fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()?
        .into_string()
        .ok()
        .filter(|name| !name.is_empty())
}

/// Queue names are `[a-z0-9._-]{1,64}`, as everywhere in opsdeck; `*`
/// (every queue) is what the engine's own local workers serve.
pub(crate) fn check_queue_name(name: &str) -> anyhow::Result<()> {
    if name == crate::domain::ANY_QUEUE {
        return Ok(());
    }
    crate::domain::validate_queue_name(name).map_err(|e| anyhow::anyhow!("invalid {e}"))
}

fn check_worker_id(id: &str) -> anyhow::Result<()> {
    crate::domain::validate_worker_id(id).map_err(anyhow::Error::msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn options() -> AgentOptions {
        AgentOptions::new(
            "unix:///tmp/x.sock".parse::<EngineList>().unwrap(),
            "w1",
            vec!["default".into()],
        )
    }

    #[test]
    fn queue_names_follow_the_domain_rule() {
        for good in ["default", "build.linux-x86_64", "a", &"q".repeat(64)] {
            assert!(check_queue_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Deploy", "two words", "a/b", &"q".repeat(65)] {
            assert!(check_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_names_the_problem() {
        assert!(options().validate().is_ok());
        let no_queues = AgentOptions {
            queues: vec![],
            ..options()
        };
        assert_eq!(
            no_queues.validate().unwrap_err().to_string(),
            "a worker needs at least one queue to serve"
        );
        let zero_slots = AgentOptions {
            slots: 0,
            ..options()
        };
        assert!(zero_slots.validate().is_err());
        let bad_token = AgentOptions {
            token: Some("has space".into()),
            ..options()
        };
        assert!(bad_token.validate().is_err());
        let bad_id = AgentOptions {
            worker_id: "".into(),
            ..options()
        };
        assert!(bad_id.validate().is_err());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let opts = AgentOptions {
            token: Some("s3cret".into()),
            ..options()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("<redacted>"));
    }
}
