//! Slow consumers: a stream client that stops reading is cut off with a
//! resync marker once its buffer is full, and the engine neither waits for
//! it nor keeps growing memory for it.
//!
//! The measurement (50 stalled subscribers under 2,000 events/s) is a bench,
//! not a timed test; run it with
//! `cargo nextest run -p opsdeck-tests -E 'binary(slow_consumers)' --run-ignored only --no-capture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opsdeck_tests::pb::{
    CancelRunRequest, FollowEventsRequest, SubmitRunRequest, WatchMessage, WatchRequest,
    WhoamiRequest, watch_message::Kind,
};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, pb};
use tonic::{Code, Streaming};

/// An approval-gated run; its 4 KiB label rides in every event about it,
/// so that a few hundred events outgrow what the transport buffers.
fn gate() -> String {
    format!(
        "name = \"slow\"\nlabels = {{ pad = \"{}\" }}\n[[step]]\nname = \"gate\"\napproval = {{ timeout = \"1h\" }}\n",
        "x".repeat(4096)
    )
}

fn submit_request() -> SubmitRunRequest {
    SubmitRunRequest {
        spec: gate(),
        reason: "load".into(),
        ..Default::default()
    }
}

async fn watch_past_snapshot(engine: &Engine) -> Streaming<WatchMessage> {
    // A connection of its own: a stalled stream must not stall others.
    let mut stream = pb::console_client::ConsoleClient::new(engine.channel().await)
        .watch(WatchRequest {
            resume_after_seq: 0,
        })
        .await
        .expect("Watch")
        .into_inner();
    loop {
        let msg = stream
            .message()
            .await
            .expect("snapshot")
            .expect("a message");
        if matches!(msg.kind, Some(Kind::SnapshotEnd(_))) {
            return stream;
        }
    }
}

async fn head(engine: &Engine) -> u64 {
    engine
        .api()
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("whoami")
        .into_inner()
        .head_seq
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_with_a_resync_and_the_engine_does_not_wait_for_it()
{
    let opts = EngineOpts {
        config: "[engine]\nsubscriber_buffer = 16\n".into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    let mut stalled_watch = watch_past_snapshot(&engine).await;
    let after = head(&engine).await;
    let mut stalled_follow = pb::events_client::EventsClient::new(engine.channel().await)
        .follow_events(FollowEventsRequest {
            after_seq: after,
            run_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("FollowEvents")
        .into_inner();

    // Nobody reads while 300 runs (600 events) are submitted, then 2,000 more: far more than
    // the buffer, the stream's queue and the HTTP/2 windows hold. The
    // engine answers as fast as ever.
    let mut runs = engine.api().await.runs;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let t = Instant::now();
        runs.submit_run(submit_request()).await.expect("submit");
        slowest = slowest.max(t.elapsed());
    }
    // Events are small deltas, so a few hundred fit in the transport's
    // buffers: a burst of a few thousand more overflows them for sure.
    for _ in 0..2 {
        runs.submit_runs(pb::SubmitRunsRequest {
            runs: vec![submit_request(); 1000],
        })
        .await
        .expect("a burst of submits");
    }
    let produced = head(&engine).await - after;
    eprintln!(
        "300 submits and 2,000 in bursts ({produced} events) with two stalled streams in {:?}; slowest single submit {slowest:?}",
        started.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a stalled client slowed the engine: {slowest:?}"
    );

    // The watcher reads again: what was in flight, then the resync marker,
    // then the end of the stream.
    let mut events = 0;
    let reading = Instant::now();
    let reason = loop {
        assert!(
            reading.elapsed() < DEADLINE,
            "no resync after {events} events"
        );
        let msg = tokio::time::timeout(DEADLINE, stalled_watch.message())
            .await
            .expect("the stalled watch hears from the engine")
            .expect("no error before the resync")
            .expect("a resync before the end");
        match msg.kind {
            Some(Kind::Event(_)) => events += 1,
            Some(Kind::Resync(r)) => break r.reason,
            _ => {}
        }
    };
    assert!(reason.contains("fell behind"), "{reason}");
    assert!(
        events < produced,
        "the watcher was cut off, not sent all {produced} events ({events} came)"
    );
    assert!(
        tokio::time::timeout(DEADLINE, stalled_watch.message())
            .await
            .expect("the stream ends")
            .ok()
            .flatten()
            .is_none(),
        "nothing follows a resync"
    );

    // FollowEvents says the same as an error the client can act on.
    let status = loop {
        match tokio::time::timeout(DEADLINE, stalled_follow.message())
            .await
            .expect("the stalled follower hears from the engine")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the follow stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("follow again from your last seq"),
        "{status:?}"
    );

    // A fresh watch gets a snapshot with every run.
    let mut fresh = pb::console_client::ConsoleClient::new(engine.channel().await)
        .watch(WatchRequest {
            resume_after_seq: 0,
        })
        .await
        .expect("Watch")
        .into_inner();
    let mut runs_seen = 0;
    loop {
        match fresh
            .message()
            .await
            .expect("snapshot")
            .expect("a message")
            .kind
        {
            Some(Kind::SnapshotChunk(c)) => runs_seen += c.runs.len(),
            Some(Kind::SnapshotEnd(_)) => break,
            _ => {}
        }
    }
    assert_eq!(runs_seen, 2_300);
}

/// A gated run without padding: the load of the measurement.
fn small_request() -> SubmitRunRequest {
    SubmitRunRequest {
        spec: "name = \"load\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"1h\" }\n"
            .into(),
        reason: "load".into(),
        ..Default::default()
    }
}

/// Submits and cancels approval-gated runs (4 events per pair) at about
/// `events_per_second`, until `stop`; counts the pairs done.
fn load(
    engine: &Engine,
    channel: tonic::transport::Channel,
    events_per_second: u64,
    stop: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    const TASKS: u64 = 32;
    let _ = engine;
    let pairs_per_task = (events_per_second / 4).div_ceil(TASKS).max(1);
    let period = Duration::from_micros(1_000_000 / pairs_per_task);
    (0..TASKS)
        .map(|_| {
            let mut runs = pb::runs_client::RunsClient::new(channel.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                let mut done = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    tick.tick().await;
                    let Ok(run) = runs.submit_run(small_request()).await else {
                        continue;
                    };
                    let id = run.into_inner().run.map(|r| r.id).unwrap_or_default();
                    let _ = runs
                        .cancel_run(CancelRunRequest {
                            id,
                            reason: "load".into(),
                        })
                        .await;
                    done += 1;
                }
                done
            })
        })
        .collect()
}

/// Engine RSS every second for `secs` seconds: (min, max, last) in MiB, and
/// the events produced meanwhile.
async fn sample(engine: &Engine, secs: u64) -> (f64, f64, f64, u64) {
    let from = head(engine).await;
    let mut seen = Vec::new();
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.push(engine.rss_kib() as f64 / 1024.0);
    }
    let events = head(engine).await - from;
    let min = seen.iter().cloned().fold(f64::MAX, f64::min);
    let max = seen.iter().cloned().fold(0.0, f64::max);
    (min, max, *seen.last().unwrap_or(&0.0), events)
}

