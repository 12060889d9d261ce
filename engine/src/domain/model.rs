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
    /// The value; empty for a secret entry.
    pub value: String,
    /// A secret entry: the name of a secret in the engine config's
    /// `[secrets]`. Only the name is stored and shown; the engine puts the
    /// value in the step's assignment, for the worker that runs it alone.
    /// Runs stored before secrets were named have `"secret": true|false`:
    /// `false` reads as none, `true` as an empty name whose value is the
    /// entry's own `value` (as it was then).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "secret_ref"
    )]
    pub secret: Option<String>,
}

fn secret_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Name(String),
        Flag(bool),
    }
    Ok(match Option::<Stored>::deserialize(d)? {
        Some(Stored::Name(name)) => Some(name),
        Some(Stored::Flag(true)) => Some(String::new()),
        Some(Stored::Flag(false)) | None => None,
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub queue: String,
    pub command: Command,
    pub env: Vec<EnvEntry>,
    pub workdir: Option<String>,
    pub timeout_ms: Option<u64>,
    /// No output for this long marks the running attempt hung (it is not
    /// stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_timeout_ms: Option<u64>,
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles it, up to [`MAX_BACKOFF_MS`].
    pub backoff_ms: u64,
    pub priority: i32,
    /// Only workers carrying every one of these labels take the step
    /// (`worker = { site = "fra1" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker: BTreeMap<String, String>,
}

/// The longest a retry backoff grows to.
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;

impl ExecSpec {
    /// Whether a worker with `labels` may take the step.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.worker.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

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
    /// Only callers holding this role may decide (admin holds every role
    /// but agent).
    #[serde(default)]
    pub role: Option<Role>,
    /// Only callers in this group may decide: a Unix group of a socket
    /// caller, or one of a token's `groups`.
    #[serde(default)]
    pub group: Option<String>,
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
    /// Attempts since then given back: their lease was lost (expired, force-
    /// released to the queue, its worker gone), not failed by the step.
    #[serde(default)]
    pub given_back: u32,
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
    /// The running attempt printed nothing for the step's `quiet_timeout`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hung: bool,
}

impl Step {
    pub fn new(index: u32, spec: StepSpec) -> Self {
        Self {
            index,
            spec,
            state: StepState::Blocked,
            attempt: 0,
            attempt_base: 0,
            given_back: 0,
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
            hung: false,
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
    /// Attempts that count against `max_attempts`: those since the last
    /// operator retry, less the ones given back.
    pub fn attempts_counted(&self) -> u32 {
        self.attempt
            .saturating_sub(self.attempt_base)
            .saturating_sub(self.given_back)
    }

    pub fn has_attempts_left(&self) -> bool {
        self.exec()
            .is_some_and(|e| self.attempts_counted() < e.max_attempts)
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
    /// Whoever retried the run: like its submitter, none of them may
    /// approve its gates (four eyes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_by: Vec<String>,
    /// Who rejected one of its approvals: a rejection is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// The values of the spec's parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The spec's text, when it declares parameters (a retry with other
    /// values is made from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The run this one retries with other parameter values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The spec's run `timeout`: the run fails this long after its submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When the run fails for its `timeout`: its submit (or last retry)
    /// plus the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<Millis>,
}

impl Run {
    /// Whether the run was made from `spec`: the same name, labels and
    /// steps (what an idempotent resubmit must repeat). A step the spec
    /// gives no timeout matches whatever default the engine gave it.
    pub fn made_from(&self, spec: &super::spec::RunSpec) -> bool {
        self.name == spec.name
            && self.labels == spec.labels
            && self.params == spec.params
            && self.timeout_ms == spec.timeout_ms
            && self.steps.len() == spec.steps.len()
            && self
                .steps
                .iter()
                .zip(&spec.steps)
                .all(|(a, b)| a.spec == *b || a.spec == defaulted_like(b, &a.spec))
    }

    /// The refusal of an idempotency key reused with another spec.
    pub fn key_reused(&self, key: &str) -> String {
        format!(
            "idempotency key {key:?} already made run {} ({}) from a different spec; \
             resubmit the same spec to get that run, or use a new key for this one",
            self.id, self.name
        )
    }
}

/// `spec` with the timeout of `made` where `spec` sets none.
fn defaulted_like(spec: &StepSpec, made: &StepSpec) -> StepSpec {
    let mut spec = spec.clone();
    if let (StepKindSpec::Exec(s), StepKindSpec::Exec(m)) = (&mut spec.kind, &made.kind)
        && s.timeout_ms.is_none()
    {
        s.timeout_ms = m.timeout_ms;
    }
    spec
}

impl Run {
    pub fn step(&self, index: u32) -> Option<&Step> {
        self.steps.get(index as usize)
    }

    pub fn step_mut(&mut self, index: u32) -> Option<&mut Step> {
        self.steps.get_mut(index as usize)
    }

    /// A copy of everything but the steps: what a run's own row holds.
    pub fn header(&self) -> Run {
        Run {
            id: self.id.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            submitted_by: self.submitted_by.clone(),
            state: self.state,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            current_step: self.current_step,
            steps: Vec::new(),
            message: self.message.clone(),
            idempotency_key: self.idempotency_key.clone(),
            retried_by: self.retried_by.clone(),
            rejected_by: self.rejected_by.clone(),
            params: self.params.clone(),
            template: self.template.clone(),
            retry_of: self.retry_of.clone(),
            timeout_ms: self.timeout_ms,
            deadline_at: self.deadline_at,
        }
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
    /// Set while its breaker is open: its attempts kept failing while other
    /// workers succeeded, so it takes no new work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
}

/// An open worker breaker: why and since when. After the cool-down it is
/// half-open: one step may go to the worker, and a success closes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    pub opened_at: Millis,
    /// Attempts that failed or timed out in a row when it opened.
    pub failures: u32,
    /// Why it opened, in words.
    pub message: String,
    #[serde(default)]
    pub half_open: bool,
}

impl Breaker {
    /// "open" or "half_open", as the API and the console say it.
    pub fn word(&self) -> &'static str {
        if self.half_open { "half_open" } else { "open" }
    }
}

impl Worker {
    /// Whether it takes steps of `queue`.
    /// Whether this worker may take `exec`: it serves the step's queue and
    /// carries every label the step selects on.
    pub fn takes(&self, exec: &ExecSpec) -> bool {
        self.serves(&exec.queue) && exec.selects(&self.labels)
    }

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
    /// How long the step waited ready in its queue before this lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
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
    /// Those who retried the run before this approval was asked: they count
    /// as its submitters for four eyes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_by: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub name: String,
    pub paused: bool,
}

pub use opsdeck_proto::access::Role;

/// What a caller holds: its roles (with the ones they include) and its
/// groups (Unix groups of a socket caller, a token's `groups`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    roles: std::collections::BTreeSet<Role>,
    groups: std::collections::BTreeSet<String>,
}

impl Grants {
    pub fn new(
        roles: impl IntoIterator<Item = Role>,
        groups: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            roles: roles
                .into_iter()
                .flat_map(|r| r.includes().iter().copied())
                .collect(),
            groups: groups.into_iter().collect(),
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    /// Every role held, included ones too, in the order of [`Role::ALL`].
    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.roles.iter().copied()
    }

    /// "admin, approver, operator, viewer", or "no role".
    pub fn describe_roles(&self) -> String {
        if self.roles.is_empty() {
            return "no role".into();
        }
        self.roles
            .iter()
            .map(|r| r.word())
            .collect::<Vec<_>>()
            .join(", ")
    }
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
    fn env_entries_read_secret_names_and_the_flags_stored_before_them() {
        let read = |json: &str| serde_json::from_str::<EnvEntry>(json).unwrap().secret;
        assert_eq!(
            read(r#"{"name":"A","value":"","secret":"db"}"#),
            Some("db".into())
        );
        assert_eq!(read(r#"{"name":"A","value":"x"}"#), None);
        assert_eq!(read(r#"{"name":"A","value":"x","secret":false}"#), None);
        assert_eq!(
            read(r#"{"name":"A","value":"x","secret":true}"#),
            Some(String::new())
        );
        let plain = EnvEntry {
            name: "A".into(),
            value: "x".into(),
            secret: None,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"name":"A","value":"x"}"#
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let spec = ExecSpec {
            queue: "q".into(),
            command: Command::Shell("true".into()),
            env: vec![],
            workdir: None,
            timeout_ms: None,
            quiet_timeout_ms: None,
            max_attempts: 50,
            backoff_ms: 1000,
            priority: 0,
            worker: BTreeMap::new(),
        };
        assert_eq!(spec.backoff_after(1), 1000);
        assert_eq!(spec.backoff_after(2), 2000);
        assert_eq!(spec.backoff_after(4), 8000);
        assert_eq!(spec.backoff_after(40), MAX_BACKOFF_MS);
    }
}
