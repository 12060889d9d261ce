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

/// The title and lines at `width`, read from the data now: a long value
/// goes on under itself, clear of the names' column.
pub fn lines(
    data: &Data,
    of: &DetailOf,
    now_ms: i64,
    theme: &Theme,
    width: usize,
) -> (String, Vec<Line<'static>>) {
    let room = width.saturating_sub(NAME_WIDTH).max(10);
    match detail_fields(data, of, now_ms) {
        Ok((title, fields)) => {
            let mut lines = Vec::new();
            for f in fields {
                if f.heading {
                    lines.push(Line::from(Span::styled(f.value, theme.heading())));
                    continue;
                }
                for (i, part) in wrap(&f.value, room).into_iter().enumerate() {
                    let name = if i == 0 { f.name.as_str() } else { "" };
                    lines.push(Line::from(vec![
                        Span::styled(format!("{name:<NAME_WIDTH$}"), theme.dim()),
                        Span::raw(part),
                    ]));
                }
            }
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
    let width = usize::from(popup.width.saturating_sub(2));
    let (title, lines) = lines(data, of, now_ms, theme, width);
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

/// `text` in lines of at most `width` characters, broken at spaces where
/// there are some, and within a word longer than a line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        while line.chars().count() + word.len() > width {
            let fits = width - line.chars().count();
            line.extend(word.drain(..fits));
            out.push(std::mem::take(&mut line));
        }
        line.extend(word);
    }
    out.push(line);
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn values_wrap_at_spaces_and_within_a_word_too_long_for_a_line() {
        assert_eq!(
            wrap("a freeze until the tests pass", 12),
            ["a freeze", "until the", "tests pass"]
        );
        assert_eq!(wrap("short", 12), ["short"]);
        assert_eq!(wrap("0123456789ABCDEF", 6), ["012345", "6789AB", "CDEF"]);
        assert_eq!(wrap("", 6), [""]);
    }
}
