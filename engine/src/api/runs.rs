//! The Runs service: submit, read, cancel and retry runs; read their output.

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::runs_server::Runs;
use tonic::{Request, Response, Status};

use super::{Api, auth::caller, id_arg};
use crate::convert;
use crate::core::BulkAction;
use crate::domain::spec;

const DEFAULT_LIST: u32 = 100;
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Runs one SubmitRuns call may make.
const MAX_SUBMIT_RUNS: usize = 10_000;
const MAX_LIST: u32 = 1_000;

impl Api {
    /// A submit's spec and idempotency key, checked.
    fn submit_args(
        &self,
        req: &pb::SubmitRunRequest,
    ) -> Result<(spec::RunSpec, Option<String>), Status> {
        let spec = self.submitted_spec(req)?;
        Ok((spec, idempotency_key(req)?))
    }

    /// A submit's spec, parsed with its parameters and under the policies.
    fn submitted_spec(&self, req: &pb::SubmitRunRequest) -> Result<spec::RunSpec, Status> {
        let given = req
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut spec = spec::parse_with(&req.spec, &self.limits, &given)
            .map_err(crate::error::EngineError::from)?;
        crate::domain::policy::apply(&self.policies, &mut spec)
            .map_err(Status::permission_denied)?;
        Ok(spec)
    }

    /// The run `actor`'s idempotency key made, if it has left the engine's
    /// memory (the store remembers every key for as long as it keeps the
    /// run); ALREADY_EXISTS if that run was made from another spec.
    async fn stored_by_key(
        &self,
        actor: &crate::domain::Actor,
        key: Option<&str>,
        spec: &spec::RunSpec,
    ) -> Result<Option<pb::Run>, Status> {
        let Some(key) = key else { return Ok(None) };
        let Some(run) = self
            .store
            .run_by_idempotency_key(&actor.name, key)
            .await
            .map_err(super::store_error)?
        else {
            return Ok(None);
        };
        if !run.made_from(spec) {
            return Err(Status::already_exists(run.key_reused(key)));
        }
        Ok(Some(convert::run(&run)))
    }

    /// A run by id, live or from history.
    /// A new run of `id`'s spec with some parameters changed (the others as
    /// `id` had them), linked to it; policies apply as to any submit.
    async fn retry_with_params(
        &self,
        actor: crate::domain::Actor,
        id: String,
        req: pb::RetryRunRequest,
    ) -> Result<pb::Run, Status> {
        let (template, mut params) = self
            .with_run(id.clone(), |s, _, id| s.run_template(id))
            .await?;
        params.extend(req.params);
        let submit = pb::SubmitRunRequest {
            spec: template,
            idempotency_key: req.idempotency_key,
            reason: req.reason,
            params: params.into_iter().collect(),
        };
        let (spec, key) = self.submit_args(&submit)?;
        if let Some(run) = self.stored_by_key(&actor, key.as_deref(), &spec).await? {
            return Ok(run);
        }
        self.core
            .call(move |s, tx| {
                let (new, _) =
                    s.submit_retrying(tx, spec, key, &actor, &submit.reason, Some(id))?;
                s.get_run(&new, tx.now)
            })
            .await
            .map_err(Status::from)
    }

    pub(super) async fn find_run(&self, id: &str) -> Result<Option<crate::domain::Run>, Status> {
        self.store.get_run(id).await.map_err(super::store_error)
    }

    /// Calls `f` on the core with the run in memory: a run that has left
    /// the cache is read from the store and put back first, so that acting
    /// on an old run works the same as on a recent one.
    pub(super) async fn with_run<T, F>(&self, id: String, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(
                &mut crate::core::State,
                &mut crate::core::Tx,
                &str,
            ) -> crate::error::EngineResult<T>
            + Send
            + 'static,
    {
        let known = id.clone();
        let here = self.core.call(move |s, _| Ok(s.has_run(&known))).await?;
        let stored = if here {
            None
        } else {
            self.find_run(&id).await?
        };
        Ok(self
            .core
            .call(move |s, tx| {
                if let Some(run) = stored {
                    s.adopt_run(run);
                }
                f(s, tx, &id)
            })
            .await?)
    }
}

#[tonic::async_trait]
impl Runs for Api {
    async fn submit_run(
        &self,
        req: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let (spec, key) = self.submit_args(&req)?;
        if let Some(run) = self.stored_by_key(&actor, key.as_deref(), &spec).await? {
            return Ok(Response::new(pb::SubmitRunResponse {
                run: Some(run),
                created: false,
            }));
        }
        let (run, created) = self
            .core
            .call(move |s, tx| {
                let (id, created) = s.submit(tx, spec, key, &actor, &req.reason)?;
                Ok((s.get_run(&id, tx.now)?, created))
            })
            .await?;
        Ok(Response::new(pb::SubmitRunResponse {
            run: Some(run),
            created,
        }))
    }

