//! Key handling and stream updates, through `update()` alone: screen
//! switching, filters, drilling in and backing out, the confirmation flow
//! (focus on Cancel first), refusals read-only, disconnected or for want
//! of a role, quarantines shown and cleared, ctrl-c twice, and the
//! connection states the header shows (a new leader, not a restart).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use crossterm::event::KeyCode;
use opsdeck_proto::v1::{
    Approval, ApprovalState, Event, OutputChunk, OutputPosition, Quarantine, Queue, Run, RunState,
    RunUpdate, StepState, StepUpdate, Worker, WorkerState,
};
use opsdeck_tui::app::{
    self, Change, Changed, Cmd, Focus, Input, Kind, Link, Modal, Msg, Palette, Refreshed, Screen,
    StatusKind,
};
use opsdeck_tui::conn::Update;

fn confirm(app: &opsdeck_tui::app::App) -> &opsdeck_tui::app::Confirm {
    match &app.modal {
        Some(Modal::Confirm(c)) => c,
        other => panic!("no confirmation open: {other:?}"),
    }
}

fn status(app: &opsdeck_tui::app::App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

/// The status line contains `words`.
#[track_caller]
fn says(app: &opsdeck_tui::app::App, words: &str) {
    let status = status(app);
    assert!(
        status.contains(words),
        "the status line says {status:?}, not {words:?}"
    );
}

#[test]
fn digits_and_colon_names_switch_screens() {
    let mut app = app();
    assert_eq!(app.screen, Screen::Overview);
    app::update(&mut app, key('4'));
    assert_eq!(app.screen, Screen::Workers);
    app::update(&mut app, key(':'));
    type_text(&mut app, "appr");
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Approvals);
    app::update(&mut app, key(':'));
    type_text(&mut app, "nope");
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Approvals);
    says(&app, "no screen named");
    // `run` is the Run screen, not a prefix of `runs`.
    assert_eq!(Screen::from_name("run"), Some(Screen::Run));
    assert_eq!(Screen::from_name("ru"), Some(Screen::Runs));
}

#[test]
fn j_k_g_and_shift_g_move_the_selection_and_it_follows_its_item() {
    let mut app = app();
    app::update(&mut app, key('2'));
    assert_eq!(app.selected_key(), Some("01HRUN0000000000000000DEPLOY"));
    app::update(&mut app, key('j'));
    app::update(&mut app, code(KeyCode::Down));
    assert_eq!(app.selected_key(), Some("01HRUN00000000000000000BUILD"));
    app::update(&mut app, key('G'));
    assert_eq!(app.list(Screen::Runs).selected, 3);
    app::update(&mut app, key('k'));
    assert_eq!(app.list(Screen::Runs).selected, 2);
    app::update(&mut app, key('g'));
    assert_eq!(app.list(Screen::Runs).selected, 0);
    app::update(&mut app, code(KeyCode::PageDown));
    assert_eq!(
        app.list(Screen::Runs).selected,
        3,
        "a page down stops at the end"
    );

    // A new run arrives at the top: the selection stays on its run.
    app::update(&mut app, key('k'));
    let before = app.selected_key().unwrap().to_owned();
    let mut newer = runs()[0].clone();
    newer.id = "01HRUN0000000000000000NEWER".into();
    newer.id.push('Z');
    let event = Event {
        seq: 46,
        kind: "run.submitted".into(),
        run: Some(Box::new(newer)),
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    app.sync();
    assert_eq!(app.selected_key(), Some(before.as_str()));
}

#[test]
fn slash_filters_and_esc_clears_it() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, key('/'));
    assert_eq!(app.input, Input::Filter);
    type_text(&mut app, "backup");
    app.sync();
    assert_eq!(app.rows, ["01HRUN0000000000000000BACKUP"]);
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.input, Input::Normal);
    assert_eq!(
        app.list(Screen::Runs).filter,
        "backup",
        "enter keeps the filter"
    );
    // Keys are keys again, not filter text.
    app::update(&mut app, key('j'));
    assert_eq!(app.list(Screen::Runs).filter, "backup");
    app::update(&mut app, key('/'));
    app::update(&mut app, code(KeyCode::Esc));
    assert_eq!(app.list(Screen::Runs).filter, "");
    app.sync();
    assert_eq!(app.rows.len(), 4);
}

#[test]
fn filter_words_all_have_to_match_somewhere() {
    let mut app = app();
    app::update(&mut app, key('7'));
    app::update(&mut app, key('/'));
    type_text(&mut app, "STALE migrate");
    app.sync();
    assert_eq!(app.rows, ["01HLEASE0000000000000000002"]);
}

#[test]
fn enter_drills_in_and_esc_and_q_come_back() {
    let mut app = app();
    app::update(&mut app, key('4'));
    // build-1, first by name: its leases.
    app::update(&mut app, key('N'));
    app::update(&mut app, key('g'));
    assert_eq!(app.selected_key(), Some("build-1"));
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Leases);
    assert_eq!(app.list(Screen::Leases).filter, "build-1");
    app.sync();
    assert_eq!(app.rows, ["01HLEASE0000000000000000001"]);
    // The lease's run.
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Run);
    assert_eq!(app.run.run_id, "01HRUN00000000000000000BUILD");
    assert!(cmds.contains(&Cmd::FetchTimeline {
        run_id: "01HRUN00000000000000000BUILD".into()
    }));
    assert!(cmds.contains(&Cmd::FetchOutput {
        run_id: "01HRUN00000000000000000BUILD".into()
    }));
    app::update(&mut app, code(KeyCode::Esc));
    assert_eq!(app.screen, Screen::Leases);
    app::update(&mut app, key('q'));
    assert_eq!(app.screen, Screen::Workers);
    assert_eq!(
        app.list(Screen::Leases).filter,
        "",
        "the drill's filter is taken back"
    );
    // From the top, q quits.
    let cmds = app::update(&mut app, key('q'));
    assert_eq!(cmds, [Cmd::Quit]);
    assert!(app.quit);
}

#[test]
fn ctrl_c_quits_only_when_pressed_twice() {
    let mut app = app();
    assert!(app::update(&mut app, ctrl('c')).is_empty());
    assert!(!app.quit);
    says(&app, "again");
    // Another key in between starts over.
    app::update(&mut app, key('j'));
    assert!(app::update(&mut app, ctrl('c')).is_empty());
    assert_eq!(app::update(&mut app, ctrl('c')), [Cmd::Quit]);
    assert!(app.quit);

    // Even from inside a dialog.
    let mut app = common::app();
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    app::update(&mut app, ctrl('c'));
    assert_eq!(app::update(&mut app, ctrl('c')), [Cmd::Quit]);
}