#[tokio::test]
#[ignore = "a measurement: run it on purpose (see the module docs)"]
async fn fifty_stalled_subscribers_under_2000_events_a_second_keep_the_engine_memory_bounded() {
    const SUBSCRIBERS: usize = 50;
    const RATE: u64 = 2_000;
    const PHASE: u64 = 20;
    let engine = Engine::start(EngineOpts::default()).await;
    let stop = Arc::new(AtomicU64::new(0));
    let channel = engine.channel().await;
    let idle = engine.rss_kib() as f64 / 1024.0;

    // Phase 1: the load alone. The engine keeps every run in memory, so RSS
    // grows with the runs submitted whatever the subscribers do.
    let tasks = load(&engine, channel.clone(), RATE, stop.clone());
    let (a_min, a_max, a_last, a_events) = sample(&engine, PHASE).await;

    // Phase 2: the same load with 50 subscribers that never read (half
    // Console.Watch, half Events.FollowEvents, each on its own connection).
    let mut stalled_watches = Vec::new();
    let mut stalled_follows = Vec::new();
    for i in 0..SUBSCRIBERS {
        if i.is_multiple_of(2) {
            stalled_watches.push(watch_past_snapshot(&engine).await);
        } else {
            let after = head(&engine).await;
            let s = pb::events_client::EventsClient::new(engine.channel().await)
                .follow_events(FollowEventsRequest {
                    after_seq: after,
                    run_id: String::new(),
                    ..Default::default()
                })
                .await
                .expect("follow")
                .into_inner();
            stalled_follows.push(s);
        }
    }
    let with_subs = engine.rss_kib() as f64 / 1024.0;
    let (b_min, b_max, b_last, b_events) = sample(&engine, PHASE).await;
    stop.store(1, Ordering::Relaxed);
    let mut pairs = 0;
    for t in tasks {
        pairs += t.await.unwrap_or(0);
    }

    // Every stalled subscriber was cut off.
    let mut resyncs = 0;
    for mut s in stalled_watches {
        while let Ok(Some(msg)) = tokio::time::timeout(DEADLINE, s.message())
            .await
            .expect("in time")
        {
            if matches!(msg.kind, Some(Kind::Resync(_))) {
                resyncs += 1;
                break;
            }
        }
    }
    for mut s in stalled_follows {
        loop {
            match tokio::time::timeout(DEADLINE, s.message())
                .await
                .expect("in time")
            {
                Ok(Some(_)) => continue,
                Err(status) if status.code() == Code::ResourceExhausted => {
                    resyncs += 1;
                    break;
                }
                _ => break,
            }
        }
    }
    let rate = |events: u64| events as f64 / PHASE as f64;
    eprintln!(
        "slow consumers: engine RSS idle {idle:.1} MiB; \
         load alone {PHASE}s at {:.0} events/s: {a_min:.1}..{a_max:.1} MiB (end {a_last:.1}); \
         50 stalled subscribers connected: {with_subs:.1} MiB; \
         load with them {PHASE}s at {:.0} events/s: {b_min:.1}..{b_max:.1} MiB (end {b_last:.1}); \
         {pairs} runs submitted and cancelled; {resyncs}/{SUBSCRIBERS} subscribers cut off with a resync",
        rate(a_events),
        rate(b_events),
    );
    assert_eq!(resyncs, SUBSCRIBERS, "every stalled subscriber is cut off");
    // Bounded: the stalled subscribers add at most their buffers, not a
    // backlog that grows with the events.
    let growth_alone = a_last - a_min;
    let growth_with = b_last - b_min;
    assert!(
        growth_with < growth_alone + 64.0,
        "memory grew {growth_with:.1} MiB with stalled subscribers vs {growth_alone:.1} MiB without"
    );
}
