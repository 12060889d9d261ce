//! The confirmation dialog: what the change will do, in words; the lease
//! id to type for a force-release; the reason, in a tui-textarea; and
//! Cancel / OK, focus starting on Cancel.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use crate::app::{Confirm, Focus, ID_PART_MIN, TextField};
use crate::view::theme::Theme;

use super::{Rows, centered};

fn field(
    theme: &Theme,
    value: &TextField,
    title: &str,
    placeholder: &str,
    focused: bool,
    area: Rect,
    buf: &mut Buffer,
) {
    let mut area_widget = value.textarea();
    let border = if focused { theme.key() } else { theme.dim() };
    area_widget.set_block(
        Block::bordered()
            .border_style(border)
            .title(Span::styled(format!(" {title} "), border)),
    );
    area_widget.set_cursor_line_style(Style::new());
    area_widget.set_cursor_style(if focused { theme.focus() } else { Style::new() });
    area_widget.set_placeholder_text(placeholder);
    area_widget.set_placeholder_style(theme.dim());
    (&area_widget).render(area, buf);
}

fn button(theme: &Theme, label: &str, focused: bool) -> Span<'static> {
    let style = if focused { theme.focus() } else { Style::new() };
    Span::styled(format!("[ {label} ]"), style)
}

pub fn render(c: &Confirm, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let width = area.width.min(76);
    let inner_width = usize::from(width.saturating_sub(2)).max(1);
    // Each line wraps; count what it takes.
    let text_rows: usize = c
        .lines
        .iter()
        .map(|l| l.chars().count().div_ceil(inner_width).max(1))
        .sum();
    let fields = if c.type_to_confirm.is_some() { 6 } else { 3 };
    let extra = usize::from(c.fail.is_some())
        + usize::from(c.error.is_some())
        + c.gone
            .as_ref()
            .map_or(0, |g| g.chars().count().div_ceil(inner_width));
    let height = u16::try_from(text_rows + 1 + fields + extra + 1 + 2).unwrap_or(u16::MAX);
    let popup = centered(area, width, height);
    Clear.render(popup, buf);
    let block = Block::bordered()
        .border_style(theme.warn())
        .title(Span::styled(format!(" {} ", c.title), theme.heading()));
    let inner = block.inner(popup);
    block.render(popup, buf);
    if inner.width == 0 || inner.height == 0 {
        return;
    }
    let mut rows = Rows::new(inner);
    let buttons = rows.take_bottom(1);
    let text = rows.take(u16::try_from(text_rows).unwrap_or(u16::MAX));
    let lines: Vec<Line> = c.lines.iter().map(|l| Line::raw(l.clone())).collect();
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(text, buf);
    rows.take(1);
    if let Some(id) = &c.type_to_confirm {
        let placeholder = format!("type {id}, or its last {ID_PART_MIN}+ characters");
        field(
            theme,
            &c.typed,
            "lease id",
            &placeholder,
            c.focus == Focus::Id,
            rows.take(3),
            buf,
        );
    }
    field(
        theme,
        &c.reason,
        "reason",
        "why? it is recorded with your name",
        c.focus == Focus::Reason,
        rows.take(3),
        buf,
    );
    if let Some(fail) = c.fail {
        let mark = if fail { "[x]" } else { "[ ]" };
        let style = if c.focus == Focus::Fail {
            theme.focus()
        } else {
            Style::new()
        };
        let line = Line::from(vec![
            Span::styled(
                format!("{mark} fail the step instead of requeueing it"),
                style,
            ),
            Span::styled("  (space toggles)", theme.dim()),
        ]);
        Paragraph::new(line).render(rows.take(1), buf);
    }
    if let Some(error) = &c.error {
        Paragraph::new(Span::styled(error.clone(), theme.bad())).render(rows.take(1), buf);
    }
    if let Some(gone) = &c.gone {
        let height = gone.chars().count().div_ceil(inner_width);
        Paragraph::new(Span::styled(gone.clone(), theme.warn()))
            .wrap(Wrap { trim: false })
            .render(rows.take(u16::try_from(height).unwrap_or(1)), buf);
    }
    // A change that no longer applies sends nothing: OK says so.
    let ok = if c.gone.is_some() {
        "OK: close, nothing to send".to_owned()
    } else {
        format!("OK: {}", c.change.verb())
    };
    let line = Line::from(vec![
        button(theme, "Cancel", c.focus == Focus::Cancel),
        Span::raw("  "),
        button(theme, &ok, c.focus == Focus::Ok),
        Span::styled("  tab moves, enter presses, esc cancels", theme.dim()),
    ]);
    Paragraph::new(line).render(buttons, buf);
}