#[test]
fn a_first_ctrl_c_expires_after_a_few_seconds() {
    let mut app = app();
    app::update(&mut app, ctrl('c'));
    app.now_ms += 5_000;
    app::update(&mut app, Msg::Tick);
    assert!(app::update(&mut app, ctrl('c')).is_empty());
    assert!(!app.quit);
}

#[test]
fn approving_asks_for_a_reason_with_focus_on_cancel_first() {
    let mut app = app();
    app::update(&mut app, key('6'));
    // Pending first, oldest ask first: deploy-api's.
    assert_eq!(app.selected_key(), Some("01HAPP00000000000000000002"));
    app::update(&mut app, key('a'));
    assert_eq!(confirm(&app).focus, Focus::Cancel);
    assert_eq!(
        confirm(&app).change,
        Change::new(Kind::Approve, "01HAPP00000000000000000002")
    );

    // Enter on Cancel changes nothing.
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(app.modal.is_none());
    assert_eq!(status(&app), "nothing changed");

    // Tab to the reason, type it, tab to OK, enter.
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Reason);
    type_text(&mut app, "ticket 42, checked the diff");
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Ok);
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Cmd::Change {
            change: Change::new(Kind::Approve, "01HAPP00000000000000000002"),
            reason: "ticket 42, checked the diff".into(),
        }]
    );
    assert!(app.modal.is_none());
    assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Pending);

    // The engine's answer, in words.
    let approved = Approval {
        id: "01HAPP00000000000000000002".into(),
        run_name: "deploy-api".into(),
        state: ApprovalState::Approved as i32,
        ..Approval::default()
    };
    app::update(
        &mut app,
        Msg::Done {
            change: Change::new(Kind::Approve, approved.id.clone()),
            result: Ok(Changed::Approval(approved)),
        },
    );
    assert_eq!(
        status(&app),
        "approved 01HAPP00000000000000000002: run deploy-api continues"
    );
}

#[test]
fn enter_in_the_reason_presses_ok_once_a_reason_is_typed() {
    let mut app = app();
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Reason);

    // Nothing typed: Enter says so and stays in the field.
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert_eq!(confirm(&app).focus, Focus::Reason);
    assert!(
        confirm(&app)
            .error
            .as_deref()
            .unwrap()
            .contains("a reason is needed"),
        "{:?}",
        confirm(&app).error
    );

    type_text(&mut app, "ticket 42");
    assert!(confirm(&app).error.is_none());
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Cmd::Change {
            change: Change::new(Kind::Approve, "01HAPP00000000000000000002"),
            reason: "ticket 42".into(),
        }]
    );
    assert!(app.modal.is_none());
    assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Pending);
}

#[test]
fn enter_in_the_reason_of_a_force_release_still_wants_the_lease_id() {
    let mut app = app();
    app::update(&mut app, key('7'));
    let id = app.selected_key().unwrap().to_owned();
    app::update(&mut app, key('X'));
    app::update(&mut app, code(KeyCode::Tab));
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Reason);
    type_text(&mut app, "holder is gone");
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(confirm(&app).error.as_deref().unwrap().contains(&id));
}

#[test]
fn the_times_in_an_open_dialog_keep_ticking() {
    let mut app = app();
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    let asked = |app: &opsdeck_tui::app::App| {
        confirm(app)
            .lines
            .iter()
            .find(|l| l.starts_with("asked by"))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        asked(&app),
        "asked by ann 1h10m ago; 0 of 1 approvals so far"
    );
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "half typed");
    app.now_ms += 5 * 60_000;
    app::update(&mut app, Msg::Tick);
    assert_eq!(
        asked(&app),
        "asked by ann 1h15m ago; 0 of 1 approvals so far"
    );
    // What was typed and where focus is stay as they were.
    assert_eq!(confirm(&app).reason.text(), "half typed");
    assert_eq!(confirm(&app).focus, Focus::Reason);
}

#[test]
fn ok_without_a_reason_says_what_is_missing() {
    let mut app = app();
    app::update(&mut app, key('6'));
    app::update(&mut app, key('x'));
    app::update(&mut app, code(KeyCode::BackTab));
    assert_eq!(confirm(&app).focus, Focus::Ok);
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(confirm(&app).error.as_deref().unwrap().contains("reason"));
    // Typing on a button goes to the reason.
    type_text(&mut app, "no");
    assert_eq!(confirm(&app).reason.text(), "no");
    assert_eq!(confirm(&app).focus, Focus::Reason);
    assert!(confirm(&app).error.is_none());
    app::update(&mut app, code(KeyCode::Esc));
    assert!(app.modal.is_none());
}

#[test]
fn force_release_needs_the_lease_id_typed() {
    let mut app = app();
    app::update(&mut app, key('7'));
    let id = app.selected_key().unwrap().to_owned();
    app::update(&mut app, key('X'));
    assert_eq!(confirm(&app).focus, Focus::Cancel);
    assert_eq!(
        confirm(&app).ring(),
        [
            Focus::Id,
            Focus::Reason,
            Focus::Fail,
            Focus::Ok,
            Focus::Cancel
        ]
    );
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Id);
    type_text(&mut app, "01HLEASE-wrong");
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "holder is gone");
    app::update(&mut app, code(KeyCode::Tab));
    app::update(&mut app, key(' '));
    assert_eq!(confirm(&app).fail, Some(true));
    app::update(&mut app, code(KeyCode::Tab));
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(confirm(&app).error.as_deref().unwrap().contains(&id));

    // Fix the id: back to the field, clear it, type it right.
    app::update(&mut app, code(KeyCode::Tab));
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Id);
    for _ in 0..20 {
        app::update(&mut app, code(KeyCode::Backspace));
    }
    type_text(&mut app, &id);
    for _ in 0..3 {
        app::update(&mut app, code(KeyCode::Tab));
    }
    assert_eq!(confirm(&app).focus, Focus::Ok);
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Cmd::Change {
            change: Change {
                fail: true,
                ..Change::new(Kind::ForceRelease, id)
            },
            reason: "holder is gone".into(),
        }]
    );
}

