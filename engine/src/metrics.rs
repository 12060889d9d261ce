//! Prometheus metrics, `/healthz` and `/readyz` on their own HTTP listener
//! (`[metrics] listen`, default 127.0.0.1:9465).
//!
//! Counters and the step-duration histogram are bumped by the core once a
//! batch is committed ([`observe_committed`]); gauges are read from the
//! core's state when `/metrics` is scraped, through one
//! [`CoreHandle::call`], so the hot path takes no lock and keeps no copy.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `opsdeck_queue_steps` | gauge | `queue`, `state` (ready, delayed, running) |
//! | `opsdeck_queue_oldest_ready_age_seconds` | gauge | `queue` |
//! | `opsdeck_workers` | gauge | `state` (online, draining, recycling, offline, stopped) |
//! | `opsdeck_leases_live` | gauge | |
//! | `opsdeck_approvals_pending` | gauge | |
//! | `opsdeck_stream_subscribers` | gauge | |
//! | `opsdeck_step_duration_seconds` | histogram | `outcome` (succeeded, failed, dead) |
//! | `opsdeck_steps_total` | counter | `outcome` (succeeded, failed, dead, retry_scheduled) |
//! | `opsdeck_assignments_total` | counter | `outcome` (granted, released, expired, force_released, stuck) |
//! | `opsdeck_run_transitions_total` | counter | `to` (submitted, succeeded, failed, cancelled, retried) |
//! | `opsdeck_events_total` | counter | (events per second: `rate(opsdeck_events_total[1m])`) |
//! | `opsdeck_ready` | gauge | 1 when `/readyz` would answer 200 |
//! | `opsdeck_pruned_rows_total` | counter | `table` (runs, steps, approvals, leases, events, output, workers) |
//! | `opsdeck_database_bytes` | gauge | the database's size on disk, as of the last pruning pass |
//! | `opsdeck_standby` | gauge | 1 while this engine stands by for another that leads |
//! | `opsdeck_queue_wait_seconds` | histogram | `queue`: how long steps waited ready before a lease |
//! | `opsdeck_worker_last_heartbeat_age_seconds` | gauge | `worker` (every worker not stopped) |
//! | `opsdeck_leases_stuck` | gauge | |
//! | `opsdeck_steps_hung` | gauge | |
//! | `opsdeck_quarantines` | gauge | |
//! | `opsdeck_worker_breakers_open` | gauge | |
//! | `opsdeck_approval_oldest_pending_age_seconds` | gauge | |
//! | `opsdeck_worker_spooled_results` | gauge | `worker` (connected): results its spool holds unacknowledged |
//! | `opsdeck_notifications_total` | counter | `notifier`, `outcome` (delivered, retry, failed): delivery attempts |
//! | `opsdeck_notifications_pending` | gauge | notifications in the outbox not delivered yet |
//!
//! `deploy/prometheus/opsdeck-rules.yml` alerts on them; a test checks that
//! every metric the rules name is exported.

use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opsdeck_proto::v1 as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::core::CoreHandle;
use crate::domain::now_ms;
use crate::store::Store;

/// The longest a scrape or a readiness probe waits for the core or the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The file in the data dir that names the bound metrics address, for
/// scripts and tests that listen on port 0.
pub const METRICS_ADDR_FILE: &str = "metrics.addr";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct To {
    to: String,
}

