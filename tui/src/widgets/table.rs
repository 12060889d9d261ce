//! A list as a bordered table: a title with the count and the filter, the
//! column titles, and a window of rows that keeps the selection in view.
//! Only the rows in the window are built, so a list of 10,000 runs costs
//! what its 50 visible rows cost.

use std::ops::Range;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap};

use crate::view::theme::Theme;

/// The first row to show so that `selected` is in a window of `height`
/// rows: it stays mid-window once the list scrolls. A pure function of
/// its inputs, so the view needs no scroll state.
pub fn window(total: usize, selected: usize, height: usize) -> usize {
    if total <= height || height == 0 {
        return 0;
    }
    selected.saturating_sub(height / 2).min(total - height)
}

/// How to draw one list.
pub struct ListTable<'a> {
    pub title: &'a str,
    pub header: &'a [&'a str],
    pub widths: &'a [Constraint],
    /// Rows after filtering.
    pub total: usize,
    pub selected: usize,
    pub filter: &'a str,
    /// What an empty list says.
    pub empty: &'a str,
    /// Where else to look when the filter matches nothing here (the Runs
    /// screen holds only the most recently finished runs).
    pub elsewhere: Option<&'a str>,
    /// Mark the data as possibly out of date (disconnected, frozen).
    pub stale: Option<&'a str>,
    /// Nothing is known yet (never connected): why, said instead of the
    /// rows, and the count is "?".
    pub unknown: Option<&'a str>,
    /// What needs someone, after the count: "(1 STUCK)".
    pub alert: Option<String>,
    /// The order chosen with a sort key ("by name"); `None`: the default.
    pub sort: Option<String>,
    /// How many rows are marked (`space`, `*`).
    pub marked: usize,
    pub theme: &'a Theme,
}

impl ListTable<'_> {
    /// Draws the list; `rows` builds the rows of a range of the list.
    pub fn render<'r>(
        self,
        area: Rect,
        buf: &mut Buffer,
        rows: impl FnOnce(Range<usize>) -> Vec<Row<'r>>,
    ) {
        let t = self.theme;
        let mut title = vec![Span::styled(format!(" {} ", self.title), t.heading())];
        match self.unknown {
            Some(_) => title.push(Span::styled("? ", t.warn())),
            // Where the selection is, so that a long list says how much
            // is above and below the window: "12/340".
            None if self.total > 0 => title.push(Span::raw(format!(
                "{}/{} ",
                self.selected.min(self.total - 1) + 1,
                self.total
            ))),
            None => title.push(Span::raw("0 ")),
        }
        if let Some(alert) = &self.alert {
            title.push(Span::styled(alert.clone(), t.alert()));
            title.push(Span::raw(" "));
        }
        if self.marked > 0 {
            title.push(Span::styled(format!("{} marked ", self.marked), t.key()));
        }
        if !self.filter.is_empty() {
            title.push(Span::styled(format!("/{} ", self.filter), t.key()));
        }
        if let Some(sort) = &self.sort {
            title.push(Span::styled(format!("{sort} "), t.dim()));
        }
        if let Some(stale) = self.stale {
            title.push(Span::styled(format!("{stale} "), t.warn()));
        }
        let mut block = Block::bordered().title(Line::from(title));
        if self.stale.is_some() {
            block = block.border_style(t.dim());
        }
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.width == 0 || inner.height == 0 {
            return;
        }
        if let Some(why) = self.unknown {
            Paragraph::new(why)
                .style(t.warn())
                .wrap(Wrap { trim: false })
                .render(inner, buf);
            return;
        }
        if self.total == 0 {
            let text = if self.filter.is_empty() {
                self.empty.to_owned()
            } else {
                let mut text = format!(
                    "nothing matches /{} (esc on the filter clears it)",
                    self.filter
                );
                if let Some(elsewhere) = self.elsewhere {
                    text.push_str("; ");
                    text.push_str(elsewhere);
                }
                text
            };
            Paragraph::new(text).style(t.dim()).render(inner, buf);
            return;
        }
        let height = usize::from(inner.height.saturating_sub(1));
        let offset = window(self.total, self.selected, height);
        let end = (offset + height).min(self.total);
        let header = Row::new(self.header.iter().copied()).style(t.heading());
        let table = Table::new(rows(offset..end), self.widths.iter().copied())
            .header(header)
            .column_spacing(1)
            .row_highlight_style(t.selected());
        let mut state = TableState::default().with_selected(self.selected.checked_sub(offset));
        StatefulWidget::render(table, inner, buf, &mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_selection_in_view() {
        assert_eq!(window(5, 4, 10), 0);
        assert_eq!(window(100, 0, 10), 0);
        assert_eq!(window(100, 4, 10), 0);
        assert_eq!(window(100, 50, 10), 45);
        assert_eq!(window(100, 99, 10), 90);
        assert_eq!(window(100, 99, 0), 0);
        for selected in 0..100 {
            let at = window(100, selected, 7);
            assert!((at..at + 7).contains(&selected));
        }
    }
}