#[test]
fn read_only_refuses_every_change_and_says_why() {
    let mut app = app_with(Palette::Ansi16, true);
    for (screen, k) in [
        ('9', 'U'),
        ('6', 'a'),
        ('6', 'x'),
        ('2', 'C'),
        ('2', 'r'),
        ('4', 'D'),
        ('4', 'U'),
        ('4', 'R'),
        ('7', 'X'),
        ('5', 'p'),
    ] {
        app::update(&mut app, key(screen));
        assert!(app::update(&mut app, key(k)).is_empty());
        assert!(app.modal.is_none(), "{k} opened a dialog read-only");
        says(&app, "--readonly");
    }
}

#[test]
fn changes_are_refused_while_disconnected_and_allowed_again_once_live() {
    let mut app = app();
    app::update(&mut app, key('6'));
    app::update(
        &mut app,
        Msg::Conn(Update::Disconnected {
            retry_in: Duration::from_secs(3),
            attempt: 0,
            why: "transport error".into(),
            shutting_down: false,
        }),
    );
    assert_eq!(app::link_words(&app), "reconnecting in 3s");
    assert_eq!(app.conn.stale_since_ms, Some(NOW));
    app::update(&mut app, key('a'));
    assert!(app.modal.is_none());
    assert!(
        status(&app).starts_with("not connected"),
        "{}",
        status(&app)
    );
    // The data stays.
    assert_eq!(app.data.approvals.len(), 3);

    // The same engine, restarted: another process, the same epoch.
    let mut restarted = whoami(&[], 0);
    restarted.engine_id = "host:2".into();
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: restarted,
            resumed_after: 45,
        }),
    );
    assert_eq!(app.conn.link, Link::Live);
    assert_eq!(app.conn.stale_since_ms, None);
    assert_eq!(
        app.conn.leader_changed_at_ms, None,
        "a restart is no new leader"
    );
    says(&app, "reconnected; resumed after seq 45");
    app::update(&mut app, key('a'));
    assert!(matches!(app.modal, Some(Modal::Confirm(_))));
}

#[test]
fn a_dialog_open_when_the_link_breaks_does_not_send() {
    let mut app = app();
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "ok");
    app::update(&mut app, code(KeyCode::Tab));
    app::update(
        &mut app,
        Msg::Conn(Update::Disconnected {
            retry_in: Duration::from_secs(1),
            attempt: 0,
            why: "gone".into(),
            shutting_down: false,
        }),
    );
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(
        confirm(&app)
            .error
            .as_deref()
            .unwrap()
            .contains("not connected")
    );
}

#[test]
fn the_engine_refusing_shows_its_code_and_message() {
    let mut app = app();
    app::update(
        &mut app,
        Msg::Done {
            change: Change::new(Kind::Approve, "a1"),
            result: Err(tonic::Status::failed_precondition(
                "approval a1 is already approved by bob",
            )),
        },
    );
    assert_eq!(
        status(&app),
        "refused: FAILED_PRECONDITION: approval a1 is already approved by bob"
    );
    assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Refused);
}

#[test]
fn changes_that_cannot_apply_are_explained_without_a_dialog() {
    let mut app = app();
    app::update(&mut app, key('2'));
    // deploy-web is waiting, not failed.
    app::update(&mut app, key('r'));
    assert!(app.modal.is_none());
    says(&app, "only a failed run");
    app::update(&mut app, key('G'));
    app::update(&mut app, key('C'));
    says(&app, "already succeeded");
    // The approved one cannot be approved again.
    app::update(&mut app, key('6'));
    app::update(&mut app, key('G'));
    app::update(&mut app, key('a'));
    says(&app, "already approved");
    // An online worker cannot be undrained.
    app::update(&mut app, key('4'));
    app::update(&mut app, key('U'));
    says(&app, "only a draining worker");
}

#[test]
fn pause_or_resume_follows_the_queue_state() {
    let mut app = app();
    app::update(&mut app, key('5'));
    app::update(&mut app, key('p'));
    assert_eq!(confirm(&app).change, Change::new(Kind::Pause, "build"));
    app::update(&mut app, code(KeyCode::Esc));
    app::update(&mut app, key('j'));
    app::update(&mut app, key('p'));
    assert_eq!(confirm(&app).change, Change::new(Kind::Resume, "deploy"));
}

#[test]
fn space_freezes_the_display_but_not_the_data() {
    let mut app = app();
    app::update(&mut app, key(' '));
    assert!(app.frozen.is_some());
    let worker = Worker {
        id: "new-1".into(),
        state: WorkerState::Online as i32,
        ..Worker::default()
    };
    let event = Event {
        seq: 46,
        kind: "worker.registered".into(),
        worker: Some(Box::new(worker)),
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    assert!(app.data.workers.contains_key("new-1"));
    assert!(
        !app.shown().0.workers.contains_key("new-1"),
        "the display is frozen"
    );
    app::update(&mut app, key(' '));
    assert!(app.shown().0.workers.contains_key("new-1"));
}

#[test]
fn ctrl_r_resyncs_and_a_snapshot_brings_the_link_back() {
    let mut app = app();
    assert_eq!(app::update(&mut app, ctrl('r')), [Cmd::Resync]);
    assert_eq!(app.conn.link, Link::Loading);
    let cmds = app::update(&mut app, Msg::Conn(Update::Snapshot(Box::new(snapshot()))));
    assert_eq!(app.conn.link, Link::Live);
    assert!(matches!(cmds[0], Cmd::FetchEvents { .. }));
}

/// Output of attempt 1 of the run's first step, from its start.
fn stdout_chunk(run_id: &str, data: &[u8]) -> OutputChunk {
    OutputChunk {
        run_id: run_id.to_owned(),
        attempt: 1,
        stream: "stdout".into(),
        data: data.to_vec(),
        ..OutputChunk::default()
    }
}

#[test]
fn events_of_the_open_run_join_its_timeline_and_refresh_its_output() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, code(KeyCode::Enter));
    let run_id = app.run.run_id.clone();
    // The first fetch is out: a second waits for it.
    let event = |seq| Event {
        seq,
        kind: "step.running".into(),
        run_id: run_id.clone(),
        ..Event::default()
    };
    assert!(app::update(&mut app, Msg::Conn(Update::Event(Box::new(event(46))))).is_empty());
    assert_eq!(app.run.timeline.len(), 1);
    let chunk = stdout_chunk(&run_id, b"one\n");
    let cmds = app::update(
        &mut app,
        Msg::Output {
            run_id: run_id.clone(),
            result: Ok(vec![chunk.clone()]),
        },
    );
    // What was read is followed live from its end; the fetch wanted
    // meanwhile goes out.
    let from = Some(OutputPosition {
        step_index: 0,
        attempt: 1,
        offset: 4,
    });
    assert_eq!(
        cmds,
        [
            Cmd::FollowOutput {
                run_id: run_id.clone(),
                from,
            },
            Cmd::FetchOutput {
                run_id: run_id.clone()
            }
        ]
    );
    app::update(
        &mut app,
        Msg::Output {
            run_id: run_id.clone(),
            result: Ok(vec![chunk.clone()]),
        },
    );
    // While the output streams, events do not read it again; chunks join
    // the log once each.
    let cmds = app::update(&mut app, Msg::Conn(Update::Event(Box::new(event(47)))));
    assert!(cmds.is_empty(), "{cmds:?}");
    let next = OutputChunk {
        data: b"two\n".to_vec(),
        offset: 4,
        ..chunk.clone()
    };
    for c in [chunk, next.clone(), next] {
        app::update(
            &mut app,
            Msg::OutputChunk {
                run_id: run_id.clone(),
                chunk: c,
            },
        );
    }
    let text: Vec<&str> = app.run.log.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(text, ["step 1 attempt 1 stdout", "one", "two"]);
    // A broken stream: events read the output again, which follows again.
    app::update(
        &mut app,
        Msg::OutputEnded {
            run_id: run_id.clone(),
            result: Err("the engine is shutting down".into()),
        },
    );
    let cmds = app::update(&mut app, Msg::Conn(Update::Event(Box::new(event(48)))));
    assert_eq!(cmds, [Cmd::FetchOutput { run_id }]);
}

