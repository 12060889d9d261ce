//! The life of runs and their steps: submit, cancel, retry, and every
//! step transition from ready to final.

use super::*;

impl State {
    /// Makes a run of `spec` (or finds the one its idempotency key made):
    /// its id, and whether it is new.
    pub fn submit(
        &mut self,
        tx: &mut Tx,
        spec: RunSpec,
        idempotency_key: Option<String>,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<(String, bool)> {
        self.submit_retrying(tx, spec, idempotency_key, actor, reason, None)
    }

    /// Like [`submit`](Self::submit), for a run that retries `retry_of`
    /// with other parameter values.
    pub fn submit_retrying(
        &mut self,
        tx: &mut Tx,
        spec: RunSpec,
        idempotency_key: Option<String>,
        actor: &Actor,
        reason: &str,
        retry_of: Option<String>,
    ) -> EngineResult<(String, bool)> {
        let spec = self.with_default_timeouts(spec);
        // Keys are each submitter's own: another identity's key names
        // another run.
        if let Some(key) = &idempotency_key
            && let Some(existing) = self
                .idempotency
                .get(&(actor.name.clone(), key.clone()))
                .and_then(|id| self.runs.get(id))
        {
            if !existing.made_from(&spec) {
                return Err(EngineError::AlreadyExists(existing.key_reused(key)));
            }
            return Ok((existing.id.clone(), false));
        }
        self.check_submit(&spec, actor)?;
        // Monotonic, so that runs sort in the order they were submitted even
        // within a millisecond, and pages of them never skip one.
        let id = self
            .run_ids
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string();
        let deadline_at = spec.timeout_ms.map(|t| tx.now.saturating_add(ms_of(t)));
        let run = Run {
            id: id.clone(),
            name: spec.name,
            labels: spec.labels,
            timeout_ms: spec.timeout_ms,
            deadline_at,
            submitted_by: actor.name.clone(),
            state: RunState::Queued,
            created_at: tx.now,
            updated_at: tx.now,
            finished_at: None,
            current_step: 0,
            steps: spec
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| Step::new(i as u32, s))
                .collect(),
            message: String::new(),
            idempotency_key: idempotency_key.clone(),
            retried_by: Vec::new(),
            rejected_by: None,
            params: spec.params,
            template: spec.template,
            retry_of,
            concurrency: spec.concurrency,
            holds_key: false,
        };
        if let Some(k) = idempotency_key {
            self.idempotency.insert((actor.name.clone(), k), id.clone());
        }
        let steps = run.steps.len();
        let msg = format!(
            "run {} submitted with {steps} step{}",
            run.name,
            if steps == 1 { "" } else { "s" }
        );
        self.runs.insert(id.clone(), run);
        if let Some(at) = deadline_at {
            self.timers
                .push(Reverse((at, Timer::RunDeadline(id.clone()))));
        }
        tx.run_changed(&id);
        for index in 0..steps as u32 {
            tx.step_changed(&id, index);
        }
        self.emit(tx, actor, reason, Ev::new("run.submitted", msg).run(&id));
        self.start_step(tx, &id, 0, actor, reason);
        Ok((id, true))
    }

    /// Whether a spec may be submitted now: its name is not quarantined and
    /// every secret it names is one this engine has.
    pub fn check_submit(&self, spec: &RunSpec, actor: &Actor) -> EngineResult<()> {
        if let Some(q) = self.quarantines.get(&spec.name) {
            return Err(EngineError::FailedPrecondition(format!(
                "run name {:?} is quarantined since {}: {}",
                q.name,
                time_word(q.since),
                q.message
            )));
        }
        self.check_timeouts(spec)?;
        self.check_secrets(spec, &actor.name)
    }

