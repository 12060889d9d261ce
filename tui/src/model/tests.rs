//! Unit tests of [`super`].

use super::*;
use opsdeck_proto::v1::Step;

const NOW: i64 = 1_700_000_000_000;

fn worker(id: &str, connected: bool, leases: &[&str]) -> Worker {
    Worker {
        id: id.into(),
        state: WorkerState::Online as i32,
        connected,
        lease_ids: leases.iter().map(|l| (*l).to_owned()).collect(),
        slots: 2,
        ..Worker::default()
    }
}

fn lease(id: &str, worker: &str, expires_at_ms: i64) -> Lease {
    Lease {
        id: id.into(),
        worker_id: worker.into(),
        run_id: "r1".into(),
        state: LeaseState::Active as i32,
        expires_at_ms,
        ..Lease::default()
    }
}

#[test]
fn lease_events_keep_their_worker_s_list_of_leases() {
    let mut data = Data::default();
    data.workers.insert("w1".into(), worker("w1", true, &[]));
    let granted = Event {
        seq: 1,
        kind: "lease.granted".into(),
        lease: Some(Box::new(lease("l1", "w1", NOW))),
        ..Event::default()
    };
    data.apply_event(granted, NOW);
    assert_eq!(data.workers["w1"].lease_ids, vec!["l1".to_owned()]);
    let mut ended = lease("l1", "w1", NOW);
    ended.state = LeaseState::Released as i32;
    let released = Event {
        seq: 2,
        kind: "lease.released".into(),
        lease: Some(Box::new(ended)),
        ..Event::default()
    };
    data.apply_event(released, NOW);
    assert!(data.workers["w1"].lease_ids.is_empty());
    assert!(data.leases.is_empty());
}

fn step(index: u32, state: StepState) -> Step {
    Step {
        index,
        name: format!("step-{index}"),
        state: state as i32,
        queue: "build".into(),
        max_attempts: 3,
        timeout_ms: 60_000,
        ..Step::default()
    }
}

fn submitted(id: &str, seq: u64) -> Event {
    Event {
        seq,
        kind: "run.submitted".into(),
        run_id: id.into(),
        run: Some(Box::new(Run {
            id: id.into(),
            name: "deploy".into(),
            state: RunState::Queued as i32,
            created_at_ms: NOW,
            steps: vec![step(0, StepState::Queued), step(1, StepState::Blocked)],
            ..Run::default()
        })),
        ..Event::default()
    }
}

fn finished_run(id: &str, finished_at_ms: i64) -> Run {
    Run {
        id: id.into(),
        state: RunState::Succeeded as i32,
        finished_at_ms,
        ..Run::default()
    }
}

#[test]
fn run_submitted_inserts_the_whole_run_and_the_tail_keeps_none_of_it() {
    let mut data = Data::default();
    data.apply_event(submitted("r1", 7), NOW);
    let run = data.runs.get("r1").unwrap();
    assert_eq!(run.name, "deploy");
    assert_eq!(run.steps.len(), 2);
    assert!(data.events[0].run.is_none());
    assert_eq!(data.seq, 7);
}

#[test]
fn a_run_update_changes_the_runs_header_and_nothing_else() {
    let mut data = Data::default();
    data.apply_event(submitted("r1", 1), NOW);
    let version = data.version;
    data.apply_event(
        Event {
            seq: 2,
            kind: "run.finished".into(),
            run_id: "r1".into(),
            run_update: Some(RunUpdate {
                state: RunState::Failed as i32,
                current_step: 1,
                message: "step 2 failed: exit 3".into(),
                updated_at_ms: NOW + 5,
                finished_at_ms: NOW + 5,
            }),
            ..Event::default()
        },
        NOW,
    );
    let run = data.runs.get("r1").unwrap();
    assert_eq!(run.state(), RunState::Failed);
    assert_eq!(run.current_step, 1);
    assert_eq!(run.message, "step 2 failed: exit 3");
    assert_eq!((run.updated_at_ms, run.finished_at_ms), (NOW + 5, NOW + 5));
    assert_eq!(run.name, "deploy", "what a delta does not carry stays");
    assert_eq!(run.steps.len(), 2);
    assert!(data.version > version);
    assert_eq!(data.runs.finished(), 1, "it counts as finished now");
    assert!(
        data.events[1].run_update.is_none(),
        "the tail keeps no deltas"
    );
}

