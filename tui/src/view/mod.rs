//! Rendering: `&App` in, cells out, nothing else. [`Console`] lays out the
//! frame (header, screen tabs, the screen, footer, and any dialog on top)
//! and hands the body to the current screen's view, one file per screen.
//!
//! Nothing here changes the app or does I/O; a view that needs something
//! computed reads it from the app (rows are kept by [`App::sync`]).

pub mod approvals;
pub mod events;
pub mod leases;
pub mod overview;
pub mod quarantines;
pub mod queues;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod theme;
pub mod workers;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Widget, Wrap};

use crate::app::{App, Link, Modal, RunView, Screen};
use crate::model::Data;
use crate::widgets::table::ListTable;
use crate::widgets::{Rows, confirm, detail, footer, header, help, messages, short_id};
use theme::Theme;

/// What every screen's view gets.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub data: &'a Data,
    pub run: &'a RunView,
    pub theme: Theme,
    pub now: i64,
    /// Why nothing is known yet, until the first snapshot.
    pub unknown: Option<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(app: &'a App) -> Self {
        let (data, run) = app.shown();
        Self {
            app,
            data,
            run,
            theme: Theme::new(app.palette),
            now: app.now_ms,
            unknown: app.unknown_words(),
        }
    }

    /// Why what is shown may be out of date, for list titles.
    pub fn stale(&self) -> Option<&'static str> {
        if self.unknown.is_some() {
            // Nothing shown to be out of date.
            None
        } else if self.app.frozen.is_some() {
            Some("frozen")
        } else if self.app.conn.link != Link::Live || self.app.quiet_since().is_some() {
            Some("stale")
        } else {
            None
        }
    }

    /// Whether the terminal is wide enough for full ids and extra columns.
    pub fn wide(area: Rect) -> bool {
        area.width >= 120
    }

    /// How wide an id column is: a whole ULID when there is room, else
    /// its tail.
    pub fn id_width(area: Rect) -> u16 {
        if Self::wide(area) { 26 } else { 9 }
    }

    /// The id cell of a row: its id cut to `width`, and `*` before it
    /// when the row is marked (once any row of the list is).
    pub fn id_cell(&self, screen: Screen, id: &str, width: u16) -> Cell<'static> {
        let marks = &self.app.list(screen).marked;
        let width = usize::from(width);
        if marks.is_empty() {
            return Cell::from(Span::styled(short_id(id, width), self.theme.dim()));
        }
        let short = short_id(id, width.saturating_sub(1));
        if marks.contains(id) {
            Cell::from(Span::styled(format!("*{short}"), self.theme.key()))
        } else {
            Cell::from(Span::styled(format!(" {short}"), self.theme.dim()))
        }
    }

    /// The list of a screen, with its rows, selection, filter and state.
    pub fn list<'t>(
        &'t self,
        screen: Screen,
        title: &'t str,
        header: &'t [&'t str],
        widths: &'t [Constraint],
        empty: &'t str,
    ) -> ListTable<'t> {
        let list = self.app.list(screen);
        ListTable {
            title,
            header,
            widths,
            total: self.app.rows.len(),
            selected: list.selected,
            filter: &list.filter,
            empty,
            elsewhere: None,
            stale: self.stale(),
            unknown: self.unknown.as_deref(),
            alert: None,
            sort: crate::app::order::words(list.sort),
            marked: list.marked.len(),
            theme: &self.theme,
        }
    }
}

/// The smallest terminal the screens fit: below it they would be empty
/// boxes, so one line says what is needed instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// The whole frame.
pub struct Console<'a>(pub &'a App);

impl Widget for Console<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            too_small(area, buf);
            return;
        }
        let ctx = Ctx::new(app);
        let theme = ctx.theme;
        let (head, tabs, foot) = match area.height {
            0..=2 => (0, 0, 0),
            3..=5 => (1, 0, 1),
            _ => (1, 1, 2),
        };
        let mut rows = Rows::new(area);
        header::render(app, &theme, rows.take(head), buf);
        render_tabs(app, &theme, rows.take(tabs), buf);
        footer::render(app, &theme, rows.take_bottom(foot), buf);
        let body = rows.rest();
        match app.screen {
            Screen::Overview => overview::render(&ctx, body, buf),
            Screen::Runs => runs::render(&ctx, body, buf),
            Screen::Run => run::render(&ctx, body, buf),
            Screen::Workers => workers::render(&ctx, body, buf),
            Screen::Queues => queues::render(&ctx, body, buf),
            Screen::Approvals => approvals::render(&ctx, body, buf),
            Screen::Leases => leases::render(&ctx, body, buf),
            Screen::Events => events::render(&ctx, body, buf),
            Screen::Quarantines => quarantines::render(&ctx, body, buf),
            Screen::Schedules => schedules::render(&ctx, body, buf),
        }
        match &app.modal {
            Some(Modal::Confirm(c)) => confirm::render(c, &theme, area, buf),
            Some(Modal::Help { scroll }) => help::render(app, &theme, *scroll, area, buf),
            Some(Modal::Messages { scroll }) => messages::render(app, &theme, *scroll, area, buf),
            Some(Modal::Detail { of, scroll }) => {
                detail::render(ctx.data, of, ctx.now, &theme, *scroll, area, buf)
            }
            None => {}
        }
    }
}

/// "terminal too small (need 60x16, have 40x10)", wrapped when even that
/// line does not fit.
fn too_small(area: Rect, buf: &mut Buffer) {
    let text = format!(
        "terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT}, have {}x{})",
        area.width, area.height
    );
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .render(area, buf);
}

/// The order in which tabs give up their names when the line is too
/// narrow for all of them: the run detail first (it needs a run opened
/// from a list anyway), the overview last.
const TITLES_DROPPED: [Screen; 10] = [
    Screen::Run,
    Screen::Schedules,
    Screen::Quarantines,
    Screen::Events,
    Screen::Leases,
    Screen::Queues,
    Screen::Workers,
    Screen::Approvals,
    Screen::Runs,
    Screen::Overview,
];

/// Which tabs show their name at `width`: as many as fit, the current
/// one always.
pub fn tab_titles(current: Screen, width: usize) -> [bool; 10] {
    let mut titled = [true; 10];
    let index = |s: Screen| Screen::ALL.iter().position(|a| *a == s).unwrap_or(0);
    // " 1 Overview" per tab, one space between tabs.
    let mut used: usize = Screen::ALL
        .iter()
        .map(|s| s.title().len() + 3)
        .sum::<usize>()
        + Screen::ALL.len()
        - 1;
    for s in TITLES_DROPPED {
        if used <= width {
            break;
        }
        if s != current {
            titled[index(s)] = false;
            used -= s.title().len() + 1;
        }
    }
    titled
}

/// `1 Overview 2 Runs …`, the current one highlighted; tabs give up their
/// names (but keep their numbers) in [`TITLES_DROPPED`] order when that
/// does not fit.
fn render_tabs(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    if area.height == 0 {
        return;
    }
    let titled = tab_titles(app.screen, usize::from(area.width));
    let mut spans = Vec::new();
    for (s, titled) in Screen::ALL.into_iter().zip(titled) {
        let current = s == app.screen;
        let text = if titled {
            format!(" {} {}", s.number(), s.title())
        } else {
            format!(" {}", s.number())
        };
        let style = if current {
            theme.selected()
        } else {
            theme.dim()
        };
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// A cell's text for a count that may be zero: "-" reads faster.
pub fn count(n: u64) -> String {
    if n == 0 {
        "-".to_owned()
    } else {
        n.to_string()
    }
}
