//! CancelRuns and RetryRuns: which runs a bulk call matches (ids, or a
//! filter over the runs in memory and, for retry, the stored history), then
//! one core command that acts on them all in one commit.

use std::collections::BTreeSet;

use opsdeck_proto::names::Word;
use opsdeck_proto::v1 as pb;
use tonic::Status;

use super::runs::{FilterArgs, run_filter};
use super::{Api, id_arg};
use crate::convert;
use crate::core::BulkAction;
use crate::domain::{Actor, Run, RunState};
use crate::store::RunFilter;

/// The most runs one bulk call acts on: enough for any cleanup, few enough
/// that one command never holds the core for long.
pub const MAX_BULK: usize = 10_000;

/// The runs a bulk call is about.
enum Target {
    Ids(Vec<String>),
    /// `limit`: at most this many, the newest; `None`: every match, up
    /// to [`MAX_BULK`].
    Filter {
        filter: RunFilter,
        limit: Option<usize>,
    },
}

impl Api {
    pub(super) async fn bulk_runs(
        &self,
        action: BulkAction,
        actor: Actor,
        req: pb::BulkRunsRequest,
    ) -> Result<pb::BulkRunsResponse, Status> {
        let (reason, dry_run) = (req.reason.clone(), req.dry_run);
        let (ids, stored, more) = match target(action, req)? {
            Target::Ids(ids) => {
                let stored = self.stored_runs(&ids).await?;
                (ids, stored, false)
            }
            Target::Filter { filter, limit } => self.matches(action, filter, limit).await?,
        };
        let mut answer = self
            .core
            .call(move |s, tx| Ok(s.bulk_runs(tx, action, ids, stored, &actor, &reason, dry_run)))
            .await?;
        answer.more = more;
        Ok(answer)
    }

    /// Those of `ids` the core does not hold, read from the store (an id
    /// the store has not either is refused later as unknown).
    async fn stored_runs(&self, ids: &[String]) -> Result<Vec<Run>, Status> {
        let wanted = ids.to_vec();
        let absent = self
            .core
            .call(move |s, _| Ok(s.runs_not_held(&wanted)))
            .await?;
        let mut stored = Vec::new();
        for id in absent {
            if let Some(run) = self.find_run(&id).await? {
                stored.push(run);
            }
        }
        Ok(stored)
    }

    /// The ids `filter` matches, newest first, at most `limit` (and whether
    /// more match), with the matching runs read from the store that the
    /// core may no longer hold. Cancel looks only in memory: every run not
    /// final is there. Retry acts on failed runs, which may have left it.
    async fn matches(
        &self,
        action: BulkAction,
        filter: RunFilter,
        limit: Option<usize>,
    ) -> Result<(Vec<String>, Vec<Run>, bool), Status> {
        let cap = limit.unwrap_or(MAX_BULK);
        let wanted = filter.clone();
        let held = self
            .core
            .call(move |s, _| Ok(s.matching_runs(&wanted)))
            .await?;
        let stored = match action {
            BulkAction::Cancel => Vec::new(),
            BulkAction::Retry => {
                let most = u32::try_from(cap + 1).unwrap_or(u32::MAX);
                self.store
                    .list_runs(&filter, most)
                    .await
                    .map_err(super::store_error)?
            }
        };
        let all: BTreeSet<&String> = held.iter().chain(stored.iter().map(|r| &r.id)).collect();
        let more = all.len() > cap;
        if more && limit.is_none() {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_BULK} runs match; one call acts on at most {MAX_BULK}: narrow \
                 the filter (a name, labels, --since) or give a limit to act on the newest"
            )));
        }
        let ids: Vec<String> = all.into_iter().rev().take(cap).cloned().collect();
        let chosen: BTreeSet<&String> = ids.iter().collect();
        let stored = stored
            .into_iter()
            .filter(|r| chosen.contains(&r.id))
            .collect();
        Ok((ids, stored, more))
    }
}

