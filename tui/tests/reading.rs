//! Reading the console in an incident, through `update()` and the frames
//! at 80×24: a detail overlay with every field and absolute times; the Run
//! screen's timeline focused and scrolled, its output searched and
//! wrapped, typed search text never taken for keys; lists that say where
//! the selection is and put what needs someone first, with sort keys; a
//! dialog whose change no longer applies saying so and sending nothing;
//! footers offering only what can be done on the selected row; ids typed
//! by a part of them, and copied whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use crossterm::event::KeyCode;
use insta::assert_snapshot;
use opsdeck_proto::v1::{Event, OutputChunk, RunState, RunUpdate};
use opsdeck_tui::app::{self, App, Cmd, Focus, Input, Modal, Msg, Palette, Screen};
use opsdeck_tui::conn::Update;

fn screen(digit: char) -> App {
    let mut app = app();
    app::update(&mut app, key(digit));
    app
}

fn frame(app: &mut App) -> String {
    render(app, 80, 24).backend().to_string()
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

fn confirm(app: &App) -> &opsdeck_tui::app::Confirm {
    match &app.modal {
        Some(Modal::Confirm(c)) => c,
        other => panic!("no confirmation open: {other:?}"),
    }
}

/// The Run screen on `run_id` with `events` in its timeline and `lines`
/// of output.
fn run_screen_with(run_id: &str, events: Vec<Event>, lines: &str) -> App {
    let mut app = screen('2');
    while app.selected_key() != Some(run_id) {
        app::update(&mut app, key('j'));
    }
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Run);
    app::update(
        &mut app,
        Msg::Timeline {
            run_id: run_id.into(),
            result: Ok(events),
        },
    );
    app::update(
        &mut app,
        Msg::Output {
            run_id: run_id.into(),
            result: Ok(vec![OutputChunk {
                run_id: run_id.into(),
                step_index: 0,
                attempt: 1,
                stream: "stdout".into(),
                data: lines.as_bytes().to_vec(),
                at_ms: NOW,
                truncated: false,
            }]),
        },
    );
    app
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

fn timeline_events(run_id: &str, n: u64) -> Vec<Event> {
    (1..=n)
        .map(|seq| Event {
            seq,
            at_ms: NOW - (n as i64 - seq as i64) * 1000,
            kind: "step.progress".into(),
            message: format!("event number {seq}"),
            run_id: run_id.into(),
            ..Event::default()
        })
        .collect()
}

const BACKUP: &str = "01HRUN0000000000000000BACKUP";
const BUILD: &str = "01HRUN00000000000000000BUILD";
const DEPLOY: &str = "01HRUN0000000000000000DEPLOY";

// ------------------------------------------------------------ detail

#[test]
fn d_shows_every_field_of_a_run_with_absolute_and_relative_times() {
    let mut app = screen('2');
    app::update(&mut app, key('j'));
    assert_eq!(app.selected_key(), Some(BACKUP));
    app::update(&mut app, key('d'));
    let frame = frame(&mut app);
    for field in [
        BACKUP,
        "2023-11-14T21:53:20Z (20m ago)",
        "step 1 of 1 (backup)",
        "step 1 (backup) is dead after 2 attempts: exit 28",
        "exit code    28",
    ] {
        assert!(frame.contains(field), "{field} is not shown:\n{frame}");
    }
    assert_snapshot!(frame);
}

#[test]
fn an_events_whole_message_and_reason_are_in_its_detail_and_it_scrolls_and_closes() {
    let mut app = screen('8');
    // The step.dead event: its reason is cut on the list at 80 columns.
    while app.selected_key() != Some("44") {
        app::update(&mut app, key('j'));
    }
    app::update(&mut app, key('d'));
    let shown = frame(&mut app);
    assert!(shown.contains("disk full"), "{shown}");
    assert!(shown.contains("2023-11-14T22:11:20Z (2m ago)"), "{shown}");
    assert!(shown.contains("worker:ops-1"), "{shown}");
    assert_snapshot!(shown);
    app::update(&mut app, key('j'));
    assert!(matches!(app.modal, Some(Modal::Detail { scroll: 1, .. })));
    app::update(&mut app, code(KeyCode::Esc));
    assert!(app.modal.is_none());
    assert_eq!(app.screen, Screen::Events);
}

#[test]
fn enter_on_an_event_of_no_run_or_worker_shows_its_detail() {
    let mut app = app();
    app::update(
        &mut app,
        Msg::Conn(Update::Event(Box::new(Event {
            seq: 46,
            at_ms: NOW,
            kind: "queue.paused".into(),
            actor: "ann".into(),
            queue: "deploy".into(),
            reason: "a freeze for the release of version 1.4.2 until the smoke tests pass".into(),
            ..Event::default()
        }))),
    );
    app::update(&mut app, key('8'));
    assert_eq!(app.selected_key(), Some("46"));
    app::update(&mut app, code(KeyCode::Enter));
    assert!(matches!(
        app.modal,
        Some(Modal::Detail {
            of: app::DetailOf::Event(46),
            ..
        })
    ));
    let shown = frame(&mut app);
    assert!(shown.contains("until the smoke tests"), "{shown}");
}

#[test]
fn a_lease_gone_while_its_detail_is_open_says_so() {
    let mut app = screen('7');
    let id = app.selected_key().unwrap().to_owned();
    app::update(&mut app, key('d'));
    assert!(frame(&mut app).contains("fencing"));
    app.data.leases.remove(&id);
    let shown = frame(&mut app);
    assert!(shown.contains("is no longer live"), "{shown}");
}

// ------------------------------------------------------- status line

#[test]
fn a_status_message_too_long_for_the_line_is_cut_between_words_and_points_to_l() {
    let mut app = screen('2');
    app::update(
        &mut app,
        Msg::Done {
            change: app::Change::new(app::Kind::Cancel, BUILD),
            result: Err(tonic::Status::failed_precondition(
                "run 01HRUN00000000000000000BUILD is already cancelled; nothing to cancel",
            )),
        },
    );
    let shown = frame(&mut app);
    let last = shown.lines().nth(23).unwrap().to_owned();
    assert!(last.contains("… (L: all of it)"), "{last}");
    assert!(!last.contains("cancelle\""), "cut mid-word: {last}");
    // The log has it whole.
    app::update(&mut app, key('L'));
    let log = frame(&mut app);
    assert!(log.contains("nothing to cancel"), "{log}");
}

// --------------------------------------------------------- run panes

#[test]
fn w_wraps_the_output_so_a_long_line_can_be_read() {
    let long = format!("{}END\n", "x".repeat(120));
    let mut app = run_screen_with(BUILD, Vec::new(), &long);
    assert!(!frame(&mut app).contains("END"));
    app::update(&mut app, key('w'));
    assert!(app.wrap_log);
    let shown = frame(&mut app);
    assert!(shown.contains("END"), "{shown}");
    assert_snapshot!(shown);
}

#[test]
fn tab_focuses_the_timeline_which_then_scrolls_with_j_and_k() {
    let mut app = run_screen_with(BUILD, timeline_events(BUILD, 20), &numbered(3));
    let before = frame(&mut app);
    assert!(before.contains("event number 20"), "{before}");
    assert!(!before.contains("event number 10 "), "{before}");
    app::update(&mut app, code(KeyCode::Tab));
    for _ in 0..8 {
        app::update(&mut app, key('k'));
    }
    let shown = frame(&mut app);
    assert!(shown.contains("event number 10"), "{shown}");
    assert!(!shown.contains("event number 20"), "{shown}");
    assert_snapshot!(shown);
    // A new event does not move what is being read.
    let mut newer = timeline_events(BUILD, 21).pop().unwrap();
    newer.seq = 100;
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(newer))));
    let after = frame(&mut app);
    assert!(after.contains("Timeline 6-12 of 21"), "{after}");
    assert_eq!(after.lines().nth(9), shown.lines().nth(9));
    // G: the newest again, kept in view.
    app::update(&mut app, key('G'));
    assert_eq!(app.run.timeline_back, 0);
    // Tab back: j/k move the output again.
    app::update(&mut app, code(KeyCode::BackTab));
    assert_eq!(app.run.pane, app::Pane::Output);
}