#[test]
fn step_updates_change_the_steps_they_name() {
    let mut data = Data::default();
    data.apply_event(submitted("r1", 1), NOW);
    data.apply_event(
        Event {
            seq: 2,
            kind: "step.failed".into(),
            run_id: "r1".into(),
            step_updates: vec![
                StepUpdate {
                    index: 0,
                    state: StepState::RetryWait as i32,
                    attempt: 1,
                    lease_id: "l1".into(),
                    worker_id: "w1".into(),
                    exit_code: 3,
                    has_exit_code: true,
                    message: "exit 3".into(),
                    started_at_ms: NOW - 10,
                    finished_at_ms: NOW - 1,
                    next_attempt_at_ms: NOW + 1_000,
                    approval_id: String::new(),
                    attempts_counted: 1,
                    attempts_given_back: 0,
                    hung: false,
                },
                StepUpdate {
                    index: 1,
                    state: StepState::Waiting as i32,
                    approval_id: "a1".into(),
                    ..StepUpdate::default()
                },
                // A step the run does not have is left alone.
                StepUpdate {
                    index: 9,
                    ..StepUpdate::default()
                },
            ],
            ..Event::default()
        },
        NOW,
    );
    let steps = &data.runs.get("r1").unwrap().steps;
    assert_eq!(steps.len(), 2);
    let s = &steps[0];
    assert_eq!(s.state(), StepState::RetryWait);
    assert_eq!((s.attempt, s.exit_code, s.has_exit_code), (1, 3, true));
    assert_eq!((s.lease_id.as_str(), s.worker_id.as_str()), ("l1", "w1"));
    assert_eq!(s.message, "exit 3");
    assert_eq!(
        (s.started_at_ms, s.finished_at_ms, s.next_attempt_at_ms),
        (NOW - 10, NOW - 1, NOW + 1_000)
    );
    assert_eq!(
        (s.name.as_str(), s.timeout_ms),
        ("step-0", 60_000),
        "the spec stays"
    );
    assert_eq!(steps[1].state(), StepState::Waiting);
    assert_eq!(steps[1].approval_id, "a1");
    assert!(
        data.events[1].step_updates.is_empty(),
        "the tail keeps no deltas"
    );
}

#[test]
fn a_delta_for_a_run_not_held_is_ignored_and_makes_no_run() {
    let mut data = Data::default();
    data.apply_event(
        Event {
            seq: 3,
            kind: "step.running".into(),
            run_id: "gone".into(),
            run_update: Some(RunUpdate {
                state: RunState::Running as i32,
                ..RunUpdate::default()
            }),
            step_updates: vec![StepUpdate::default()],
            ..Event::default()
        },
        NOW,
    );
    assert!(data.runs.is_empty());
    assert_eq!(data.events.len(), 1, "the event still joins the tail");
    assert_eq!(data.seq, 3);
}

#[test]
fn queues_carried_by_an_event_replace_ours_and_are_seen_now() {
    let mut data = Data::default();
    let q = |name: &str, ready| Queue {
        name: name.into(),
        ready,
        ..Queue::default()
    };
    data.apply_snapshot(
        Snapshot {
            queues: vec![q("build", 4), q("ops", 1)],
            ..Snapshot::default()
        },
        NOW - 10_000,
    );
    data.apply_event(
        Event {
            seq: 1,
            kind: "step.leased".into(),
            queues: vec![q("build", 3), q("deploy", 2)],
            ..Event::default()
        },
        NOW,
    );
    assert_eq!(data.queues["build"].queue.ready, 3);
    assert_eq!(data.queues["build"].seen_at_ms, NOW);
    assert_eq!(data.queues["deploy"].queue.ready, 2);
    assert_eq!(
        data.queues["ops"].queue.ready, 1,
        "a queue not carried stays"
    );
    assert!(data.events[0].queues.is_empty(), "the tail keeps no queues");
}

