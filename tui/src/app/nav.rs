//! Keys: what each one does outside a dialog — moving, filtering, `:`
//! commands, switching screens, drilling in and back out. Change keys go
//! to [`super::change::start`].

use crossterm::event::{KeyCode, KeyEvent};

use super::run_view::{RunView, want_output, want_run};
use super::{
    App, Back, Cmd, DetailOf, Input, Link, Modal, Screen, StatusKind, change, copy, detail, marks,
    order, panes,
};
use crate::keys::{Action, Key, lookup};

pub(super) fn on_key(app: &mut App, key: KeyEvent) -> Vec<Cmd> {
    let Some(k) = Key::of(&key) else {
        return Vec::new();
    };
    if k.ctrl && k.code == KeyCode::Char('c') {
        return interrupt(app);
    }
    app.ctrl_c_at = None;
    // Seen: the header stops saying so.
    app.conn.leader_changed_at_ms = None;
    match app.modal.take() {
        Some(Modal::Confirm(confirm)) => return change::on_key(app, *confirm, key),
        Some(Modal::Help { scroll }) => {
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Help { scroll });
            return Vec::new();
        }
        Some(Modal::Messages { scroll }) => {
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Messages { scroll });
            return Vec::new();
        }
        Some(Modal::Detail { of, scroll }) => {
            if k == (Key {
                code: KeyCode::Char('y'),
                ctrl: false,
            }) {
                let text = detail::id_of(&of);
                app.modal = Some(Modal::Detail { of, scroll });
                return copy::copy(app, text);
            }
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Detail { of, scroll });
            return Vec::new();
        }
        None => {}
    }
    match std::mem::replace(&mut app.input, Input::Normal) {
        Input::Filter => return on_filter_key(app, key),
        Input::Command(text) => return on_command_key(app, text, key),
        Input::Search(text) => return panes::on_search_key(app, text, key),
        Input::Normal => {}
    }
    let Some(action) = lookup(k, app.screen) else {
        return Vec::new();
    };
    if let Action::Change(kind) = action {
        return change::start(app, kind);
    }
    act(app, action)
}

/// A scrolling overlay's scroll after a key; `None` closes it (`?`, `L`,
/// Esc, q and anything else that does not scroll).
fn scrolled(k: Key, screen: Screen, scroll: usize) -> Option<usize> {
    match lookup(k, screen) {
        Some(Action::Down) => Some(scroll.saturating_add(1)),
        Some(Action::Up) => Some(scroll.saturating_sub(1)),
        Some(Action::PageDown) => Some(scroll.saturating_add(10)),
        Some(Action::PageUp) => Some(scroll.saturating_sub(10)),
        Some(Action::Top) => Some(0),
        _ => None,
    }
}

fn interrupt(app: &mut App) -> Vec<Cmd> {
    if app.ctrl_c_at.is_some() {
        app.quit = true;
        return vec![Cmd::Quit];
    }
    app.ctrl_c_at = Some(app.now_ms);
    app.say(StatusKind::Info, "press ctrl-c again to quit");
    Vec::new()
}

fn on_filter_key(app: &mut App, key: KeyEvent) -> Vec<Cmd> {
    let screen = app.screen;
    let ctrl = key
        .modifiers
        .contains(crossterm::event::KeyModifiers::CONTROL);
    let filter = &mut app.list_mut(screen).filter;
    match key.code {
        KeyCode::Esc => filter.clear(),
        KeyCode::Enter => return Vec::new(),
        KeyCode::Backspace => {
            filter.pop();
            app.input = Input::Filter;
        }
        KeyCode::Char('u') if ctrl => {
            filter.clear();
            app.input = Input::Filter;
        }
        KeyCode::Char(c) if !ctrl => {
            filter.push(c);
            app.input = Input::Filter;
        }
        _ => app.input = Input::Filter,
    }
    // The filter changed what the rows are: start at the top.
    let list = app.list_mut(screen);
    list.selected = 0;
    list.key = None;
    Vec::new()
}

/// What `:` runs besides switching screens.
const QUIT_COMMANDS: [&str; 4] = ["q", "quit", "q!", "qa"];
const MESSAGES_COMMAND: &str = "messages";

