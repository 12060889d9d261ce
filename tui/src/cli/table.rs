//! Compact aligned tables and key/value blocks, the one text layout every
//! command uses, so that all of them look alike and none pads by hand.
//!
//! Columns are separated by two spaces; the last column is not padded, so
//! a long message never pushes the others off screen. Colour is optional
//! and never counts toward a column's width.

/// How a cell is coloured. Only the 16 basic ANSI colours, so the output
/// reads the same on every terminal that has colour at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Done well: succeeded, online, approved.
    Good,
    /// Needs attention: failed, dead, rejected, offline.
    Bad,
    /// Waiting on someone or something: waiting_approval, draining, paused.
    Warn,
    /// In progress: running, leased.
    Busy,
    /// Not interesting yet or any more: queued, blocked, stopped, "-".
    Dim,
}

impl Tone {
    /// The tone of a state word, whatever resource it belongs to: the words
    /// are shared (`cancelled`, `expired`, …) and mean the same everywhere.
    pub fn of_state(word: &str) -> Self {
        match word {
            "succeeded" | "online" | "approved" | "released" | "active" => Self::Good,
            "failed" | "dead" | "rejected" | "offline" | "expired" | "force_released"
            | "timed_out" | "unknown" => Self::Bad,
            "waiting_approval" | "waiting" | "pending" | "retry_wait" | "draining"
            | "recycling" | "paused" => Self::Warn,
            "running" | "leased" => Self::Busy,
            "queued" | "blocked" | "stopped" | "cancelled" => Self::Dim,
            _ => Self::Plain,
        }
    }

    fn ansi(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::Good => Some("\x1b[32m"),
            Self::Bad => Some("\x1b[31m"),
            Self::Warn => Some("\x1b[33m"),
            Self::Busy => Some("\x1b[36m"),
            Self::Dim => Some("\x1b[2m"),
        }
    }
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";

/// One cell: text made safe for a terminal, and a tone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    text: String,
    tone: Tone,
}

impl Cell {
    pub fn new(text: impl AsRef<str>) -> Self {
        Self::toned(text, Tone::Plain)
    }

    pub fn toned(text: impl AsRef<str>, tone: Tone) -> Self {
        let text = clean(text.as_ref(), ' ');
        // An empty cell would make a column look shifted; "-" says "none".
        if text.is_empty() {
            return Self {
                text: "-".to_owned(),
                tone: Tone::Dim,
            };
        }
        Self { text, tone }
    }

    /// A state word, coloured by what it means.
    pub fn state(word: impl AsRef<str>) -> Self {
        let word = word.as_ref();
        Self::toned(word, Tone::of_state(word))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, in its tone when `color`.
    pub fn paint(&self, color: bool) -> String {
        self.paint_as(self.tone.ansi(), color)
    }

    fn paint_as(&self, style: Option<&str>, color: bool) -> String {
        match style.filter(|_| color) {
            Some(code) => format!("{code}{}{RESET}", self.text),
            None => self.text.clone(),
        }
    }

    fn width(&self) -> usize {
        self.text.chars().count()
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// Rows under a header, every column as wide as its widest cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<Cell>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| Cell::new(*h)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in a newline.
    pub fn render(&self, color: bool) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(Cell::width).collect();
        for row in &self.rows {
            grow(&mut widths, row);
        }
        let mut out = line(&self.header, &widths, color, true);
        for row in &self.rows {
            out.push_str(&line(row, &widths, color, false));
        }
        out
    }
}

/// A table whose rows arrive one at a time (a followed stream) and so are
/// laid out on fixed minimum widths instead of the widest cell; a longer
/// cell widens its column from then on.
#[derive(Debug)]
pub struct StreamTable {
    widths: Vec<usize>,
    color: bool,
}

impl StreamTable {
    /// `columns` pairs each header with the width most of its cells fit in.
    /// Returns the table and its header line.
    pub fn new(columns: &[(&str, usize)], color: bool) -> (Self, String) {
        let header: Vec<Cell> = columns.iter().map(|(h, _)| Cell::new(*h)).collect();
        let mut widths: Vec<usize> = columns.iter().map(|(_, w)| *w).collect();
        grow(&mut widths, &header);
        let first = line(&header, &widths, color, true);
        (Self { widths, color }, first)
    }

