//! Answers to reads of the live state, as the API shapes them.

use super::*;

impl State {
    /// Quarantined run names, by name.
    pub fn list_quarantines(&self) -> Vec<pb::Quarantine> {
        self.quarantines.values().map(convert::quarantine).collect()
    }

    /// A run, its queued current step saying why it waits.
    pub fn get_run(&self, id: &str, now: Millis) -> EngineResult<pb::Run> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        let mut out = convert::run(run);
        let index = run.current_step;
        if let Some(step) = out.steps.get_mut(index as usize)
            && step.state == pb::StepState::Queued as i32
        {
            step.waiting_for = self.waiting_for(&step.queue, id, index, now);
        }
        Ok(out)
    }

    /// Why step `index` of run `run_id`, ready on `queue`, has not started.
    fn waiting_for(&self, queue: &str, run_id: &str, index: u32, now: Millis) -> String {
        let Some(q) = self.queues.get(queue) else {
            return String::new();
        };
        if q.queue.paused {
            return match &q.paused_by {
                Some((by, at, reason)) => {
                    let ago = humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from((now - at) / 1000).unwrap_or(0),
                    ));
                    let why = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    };
                    format!("queue {queue} paused by {by} {ago} ago{why}")
                }
                None => format!("queue {queue} is paused"),
            };
        }
        if let Some(wait) = self.key_holds_back(run_id) {
            return wait.to_string();
        }
        if let Some(max) = self.queue_full(queue) {
            return format!("waiting for queue {queue}: max_running {max} reached");
        }
        let serving: Vec<&Worker> = self
            .workers
            .values()
            .filter(|w| self.sessions.contains_key(&w.id) && w.serves(queue))
            .collect();
        if serving.is_empty() {
            return format!("no connected worker serves queue {queue}");
        }
        if let Some(exec) = self
            .runs
            .get(run_id)
            .and_then(|r| r.step(index))
            .and_then(|s| s.exec())
            .filter(|e| !e.worker.is_empty())
            && !serving.iter().any(|w| exec.selects(&w.labels))
        {
            let wanted: Vec<String> = exec
                .worker
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            return format!(
                "no connected worker on queue {queue} carries the labels it selects ({})",
                wanted.join(", ")
            );
        }
        if serving.iter().all(|w| w.state != WorkerState::Online) {
            return format!("every worker serving queue {queue} is draining");
        }
        let ahead = q
            .ready
            .iter()
            .take_while(|k| !(k.run_id == run_id && k.step == index))
            .count();
        let free: u32 = serving
            .iter()
            .filter(|w| w.state == WorkerState::Online)
            .map(|w| w.slots.saturating_sub(self.slots_taken(&w.id)))
            .sum();
        match (ahead, free) {
            (0, 0) => format!("next on queue {queue}; its workers' slots are all taken"),
            (0, _) => format!("next on queue {queue}"),
            (n, _) => format!(
                "{n} step{} ahead of it on queue {queue}",
                if n == 1 { "" } else { "s" }
            ),
        }
    }

    /// A run as a bulk submit answers it: without its steps.
    pub fn submitted_run(&self, id: &str, created: bool) -> EngineResult<pb::SubmittedRun> {
        let run = self
            .runs
            .get(id)
            .ok_or_else(|| not_found("run", id, "opsdeck runs"))?;
        Ok(pb::SubmittedRun {
            id: run.id.clone(),
            name: run.name.clone(),
            state: convert::run_state(run.state) as i32,
            created_at_ms: run.created_at,
            created,
        })
    }

    pub fn worker_pb(&self, id: &str) -> Option<pb::Worker> {
        let w = self.workers.get(id)?;
        let leases = self
            .worker_leases
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        Some(convert::worker(w, self.sessions.contains_key(id), leases))
    }

    pub fn get_worker(&self, id: &str) -> EngineResult<pb::Worker> {
        self.worker_pb(id)
            .ok_or_else(|| not_found("worker", id, "opsdeck workers"))
    }

    pub fn list_workers(&self) -> Vec<pb::Worker> {
        self.workers
            .keys()
            .filter_map(|id| self.worker_pb(id))
            .collect()
    }

    /// A queue's figures: one that steps have used, or one a connected
    /// worker serves (shown, but not kept once its workers are gone).
    pub fn queue_pb(&self, name: &str, now: Millis) -> Option<pb::Queue> {
        let workers = self
            .workers
            .values()
            .filter(|w| self.sessions.contains_key(&w.id) && w.serves(name))
            .count() as u32;
        let Some(q) = self.queues.get(name) else {
            return (workers > 0 && name != crate::domain::ANY_QUEUE).then(|| pb::Queue {
                name: name.to_owned(),
                workers,
                ..Default::default()
            });
        };
        // Readiness order follows time, so the first in order is the oldest.
        let oldest = q.ages.first_key_value().map(|(_, since)| *since);
        let in_window =
            |v: &VecDeque<Millis>| v.iter().filter(|t| **t > now - RATE_WINDOW_MS).count() as u64;
        Some(pb::Queue {
            name: name.to_owned(),
            paused: q.queue.paused,
            ready: q.ready.len() as u64,
            delayed: q.delayed,
            running: q.running,
            oldest_ready_age_ms: oldest.map_or(0, |t| u64::try_from(now - t).unwrap_or(0)),
            enqueued_last_minute: in_window(&q.enqueued),
            completed_last_minute: in_window(&q.completed),
            workers,
            max_running: q.queue.max_running,
        })
    }

    /// Every queue steps have used or a connected worker serves, by name.
    pub fn list_queues(&self, now: Millis) -> Vec<pb::Queue> {
        let served = self
            .workers
            .values()
            .filter(|w| self.sessions.contains_key(&w.id))
            .flat_map(|w| w.queues.iter().map(String::as_str));
        let names: BTreeSet<&str> = self
            .queues
            .keys()
            .map(String::as_str)
            .chain(served)
            .collect();
        names
            .into_iter()
            .filter_map(|q| self.queue_pb(q, now))
            .collect()
    }

    /// Live leases, those whose holder is gone first, then by expiry.
    pub fn list_leases(&self, all: bool) -> Vec<pb::Lease> {
        let mut live: Vec<&Lease> = self.leases.values().collect();
        live.sort_by_key(|l| {
            (
                self.sessions.contains_key(&l.worker_id),
                l.expires_at,
                l.id.clone(),
            )
        });
        let mut out: Vec<pb::Lease> = live
            .into_iter()
            .map(|l| convert::lease(l, self.runs.get(&l.run_id)))
            .collect();
        if all {
            out.extend(
                self.recent_leases
                    .iter()
                    .rev()
                    .map(|l| convert::lease(l, self.runs.get(&l.run_id))),
            );
        }
        out
    }

    /// Pending approvals (oldest first), then decided ones if asked.
    pub fn list_approvals(&self, all: bool) -> Vec<pb::Approval> {
        let pending = self
            .approvals
            .values()
            .filter(|a| a.state == ApprovalState::Pending);
        let decided = self
            .approvals
            .values()
            .rev()
            .filter(|a| a.state != ApprovalState::Pending);
        pending
            .chain(decided.take(if all { usize::MAX } else { 0 }))
            .map(|a| convert::approval(a, self.runs.get(&a.run_id)))
            .collect()
    }
}
