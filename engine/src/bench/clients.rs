//! The bench's side of the engine: its client, the submitters, the
//! follower of events, and the workers.

use super::*;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(super) struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(super) type Svc = InterceptedService<Channel, Bearer>;

/// The bench's client of one engine.
pub(super) struct Client {
    pub(super) runs: pb::runs_client::RunsClient<Svc>,
    pub(super) events: pb::events_client::EventsClient<Svc>,
    pub(super) console: pb::console_client::ConsoleClient<Svc>,
}

impl Client {
    pub(super) async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let channel = EngineAddr::Tcp(format!("http://{addr}")).connect().await?;
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(Self {
            // SubmitRuns answers with every run it made.
            runs: pb::runs_client::RunsClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
            events: pb::events_client::EventsClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            console: pb::console_client::ConsoleClient::with_interceptor(channel, bearer),
        })
    }

    /// The engine's latest event seq.
    pub(super) async fn head_seq(&self) -> anyhow::Result<u64> {
        let me = self
            .console
            .clone()
            .whoami(pb::WhoamiRequest {})
            .await?
            .into_inner();
        Ok(me.head_seq)
    }
}

/// `count` SubmitRun calls, `in_flight` at once: the latency of each.
pub(super) async fn submit_singles(
    runs: &pb::runs_client::RunsClient<Svc>,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(count) {
        let (mut client, next) = (runs.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let start = Instant::now();
                client
                    .submit_run(pb::SubmitRunRequest {
                        spec: SPEC.into(),
                        ..Default::default()
                    })
                    .await
                    .context("SubmitRun failed")?
                    .into_inner()
                    .run
                    .context("SubmitRun answered without a run")?;
                latencies.push(start.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// `count` runs in SubmitRuns calls of `batch`, [`BATCH_IN_FLIGHT`] calls
/// at once: the latency of each call.
pub(super) async fn submit_batches(
    runs: &pb::runs_client::RunsClient<Svc>,
    count: usize,
    batch: usize,
) -> anyhow::Result<Vec<Duration>> {
    let calls = count.div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BATCH_IN_FLIGHT.min(calls) {
        let (mut client, next) = (runs.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let call = next.fetch_add(1, Ordering::Relaxed);
                if call >= calls {
                    break;
                }
                let size = batch.min(count - call * batch);
                let request = pb::SubmitRunsRequest {
                    runs: vec![
                        pb::SubmitRunRequest {
                            spec: SPEC.into(),
                            ..Default::default()
                        };
                        size
                    ],
                };
                let start = Instant::now();
                let made = client
                    .submit_runs(request)
                    .await
                    .context("SubmitRuns failed")?
                    .into_inner()
                    .runs
                    .len();
                latencies.push(start.elapsed());
                anyhow::ensure!(
                    made == size,
                    "SubmitRuns answered {made} runs for {size} specs"
                );
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(calls);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Events.FollowEvents of some kinds, followed again from the last event
/// seen when the engine cuts the reader off for falling behind.
pub(super) struct Follow {
    pub(super) client: pb::events_client::EventsClient<Svc>,
    pub(super) kinds: Vec<String>,
    pub(super) stream: tonic::Streaming<pb::Event>,
    pub(super) last_seq: u64,
    /// How often the engine cut this reader off.
    pub(super) resyncs: u64,
}

impl Follow {
    pub(super) async fn start(
        mut client: pb::events_client::EventsClient<Svc>,
        after_seq: u64,
        kinds: &[&str],
    ) -> anyhow::Result<Self> {
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        let stream = client
            .follow_events(pb::FollowEventsRequest {
                after_seq,
                kinds: kinds.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(Self {
            client,
            kinds,
            stream,
            last_seq: after_seq,
            resyncs: 0,
        })
    }

    pub(super) async fn next(&mut self) -> anyhow::Result<pb::Event> {
        loop {
            let item = tokio::time::timeout(NO_PROGRESS, self.stream.message())
                .await
                .with_context(|| format!("no event for {NO_PROGRESS:?}"))?;
            match item {
                Ok(Some(event)) => {
                    self.last_seq = event.seq;
                    return Ok(event);
                }
                Ok(None) => anyhow::bail!("the event stream ended"),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    // Cut off for falling behind: follow again from the
                    // last event seen, as any client would.
                    self.resyncs += 1;
                    self.stream = self
                        .client
                        .follow_events(pb::FollowEventsRequest {
                            after_seq: self.last_seq,
                            kinds: self.kinds.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// In-process workers speaking the real Agent protocol over TCP, finishing
/// every step at once.
pub(super) struct Workers {
    pub(super) stop: CancellationToken,
    pub(super) tasks: tokio::task::JoinSet<()>,
}

impl Workers {
    pub(super) fn start(addr: SocketAddr, token: &str, workers: u32, slots: u32) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..workers {
            let options = AgentOptions {
                engine: EngineAddr::Tcp(format!("http://{addr}")).into(),
                worker_id: format!("bench-{i}"),
                queues: vec![QUEUE.into()],
                slots,
                labels: Default::default(),
                token: Some(token.to_owned()),
                tls: None,
                generation: 1,
                cancel_grace: Duration::from_secs(1),
                // The bench measures the engine; results stay in memory.
                spool_dir: None,
            };
            let executor: Arc<dyn agent::Executor> = Arc::new(agent::InstantExecutor);
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = agent::run(options, executor, stop).await {
                    tracing::warn!(error = %format!("{e:#}"), "a bench worker stopped");
                }
            });
        }
        Self { stop, tasks }
    }

    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}
