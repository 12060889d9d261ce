//! Figures for the alerting metrics, read when `/metrics` is scraped.

use super::*;

/// What on-call alerts look at beyond the queues and worker counts.
#[derive(Debug, Default)]
pub struct OncallFigures {
    /// Live leases marked stuck.
    pub leases_stuck: usize,
    /// Running steps marked hung (no output for their quiet_timeout).
    pub steps_hung: usize,
    /// Run names quarantined.
    pub quarantines: usize,
    /// Workers whose breaker is open or half-open.
    pub breakers_open: usize,
    /// Seconds since each worker not stopped was last heard from.
    pub heartbeat_ages: Vec<(String, f64)>,
    /// How long the oldest pending approval has waited, in seconds.
    pub oldest_pending_approval: f64,
    /// Results each connected worker holds in its spool, unacknowledged.
    pub spooled_results: Vec<(String, u32)>,
}

impl State {
    /// What a worker's heartbeat says of its spool.
    pub fn note_spooled(&mut self, worker_id: &str, results: u32) {
        if results == 0 {
            self.spooled.remove(worker_id);
        } else if let Some(n) = self.spooled.get_mut(worker_id) {
            *n = results;
        } else {
            self.spooled.insert(worker_id.to_owned(), results);
        }
    }

    pub fn oncall_figures(&self, now: Millis) -> OncallFigures {
        let secs = |ms: Millis| (now - ms).max(0) as f64 / 1000.0;
        OncallFigures {
            leases_stuck: self.leases.values().filter(|l| l.stuck).count(),
            steps_hung: self
                .leases
                .values()
                .filter(|l| {
                    self.runs
                        .get(&l.run_id)
                        .and_then(|r| r.step(l.step_index))
                        .is_some_and(|s| s.hung)
                })
                .count(),
            quarantines: self.quarantines.len(),
            breakers_open: self
                .workers
                .values()
                .filter(|w| w.breaker.is_some())
                .count(),
            heartbeat_ages: self
                .workers
                .values()
                .filter(|w| w.state != WorkerState::Stopped)
                .map(|w| (w.id.clone(), secs(w.last_heartbeat_at)))
                .collect(),
            oldest_pending_approval: self
                .approvals
                .values()
                .filter(|a| a.state == ApprovalState::Pending)
                .map(|a| secs(a.requested_at))
                .fold(0.0, f64::max),
            spooled_results: self
                .workers
                .keys()
                .filter(|id| self.sessions.contains_key(*id))
                .map(|id| (id.clone(), self.spooled.get(id).copied().unwrap_or(0)))
                .collect(),
        }
    }
}
