//! Pieces the screens are made of. Each renders from plain data and a
//! [`Theme`](crate::view::theme::Theme), with no state of its own.
//!
//! - [`table`]: a list with a selection, a filter note and a window that
//!   keeps the selection in view, building only the rows it shows.
//! - [`sparkline`]: a depth history as one line of block characters.
//! - [`confirm`]: the confirmation dialog, with tui-textarea fields.
//! - [`help`]: every key, from the keymap.
//! - [`messages`]: the last status messages, with their times.
//! - [`detail`]: every field of one item, times absolute and relative.
//! - [`header`], [`footer`]: the bars above and below.

pub mod confirm;
pub mod detail;
pub mod footer;
pub mod header;
pub mod help;
pub mod messages;
pub mod sparkline;
pub mod table;

use ratatui::layout::Rect;

/// A rectangle of at most `width`×`height` in the middle of `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// Cuts rows off the top of `area`, for widgets laid out one under the
/// other that must give up gracefully when the terminal is small: a piece
/// that does not fit gets an empty rectangle.
pub struct Rows {
    area: Rect,
}

impl Rows {
    pub fn new(area: Rect) -> Self {
        Self { area }
    }

    pub fn take(&mut self, height: u16) -> Rect {
        let height = height.min(self.area.height);
        let taken = Rect {
            height,
            ..self.area
        };
        self.area.y += height;
        self.area.height -= height;
        taken
    }

    /// Rows from the bottom.
    pub fn take_bottom(&mut self, height: u16) -> Rect {
        let height = height.min(self.area.height);
        self.area.height -= height;
        Rect {
            y: self.area.y + self.area.height,
            height,
            ..self.area
        }
    }

    pub fn rest(&self) -> Rect {
        self.area
    }

    pub fn left(&self) -> u16 {
        self.area.height
    }
}

/// Text cut to `width` characters, with "…" when it was longer.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// A long id (a ULID) as its last characters, which tell ids made in the
/// same second apart: "…K3M9QZ".
pub fn short_id(id: &str, width: usize) -> String {
    let n = id.chars().count();
    if n <= width {
        return id.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = id.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_hand_out_what_is_left_and_then_nothing() {
        let mut rows = Rows::new(Rect::new(0, 0, 10, 3));
        assert_eq!(rows.take(2), Rect::new(0, 0, 10, 2));
        assert_eq!(rows.take_bottom(5), Rect::new(0, 2, 10, 1));
        assert_eq!(rows.take(1).height, 0);
    }

    #[test]
    fn text_is_cut_with_an_ellipsis_and_ids_keep_their_tail() {
        assert_eq!(fit("deploy-api", 6), "deplo…");
        assert_eq!(fit("api", 6), "api");
        assert_eq!(fit("api", 0), "");
        assert_eq!(short_id("01J8ZK3M9QZABCDEF", 7), "…ABCDEF");
        assert_eq!(
            centered(Rect::new(0, 0, 10, 4), 20, 2),
            Rect::new(0, 1, 10, 2)
        );
    }
}