#[test]
fn leaving_the_run_screen_stops_following_its_output_and_coming_back_follows_again() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, code(KeyCode::Enter));
    let run_id = app.run.run_id.clone();
    let chunk = stdout_chunk(&run_id, b"one\n");
    let cmds = app::update(
        &mut app,
        Msg::Output {
            run_id: run_id.clone(),
            result: Ok(vec![chunk]),
        },
    );
    assert!(
        cmds.iter().any(|c| matches!(c, Cmd::FollowOutput { .. })),
        "{cmds:?}"
    );
    // Back to the Runs screen: the stream ends.
    let cmds = app::update(&mut app, code(KeyCode::Esc));
    assert_eq!(cmds, [Cmd::StopOutput]);
    assert!(!app.run.streaming);
    // Nothing more to stop on later messages.
    assert!(
        app::update(&mut app, Msg::Tick)
            .iter()
            .all(|c| *c != Cmd::StopOutput)
    );
    // Back on the run: its output is read again (and then followed).
    app::update(&mut app, code(KeyCode::Enter));
    app.now_ms += 10_000;
    let cmds = app::update(&mut app, Msg::Tick);
    assert!(
        cmds.contains(&Cmd::FetchOutput {
            run_id: run_id.clone()
        }),
        "{cmds:?}"
    );
}

#[test]
fn ticks_sample_depth_and_ask_for_heartbeats() {
    let mut app = app();
    let before = app.data.depth["build"].len();
    app.now_ms += 3_000;
    let cmds = app::update(&mut app, Msg::Tick);
    assert_eq!(app.data.depth["build"].len(), before + 1);
    assert!(cmds.contains(&Cmd::Refresh));
    // Not again while one is out.
    app.now_ms += 3_000;
    assert!(!app::update(&mut app, Msg::Tick).contains(&Cmd::Refresh));
}

#[test]
fn help_opens_and_closes() {
    let mut app = app();
    app::update(&mut app, key('?'));
    assert!(matches!(app.modal, Some(Modal::Help { scroll: 0 })));
    app::update(&mut app, key('j'));
    assert!(matches!(app.modal, Some(Modal::Help { scroll: 1 })));
    app::update(&mut app, code(KeyCode::Esc));
    assert!(app.modal.is_none());
}

#[test]
fn the_events_screen_follows_the_newest_until_moved() {
    let mut app = app();
    app::update(&mut app, key('8'));
    assert!(app.events_follow);
    assert_eq!(app.selected_key(), Some("45"));
    app::update(&mut app, key('j'));
    assert!(!app.events_follow);
    let event = Event {
        seq: 46,
        kind: "queue.paused".into(),
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event.clone()))));
    app.sync();
    assert_eq!(app.selected_key(), Some("44"), "stays on its event");
    app::update(&mut app, key('F'));
    assert_eq!(app.selected_key(), Some("46"));
}

