//! Leases: what workers report under them, and how they end.

use super::*;

impl State {
    pub fn force_release(
        &mut self,
        tx: &mut Tx,
        id: &str,
        fail: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Lease> {
        let Some(lease) = self.leases.get(id).cloned() else {
            return Err(match self.recent_leases.iter().find(|l| l.id == id) {
                Some(l) => EngineError::FailedPrecondition(format!(
                    "lease {id} has already ended ({}); only an active lease can be released",
                    lease_word(l.state)
                )),
                None => not_found("lease", id, "opsdeck leases"),
            });
        };
        self.end_lease(tx, id, LeaseState::ForceReleased);
        let action = if fail { "step failed" } else { "step requeued" };
        let ev = Ev::new(
            "lease.force_released",
            format!("lease force-released by {}: {action}", actor.name),
        )
        .lease(&lease);
        self.emit(tx, actor, reason, ev);
        self.cancel_on_worker(tx, &lease, "lease force-released by an operator");
        if fail {
            let msg = format!("failed by {} (force-release): {reason}", actor.name);
            self.fail_step(
                tx,
                &lease.run_id,
                lease.step_index,
                StepState::Failed,
                msg.clone(),
                actor,
                reason,
            );
            self.finish_run(tx, &lease.run_id, RunState::Failed, msg, actor, reason);
        } else {
            self.requeue(tx, &lease.run_id, lease.step_index, actor, reason);
        }
        self.maybe_recycle(tx, &lease.worker_id, actor, reason);
        Ok(self
            .recent_leases
            .iter()
            .rev()
            .find(|l| l.id == id)
            .map(|l| convert::lease(l, self.runs.get(&l.run_id)))
            .unwrap_or_default())
    }

    pub fn step_started(&mut self, tx: &mut Tx, worker_id: &str, started: pb::StepStarted) {
        let Some(lease) = self.current_lease(worker_id, &started.lease_id, started.fencing_token)
        else {
            return;
        };
        let (run_id, index) = (lease.run_id.clone(), lease.step_index);
        self.mark_running(
            tx,
            worker_id,
            &run_id,
            index,
            &format!("(pid {})", started.pid),
        );
    }

    /// Records that a leased step runs on `worker_id`: when it says so, or
    /// (its word lost in a failover) when it reconnects holding the lease
    /// or reports the result, so that no timeline skips "running".
    pub(super) fn mark_running(
        &mut self,
        tx: &mut Tx,
        worker_id: &str,
        run_id: &str,
        index: u32,
        how: &str,
    ) {
        let Some(step) = self.runs.get_mut(run_id).and_then(|r| r.step_mut(index)) else {
            return;
        };
        if step.state != StepState::Leased {
            return;
        }
        step.state = StepState::Running;
        step.started_at = Some(tx.now);
        tx.step_changed(run_id, index);
        let msg = format!(
            "step {} running on {worker_id} {how}",
            self.step_name(run_id, index),
        );
        self.emit(
            tx,
            &Actor::worker(worker_id),
            "",
            Ev::new("step.running", msg)
                .step(run_id, index)
                .on_worker(worker_id),
        );
    }

    pub fn step_output(&mut self, tx: &mut Tx, worker_id: &str, out: pb::StepOutput) {
        let Some(lease) = self
            .current_lease(worker_id, &out.lease_id, out.fencing_token)
            .cloned()
        else {
            return;
        };
        self.note_output(tx, &lease);
        self.keep_output(tx, &lease, &out.stream, out.data);
    }

    /// Keeps output of a lease's attempt, up to the per-attempt cap. The
    /// output that reaches the cap is followed by a marker chunk (marked
    /// truncated) that says so and names the setting; later output is dropped.
    pub(super) fn keep_output(
        &mut self,
        tx: &mut Tx,
        lease: &Lease,
        stream: &str,
        mut data: Vec<u8>,
    ) {
        let cap = self.cfg.output_cap_bytes;
        let used = self.output_bytes.entry(lease.id.clone()).or_insert(0);
        if *used >= cap {
            return;
        }
        let room = cap - *used;
        let truncated = data.len() > room;
        data.truncate(room);
        *used += data.len();
        if truncated {
            // Mark the cap once; later chunks are dropped above.
            *used = cap;
        }
        let stream = if stream == "stderr" {
            "stderr"
        } else {
            "stdout"
        };
        let end = self.output_ends.entry(lease.id.clone()).or_insert(0);
        let mut chunk = |data: Vec<u8>, truncated: bool| {
            let offset = *end;
            *end += data.len() as u64;
            pb::OutputChunk {
                run_id: lease.run_id.clone(),
                step_index: lease.step_index,
                attempt: lease.attempt,
                stream: stream.to_owned(),
                data,
                at_ms: tx.now,
                truncated,
                offset,
            }
        };
        if !data.is_empty() {
            tx.outputs.push(chunk(data, false));
        }
        if truncated {
            let text = format!(
                "\n[opsdeck: output of this attempt capped at {cap} bytes (output_cap_bytes in the engine config); \
                 the rest was dropped]\n"
            );
            tx.outputs.push(chunk(text.into_bytes(), true));
        }
    }

    /// A result from a worker. Accepted only from the holder of the live
    /// lease with its fencing token; anything else is refused and recorded.
    pub fn step_result(&mut self, tx: &mut Tx, worker_id: &str, result: pb::StepResult) {
        let actor = Actor::worker(worker_id);
        // The step's process is gone, whatever becomes of its result.
        if let Some(set) = self.stopping.get_mut(worker_id) {
            set.remove(&result.lease_id);
        }
        let ack = |accepted: bool, message: String| {
            pb::engine_message::Kind::Ack(pb::ResultAck {
                lease_id: result.lease_id.clone(),
                accepted,
                message,
            })
        };
        let Some(lease) = self
            .current_lease(worker_id, &result.lease_id, result.fencing_token)
            .cloned()
        else {
            let why = match self
                .leases
                .get(&result.lease_id)
                .or_else(|| self.recent_leases.iter().find(|l| l.id == result.lease_id))
            {
                Some(l) if l.fencing_token != result.fencing_token => format!(
                    "stale fencing token {} (current {})",
                    result.fencing_token, l.fencing_token
                ),
                Some(l) if l.state != LeaseState::Active => {
                    format!("lease already {}", lease_word(l.state))
                }
                Some(l) => format!("lease is held by {}", l.worker_id),
                None => "unknown lease".to_owned(),
            };
            let msg = format!("result for lease {} refused: {why}", result.lease_id);
            let mut ev = Ev::new("result.refused", msg.clone()).on_worker(worker_id);
            if let Some(l) = self
                .recent_leases
                .iter()
                .find(|l| l.id == result.lease_id)
                .cloned()
            {
                ev = ev.step(&l.run_id, l.step_index);
            }
            self.emit(tx, &actor, "", ev);
            self.send(tx, worker_id, ack(false, msg));
            return;
        };
        self.mark_running(
            tx,
            worker_id,
            &lease.run_id,
            lease.step_index,
            "(said with its result: its start was not recorded)",
        );
        if result.output_lost_bytes > 0 && !result.output_tail.is_empty() {
            // Output sent while the engine was unreachable was lost; the
            // tail the worker kept with its result is the best there is.
            let mut data = format!(
                "[opsdeck: {} bytes of output were lost while the worker could not reach the engine; \
                 the last {} bytes of the step's output follow]\n",
                result.output_lost_bytes,
                result.output_tail.len()
            )
            .into_bytes();
            data.extend_from_slice(&result.output_tail);
            self.keep_output(tx, &lease, "stdout", data);
        }
        self.end_lease(tx, &lease.id, LeaseState::Released);
        self.queue_live(&lease.queue).completed.push_back(tx.now);
        let outcome = pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Failed);
        let msg = format!(
            "lease released: result {} accepted",
            opsdeck_proto::names::Word::word(outcome)
        );
        self.emit(tx, &actor, "", Ev::new("lease.released", msg).lease(&lease));
        let exit = result.has_exit_code.then_some(result.exit_code);
        self.breaker_result(tx, &lease, outcome);
        if outcome == pb::Outcome::Succeeded {
            self.succeed_step(
                tx,
                &lease.run_id,
                lease.step_index,
                exit,
                String::new(),
                &actor,
                "",
            );
        } else {
            self.count_failure(tx, &lease, outcome);
            let message = if result.message.is_empty() {
                format!("attempt {} failed", lease.attempt)
            } else {
                result.message.clone()
            };
            self.attempt_failed(tx, &lease.run_id, lease.step_index, exit, message, &actor);
        }
        self.send(tx, worker_id, ack(true, String::new()));
        self.maybe_recycle(tx, worker_id, &actor, "");
    }

