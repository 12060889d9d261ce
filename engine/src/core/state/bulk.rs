//! Cancel and retry many runs in one command, so in one commit: each run
//! acted on as the single-run call would, each it cannot act on refused on
//! its own.

use super::*;
use crate::store::RunFilter;

/// What a bulk call does to each run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    Cancel,
    Retry,
}

impl State {
    /// The ids of the runs in memory `filter` matches, newest first.
    pub fn matching_runs(&self, filter: &RunFilter) -> Vec<String> {
        let mut ids: Vec<String> = self
            .runs
            .values()
            .filter(|r| filter.matches(r))
            .map(|r| r.id.clone())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// Those of `ids` no run in memory has.
    pub fn runs_not_held(&self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .filter(|id| !self.runs.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Acts on each of `ids` in order: a run in memory, or one of `stored`
    /// (read from the store, put back in memory when it is acted on). With
    /// `dry_run` nothing changes, and the answer says what would.
    #[allow(clippy::too_many_arguments)]
    pub fn bulk_runs(
        &mut self,
        tx: &mut Tx,
        action: BulkAction,
        ids: Vec<String>,
        stored: Vec<Run>,
        actor: &Actor,
        reason: &str,
        dry_run: bool,
    ) -> pb::BulkRunsResponse {
        let mut stored: HashMap<String, Run> =
            stored.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut out = pb::BulkRunsResponse::default();
        for id in ids {
            let Some(run) = self.runs.get(&id).or_else(|| stored.get(&id)) else {
                out.refused
                    .push(refusal(&id, "", &not_found("run", &id, "opsdeck runs")));
                continue;
            };
            let name = run.name.clone();
            let check = match action {
                BulkAction::Cancel => Self::cancel_refusal(run),
                BulkAction::Retry => Self::retry_refusal(run),
            };
            if let Some(e) = check {
                out.refused.push(refusal(&id, &name, &e));
                continue;
            }
            if dry_run {
                let state = convert::run_state(run.state) as i32;
                out.done.push(pb::BulkRun { id, name, state });
                continue;
            }
            if let Some(run) = stored.remove(&id) {
                self.adopt_run(run);
            }
            let applied = match action {
                BulkAction::Cancel => self.cancel(tx, &id, actor, reason),
                BulkAction::Retry => self.retry(tx, &id, actor, reason),
            };
            match applied {
                Ok(()) => {
                    let state = self
                        .runs
                        .get(&id)
                        .map_or(pb::RunState::Unspecified, |r| convert::run_state(r.state));
                    out.done.push(pb::BulkRun {
                        id,
                        name,
                        state: state as i32,
                    });
                }
                Err(e) => out.refused.push(refusal(&id, &name, &e)),
            }
        }
        out.matched = u32::try_from(out.done.len() + out.refused.len()).unwrap_or(u32::MAX);
        out
    }
}

fn refusal(id: &str, name: &str, e: &EngineError) -> pb::BulkRefusal {
    pb::BulkRefusal {
        id: id.to_owned(),
        name: name.to_owned(),
        message: e.to_string(),
        code: e.code_word().to_owned(),
    }
}
