//! A line of text being typed, as plain data.

use crossterm::event::{KeyCode, KeyEvent};
use tui_textarea::{CursorMove, TextArea};

/// A line of text being typed: the state of a tui-textarea, kept as plain
/// data so that the model holds no widget. Editing goes through a
/// `TextArea` made for the key press ([`TextField::input`]), so the keys
/// behave as tui-textarea's do (ctrl-a/e, alt-b/f, ctrl-w, ctrl-u, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextField {
    pub lines: Vec<String>,
    /// (row, column) in characters.
    pub cursor: (usize, usize),
}

impl TextField {
    /// The text, as one line.
    pub fn text(&self) -> String {
        self.lines.join(" ").trim().to_owned()
    }

    /// A `TextArea` holding this text with the cursor in place.
    pub fn textarea(&self) -> TextArea<'static> {
        let mut area = TextArea::new(self.lines.clone());
        let row = u16::try_from(self.cursor.0).unwrap_or(u16::MAX);
        let col = u16::try_from(self.cursor.1).unwrap_or(u16::MAX);
        area.move_cursor(CursorMove::Jump(row, col));
        area
    }

    /// Edits with one key. Enter never makes a second line: a reason is
    /// one line, and Enter moves on (the caller handles it).
    pub fn input(&mut self, key: KeyEvent) {
        if matches!(key.code, KeyCode::Enter)
            || (key
                .modifiers
                .contains(crossterm::event::KeyModifiers::CONTROL)
                && matches!(key.code, KeyCode::Char('m' | 'j')))
        {
            return;
        }
        let mut area = self.textarea();
        area.input(key);
        let cursor = area.cursor();
        self.cursor = (cursor.0, cursor.1);
        self.lines = area.into_lines();
    }

    pub fn insert(&mut self, text: &str) {
        let mut area = self.textarea();
        area.insert_str(text);
        let cursor = area.cursor();
        self.cursor = (cursor.0, cursor.1);
        self.lines = area.into_lines();
    }
}