    pub(super) fn current_lease(
        &self,
        worker_id: &str,
        lease_id: &str,
        token: u64,
    ) -> Option<&Lease> {
        self.leases
            .get(lease_id)
            .filter(|l| l.worker_id == worker_id && l.fencing_token == token)
    }

    pub(super) fn cancel_on_worker(&mut self, tx: &mut Tx, lease: &Lease, reason: &str) {
        if self.sessions.contains_key(&lease.worker_id) {
            self.stopping
                .entry(lease.worker_id.clone())
                .or_default()
                .insert(lease.id.clone());
        }
        self.send(
            tx,
            &lease.worker_id,
            pb::engine_message::Kind::Cancel(pb::CancelStep {
                lease_id: lease.id.clone(),
                reason: reason.to_owned(),
                grace_ms: self.cfg.cancel_grace.as_millis() as u64,
            }),
        );
    }

    /// Slots of `worker_id` taken: its live leases, and steps it is still
    /// stopping.
    pub(super) fn slots_taken(&self, worker_id: &str) -> u32 {
        let live = self.worker_leases.get(worker_id).map_or(0, BTreeSet::len);
        let stopping = self.stopping.get(worker_id).map_or(0, BTreeSet::len);
        (live + stopping) as u32
    }

    /// Forgets the steps `worker_id` is stopping that `held` no longer
    /// lists: their processes are gone.
    pub(super) fn stopped_unless_held(&mut self, worker_id: &str, held: &[pb::HeldLease]) {
        if let Some(set) = self.stopping.get_mut(worker_id) {
            set.retain(|id| held.iter().any(|h| h.lease_id == *id));
            if set.is_empty() {
                self.stopping.remove(worker_id);
            }
        }
    }

    pub(super) fn end_lease(&mut self, tx: &mut Tx, id: &str, state: LeaseState) {
        let Some(mut lease) = self.leases.remove(id) else {
            return;
        };
        lease.state = state;
        lease.ended_at = Some(tx.now);
        if let Some(set) = self.worker_leases.get_mut(&lease.worker_id) {
            set.remove(id);
        }
        self.output_bytes.remove(id);
        self.output_ends.remove(id);
        self.last_output.remove(id);
        let q = self.queue_live(&lease.queue);
        q.running = q.running.saturating_sub(1);
        if let Some(step) = self
            .runs
            .get_mut(&lease.run_id)
            .and_then(|r| r.step_mut(lease.step_index))
            && step.lease_id.as_deref() == Some(id)
        {
            step.lease_id = None;
            step.hung = false;
        }
        tx.step_changed(&lease.run_id, lease.step_index);
        tx.leases.insert(id.to_owned(), lease.clone());
        self.recent_leases.push_back(lease);
        while self.recent_leases.len() > RECENT_LEASES {
            self.recent_leases.pop_front();
        }
    }
}
