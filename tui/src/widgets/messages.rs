//! The `L` overlay: the last status messages, newest first, each with the
//! time of day it was said, so that one gone from the status line (or cut
//! at its end) can still be read whole.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use super::header::clock;
use crate::app::{App, MESSAGES_KEPT, StatusKind};
use crate::view::theme::Theme;

/// One line a message, newest first.
pub fn lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    if app.messages.is_empty() {
        return vec![Line::from(Span::styled("no messages yet", theme.dim()))];
    }
    app.messages
        .iter()
        .rev()
        .map(|m| {
            let style = match m.kind {
                StatusKind::Info => theme.dim(),
                StatusKind::Pending => theme.warn(),
                StatusKind::Done => theme.good(),
                StatusKind::Refused => theme.bad(),
            };
            Line::from(vec![
                Span::styled(format!("{}  ", clock(m.at_ms)), theme.dim()),
                Span::styled(m.text.clone(), style),
            ])
        })
        .collect()
}

pub fn render(app: &App, theme: &Theme, scroll: usize, area: Rect, buf: &mut Buffer) {
    let popup = super::centered(area, 100, area.height.saturating_sub(2).max(3));
    Clear.render(popup, buf);
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(
            format!(" messages (the last {MESSAGES_KEPT}, newest first) "),
            theme.heading(),
        ),
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
