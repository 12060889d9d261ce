//! The Schedules service: add, list, pause, resume, remove and run-now.

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::schedules_server::Schedules;
use tonic::{Request, Response, Status};

use super::{Api, auth::caller};
use crate::convert;
use crate::domain::schedule::{Schedule, When, validate_name};
use crate::domain::spec;

impl Api {
    /// The schedule an add asks for, checked as a submit of its spec
    /// would be (parameters, limits, policies), and its cron and zone.
    fn schedule_arg(&self, req: &pb::AddScheduleRequest) -> Result<Schedule, Status> {
        validate_name(&req.name).map_err(Status::invalid_argument)?;
        let when = When::parse(&req.cron, &req.timezone).map_err(Status::invalid_argument)?;
        let params = req
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut run = spec::parse_with(&req.spec, &self.limits, &params)
            .map_err(crate::error::EngineError::from)?;
        crate::domain::policy::apply(&self.policies, &mut run)
            .map_err(Status::permission_denied)?;
        let missed = convert::missed_policy(req.missed).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown missed-fire policy {}; use skip or run-once",
                req.missed
            ))
        })?;
        let overlap = convert::overlap_policy(req.overlap).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown overlap policy {}; use skip, allow or cancel-previous",
                req.overlap
            ))
        })?;
        Ok(Schedule {
            name: req.name.clone(),
            spec: req.spec.clone(),
            params,
            run_name: run.name,
            cron: req.cron.trim().to_owned(),
            timezone: when.zone().to_owned(),
            missed,
            overlap,
            paused: false,
            next_fire_at: None,
            last_fire_at: None,
            last_run_id: None,
            created_at: 0,
            created_by: String::new(),
            updated_at: 0,
            updated_by: String::new(),
        })
    }

    async fn set_paused(
        &self,
        req: Request<pb::ScheduleRequest>,
        paused: bool,
    ) -> Result<Response<pb::Schedule>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        Ok(Response::new(
            self.core
                .call(move |s, tx| {
                    s.set_schedule_paused(tx, &req.name, paused, &actor, &req.reason)
                })
                .await?,
        ))
    }
}

#[tonic::async_trait]
impl Schedules for Api {
    async fn add_schedule(
        &self,
        req: Request<pb::AddScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let schedule = self.schedule_arg(&req)?;
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.add_schedule(tx, schedule, &actor, &req.reason))
                .await?,
        ))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self.core.call(|s, _| Ok(s.list_schedules())).await?;
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(
            self.core.call(move |s, _| s.get_schedule(&name)).await?,
        ))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.set_paused(req, true).await
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.set_paused(req, false).await
    }

    async fn remove_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.remove_schedule(tx, &req.name, &actor, &req.reason))
                .await?,
        ))
    }

    async fn run_schedule_now(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::RunScheduleNowResponse>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let (schedule, outcome) = self
            .core
            .call(move |s, tx| s.run_schedule_now(tx, &req.name, &actor, &req.reason))
            .await?;
        let (run_id, skipped) = match outcome {
            Ok(id) => (id, String::new()),
            Err(why) => (String::new(), why),
        };
        Ok(Response::new(pb::RunScheduleNowResponse {
            schedule: Some(schedule),
            run_id,
            skipped,
        }))
    }
}