fn on_command_key(app: &mut App, mut text: String, key: KeyEvent) -> Vec<Cmd> {
    let command = text.trim().to_ascii_lowercase();
    match key.code {
        KeyCode::Esc => Vec::new(),
        // `:q` quits, as in vim and k9s, though `q` is a prefix of queues.
        KeyCode::Enter if QUIT_COMMANDS.contains(&command.as_str()) => {
            app.quit = true;
            vec![Cmd::Quit]
        }
        // No screen's name starts with an m, so any prefix will do.
        KeyCode::Enter if !command.is_empty() && MESSAGES_COMMAND.starts_with(command.as_str()) => {
            app.modal = Some(Modal::Messages { scroll: 0 });
            Vec::new()
        }
        KeyCode::Enter => match Screen::from_name(&text) {
            Some(screen) => go(app, screen),
            None => {
                let names: Vec<&str> = Screen::ALL.iter().map(|s| s.name()).collect();
                app.say(
                    StatusKind::Refused,
                    format!(
                        "no screen named {text:?}; there are: {}; and :messages, :q",
                        names.join(", ")
                    ),
                );
                Vec::new()
            }
        },
        KeyCode::Backspace => {
            if text.pop().is_some() {
                app.input = Input::Command(text);
            }
            Vec::new()
        }
        KeyCode::Char(c) => {
            text.push(c);
            app.input = Input::Command(text);
            Vec::new()
        }
        _ => {
            app.input = Input::Command(text);
            Vec::new()
        }
    }
}

fn act(app: &mut App, action: Action) -> Vec<Cmd> {
    match action {
        Action::Go(screen) => go(app, screen),
        Action::Command => {
            app.input = Input::Command(String::new());
            Vec::new()
        }
        Action::Filter => {
            match app.screen {
                Screen::Run => app.input = Input::Search(String::new()),
                Screen::Overview => app.say(
                    StatusKind::Info,
                    "the Overview has nothing to filter: / filters the lists (2, 4-9) \
                     and searches the output on the Run screen (3)",
                ),
                _ => app.input = Input::Filter,
            }
            Vec::new()
        }
        Action::Detail => {
            match detail::detail_of(app) {
                Some(of) => app.modal = Some(Modal::Detail { of, scroll: 0 }),
                None => app.say(StatusKind::Info, "nothing is selected to show"),
            }
            Vec::new()
        }
        Action::Copy => match copy::copied_id(app) {
            Some(text) => copy::copy(app, text),
            None => {
                app.say(StatusKind::Info, "nothing is selected to copy");
                Vec::new()
            }
        },
        Action::Wrap => {
            panes::toggle_wrap(app);
            Vec::new()
        }
        Action::Pane => {
            panes::switch(app);
            Vec::new()
        }
        Action::SearchNext | Action::SearchPrev => {
            panes::again(app, action == Action::SearchNext);
            Vec::new()
        }
        Action::Sort(by) => {
            let screen = app.screen;
            let list = app.list_mut(screen);
            list.sort = order::next(list.sort, by);
            let word = order::words(list.sort).map_or("ordered by urgency again".to_owned(), |w| {
                format!("sorted {w}")
            });
            app.say(StatusKind::Info, word);
            app.sync();
            Vec::new()
        }
        Action::Up => move_by(app, -1),
        Action::Down => move_by(app, 1),
        Action::PageUp => move_by(app, -(isize::try_from(app.page()).unwrap_or(1))),
        Action::PageDown => move_by(app, isize::try_from(app.page()).unwrap_or(1)),
        Action::Top => move_by(app, isize::MIN),
        Action::Bottom => move_by(app, isize::MAX),
        Action::Enter => enter(app),
        Action::Back => {
            if !marks::clear(app) && !go_back(app) {
                app.list_mut(app.screen).filter.clear();
            }
            Vec::new()
        }
        Action::Quit => {
            if go_back(app) {
                return Vec::new();
            }
            app.quit = true;
            vec![Cmd::Quit]
        }
        Action::Interrupt => interrupt(app),
        Action::Help => {
            app.modal = Some(Modal::Help { scroll: 0 });
            Vec::new()
        }
        Action::Messages => {
            app.modal = Some(Modal::Messages { scroll: 0 });
            Vec::new()
        }
        Action::Follow => {
            match app.screen {
                Screen::Run => {
                    app.run.follow = !app.run.follow;
                    let word = if app.run.follow {
                        "following the log"
                    } else {
                        "stopped following"
                    };
                    app.say(StatusKind::Info, word);
                }
                Screen::Events => {
                    app.events_follow = !app.events_follow;
                    let word = if app.events_follow {
                        "following new events"
                    } else {
                        "stopped following"
                    };
                    app.say(StatusKind::Info, word);
                }
                _ => {}
            }
            app.sync();
            Vec::new()
        }
        Action::Mark => {
            marks::toggle(app);
            Vec::new()
        }
        Action::MarkAll => {
            marks::toggle_all(app);
            Vec::new()
        }
        Action::Freeze => {
            if app.frozen.take().is_some() {
                app.say(StatusKind::Info, "live again");
            } else {
                app.frozen = Some(Box::new((app.data.clone(), app.run.clone())));
                app.say(
                    StatusKind::Info,
                    "frozen: this display stops here, the engine goes on; space to go live",
                );
            }
            app.sync();
            Vec::new()
        }
        Action::Resync => {
            app.conn.link = Link::Loading;
            app.say(StatusKind::Info, "reading everything from the engine again");
            vec![Cmd::Resync]
        }
        // Changes go through change::start.
        Action::Change(_) => Vec::new(),
    }
}

