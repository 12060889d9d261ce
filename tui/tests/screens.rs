//! Every screen rendered on ratatui's TestBackend and compared with its
//! snapshot (the clock is fixed, so ages and ids are stable), plus the
//! rules that hold at any size and palette: no panic from 1×1 to 200×60,
//! no colour at all under NO_COLOR, only the 16 ANSI colours by default.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use crossterm::event::KeyCode;
use insta::assert_snapshot;
use opsdeck_proto::v1::OutputChunk;
use opsdeck_tui::app::{self, Msg, Palette, Screen};
use opsdeck_tui::conn::Update;
use ratatui::style::Color;

fn screen(digit: char) -> opsdeck_tui::app::App {
    let mut app = app();
    app::update(&mut app, key(digit));
    app
}

/// The Run screen on deploy-web, with its events and output read.
fn run_screen() -> opsdeck_tui::app::App {
    let mut app = app();
    app::update(&mut app, key('2'));
    let cmds = app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.screen, Screen::Run);
    assert!(
        !cmds.is_empty(),
        "opening a run reads its events and output"
    );
    let run_id = app.run.run_id.clone();
    let timeline = events()
        .into_iter()
        .filter(|e| e.run_id == run_id)
        .collect();
    app::update(
        &mut app,
        Msg::Timeline {
            run_id: run_id.clone(),
            result: Ok(timeline),
        },
    );
    let chunk = |stream: &str, data: &str| OutputChunk {
        run_id: run_id.clone(),
        step_index: 0,
        attempt: 1,
        stream: stream.into(),
        data: data.into(),
        at_ms: NOW,
        truncated: false,
        offset: 0,
    };
    app::update(
        &mut app,
        Msg::Output {
            run_id: run_id.clone(),
            result: Ok(vec![
                chunk("stdout", "building web\nimage web:1.4.2\n"),
                chunk("stderr", "warning: \x1b[31mcache miss\x1b[0m\n"),
            ]),
        },
    );
    app
}

#[test]
fn overview() {
    assert_snapshot!(render(&mut app(), 80, 24).backend());
}

#[test]
fn runs() {
    assert_snapshot!(render(&mut screen('2'), 80, 24).backend());
}

#[test]
fn run_detail() {
    assert_snapshot!(render(&mut run_screen(), 80, 24).backend());
}

#[test]
fn workers() {
    assert_snapshot!(render(&mut screen('4'), 80, 24).backend());
}

#[test]
fn queues() {
    assert_snapshot!(render(&mut screen('5'), 80, 24).backend());
}

#[test]
fn approvals() {
    assert_snapshot!(render(&mut screen('6'), 80, 24).backend());
}

#[test]
fn leases() {
    assert_snapshot!(render(&mut screen('7'), 80, 24).backend());
}

#[test]
fn events_tail() {
    assert_snapshot!(render(&mut screen('8'), 80, 24).backend());
}

#[test]
fn quarantines() {
    assert_snapshot!(render(&mut screen('9'), 80, 24).backend());
}

#[test]
fn schedules() {
    assert_snapshot!(render(&mut screen('0'), 100, 24).backend());
}

#[test]
fn clearing_a_quarantine_asks_for_a_reason() {
    let mut app = screen('9');
    app::update(&mut app, key('U'));
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn roles_are_on_the_header_and_keys_they_do_not_allow_are_not_offered() {
    // An operator: drain and undrain, but no recycle on the Workers screen.
    let mut app = app_as(&["operator"]);
    app::update(&mut app, key('4'));
    // An online worker, which an operator may drain.
    app::update(&mut app, key('N'));
    app::update(&mut app, key('g'));
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn help_for_a_viewer_lists_no_changes() {
    let mut app = app_as(&["viewer"]);
    app::update(&mut app, key('?'));
    let frame = render(&mut app, 80, 60).backend().to_string();
    for hidden in [
        "approve the",
        "drain the",
        "force-release",
        "clear the quarantine",
    ] {
        assert!(
            !frame.contains(hidden),
            "{hidden} offered to a viewer:\n{frame}"
        );
    }
    assert!(frame.contains("your roles: viewer"), "{frame}");
    assert_snapshot!(frame);
}

#[test]
fn a_new_leader_is_on_the_header() {
    let mut app = app();
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(&["admin"], 2),
            resumed_after: 45,
        }),
    );
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn tabs_keep_the_current_screens_name_and_fit_the_line() {
    use opsdeck_tui::view::tab_titles;
    for width in [80usize, 100, 200] {
        for current in Screen::ALL {
            let titled = tab_titles(current, width);
            let index = Screen::ALL.iter().position(|s| *s == current).unwrap();
            assert!(titled[index], "{current:?} at {width}");
            let used: usize = Screen::ALL
                .iter()
                .zip(titled)
                .map(|(s, t)| if t { s.title().len() + 3 } else { 2 })
                .sum::<usize>()
                + 8;
            assert!(used <= width, "{current:?} at {width}: {used}");
        }
    }
    assert!(tab_titles(Screen::Overview, 200).iter().all(|t| *t));
}

