//! Ready queues and dispatch: which step goes to which worker.

use super::*;

/// Ready steps of one queue one dispatch passes over (their `worker` labels
/// match no free worker) before it stops looking further down the queue.
const MAX_PASSED_OVER: usize = 256;
/// Ready steps of one queue one dispatch passes over because their runs
/// wait for a concurrency key.
const MAX_HELD_BACK: usize = 4096;

impl State {
    /// Pauses or resumes a queue. A name no step has used and no worker
    /// serves is most likely a typo: NOT_FOUND listing the known queues,
    /// unless `create` asks to pause it ahead of its first use.
    pub fn set_queue_paused(
        &mut self,
        tx: &mut Tx,
        name: &str,
        paused: bool,
        create: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Queue> {
        validate_queue_name(name).map_err(EngineError::InvalidArgument)?;
        if !(create && paused) {
            let hint = if paused {
                " (to pause it before its first use, pass --create)"
            } else {
                ""
            };
            self.known_queue(name, hint)?;
        }
        let q = self.queue_live(name);
        if q.queue.paused != paused {
            q.queue.paused = paused;
            q.paused_by = paused.then(|| (actor.name.clone(), tx.now, reason.to_owned()));
            tx.queues.insert(name.to_owned());
            let (kind, msg) = if paused {
                (
                    "queue.paused",
                    format!("queue {name} paused: no new leases"),
                )
            } else {
                ("queue.resumed", format!("queue {name} resumed"))
            };
            self.emit(tx, actor, reason, Ev::new(kind, msg).queue(name));
        }
        self.queue_pb(name, tx.now)
            .ok_or_else(|| not_found("queue", name, "opsdeck queues"))
    }

    /// NOT_FOUND, listing the known queues (and `hint`), for a name no
    /// step has used and no worker serves: most likely a typo.
    pub(super) fn known_queue(&self, name: &str, hint: &str) -> EngineResult<()> {
        let known = self.queues.contains_key(name)
            || self
                .workers
                .values()
                .any(|w| w.queues.iter().any(|q| q == name));
        if known {
            return Ok(());
        }
        let mut names: BTreeSet<&str> = self.queues.keys().map(String::as_str).collect();
        names.extend(
            self.workers
                .values()
                .flat_map(|w| w.queues.iter().map(String::as_str))
                .filter(|q| *q != crate::domain::ANY_QUEUE),
        );
        let known = if names.is_empty() {
            "none yet".to_owned()
        } else {
            names.into_iter().collect::<Vec<_>>().join(", ")
        };
        Err(EngineError::NotFound(format!(
            "no queue named {name:?}; known queues: {known}{hint}"
        )))
    }

    /// Leases ready steps to free workers: per queue, highest priority and
    /// oldest first, round-robin among the workers that can take them.
    pub fn dispatch(&mut self, tx: &mut Tx) {
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.queue.paused && !q.ready.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        if queues.is_empty() {
            return;
        }
        let mut free: Vec<(String, u32)> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Online && self.sessions.contains_key(&w.id))
            .map(|w| {
                let free = w.slots.saturating_sub(self.slots_taken(&w.id));
                (w.id.clone(), self.breaker_slots(w, free))
            })
            .filter(|(_, f)| *f > 0)
            .collect();
        if free.is_empty() {
            return;
        }
        let n = free.len();
        free.rotate_left(self.rr % n);
        self.rr = self.rr.wrapping_add(1);
        // Each worker's steps go in one message.
        let mut assigned: BTreeMap<String, Vec<pb::Assignment>> = BTreeMap::new();
        for queue in queues {
            // Steps whose `worker` labels no free worker carries keep their
            // place; the ones behind them may go meanwhile.
            let mut passed_over = Vec::new();
            let mut held_back = 0;
            while free
                .iter()
                .any(|(id, f)| *f > 0 && self.workers.get(id).is_some_and(|w| w.serves(&queue)))
                && passed_over.len() - held_back < MAX_PASSED_OVER
                && held_back < MAX_HELD_BACK
                && self.queue_full(&queue).is_none()
            {
                let Some(key) = self.next_ready(&queue) else {
                    break;
                };
                // Its run waits for its concurrency key: it keeps its place.
                if self.key_holds_back(&key.run_id).is_some() {
                    held_back += 1;
                    passed_over.push(key);
                    continue;
                }
                let exec = self
                    .runs
                    .get(&key.run_id)
                    .and_then(|r| r.step(key.step))
                    .and_then(|s| s.exec());
                let slot = free.iter().position(|(id, f)| {
                    *f > 0
                        && self
                            .workers
                            .get(id)
                            .is_some_and(|w| exec.is_some_and(|e| w.takes(e)))
                });
                let Some(slot) = slot else {
                    passed_over.push(key);
                    continue;
                };
                let worker_id = free[slot].0.clone();
                free[slot].1 -= 1;
                // Spread work: the next step goes to the next worker.
                let entry = free.remove(slot);
                free.push(entry);
                if let Some(a) = self.grant(tx, &key.run_id, key.step, &worker_id) {
                    assigned.entry(worker_id).or_default().push(a);
                }
            }
            for key in passed_over {
                self.put_back(&queue, key);
            }
        }
        for (worker_id, mut batch) in assigned {
            let kind = if batch.len() == 1 {
                match batch.pop() {
                    Some(a) => pb::engine_message::Kind::Assign(a),
                    None => continue,
                }
            } else {
                pb::engine_message::Kind::Assignments(pb::Assignments { assignments: batch })
            };
            self.send(tx, &worker_id, kind);
        }
    }