#[test]
fn slash_on_the_run_screen_searches_the_output_and_the_typed_text_is_no_hotkey() {
    let mut app = run_screen_with(BUILD, Vec::new(), &numbered(60));
    app::update(&mut app, key('/'));
    assert_eq!(app.input, Input::Search(String::new()));
    // Each of these is a key elsewhere: l, i, n, e, space, 5 (Queues).
    type_text(&mut app, "line 5");
    assert_eq!(app.screen, Screen::Run);
    assert!(app.frozen.is_none(), "space froze the display");
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Run);
    assert_eq!(app.input, Input::Normal);
    // Line 1 is the heading; "line 5" is the sixth line.
    assert_eq!(app.run.hit, Some(5));
    assert!(status(&app).contains("11 matching"), "{}", status(&app));
    let shown = frame(&mut app);
    assert!(shown.contains("line 5 "), "{shown}");
    assert_snapshot!(shown);
    // n: the next match (line 50), N: back.
    app::update(&mut app, key('n'));
    assert_eq!(app.run.hit, Some(50));
    app::update(&mut app, key('N'));
    assert_eq!(app.run.hit, Some(5));
    app::update(&mut app, key('N'));
    assert_eq!(app.run.hit, Some(59), "wraps around to line 58");
}

#[test]
fn slash_says_plainly_where_there_is_nothing_to_filter() {
    let mut app = app();
    app::update(&mut app, key('/'));
    assert_eq!(app.input, Input::Normal);
    assert!(
        status(&app).contains("nothing to filter"),
        "{}",
        status(&app)
    );
    type_text(&mut app, "abc");
    assert_eq!(app.screen, Screen::Overview);
}

