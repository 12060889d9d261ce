//! The Workers, Queues, Approvals and Leases services: small reads and the
//! operator's actions on each.

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::{
    approvals_server::Approvals, leases_server::Leases, queues_server::Queues,
    workers_server::Workers,
};
use tonic::{Request, Response, Status};

use crate::convert;

use super::{
    Api,
    auth::{caller, grants},
    id_arg,
};

/// Decided approvals `ListApprovals` with `all` reads from history.
const DECIDED_LISTED: u32 = 500;

#[tonic::async_trait]
impl Workers for Api {
    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self.core.call(|s, _| Ok(s.list_workers())).await?;
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn get_worker(
        &self,
        req: Request<pb::GetWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        let id = id_arg("worker", req.into_inner().id)?;
        Ok(Response::new(
            self.core.call(move |s, _| s.get_worker(&id)).await?,
        ))
    }

    async fn drain_worker(
        &self,
        req: Request<pb::WorkerActionRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        self.worker_action(req, |s, tx, id, actor, reason| {
            s.drain_worker(tx, id, true, actor, reason)
        })
        .await
    }

    async fn undrain_worker(
        &self,
        req: Request<pb::WorkerActionRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        self.worker_action(req, |s, tx, id, actor, reason| {
            s.drain_worker(tx, id, false, actor, reason)
        })
        .await
    }

    async fn recycle_worker(
        &self,
        req: Request<pb::WorkerActionRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        self.worker_action(req, |s, tx, id, actor, reason| {
            s.recycle_worker(tx, id, actor, reason)
        })
        .await
    }

    async fn forget_worker(
        &self,
        req: Request<pb::WorkerActionRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        self.worker_action(req, |s, tx, id, actor, reason| {
            s.forget_worker(tx, id, actor, reason)
        })
        .await
    }

    async fn reset_breaker(
        &self,
        req: Request<pb::WorkerActionRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        self.worker_action(req, |s, tx, id, actor, reason| {
            s.reset_breaker(tx, id, actor, reason)
        })
        .await
    }
}

type WorkerAction = fn(
    &mut crate::core::State,
    &mut crate::core::Tx,
    &str,
    &crate::domain::Actor,
    &str,
) -> crate::error::EngineResult<pb::Worker>;

impl Api {
    async fn worker_action(
        &self,
        req: Request<pb::WorkerActionRequest>,
        action: WorkerAction,
    ) -> Result<Response<pb::Worker>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("worker", req.id)?;
        Ok(Response::new(
            self.core
                .call(move |s, tx| action(s, tx, &id, &actor, &req.reason))
                .await?,
        ))
    }

    async fn queue_action(
        &self,
        req: Request<pb::QueueActionRequest>,
        paused: bool,
    ) -> Result<Response<pb::Queue>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        Ok(Response::new(
            self.core
                .call(move |s, tx| {
                    s.set_queue_paused(tx, &req.name, paused, req.create, &actor, &req.reason)
                })
                .await?,
        ))
    }
}

#[tonic::async_trait]
impl Queues for Api {
    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let queues = self.core.call(|s, tx| Ok(s.list_queues(tx.now))).await?;
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn pause_queue(
        &self,
        req: Request<pb::QueueActionRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        self.queue_action(req, true).await
    }

    async fn resume_queue(
        &self,
        req: Request<pb::QueueActionRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        self.queue_action(req, false).await
    }

    async fn set_queue(
        &self,
        req: Request<pb::SetQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.set_queue(tx, &req.name, req.max_running, &actor, &req.reason))
                .await?,
        ))
    }
}

#[tonic::async_trait]
impl Approvals for Api {
    async fn list_approvals(
        &self,
        req: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let all = req.into_inner().all;
        let mut approvals = self
            .core
            .call(move |s, _| Ok(s.list_approvals(all)))
            .await?;
        if all {
            // Decided approvals of runs that left memory are history.
            let known: std::collections::HashSet<String> =
                approvals.iter().map(|a| a.id.clone()).collect();
            let stored = self
                .store
                .decided_approvals(DECIDED_LISTED)
                .await
                .map_err(super::store_error)?;
            let mut runs: std::collections::HashMap<String, Option<crate::domain::Run>> =
                std::collections::HashMap::new();
            for a in stored.into_iter().filter(|a| !known.contains(&a.id)) {
                if !runs.contains_key(&a.run_id) {
                    let run = self
                        .store
                        .get_run(&a.run_id)
                        .await
                        .map_err(super::store_error)?;
                    runs.insert(a.run_id.clone(), run);
                }
                let run = runs.get(&a.run_id).and_then(Option::as_ref);
                approvals.push(convert::approval(&a, run));
            }
        }
        Ok(Response::new(pb::ListApprovalsResponse { approvals }))
    }

    async fn decide(
        &self,
        req: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let actor = caller(&req)?;
        let grants = grants(&req)?;
        let req = req.into_inner();
        let id = id_arg("approval", req.id)?;
        let known = id.clone();
        match self
            .core
            .call(move |s, tx| s.decide(tx, &id, req.approve, &actor, &grants, &req.reason))
            .await
        {
            Ok(a) => Ok(Response::new(a)),
            // Pending approvals are always in memory: one found only in the
            // store was decided long ago.
            Err(crate::error::EngineError::NotFound(why)) => {
                match self
                    .store
                    .get_approval(&known)
                    .await
                    .map_err(super::store_error)?
                {
                    Some(a) => Err(Status::failed_precondition(format!(
                        "approval {known} was already decided ({}); only a pending approval can be decided",
                        opsdeck_proto::names::Word::word(convert::approval_state(a.state))
                    ))),
                    None => Err(Status::not_found(why)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[tonic::async_trait]
impl Leases for Api {
    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let all = req.into_inner().all;
        let leases = self.core.call(move |s, _| Ok(s.list_leases(all))).await?;
        Ok(Response::new(pb::ListLeasesResponse { leases }))
    }

    async fn force_release(
        &self,
        req: Request<pb::ForceReleaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("lease", req.id)?;
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.force_release(tx, &id, req.fail, &actor, &req.reason))
                .await?,
        ))
    }
}
