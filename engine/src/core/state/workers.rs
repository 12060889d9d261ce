//! Workers: sessions, hellos, heartbeats, drain and recycle.

use super::*;

impl State {
    pub fn drain_worker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        drain: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))?;
        if !drain && w.recycle_requested {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} is being recycled; it comes back undrained with the next generation"
            )));
        }
        if w.drain_requested != drain {
            w.drain_requested = drain;
            if matches!(w.state, WorkerState::Online | WorkerState::Draining) {
                w.state = if drain || w.self_draining {
                    WorkerState::Draining
                } else {
                    WorkerState::Online
                };
            }
            tx.workers.insert(id.to_owned());
            let (kind, msg) = if drain {
                (
                    "worker.draining",
                    format!("worker {id} draining: finishes what it has, takes no more"),
                )
            } else {
                ("worker.undrained", format!("worker {id} takes work again"))
            };
            self.emit(tx, actor, reason, Ev::new(kind, msg).worker(id));
            self.send(
                tx,
                id,
                pb::engine_message::Kind::Drain(pb::Drain { draining: drain }),
            );
        }
        self.get_worker(id)
    }

    pub fn recycle_worker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let connected = self.sessions.contains_key(id);
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))?;
        if !connected {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} is not connected; a recycle needs a running worker (start it again instead)"
            )));
        }
        if !w.recycle_requested {
            w.recycle_requested = true;
            w.state = WorkerState::Draining;
            tx.workers.insert(id.to_owned());
            let msg = format!(
                "worker {id} will drain, then restart as generation {}",
                w.generation + 1
            );
            self.emit(
                tx,
                actor,
                reason,
                Ev::new("worker.recycle_requested", msg).worker(id),
            );
            self.maybe_recycle(tx, id, actor, reason);
        }
        self.get_worker(id)
    }

    /// Forgets a stopped worker: its record, and with it the binding of its
    /// id to the identity that first registered it.
    pub fn forget_worker(
        &mut self,
        tx: &mut Tx,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Worker> {
        let worker = self.get_worker(id)?;
        if self.sessions.contains_key(id) {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} is connected; stop its process (or drain it and let it exit) before forgetting it"
            )));
        }
        if self.worker_leases.get(id).is_some_and(|l| !l.is_empty()) {
            return Err(EngineError::FailedPrecondition(format!(
                "worker {id} still holds leases; wait for them to expire or force-release them \
                 (`opsdeck leases`) before forgetting it"
            )));
        }
        self.workers.remove(id);
        self.worker_leases.remove(id);
        self.stopping.remove(id);
        tx.workers.remove(id);
        tx.forgotten_workers.insert(id.to_owned());
        let msg = format!(
            "worker {id} forgotten; its id is free for any identity allowed to register it"
        );
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("worker.forgotten", msg).worker(id),
        );
        Ok(worker)
    }

    /// A worker said hello on a new session, as `identity`, whose
    /// credential may serve `scope`.
    pub fn hello(
        &mut self,
        tx: &mut Tx,
        session: u64,
        identity: &str,
        scope: &AgentScope,
        hello: pb::Hello,
        out: mpsc::UnboundedSender<pb::EngineMessage>,
    ) -> EngineResult<()> {
        let id = hello.worker_id.trim().to_owned();
        crate::domain::validate_worker_id(&id).map_err(EngineError::InvalidArgument)?;
        check_hello(&id, &hello).map_err(EngineError::InvalidArgument)?;
        if let Some(why) = scope.refuse(identity, &id, &hello.queues) {
            tracing::warn!(worker_id = ?id, identity = ?identity, "worker refused: {why}");
            return Err(EngineError::PermissionDenied(why));
        }
        // A worker id belongs to the identity that first registered it, so
        // that no other credential can report for its leases or take the
        // assignments (secrets included) meant for it, connected or not.
        if let Some(owner) = self
            .workers
            .get(&id)
            .map(|w| w.identity.as_str())
            .filter(|owner| !owner.is_empty() && *owner != identity)
        {
            tracing::warn!(worker_id = ?id, identity = ?identity, owner = ?owner, "worker refused: the id belongs to another identity");
            return Err(EngineError::PermissionDenied(format!(
                "worker id {id} belongs to {owner}, which first registered it; give this worker \
                 another --id, or have an admin release the id with `opsdeck workers forget {id}` \
                 once its process is stopped"
            )));
        }
        let actor = Actor::worker(&id);
        // A second process with the same id replaces the first: the newest
        // hello is the one that can still do work.
        if self.sessions.remove(&id).is_some() {
            tracing::warn!(worker_id = %id, "a new session replaced the worker's previous one");
        }
        self.sessions.insert(
            id.clone(),
            Session {
                id: session,
                tx: out.clone(),
            },
        );
        let now = tx.now;
        let prior = self.workers.get(&id).cloned();
        let recycled = prior
            .as_ref()
            .is_some_and(|w| w.recycle_requested && hello.generation > w.generation);
        let mut w = prior.clone().unwrap_or_else(|| Worker {
            id: id.clone(),
            state: WorkerState::Online,
            queues: vec![],
            slots: 0,
            labels: BTreeMap::new(),
            version: String::new(),
            host: String::new(),
            pid: 0,
            generation: 0,
            identity: String::new(),
            registered_at: now,
            last_heartbeat_at: now,
            drain_requested: false,
            self_draining: false,
            recycle_requested: false,
            breaker: None,
            offline_long_noted: false,
        });
        w.offline_long_noted = false;
        w.queues = hello.queues.clone();
        w.slots = hello.slots;
        w.labels = hello.labels.clone().into_iter().collect();
        w.version = hello.version.clone();
        w.host = hello.host.clone();
        w.pid = hello.pid;
        w.generation = w.generation.max(hello.generation);
        w.identity = identity.to_owned();
        w.registered_at = now;
        w.last_heartbeat_at = now;
        if recycled {
            w.recycle_requested = false;
        }
        w.self_draining = hello.draining;
        w.state = if w.drain_requested || w.recycle_requested || w.self_draining {
            WorkerState::Draining
        } else {
            WorkerState::Online
        };
        let draining = w.drain_requested;
        let generation = w.generation;
        self.workers.insert(id.clone(), w);
        tx.workers.insert(id.clone());
        self.timers.push(Reverse((
            now + ms(self.cfg.worker_timeout),
            Timer::Heartbeat(id.clone()),
        )));
        let (kind, msg) = if recycled {
            (
                "worker.recycled",
                format!("worker {id} is back as generation {generation}"),
            )
        } else {
            (
                "worker.registered",
                format!("worker {id} online, serving {}", hello.queues.join(", ")),
            )
        };
        self.emit(tx, &actor, "", Ev::new(kind, msg).worker(&id));

        self.stopped_unless_held(&id, &hello.held);
        // Keep the leases it still holds; return its others to their queues
        // now rather than after their TTL.
        let held: HashMap<&str, u64> = hello
            .held
            .iter()
            .map(|h| (h.lease_id.as_str(), h.fencing_token))
            .collect();
        let ours: Vec<String> = self
            .worker_leases
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for lease_id in ours {
            let Some(lease) = self.leases.get_mut(&lease_id) else {
                continue;
            };
            if held.get(lease_id.as_str()) == Some(&lease.fencing_token) {
                lease.expires_at = now + ms(self.cfg.lease_ttl);
                let (run_id, index) = (lease.run_id.clone(), lease.step_index);
                self.mark_running(
                    tx,
                    &id,
                    &run_id,
                    index,
                    "(said when it reconnected holding the lease: its start was not recorded)",
                );
            } else {
                let lease = lease.clone();
                self.end_lease(tx, &lease_id, LeaseState::Expired);
                let ev = Ev::new(
                    "lease.expired",
                    format!("worker {id} re-registered without lease {lease_id}"),
                )
                .lease(&lease);
                self.emit(tx, &actor, "", ev);
                self.requeue(tx, &lease.run_id, lease.step_index, &actor, "");
            }
        }
        let revoked = hello
            .held
            .iter()
            .filter(|h| {
                self.leases
                    .get(&h.lease_id)
                    .is_none_or(|l| l.fencing_token != h.fencing_token || l.worker_id != id)
            })
            .map(|h| h.lease_id.clone())
            .collect();
        let welcome = pb::Welcome {
            worker_id: id.clone(),
            generation,
            heartbeat_interval_ms: self.cfg.heartbeat_interval.as_millis() as u64,
            lease_ttl_ms: self.cfg.lease_ttl.as_millis() as u64,
            revoked,
            draining,
        };
        self.send(tx, &id, pb::engine_message::Kind::Welcome(welcome));
        // A recycle asked for before this process connected still applies.
        self.maybe_recycle(tx, &id, &actor, "");
        Ok(())
    }

    /// The session of a worker ended (stream closed or broken).
    pub fn session_closed(&mut self, tx: &mut Tx, worker_id: &str, session: u64) {
        if self.sessions.get(worker_id).is_none_or(|s| s.id != session) {
            return;
        }
        self.sessions.remove(worker_id);
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if w.state == WorkerState::Recycling {
            // Expected: it is replacing its process. The heartbeat timer
            // marks it offline if it does not come back.
            return;
        }
        w.state = WorkerState::Offline;
        tx.workers.insert(worker_id.to_owned());
        let held = self.worker_leases.get(worker_id).map_or(0, |s| s.len());
        let msg = format!(
            "worker {worker_id} disconnected; its {held} leases expire after their TTL unless it returns"
        );
        self.emit(
            tx,
            &Actor::worker(worker_id),
            "",
            Ev::new("worker.offline", msg).worker(worker_id),
        );
        self.set_offline_long_timer(worker_id, tx.now);
    }

    pub fn session_of(&self, worker_id: &str) -> Option<u64> {
        self.sessions.get(worker_id).map(|s| s.id)
    }

    pub fn heartbeat(&mut self, worker_id: &str, held: &[pb::HeldLease], now: Millis) {
        let ttl = ms(self.cfg.lease_ttl);
        self.stopped_unless_held(worker_id, held);
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.last_heartbeat_at = now;
        }
        for h in held {
            if let Some(l) = self.leases.get_mut(&h.lease_id)
                && l.worker_id == worker_id
                && l.fencing_token == h.fencing_token
            {
                l.expires_at = now + ttl;
            }
        }
    }

    pub(super) fn send(&self, tx: &mut Tx, worker_id: &str, kind: pb::engine_message::Kind) {
        if let Some(s) = self.sessions.get(worker_id) {
            tx.effects.push(Effect::Send(
                s.tx.clone(),
                Box::new(pb::EngineMessage { kind: Some(kind) }),
            ));
        }
    }

    /// Recycles a worker that asked for it once its last lease has ended.
    pub(super) fn maybe_recycle(
        &mut self,
        tx: &mut Tx,
        worker_id: &str,
        actor: &Actor,
        reason: &str,
    ) {
        let busy = self
            .worker_leases
            .get(worker_id)
            .is_some_and(|s| !s.is_empty());
        let Some(w) = self.workers.get_mut(worker_id) else {
            return;
        };
        if !w.recycle_requested
            || busy
            || w.state == WorkerState::Recycling
            || !self.sessions.contains_key(worker_id)
        {
            return;
        }
        w.state = WorkerState::Recycling;
        tx.workers.insert(worker_id.to_owned());
        let msg = format!(
            "worker {worker_id} drained; restarting as generation {}",
            w.generation + 1
        );
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("worker.recycling", msg).worker(worker_id),
        );
        self.send(
            tx,
            worker_id,
            pb::engine_message::Kind::Recycle(pb::Recycle {}),
        );
    }
}

