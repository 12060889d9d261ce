//! The `?` overlay: every binding of the keymap, with where it works.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use crate::keys::KEYMAP;
use crate::view::theme::Theme;

/// The help's lines, one per binding.
pub fn lines(theme: &Theme) -> Vec<Line<'static>> {
    let key_width = KEYMAP.iter().map(|b| b.label.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(KEYMAP.len() + 2);
    for b in KEYMAP {
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
    out
}

pub fn render(theme: &Theme, scroll: usize, area: Rect, buf: &mut Buffer) {
    let popup = super::centered(area, 100, area.height.saturating_sub(2).max(3));
    Clear.render(popup, buf);
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(" keys ", theme.heading()),
        Span::styled("j/k scroll, esc closes ", theme.dim()),
    ]));
    let lines = lines(theme);
    let scroll = u16::try_from(scroll.min(lines.len().saturating_sub(1))).unwrap_or(0);
    Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0))
        .render(popup, buf);
}
