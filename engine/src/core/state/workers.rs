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

    /// A worker said hello on a new session.
    pub fn hello(
        &mut self,
        tx: &mut Tx,
        session: u64,
        identity: &str,
        hello: pb::Hello,
        out: mpsc::UnboundedSender<pb::EngineMessage>,
    ) -> EngineResult<()> {
        let id = hello.worker_id.trim().to_owned();
        if id.is_empty() || id.len() > 128 {
            return Err(EngineError::InvalidArgument(
                "worker id must be 1 to 128 characters".into(),
            ));
        }
        if hello.queues.is_empty() {
            return Err(EngineError::InvalidArgument(format!(
                "worker {id} serves no queue; give it at least one --queue"
            )));
        }
        for q in hello
            .queues
            .iter()
            .filter(|q| *q != crate::domain::ANY_QUEUE)
        {
            validate_queue_name(q)
                .map_err(|e| EngineError::InvalidArgument(format!("worker {id}: {e}")))?;
        }
        if hello.slots == 0 {
            return Err(EngineError::InvalidArgument(format!(
                "worker {id} has 0 slots; give it --slots 1 or more"
            )));
        }
        // A connected worker's session (and the assignments, secrets
        // included, that go down it) is not for another identity to take.
        if let Some(live) = self.workers.get(&id).filter(|w| {
            matches!(
                w.state,
                WorkerState::Online | WorkerState::Draining | WorkerState::Recycling
            ) && !w.identity.is_empty()
                && w.identity != identity
                && self.sessions.contains_key(&id)
        }) {
            return Err(EngineError::PermissionDenied(format!(
                "worker {id} is connected as {}, and {identity} may not take over its session; \
                 give this worker another --id, or stop the other process first",
                live.identity
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
        });
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
        for q in w.queues.iter().filter(|q| *q != crate::domain::ANY_QUEUE) {
            self.queue_live(q);
        }
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
    }

    pub fn session_of(&self, worker_id: &str) -> Option<u64> {
        self.sessions.get(worker_id).map(|s| s.id)
    }

    pub fn heartbeat(&mut self, worker_id: &str, held: &[pb::HeldLease], now: Millis) {
        let ttl = ms(self.cfg.lease_ttl);
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