    /// Refuses a spec whose env names a secret this engine does not have,
    /// or one outside the secret's scope for this step and `submitter`.
    pub(super) fn check_secrets(&self, spec: &RunSpec, submitter: &str) -> EngineResult<()> {
        for (i, step) in spec.steps.iter().enumerate() {
            let crate::domain::StepKindSpec::Exec(exec) = &step.kind else {
                continue;
            };
            for entry in &exec.env {
                if let Some(name) = &entry.secret
                    && !self.cfg.secrets.contains(name)
                {
                    return Err(EngineError::InvalidArgument(format!(
                        "step {} ({:?}): env {} names the secret {name:?}, which this engine does not have; \
                         define it in the engine config under [secrets] as {name} = {{ file = \"PATH\" }} \
                         or {name} = {{ env = \"VARIABLE\" }} and restart the engine, or fix the name",
                        i + 1,
                        step.name,
                        entry.name
                    )));
                }
                if let Some(name) = &entry.secret
                    && let Some(why) = self.cfg.secrets.refuse(name, &exec.queue, submitter)
                {
                    return Err(EngineError::PermissionDenied(format!(
                        "step {} ({:?}): env {}: {why}",
                        i + 1,
                        step.name,
                        entry.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn cancel_run(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Run> {
        self.cancel(tx, id, actor, reason)?;
        self.get_run(id, tx.now)
    }

    /// Why `run` cannot be cancelled, if it cannot.
    pub(super) fn cancel_refusal(run: &Run) -> Option<EngineError> {
        run.state.is_final().then(|| {
            EngineError::FailedPrecondition(format!(
                "run {} is already {}; only a queued, running or waiting run can be cancelled",
                run.id,
                word(run.state)
            ))
        })
    }

    /// Cancels a run in memory: its current step stops, the run ends.
    pub(super) fn cancel(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<()> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        if let Some(refusal) = Self::cancel_refusal(run) {
            return Err(refusal);
        }
        let index = run.current_step;
        self.stop_step(
            tx,
            id,
            index,
            StepState::Cancelled,
            "run cancelled",
            actor,
            reason,
        );
        self.finish_run(
            tx,
            id,
            RunState::Cancelled,
            format!("cancelled by {}", actor.name),
            actor,
            reason,
        );
        Ok(())
    }

    /// Retries a failed run from the step that failed, with a fresh attempt budget.
    pub fn retry_run(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Run> {
        self.retry(tx, id, actor, reason)?;
        self.get_run(id, tx.now)
    }

    /// Why `run` cannot be retried, if it cannot.
    pub(super) fn retry_refusal(run: &Run) -> Option<EngineError> {
        let id = &run.id;
        let step_state = run.step(run.current_step).map(|s| s.state);
        if run.state != RunState::Failed
            || !matches!(step_state, Some(StepState::Dead | StepState::Failed))
        {
            return Some(EngineError::FailedPrecondition(format!(
                "run {id} is {}; only a failed run (a dead or failed step) can be retried",
                word(run.state)
            )));
        }
        run.rejected_by.as_ref().map(|by| {
            EngineError::FailedPrecondition(format!(
                "run {id} was rejected by {by}, and a rejection is final; submit the run again \
                 if it should still happen: the new run asks for a new approval"
            ))
        })
    }

    /// Retries a failed run in memory from its failed step.
    pub(super) fn retry(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<()> {
        let run = self
            .runs
            .get_mut(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        if let Some(refusal) = Self::retry_refusal(run) {
            return Err(refusal);
        }
        let index = run.current_step;
        if !run.retried_by.contains(&actor.name) {
            run.retried_by.push(actor.name.clone());
        }
        run.state = RunState::Running;
        run.finished_at = None;
        run.message.clear();
        // A retried run gets its whole `timeout` again.
        run.deadline_at = run.timeout_ms.map(|t| tx.now.saturating_add(ms_of(t)));
        let deadline = run.deadline_at;
        if let Some(step) = run.step_mut(index) {
            step.attempt_base = step.attempt;
            step.given_back = 0;
            step.exit_code = None;
            step.message.clear();
            step.finished_at = None;
            step.approval_id = None;
        }
        if let Some(at) = deadline {
            self.timers
                .push(Reverse((at, Timer::RunDeadline(id.to_owned()))));
        }
        tx.run_changed(id);
        tx.step_changed(id, index);
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                "run.retried",
                format!("step {} gets new attempts", self.step_name(id, index)),
            )
            .step(id, index),
        );
        self.start_step(tx, id, index, actor, reason);
        Ok(())
    }

    /// Starts step `index` of a run: exec steps go to their queue, approval
    /// steps open an approval.
    pub(super) fn start_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        run.current_step = index;
        run.updated_at = tx.now;
        tx.run_changed(run_id);
        let submitted_by = run.submitted_by.clone();
        let retried_by = run.retried_by.clone();
        let Some(step) = run.step_mut(index) else {
            return;
        };
        match step.spec.kind.clone() {
            // Queued until a worker takes the step (`make_ready`, `lease_step`).
            StepKindSpec::Exec(_) => self.make_ready(tx, run_id, index, actor, reason),
            StepKindSpec::Approval(spec) => {
                let id = ulid::Ulid::new().to_string();
                step.state = StepState::Waiting;
                step.approval_id = Some(id.clone());
                step.started_at = Some(tx.now);
                run.state = RunState::WaitingApproval;
                let deadline_at = spec
                    .timeout_ms
                    .map(|t| tx.now + i64::try_from(t).unwrap_or(i64::MAX / 4));
                let a = Approval {
                    id: id.clone(),
                    run_id: run_id.to_owned(),
                    step_index: index,
                    state: ApprovalState::Pending,
                    submitted_by,
                    spec,
                    decisions: vec![],
                    requested_at: tx.now,
                    deadline_at,
                    decided_at: None,
                    retried_by,
                    overdue_noted: false,
                };
                if let Some(d) = deadline_at {
                    self.timers
                        .push(Reverse((d, Timer::ApprovalDeadline(id.clone()))));
                    self.set_overdue_timer(&a);
                }
                tx.step_changed(run_id, index);
                tx.approvals.insert(id.clone());
                let ev = Ev::new("approval.requested", "step waits for approval").approval(&a);
                self.approvals.insert(id, a);
                self.emit(tx, actor, reason, ev);
            }
        }
    }

    /// Puts an exec step on its queue's ready list.
    pub(super) fn make_ready(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        // A run whose current step waits for a worker is queued, not running.
        if !run.state.is_final() && run.current_step == index && run.state != RunState::Queued {
            run.state = RunState::Queued;
            run.updated_at = tx.now;
            tx.run_changed(run_id);
        }
        let Some(step) = run.step_mut(index) else {
            return;
        };
        step.state = StepState::Queued;
        step.ready_since = Some(tx.now);
        step.next_attempt_at = None;
        step.worker_id = None;
        let queue = step.queue().unwrap_or_default().to_owned();
        tx.step_changed(run_id, index);
        self.enqueue_ready(run_id, index);
        self.queue_live(&queue).enqueued.push_back(tx.now);
        let q = self.queue_live(&queue);
        trim_window(&mut q.enqueued, tx.now);
        trim_window(&mut q.completed, tx.now);
        let ev = Ev::new(
            "step.queued",
            format!(
                "step {} ready on queue {queue}",
                self.step_name(run_id, index)
            ),
        )
        .step(run_id, index)
        .queue(&queue);
        self.emit(tx, actor, reason, ev);
    }

    /// Returns a step whose lease ended early to its queue, unless the run
    /// has moved on (cancelled, failed).
    pub(super) fn requeue(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get(run_id) else {
            return;
        };
        let live = run
            .step(index)
            .is_some_and(|s| matches!(s.state, StepState::Leased | StepState::Running));
        if run.state.is_final() || !live {
            return;
        }
        // The step did not fail: the attempt is given back.
        if let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) {
            step.given_back += 1;
        }
        self.make_ready(tx, run_id, index, actor, reason);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn succeed_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        exit: Option<i32>,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let last = index as usize + 1 >= run.steps.len();
        let Some(step) = run.step_mut(index) else {
            return;
        };
        step.state = StepState::Succeeded;
        step.exit_code = exit;
        step.finished_at = Some(tx.now);
        step.message = message;
        tx.step_changed(run_id, index);
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                "step.succeeded",
                format!("step {} succeeded", self.step_name(run_id, index)),
            )
            .step(run_id, index),
        );
        if last {
            self.finish_run(
                tx,
                run_id,
                RunState::Succeeded,
                "every step succeeded".into(),
                actor,
                reason,
            );
        } else {
            self.start_step(tx, run_id, index + 1, actor, reason);
        }
    }

    pub(super) fn attempt_failed(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        exit: Option<i32>,
        message: String,
        actor: &Actor,
    ) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        step.exit_code = exit;
        if step.has_attempts_left() {
            let delay = step
                .exec()
                .map_or(0, |e| e.backoff_after(step.attempts_counted()));
            let due = tx.now + i64::try_from(delay).unwrap_or(i64::MAX / 4);
            step.state = StepState::RetryWait;
            step.next_attempt_at = Some(due);
            step.message = message.clone();
            let queue = step.queue().unwrap_or_default().to_owned();
            tx.step_changed(run_id, index);
            self.queue_live(&queue).delayed += 1;
            self.timers
                .push(Reverse((due, Timer::RetryDue(run_id.to_owned(), index))));
            let msg = format!(
                "step {} failed ({message}); retry in {}",
                self.step_name(run_id, index),
                humantime::format_duration(Duration::from_millis(delay))
            );
            self.emit(
                tx,
                actor,
                "",
                Ev::new("step.retry_scheduled", msg)
                    .step(run_id, index)
                    .queue(&queue),
            );
        } else {
            let attempts = step.attempt;
            let msg = format!(
                "step {} dead after {attempts} attempts: {message}",
                self.step_name(run_id, index)
            );
            self.fail_step(tx, run_id, index, StepState::Dead, message, actor, "");
            self.finish_run(tx, run_id, RunState::Failed, msg, actor, "");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        state: StepState,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        step.state = state;
        step.finished_at = Some(tx.now);
        step.message = message.clone();
        tx.step_changed(run_id, index);
        let kind = if state == StepState::Dead {
            "step.dead"
        } else {
            "step.failed"
        };
        self.emit(
            tx,
            actor,
            reason,
            Ev::new(
                kind,
                format!("step {}: {message}", self.step_name(run_id, index)),
            )
            .step(run_id, index),
        );
    }

    /// Takes a step out of whatever it is doing (queue, lease, backoff,
    /// approval) and leaves it in `state`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stop_step(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        state: StepState,
        why: &str,
        actor: &Actor,
        reason: &str,
    ) {
        let Some(step) = self.runs.get(run_id).and_then(|r| r.step(index)).cloned() else {
            return;
        };
        let queue = step.queue().unwrap_or_default().to_owned();
        match step.state {
            StepState::Queued => self.remove_ready(&queue, run_id, index),
            StepState::RetryWait => {
                let q = self.queue_live(&queue);
                q.delayed = q.delayed.saturating_sub(1);
            }
            StepState::Leased | StepState::Running => {
                if let Some(lease) = step
                    .lease_id
                    .as_deref()
                    .and_then(|id| self.leases.get(id))
                    .cloned()
                {
                    self.end_lease(tx, &lease.id, LeaseState::Released);
                    let ev =
                        Ev::new("lease.released", format!("lease released: {why}")).lease(&lease);
                    self.emit(tx, actor, reason, ev);
                    self.cancel_on_worker(tx, &lease, why);
                    self.maybe_recycle(tx, &lease.worker_id, actor, reason);
                }
            }
            StepState::Waiting => {
                if let Some(a) = step
                    .approval_id
                    .as_deref()
                    .and_then(|id| self.approvals.get_mut(id))
                {
                    a.state = ApprovalState::Cancelled;
                    a.decided_at = Some(tx.now);
                    tx.approvals.insert(a.id.clone());
                    let ev = Ev::new("approval.cancelled", why.to_owned()).approval(a);
                    self.emit(tx, actor, reason, ev);
                }
            }
            _ => return,
        }
        if let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) {
            step.state = state;
            step.finished_at = Some(tx.now);
            step.message = why.to_owned();
            tx.step_changed(run_id, index);
        }
    }

    pub(super) fn finish_run(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        state: RunState,
        message: String,
        actor: &Actor,
        reason: &str,
    ) {
        self.release_key(run_id);
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        run.state = state;
        run.finished_at = Some(tx.now);
        self.finished.push_back((tx.now, run_id.to_owned()));
        self.finished_pushed += 1;
        run.updated_at = tx.now;
        run.message = message.clone();
        tx.run_changed(run_id);
        let kind = match state {
            RunState::Succeeded => "run.succeeded",
            RunState::Cancelled => "run.cancelled",
            _ => "run.failed",
        };
        self.emit(tx, actor, reason, Ev::new(kind, message).run(run_id));
    }

    /// Drops finished runs beyond the cache's bounds from memory, with
    /// their decided approvals. Called once their last change is committed:
    /// the store answers for them from then on.
    pub fn evict(&mut self, now: Millis) {
        let max_age = ms(self.cfg.finished_runs_kept_for);
        while let Some((at, _)) = self.finished.front() {
            let front = self.finished_pushed - self.finished.len() as u64;
            if front >= self.finished_committed
                || (self.finished.len() <= self.cfg.finished_runs_kept && *at >= now - max_age)
            {
                break;
            }
            let Some((at, id)) = self.finished.pop_front() else {
                break;
            };
            // A run retried since it finished is live again (or finished
            // later, with a later entry).
            let Some(run) = self
                .runs
                .get(&id)
                .filter(|r| r.state.is_final() && r.finished_at == Some(at))
            else {
                continue;
            };
            for approval in run.steps.iter().filter_map(|s| s.approval_id.as_deref()) {
                if self
                    .approvals
                    .get(approval)
                    .is_some_and(|a| a.state != ApprovalState::Pending)
                {
                    self.approvals.remove(approval);
                }
            }
            if let Some(key) = run.idempotency_key.clone() {
                self.idempotency.remove(&(run.submitted_by.clone(), key));
            }
            self.runs.remove(&id);
        }
        self.compact_timers();
    }

    /// A mark of what has been applied so far, taken when its batch is
    /// built; [`committed`](Self::committed) with it once that batch is.
    pub fn sealed(&self) -> u64 {
        self.finished_pushed
    }

    /// The batch sealed at `mark` is committed: the runs it finished may
    /// leave memory (see [`evict`](Self::evict)).
    pub fn committed(&mut self, mark: u64) {
        self.finished_committed = self.finished_committed.max(mark);
    }

    /// Puts a run read from the store back in memory (an operator acts on a
    /// run that had left the cache); a run already here is left as it is.
    pub fn adopt_run(&mut self, run: Run) {
        if self.runs.contains_key(&run.id) {
            return;
        }
        if run.state.is_final() {
            self.finished
                .push_back((run.finished_at.unwrap_or(run.updated_at), run.id.clone()));
            self.finished_pushed += 1;
        }
        if let Some(key) = &run.idempotency_key {
            self.idempotency
                .insert((run.submitted_by.clone(), key.clone()), run.id.clone());
        }
        self.runs.insert(run.id.clone(), run);
    }

    /// Whether a run is in memory (live, or finished recently).
    /// The spec text and parameter values a run was made from, for a
    /// retry with other values; FAILED_PRECONDITION for a spec that
    /// declares no parameters.
    pub fn run_template(&self, id: &str) -> EngineResult<(String, BTreeMap<String, String>)> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        match &run.template {
            Some(t) => Ok((t.clone(), run.params.clone())),
            None => Err(EngineError::FailedPrecondition(format!(
                "run {id} ({}) declares no parameters, so there are none to change; \
                 retry it without -p to go on from its failed step",
                run.name
            ))),
        }
    }

    pub fn has_run(&self, id: &str) -> bool {
        self.runs.contains_key(id)
    }
}