#[test]
fn finished_runs_past_the_bound_go_the_first_finished_first_and_live_ones_all_stay() {
    let mut runs = Runs::with_limit(3);
    for i in 0..10 {
        runs.insert(Run {
            id: format!("live{i}"),
            state: RunState::Running as i32,
            ..Run::default()
        });
    }
    // Finished in an order other than their ids'.
    for (id, at) in [("f1", 50), ("f2", 10), ("f3", 40), ("f4", 30), ("f5", 20)] {
        runs.insert(finished_run(id, NOW + at));
    }
    assert_eq!(runs.finished(), 3);
    assert_eq!(runs.len(), 13);
    let kept: Vec<&String> = runs.keys().filter(|k| k.starts_with('f')).collect();
    assert_eq!(kept, ["f1", "f3", "f4"], "f2 and f5 finished first");

    // A live run finishing counts against the bound too.
    runs.update("live0", |r| {
        r.state = RunState::Failed as i32;
        r.finished_at_ms = NOW + 60;
    });
    assert_eq!(runs.finished(), 3);
    assert!(runs.contains_key("live0"));
    assert!(!runs.contains_key("f4"));
    assert_eq!(runs.len(), 12);
    // A finished run retried is live again, and kept whatever happens.
    runs.update("f3", |r| r.state = RunState::Running as i32);
    assert_eq!(runs.finished(), 2);
    for i in 0..5 {
        runs.insert(finished_run(&format!("g{i}"), NOW + 100 + i));
    }
    assert!(runs.contains_key("f3"));
    assert_eq!(runs.finished(), 3);
    assert_eq!(runs.len(), 9 + 1 + 3, "nine live, f3, three finished");
}

#[test]
fn the_default_bound_holds_through_a_snapshot_and_a_stream_of_runs() {
    let mut data = Data::default();
    data.apply_snapshot(
        Snapshot {
            runs: (0..FINISHED_KEPT + 500)
                .map(|i| finished_run(&format!("s{i:05}"), NOW + i as i64))
                .collect(),
            ..Snapshot::default()
        },
        NOW,
    );
    assert_eq!(data.runs.len(), FINISHED_KEPT);
    assert!(!data.runs.contains_key("s00499"));
    assert!(data.runs.contains_key("s00500"));
    for i in 0..3 * FINISHED_KEPT as u64 {
        let id = format!("e{i:05}");
        data.apply_event(submitted(&id, i + 1), NOW);
        data.apply_event(
            Event {
                seq: i + 1,
                run_id: id,
                run_update: Some(RunUpdate {
                    state: RunState::Succeeded as i32,
                    finished_at_ms: NOW + 10_000 + i as i64,
                    ..RunUpdate::default()
                }),
                ..Event::default()
            },
            NOW,
        );
    }
    assert_eq!(data.runs.len(), FINISHED_KEPT);
    assert_eq!(data.runs.finished(), FINISHED_KEPT);
    assert!(data.runs.keys().all(|k| k.starts_with('e')));
}

#[test]
fn a_pinned_run_is_kept_whatever_its_age_and_goes_first_once_unpinned() {
    let mut runs = Runs::with_limit(2);
    runs.insert(finished_run("old", NOW - 1_000));
    runs.pin(Some("old".into()));
    for i in 0..5 {
        runs.insert(finished_run(&format!("new{i}"), NOW + i));
    }
    assert!(runs.contains_key("old"));
    assert_eq!(runs.finished(), 2, "the pinned one counts");
    assert_eq!(runs.pinned(), Some("old"));
    // Unpinned, it is the first to go when the next one finishes.
    runs.pin(None);
    runs.insert(finished_run("newer", NOW + 10));
    assert!(!runs.contains_key("old"));
    assert_eq!(runs.keys().collect::<Vec<_>>(), ["new4", "newer"]);
}

#[test]
fn events_replace_objects_and_drop_ended_leases() {
    let mut data = Data::default();
    let mut ev = Event {
        seq: 5,
        kind: "lease.granted".into(),
        lease: Some(Box::new(lease("l1", "w1", NOW))),
        worker: Some(Box::new(worker("w1", true, &["l1"]))),
        ..Event::default()
    };
    data.apply_event(ev.clone(), NOW);
    assert!(data.leases.contains_key("l1"));
    assert_eq!(data.seq, 5);
    assert!(data.events[0].lease.is_none(), "the tail keeps no objects");

    ev.seq = 6;
    ev.kind = "lease.released".into();
    ev.lease.as_mut().unwrap().state = LeaseState::Released as i32;
    data.apply_event(ev, NOW);
    assert!(data.leases.is_empty());
    assert_eq!(data.events.len(), 2);
    assert_eq!(data.event(6).unwrap().kind, "lease.released");
}

