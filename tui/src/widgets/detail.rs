//! The `d` overlay: every field of one item, names in a column, values
//! wrapped rather than cut, scrolled with j/k.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use crate::app::{DetailOf, detail_fields};
use crate::model::Data;
use crate::view::theme::Theme;

/// The width of the names' column.
const NAME_WIDTH: usize = 13;

/// The title and lines, read from the data now.
pub fn lines(
    data: &Data,
    of: &DetailOf,
    now_ms: i64,
    theme: &Theme,
) -> (String, Vec<Line<'static>>) {
    match detail_fields(data, of, now_ms) {
        Ok((title, fields)) => {
            let lines = fields
                .into_iter()
                .map(|f| {
                    if f.heading {
                        Line::from(Span::styled(f.value, theme.heading()))
                    } else {
                        Line::from(vec![
                            Span::styled(format!("{:<NAME_WIDTH$}", f.name), theme.dim()),
                            Span::raw(f.value),
                        ])
                    }
                })
                .collect();
            (title, lines)
        }
        Err(why) => (
            "gone".to_owned(),
            vec![Line::from(Span::styled(why, theme.warn()))],
        ),
    }
}

pub fn render(
    data: &Data,
    of: &DetailOf,
    now_ms: i64,
    theme: &Theme,
    scroll: usize,
    area: Rect,
    buf: &mut Buffer,
) {
    let popup = super::centered(area, 100, area.height.saturating_sub(2).max(3));
    Clear.render(popup, buf);
    let (title, lines) = lines(data, of, now_ms, theme);
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(format!(" {title} "), theme.heading()),
        Span::styled("j/k scroll, y copies the id, esc closes ", theme.dim()),
    ]));
    let scroll = u16::try_from(scroll.min(lines.len().saturating_sub(1))).unwrap_or(0);
    Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0))
        .render(popup, buf);
}