#[test]
fn confirm_dialog_for_an_approval() {
    let mut app = screen('6');
    app::update(&mut app, key('a'));
    app::update(&mut app, code(KeyCode::Tab));
    type_text(&mut app, "change 42");
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn force_release_asks_for_the_lease_id() {
    let mut app = screen('7');
    app::update(&mut app, key('X'));
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn help_lists_every_key() {
    let mut app = app();
    app::update(&mut app, key('?'));
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn a_filter_being_typed() {
    let mut app = screen('2');
    app::update(&mut app, key('/'));
    type_text(&mut app, "deploy");
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn disconnected_keeps_the_data_and_says_since_when() {
    let mut app = screen('2');
    app::update(
        &mut app,
        Msg::Conn(Update::Disconnected {
            retry_in: Duration::from_millis(2500),
            attempt: 2,
            why: "UNAVAILABLE: the engine is shutting down".into(),
            shutting_down: false,
        }),
    );
    let frame = render(&mut app, 80, 24).backend().to_string();
    insta::with_settings!({filters => vec![(r"\d\d:\d\d:\d\d", "[time]")]}, {
        assert_snapshot!(frame);
    });
}

#[test]
fn read_only_and_frozen_are_on_the_header() {
    let mut app = app_with(Palette::Ansi16, true);
    app::update(&mut app, key(' '));
    assert_snapshot!(render(&mut app, 80, 24).backend());
}

#[test]
fn wide_terminal_shows_full_ids_and_more_columns() {
    assert_snapshot!("runs_200x60", render(&mut screen('2'), 200, 60).backend());
    assert_snapshot!("overview_200x60", render(&mut app(), 200, 60).backend());
    assert_snapshot!("run_200x60", render(&mut run_screen(), 200, 60).backend());
}

#[test]
fn every_screen_renders_at_any_size_without_panicking() {
    let sizes = [
        (1, 1),
        (2, 1),
        (1, 3),
        (20, 5),
        (40, 10),
        (80, 24),
        (200, 60),
    ];
    for digit in '1'..='9' {
        for (w, h) in sizes {
            let mut app = run_screen();
            app::update(&mut app, key(digit));
            render(&mut app, w, h);
            // With each overlay too.
            app::update(&mut app, key('?'));
            render(&mut app, w, h);
            app::update(&mut app, code(KeyCode::Esc));
        }
    }
    for (w, h) in sizes {
        let mut app = screen('7');
        app::update(&mut app, key('X'));
        render(&mut app, w, h);
        app::update(&mut app, key('/'));
        render(&mut app, w, h);
    }
}

#[test]
fn no_color_uses_no_colour_at_all() {
    for digit in '1'..='9' {
        let mut app = app_with(Palette::Mono, false);
        app::update(&mut app, key(digit));
        app::update(&mut app, key('a'));
        let terminal = render(&mut app, 120, 40);
        for cell in terminal.backend().buffer().content() {
            assert_eq!(
                (cell.fg, cell.bg),
                (Color::Reset, Color::Reset),
                "{cell:?} on screen {digit}"
            );
        }
    }
}

#[test]
fn the_default_palette_is_the_16_ansi_colours() {
    for digit in '1'..='9' {
        let mut app = app();
        app::update(&mut app, key(digit));
        let terminal = render(&mut app, 120, 40);
        for cell in terminal.backend().buffer().content() {
            for c in [cell.fg, cell.bg] {
                assert!(
                    !matches!(c, Color::Indexed(_) | Color::Rgb(..)),
                    "{c:?} on screen {digit}"
                );
            }
        }
    }
}

#[test]
fn output_is_made_safe_for_the_terminal() {
    let frame = render(&mut run_screen(), 80, 24).backend().to_string();
    assert!(frame.contains("warning: cache miss"), "{frame}");
    assert!(!frame.contains('\x1b'));
}

#[test]
fn the_palette_follows_no_color_colorterm_and_term() {
    let detect = Palette::detect;
    assert_eq!(
        detect(Some("1"), Some("xterm-256color"), Some("truecolor")),
        Palette::Mono
    );
    assert_eq!(detect(None, Some("dumb"), None), Palette::Mono);
    assert_eq!(
        detect(Some(""), Some("xterm"), None),
        Palette::Ansi16,
        "an empty NO_COLOR does not count"
    );
    assert_eq!(detect(None, Some("xterm"), None), Palette::Ansi16);
    assert_eq!(detect(None, Some("screen"), None), Palette::Ansi16);
    assert_eq!(detect(None, Some("tmux-256color"), None), Palette::Ansi256);
    assert_eq!(
        detect(None, Some("xterm"), Some("truecolor")),
        Palette::Ansi256
    );
    assert_eq!(detect(None, None, Some("24bit")), Palette::Ansi256);
}

#[test]
fn the_run_screen_says_it_is_reading_a_run_it_does_not_hold_and_why_it_cannot() {
    use opsdeck_proto::v1::Event;
    let mut app = app();
    let event = Event {
        seq: 46,
        kind: "run.note".into(),
        run_id: "01HRUN00000000000000000GONE".into(),
        ..Event::default()
    };
    app::update(&mut app, Msg::Conn(Update::Event(Box::new(event))));
    app::update(&mut app, key('8'));
    app::update(&mut app, code(KeyCode::Enter));
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(
        frame.contains("reading run 01HRUN00000000000000000GONE from the engine"),
        "{frame}"
    );
    app::update(
        &mut app,
        Msg::Run {
            run_id: "01HRUN00000000000000000GONE".into(),
            result: Err("the engine has no run".into()),
        },
    );
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(
        frame.contains("cannot be read: the engine has no run"),
        "{frame}"
    );
}

#[test]
fn a_runs_filter_that_matches_nothing_points_to_the_engines_history() {
    let mut app = screen('2');
    app::update(&mut app, key('/'));
    type_text(&mut app, "last-year");
    let frame = render(&mut app, 120, 24).backend().to_string();
    assert!(frame.contains("nothing matches /last-year"), "{frame}");
    assert!(
        frame.contains("older finished runs: `opsdeck runs"),
        "{frame}"
    );
}

/// A console started while the engine is not there.
fn never_connected() -> opsdeck_tui::app::App {
    let mut app = opsdeck_tui::app::App::new(
        app::Options {
            engine: "unix:///run/opsdeck/engine.sock".into(),
            readonly: false,
            palette: Palette::Ansi16,
        },
        NOW,
    );
    app::update(&mut app, Msg::Conn(Update::Connecting { attempt: 0 }));
    app::update(
        &mut app,
        Msg::Conn(Update::Disconnected {
            retry_in: Duration::from_secs(3),
            attempt: 2,
            why: "cannot reach the engine at unix:///run/opsdeck/engine.sock: \
                  No such file or directory (os error 2)"
                .into(),
            shutting_down: false,
        }),
    );
    app
}

#[test]
fn a_console_that_never_connected_says_so_and_shows_unknowns_not_zeros() {
    let mut app = never_connected();
    let frame = render(&mut app, 80, 24).backend().to_string();
    let header = frame.lines().next().unwrap();
    assert!(header.contains("never connected, retry in 3s"), "{header}");
    assert!(
        !header.contains("stale since"),
        "nothing shown is stale: {header}"
    );
    assert!(frame.contains("never connected to unix:///run/opsdeck/engine.sock"));
    assert!(frame.contains("No such file or directory"), "{frame}");
    assert!(frame.contains("workers    ?"), "{frame}");
    for zero in ["0 idle", "0 pending", "0 live", "0 ready"] {
        assert!(!frame.contains(zero), "{zero} shown:\n{frame}");
    }
    assert_snapshot!(frame);

    // A list says so too, with no count.
    app::update(&mut app, key('5'));
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(frame.contains("Queues ?"), "{frame}");
    assert!(frame.contains("never connected to"), "{frame}");
    assert!(!frame.contains("no queues yet"), "{frame}");

    // Connected and loaded: the figures are the engine's.
    app::update(
        &mut app,
        Msg::Conn(Update::Connected {
            whoami: whoami(&[], 0),
            resumed_after: 0,
        }),
    );
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(frame.contains("reading what the engine holds"), "{frame}");
    app::update(&mut app, Msg::Conn(Update::Snapshot(Box::new(snapshot()))));
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(frame.contains("Queues 1/3"), "{frame}");
    assert_eq!(app.unknown_words(), None);
}

#[test]
fn a_terminal_below_60x16_gets_one_line_saying_so() {
    for (w, h) in [(59, 24), (80, 15), (60, 10)] {
        let frame = render(&mut app(), w, h).backend().to_string();
        let first = frame.lines().next().unwrap();
        assert!(
            first.contains(&format!("terminal too small (need 60x16, have {w}x{h})")),
            "{frame}"
        );
        assert!(!frame.contains('┌'), "no empty boxes at {w}x{h}:\n{frame}");
    }
    // Narrower than the line itself: it wraps rather than being cut.
    let frame = render(&mut app(), 20, 5).backend().to_string();
    assert!(frame.contains("terminal too"), "{frame}");
    assert!(frame.contains("20x5)"), "{frame}");
    // At the minimum, the console.
    let frame = render(&mut app(), 60, 16).backend().to_string();
    assert!(frame.lines().next().unwrap().contains("opsdeck"), "{frame}");
    assert!(!frame.contains("too small"), "{frame}");
}

#[test]
fn queue_sparklines_share_one_scale_so_one_ready_is_not_as_tall_as_eleven() {
    let mut app = app();
    for q in app.data.queues.values_mut() {
        q.queue.ready = match q.queue.name.as_str() {
            "build" => 11,
            "deploy" => 1,
            _ => 0,
        };
    }
    app.data.depth.clear();
    for _ in 0..8 {
        app.data.sample();
    }
    app::update(&mut app, key('5'));
    let frame = render(&mut app, 80, 24).backend().to_string();
    let row = |name: &str| {
        frame
            .lines()
            .find(|l| l.contains(&format!("│{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{frame}"))
            .to_owned()
    };
    assert!(row("build").contains("████████"), "{frame}");
    assert!(row("deploy").contains("▃▃▃▃▃▃▃▃"), "{frame}");
    assert!(
        frame.contains("READY, MAX 11"),
        "the scale is named:\n{frame}"
    );

    app::update(&mut app, key('1'));
    let frame = render(&mut app, 80, 24).backend().to_string();
    assert!(frame.contains("Queue depth (ready, max 11)"), "{frame}");
    assert!(frame.contains("build     ████████"), "{frame}");
    assert!(frame.contains("deploy    ▃▃▃▃▃▃▃▃"), "{frame}");
}

/// A worker's breaker opens and a running step goes quiet, as the engine's
/// events say.
fn breaker_and_hung() -> opsdeck_tui::app::App {
    use opsdeck_proto::v1::{Event, StepState, StepUpdate};
    let mut app = app();
    let mut spare = common::workers().pop().unwrap();
    spare.breaker = "open".into();
    spare.breaker_message = "its last 5 attempts failed".into();
    let events = [
        Event {
            seq: 46,
            at_ms: NOW,
            kind: "worker.breaker_opened".into(),
            worker_id: spare.id.clone(),
            worker: Some(Box::new(spare)),
            message: "worker spare-1's breaker opened".into(),
            ..Event::default()
        },
        Event {
            seq: 47,
            at_ms: NOW,
            kind: "step.hung".into(),
            run_id: "01HRUN00000000000000000BUILD".into(),
            message: "step build-api/compile hung: no output for 5m".into(),
            step_updates: vec![StepUpdate {
                index: 0,
                state: StepState::Running as i32,
                attempt: 1,
                attempts_counted: 1,
                worker_id: "build-1".into(),
                lease_id: "01HLEASE0000000000000000001".into(),
                started_at_ms: NOW - 30_000,
                hung: true,
                ..StepUpdate::default()
            }],
            ..Event::default()
        },
    ];
    for e in events {
        app::update(&mut app, Msg::Conn(Update::Event(Box::new(e))));
    }
    app.status = None;
    app
}

#[test]
fn a_worker_out_of_dispatch_shows_its_breaker() {
    let mut app = breaker_and_hung();
    app::update(&mut app, key('4'));
    let frame = render(&mut app, 80, 24);
    let text = format!("{:?}", frame.backend());
    assert!(
        text.contains("spare-1          breaker open idle"),
        "{text}"
    );
    assert_snapshot!(frame.backend());
}

#[test]
fn a_quiet_running_step_shows_hung() {
    let mut app = breaker_and_hung();
    app::update(&mut app, key('2'));
    // build-api is the third row.
    app::update(&mut app, key('j'));
    app::update(&mut app, key('j'));
    app::update(&mut app, code(KeyCode::Enter));
    assert_eq!(app.run.run_id, "01HRUN00000000000000000BUILD");
    let frame = render(&mut app, 80, 24);
    let text = format!("{:?}", frame.backend());
    assert!(text.contains("compile          hung"), "{text}");
    assert_snapshot!(frame.backend());
}