#[test]
fn a_snapshot_replaces_objects_but_keeps_history() {
    let mut data = Data::default();
    data.apply_event(
        Event {
            seq: 1,
            run: Some(Box::new(Run {
                id: "old".into(),
                ..Run::default()
            })),
            ..Event::default()
        },
        NOW,
    );
    data.apply_snapshot(
        Snapshot {
            seq: 10,
            runs: vec![Run {
                id: "new".into(),
                ..Run::default()
            }],
            ..Snapshot::default()
        },
        NOW,
    );
    assert_eq!(data.runs.keys().collect::<Vec<_>>(), ["new"]);
    assert_eq!(data.events.len(), 1);
    assert_eq!(data.seq, 10);
    assert!(data.loaded);
}

#[test]
fn backfill_merges_in_seq_order_without_duplicates() {
    let mut data = Data::default();
    let ev = |seq| Event {
        seq,
        ..Event::default()
    };
    data.apply_event(ev(5), NOW);
    data.backfill(vec![ev(3), ev(4), ev(5)]);
    let seqs: Vec<u64> = data.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
}

#[test]
fn refresh_only_moves_heartbeats_and_expiries_forward() {
    let mut data = Data::default();
    data.workers.insert("w1".into(), worker("w1", true, &[]));
    data.leases.insert("l1".into(), lease("l1", "w1", NOW));
    let mut newer = worker("w1", true, &[]);
    newer.last_heartbeat_at_ms = NOW;
    data.refresh(&[newer], &[lease("l1", "w1", NOW - 5)]);
    assert_eq!(data.workers["w1"].last_heartbeat_at_ms, NOW);
    assert_eq!(data.leases["l1"].expires_at_ms, NOW);
}

#[test]
fn listed_queues_are_merged_newest_first_and_a_queue_no_longer_listed_goes() {
    let q = |name: &str, ready, workers| Queue {
        name: name.into(),
        ready,
        workers,
        ..Queue::default()
    };
    let mut data = Data::default();
    data.apply_snapshot(
        Snapshot {
            queues: vec![q("build", 4, 1), q("old", 0, 0)],
            ..Snapshot::default()
        },
        NOW,
    );
    // Asked at NOW + 10; meanwhile an event tells build's new depth
    // and of a queue the answer predates.
    data.apply_event(
        Event {
            seq: 1,
            queues: vec![q("build", 2, 1), q("fresh", 1, 0)],
            ..Event::default()
        },
        NOW + 20,
    );
    let version = data.version;
    data.refresh_queues(
        vec![q("build", 4, 1), q("deploy", 0, 2)],
        NOW + 10,
        NOW + 30,
    );
    assert_eq!(
        data.queues.keys().map(String::as_str).collect::<Vec<_>>(),
        ["build", "deploy", "fresh"],
        "a queue only a worker serves is added; one no longer listed goes"
    );
    assert_eq!(data.queues["build"].queue.ready, 2, "the event is newer");
    assert_eq!(data.queues["deploy"].queue.workers, 2);
    assert_eq!(data.queues["deploy"].seen_at_ms, NOW + 30);
    assert!(data.version > version);

    // Asked after the event: the answer is the newer.
    data.refresh_queues(
        vec![q("build", 7, 1), q("deploy", 0, 2), q("fresh", 1, 0)],
        NOW + 40,
        NOW + 50,
    );
    assert_eq!(data.queues["build"].queue.ready, 7);
    let version = data.version;
    data.refresh_queues(
        vec![q("build", 7, 1), q("deploy", 0, 2), q("fresh", 1, 0)],
        NOW + 60,
        NOW + 70,
    );
    assert_eq!(data.version, version, "nothing changed, nothing redrawn");
}

#[test]
fn a_lease_is_stale_when_its_holder_is_gone_and_overdue_when_past_expiry_on_a_live_one() {
    let mut data = Data::default();
    data.workers
        .insert("up".into(), worker("up", true, &["l1"]));
    data.workers
        .insert("down".into(), worker("down", false, &["l2"]));
    let overdue_lease = lease("l1", "up", NOW - EXPIRY_SLACK_MS - 1);
    let held_by_gone = lease("l2", "down", NOW - 60_000);
    assert!(!lease_stale(&data, &overdue_lease));
    assert!(lease_overdue(&data, &overdue_lease, NOW));
    assert!(!lease_stuck(&overdue_lease), "only the engine says stuck");
    assert!(lease_stale(&data, &held_by_gone));
    assert!(!lease_overdue(&data, &held_by_gone, NOW));
    assert!(!lease_overdue(&data, &lease("l3", "up", NOW + 1000), NOW));
}