    /// Puts a step taken with [`next_ready`](Self::next_ready) back in its
    /// place.
    fn put_back(&mut self, queue: &str, key: ReadyKey) {
        let since = self
            .runs
            .get(&key.run_id)
            .and_then(|r| r.step(key.step))
            .and_then(|s| s.ready_since)
            .unwrap_or(0);
        let q = self.queue_live(queue);
        q.ages.insert(key.order, since);
        q.ready.insert(key);
    }

    /// Takes the next ready step of a queue, passing over quarantined run names.
    pub(super) fn next_ready(&mut self, queue: &str) -> Option<ReadyKey> {
        let q = self.queues.get_mut(queue)?;
        if self.quarantines.is_empty() {
            let key = q.ready.pop_first()?;
            q.ages.remove(&key.order);
            self.changed_queues.insert(queue.to_owned());
            return Some(key);
        }
        let runs = &self.runs;
        let quarantines = &self.quarantines;
        let key = q
            .ready
            .iter()
            .find(|k| {
                runs.get(&k.run_id)
                    .is_none_or(|r| !quarantines.contains_key(&r.name))
            })?
            .clone();
        q.ready.remove(&key);
        q.ages.remove(&key.order);
        self.changed_queues.insert(queue.to_owned());
        Some(key)
    }

