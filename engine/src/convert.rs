//! Domain values → opsdeck.v1 messages. Secret env values are blanked here,
//! the one place every answer and event passes through.

use opsdeck_proto::v1 as pb;

use crate::domain::{
    Approval, ApprovalState, Command, Lease, LeaseState, Run, RunState, Step, StepKindSpec,
    StepState, Worker, WorkerState,
};

pub fn run_state(s: RunState) -> pb::RunState {
    match s {
        RunState::Queued => pb::RunState::Queued,
        RunState::Running => pb::RunState::Running,
        RunState::WaitingApproval => pb::RunState::WaitingApproval,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
    }
}

pub fn run_state_from(s: pb::RunState) -> Option<RunState> {
    Some(match s {
        pb::RunState::Unspecified => return None,
        pb::RunState::Queued => RunState::Queued,
        pb::RunState::Running => RunState::Running,
        pb::RunState::WaitingApproval => RunState::WaitingApproval,
        pb::RunState::Succeeded => RunState::Succeeded,
        pb::RunState::Failed => RunState::Failed,
        pb::RunState::Cancelled => RunState::Cancelled,
    })
}

fn step_state(s: StepState) -> pb::StepState {
    match s {
        StepState::Blocked => pb::StepState::Blocked,
        StepState::Queued => pb::StepState::Queued,
        StepState::Leased => pb::StepState::Leased,
        StepState::Running => pb::StepState::Running,
        StepState::Succeeded => pb::StepState::Succeeded,
        StepState::Failed => pb::StepState::Failed,
        StepState::RetryWait => pb::StepState::RetryWait,
        StepState::Cancelled => pb::StepState::Cancelled,
        StepState::Dead => pb::StepState::Dead,
        StepState::Waiting => pb::StepState::Waiting,
    }
}

fn worker_state(s: WorkerState) -> pb::WorkerState {
    match s {
        WorkerState::Online => pb::WorkerState::Online,
        WorkerState::Draining => pb::WorkerState::Draining,
        WorkerState::Recycling => pb::WorkerState::Recycling,
        WorkerState::Offline => pb::WorkerState::Offline,
        WorkerState::Stopped => pb::WorkerState::Stopped,
    }
}

fn lease_state(s: LeaseState) -> pb::LeaseState {
    match s {
        LeaseState::Active => pb::LeaseState::Active,
        LeaseState::Released => pb::LeaseState::Released,
        LeaseState::Expired => pb::LeaseState::Expired,
        LeaseState::ForceReleased => pb::LeaseState::ForceReleased,
    }
}

pub fn approval_state(s: ApprovalState) -> pb::ApprovalState {
    match s {
        ApprovalState::Pending => pb::ApprovalState::Pending,
        ApprovalState::Approved => pb::ApprovalState::Approved,
        ApprovalState::Rejected => pb::ApprovalState::Rejected,
        ApprovalState::Expired => pb::ApprovalState::Expired,
        ApprovalState::Cancelled => pb::ApprovalState::Cancelled,
    }
}

pub fn run(r: &Run) -> pb::Run {
    pb::Run {
        id: r.id.clone(),
        name: r.name.clone(),
        labels: r.labels.clone().into_iter().collect(),
        submitted_by: r.submitted_by.clone(),
        state: run_state(r.state) as i32,
        created_at_ms: r.created_at,
        updated_at_ms: r.updated_at,
        finished_at_ms: r.finished_at.unwrap_or(0),
        current_step: r.current_step,
        steps: r.steps.iter().map(|s| step(&r.id, s)).collect(),
        message: r.message.clone(),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        params: r.params.clone().into_iter().collect(),
        retry_of: r.retry_of.clone().unwrap_or_default(),
        timeout_ms: r.timeout_ms.unwrap_or(0),
        concurrency_key: r
            .concurrency
            .as_ref()
            .map(|c| c.key.clone())
            .unwrap_or_default(),
        concurrency_limit: r.concurrency.as_ref().map_or(0, |c| c.limit),
    }
}

/// What an event says of a run whose header changed.
pub fn run_update(r: &Run) -> pb::RunUpdate {
    pb::RunUpdate {
        state: run_state(r.state) as i32,
        current_step: r.current_step,
        message: r.message.clone(),
        updated_at_ms: r.updated_at,
        finished_at_ms: r.finished_at.unwrap_or(0),
    }
}