/// The runs a request names, checked: ids or a filter, never both nor
/// neither; within [`MAX_BULK`].
fn target(action: BulkAction, req: pb::BulkRunsRequest) -> Result<Target, Status> {
    let filtered = !req.states.is_empty()
        || !req.name.trim().is_empty()
        || !req.labels.is_empty()
        || !req.submitted_by.trim().is_empty()
        || req.since_ms > 0
        || req.until_ms > 0;
    if req.limit as usize > MAX_BULK {
        return Err(Status::invalid_argument(format!(
            "limit is {}; one call acts on at most {MAX_BULK} runs",
            req.limit
        )));
    }
    if !req.ids.is_empty() {
        if filtered {
            return Err(Status::invalid_argument(
                "give ids or a filter, not both: the ids already say which runs",
            ));
        }
        if req.ids.len() > MAX_BULK {
            return Err(Status::resource_exhausted(format!(
                "{} ids in one call; give at most {MAX_BULK} a call",
                req.ids.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut ids = Vec::with_capacity(req.ids.len());
        for id in req.ids {
            let id = id_arg("run", id)?;
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        return Ok(Target::Ids(ids));
    }
    if !filtered {
        return Err(Status::invalid_argument(
            "give ids or a filter; an empty filter would match every run",
        ));
    }
    let mut filter = run_filter(FilterArgs {
        states: &req.states,
        name: req.name,
        labels: req.labels,
        submitted_by: req.submitted_by,
        since_ms: req.since_ms,
        until_ms: req.until_ms,
    })?;
    match action {
        BulkAction::Cancel => {
            if let Some(done) = filter.states.iter().find(|s| s.is_final()) {
                return Err(Status::invalid_argument(format!(
                    "state {} is final: such runs cannot be cancelled; filter on queued, \
                     running or waiting_approval runs, or give no state for all three",
                    convert::run_state(*done).word()
                )));
            }
            if filter.states.is_empty() {
                filter.states = vec![
                    RunState::Queued,
                    RunState::Running,
                    RunState::WaitingApproval,
                ];
            }
        }
        BulkAction::Retry => {
            if filter.states.is_empty() {
                filter.states = vec![RunState::Failed];
            }
        }
    }
    let limit = (req.limit > 0).then_some(req.limit as usize);
    Ok(Target::Filter { filter, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(action: BulkAction, req: pb::BulkRunsRequest) -> Status {
        match target(action, req) {
            Ok(_) => panic!("accepted"),
            Err(status) => status,
        }
    }

    #[test]
    fn ids_or_a_filter_never_both_nor_neither() {
        let none = refused(BulkAction::Cancel, pb::BulkRunsRequest::default());
        assert_eq!(none.code(), tonic::Code::InvalidArgument);
        assert!(none.message().contains("empty filter"), "{none:?}");
        let both = refused(
            BulkAction::Retry,
            pb::BulkRunsRequest {
                ids: vec!["r1".into()],
                since_ms: 1,
                ..Default::default()
            },
        );
        assert_eq!(both.code(), tonic::Code::InvalidArgument);
        // Blank text narrows nothing, so it is no filter either.
        let blank = refused(
            BulkAction::Cancel,
            pb::BulkRunsRequest {
                name: "  ".into(),
                ..Default::default()
            },
        );
        assert_eq!(blank.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_call_is_capped_and_ids_are_taken_once_in_order() {
        let many = refused(
            BulkAction::Cancel,
            pb::BulkRunsRequest {
                ids: (0..=MAX_BULK).map(|i| format!("r{i}")).collect(),
                ..Default::default()
            },
        );
        assert_eq!(many.code(), tonic::Code::ResourceExhausted);
        let limit = refused(
            BulkAction::Cancel,
            pb::BulkRunsRequest {
                name: "x".into(),
                limit: MAX_BULK as u32 + 1,
                ..Default::default()
            },
        );
        assert_eq!(limit.code(), tonic::Code::InvalidArgument);
        let Ok(Target::Ids(ids)) = target(
            BulkAction::Cancel,
            pb::BulkRunsRequest {
                ids: vec!["b".into(), " a ".into(), "b".into()],
                ..Default::default()
            },
        ) else {
            panic!("ids")
        };
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn states_default_to_what_each_action_applies_to() {
        let name = || pb::BulkRunsRequest {
            name: "deploy-*".into(),
            ..Default::default()
        };
        let Ok(Target::Filter { filter, limit }) = target(BulkAction::Cancel, name()) else {
            panic!("filter")
        };
        assert_eq!(
            filter.states,
            [
                RunState::Queued,
                RunState::Running,
                RunState::WaitingApproval
            ]
        );
        assert_eq!(limit, None);
        let Ok(Target::Filter { filter, .. }) = target(BulkAction::Retry, name()) else {
            panic!("filter")
        };
        assert_eq!(filter.states, [RunState::Failed]);
        let done = refused(
            BulkAction::Cancel,
            pb::BulkRunsRequest {
                states: vec![pb::RunState::Cancelled as i32],
                ..name()
            },
        );
        assert_eq!(done.code(), tonic::Code::InvalidArgument);
        assert!(done.message().contains("cancelled is final"), "{done:?}");
    }
}
