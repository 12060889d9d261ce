//! Quarantine: run names whose leases get stuck too often.

use super::*;

impl State {
    /// Lets runs of a quarantined name be submitted and dispatched again.
    pub fn clear_quarantine(
        &mut self,
        tx: &mut Tx,
        name: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Quarantine> {
        let Some(q) = self.quarantines.remove(name) else {
            return Err(EngineError::NotFound(format!(
                "run name {name:?} is not quarantined; `opsdeck quarantines` lists the ones that are"
            )));
        };
        self.stuck_at.remove(name);
        self.failed_at.remove(name);
        tx.quarantines.insert(name.to_owned());
        let msg = format!(
            "run name {name} cleared by {}: runs of it are taken again",
            actor.name
        );
        self.emit(
            tx,
            actor,
            reason,
            Ev::new("run_name.quarantine_cleared", msg).quarantine(&q),
        );
        Ok(convert::quarantine(&q))
    }

    /// When a live lease counts as stuck: its step's timeout, then the
    /// worker's SIGTERM-to-SIGKILL grace, then two heartbeats for the
    /// worker to report. `None` for a step without a timeout.
    pub(super) fn stuck_check_at(&self, lease: &Lease) -> Option<Millis> {
        let step = self.runs.get(&lease.run_id)?.step(lease.step_index)?;
        let timeout = i64::try_from(step.exec()?.timeout_ms?).unwrap_or(i64::MAX / 4);
        let slack = ms(self.cfg.cancel_grace).saturating_add(2 * ms(self.cfg.heartbeat_interval));
        Some(
            lease
                .granted_at
                .saturating_add(timeout)
                .saturating_add(slack),
        )
    }

    /// A lease still live past its stuck check: its worker keeps it (it
    /// heartbeats) but could not stop the step. Flag it, and quarantine the
    /// run name once that happens too often.
    pub(super) fn stuck_check(&mut self, tx: &mut Tx, id: &str) {
        let engine = Actor::engine();
        let Some(lease) = self.leases.get_mut(id) else {
            return;
        };
        if lease.stuck {
            return;
        }
        lease.stuck = true;
        let lease = lease.clone();
        tx.leases.insert(id.to_owned(), lease.clone());
        let Some(run) = self.runs.get(&lease.run_id) else {
            return;
        };
        let name = run.name.clone();
        let timeout = run
            .step(lease.step_index)
            .and_then(|s| s.exec()?.timeout_ms)
            .unwrap_or(0);
        let msg = format!(
            "lease {id} stuck: {}/{} is still held by {} after its {} timeout and the {} cancel grace; \
             the worker could not stop it: look at the process on that host, then force-release the lease",
            name,
            self.step_name(&lease.run_id, lease.step_index),
            lease.worker_id,
            humantime::format_duration(Duration::from_millis(timeout)),
            humantime::format_duration(self.cfg.cancel_grace),
        );
        self.emit(tx, &engine, "", Ev::new("lease.stuck", msg).lease(&lease));

        let window = ms(self.cfg.quarantine_window);
        let times = self.stuck_at.entry(name.clone()).or_default();
        times.push_back(tx.now);
        while times.front().is_some_and(|t| *t <= tx.now - window) {
            times.pop_front();
        }
        let count = times.len() as u32;
        let after = self.cfg.quarantine_after;
        if after == 0 || count < after || self.quarantines.contains_key(&name) {
            return;
        }
        let q = Quarantine {
            name: name.clone(),
            since: tx.now,
            stuck_count: count,
            message: format!(
                "{count} leases of runs named {name} got stuck within {} (quarantine_after and \
                 quarantine_window in the engine config): new runs of it are refused and its \
                 queued steps wait until an operator clears it with `opsdeck unquarantine {name} --reason TEXT`",
                humantime::format_duration(self.cfg.quarantine_window)
            ),
        };
        let msg = format!("run name {name} quarantined: {}", q.message);
        tx.quarantines.insert(name.clone());
        self.quarantines.insert(name, q.clone());
        self.emit(
            tx,
            &engine,
            "",
            Ev::new("run_name.quarantined", msg)
                .run(&lease.run_id)
                .quarantine(&q),
        );
    }
}
