//! A load for measuring the console: submits runs to a paused queue at a
//! steady rate and cancels each at once, so that the engine records a few
//! events per run (`run.submitted`, `step.queued`, `run.cancelled`)
//! with no worker involved and no queue growing without bound.
//!
//! cargo run --release -p opsdeck-tui --example load -- ENGINE EVENTS_PER_SEC SECONDS

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use opsdeck_proto::v1::{CancelRunRequest, QueueActionRequest, SubmitRunRequest};
use opsdeck_tui::client::{Auth, Engine, Target};
use tokio::sync::Semaphore;

const SPEC: &str = "name = \"load\"\n[[step]]\nname = \"wait\"\nqueue = \"load\"\nrun = \"true\"\n";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .expect("ENGINE")
        .parse()
        .expect("an engine address");
    let events_per_sec: f64 = args
        .next()
        .map_or(1000.0, |a| a.parse().expect("EVENTS_PER_SEC"));
    let seconds: u64 = args.next().map_or(30, |a| a.parse().expect("SECONDS"));
    let engine = Engine::connect(Target::resolve(Some(addr)), Auth::default())
        .await
        .expect("connect");
    let submit = || SubmitRunRequest {
        spec: SPEC.to_owned(),
        idempotency_key: String::new(),
        reason: "load".to_owned(),
        ..Default::default()
    };
    // The first run makes the queue; pausing it keeps every later run at
    // two events.
    engine.runs().submit_run(submit()).await.expect("submit");
    engine
        .queues()
        .pause_queue(QueueActionRequest {
            name: "load".into(),
            reason: "load test".into(),
            create: true,
        })
        .await
        .expect("pause");
    // run.submitted, step.queued, run.cancelled.
    let runs_per_sec = events_per_sec / 3.0;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / runs_per_sec));
    let inflight = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let permit = inflight.clone().acquire_owned().await.expect("semaphore");
        let mut runs = engine.runs();
        let request = submit();
        tokio::spawn(async move {
            if let Ok(response) = runs.submit_run(request).await
                && let Some(run) = response.into_inner().run
            {
                let cancel = CancelRunRequest {
                    id: run.id,
                    reason: "load".into(),
                };
                let _ = runs.cancel_run(cancel).await;
            }
            drop(permit);
        });
        sent += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "submitted {sent} runs in {secs:.1}s: {:.0} runs/s, about {:.0} events/s",
        sent as f64 / secs,
        2.0 * sent as f64 / secs
    );
}