    async fn submit_runs(
        &self,
        req: Request<pb::SubmitRunsRequest>,
    ) -> Result<Response<pb::SubmitRunsResponse>, Status> {
        let actor = caller(&req)?;
        let reqs = req.into_inner().runs;
        if reqs.is_empty() {
            return Err(Status::invalid_argument(
                "runs is empty; give at least one run to submit",
            ));
        }
        if reqs.len() > MAX_SUBMIT_RUNS {
            return Err(Status::resource_exhausted(format!(
                "{} runs in one call; submit at most {MAX_SUBMIT_RUNS} a call",
                reqs.len()
            )));
        }
        // Every spec is checked before any is submitted: one bad spec
        // refuses the call, and nothing of it is kept.
        let mut submits = Vec::with_capacity(reqs.len());
        // The request whose spec was parsed last, and its spec: the same
        // text with the same parameters again (one spec submitted N times)
        // is not parsed again.
        let mut parsed: Option<(&pb::SubmitRunRequest, spec::RunSpec)> = None;
        for (i, r) in reqs.iter().enumerate() {
            let numbered = |s: Status| {
                Status::new(
                    s.code(),
                    format!("run {} of {}: {}", i + 1, reqs.len(), s.message()),
                )
            };
            let spec = match &parsed {
                Some((p, spec)) if p.spec == r.spec && p.params == r.params => spec.clone(),
                _ => {
                    let spec = self.submitted_spec(r).map_err(numbered)?;
                    parsed = Some((r, spec.clone()));
                    spec
                }
            };
            let key = idempotency_key(r).map_err(numbered)?;
            let earlier = self
                .stored_by_key(&actor, key.as_deref(), &spec)
                .await
                .map_err(numbered)?;
            submits.push((spec, key, r.reason.clone(), earlier));
        }
        let runs = self
            .core
            .call(move |s, tx| {
                let n = submits.len();
                // Refusals first, so that a refused call changes nothing.
                for (i, (spec, ..)) in submits.iter().enumerate() {
                    s.check_submit(spec, &actor)
                        .map_err(|e| e.map_message(|m| format!("run {} of {n}: {m}", i + 1)))?;
                }
                let mut out = Vec::with_capacity(n);
                for (i, (spec, key, reason, earlier)) in submits.into_iter().enumerate() {
                    out.push(match earlier {
                        Some(run) => pb::SubmittedRun {
                            id: run.id,
                            name: run.name,
                            state: run.state,
                            created_at_ms: run.created_at_ms,
                            created: false,
                        },
                        None => {
                            let (id, created) =
                                s.submit(tx, spec, key, &actor, &reason).map_err(|e| {
                                    e.map_message(|m| format!("run {} of {n}: {m}", i + 1))
                                })?;
                            s.submitted_run(&id, created)?
                        }
                    });
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::SubmitRunsResponse { runs }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = id_arg("run", req.into_inner().id)?;
        let known = id.clone();
        match self.core.call(move |s, tx| s.get_run(&known, tx.now)).await {
            Ok(run) => Ok(Response::new(run)),
            Err(crate::error::EngineError::NotFound(why)) => match self.find_run(&id).await? {
                Some(run) => Ok(Response::new(convert::run(&run))),
                None => Err(Status::not_found(why)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_LIST
        } else {
            req.limit.min(MAX_LIST)
        };
        let page_token = req.page_token.trim();
        if page_token.len() > 64 || page_token.contains(|c: char| !c.is_ascii_alphanumeric()) {
            return Err(Status::invalid_argument(
                "page_token is not one this engine gave; pass the next_page_token of the previous page, or none",
            ));
        }
        let filter = crate::store::RunFilter {
            before_id: (!page_token.is_empty()).then(|| page_token.to_owned()),
            ..run_filter(FilterArgs {
                states: &req.states,
                name: req.name,
                labels: req.labels,
                submitted_by: req.submitted_by,
                since_ms: req.since_ms,
                until_ms: req.until_ms,
            })?
        };
        // One more than a page says whether another page follows.
        let mut runs = self
            .store
            .list_runs(&filter, limit + 1)
            .await
            .map_err(super::store_error)?;
        let more = runs.len() > limit as usize;
        runs.truncate(limit as usize);
        let next_page_token = if more {
            runs.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs.iter().map(convert::run).collect(),
            next_page_token,
        }))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("run", req.id)?;
        Ok(Response::new(
            self.with_run(id, move |s, tx, id| {
                s.cancel_run(tx, id, &actor, &req.reason)
            })
            .await?,
        ))
    }

    async fn retry_run(
        &self,
        req: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let actor = caller(&req)?;
        let req = req.into_inner();
        let id = id_arg("run", req.id.clone())?;
        if !req.params.is_empty() {
            return self
                .retry_with_params(actor, id, req)
                .await
                .map(Response::new);
        }
        Ok(Response::new(
            self.with_run(id, move |s, tx, id| {
                s.retry_run(tx, id, &actor, &req.reason)
            })
            .await?,
        ))
    }

    async fn cancel_runs(
        &self,
        req: Request<pb::BulkRunsRequest>,
    ) -> Result<Response<pb::BulkRunsResponse>, Status> {
        let actor = caller(&req)?;
        let answer = self
            .bulk_runs(BulkAction::Cancel, actor, req.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn retry_runs(
        &self,
        req: Request<pb::BulkRunsRequest>,
    ) -> Result<Response<pb::BulkRunsResponse>, Status> {
        let actor = caller(&req)?;
        let answer = self
            .bulk_runs(BulkAction::Retry, actor, req.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_output(
        &self,
        req: Request<pb::GetOutputRequest>,
    ) -> Result<Response<pb::GetOutputResponse>, Status> {
        let req = req.into_inner();
        let id = id_arg("run", req.run_id)?;
        let known = id.clone();
        let here = self.core.call(move |s, _| Ok(s.has_run(&known))).await?;
        if !here && self.find_run(&id).await?.is_none() {
            return Err(Status::not_found(format!(
                "no run with id {id:?}; `opsdeck runs` lists them"
            )));
        }
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

    type FollowOutputStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::OutputChunk, Status>> + Send>>;

    async fn follow_output(
        &self,
        req: Request<pb::FollowOutputRequest>,
    ) -> Result<Response<Self::FollowOutputStream>, Status> {
        let stream = super::output::follow(self, req.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
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

/// The filter fields ListRuns and the bulk calls share, as they came.
pub(super) struct FilterArgs<'a> {
    pub states: &'a [i32],
    pub name: String,
    pub labels: std::collections::HashMap<String, String>,
    pub submitted_by: String,
    pub since_ms: i64,
    pub until_ms: i64,
}

/// The store's filter of a request's filter fields: blank text and zero
/// times narrow nothing.
pub(super) fn run_filter(args: FilterArgs<'_>) -> Result<crate::store::RunFilter, Status> {
    let states = args
        .states
        .iter()
        .map(|v| {
            pb::RunState::try_from(*v)
                .ok()
                .and_then(convert::run_state_from)
                .ok_or_else(|| Status::invalid_argument(format!("unknown run state {v}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nonempty = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    Ok(crate::store::RunFilter {
        states,
        name: nonempty(args.name),
        labels: args.labels.into_iter().collect(),
        submitted_by: nonempty(args.submitted_by),
        since: (args.since_ms > 0).then_some(args.since_ms),
        until: (args.until_ms > 0).then_some(args.until_ms),
        before_id: None,
    })
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
            let cut = c.data.len() - *left;
            c.data = c.data.split_off(cut);
            c.offset += cut as u64;
        }
        *left -= c.data.len();
        kept.push(c);
    }
    kept.reverse();
    kept
}

/// A submit's idempotency key, if it gives one.
fn idempotency_key(req: &pb::SubmitRunRequest) -> Result<Option<String>, Status> {
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Status::invalid_argument(format!(
            "idempotency_key is {} bytes; the limit is {MAX_IDEMPOTENCY_KEY}",
            req.idempotency_key.len()
        )));
    }
    Ok((!req.idempotency_key.is_empty()).then(|| req.idempotency_key.clone()))
}
