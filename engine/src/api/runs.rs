//! The Runs service: submit, read, cancel and retry runs; read their output.

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::runs_server::Runs;
use tonic::{Request, Response, Status};

use super::{Api, auth::caller, id_arg};
use crate::convert;
use crate::domain::spec;

const DEFAULT_LIST: u32 = 100;
const MAX_IDEMPOTENCY_KEY: usize = 256;

#[tonic::async_trait]
impl Runs for Api {
    async fn submit_run(
        &self,
        req: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let spec = spec::parse(&req.spec, &self.limits).map_err(crate::error::EngineError::from)?;
        if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Status::invalid_argument(format!(
                "idempotency_key is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY}",
                req.idempotency_key.len()
            )));
        }
        let key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key);
        let (run, created) = self
            .core
            .call(move |s, tx| s.submit(tx, spec, key, &actor, &req.reason))
            .await?;
        Ok(Response::new(pb::SubmitRunResponse {
            run: Some(run),
            created,
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = id_arg("run", req.into_inner().id)?;
        Ok(Response::new(
            self.core.call(move |s, _| s.get_run(&id)).await?,
        ))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let req = req.into_inner();
        let states = req
            .states
            .iter()
            .map(|v| {
                pb::RunState::try_from(*v)
                    .ok()
                    .and_then(convert::run_state_from)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown run state {v}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = if req.limit == 0 {
            DEFAULT_LIST
        } else {
            req.limit.min(10_000)
        } as usize;
        let runs = self
            .core
            .call(move |s, _| Ok(s.list_runs(&states, limit)))
            .await?;
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("run", req.id)?;
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.cancel_run(tx, &id, &actor, &req.reason))
                .await?,
        ))
    }

    async fn retry_run(
        &self,
        req: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("run", req.id)?;
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.retry_run(tx, &id, &actor, &req.reason))
                .await?,
        ))
    }

    async fn get_output(
        &self,
        req: Request<pb::GetOutputRequest>,
    ) -> Result<Response<pb::GetOutputResponse>, Status> {
        let req = req.into_inner();
        let id = id_arg("run", req.run_id)?;
        let known = id.clone();
        self.core
            .call(move |s, _| s.get_run(&known).map(|_| ()))
            .await?;
        let mut chunks = self
            .store
            .output(&id, req.step_index)
            .await
            .map_err(super::store_error)?;
        if req.tail_bytes > 0 {
            chunks = tail(chunks, req.tail_bytes as usize);
        }
        Ok(Response::new(pb::GetOutputResponse { chunks }))
    }

    async fn list_quarantines(
        &self,
        _: Request<pb::ListQuarantinesRequest>,
    ) -> Result<Response<pb::ListQuarantinesResponse>, Status> {
        let quarantines = self.core.call(|s, _| Ok(s.list_quarantines())).await?;
        Ok(Response::new(pb::ListQuarantinesResponse { quarantines }))
    }

    async fn clear_quarantine(
        &self,
        req: Request<pb::ClearQuarantineRequest>,
    ) -> Result<Response<pb::Quarantine>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return Err(Status::invalid_argument(
                "the run name is empty or over 128 characters; `opsdeck quarantines` lists the quarantined names",
            ));
        }
        Ok(Response::new(
            self.core
                .call(move |s, tx| s.clear_quarantine(tx, &name, &actor, &req.reason))
                .await?,
        ))
    }
}

/// The last `bytes` of each attempt's output.
fn tail(chunks: Vec<pb::OutputChunk>, bytes: usize) -> Vec<pb::OutputChunk> {
    let mut kept: Vec<pb::OutputChunk> = Vec::new();
    let mut budget: std::collections::HashMap<(u32, u32), usize> = std::collections::HashMap::new();
    for mut c in chunks.into_iter().rev() {
        let left = budget.entry((c.step_index, c.attempt)).or_insert(bytes);
        if *left == 0 {
            continue;
        }
        if c.data.len() > *left {
            c.data = c.data.split_off(c.data.len() - *left);
        }
        *left -= c.data.len();
        kept.push(c);
    }
    kept.reverse();
    kept
}