    /// Leases a step to a worker: the assignment to send it.
    pub(super) fn grant(
        &mut self,
        tx: &mut Tx,
        run_id: &str,
        index: u32,
        worker_id: &str,
    ) -> Option<pb::Assignment> {
        let now = tx.now;
        self.take_key(tx, run_id);
        let run = self.runs.get_mut(run_id)?;
        let run_name = run.name.clone();
        if run.state == RunState::Queued {
            run.state = RunState::Running;
            run.updated_at = now;
            tx.run_changed(run_id);
        }
        let step = run.step_mut(index)?;
        let exec = step.exec().cloned()?;
        step.attempt += 1;
        step.fence += 1;
        let lease = Lease {
            id: ulid::Ulid::new().to_string(),
            run_id: run_id.to_owned(),
            step_index: index,
            worker_id: worker_id.to_owned(),
            attempt: step.attempt,
            fencing_token: step.fence,
            state: LeaseState::Active,
            granted_at: now,
            expires_at: now + ms(self.cfg.lease_ttl),
            ended_at: None,
            queue: exec.queue.clone(),
            stuck: false,
            waited_ms: step
                .ready_since
                .map(|since| u64::try_from(now - since).unwrap_or(0)),
        };
        step.state = StepState::Leased;
        step.lease_id = Some(lease.id.clone());
        step.worker_id = Some(worker_id.to_owned());
        step.exit_code = None;
        let step_name = step.spec.name.clone();
        tx.step_changed(run_id, index);
        tx.leases.insert(lease.id.clone(), lease.clone());
        self.queue_live(&exec.queue).running += 1;
        self.worker_leases
            .entry(worker_id.to_owned())
            .or_default()
            .insert(lease.id.clone());
        self.timers.push(Reverse((
            lease.expires_at,
            Timer::LeaseExpiry(lease.id.clone()),
        )));
        self.leases.insert(lease.id.clone(), lease.clone());
        if let Some(at) = self.stuck_check_at(&lease) {
            self.timers
                .push(Reverse((at, Timer::StuckCheck(lease.id.clone()))));
        }
        self.arm_quiet_check(&lease, now);
        let msg = format!(
            "{run_name}/{step_name} attempt {} leased to {worker_id}",
            lease.attempt
        );
        self.emit(
            tx,
            &Actor::engine(),
            "",
            Ev::new("lease.granted", msg).lease(&lease),
        );
        let (shell, argv) = match exec.command {
            crate::domain::Command::Shell(s) => (s, vec![]),
            crate::domain::Command::Argv(a) => (String::new(), a),
        };
        Some(pb::Assignment {
            lease_id: lease.id.clone(),
            fencing_token: lease.fencing_token,
            run_id: run_id.to_owned(),
            step_index: index,
            step_name,
            attempt: lease.attempt,
            shell,
            argv,
            secret_env: exec
                .env
                .iter()
                .filter(|e| e.secret.is_some())
                .map(|e| e.name.clone())
                .collect(),
            env: self.step_env(exec.env),
            workdir: exec.workdir.unwrap_or_default(),
            timeout_ms: exec.timeout_ms.unwrap_or(0),
            expires_at_ms: lease.expires_at,
        })
    }

    /// A step's env as its worker gets it: secret entries get their values
    /// from the engine's secrets. One the engine no longer has (its config
    /// changed since the submit) is left out, and said by name.
    pub(super) fn step_env(&self, env: Vec<crate::domain::EnvEntry>) -> HashMap<String, String> {
        env.into_iter()
            .filter_map(|e| match &e.secret {
                None => Some((e.name, e.value)),
                // A run stored before secrets were named kept its value.
                Some(name) if name.is_empty() => Some((e.name, e.value)),
                Some(name) => match self.cfg.secrets.get(name) {
                    Some(value) => Some((e.name, value.to_owned())),
                    None => {
                        tracing::warn!(
                            env = %e.name,
                            secret = %name,
                            "the step's env names a secret that is no longer in the engine config's [secrets]; left out"
                        );
                        None
                    }
                },
            })
            .collect()
    }

    /// A queue's live figures, to change them (made on first use).
    pub(super) fn queue_live(&mut self, name: &str) -> &mut QueueLive {
        if !self.changed_queues.contains(name) {
            self.changed_queues.insert(name.to_owned());
        }
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| QueueLive {
                queue: Queue {
                    name: name.to_owned(),
                    paused: false,
                    max_running: 0,
                },
                ..Default::default()
            })
    }

    pub(super) fn enqueue_ready(&mut self, run_id: &str, index: u32) {
        let Some(step) = self.runs.get(run_id).and_then(|r| r.step(index)) else {
            return;
        };
        let Some(exec) = step.exec() else { return };
        let (queue, priority) = (exec.queue.clone(), exec.priority);
        let since = step.ready_since.unwrap_or(0);
        self.ready_order += 1;
        self.key_wait(run_id, priority, self.ready_order);
        let key = ReadyKey {
            priority: Reverse(priority),
            order: self.ready_order,
            run_id: run_id.to_owned(),
            step: index,
        };
        let q = self.queue_live(&queue);
        q.ages.insert(key.order, since);
        q.ready.insert(key);
    }

    pub(super) fn remove_ready(&mut self, queue: &str, run_id: &str, index: u32) {
        if let Some(q) = self.queues.get_mut(queue) {
            let ages = &mut q.ages;
            q.ready.retain(|k| {
                let keep = !(k.run_id == run_id && k.step == index);
                if !keep {
                    ages.remove(&k.order);
                }
                keep
            });
            self.changed_queues.insert(queue.to_owned());
        }
    }
}