#[test]
fn a_long_list_is_listed_again_a_few_times_a_second_but_at_once_on_a_new_filter() {
    let mut app = app();
    app::update(&mut app, key('2'));
    // Live runs: the model keeps every one of them.
    let template = runs()[2].clone();
    for i in 0..6_000 {
        let mut run = template.clone();
        run.id = format!("01HBULK{i:019}");
        app.data.runs.insert(run);
    }
    app.data.version += 1;
    app.now_ms += 1_000;
    app.sync();
    let listed = app.rows.len();
    assert_eq!(listed, 6_004);
    let mut run = template.clone();
    run.id = "01HZZZNEWEST".into();
    let event = Event {
        seq: 46,
        kind: "run.submitted".into(),
        run_id: run.id.clone(),
        run: Some(Box::new(run)),
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    app.sync();
    assert_eq!(
        app.rows.len(),
        listed,
        "not listed again within the same instant"
    );
    app.now_ms += 300;
    app.sync();
    assert_eq!(app.rows.len(), listed + 1);
    // After the failed and waiting ones, the newest running one first.
    assert_eq!(app.rows[2], "01HZZZNEWEST");
    app::update(&mut app, key('/'));
    type_text(&mut app, "NEWEST");
    assert_eq!(app.rows, ["01HZZZNEWEST"], "a new filter lists at once");
}

fn reconnect(app: &mut opsdeck_tui::app::App, engine_id: &str, leader_epoch: u64) {
    app::update(
        app,
        Msg::Conn(Update::Disconnected {
            retry_in: Duration::from_secs(1),
            attempt: 0,
            why: "gone".into(),
            shutting_down: false,
        }),
    );
    let mut who = whoami(&[], leader_epoch);
    who.engine_id = engine_id.into();
    app::update(
        app,
        Msg::Conn(Update::Connected {
            whoami: who,
            resumed_after: 45,
        }),
    );
}

#[test]
fn a_new_leader_epoch_says_leader_changed_until_the_next_key_and_a_restart_does_not() {
    let mut app = app_as(&[]);
    reconnect(&mut app, "db-1:100", 7);
    // The first leader epoch heard (0 from the fixture's first connect,
    // then 7): a change.
    assert_eq!(app.conn.leader_changed_at_ms, Some(NOW));
    says(&app, "leader changed");
    says(&app, "(epoch 7)");
    app::update(&mut app, key('j'));
    assert_eq!(
        app.conn.leader_changed_at_ms, None,
        "a key press has seen it"
    );

    // The same leader restarted (a new pid): not a new leader.
    reconnect(&mut app, "db-1:200", 7);
    assert_eq!(app.conn.leader_changed_at_ms, None);
    says(&app, "reconnected");

    // A single engine (epoch 0 each time), restarted: never.
    let mut single = app_as(&[]);
    reconnect(&mut single, "host:2", 0);
    reconnect(&mut single, "host:3", 0);
    assert_eq!(single.conn.leader_changed_at_ms, None);
}

#[test]
fn a_role_short_of_the_change_is_told_which_role_it_needs_and_nothing_is_sent() {
    let mut app = app_as(&["viewer"]);
    for (screen, k, role) in [
        ('6', 'a', "approver"),
        ('2', 'C', "operator"),
        ('4', 'D', "operator"),
        ('4', 'R', "admin"),
        ('7', 'X', "admin"),
        ('9', 'U', "admin"),
    ] {
        app::update(&mut app, key(screen));
        assert!(app::update(&mut app, key(k)).is_empty());
        assert!(app.modal.is_none(), "{k} opened a dialog for a viewer");
        says(&app, &format!("needs the {role} role"));
        says(&app, "you are viewer");
        assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Refused);
    }

    // An operator drains but does not recycle, approve or clear.
    let mut app = app_as(&["operator"]);
    app::update(&mut app, key('4'));
    // An online one.
    app::update(&mut app, key('N'));
    app::update(&mut app, key('g'));
    app::update(&mut app, key('D'));
    assert!(matches!(app.modal, Some(Modal::Confirm(_))));
    app::update(&mut app, code(KeyCode::Esc));
    app::update(&mut app, key('R'));
    assert!(app.modal.is_none());
    says(&app, "recycling a worker needs the admin role");
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    says(&app, "approving needs the approver role (or admin)");

    // An admin may do it all.
    let mut app = app_as(&["admin"]);
    app::update(&mut app, key('9'));
    app::update(&mut app, key('U'));
    assert!(matches!(app.modal, Some(Modal::Confirm(_))));
}

#[test]
fn roles_lost_while_a_dialog_is_open_stop_its_ok() {
    let mut app = app_as(&["approver"]);
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "ok");
    app::update(&mut app, code(KeyCode::Tab));
    // A reconnect finds the caller a viewer now.
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(&["viewer"], 0),
            resumed_after: 45,
        }),
    );
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert!(
        confirm(&app)
            .error
            .as_deref()
            .unwrap()
            .contains("needs the approver role")
    );
}

#[test]
fn nine_and_colon_quarantines_list_the_quarantined_names_and_enter_lists_their_runs() {
    let mut app = app();
    app::update(&mut app, key('9'));
    assert_eq!(app.screen, Screen::Quarantines);
    assert_eq!(app.rows, ["nightly-report"]);
    app::update(&mut app, key('1'));
    app::update(&mut app, key(':'));
    type_text(&mut app, "quar");
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Quarantines);
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Runs);
    assert_eq!(app.list(Screen::Runs).filter, "nightly-report");
    app::update(&mut app, code(KeyCode::Esc));
    assert_eq!(app.screen, Screen::Quarantines);
}

#[test]
fn quarantines_follow_the_events_that_set_and_clear_them() {
    let mut app = app();
    let q = Quarantine {
        name: "deploy-web".into(),
        since_ms: NOW,
        stuck_count: 2,
        message: "stuck twice".into(),
    };
    let event = |seq, kind: &str| Event {
        seq,
        kind: kind.into(),
        quarantine: Some(Box::new(q.clone())),
        ..Event::default()
    };
    app::update(
        &mut app,
        Msg::Conn(Update::Event(Box::new(event(46, "run_name.quarantined")))),
    );
    app::update(&mut app, key('9'));
    assert_eq!(
        app.rows,
        ["deploy-web", "nightly-report"],
        "the latest first"
    );
    assert_eq!(app::active_runs(&app.data, "deploy-web"), 1);
    app::update(
        &mut app,
        Msg::Conn(Update::Event(Box::new(event(
            47,
            "run_name.quarantine_cleared",
        )))),
    );
    app.sync();
    assert_eq!(app.rows, ["nightly-report"]);
}

#[test]
fn clearing_a_quarantine_asks_for_a_reason_and_says_what_follows() {
    let mut app = app_as(&["admin"]);
    app::update(&mut app, key('9'));
    app::update(&mut app, key('U'));
    let c = confirm(&app);
    assert_eq!(c.focus, Focus::Cancel);
    assert_eq!(
        c.change,
        Change::new(Kind::ClearQuarantine, "nightly-report")
    );
    assert!(c.lines[0].contains("3 stuck lease(s)"), "{:?}", c.lines);
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "report host rebooted");
    app::update(&mut app, code(KeyCode::Tab));
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(
        cmds,
        [Cmd::Change {
            change: Change::new(Kind::ClearQuarantine, "nightly-report"),
            reason: "report host rebooted".into(),
        }]
    );
    says(&app, "clearing the quarantine of nightly-report");
    app::update(
        &mut app,
        Msg::Done {
            change: Change::new(Kind::ClearQuarantine, "nightly-report"),
            result: Ok(Changed::Quarantine(quarantines()[0].clone())),
        },
    );
    assert_eq!(
        status(&app),
        "cleared the quarantine of nightly-report: its runs are taken again (0 active)"
    );
    // Nothing left to clear: said, not a dialog.
    app.data.quarantines.clear();
    app.data.version += 1;
    app::update(&mut app, key('U'));
    assert!(app.modal.is_none());
    says(&app, "no quarantined run name is selected");
}

