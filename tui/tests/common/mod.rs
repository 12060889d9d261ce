//! A console with a fixed clock and hand-made engine state: a run waiting
//! for an approval (one more is overdue), a failed run with a dead step,
//! workers in every state (one with a lease the engine marked stuck), a
//! paused queue, a stale lease, and the stuck lease's run name
//! quarantined.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opsdeck_proto::v1::*;
use opsdeck_tui::app::{self, App, Cmd, Link, Msg, Options, Palette};
use opsdeck_tui::conn::Update;
use opsdeck_tui::model::Snapshot;
use opsdeck_tui::view::Console;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

pub const NOW: i64 = 1_700_000_000_000;
const S: i64 = 1000;
const M: i64 = 60 * S;

pub fn key(c: char) -> Msg {
    let modifiers = if c.is_ascii_uppercase() {
        KeyModifiers::SHIFT
    } else {
        KeyModifiers::NONE
    };
    Msg::Key(KeyEvent::new(KeyCode::Char(c), modifiers))
}

pub fn code(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Types text, one key a character.
pub fn type_text(app: &mut App, text: &str) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    for c in text.chars() {
        cmds.extend(app::update(app, key(c)));
    }
    cmds
}

fn step(index: u32, name: &str, kind: StepKind, state: StepState) -> Step {
    Step {
        index,
        name: name.into(),
        kind: kind as i32,
        state: state as i32,
        queue: if kind == StepKind::Exec {
            "build".into()
        } else {
            String::new()
        },
        max_attempts: 3,
        ..Step::default()
    }
}

pub fn runs() -> Vec<Run> {
    let mut deploy = Run {
        id: "01HRUN0000000000000000DEPLOY".into(),
        name: "deploy-web".into(),
        submitted_by: "ann".into(),
        state: RunState::WaitingApproval as i32,
        created_at_ms: NOW - 5 * M,
        updated_at_ms: NOW - 2 * M,
        current_step: 1,
        labels: [("team".to_owned(), "web".to_owned())].into(),
        steps: vec![
            Step {
                attempt: 1,
                worker_id: "build-1".into(),
                has_exit_code: true,
                started_at_ms: NOW - 5 * M,
                finished_at_ms: NOW - 3 * M,
                ..step(0, "build", StepKind::Exec, StepState::Succeeded)
            },
            Step {
                approval_id: "01HAPP00000000000000000001".into(),
                ..step(1, "approve-prod", StepKind::Approval, StepState::Waiting)
            },
            step(2, "rollout", StepKind::Exec, StepState::Blocked),
        ],
        ..Run::default()
    };
    deploy.steps[2].queue = "deploy".into();
    let backup = Run {
        id: "01HRUN0000000000000000BACKUP".into(),
        name: "backup-logs".into(),
        submitted_by: "cron".into(),
        state: RunState::Failed as i32,
        created_at_ms: NOW - 20 * M,
        finished_at_ms: NOW - 2 * M,
        message: "step 1 (backup) is dead after 2 attempts: exit 28".into(),
        steps: vec![Step {
            attempt: 2,
            max_attempts: 2,
            exit_code: 28,
            has_exit_code: true,
            message: "exit 28".into(),
            worker_id: "ops-1".into(),
            queue: "ops".into(),
            started_at_ms: NOW - 3 * M,
            finished_at_ms: NOW - 2 * M,
            ..step(0, "backup", StepKind::Exec, StepState::Dead)
        }],
        ..Run::default()
    };
    let build = Run {
        id: "01HRUN00000000000000000BUILD".into(),
        name: "build-api".into(),
        submitted_by: "bob".into(),
        state: RunState::Running as i32,
        created_at_ms: NOW - M,
        current_step: 0,
        steps: vec![Step {
            attempt: 1,
            worker_id: "build-1".into(),
            lease_id: "01HLEASE0000000000000000001".into(),
            started_at_ms: NOW - 30 * S,
            timeout_ms: 600_000,
            ..step(0, "compile", StepKind::Exec, StepState::Running)
        }],
        ..Run::default()
    };
    let old = Run {
        id: "01HRUN000000000000000000OLD".into(),
        name: "cleanup-tmp".into(),
        submitted_by: "cron".into(),
        state: RunState::Succeeded as i32,
        created_at_ms: NOW - 30 * M,
        finished_at_ms: NOW - 29 * M,
        steps: vec![step(0, "clean", StepKind::Exec, StepState::Succeeded)],
        ..Run::default()
    };
    vec![deploy, backup, build, old]
}

