//! The Run screen's two panes that scroll: the timeline of the run's
//! events and the output. Tab moves the focus between them and the scroll
//! keys move the one in focus; `/` searches the output (`n` / `N` step
//! through the lines that match) and `w` wraps its long lines.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Cmd, Input, LogLine, Pane, StatusKind};

/// Tab: the other pane.
pub(super) fn switch(app: &mut App) {
    app.run.pane = match app.run.pane {
        Pane::Timeline => Pane::Output,
        Pane::Output => Pane::Timeline,
    };
    let word = match app.run.pane {
        Pane::Timeline => "the timeline has the focus: j/k scroll it, tab goes to the output",
        Pane::Output => "the output has the focus: j/k scroll it, tab goes to the timeline",
    };
    app.say(StatusKind::Info, word);
}

/// Scrolls the pane in focus by `delta` lines (`isize::MIN`: the top,
/// `isize::MAX`: the newest, kept in view).
pub(super) fn scroll(app: &mut App, delta: isize) {
    match app.run.pane {
        Pane::Output => scroll_log(app, delta),
        Pane::Timeline => scroll_timeline(app, delta),
    }
}

fn scroll_log(app: &mut App, delta: isize) {
    let rows = app.log_rows();
    let max = app.run.log.len().saturating_sub(rows);
    let run = &mut app.run;
    match delta {
        isize::MIN => {
            run.follow = false;
            run.scroll = 0;
        }
        isize::MAX => run.follow = true,
        d => {
            let from = if run.follow { max } else { run.scroll.min(max) };
            let to = step(from, d, max);
            run.follow = to >= max && d > 0;
            run.scroll = to;
        }
    }
}

fn scroll_timeline(app: &mut App, delta: isize) {
    // Counted back from the newest, so that no pane height is needed
    // here; an event that arrives meanwhile counts one more (`on_conn`),
    // so that what is being read stays put.
    let max = app.run.timeline.len().saturating_sub(1);
    let run = &mut app.run;
    run.timeline_back = match delta {
        isize::MIN => max,
        isize::MAX => 0,
        d if d < 0 => run.timeline_back.saturating_add(d.unsigned_abs()).min(max),
        d => run.timeline_back.saturating_sub(d.unsigned_abs()),
    };
}

fn step(from: usize, delta: isize, max: usize) -> usize {
    if delta < 0 {
        from.saturating_sub(delta.unsigned_abs())
    } else {
        from.saturating_add(delta.unsigned_abs()).min(max)
    }
}

/// `w`: wrap the output's long lines, or cut them again.
pub(super) fn toggle_wrap(app: &mut App) {
    app.wrap_log = !app.wrap_log;
    let word = if app.wrap_log {
        "output lines wrap: w cuts them at the edge again"
    } else {
        "output lines are cut at the edge: w wraps them"
    };
    app.say(StatusKind::Info, word);
}

/// A key while `/` is typing the search on the Run screen: every
/// character is text (none is a hotkey); enter looks, esc gives up.
pub(super) fn on_search_key(app: &mut App, mut text: String, key: KeyEvent) -> Vec<Cmd> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Esc => {}
        KeyCode::Enter => {
            let text = text.trim().to_owned();
            if !text.is_empty() {
                app.run.search = text;
                app.run.pane = Pane::Output;
                // A new search looks from the top, as a reader expects
                // "line 5" to find line 5; n and N go on from there.
                look(app, 0, true);
            }
        }
        KeyCode::Backspace => {
            text.pop();
            app.input = Input::Search(text);
        }
        KeyCode::Char('u') if ctrl => app.input = Input::Search(String::new()),
        KeyCode::Char(c) if !ctrl => {
            text.push(c);
            app.input = Input::Search(text);
        }
        _ => app.input = Input::Search(text),
    }
    Vec::new()
}

/// `n` / `N`: the next or previous line that matches.
pub(super) fn again(app: &mut App, forward: bool) {
    if app.run.search.is_empty() {
        app.say(
            StatusKind::Info,
            "nothing to look for yet: / types what to search the output for",
        );
        return;
    }
    let from = match (app.run.hit, forward) {
        (Some(h), true) => h + 1,
        (Some(h), false) => h + app.run.log.len().max(1) - 1,
        (None, _) => first_shown(app),
    };
    look(app, from, forward);
}

/// The first output line in view now.
fn first_shown(app: &App) -> usize {
    let max = app.run.log.len().saturating_sub(app.log_rows());
    if app.run.follow {
        max
    } else {
        app.run.scroll.min(max)
    }
}

fn look(app: &mut App, from: usize, forward: bool) {
    let text = app.run.search.clone();
    match find(&app.run.log, &text, from, forward) {
        Some(at) => {
            app.run.hit = Some(at);
            app.run.follow = false;
            // A few lines of context above the line found.
            app.run.scroll = at.saturating_sub(2);
            let n = matches(&app.run.log, &text);
            app.say(
                StatusKind::Info,
                format!(
                    "/{text}: line {} of {}, {n} matching; n next, N previous",
                    at + 1,
                    app.run.log.len()
                ),
            );
        }
        None => {
            app.run.hit = None;
            app.say(
                StatusKind::Refused,
                format!("/{text}: no line of the output shown here matches"),
            );
        }
    }
}

/// Whether a line matches the search: case does not matter.
pub fn line_matches(line: &LogLine, text: &str) -> bool {
    !text.is_empty() && line.text.to_lowercase().contains(&text.to_lowercase())
}

fn matches(log: &[LogLine], text: &str) -> usize {
    log.iter().filter(|l| line_matches(l, text)).count()
}

/// The first line from `from` (wrapping around the end) that matches,
/// going forward or backward.
pub fn find(log: &[LogLine], text: &str, from: usize, forward: bool) -> Option<usize> {
    let n = log.len();
    if n == 0 || text.is_empty() {
        return None;
    }
    (0..n)
        .map(|i| {
            if forward {
                (from + i) % n
            } else {
                (from % n + n - i) % n
            }
        })
        .find(|&i| line_matches(&log[i], text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<LogLine> {
        lines
            .iter()
            .map(|t| LogLine {
                step_index: 0,
                attempt: 1,
                stderr: false,
                heading: false,
                text: (*t).to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_search_wraps_around_both_ways_and_ignores_case() {
        let log = log(&["a", "Line 5", "b", "line 5 again"]);
        assert_eq!(find(&log, "line 5", 0, true), Some(1));
        assert_eq!(find(&log, "line 5", 2, true), Some(3));
        assert_eq!(find(&log, "line 5", 4, true), Some(1));
        assert_eq!(find(&log, "line 5", 0, false), Some(3));
        assert_eq!(find(&log, "line 5", 2, false), Some(1));
        assert_eq!(find(&log, "nope", 0, true), None);
        assert_eq!(find(&[], "x", 0, true), None);
    }
}