// ------------------------------------------------------------- lists

#[test]
fn lists_say_where_the_selection_is() {
    let mut app = screen('2');
    app::update(&mut app, key('j'));
    let shown = frame(&mut app);
    assert!(shown.contains(" Runs 2/4 "), "{shown}");
}

#[test]
fn runs_put_failed_and_waiting_first_then_running_then_the_rest_newest_first() {
    let mut app = app();
    // A newer run that succeeded, and a newer one running.
    for (seq, id, state, created) in [
        (
            46,
            "01HRUN0000000000000000NEWOK",
            RunState::Succeeded,
            NOW - 2000,
        ),
        (
            47,
            "01HRUN0000000000000000NEWRUN",
            RunState::Running,
            NOW - 1000,
        ),
    ] {
        let mut run = runs()[3].clone();
        run.id = id.into();
        run.state = state as i32;
        run.created_at_ms = created;
        app::update(
            &mut app,
            Msg::Conn(Update::Event(Box::new(Event {
                seq,
                kind: "run.submitted".into(),
                run: Some(Box::new(run)),
                ..Event::default()
            }))),
        );
    }
    app::update(&mut app, key('2'));
    app.sync();
    assert_eq!(
        app.rows,
        [
            DEPLOY,
            BACKUP,
            "01HRUN0000000000000000NEWRUN",
            BUILD,
            "01HRUN0000000000000000NEWOK",
            "01HRUN000000000000000000OLD",
        ]
    );
    // N: by name; again: the other way; a third time: urgency again.
    app::update(&mut app, key('N'));
    let names: Vec<String> = app
        .rows
        .iter()
        .map(|id| app.data.runs.get(id).unwrap().name.clone())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(frame(&mut app).contains("by name"));
    app::update(&mut app, key('N'));
    assert_eq!(app.data.runs.get(&app.rows[0]).unwrap().name, "deploy-web");
    assert!(frame(&mut app).contains("by name rev"));
    app::update(&mut app, key('N'));
    assert_eq!(app.rows[0], DEPLOY);
    // S: by state word; A: newest first.
    app::update(&mut app, key('S'));
    assert_eq!(app.rows.last().unwrap(), DEPLOY, "waiting_approval is last");
    app::update(&mut app, key('A'));
    assert_eq!(app.rows[0], "01HRUN0000000000000000NEWRUN");
}

#[test]
fn workers_put_offline_and_stuck_first_then_draining() {
    let mut app = screen('4');
    assert_eq!(
        app.rows,
        ["ops-1", "ops-2", "deploy-1", "build-1", "spare-1"]
    );
    assert_snapshot!(frame(&mut app));
}

#[test]
fn leases_sort_by_age_and_back_to_stuck_first() {
    let mut app = screen('7');
    let urgent = app.rows.clone();
    assert_eq!(urgent[0], "01HLEASE0000000000000000003", "stuck first");
    app::update(&mut app, key('N'));
    let names: Vec<&str> = app
        .rows
        .iter()
        .map(|id| app.data.leases.get(id).unwrap().run_name.as_str())
        .collect();
    assert_eq!(names, ["build-api", "migrate-db", "nightly-report"]);
    app::update(&mut app, key('N'));
    app::update(&mut app, key('N'));
    assert_eq!(app.rows, urgent);
}

// ----------------------------------------------------- stale dialogs

