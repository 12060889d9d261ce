//! The `?` overlay: every binding of the keymap the caller's roles allow,
//! with where it works, and who the caller is.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use crate::app::App;
use crate::keys::{KEYMAP, offered};
use crate::view::theme::Theme;

/// The help's lines, one per binding offered.
pub fn lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let roles = &app.conn.roles;
    let key_width = KEYMAP.iter().map(|b| b.label.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(KEYMAP.len() + 3);
    for b in offered(roles) {
        out.push(Line::from(vec![
            Span::styled(format!("{:<key_width$}  ", b.label), theme.key()),
            Span::raw(b.what),
            Span::styled(format!("  [{}]", b.screens.describe()), theme.dim()),
        ]));
    }
    out.push(Line::default());
    out.push(Line::from(Span::styled(
        "changes ask for a reason and a confirmation; they are off with --readonly or while disconnected",
        theme.dim(),
    )));
    if !roles.is_empty() {
        out.push(Line::from(Span::styled(
            format!(
                "your roles: {}; changes they do not allow are not listed",
                crate::roles::shown(roles).join(", ")
            ),
            theme.dim(),
        )));
    }
    out
}

pub fn render(app: &App, theme: &Theme, scroll: usize, area: Rect, buf: &mut Buffer) {
    let popup = super::centered(area, 100, area.height.saturating_sub(2).max(3));
    Clear.render(popup, buf);
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(" keys ", theme.heading()),
        Span::styled("j/k scroll, esc closes ", theme.dim()),
    ]));
    let lines = lines(app, theme);
    let scroll = u16::try_from(scroll.min(lines.len().saturating_sub(1))).unwrap_or(0);
    Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0))
        .render(popup, buf);
}