#[test]
fn stuck_leases_come_first_and_filter_by_the_word() {
    let mut app = app();
    app::update(&mut app, key('7'));
    assert_eq!(
        app.rows,
        [
            "01HLEASE0000000000000000003",
            "01HLEASE0000000000000000002",
            "01HLEASE0000000000000000001"
        ],
        "stuck, then stale, then by expiry"
    );
    app::update(&mut app, key('/'));
    type_text(&mut app, "stuck");
    assert_eq!(app.rows, ["01HLEASE0000000000000000003"]);
}

/// A run the model does not hold: finished long ago, evicted.
const GONE: &str = "01HRUN00000000000000000GONE";

fn gone_run(updated_at_ms: i64) -> Run {
    Run {
        id: GONE.into(),
        name: "nightly-backup".into(),
        state: RunState::Failed as i32,
        created_at_ms: NOW - 86_400_000,
        updated_at_ms,
        finished_at_ms: NOW - 86_000_000,
        steps: runs()[1].steps.clone(),
        ..Run::default()
    }
}

/// Opens GONE from the Events screen, as an event naming it is entered.
fn open_gone(app: &mut opsdeck_tui::app::App) -> Vec<Cmd> {
    let event = Event {
        seq: 46,
        kind: "run.note".into(),
        run_id: GONE.into(),
        ..Event::default()
    };
    app::update(app, Msg::Conn(Update::Event(Box::new(event))));
    app::update(app, key('8'));
    assert_eq!(app.selected_key(), Some("46"));
    app::update(app, code(KeyCode::Enter))
}

#[test]
fn opening_a_run_the_console_does_not_hold_reads_it_from_the_engine() {
    let mut app = app();
    let cmds = open_gone(&mut app);
    assert_eq!(app.screen, Screen::Run);
    assert!(
        cmds.contains(&Cmd::FetchRun {
            run_id: GONE.into()
        }),
        "{cmds:?}"
    );
    assert!(app.run.run_fetching);
    // A run the model holds is not read again.
    let mut other = common::app();
    app::update(&mut other, key('2'));
    let cmds = app::update(&mut other, code(KeyCode::Enter));
    assert!(!cmds.iter().any(|c| matches!(c, Cmd::FetchRun { .. })));

    app::update(
        &mut app,
        Msg::Run {
            run_id: GONE.into(),
            result: Ok(gone_run(NOW - 86_000_000)),
        },
    );
    assert!(!app.run.run_fetching);
    assert_eq!(app.data.runs.get(GONE).unwrap().name, "nightly-backup");
    assert_eq!(app.data.runs.pinned(), Some(GONE));
    // What is open can be acted on: a failed run is retried from here.
    app::update(&mut app, key('r'));
    assert!(
        matches!(app.modal, Some(Modal::Confirm(_))),
        "{:?}",
        app.status
    );
}

#[test]
fn the_open_run_stays_however_many_runs_finish_after_it() {
    let mut app = app();
    open_gone(&mut app);
    app::update(
        &mut app,
        Msg::Run {
            run_id: GONE.into(),
            result: Ok(gone_run(NOW - 86_000_000)),
        },
    );
    let template = runs()[3].clone();
    for i in 0..1_500u64 {
        let mut run = template.clone();
        run.id = format!("01HZDONE{i:018}");
        run.finished_at_ms = NOW + i64::try_from(i).unwrap();
        let event = Event {
            seq: 100 + i,
            kind: "run.submitted".into(),
            run_id: run.id.clone(),
            run: Some(Box::new(run)),
            ..Event::default()
        };
        app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    }
    assert!(app.data.runs.contains_key(GONE));
    assert_eq!(app.data.runs.finished(), opsdeck_tui::model::FINISHED_KEPT);
    // The Runs screen lists what is held, the finished ones newest first.
    app::update(&mut app, key('2'));
    assert_eq!(app.rows.len(), app.data.runs.len());
    assert_eq!(
        app.rows
            .iter()
            .find(|id| id.starts_with("01HZDONE"))
            .unwrap(),
        "01HZDONE000000000000001499"
    );
}

#[test]
fn a_change_to_the_open_run_while_it_is_read_reads_it_again() {
    let mut app = app();
    open_gone(&mut app);
    // The engine retries it meanwhile: a delta for a run not held yet.
    let retried = Event {
        seq: 47,
        kind: "run.retried".into(),
        run_id: GONE.into(),
        run_update: Some(RunUpdate {
            state: RunState::Running as i32,
            updated_at_ms: NOW,
            ..RunUpdate::default()
        }),
        step_updates: vec![StepUpdate {
            index: 0,
            state: StepState::Queued as i32,
            attempt: 2,
            ..StepUpdate::default()
        }],
        ..Event::default()
    };
    let cmds = app::update(&mut app, Msg::Conn(Update::Event(Box::new(retried))));
    assert!(
        !cmds.iter().any(|c| matches!(c, Cmd::FetchRun { .. })),
        "one read at a time"
    );
    assert!(!app.data.runs.contains_key(GONE), "a delta makes no run");
    assert_eq!(app.run.timeline.len(), 1, "it joins the timeline");
    // The answer predates the retry: shown, and read again.
    let cmds = app::update(
        &mut app,
        Msg::Run {
            run_id: GONE.into(),
            result: Ok(gone_run(NOW - 86_000_000)),
        },
    );
    assert_eq!(
        cmds,
        [Cmd::FetchRun {
            run_id: GONE.into()
        }]
    );
    let mut now = gone_run(NOW);
    now.state = RunState::Running as i32;
    app::update(
        &mut app,
        Msg::Run {
            run_id: GONE.into(),
            result: Ok(now),
        },
    );
    assert_eq!(app.data.runs.get(GONE).unwrap().state(), RunState::Running);
    // From here on its deltas apply.
    let finished = Event {
        seq: 48,
        kind: "run.finished".into(),
        run_id: GONE.into(),
        run_update: Some(RunUpdate {
            state: RunState::Succeeded as i32,
            updated_at_ms: NOW + 1,
            finished_at_ms: NOW + 1,
            ..RunUpdate::default()
        }),
        ..Event::default()
    };
    let cmds = app::update(&mut app, Msg::Conn(Update::Event(Box::new(finished))));
    assert!(!cmds.iter().any(|c| matches!(c, Cmd::FetchRun { .. })));
    assert_eq!(
        app.data.runs.get(GONE).unwrap().state(),
        RunState::Succeeded
    );
}

