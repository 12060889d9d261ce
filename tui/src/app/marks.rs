//! Marked rows: `space` marks the selected row of the Runs or Approvals
//! list, `*` every row the filter shows, and a change key then applies to
//! all of them with one confirmation and one reason. Esc unmarks.

use super::{App, Change, Kind, Screen, StatusKind};

/// The lists whose rows can be marked.
pub const MARKABLE: &[Screen] = &[Screen::Runs, Screen::Approvals];

/// The marked ids of the current list, in list order where they are
/// shown (those filtered out since come last).
pub fn marked(app: &App) -> Vec<String> {
    let marks = &app.list(app.screen).marked;
    if marks.is_empty() || !MARKABLE.contains(&app.screen) {
        return Vec::new();
    }
    let mut ids: Vec<String> = app
        .rows
        .iter()
        .filter(|r| marks.contains(*r))
        .cloned()
        .collect();
    ids.extend(marks.iter().filter(|m| !app.rows.contains(m)).cloned());
    ids
}

/// `space`: marks or unmarks the selected row, and moves down one.
pub fn toggle(app: &mut App) {
    let screen = app.screen;
    let Some(key) = app.selected_key().map(str::to_owned) else {
        app.say(StatusKind::Info, "nothing is selected to mark");
        return;
    };
    let list = app.list_mut(screen);
    if !list.marked.remove(&key) {
        list.marked.insert(key);
    }
    let next = (list.selected + 1).min(app.rows.len().saturating_sub(1));
    let list = &mut app.lists[screen.index()];
    list.selected = next;
    list.key = app.rows.get(next).cloned();
    say_count(app);
}

/// `*`: marks every row shown; when all of them are marked already,
/// unmarks them.
pub fn toggle_all(app: &mut App) {
    let screen = app.screen;
    let rows = app.rows.clone();
    let list = app.list_mut(screen);
    if !rows.is_empty() && rows.iter().all(|r| list.marked.contains(r)) {
        for r in &rows {
            list.marked.remove(r);
        }
    } else {
        list.marked.extend(rows);
    }
    say_count(app);
}

/// Esc: unmarks every row; whether there was any.
pub fn clear(app: &mut App) -> bool {
    let screen = app.screen;
    let list = app.list_mut(screen);
    if list.marked.is_empty() {
        return false;
    }
    list.marked.clear();
    app.say(StatusKind::Info, "unmarked every row");
    true
}

fn say_count(app: &mut App) {
    let n = app.list(app.screen).marked.len();
    let text = match n {
        0 => "no row marked".to_owned(),
        n => format!("{n} marked: a change key applies to all of them (one reason); esc unmarks"),
    };
    app.say(StatusKind::Info, text);
}

/// A change to marked rows went through: they are unmarked.
pub fn done(app: &mut App, change: &Change) {
    if !change.is_many() {
        return;
    }
    let screen = match change.kind {
        Kind::Approve | Kind::Reject => Screen::Approvals,
        _ => Screen::Runs,
    };
    app.list_mut(screen).marked.clear();
}