/// The most queues one worker may serve.
pub const MAX_WORKER_QUEUES: usize = 64;
/// The most labels one worker may carry, and their sizes.
pub const MAX_WORKER_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 128;
const MAX_LABEL_VALUE: usize = 1024;
/// Host names and versions a worker reports.
const MAX_HOST: usize = 255;
const MAX_VERSION: usize = 64;
/// Slots one worker may offer, and leases it may say it holds.
const MAX_SLOTS: u32 = 10_000;

/// Bounds on what a hello carries: every field of it is stored and shown.
fn check_hello(id: &str, hello: &pb::Hello) -> Result<(), String> {
    if hello.queues.is_empty() {
        return Err(format!(
            "worker {id} serves no queue; give it at least one --queue"
        ));
    }
    if hello.queues.len() > MAX_WORKER_QUEUES {
        return Err(format!(
            "worker {id} names {} queues; a worker serves at most {MAX_WORKER_QUEUES}",
            hello.queues.len()
        ));
    }
    for q in hello
        .queues
        .iter()
        .filter(|q| *q != crate::domain::ANY_QUEUE)
    {
        validate_queue_name(q).map_err(|e| format!("worker {id}: {e}"))?;
    }
    if hello.slots == 0 || hello.slots > MAX_SLOTS {
        return Err(format!(
            "worker {id} has {} slots; give it --slots 1 to {MAX_SLOTS}",
            hello.slots
        ));
    }
    if hello.labels.len() > MAX_WORKER_LABELS {
        return Err(format!(
            "worker {id} has {} labels; a worker carries at most {MAX_WORKER_LABELS}",
            hello.labels.len()
        ));
    }
    for (k, v) in &hello.labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY || k.chars().any(char::is_control) {
            return Err(format!(
                "worker {id}: label name {k:?} must be 1 to {MAX_LABEL_KEY} characters without control characters"
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(format!(
                "worker {id}: the value of label {k} must be at most {MAX_LABEL_VALUE} characters without control characters"
            ));
        }
    }
    if hello.host.len() > MAX_HOST || hello.host.chars().any(char::is_control) {
        return Err(format!(
            "worker {id}: its host name must be at most {MAX_HOST} characters without control characters"
        ));
    }
    if hello.version.len() > MAX_VERSION || hello.version.chars().any(char::is_control) {
        return Err(format!(
            "worker {id}: its version must be at most {MAX_VERSION} characters without control characters"
        ));
    }
    if hello.held.len() > MAX_SLOTS as usize {
        return Err(format!(
            "worker {id} says it holds {} leases; no worker holds more than {MAX_SLOTS}",
            hello.held.len()
        ));
    }
    Ok(())
}