/// Switches screen (digits, `:name`): a fresh start, so no way back.
fn go(app: &mut App, screen: Screen) -> Vec<Cmd> {
    app.back.clear();
    if screen == Screen::Run && app.run.run_id.is_empty() {
        // The run selected on the Runs screen, if any.
        let selected = app.list(Screen::Runs).key.clone();
        return match selected {
            Some(id) => open_run(app, id),
            None => {
                app.say(
                    StatusKind::Info,
                    "no run is open: pick one on the Runs screen (2) and press enter",
                );
                Vec::new()
            }
        };
    }
    app.screen = screen;
    app.sync();
    Vec::new()
}

fn go_back(app: &mut App) -> bool {
    let Some(back) = app.back.pop() else {
        return false;
    };
    if let Some((screen, filter)) = back.restore_filter {
        app.list_mut(screen).filter = filter;
    }
    app.screen = back.screen;
    app.sync();
    true
}

fn drill(app: &mut App, to: Screen, filter: Option<String>) {
    let restore_filter = filter.map(|f| {
        let old = std::mem::replace(&mut app.list_mut(to).filter, f);
        (to, old)
    });
    app.back.push(Back {
        screen: app.screen,
        restore_filter,
    });
    app.screen = to;
    let list = app.list_mut(to);
    list.selected = 0;
    list.key = None;
    app.sync();
}

fn open_run(app: &mut App, run_id: String) -> Vec<Cmd> {
    if app.screen != Screen::Run {
        app.back.push(Back {
            screen: app.screen,
            restore_filter: None,
        });
    }
    app.screen = Screen::Run;
    if app.run.run_id == run_id {
        return Vec::new();
    }
    app.run = RunView {
        run_id: run_id.clone(),
        follow: true,
        ..RunView::default()
    };
    // The run looked at stays in the model however old it is; the one
    // looked at before goes the way of the others.
    app.data.runs.pin(Some(run_id.clone()));
    let mut cmds = vec![Cmd::FetchTimeline { run_id }];
    cmds.extend(want_output(app));
    cmds.extend(want_run(app));
    cmds
}

fn enter(app: &mut App) -> Vec<Cmd> {
    let Some(key) = app.selected_key().map(str::to_owned) else {
        return Vec::new();
    };
    let data = app.shown().0;
    match app.screen {
        Screen::Runs => open_run(app, key),
        Screen::Approvals => match data.approvals.get(&key).map(|a| a.run_id.clone()) {
            Some(run) => open_run(app, run),
            None => Vec::new(),
        },
        Screen::Leases => match data.leases.get(&key).map(|l| l.run_id.clone()) {
            Some(run) => open_run(app, run),
            None => Vec::new(),
        },
        Screen::Events => {
            let event = key.parse().ok().and_then(|seq| data.event(seq));
            let (run, worker) = event.map_or((String::new(), String::new()), |e| {
                (e.run_id.clone(), e.worker_id.clone())
            });
            if !run.is_empty() {
                open_run(app, run)
            } else if !worker.is_empty() {
                drill(app, Screen::Workers, Some(worker));
                Vec::new()
            } else {
                // Nothing to open: its detail, as `d` shows it.
                if let Ok(seq) = key.parse() {
                    app.modal = Some(Modal::Detail {
                        of: DetailOf::Event(seq),
                        scroll: 0,
                    });
                }
                Vec::new()
            }
        }
        Screen::Workers => {
            drill(app, Screen::Leases, Some(key));
            Vec::new()
        }
        Screen::Schedules => {
            // Its runs: the runs of its run name.
            let name = app.data.schedules.get(&key).map(|s| s.run_name.clone());
            drill(app, Screen::Runs, name);
            Vec::new()
        }
        Screen::Queues | Screen::Quarantines => {
            drill(app, Screen::Runs, Some(key));
            Vec::new()
        }
        Screen::Overview | Screen::Run => Vec::new(),
    }
}

fn move_by(app: &mut App, delta: isize) -> Vec<Cmd> {
    if app.screen == Screen::Run {
        panes::scroll(app, delta);
        return Vec::new();
    }
    if !app.screen.is_list() {
        return Vec::new();
    }
    let len = app.rows.len();
    let screen = app.screen;
    let list = &mut app.lists[screen.index()];
    let to = match delta {
        isize::MIN => 0,
        isize::MAX => len.saturating_sub(1),
        d if d < 0 => list.selected.saturating_sub(d.unsigned_abs()),
        d => list
            .selected
            .saturating_add(d.unsigned_abs())
            .min(len.saturating_sub(1)),
    };
    list.selected = to;
    list.key = app.rows.get(to).cloned();
    if screen == Screen::Events {
        // The newest is at the top: being there is following.
        app.events_follow = to == 0;
    }
    Vec::new()
}
