//! The two bottom lines: the keys that work on this screen (from the
//! keymap, less what the caller's roles do not allow), and the status line — the last action's outcome in words, or
//! the filter / `:` being typed. A message leaves the status line after
//! a while ([`crate::app::STATUS_MS`]); `L` lists the last ones.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Input, Screen, StatusKind};
use crate::keys;
use crate::view::theme::Theme;

/// The keys line: `a approve  x reject  …  ? help`, as many as fit, with
/// help always last so that the rest can be found.
pub fn keys_line(app: &App, theme: &Theme, width: u16) -> Line<'static> {
    let width = usize::from(width);
    let mut spans = Vec::new();
    let mut used = 0;
    let all: Vec<(&str, &str)> = keys::footer(app.screen, &app.conn.roles).collect();
    let help = all.iter().find(|(_, w)| *w == "help").copied();
    let help_width = help.map_or(0, |(k, w)| k.len() + w.len() + 2);
    for (key, word) in all.iter().filter(|(_, w)| *w != "help") {
        let needed = key.chars().count() + word.chars().count() + 3;
        if used + needed + help_width > width {
            break;
        }
        spans.push(Span::styled(format!(" {key}"), theme.key()));
        spans.push(Span::raw(format!(" {word} ")));
        used += needed;
    }
    if let Some((key, word)) = help
        && used + help_width <= width
    {
        spans.push(Span::styled(format!(" {key}"), theme.key()));
        spans.push(Span::raw(format!(" {word}")));
    }
    Line::from(spans)
}

/// The status line: what is being typed, else the last outcome.
pub fn status_line(app: &App, theme: &Theme) -> Line<'static> {
    match &app.input {
        Input::Filter => {
            let filter = &app.list(app.screen).filter;
            return Line::from(vec![
                Span::styled("/", theme.key()),
                Span::raw(filter.clone()),
                Span::styled("█", theme.dim()),
                Span::styled("  enter keeps, esc clears", theme.dim()),
            ]);
        }
        Input::Command(text) => {
            let names: Vec<&str> = Screen::ALL.iter().map(|s| s.name()).collect();
            return Line::from(vec![
                Span::styled(":", theme.key()),
                Span::raw(text.clone()),
                Span::styled("█", theme.dim()),
                Span::styled(
                    format!("  a screen: {}; messages; q quits", names.join(" ")),
                    theme.dim(),
                ),
            ]);
        }
        Input::Normal => {}
    }
    let Some(status) = &app.status else {
        return Line::from(Span::styled(
            "digits switch screens, enter opens, L lists messages, ? every key",
            theme.dim(),
        ));
    };
    let style = match status.kind {
        StatusKind::Info => theme.dim(),
        StatusKind::Pending => theme.warn(),
        StatusKind::Done => theme.good(),
        StatusKind::Refused => theme.bad(),
    };
    Line::from(Span::styled(status.text.clone(), style))
}

/// Both lines, keys above status, in a 2-row area (or just the status in 1).
pub fn render(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let mut rows = super::Rows::new(area);
    let status = rows.take_bottom(1);
    let keys = rows.take_bottom(1);
    Paragraph::new(keys_line(app, theme, keys.width)).render(keys, buf);
    Paragraph::new(status_line(app, theme)).render(status, buf);
}
