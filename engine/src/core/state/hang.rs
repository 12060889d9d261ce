//! Hang detection: a default and a maximum step timeout, run deadlines,
//! steps marked hung when they print nothing for their `quiet_timeout`, and
//! run names quarantined when their attempts fail or time out too often.

use super::*;

impl State {
    /// `spec` with the engine's `default_step_timeout` on every exec step
    /// that sets no `timeout`.
    pub(super) fn with_default_timeouts(&self, mut spec: RunSpec) -> RunSpec {
        let default = u64::try_from(self.cfg.default_step_timeout.as_millis()).unwrap_or(u64::MAX);
        for step in &mut spec.steps {
            if let StepKindSpec::Exec(exec) = &mut step.kind {
                exec.timeout_ms.get_or_insert(default);
            }
        }
        spec
    }

    /// Refuses a step `timeout` longer than `max_step_timeout`.
    pub(super) fn check_timeouts(&self, spec: &RunSpec) -> EngineResult<()> {
        let max = self.cfg.max_step_timeout;
        for (i, step) in spec.steps.iter().enumerate() {
            let StepKindSpec::Exec(exec) = &step.kind else {
                continue;
            };
            if let Some(t) = exec.timeout_ms
                && Duration::from_millis(t) > max
            {
                return Err(EngineError::InvalidArgument(format!(
                    "step {} ({:?}): timeout {} is longer than this engine allows ({}, max_step_timeout \
                     in the engine config); give a shorter timeout, or have the engine's operator raise \
                     max_step_timeout",
                    i + 1,
                    step.name,
                    humantime::format_duration(Duration::from_millis(t)),
                    humantime::format_duration(max),
                )));
            }
        }
        Ok(())
    }

    /// Timers of a state just loaded: run deadlines, and quiet checks of
    /// live leases, whose output is counted from `now`.
    pub(super) fn load_hang_timers(&mut self, now: Millis) {
        let deadlines: Vec<(Millis, String)> = self
            .runs
            .values()
            .filter(|r| !r.state.is_final())
            .filter_map(|r| Some((r.deadline_at?, r.id.clone())))
            .collect();
        for (at, id) in deadlines {
            self.timers.push(Reverse((at, Timer::RunDeadline(id))));
        }
        let quiet: Vec<Lease> = self.leases.values().cloned().collect();
        for lease in quiet {
            self.arm_quiet_check(&lease, now);
        }
    }