pub fn workers() -> Vec<Worker> {
    let w =
        |id: &str, state: WorkerState, queues: &[&str], leases: &[&str], connected: bool| Worker {
            id: id.into(),
            state: state as i32,
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            slots: 2,
            lease_ids: leases.iter().map(|l| (*l).to_owned()).collect(),
            connected,
            host: "ci-7".into(),
            pid: 4242,
            generation: 1,
            last_heartbeat_at_ms: NOW - 2 * S,
            ..Worker::default()
        };
    vec![
        w(
            "build-1",
            WorkerState::Online,
            &["build"],
            &["01HLEASE0000000000000000001"],
            true,
        ),
        Worker {
            generation: 3,
            recycle_requested: true,
            ..w("deploy-1", WorkerState::Draining, &["deploy"], &[], true)
        },
        Worker {
            last_heartbeat_at_ms: NOW - 5 * M,
            ..w(
                "ops-1",
                WorkerState::Offline,
                &["ops", "build"],
                &["01HLEASE0000000000000000002"],
                false,
            )
        },
        w(
            "ops-2",
            WorkerState::Online,
            &["ops"],
            &["01HLEASE0000000000000000003"],
            true,
        ),
        w("spare-1", WorkerState::Online, &["build"], &[], true),
    ]
}

pub fn queues() -> Vec<Queue> {
    vec![
        Queue {
            name: "build".into(),
            ready: 4,
            delayed: 1,
            running: 1,
            oldest_ready_age_ms: 95_000,
            enqueued_last_minute: 30,
            completed_last_minute: 28,
            workers: 2,
            paused: false,
            max_running: 0,
        },
        Queue {
            name: "deploy".into(),
            paused: true,
            max_running: 1,
            ready: 2,
            oldest_ready_age_ms: 10_000,
            workers: 1,
            ..Queue::default()
        },
        Queue {
            name: "ops".into(),
            running: 2,
            enqueued_last_minute: 3,
            completed_last_minute: 1,
            workers: 1,
            ..Queue::default()
        },
    ]
}

pub fn leases() -> Vec<Lease> {
    let l = |n: u32, run: &str, run_name: &str, step: &str, worker: &str, expires: i64| Lease {
        id: format!("01HLEASE000000000000000000{n}"),
        run_id: run.into(),
        run_name: run_name.into(),
        step_name: step.into(),
        worker_id: worker.into(),
        attempt: 1,
        fencing_token: u64::from(n),
        state: LeaseState::Active as i32,
        granted_at_ms: NOW - M,
        expires_at_ms: expires,
        queue: "build".into(),
        ..Lease::default()
    };
    vec![
        l(
            1,
            "01HRUN00000000000000000BUILD",
            "build-api",
            "compile",
            "build-1",
            NOW + 20 * S,
        ),
        l(
            2,
            "01HRUN0000000000000000MIGRAT",
            "migrate-db",
            "migrate",
            "ops-1",
            NOW - 10 * S,
        ),
        // Held by a connected worker that cannot stop its step: the
        // engine marked it stuck.
        Lease {
            stuck: true,
            ..l(
                3,
                "01HRUN0000000000000000REPORT",
                "nightly-report",
                "report",
                "ops-2",
                NOW - M,
            )
        },
    ]
}

pub fn approvals() -> Vec<Approval> {
    let a = |n: u32, run: &str, run_name: &str, asked: i64, deadline: i64| Approval {
        id: format!("01HAPP0000000000000000000{n}"),
        run_id: run.into(),
        run_name: run_name.into(),
        step_index: 1,
        step_name: "approve-prod".into(),
        state: ApprovalState::Pending as i32,
        submitted_by: "ann".into(),
        required: 1,
        requested_at_ms: asked,
        deadline_at_ms: deadline,
        on_timeout: "reject".into(),
        ..Approval::default()
    };
    vec![
        a(
            1,
            "01HRUN0000000000000000DEPLOY",
            "deploy-web",
            NOW - 2 * M,
            NOW + 58 * M,
        ),
        a(
            2,
            "01HRUN0000000000000000DEPLY2",
            "deploy-api",
            NOW - 70 * M,
            NOW - 10 * M,
        ),
        Approval {
            state: ApprovalState::Approved as i32,
            decided_at_ms: NOW - 40 * M,
            decisions: vec![Decision {
                actor: "carol".into(),
                approve: true,
                comment: "ticket 42".into(),
                at_ms: NOW - 40 * M,
            }],
            ..a(
                3,
                "01HRUN0000000000000000DEPLY3",
                "deploy-db",
                NOW - 50 * M,
                NOW + 10 * M,
            )
        },
    ]
}

