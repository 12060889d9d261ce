//! An open confirmation dialog follows the engine: when its change no
//! longer applies (the run ended meanwhile, the approval was decided, the
//! lease released — from the CLI or another console), it says so and OK
//! sends nothing, rather than a request bound to be refused.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{ApprovalState, RunState, WorkerState};

use super::Change;
use crate::model::{self, Data};

/// Whether a change still makes sense with the data as it stands now;
/// `Err` says why not ("run deploy-web is already cancelled, nothing to
/// do").
pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    let nothing = |what: String| Err(format!("{what}, nothing to do"));
    match change {
        Change::Approve { approval } | Change::Reject { approval } => {
            match data.approvals.get(approval) {
                Some(a) if a.state() != ApprovalState::Pending => nothing(format!(
                    "approval {approval} is already {}",
                    word_of::<ApprovalState>(a.state)
                )),
                _ => Ok(()),
            }
        }
        Change::Cancel { run } => match data.runs.get(run) {
            Some(r) if model::run_is_final(r) => nothing(format!(
                "run {} is already {}",
                r.name,
                word_of::<RunState>(r.state)
            )),
            _ => Ok(()),
        },
        Change::Retry { run } => match data.runs.get(run) {
            Some(r) if r.state() != RunState::Failed => nothing(format!(
                "run {} is {} now, not failed",
                r.name,
                word_of::<RunState>(r.state)
            )),
            _ => Ok(()),
        },
        Change::Drain { worker } | Change::Undrain { worker } | Change::Recycle { worker } => {
            let Some(w) = data.workers.get(worker) else {
                return nothing(format!("worker {worker} is gone"));
            };
            let state = w.state();
            let ok = match change {
                Change::Drain { .. } => state == WorkerState::Online,
                Change::Undrain { .. } => state == WorkerState::Draining,
                _ => matches!(state, WorkerState::Online | WorkerState::Draining),
            };
            if ok {
                Ok(())
            } else {
                nothing(format!(
                    "worker {worker} is {} now",
                    word_of::<WorkerState>(w.state)
                ))
            }
        }
        Change::Pause { queue } | Change::Resume { queue } => {
            let pause = matches!(change, Change::Pause { .. });
            match data.queues.get(queue) {
                Some(q) if q.queue.paused == pause => nothing(format!(
                    "queue {queue} is already {}",
                    if pause { "paused" } else { "running" }
                )),
                _ => Ok(()),
            }
        }
        Change::ForceRelease { lease, .. } => {
            if data.leases.contains_key(lease) {
                Ok(())
            } else {
                nothing(format!(
                    "lease {lease} is no longer live (its step ended or it was released)"
                ))
            }
        }
        Change::ClearQuarantine { name } => {
            if data.quarantines.contains_key(name) {
                Ok(())
            } else {
                nothing(format!("{name} is no longer quarantined"))
            }
        }
    }
}