    /// A run past its `timeout`: its step in hand is stopped and the run
    /// fails.
    pub(super) fn run_deadline(&mut self, tx: &mut Tx, id: &str) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        // Retried since this timer was set: a later one is.
        if run.state.is_final() || run.deadline_at.is_none_or(|at| at > tx.now) {
            return;
        }
        let index = run.current_step;
        let timeout = Duration::from_millis(run.timeout_ms.unwrap_or(0));
        let engine = Actor::engine();
        let why = format!(
            "run timed out: it was still going after its timeout of {}",
            humantime::format_duration(timeout)
        );
        self.stop_step(tx, id, index, StepState::Failed, &why, &engine, "");
        self.finish_run(tx, id, RunState::Failed, why, &engine, "");
    }

    /// The `quiet_timeout` of a lease's step.
    fn quiet_ms(&self, lease: &Lease) -> Option<Millis> {
        let step = self.runs.get(&lease.run_id)?.step(lease.step_index)?;
        step.exec()?.quiet_timeout_ms.map(ms_of)
    }

    /// Starts watching a lease's output, from `from`, when its step has a
    /// `quiet_timeout`.
    pub(super) fn arm_quiet_check(&mut self, lease: &Lease, from: Millis) {
        if let Some(quiet) = self.quiet_ms(lease) {
            self.last_output.insert(lease.id.clone(), from);
            self.timers.push(Reverse((
                from.saturating_add(quiet),
                Timer::QuietCheck(lease.id.clone()),
            )));
        }
    }

    /// Output of a live lease arrived: a step marked hung is not any more.
    pub(super) fn note_output(&mut self, tx: &mut Tx, lease: &Lease) {
        // Only steps with a quiet_timeout are watched.
        let Some(last) = self.last_output.get_mut(&lease.id) else {
            return;
        };
        *last = tx.now;
        let Some(step) = self
            .runs
            .get_mut(&lease.run_id)
            .and_then(|r| r.step_mut(lease.step_index))
            .filter(|s| s.hung)
        else {
            return;
        };
        step.hung = false;
        tx.step_changed(&lease.run_id, lease.step_index);
        if let Some(quiet) = self.quiet_ms(lease) {
            self.timers.push(Reverse((
                tx.now.saturating_add(quiet),
                Timer::QuietCheck(lease.id.clone()),
            )));
        }
        let msg = format!(
            "step {} printed again: no longer hung",
            self.step_name(&lease.run_id, lease.step_index)
        );
        self.emit(
            tx,
            &Actor::worker(&lease.worker_id),
            "",
            Ev::new("step.unhung", msg).lease(lease),
        );
    }

    /// Whether a lease's step has printed nothing for its `quiet_timeout`:
    /// then it is marked hung, and left running.
    pub(super) fn quiet_check(&mut self, tx: &mut Tx, id: &str) {
        let Some(lease) = self.leases.get(id).cloned() else {
            return;
        };
        let (Some(quiet), Some(last)) = (self.quiet_ms(&lease), self.last_output.get(id).copied())
        else {
            return;
        };
        let due = last.saturating_add(quiet).max(self.heartbeat_grace_until);
        if due > tx.now {
            self.timers
                .push(Reverse((due, Timer::QuietCheck(id.to_owned()))));
            return;
        }
        let Some(run) = self.runs.get_mut(&lease.run_id) else {
            return;
        };
        let run_name = run.name.clone();
        let Some(step) = run.step_mut(lease.step_index).filter(|s| !s.hung) else {
            return;
        };
        step.hung = true;
        tx.step_changed(&lease.run_id, lease.step_index);
        let msg = format!(
            "step {run_name}/{} hung: no output for {} (its quiet_timeout) on {}; it keeps running: \
             look at the process on that host, or cancel the run",
            self.step_name(&lease.run_id, lease.step_index),
            humantime::format_duration(Duration::from_millis(u64::try_from(quiet).unwrap_or(0))),
            lease.worker_id,
        );
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("step.hung", msg).lease(&lease),
        );
    }

    /// Counts an attempt that failed or timed out against its run name,
    /// and quarantines the name once that happens
    /// `failure_quarantine_after` times within `failure_quarantine_window`.
    pub(super) fn count_failure(&mut self, tx: &mut Tx, lease: &Lease, outcome: pb::Outcome) {
        let after = self.cfg.failure_quarantine_after;
        if after == 0 || !matches!(outcome, pb::Outcome::Failed | pb::Outcome::TimedOut) {
            return;
        }
        let Some(name) = self.runs.get(&lease.run_id).map(|r| r.name.clone()) else {
            return;
        };
        let window = ms(self.cfg.failure_quarantine_window);
        let times = self.failed_at.entry(name.clone()).or_default();
        times.push_back(tx.now);
        while times.front().is_some_and(|t| *t <= tx.now - window) {
            times.pop_front();
        }
        let count = times.len() as u32;
        if count < after || self.quarantines.contains_key(&name) {
            return;
        }
        let q = Quarantine {
            name: name.clone(),
            since: tx.now,
            stuck_count: count,
            message: format!(
                "{count} attempts of runs named {name} failed or timed out within {} \
                 (failure_quarantine_after and failure_quarantine_window in the engine config): new runs \
                 of it are refused and its queued steps wait until an operator clears it with \
                 `opsdeck unquarantine {name} --reason TEXT`",
                humantime::format_duration(self.cfg.failure_quarantine_window)
            ),
        };
        let msg = format!("run name {name} quarantined: {}", q.message);
        tx.quarantines.insert(name.clone());
        self.quarantines.insert(name, q.clone());
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("run_name.quarantined", msg)
                .run(&lease.run_id)
                .quarantine(&q),
        );
    }
}