/// What an event says of a step that changed: its spec never does.
pub fn step_update(s: &Step) -> pb::StepUpdate {
    pb::StepUpdate {
        index: s.index,
        state: step_state(s.state) as i32,
        attempt: s.attempt,
        lease_id: s.lease_id.clone().unwrap_or_default(),
        worker_id: s.worker_id.clone().unwrap_or_default(),
        exit_code: s.exit_code.unwrap_or(0),
        has_exit_code: s.exit_code.is_some(),
        message: s.message.clone(),
        started_at_ms: s.started_at.unwrap_or(0),
        finished_at_ms: s.finished_at.unwrap_or(0),
        next_attempt_at_ms: s.next_attempt_at.unwrap_or(0),
        approval_id: s.approval_id.clone().unwrap_or_default(),
        attempts_counted: s.attempts_counted(),
        attempts_given_back: s.given_back,
        hung: s.hung,
    }
}

pub fn step(run_id: &str, s: &Step) -> pb::Step {
    let mut out = pb::Step {
        run_id: run_id.to_owned(),
        index: s.index,
        name: s.spec.name.clone(),
        state: step_state(s.state) as i32,
        attempt: s.attempt,
        lease_id: s.lease_id.clone().unwrap_or_default(),
        worker_id: s.worker_id.clone().unwrap_or_default(),
        exit_code: s.exit_code.unwrap_or(0),
        has_exit_code: s.exit_code.is_some(),
        message: s.message.clone(),
        started_at_ms: s.started_at.unwrap_or(0),
        finished_at_ms: s.finished_at.unwrap_or(0),
        next_attempt_at_ms: s.next_attempt_at.unwrap_or(0),
        approval_id: s.approval_id.clone().unwrap_or_default(),
        attempts_counted: s.attempts_counted(),
        attempts_given_back: s.given_back,
        hung: s.hung,
        ..Default::default()
    };
    match &s.spec.kind {
        StepKindSpec::Exec(e) => {
            out.kind = pb::StepKind::Exec as i32;
            out.queue = e.queue.clone();
            match &e.command {
                Command::Shell(sh) => out.shell = sh.clone(),
                Command::Argv(argv) => out.argv = argv.clone(),
            }
            out.env = e
                .env
                .iter()
                .map(|v| pb::EnvVar {
                    name: v.name.clone(),
                    value: if v.secret.is_some() {
                        String::new()
                    } else {
                        v.value.clone()
                    },
                    secret: v.secret.is_some(),
                    secret_name: v.secret.clone().unwrap_or_default(),
                })
                .collect();
            out.workdir = e.workdir.clone().unwrap_or_default();
            out.timeout_ms = e.timeout_ms.unwrap_or(0);
            out.quiet_timeout_ms = e.quiet_timeout_ms.unwrap_or(0);
            out.max_attempts = e.max_attempts;
            out.priority = e.priority;
            out.backoff_ms = e.backoff_ms;
            out.worker = e.worker.clone().into_iter().collect();
        }
        StepKindSpec::Approval(_) => out.kind = pb::StepKind::Approval as i32,
    }
    out
}

/// `connected` and `lease_ids` are live facts the core knows, not stored ones.
pub fn worker(w: &Worker, connected: bool, lease_ids: Vec<String>) -> pb::Worker {
    pb::Worker {
        id: w.id.clone(),
        state: worker_state(w.state) as i32,
        queues: w.queues.clone(),
        slots: w.slots,
        labels: w.labels.clone().into_iter().collect(),
        version: w.version.clone(),
        host: w.host.clone(),
        pid: w.pid,
        generation: w.generation,
        registered_at_ms: w.registered_at,
        last_heartbeat_at_ms: w.last_heartbeat_at,
        lease_ids,
        connected,
        recycle_requested: w.recycle_requested,
        identity: w.identity.clone(),
        breaker: w
            .breaker
            .as_ref()
            .map(|b| b.word().to_owned())
            .unwrap_or_default(),
        breaker_message: w
            .breaker
            .as_ref()
            .map(|b| b.message.clone())
            .unwrap_or_default(),
        breaker_opened_at_ms: w.breaker.as_ref().map_or(0, |b| b.opened_at),
    }
}

pub fn lease(l: &Lease, run: Option<&Run>) -> pb::Lease {
    pb::Lease {
        id: l.id.clone(),
        run_id: l.run_id.clone(),
        step_index: l.step_index,
        worker_id: l.worker_id.clone(),
        attempt: l.attempt,
        fencing_token: l.fencing_token,
        state: lease_state(l.state) as i32,
        granted_at_ms: l.granted_at,
        expires_at_ms: l.expires_at,
        ended_at_ms: l.ended_at.unwrap_or(0),
        queue: l.queue.clone(),
        step_name: run
            .and_then(|r| r.step(l.step_index))
            .map(|s| s.spec.name.clone())
            .unwrap_or_default(),
        run_name: run.map(|r| r.name.clone()).unwrap_or_default(),
        stuck: l.stuck,
        queue_wait_ms: l.waited_ms.unwrap_or(0),
    }
}