#[test]
fn an_answer_older_than_what_the_stream_applied_does_not_undo_it() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, code(KeyCode::Enter));
    let id = app.run.run_id.clone();
    let mut stale = app.data.runs.get(&id).unwrap().clone();
    stale.updated_at_ms -= 1;
    stale.state = RunState::Queued as i32;
    app::update(
        &mut app,
        Msg::Run {
            run_id: id.clone(),
            result: Ok(stale),
        },
    );
    assert_eq!(
        app.data.runs.get(&id).unwrap().state(),
        RunState::WaitingApproval
    );
}

#[test]
fn a_run_the_engine_no_longer_has_is_said_so_on_the_run_screen() {
    let mut app = app();
    open_gone(&mut app);
    let words = "the engine has no run 01HRUN00000000000000000GONE (pruned)";
    app::update(
        &mut app,
        Msg::Run {
            run_id: GONE.into(),
            result: Err(words.into()),
        },
    );
    assert_eq!(app.run.run_error.as_deref(), Some(words));
    assert!(!app.run.run_fetching);
    // A snapshot (a reconnect) tries again.
    let cmds = app::update(&mut app, Msg::Conn(Update::Snapshot(Box::new(snapshot()))));
    assert!(cmds.contains(&Cmd::FetchRun {
        run_id: GONE.into()
    }));
}

#[test]
fn queue_figures_and_step_changes_arrive_as_deltas() {
    let mut app = app();
    let build = app
        .data
        .runs
        .get("01HRUN00000000000000000BUILD")
        .unwrap()
        .clone();
    let mut queue = queues()[0].clone();
    queue.ready = 9;
    let event = Event {
        seq: 46,
        kind: "step.succeeded".into(),
        run_id: build.id.clone(),
        step_updates: vec![StepUpdate {
            index: 0,
            state: StepState::Succeeded as i32,
            attempt: 1,
            worker_id: "build-1".into(),
            has_exit_code: true,
            started_at_ms: NOW - 30_000,
            finished_at_ms: NOW,
            ..StepUpdate::default()
        }],
        queues: vec![queue],
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    let step = &app.data.runs.get(&build.id).unwrap().steps[0];
    assert_eq!(step.state(), StepState::Succeeded);
    assert_eq!(step.name, "compile");
    assert_eq!(app.data.queues["build"].queue.ready, 9);
}

fn disconnected(attempt: u32, why: &str, shutting_down: bool) -> Msg {
    Msg::Conn(Update::Disconnected {
        retry_in: Duration::from_secs(2),
        attempt,
        why: why.into(),
        shutting_down,
    })
}

#[test]
fn a_break_noticed_late_is_stale_from_the_last_word_heard() {
    let mut app = app();
    app.now_ms = NOW + 7_000;
    app::update(&mut app, Msg::Conn(Update::Heartbeat { seq: 45 }));
    // The engine froze just after; the break is noticed seconds later.
    app.now_ms = NOW + 11_000;
    app::update(
        &mut app,
        disconnected(
            0,
            "the engine stopped answering (no reply to a ping within 2s)",
            false,
        ),
    );
    assert_eq!(app.conn.stale_since_ms, Some(NOW + 7_000));
    assert_eq!(app.stale_since(), Some(NOW + 7_000));
    // And stays so while it tries again.
    app.now_ms = NOW + 20_000;
    app::update(&mut app, disconnected(1, "gone", false));
    assert_eq!(app.conn.stale_since_ms, Some(NOW + 7_000));
}

#[test]
fn a_live_link_silent_past_the_heartbeat_is_stale_until_the_engine_speaks() {
    let mut app = app();
    app.now_ms = NOW + 10_000;
    app::update(&mut app, Msg::Conn(Update::Heartbeat { seq: 45 }));
    app.now_ms = NOW + 24_000;
    app::update(&mut app, Msg::Tick);
    assert_eq!(app::link_words(&app), "live");
    assert_eq!(app.stale_since(), None);

    app.now_ms = NOW + 27_000;
    app::update(&mut app, Msg::Tick);
    assert_eq!(app::link_words(&app), "no word for 17s");
    assert_eq!(app.stale_since(), Some(NOW + 10_000));
    let header = render(&mut app, 80, 24).backend().to_string();
    let header = header.lines().next().unwrap();
    assert!(header.contains("no word for 17s"), "{header}");
    assert!(header.contains("stale since"), "{header}");

    app::update(&mut app, Msg::Conn(Update::Heartbeat { seq: 45 }));
    assert_eq!(app::link_words(&app), "live");
    assert_eq!(app.stale_since(), None);
}

#[test]
fn a_graceful_stop_is_said_as_one_on_every_retry_until_the_engine_is_back() {
    let mut app = app();
    app::update(
        &mut app,
        disconnected(
            0,
            "unavailable: the engine is shutting down; reconnect and resume from your last seq",
            true,
        ),
    );
    assert_eq!(app::link_words(&app), "engine shutting down");
    says(&app, "the engine is shutting down");
    // The retries fail on a socket that is gone: not news.
    app::update(&mut app, Msg::Conn(Update::Connecting { attempt: 1 }));
    app::update(
        &mut app,
        disconnected(
            1,
            "cannot reach the engine at unix:///run/opsdeck/engine.sock: No such file or directory (os error 2)",
            false,
        ),
    );
    assert_eq!(app::link_words(&app), "engine shut down, retry in 2s");
    says(&app, "the engine is shutting down");
    says(&app, "(attempt 2)");
    assert!(!status(&app).contains("os error"), "{}", status(&app));
    // Back: a later break is an ordinary one again.
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(&[], 0),
            resumed_after: 45,
        }),
    );
    assert_eq!(app::link_words(&app), "live");
    app::update(&mut app, disconnected(0, "transport error", false));
    assert_eq!(app::link_words(&app), "reconnecting in 2s");
}

#[test]
fn a_queue_only_a_worker_serves_joins_the_queues_screen_at_the_next_refresh() {
    let mut app = app();
    app::update(&mut app, key('5'));
    assert_eq!(app.rows, ["build", "deploy", "ops"]);
    app.now_ms += 3_000;
    let cmds = app::update(&mut app, Msg::Tick);
    assert!(cmds.contains(&Cmd::Refresh), "{cmds:?}");
    let mut queues: Vec<Queue> = app.data.queues.values().map(|q| q.queue.clone()).collect();
    queues.push(Queue {
        name: "canary".into(),
        workers: 1,
        ..Queue::default()
    });
    app.now_ms += 200;
    app::update(
        &mut app,
        Msg::Refreshed(Ok(Refreshed {
            workers: Vec::new(),
            leases: Vec::new(),
            queues,
        })),
    );
    app.sync();
    assert_eq!(app.rows, ["build", "canary", "deploy", "ops"]);
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(frame.contains("Queues 1/4"), "{frame}");
    assert!(frame.contains("canary"), "{frame}");
}