#[test]
fn a_lease_the_engine_marked_stuck_makes_its_worker_stuck_and_is_counted() {
    let mut data = Data::default();
    data.workers
        .insert("up".into(), worker("up", true, &["l1"]));
    let mut stuck = lease("l1", "up", NOW + 10_000);
    stuck.stuck = true;
    data.apply_event(
        Event {
            seq: 1,
            kind: "lease.stuck".into(),
            lease: Some(Box::new(stuck)),
            ..Event::default()
        },
        NOW,
    );
    assert!(lease_stuck(&data.leases["l1"]));
    assert!(
        !lease_overdue(&data, &data.leases["l1"], NOW),
        "stuck, not merely overdue"
    );
    assert!(worker_status(&data, &data.workers["up"], NOW).stuck);
    let f = figures(&data, NOW);
    assert_eq!((f.stuck, f.stuck_leases), (1, 1));
}

#[test]
fn quarantines_come_from_the_snapshot_and_go_with_their_cleared_event() {
    let mut data = Data::default();
    let q = |name: &str| Quarantine {
        name: name.into(),
        since_ms: NOW,
        stuck_count: 2,
        message: "stuck twice".into(),
    };
    data.apply_snapshot(
        Snapshot {
            seq: 3,
            quarantines: vec![q("wedged")],
            ..Snapshot::default()
        },
        NOW,
    );
    assert_eq!(data.quarantines.keys().collect::<Vec<_>>(), ["wedged"]);
    data.apply_event(
        Event {
            seq: 4,
            kind: "run_name.quarantined".into(),
            quarantine: Some(Box::new(q("nightly"))),
            ..Event::default()
        },
        NOW,
    );
    assert_eq!(figures(&data, NOW).quarantines, 2);
    assert!(
        data.events[0].quarantine.is_none(),
        "the tail keeps no objects"
    );
    data.apply_event(
        Event {
            seq: 5,
            kind: "run_name.quarantine_cleared".into(),
            quarantine: Some(Box::new(q("wedged"))),
            ..Event::default()
        },
        NOW,
    );
    assert_eq!(data.quarantines.keys().collect::<Vec<_>>(), ["nightly"]);
    // A snapshot replaces them whole.
    data.apply_snapshot(Snapshot::default(), NOW);
    assert!(data.quarantines.is_empty());
}

#[test]
fn a_step_over_its_timeout_makes_its_lease_overdue_but_not_its_worker_stuck() {
    let mut data = Data::default();
    data.workers
        .insert("up".into(), worker("up", true, &["l1"]));
    data.runs.insert(Run {
        id: "r1".into(),
        steps: vec![Step {
            state: StepState::Running as i32,
            timeout_ms: 1_000,
            started_at_ms: NOW - 5_000,
            ..Step::default()
        }],
        ..Run::default()
    });
    data.leases
        .insert("l1".into(), lease("l1", "up", NOW + 10_000));
    assert!(lease_overdue(&data, &data.leases["l1"], NOW));
    let status = worker_status(&data, &data.workers["up"], NOW);
    assert!(!status.stuck, "the worker may still stop it");
    assert_eq!(status.note, Some("busy"));
}

#[test]
fn the_oldest_ready_step_keeps_ageing_between_events() {
    let q = QueueSeen {
        queue: Queue {
            ready: 1,
            oldest_ready_age_ms: 1_000,
            ..Queue::default()
        },
        seen_at_ms: NOW - 4_000,
    };
    assert_eq!(q.oldest_ready_age_ms(NOW), 5_000);
}

#[test]
fn figures_count_failures_among_recently_finished_runs() {
    let mut data = Data::default();
    for (id, state, at) in [
        ("a", RunState::Succeeded, NOW - 1_000),
        ("b", RunState::Failed, NOW - 2_000),
        ("c", RunState::Failed, NOW - RATE_WINDOW_MS - 1),
        ("d", RunState::Running, 0),
    ] {
        data.runs.insert(Run {
            id: id.into(),
            state: state as i32,
            finished_at_ms: at,
            ..Run::default()
        });
    }
    let f = figures(&data, NOW);
    assert_eq!((f.finished_recently, f.failed_recently), (2, 1));
    assert_eq!(f.failure_rate(), Some(50));
    assert_eq!(f.active_runs, 1);
}