pub fn quarantine(q: &crate::domain::Quarantine) -> pb::Quarantine {
    pb::Quarantine {
        name: q.name.clone(),
        since_ms: q.since,
        stuck_count: q.stuck_count,
        message: q.message.clone(),
    }
}

pub fn approval(a: &Approval, run: Option<&Run>) -> pb::Approval {
    pb::Approval {
        id: a.id.clone(),
        run_id: a.run_id.clone(),
        step_index: a.step_index,
        step_name: run
            .and_then(|r| r.step(a.step_index))
            .map(|s| s.spec.name.clone())
            .unwrap_or_default(),
        run_name: run.map(|r| r.name.clone()).unwrap_or_default(),
        state: approval_state(a.state) as i32,
        submitted_by: a.submitted_by.clone(),
        allow_self_approval: a.spec.allow_self_approval,
        required: a.spec.required,
        decisions: a
            .decisions
            .iter()
            .map(|d| pb::Decision {
                actor: d.actor.clone(),
                approve: d.approve,
                comment: d.comment.clone(),
                at_ms: d.at,
            })
            .collect(),
        requested_at_ms: a.requested_at,
        deadline_at_ms: a.deadline_at.unwrap_or(0),
        decided_at_ms: a.decided_at.unwrap_or(0),
        on_timeout: a.spec.on_timeout.word().to_owned(),
        role: a.spec.role.map(|r| r.word().to_owned()).unwrap_or_default(),
        group: a.spec.group.clone().unwrap_or_default(),
    }
}

/// A schedule, with the state of its last run when the engine knows it.
pub fn schedule(
    s: &crate::domain::schedule::Schedule,
    last_run_state: Option<RunState>,
) -> pb::Schedule {
    use crate::domain::schedule::{MissedPolicy, OverlapPolicy};
    pb::Schedule {
        name: s.name.clone(),
        spec: s.spec.clone(),
        params: s.params.clone().into_iter().collect(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        missed: match s.missed {
            MissedPolicy::Skip => pb::MissedPolicy::Skip,
            MissedPolicy::RunOnce => pb::MissedPolicy::RunOnce,
        } as i32,
        overlap: match s.overlap {
            OverlapPolicy::Skip => pb::OverlapPolicy::Skip,
            OverlapPolicy::Allow => pb::OverlapPolicy::Allow,
            OverlapPolicy::CancelPrevious => pb::OverlapPolicy::CancelPrevious,
        } as i32,
        paused: s.paused,
        next_fire_at_ms: s.next_fire_at.unwrap_or(0),
        last_fire_at_ms: s.last_fire_at.unwrap_or(0),
        last_run_id: s.last_run_id.clone().unwrap_or_default(),
        last_run_state: last_run_state.map_or(pb::RunState::Unspecified, run_state) as i32,
        created_at_ms: s.created_at,
        created_by: s.created_by.clone(),
        updated_at_ms: s.updated_at,
        updated_by: s.updated_by.clone(),
        run_name: s.run_name.clone(),
    }
}

/// A schedule's missed-fire policy from the wire; unspecified is `skip`.
pub fn missed_policy(v: i32) -> Option<crate::domain::schedule::MissedPolicy> {
    use crate::domain::schedule::MissedPolicy;
    match pb::MissedPolicy::try_from(v).ok()? {
        pb::MissedPolicy::Unspecified | pb::MissedPolicy::Skip => Some(MissedPolicy::Skip),
        pb::MissedPolicy::RunOnce => Some(MissedPolicy::RunOnce),
    }
}

/// A schedule's overlap policy from the wire; unspecified is `skip`.
pub fn overlap_policy(v: i32) -> Option<crate::domain::schedule::OverlapPolicy> {
    use crate::domain::schedule::OverlapPolicy;
    match pb::OverlapPolicy::try_from(v).ok()? {
        pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Skip => Some(OverlapPolicy::Skip),
        pb::OverlapPolicy::Allow => Some(OverlapPolicy::Allow),
        pb::OverlapPolicy::CancelPrevious => Some(OverlapPolicy::CancelPrevious),
    }
}