    pub fn line(&mut self, row: &[Cell]) -> String {
        grow(&mut self.widths, row);
        line(row, &self.widths, self.color, false)
    }
}

/// A block of `key  value` lines, keys aligned, for one object's details.
#[derive(Debug, Default)]
pub struct Fields {
    rows: Vec<(String, Cell)>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn field(&mut self, key: &str, value: impl Into<Cell>) -> &mut Self {
        self.rows.push((key.to_owned(), value.into()));
        self
    }

    pub fn render(&self, color: bool) -> String {
        let key_width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let widths = [key_width, 0];
        self.rows
            .iter()
            .map(|(k, v)| {
                line(
                    &[Cell::toned(k, Tone::Dim), v.clone()],
                    &widths,
                    color,
                    false,
                )
            })
            .collect()
    }
}

fn grow(widths: &mut Vec<usize>, row: &[Cell]) {
    if widths.len() < row.len() {
        widths.resize(row.len(), 0);
    }
    for (w, cell) in widths.iter_mut().zip(row) {
        *w = (*w).max(cell.width());
    }
}

fn line(row: &[Cell], widths: &[usize], color: bool, header: bool) -> String {
    let mut out = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        let style = if header { Some(BOLD) } else { cell.tone.ansi() };
        out.push_str(&cell.paint_as(style, color));
        if i + 1 < row.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.width())));
        }
    }
    out.push('\n');
    out
}

/// Text from the engine or from a step's output, made safe to print on an
/// operator's terminal: ANSI escape sequences are dropped (a step must not
/// be able to move the cursor or retitle the window of whoever reads its
/// log), and any other control character becomes `replacement`.
pub fn clean(text: &str, replacement: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                // CSI: parameters, then one final byte in '@'..='~'.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c.is_control() {
            out.push(replacement);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["ID", "STATE", "MESSAGE"]);
        t.row(vec!["r1".into(), Cell::state("running"), "started".into()]);
        t.row(vec![
            "run-22".into(),
            Cell::state("waiting_approval"),
            "".into(),
        ]);
        t
    }

    #[test]
    fn table_aligns_columns_and_leaves_the_last_unpadded() {
        assert_eq!(
            sample().render(false),
            "ID      STATE             MESSAGE\n\
             r1      running           started\n\
             run-22  waiting_approval  -\n"
        );
    }

    #[test]
    fn colour_does_not_change_alignment() {
        let coloured = sample().render(true);
        let stripped = clean(&coloured.replace('\n', "\u{1}"), '\n');
        assert_eq!(stripped, sample().render(false));
        assert!(coloured.contains("\x1b[36mrunning\x1b[0m           "));
    }

    #[test]
    fn stream_table_pads_to_minimum_widths_and_grows() {
        let (mut t, header) = StreamTable::new(&[("SEQ", 4), ("KIND", 6), ("MESSAGE", 0)], false);
        assert_eq!(header, "SEQ   KIND    MESSAGE\n");
        assert_eq!(
            t.line(&["1".into(), "a".into(), "x".into()]),
            "1     a       x\n"
        );
        assert_eq!(
            t.line(&["2".into(), "longer.kind".into(), "y".into()]),
            "2     longer.kind  y\n"
        );
        assert_eq!(
            t.line(&["3".into(), "b".into(), "z".into()]),
            "3     b            z\n"
        );
    }

    #[test]
    fn fields_align_keys() {
        let mut f = Fields::new();
        f.field("run", "r1").field("state", Cell::state("failed"));
        assert_eq!(f.render(false), "run    r1\nstate  failed\n");
    }

    #[test]
    fn clean_strips_escapes_and_control_characters() {
        assert_eq!(clean("\x1b[31mred\x1b[0m text", ' '), "red text");
        assert_eq!(clean("a\x1b]0;title\x07b", ' '), "ab");
        assert_eq!(clean("a\x1b]0;title\x1b\\b", ' '), "ab");
        assert_eq!(clean("two\nlines\tand\rcr", ' '), "two lines and cr");
        assert_eq!(Cell::new("line\none").text(), "line one");
    }

    #[test]
    fn state_words_get_the_same_tone_in_every_resource() {
        assert_eq!(Tone::of_state("succeeded"), Tone::Good);
        assert_eq!(Tone::of_state("dead"), Tone::Bad);
        assert_eq!(Tone::of_state("draining"), Tone::Warn);
        assert_eq!(Tone::of_state("cancelled"), Tone::Dim);
    }
}