#[test]
fn colon_q_and_colon_quit_quit_instead_of_opening_queues() {
    for command in ["q", "quit"] {
        let mut app = app();
        app::update(&mut app, key('4'));
        app::update(&mut app, key(':'));
        type_text(&mut app, command);
        let cmds = app::update(&mut app, code(KeyCode::Enter));
        assert_eq!(cmds, [Cmd::Quit], ":{command}");
        assert!(app.quit);
        assert_ne!(app.screen, Screen::Queues, ":{command}");
    }
    // A longer prefix still names the screen.
    let mut app = app();
    app::update(&mut app, key(':'));
    type_text(&mut app, "qu");
    assert!(app::update(&mut app, code(KeyCode::Enter)).is_empty());
    assert_eq!(app.screen, Screen::Queues);
}

#[test]
fn a_status_message_leaves_the_status_line_after_ten_seconds_but_stays_in_the_log() {
    let mut app = app();
    app.messages.clear();
    app::update(&mut app, key('8'));
    app::update(&mut app, key('F'));
    says(&app, "stopped following");
    app.now_ms += 9_000;
    app::update(&mut app, Msg::Tick);
    says(&app, "stopped following");
    app.now_ms += 2_000;
    app::update(&mut app, Msg::Tick);
    assert_eq!(app.status, None, "gone after 10 s");
    assert_eq!(
        app.messages.back().map(|m| m.text.as_str()),
        Some("stopped following")
    );

    // Word of a call still out stays until the answer.
    app::update(&mut app, key('6'));
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "ok");
    app::update(&mut app, code(KeyCode::Tab));
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert!(matches!(cmds[..], [Cmd::Change { .. }]), "{cmds:?}");
    assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Pending);
    app.now_ms += 30_000;
    app::update(&mut app, Msg::Tick);
    assert_eq!(app.status.as_ref().unwrap().kind, StatusKind::Pending);
}

#[test]
fn shift_l_and_colon_messages_list_the_last_50_status_messages() {
    let mut app = app();
    app::update(&mut app, key('2'));
    for i in 0..60 {
        app.now_ms = NOW + i * 1_000;
        // Each press says something: following, then not.
        app::update(&mut app, key('8'));
        app::update(&mut app, key('F'));
    }
    assert_eq!(app.messages.len(), app::MESSAGES_KEPT);
    assert_eq!(app.messages.back().unwrap().at_ms, NOW + 59_000);
    app::update(&mut app, key('L'));
    assert_eq!(app.modal, Some(Modal::Messages { scroll: 0 }));
    app::update(&mut app, key('j'));
    assert_eq!(app.modal, Some(Modal::Messages { scroll: 1 }));
    app::update(&mut app, code(KeyCode::Esc));
    assert_eq!(app.modal, None);
    app::update(&mut app, key(':'));
    type_text(&mut app, "messages");
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.modal, Some(Modal::Messages { scroll: 0 }));
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(
        frame.contains("messages (the last 50, newest first)"),
        "{frame}"
    );
    let newest = opsdeck_tui::widgets::header::clock(NOW + 59_000);
    assert!(
        frame.contains(&format!("{newest}  following new events")),
        "{frame}"
    );
}

#[test]
fn star_marks_every_run_shown_and_one_cancel_covers_those_that_can_take_it() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, key('*'));
    says(&app, "4 marked");
    app::update(&mut app, key('C'));
    let c = confirm(&app);
    assert_eq!(c.title, "Cancel 2 runs");
    assert!(
        c.lines.iter().any(|l| l.contains("2 of 4 marked runs")),
        "{:?}",
        c.lines
    );
    assert!(
        c.lines
            .iter()
            .any(|l| l.contains("cleanup-tmp is already succeeded")),
        "the run that cannot be cancelled is listed as left out: {:?}",
        c.lines
    );
    let mut ids = c.change.ids.clone();
    ids.sort();
    assert_eq!(
        ids,
        [
            "01HRUN00000000000000000BUILD",
            "01HRUN0000000000000000DEPLOY"
        ]
    );
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "incident 7: stop everything");
    app::update(&mut app, code(KeyCode::Tab));
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    let [Cmd::Change { change, reason }] = cmds.as_slice() else {
        panic!("one change for the marked runs: {cmds:?}");
    };
    assert_eq!(change.kind, Kind::Cancel);
    assert_eq!(change.ids.len(), 2);
    assert_eq!(reason, "incident 7: stop everything");

    // The engine refused one of them: said, and the marks go.
    let results = vec![
        ("a".to_owned(), Ok("cancelled".to_owned())),
        ("b".to_owned(), Ok("cancelled".to_owned())),
        (
            "c".to_owned(),
            Err("FAILED_PRECONDITION: already ended".to_owned()),
        ),
    ];
    app::update(
        &mut app,
        Msg::Done {
            change: change.clone(),
            result: Ok(Changed::Many(results)),
        },
    );
    says(
        &app,
        "cancel run: 2 of 3 done; refused: c (FAILED_PRECONDITION",
    );
    assert!(app.list(Screen::Runs).marked.is_empty());
}

#[test]
fn space_marks_one_row_at_a_time_and_esc_unmarks_before_it_goes_back() {
    let mut app = app();
    app::update(&mut app, key('2'));
    app::update(&mut app, key(' '));
    app::update(&mut app, key(' '));
    assert_eq!(app.list(Screen::Runs).marked.len(), 2);
    assert!(app.frozen.is_none(), "space marks here, it does not freeze");
    app::update(&mut app, key(' '));
    app::update(&mut app, key('k'));
    app::update(&mut app, key(' '));
    assert_eq!(app.list(Screen::Runs).marked.len(), 2, "space unmarks too");
    app::update(&mut app, code(KeyCode::Esc));
    assert!(app.list(Screen::Runs).marked.is_empty());
    assert_eq!(app.screen, Screen::Runs, "esc unmarked, it did not go back");
    app::update(&mut app, key('z'));
    assert!(app.frozen.is_some(), "z freezes where space marks");
}
