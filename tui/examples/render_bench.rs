//! Frame render time with 10,000 runs, 1,000 workers (and their leases),
//! 20 queues, 200 pending approvals and a full event tail, at 200×60.
//!
//! For each screen: the median and 99th percentile of N frames of
//! (a) rendering the frame into a buffer (the view alone), and
//! (b) a whole frame as the main loop does it after an event: apply the
//!     event, recompute the rows (`App::sync`), render, and write the
//!     changed cells to a terminal (a sink here).
//!
//! cargo run --release -p opsdeck-tui --example render_bench [-- FRAMES]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opsdeck_proto::v1::*;
use opsdeck_tui::app::{self, App, Msg, Options, Palette, Screen};
use opsdeck_tui::conn::Update;
use opsdeck_tui::model::Snapshot;
use opsdeck_tui::view::Console;
use ratatui::backend::CrosstermBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use ratatui::{Terminal, TerminalOptions, Viewport};

const NOW: i64 = 1_700_000_000_000;

fn snapshot() -> Snapshot {
    let queues: Vec<String> = (0..20).map(|i| format!("queue-{i:02}")).collect();
    let runs = (0..10_000u32)
        .map(|i| {
            let state = match i % 10 {
                0 => RunState::Running,
                1 => RunState::WaitingApproval,
                2 => RunState::Failed,
                3 => RunState::Queued,
                _ => RunState::Succeeded,
            };
            Run {
                id: format!("01HRUN{i:020}"),
                name: format!("job-{}", i % 97),
                submitted_by: "ann".into(),
                state: state as i32,
                created_at_ms: NOW - i64::from(10_000 - i) * 1000,
                finished_at_ms: if state == RunState::Succeeded {
                    NOW - 1000
                } else {
                    0
                },
                labels: [("team".to_owned(), "sre".to_owned())].into(),
                steps: (0..3)
                    .map(|s| Step {
                        index: s,
                        name: format!("step-{s}"),
                        kind: StepKind::Exec as i32,
                        state: StepState::Succeeded as i32,
                        queue: queues[(i as usize + s as usize) % queues.len()].clone(),
                        attempt: 1,
                        max_attempts: 3,
                        ..Step::default()
                    })
                    .collect(),
                ..Run::default()
            }
        })
        .collect();
    let workers = (0..1_000u32)
        .map(|i| Worker {
            id: format!("worker-{i:04}"),
            state: if i % 50 == 0 {
                WorkerState::Draining
            } else {
                WorkerState::Online
            } as i32,
            queues: vec![queues[i as usize % queues.len()].clone()],
            slots: 4,
            lease_ids: vec![format!("01HLEASE{i:018}")],
            connected: i % 100 != 0,
            host: format!("host-{}", i % 40),
            pid: 1000 + i,
            generation: 1,
            last_heartbeat_at_ms: NOW - 1000,
            ..Worker::default()
        })
        .collect();
    let leases = (0..1_000u32)
        .map(|i| Lease {
            id: format!("01HLEASE{i:018}"),
            run_id: format!("01HRUN{:020}", i * 10),
            run_name: format!("job-{}", i % 97),
            step_name: "step-0".into(),
            worker_id: format!("worker-{i:04}"),
            attempt: 1,
            state: LeaseState::Active as i32,
            expires_at_ms: NOW + 20_000,
            queue: queues[i as usize % queues.len()].clone(),
            ..Lease::default()
        })
        .collect();
    let approvals = (0..200u32)
        .map(|i| Approval {
            id: format!("01HAPP{i:020}"),
            run_id: format!("01HRUN{:020}", i * 10 + 1),
            run_name: format!("job-{}", i % 97),
            step_name: "gate".into(),
            state: ApprovalState::Pending as i32,
            submitted_by: "bob".into(),
            required: 1,
            requested_at_ms: NOW - i64::from(i) * 1000,
            deadline_at_ms: NOW + 600_000 - i64::from(i) * 5000,
            on_timeout: "reject".into(),
            ..Approval::default()
        })
        .collect();
    let queues = queues
        .iter()
        .map(|name| Queue {
            name: name.clone(),
            ready: 40,
            running: 50,
            workers: 50,
            enqueued_last_minute: 600,
            completed_last_minute: 590,
            ..Queue::default()
        })
        .collect();
    Snapshot {
        seq: 100_000,
        runs,
        workers,
        queues,
        leases,
        approvals,
        quarantines: Vec::new(),
        schedules: Vec::new(),
    }
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        at_ms: NOW,
        kind: "step.running".into(),
        actor: "worker:host-1".into(),
        message: format!("step step-0 running on worker-0001 (event {seq})"),
        run_id: format!("01HRUN{:020}", seq % 10_000),
        ..Event::default()
    }
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() - 1) * p / 100]
}

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let (width, height) = (200, 60);
    let mut app = App::new(
        Options {
            engine: "unix:///run/opsdeck/engine.sock".into(),
            readonly: false,
            palette: Palette::Ansi256,
        },
        NOW,
    );
    app.size = (width, height);
    let loaded = Instant::now();
    app::update(&mut app, Msg::Conn(Update::Snapshot(Box::new(snapshot()))));
    println!(
        "snapshot of 10,000 runs and 1,000 workers applied in {:?}",
        loaded.elapsed()
    );
    let mut seq = 100_000;
    for _ in 0..2_000 {
        seq += 1;
        app::update(&mut app, Msg::Conn(Update::Event(Box::new(event(seq)))));
    }
    for _ in 0..300 {
        app::update(&mut app, Msg::Tick);
    }
    let area = Rect::new(0, 0, width, height);
    // A fixed viewport: with a sink for a terminal, asking its size would
    // run `tput`, which is not what a frame costs on a real terminal.
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(io::sink()),
        TerminalOptions {
            viewport: Viewport::Fixed(area),
        },
    )
    .expect("a terminal on a sink");
    println!("{frames} frames per screen at {width}x{height}; median / p99");
    println!(
        "{:<10} {:>22} {:>34}",
        "screen", "render into buffer", "event + sync + render + write"
    );
    for (i, screen) in Screen::ALL.iter().enumerate() {
        let digit = char::from_digit(u32::try_from(i + 1).unwrap(), 10).unwrap();
        app::update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char(digit), KeyModifiers::NONE)),
        );
        if *screen == Screen::Run {
            // Open a run from the Runs screen.
            app::update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE)),
            );
            app::update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
            );
        }
        app.sync();
        let mut render = Vec::with_capacity(frames);
        for _ in 0..frames {
            let mut buf = Buffer::empty(area);
            let start = Instant::now();
            Console(&app).render(area, &mut buf);
            render.push(start.elapsed());
        }
        let mut whole = Vec::with_capacity(frames);
        for _ in 0..frames {
            let start = Instant::now();
            seq += 1;
            app::update(&mut app, Msg::Conn(Update::Event(Box::new(event(seq)))));
            app.sync();
            terminal
                .draw(|f| f.render_widget(Console(&app), f.area()))
                .expect("draw");
            whole.push(start.elapsed());
        }
        println!(
            "{:<10} {:>10.2?} / {:>8.2?} {:>18.2?} / {:>8.2?}",
            screen.name(),
            percentile(&mut render, 50),
            percentile(&mut render, 99),
            percentile(&mut whole, 50),
            percentile(&mut whole, 99),
        );
    }
}