/// Every metric the engine exports. One per process: counters count what
/// this process committed since it started, as Prometheus expects.
struct Metrics {
    queue_steps: Family<QueueState, Gauge>,
    oldest_ready: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    workers: Family<StateLabel, Gauge>,
    leases: Gauge,
    approvals: Gauge,
    subscribers: Gauge,
    ready: Gauge,
    step_duration: Family<Outcome, Histogram>,
    steps: Family<Outcome, Counter>,
    assignments: Family<Outcome, Counter>,
    run_transitions: Family<To, Counter>,
    events: Counter,
    pruned: Family<TableLabel, Counter>,
    database_bytes: Gauge,
    standby: Gauge,
    queue_wait: Family<QueueLabel, Histogram>,
    heartbeat_age: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    leases_stuck: Gauge,
    steps_hung: Gauge,
    quarantines: Gauge,
    breakers_open: Gauge,
    oldest_approval: Gauge<f64, AtomicU64>,
    spooled: Family<WorkerLabel, Gauge>,
    notifications: Family<NotifierOutcome, Counter>,
    notifications_pending: Gauge,
    schedule_fires: Family<ScheduleLabel, Counter>,
    schedule_skips: Family<ScheduleLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierOutcome {
    notifier: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

fn step_histogram() -> Histogram {
    // 10ms to about 3 hours.
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    queue_steps: Family::default(),
    oldest_ready: Family::default(),
    workers: Family::default(),
    leases: Gauge::default(),
    approvals: Gauge::default(),
    subscribers: Gauge::default(),
    ready: Gauge::default(),
    step_duration: Family::new_with_constructor(step_histogram),
    steps: Family::default(),
    assignments: Family::default(),
    run_transitions: Family::default(),
    events: Counter::default(),
    pruned: Family::default(),
    database_bytes: Gauge::default(),
    standby: Gauge::default(),
    queue_wait: Family::new_with_constructor(step_histogram),
    heartbeat_age: Family::default(),
    leases_stuck: Gauge::default(),
    steps_hung: Gauge::default(),
    quarantines: Gauge::default(),
    breakers_open: Gauge::default(),
    oldest_approval: Gauge::default(),
    spooled: Family::default(),
    notifications: Family::default(),
    notifications_pending: Gauge::default(),
    schedule_fires: Family::default(),
    schedule_skips: Family::default(),
});

fn registry() -> Registry {
    let m = &*METRICS;
    let mut r = Registry::with_prefix("opsdeck");
    r.register(
        "queue_steps",
        "Steps in each queue by state",
        m.queue_steps.clone(),
    );
    r.register(
        "queue_oldest_ready_age_seconds",
        "How long the oldest ready step of each queue has waited",
        m.oldest_ready.clone(),
    );
    r.register("workers", "Known workers by state", m.workers.clone());
    r.register("leases_live", "Leases held now", m.leases.clone());
    r.register(
        "approvals_pending",
        "Approvals waiting for a decision",
        m.approvals.clone(),
    );
    r.register(
        "stream_subscribers",
        "Event streams open now",
        m.subscribers.clone(),
    );
    r.register(
        "ready",
        "1 when the engine serves requests (what /readyz says)",
        m.ready.clone(),
    );
    r.register(
        "step_duration_seconds",
        "How long step attempts ran, by outcome",
        m.step_duration.clone(),
    );
    r.register(
        "steps",
        "Step attempts finished, by outcome",
        m.steps.clone(),
    );
    r.register(
        "assignments",
        "Step assignments (leases) by outcome",
        m.assignments.clone(),
    );
    r.register(
        "run_transitions",
        "Run state changes, by the state reached",
        m.run_transitions.clone(),
    );
    r.register("events", "Events committed", m.events.clone());
    r.register(
        "schedule_fires",
        "Runs schedules submitted, by schedule",
        m.schedule_fires.clone(),
    );
    r.register(
        "schedule_skips",
        "Fire times schedules skipped (missed, overlapping or refused), by schedule",
        m.schedule_skips.clone(),
    );
    r.register(
        "pruned_rows",
        "Rows retention deleted, by table",
        m.pruned.clone(),
    );
    r.register(
        "database_bytes",
        "The database's size on disk, as of the last pruning pass",
        m.database_bytes.clone(),
    );
    r.register(
        "standby",
        "1 while this engine stands by for another that leads",
        m.standby.clone(),
    );
    r.register(
        "queue_wait_seconds",
        "How long steps waited ready in their queue before a worker took them",
        m.queue_wait.clone(),
    );
    r.register(
        "worker_last_heartbeat_age_seconds",
        "Seconds since each worker (not stopped) was last heard from",
        m.heartbeat_age.clone(),
    );
    r.register(
        "leases_stuck",
        "Live leases whose worker could not stop their step",
        m.leases_stuck.clone(),
    );
    r.register(
        "steps_hung",
        "Running steps that printed nothing for their quiet_timeout",
        m.steps_hung.clone(),
    );
    r.register(
        "quarantines",
        "Run names quarantined",
        m.quarantines.clone(),
    );
    r.register(
        "worker_breakers_open",
        "Workers whose breaker is open or half-open",
        m.breakers_open.clone(),
    );
    r.register(
        "approval_oldest_pending_age_seconds",
        "How long the oldest pending approval has waited for a decision",
        m.oldest_approval.clone(),
    );
    r.register(
        "worker_spooled_results",
        "Results each connected worker holds in its spool, not yet acknowledged by the engine",
        m.spooled.clone(),
    );
    r.register(
        "notifications",
        "Notification delivery attempts, by notifier and outcome",
        m.notifications.clone(),
    );
    r.register(
        "notifications_pending",
        "Notifications in the outbox not delivered yet",
        m.notifications_pending.clone(),
    );
    r
}

/// Counts what a pruning pass deleted.
pub fn observe_pruned(p: &crate::store::Pruned) {
    let m = &*METRICS;
    for (table, n) in p.tables() {
        m.pruned.get_or_create(&TableLabel { table }).inc_by(n);
    }
}

/// Counts one delivery attempt: `delivered`, `retry` or `failed`.
pub fn observe_notification(notifier: &str, outcome: &'static str) {
    METRICS
        .notifications
        .get_or_create(&NotifierOutcome {
            notifier: notifier.to_owned(),
            outcome,
        })
        .inc();
}

/// Notifications pending in the outbox, as the delivery task last counted.
pub fn observe_notifications_pending(n: u64) {
    METRICS
        .notifications_pending
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// The database's size, as the store measured it.
pub fn observe_database_bytes(bytes: u64) {
    METRICS
        .database_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Counts the events of a committed batch. Called by the core only after
/// the commit, so nothing is counted that the database refused.
pub fn observe_committed(events: &[Arc<pb::Event>]) {
    let m = &*METRICS;
    m.events.inc_by(events.len() as u64);
    // Steps as they stand after the batch: its events carry the deltas.
    let steps: std::collections::HashMap<(&str, u32), &pb::StepUpdate> = events
        .iter()
        .flat_map(|e| {
            e.step_updates
                .iter()
                .map(|s| ((e.run_id.as_str(), s.index), s))
        })
        .collect();
    for e in events {
        let Some((subject, what)) = e.kind.split_once('.') else {
            continue;
        };
        match subject {
            "run" => {
                m.run_transitions
                    .get_or_create(&To {
                        to: what.to_owned(),
                    })
                    .inc();
            }
            "lease" => {
                m.assignments
                    .get_or_create(&Outcome {
                        outcome: what.to_owned(),
                    })
                    .inc();
                if what == "granted"
                    && let Some(l) = &e.lease
                {
                    m.queue_wait
                        .get_or_create(&QueueLabel {
                            queue: l.queue.clone(),
                        })
                        .observe(l.queue_wait_ms as f64 / 1000.0);
                }
            }
            "schedule" if matches!(what, "fired" | "skipped") => {
                let Some(s) = &e.schedule else { continue };
                let family = if what == "fired" {
                    &m.schedule_fires
                } else {
                    &m.schedule_skips
                };
                family
                    .get_or_create(&ScheduleLabel {
                        schedule: s.name.clone(),
                    })
                    .inc();
            }
            "step" if matches!(what, "succeeded" | "failed" | "dead" | "retry_scheduled") => {
                let outcome = Outcome {
                    outcome: what.to_owned(),
                };
                m.steps.get_or_create(&outcome).inc();
                let step = steps.get(&(e.run_id.as_str(), e.step_index)).copied();
                if let Some(seconds) = step.and_then(|s| step_seconds(e, s)) {
                    m.step_duration.get_or_create(&outcome).observe(seconds);
                }
            }
            _ => {}
        }
    }
}

/// How long the event's step attempt ran, when it has run.
fn step_seconds(e: &pb::Event, step: &pb::StepUpdate) -> Option<f64> {
    let end = if step.finished_at_ms > 0 {
        step.finished_at_ms
    } else {
        e.at_ms
    };
    (step.started_at_ms > 0 && end >= step.started_at_ms)
        .then(|| (end - step.started_at_ms) as f64 / 1000.0)
}

/// What `/readyz` says. The serve code sets it; a standby (leader
/// election) sets [`ReadyState::Standby`].
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicU8>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReadyState {
    Starting = 0,
    Serving = 1,
    Standby = 2,
    Stopping = 3,
}

impl Readiness {
    pub fn set(&self, state: ReadyState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> ReadyState {
        match self.0.load(Ordering::Relaxed) {
            1 => ReadyState::Serving,
            2 => ReadyState::Standby,
            3 => ReadyState::Stopping,
            _ => ReadyState::Starting,
        }
    }
}

/// What the metrics endpoint reads from.
#[derive(Clone)]
pub struct Sources {
    pub core: CoreHandle,
    pub store: Arc<dyn Store>,
    pub readiness: Readiness,
}

struct Shared {
    sources: Sources,
    registry: Registry,
    /// One scrape at a time: gauges are set, then encoded.
    scrape: tokio::sync::Mutex<()>,
}

/// Binds the metrics listener (failing the start if it cannot) and names
/// the bound address in `data_dir`/[`METRICS_ADDR_FILE`].
pub async fn bind(addr: &str, data_dir: &Path) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for metrics on {addr}; set [metrics] listen (or --metrics-listen), or \"none\" for none")
    })?;
    let bound = listener.local_addr()?;
    let file = data_dir.join(METRICS_ADDR_FILE);
    crate::private::write(&file, format!("{bound}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    Ok(listener)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop`.
pub async fn serve(listener: TcpListener, sources: Sources, stop: CancellationToken) {
    let shared = Arc::new(Shared {
        sources,
        registry: registry(),
        scrape: tokio::sync::Mutex::new(()),
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}

async fn metrics(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let _one = shared.scrape.lock().await;
    sample(&shared.sources).await;
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Sets the gauges from the live state.
async fn sample(sources: &Sources) {
    let m = &*METRICS;
    let read = sources.core.call(|state, _| {
        let now = now_ms();
        Ok((
            state.list_queues(now),
            state.list_workers(),
            state.list_leases(false).len(),
            state.list_approvals(false).len(),
            state.subscriber_count(),
            state.oncall_figures(now),
        ))
    });
    let ready = is_ready(sources).await.is_ok();
    m.ready.set(i64::from(ready));
    m.standby
        .set(i64::from(sources.readiness.get() == ReadyState::Standby));
    let Ok(Ok((queues, workers, leases, approvals, subscribers, oncall))) =
        tokio::time::timeout(PROBE_TIMEOUT, read).await
    else {
        return;
    };
    m.queue_steps.clear();
    m.oldest_ready.clear();
    for q in &queues {
        for (state, n) in [
            ("ready", q.ready),
            ("delayed", q.delayed),
            ("running", q.running),
        ] {
            m.queue_steps
                .get_or_create(&QueueState {
                    queue: q.name.clone(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        m.oldest_ready
            .get_or_create(&QueueLabel {
                queue: q.name.clone(),
            })
            .set(q.oldest_ready_age_ms as f64 / 1000.0);
    }
    m.workers.clear();
    for state in [
        pb::WorkerState::Online,
        pb::WorkerState::Draining,
        pb::WorkerState::Recycling,
        pb::WorkerState::Offline,
        pb::WorkerState::Stopped,
    ] {
        m.workers
            .get_or_create(&StateLabel {
                state: worker_state(state),
            })
            .set(0);
    }
    for w in &workers {
        m.workers
            .get_or_create(&StateLabel {
                state: worker_state(w.state()),
            })
            .inc();
    }
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.leases.set(count(leases));
    m.approvals.set(count(approvals));
    m.subscribers.set(count(subscribers));
    m.leases_stuck.set(count(oncall.leases_stuck));
    m.steps_hung.set(count(oncall.steps_hung));
    m.quarantines.set(count(oncall.quarantines));
    m.breakers_open.set(count(oncall.breakers_open));
    m.oldest_approval.set(oncall.oldest_pending_approval);
    m.heartbeat_age.clear();
    for (worker, age) in oncall.heartbeat_ages {
        m.heartbeat_age
            .get_or_create(&WorkerLabel { worker })
            .set(age);
    }
    m.spooled.clear();
    for (worker, n) in oncall.spooled_results {
        m.spooled
            .get_or_create(&WorkerLabel { worker })
            .set(i64::from(n));
    }
}

fn worker_state(state: pb::WorkerState) -> String {
    state
        .as_str_name()
        .trim_start_matches("WORKER_STATE_")
        .to_ascii_lowercase()
}

/// Ready: serving (not starting, standby or stopping), the core answers
/// and the store answers.
async fn is_ready(sources: &Sources) -> Result<(), String> {
    match sources.readiness.get() {
        ReadyState::Serving => {}
        ReadyState::Starting => return Err("starting".into()),
        ReadyState::Standby => return Err("standby: another engine leads".into()),
        ReadyState::Stopping => return Err("stopping".into()),
    }
    match tokio::time::timeout(PROBE_TIMEOUT, sources.core.call(|_, _| Ok(()))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the core does not answer: {e}")),
        Err(_) => return Err(format!("the core did not answer within {PROBE_TIMEOUT:?}")),
    }
    let store = sources.store.events_after(i64::MAX as u64, 1, None);
    match tokio::time::timeout(PROBE_TIMEOUT, store).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the database does not answer: {e}")),
        Err(_) => Err(format!(
            "the database did not answer within {PROBE_TIMEOUT:?}"
        )),
    }
}

async fn readyz(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    match is_ready(&shared.sources).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, started: i64, finished: i64) -> Arc<pb::Event> {
        Arc::new(pb::Event {
            kind: kind.into(),
            at_ms: finished,
            run_id: "r1".into(),
            step_updates: vec![pb::StepUpdate {
                started_at_ms: started,
                finished_at_ms: finished,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn step_durations_come_from_the_step_s_start_and_finish() {
        let e = event("step.succeeded", 1_000, 3_500);
        assert_eq!(step_seconds(&e, &e.step_updates[0]), Some(2.5));
        // Never started (e.g. dead before a worker took it): no duration.
        let e = event("step.dead", 0, 3_500);
        assert_eq!(step_seconds(&e, &e.step_updates[0]), None);
    }

    #[test]
    fn committed_events_are_counted_by_subject_and_outcome() {
        let outcome = |o: &str| Outcome {
            outcome: o.to_owned(),
        };
        let m = &*METRICS;
        let before = m.steps.get_or_create(&outcome("succeeded")).get();
        let granted = m.assignments.get_or_create(&outcome("granted")).get();
        observe_committed(&[
            event("step.succeeded", 1_000, 2_000),
            event("lease.granted", 0, 0),
            event("worker.registered", 0, 0),
        ]);
        assert_eq!(
            m.steps.get_or_create(&outcome("succeeded")).get(),
            before + 1
        );
        assert_eq!(
            m.assignments.get_or_create(&outcome("granted")).get(),
            granted + 1
        );
    }
}
