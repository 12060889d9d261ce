//! The two bottom lines: the keys that work on this screen (from the
//! keymap, less the changes this console cannot make on the selected item:
//! read-only, not allowed by the caller's roles, or not applicable to it,
//! see [`App::offers`]), and the status line — the last action's outcome
//! in words, or the filter / `:` / search being typed. A message leaves
//! the status line after a while ([`crate::app::STATUS_MS`]); `L` lists
//! the last ones, whole. One too long for the line is cut between words
//! and says so.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Input, Screen, StatusKind};
use crate::keys::{self, Action};
use crate::view::theme::Theme;

/// The keys line: `a approve  x reject  …  ? help`, as many as fit, with
/// help always last so that the rest can be found.
pub fn keys_line(app: &App, theme: &Theme, width: u16) -> Line<'static> {
    let width = usize::from(width);
    let mut spans = Vec::new();
    let mut used = 0;
    let screen = app.screen;
    let all: Vec<(&str, &str)> = keys::KEYMAP
        .iter()
        .filter(|b| b.screens.includes(screen) && app.offers(b.action))
        .filter_map(|b| {
            let word = match (b.action, screen) {
                // Nothing to filter there (it says so when pressed).
                (Action::Filter, Screen::Overview) => return None,
                (Action::Filter, Screen::Run) => "search",
                _ => b.short?,
            };
            Some((b.label, word))
        })
        .collect();
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

/// The status line: what is being typed, else the last outcome, cut to
/// `width` between words.
pub fn status_line(app: &App, theme: &Theme, width: u16) -> Line<'static> {
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
        Input::Search(text) => {
            return Line::from(vec![
                Span::styled("/", theme.key()),
                Span::raw(text.clone()),
                Span::styled("█", theme.dim()),
                Span::styled(
                    "  search the output: enter looks, n/N next/previous, esc gives up",
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
    Line::from(Span::styled(cut(&status.text, usize::from(width)), style))
}

/// What a cut message ends with: the key that shows it whole.
const MORE: &str = " … (L: all of it)";

/// `text` cut to `width` characters between words, saying where the rest
/// is; whole when it fits.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let room = width.saturating_sub(MORE.chars().count());
    // One more: a word that ends right at the edge stays.
    let head: String = text.chars().take(room + 1).collect();
    // Back to the last space, unless that would leave little.
    let head = match head.rfind(' ') {
        Some(at) if at >= room / 2 => &head[..at],
        _ => &head[..head.char_indices().nth(room).map_or(head.len(), |(i, _)| i)],
    };
    let mut out = head.trim_end().to_owned();
    out.push_str(MORE);
    out.chars().take(width).collect()
}

/// Both lines, keys above status, in a 2-row area (or just the status in 1).
pub fn render(app: &App, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let mut rows = super::Rows::new(area);
    let status = rows.take_bottom(1);
    let keys = rows.take_bottom(1);
    Paragraph::new(keys_line(app, theme, keys.width)).render(keys, buf);
    Paragraph::new(status_line(app, theme, status.width)).render(status, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_between_words_and_says_where_the_rest_is() {
        let text = "refused: FAILED_PRECONDITION: run deploy-web is already cancelled";
        let cut_text = cut(text, 50);
        assert_eq!(
            cut_text,
            "refused: FAILED_PRECONDITION: run … (L: all of it)"
        );
        assert!(cut_text.chars().count() <= 50);
        assert_eq!(cut("short", 50), "short");
        assert!(cut(text, 5).chars().count() <= 5);
    }
}