pub fn events() -> Vec<Event> {
    let e = |seq: u64, ago: i64, kind: &str, actor: &str, message: &str| Event {
        seq,
        at_ms: NOW - ago,
        kind: kind.into(),
        actor: actor.into(),
        message: message.into(),
        run_id: "01HRUN0000000000000000DEPLOY".into(),
        ..Event::default()
    };
    vec![
        e(
            40,
            5 * M,
            "run.submitted",
            "ann",
            "run deploy-web submitted with 3 steps",
        ),
        e(
            41,
            5 * M,
            "step.queued",
            "ann",
            "step build ready on queue build",
        ),
        e(
            42,
            3 * M,
            "step.succeeded",
            "worker:ci-7",
            "step build succeeded",
        ),
        Event {
            approval_id: "01HAPP00000000000000000001".into(),
            ..e(
                43,
                2 * M,
                "approval.requested",
                "opsdeckd",
                "approval for step approve-prod requested",
            )
        },
        Event {
            run_id: "01HRUN0000000000000000BACKUP".into(),
            reason: "disk full".into(),
            ..e(
                44,
                2 * M,
                "step.dead",
                "worker:ops-1",
                "step backup is dead after 2 attempts",
            )
        },
        Event {
            run_id: String::new(),
            worker_id: "deploy-1".into(),
            reason: "kernel update".into(),
            ..e(45, M, "worker.draining", "ann", "worker deploy-1 draining")
        },
    ]
}

pub fn quarantines() -> Vec<Quarantine> {
    vec![Quarantine {
        name: "nightly-report".into(),
        since_ms: NOW - 4 * M,
        stuck_count: 3,
        message: "3 leases of nightly-report got stuck within 1h (quarantine_after = 3): \
                  clear it with `opsdeck unquarantine nightly-report` once fixed"
            .into(),
    }]
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        seq: 45,
        runs: runs(),
        workers: workers(),
        queues: queues(),
        leases: leases(),
        approvals: approvals(),
        quarantines: quarantines(),
        schedules: schedules(),
    }
}

pub fn schedules() -> Vec<Schedule> {
    vec![
        Schedule {
            name: "nightly-backup".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            run_name: "backup".into(),
            next_fire_at_ms: NOW + 5 * M,
            last_fire_at_ms: NOW - 24 * 60 * M,
            last_run_id: "01HX0000000000000000BACKUP".into(),
            last_run_state: RunState::Failed as i32,
            ..Schedule::default()
        },
        Schedule {
            name: "tick".into(),
            cron: "*/30 * * * * *".into(),
            timezone: "UTC".into(),
            run_name: "probe".into(),
            paused: true,
            ..Schedule::default()
        },
    ]
}

/// Who `Whoami` says we are.
pub fn whoami(roles: &[&str], leader_epoch: u64) -> WhoamiResponse {
    WhoamiResponse {
        identity: "ann".into(),
        transport: "unix".into(),
        engine_version: "0.1.0".into(),
        engine_id: "host:1".into(),
        head_seq: 45,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        leader_epoch,
    }
}

/// The fixture console as someone with these roles.
pub fn app_as(roles: &[&str]) -> App {
    let mut app = app();
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(roles, 0),
            resumed_after: 45,
        }),
    );
    app.status = None;
    app
}

/// A live console as `ann` with the fixture loaded, at `NOW`.
pub fn app_with(palette: Palette, readonly: bool) -> App {
    let mut app = App::new(
        Options {
            engine: "unix:///run/opsdeck/engine.sock".into(),
            readonly,
            palette,
        },
        NOW,
    );
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(&[], 0),
            resumed_after: 0,
        }),
    );
    app::update(&mut app, Msg::Conn(Update::Snapshot(Box::new(snapshot()))));
    app.data.backfill(events());
    // Depth samples, as ticks would have taken them.
    for depth in [0u64, 1, 2, 4, 8, 6, 5, 4] {
        for q in app.data.queues.values_mut() {
            q.queue.ready = if q.queue.name == "ops" { 0 } else { depth };
        }
        app.data.sample();
    }
    for (q, fresh) in app.data.queues.values_mut().zip(queues()) {
        q.queue = fresh;
    }
    app.status = None;
    assert_eq!(app.conn.link, Link::Live);
    app.sync();
    app
}

pub fn app() -> App {
    app_with(Palette::Ansi16, false)
}

/// The frame at `width`×`height`, as text.
pub fn render(app: &mut App, width: u16, height: u16) -> Terminal<TestBackend> {
    app.size = (width, height);
    app.sync();
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| f.render_widget(Console(app), f.area()))
        .unwrap();
    terminal
}