#[test]
fn a_cancel_dialog_whose_run_was_cancelled_meanwhile_says_so_and_ok_sends_nothing() {
    let mut app = screen('2');
    while app.selected_key() != Some(BUILD) {
        app::update(&mut app, key('j'));
    }
    app::update(&mut app, key('C'));
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "stop it");
    // Cancelled from the CLI meanwhile.
    app::update(
        &mut app,
        Msg::Conn(Update::Event(Box::new(Event {
            seq: 46,
            kind: "run.cancelled".into(),
            run_id: BUILD.into(),
            run_update: Some(RunUpdate {
                state: RunState::Cancelled as i32,
                finished_at_ms: NOW,
                updated_at_ms: NOW,
                ..RunUpdate::default()
            }),
            ..Event::default()
        }))),
    );
    let gone = confirm(&app).gone.clone().unwrap();
    assert!(gone.contains("already cancelled, nothing to do"), "{gone}");
    assert_snapshot!(frame(&mut app));
    app::update(&mut app, code(KeyCode::Tab));
    assert_eq!(confirm(&app).focus, Focus::Ok);
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert!(cmds.is_empty(), "a doomed request went out: {cmds:?}");
    assert!(app.modal.is_none());
    assert!(status(&app).contains("nothing changed"), "{}", status(&app));
}

// ----------------------------------------------------------- footers

#[test]
fn the_footer_offers_only_the_changes_that_apply_to_the_selected_row() {
    let mut app = screen('2');
    // deploy-web waits for an approval: cancel, not retry.
    let keys = frame(&mut app).lines().nth(22).unwrap().to_owned();
    assert!(keys.contains("cancel") && !keys.contains("retry"), "{keys}");
    // backup-logs failed: retry, not cancel.
    app::update(&mut app, key('j'));
    let keys = frame(&mut app).lines().nth(22).unwrap().to_owned();
    assert!(keys.contains("retry") && !keys.contains("cancel"), "{keys}");
    // On the Workers screen, the offline one can be neither drained nor
    // undrained.
    app::update(&mut app, key('4'));
    assert_eq!(app.selected_key(), Some("ops-1"));
    let keys = frame(&mut app).lines().nth(22).unwrap().to_owned();
    assert!(!keys.contains("drain"), "{keys}");
}

#[test]
fn read_only_offers_no_change_in_the_footer() {
    let mut app = app_with(Palette::Ansi16, true);
    app::update(&mut app, key('2'));
    let shown = frame(&mut app);
    let keys = shown.lines().nth(22).unwrap();
    for word in ["cancel", "retry"] {
        assert!(!keys.contains(word), "{word} offered read-only: {keys}");
    }
    assert_snapshot!(shown);
}

// --------------------------------------------------------------- ids

#[test]
fn a_force_release_takes_a_unique_tail_or_head_of_the_lease_id() {
    let mut app = screen('7');
    let id = app.selected_key().unwrap().to_owned();
    app::update(&mut app, key('X'));
    app::update(&mut app, code(KeyCode::Tab));
    // A head all the leases share is not enough.
    type_text(&mut app, "01hlease");
    assert!(!confirm(&app).id_typed());
    // The tail the list shows is.
    for _ in 0.."01hlease".len() {
        app::update(&mut app, code(KeyCode::Backspace));
    }
    type_text(&mut app, &id[id.len() - 8..]);
    assert!(confirm(&app).id_typed(), "{:?}", confirm(&app).typed);
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "holder wedged");
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert!(app.modal.is_none(), "{:?}", app.modal);
    assert_eq!(
        cmds,
        [Cmd::Change {
            change: app::Change::new(app::Kind::ForceRelease, id.clone()),
            reason: "holder wedged".into(),
        }]
    );
    assert!(app::id_matches(
        &id,
        &id[..id.len() - 1].to_lowercase(),
        &[]
    ));
    assert!(!app::id_matches(&id, &id[id.len() - 5..], &[]));
}

#[test]
fn y_copies_the_selected_items_full_id_with_osc_52() {
    let mut app = screen('2');
    let cmds = app::update(&mut app, key('y'));
    assert_eq!(
        cmds,
        [Cmd::Copy {
            text: DEPLOY.into()
        }]
    );
    assert!(status(&app).contains(&format!("copied {DEPLOY}")));
    // In a detail overlay, y copies its item's id.
    app::update(&mut app, key('4'));
    app::update(&mut app, key('d'));
    let cmds = app::update(&mut app, key('y'));
    assert_eq!(
        cmds,
        [Cmd::Copy {
            text: "ops-1".into()
        }]
    );
    assert!(app::osc52("ops-1").starts_with("\x1b]52;c;"));
}

// ---------------------------------------------------------- overview

#[test]
fn the_overview_lists_the_latest_failed_runs_with_the_step_that_failed() {
    let shown = frame(&mut app());
    assert!(shown.contains("Failed runs"), "{shown}");
    assert!(
        shown.contains("backup-logs …00BACKUP   2m ago  step 1 backup: exit 28"),
        "{shown}"
    );
}
