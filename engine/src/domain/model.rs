//! The domain's values and their state machines.
//!
//! Every type here is what the store persists (as JSON) and what the core
//! mutates; none of them does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Millis;

/// A run's life: `queued → running ⇄ waiting_approval → succeeded | failed | cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    WaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A step's life: `blocked → queued → leased → running → succeeded | failed
/// | retry_wait | cancelled | dead`; approval steps wait in `waiting`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Blocked,
    Queued,
    Leased,
    Running,
    Succeeded,
    Failed,
    RetryWait,
    Cancelled,
    Dead,
    Waiting,
}

impl StepState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Dead
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Run through `sh -c`.
    Shell(String),
    /// Run directly: program and arguments.
    Argv(Vec<String>),
}

impl Command {
    /// Bytes of command text, for the size limit.
    pub fn len(&self) -> usize {
        match self {
            Self::Shell(s) => s.len(),
            Self::Argv(a) => a.iter().map(|s| s.len() + 1).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvEntry {
    pub name: String,
    pub value: String,
    /// Never shown: not in events, logs or answers; only sent to the worker
    /// that runs the step.
    pub secret: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub queue: String,
    pub command: Command,
    pub env: Vec<EnvEntry>,
    pub workdir: Option<String>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles it, up to [`MAX_BACKOFF_MS`].
    pub backoff_ms: u64,
    pub priority: i32,
}

/// The longest a retry backoff grows to.
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;

impl ExecSpec {
    /// The delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(32);
        self.backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(MAX_BACKOFF_MS.max(self.backoff_ms))
    }
}

/// What an approval that nobody decided in time does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Recorded as rejected (by the engine): the run fails as rejected.
    Reject,
    /// Recorded as expired: the step and the run fail.
    Fail,
}

impl OnTimeout {
    pub fn word(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Fail => "fail",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSpec {
    pub timeout_ms: Option<u64>,
    pub on_timeout: OnTimeout,
    /// Four eyes unless set: the submitter may not approve their own run.
    pub allow_self_approval: bool,
    /// Distinct approvers needed.
    pub required: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKindSpec {
    Exec(ExecSpec),
    Approval(ApprovalSpec),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    pub name: String,
    pub kind: StepKindSpec,
}

impl StepSpec {
    pub fn exec(name: String, spec: ExecSpec) -> Self {
        Self {
            name,
            kind: StepKindSpec::Exec(spec),
        }
    }

    pub fn approval(name: String, spec: ApprovalSpec) -> Self {
        Self {
            name,
            kind: StepKindSpec::Approval(spec),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    pub spec: StepSpec,
    pub state: StepState,
    /// Leases granted so far (1-based number of the latest attempt).
    pub attempt: u32,
    /// Attempts already spent before the last operator retry; the attempt
    /// budget counts from here.
    pub attempt_base: u32,
    /// The fencing token of the latest lease; grows with every attempt.
    pub fence: u64,
    pub lease_id: Option<String>,
    pub worker_id: Option<String>,
    pub exit_code: Option<i32>,
    pub message: String,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// When the step became ready (queue order among equal priorities).
    pub ready_since: Option<Millis>,
    pub next_attempt_at: Option<Millis>,
    pub approval_id: Option<String>,
}

impl Step {
    pub fn new(index: u32, spec: StepSpec) -> Self {
        Self {
            index,
            spec,
            state: StepState::Blocked,
            attempt: 0,
            attempt_base: 0,
            fence: 0,
            lease_id: None,
            worker_id: None,
            exit_code: None,
            message: String::new(),
            started_at: None,
            finished_at: None,
            ready_since: None,
            next_attempt_at: None,
            approval_id: None,
        }
    }

    pub fn exec(&self) -> Option<&ExecSpec> {
        match &self.spec.kind {
            StepKindSpec::Exec(e) => Some(e),
            StepKindSpec::Approval(_) => None,
        }
    }

    pub fn queue(&self) -> Option<&str> {
        self.exec().map(|e| e.queue.as_str())
    }

    /// Whether a failed attempt leaves another one in the budget.
    pub fn has_attempts_left(&self) -> bool {
        self.exec()
            .is_some_and(|e| self.attempt.saturating_sub(self.attempt_base) < e.max_attempts)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// A ULID: sorts by submit time.
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub submitted_by: String,
    pub state: RunState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    pub current_step: u32,
    pub steps: Vec<Step>,
    pub message: String,
    pub idempotency_key: Option<String>,
}

impl Run {
    pub fn step(&self, index: u32) -> Option<&Step> {
        self.steps.get(index as usize)
    }

    pub fn step_mut(&mut self, index: u32) -> Option<&mut Step> {
        self.steps.get_mut(index as usize)
    }
}

/// A worker's life: `online → draining → recycling → online`, `→ offline`
/// (connection or heartbeats lost), `→ stopped` (clean exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Online,
    Draining,
    Recycling,
    Offline,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    pub state: WorkerState,
    pub queues: Vec<String>,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub host: String,
    pub pid: u32,
    pub generation: u64,
    pub identity: String,
    pub registered_at: Millis,
    pub last_heartbeat_at: Millis,
    /// An operator asked it to take no new work. Survives reconnects.
    pub drain_requested: bool,
    /// The process itself is draining (it got SIGTERM); a new process of
    /// the same worker starts without it.
    #[serde(default)]
    pub self_draining: bool,
    /// An operator asked for a recycle that has not happened yet.
    pub recycle_requested: bool,
}

impl Worker {
    /// Whether it takes steps of `queue`.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues
            .iter()
            .any(|q| q == queue || q == super::ANY_QUEUE)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Active,
    Released,
    Expired,
    ForceReleased,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub run_id: String,
    pub step_index: u32,
    pub worker_id: String,
    pub attempt: u32,
    pub fencing_token: u64,
    pub state: LeaseState,
    pub granted_at: Millis,
    pub expires_at: Millis,
    pub ended_at: Option<Millis>,
    pub queue: String,
    /// The step outlived its timeout, the cancel grace and two heartbeats
    /// while the worker kept the lease: its worker could not stop it.
    #[serde(default)]
    pub stuck: bool,
}

/// A run name whose steps got stuck `stuck_count` times within the
/// engine's quarantine window: new runs of it are refused, and its queued
/// steps are not dispatched, until an operator clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub name: String,
    pub since: Millis,
    pub stuck_count: u32,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub actor: String,
    pub approve: bool,
    pub comment: String,
    pub at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub run_id: String,
    pub step_index: u32,
    pub state: ApprovalState,
    pub submitted_by: String,
    pub spec: ApprovalSpec,
    pub decisions: Vec<Decision>,
    pub requested_at: Millis,
    pub deadline_at: Option<Millis>,
    pub decided_at: Option<Millis>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub name: String,
    pub paused: bool,
}

/// Who did something, and how they reached the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    /// "unix", "tcp" or "engine".
    pub transport: &'static str,
}

impl Actor {
    /// The engine itself (timers, expiry).
    pub fn engine() -> Self {
        Self {
            name: "opsdeckd".into(),
            transport: "engine",
        }
    }

    pub fn worker(id: &str) -> Self {
        Self {
            name: format!("worker:{id}"),
            transport: "agent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let spec = ExecSpec {
            queue: "q".into(),
            command: Command::Shell("true".into()),
            env: vec![],
            workdir: None,
            timeout_ms: None,
            max_attempts: 50,
            backoff_ms: 1000,
            priority: 0,
        };
        assert_eq!(spec.backoff_after(1), 1000);
        assert_eq!(spec.backoff_after(2), 2000);
        assert_eq!(spec.backoff_after(4), 8000);
        assert_eq!(spec.backoff_after(40), MAX_BACKOFF_MS);
    }
}
