//! The leases a worker has in hand: steps still running, and finished steps
//! whose result the engine has not acknowledged yet. It outlives connections:
//! after a reconnect it is what the Hello's `held` and the resent results
//! come from.

use std::collections::BTreeMap;

use opsdeck_proto::v1::{HeldLease, StepResult};
use tokio::{sync::watch, task};

use super::executor::{Reporter, StepExit, Stop, StopReason};

#[derive(Default)]
pub(super) struct Ledger {
    running: BTreeMap<String, Running>,
    /// Results waiting for their ResultAck, by lease id.
    results: BTreeMap<String, StepResult>,
}

pub(super) struct Running {
    pub fencing_token: u64,
    /// The step's task, to tell which lease a panicked task held.
    pub task: task::Id,
    /// Stop requests for the step's executor.
    pub stop: watch::Sender<Option<Stop>>,
    /// The engine revoked the lease: the step is being stopped and nobody
    /// will accept its result.
    pub revoked: bool,
    /// The step's reporter, for the output tail and the bytes lost.
    pub reporter: Reporter,
}

impl Ledger {
    pub fn contains(&self, lease_id: &str) -> bool {
        self.running.contains_key(lease_id) || self.results.contains_key(lease_id)
    }

    pub fn start(&mut self, lease_id: String, running: Running) {
        self.running.insert(lease_id, running);
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn unacked(&self) -> usize {
        self.results.len()
    }

    /// Every lease in hand, for the engine to keep and renew. A finished
    /// step counts until its result is acknowledged: if its lease lapsed
    /// first, the engine would run the step again and refuse the result.
    pub fn held(&self) -> Vec<HeldLease> {
        let running = self.running.iter().map(|(id, r)| (id, r.fencing_token));
        let finished = self.results.iter().map(|(id, r)| (id, r.fencing_token));
        let mut held: Vec<_> = running
            .chain(finished)
            .map(|(id, fencing_token)| HeldLease {
                lease_id: id.clone(),
                fencing_token,
            })
            .collect();
        held.sort_by(|a, b| a.lease_id.cmp(&b.lease_id));
        held
    }

    /// Asks a running step to stop; false when no step holds `lease_id`.
    pub fn stop(&mut self, lease_id: &str, stop: Stop) -> bool {
        match self.running.get(lease_id) {
            Some(running) => {
                running.stop.send_replace(Some(stop));
                true
            }
            None => false,
        }
    }

    /// Asks every running step to stop.
    pub fn stop_all(&mut self, stop: &Stop) {
        for running in self.running.values() {
            running.stop.send_replace(Some(stop.clone()));
        }
    }

    /// The engine does not recognise `lease_id` any more: stop its step.
    /// A finished step's result is kept and still sent: the engine refuses
    /// it and records that, and its ack lets the spool forget it. Returns
    /// what was done, for the log.
    pub fn revoke(&mut self, lease_id: &str, stop: Stop) -> Revoked {
        if self.results.contains_key(lease_id) {
            return Revoked::Finished;
        }
        match self.running.get_mut(lease_id) {
            Some(running) => {
                running.revoked = true;
                running.stop.send_replace(Some(Stop {
                    reason: StopReason::Revoked,
                    ..stop
                }));
                Revoked::Stopping
            }
            None => Revoked::Unknown,
        }
    }

    /// The lease of the step run by `task`.
    pub fn lease_of(&self, task: task::Id) -> Option<String> {
        self.running
            .iter()
            .find(|(_, r)| r.task == task)
            .map(|(id, _)| id.clone())
    }

    /// A step ended: keep its result until acknowledged and return it for
    /// sending, or `None` when there is nobody to send it to (revoked, or
    /// not a step of ours).
    pub fn finish(
        &mut self,
        lease_id: &str,
        exit: StepExit,
        finished_at_ms: i64,
    ) -> Option<StepResult> {
        let running = self.running.remove(lease_id)?;
        if running.revoked {
            return None;
        }
        let result = StepResult {
            lease_id: lease_id.to_owned(),
            fencing_token: running.fencing_token,
            outcome: exit.outcome as i32,
            exit_code: exit.exit_code.unwrap_or_default(),
            has_exit_code: exit.exit_code.is_some(),
            message: exit.message,
            finished_at_ms,
            output_tail: running.reporter.tail(),
            output_lost_bytes: running.reporter.lost_bytes(),
        };
        self.results.insert(lease_id.to_owned(), result.clone());
        Some(result)
    }

    /// A result spooled by an earlier process of this worker, to be sent
    /// (and held) like one of this process's.
    pub fn restore(&mut self, result: StepResult) {
        self.results.insert(result.lease_id.clone(), result);
    }

    /// The engine took (or refused for good) the result for `lease_id`.
    pub fn ack(&mut self, lease_id: &str) -> Option<StepResult> {
        self.results.remove(lease_id)
    }

    /// Results still waiting for their ack, oldest first, to resend.
    pub fn results(&self) -> Vec<StepResult> {
        let mut results: Vec<_> = self.results.values().cloned().collect();
        results.sort_by_key(|r| r.finished_at_ms);
        results
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Revoked {
    Stopping,
    /// Finished: its result goes to the engine anyway, to be refused.
    Finished,
    Unknown,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use opsdeck_proto::v1::Outcome;

    use super::*;

    fn running(ledger: &mut Ledger, lease: &str, token: u64) -> watch::Receiver<Option<Stop>> {
        let (stop, rx) = watch::channel(None);
        let task = tokio::spawn(async {}).id();
        ledger.start(
            lease.into(),
            Running {
                fencing_token: token,
                task,
                stop,
                revoked: false,
                reporter: Reporter::new(lease, token, watch::channel(None).1),
            },
        );
        rx
    }

    fn cancel() -> Stop {
        Stop {
            reason: StopReason::Cancelled {
                reason: String::new(),
            },
            grace: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn finished_steps_stay_held_until_their_result_is_acked() {
        let mut ledger = Ledger::default();
        let _a = running(&mut ledger, "a", 3);
        let _b = running(&mut ledger, "b", 5);
        let result = ledger.finish(
            "b",
            StepExit::failed(Some(2), "exited with status 2"),
            1_000,
        );
        let result = result.unwrap();
        assert_eq!(
            (
                result.fencing_token,
                result.outcome,
                result.exit_code,
                result.has_exit_code
            ),
            (5, Outcome::Failed as i32, 2, true)
        );
        let held: Vec<_> = ledger
            .held()
            .into_iter()
            .map(|h| (h.lease_id, h.fencing_token))
            .collect();
        assert_eq!(held, vec![("a".into(), 3), ("b".into(), 5)]);
        assert_eq!(ledger.results(), vec![result]);

        assert!(ledger.ack("b").is_some());
        assert_eq!(ledger.held().len(), 1);
        assert!(ledger.ack("b").is_none());
    }

    #[tokio::test]
    async fn revoking_a_running_step_stops_it_and_drops_its_result() {
        let mut ledger = Ledger::default();
        let stop = running(&mut ledger, "a", 1);
        assert_eq!(ledger.revoke("a", cancel()), Revoked::Stopping);
        assert_eq!(
            stop.borrow().as_ref().map(|s| s.reason.clone()),
            Some(StopReason::Revoked)
        );
        assert!(ledger.finish("a", StepExit::succeeded("ok"), 1).is_none());
        assert!(ledger.held().is_empty());
    }

    #[tokio::test]
    async fn revoking_a_finished_step_keeps_its_result_for_the_engine_to_refuse() {
        let mut ledger = Ledger::default();
        let _stop = running(&mut ledger, "a", 1);
        ledger.finish("a", StepExit::succeeded("ok"), 1);
        assert_eq!(ledger.revoke("a", cancel()), Revoked::Finished);
        assert_eq!(ledger.revoke("zzz", cancel()), Revoked::Unknown);
        assert_eq!(ledger.results().len(), 1);
        assert!(ledger.ack("a").is_some());
        assert!(ledger.held().is_empty());
    }

    #[tokio::test]
    async fn stop_reaches_only_the_named_step() {
        let mut ledger = Ledger::default();
        let a = running(&mut ledger, "a", 1);
        let b = running(&mut ledger, "b", 1);
        assert!(ledger.stop("a", cancel()));
        assert!(!ledger.stop("nope", cancel()));
        assert!(a.borrow().is_some());
        assert!(b.borrow().is_none());
    }
}
