//! Compact aligned tables and key/value blocks, the one text layout every
//! command uses, so that all of them look alike and none pads by hand.
//!
//! Columns are separated by two spaces; the last column is not padded, so
//! a long message never pushes the others off screen. Colour is optional
//! and never counts toward a column's width.

use crate::text::clean;

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

    /// The cell cut to `width` characters, the last of them `…`, when it
    /// is longer.
    pub fn cut(&self, width: usize) -> Self {
        if self.width() <= width {
            return self.clone();
        }
        let mut text: String = self.text.chars().take(width.saturating_sub(1)).collect();
        text.push('…');
        Self {
            text,
            tone: self.tone,
        }
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

/// Rows under a header, every column as wide as its widest cell — or, to
/// fit a terminal, as wide as the terminal leaves it: free-text columns
/// ([`flexible`](Self::flexible)) are cut short with `…`, the widest
/// first, and columns a narrow terminal can do without
/// ([`optional`](Self::optional)) are left out. Ids and states are never
/// cut.
#[derive(Debug)]
pub struct Table {
    header: Vec<Cell>,
    rows: Vec<Vec<Cell>>,
    flexible: Vec<usize>,
    optional: Vec<usize>,
}

/// A cut column keeps at least this many characters while an optional
/// column can be left out instead ...
const COMFORTABLE: usize = 12;
/// ... and at least this many in any case.
const NARROWEST: usize = 4;

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| Cell::new(*h)).collect(),
            rows: Vec::new(),
            flexible: Vec::new(),
            optional: Vec::new(),
        }
    }

    /// Free-text columns, which may be cut short to fit a terminal.
    pub fn flexible(mut self, headers: &[&str]) -> Self {
        self.flexible = self.columns(headers);
        self
    }

    /// Columns left out, in this order, when cutting the flexible ones is
    /// not enough to fit a terminal.
    pub fn optional(mut self, headers: &[&str]) -> Self {
        self.optional = self.columns(headers);
        self
    }

    fn columns(&self, headers: &[&str]) -> Vec<usize> {
        headers
            .iter()
            .filter_map(|h| self.header.iter().position(|c| c.text() == *h))
            .collect()
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in a newline, every cell whole.
    pub fn render(&self, color: bool) -> String {
        self.render_fit(color, None)
    }

    /// The table as lines no wider than `width` where it can be done
    /// (`None`: as wide as its cells).
    pub fn render_fit(&self, color: bool, width: Option<usize>) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(Cell::width).collect();
        for row in &self.rows {
            grow(&mut widths, row);
        }
        let shown = match width {
            Some(width) => fit(&mut widths, &self.flexible, &self.optional, width),
            None => vec![true; widths.len()],
        };
        let pick = |row: &[Cell]| -> (Vec<Cell>, Vec<usize>) {
            row.iter()
                .zip(&widths)
                .zip(&shown)
                .filter(|(_, shown)| **shown)
                .map(|((cell, w), _)| (cell.cut(*w), *w))
                .unzip()
        };
        let (header, shown_widths) = pick(&self.header);
        let mut out = line(&header, &shown_widths, color, true);
        for row in &self.rows {
            out.push_str(&line(&pick(row).0, &shown_widths, color, false));
        }
        out
    }
}

/// The width of `widths` laid out with two spaces between the `shown`.
fn total(widths: &[usize], shown: &[bool]) -> usize {
    let (sum, n) = widths
        .iter()
        .zip(shown)
        .filter(|(_, s)| **s)
        .fold((0usize, 0usize), |(sum, n), (w, _)| (sum + w, n + 1));
    sum + 2 * n.saturating_sub(1)
}

/// Narrows the `flexible` columns, the widest first, down to `least`,
/// until the shown ones fit `width`. Whether they do.
fn narrow(
    widths: &mut [usize],
    shown: &[bool],
    flexible: &[usize],
    least: usize,
    width: usize,
) -> bool {
    while total(widths, shown) > width {
        let widest = flexible
            .iter()
            .filter(|i| shown.get(**i) == Some(&true))
            .max_by_key(|i| widths[**i])
            .copied();
        match widest {
            Some(i) if widths[i] > least => widths[i] -= 1,
            _ => return false,
        }
    }
    true
}

/// Fits columns of `widths` into `width`: cuts flexible columns (to a
/// comfortable width), then leaves optional ones out one by one, then
/// cuts flexible ones to the narrowest. Returns which are shown; `widths`
/// says how wide each is.
fn fit(widths: &mut [usize], flexible: &[usize], optional: &[usize], width: usize) -> Vec<bool> {
    let natural = widths.to_vec();
    for dropped in 0..=optional.len() {
        let mut shown = vec![true; widths.len()];
        for i in &optional[..dropped] {
            shown[*i] = false;
        }
        widths.copy_from_slice(&natural);
        if narrow(widths, &shown, flexible, COMFORTABLE, width) {
            return shown;
        }
    }
    let mut shown = vec![true; widths.len()];
    for i in optional {
        shown[*i] = false;
    }
    widths.copy_from_slice(&natural);
    narrow(widths, &shown, flexible, NARROWEST, width);
    shown
}

/// A table whose rows arrive one at a time (a followed stream) and so are
/// laid out on fixed widths instead of the widest cell. On a terminal
/// (`width` given) it is fitted as a [`Table`] is — optional columns left
/// out, free-text cells cut — and the last column takes what the others
/// leave, so that every line stays aligned and on one line; elsewhere
/// nothing is cut, and a longer cell widens its column from then on.
#[derive(Debug)]
pub struct StreamTable {
    widths: Vec<usize>,
    shown: Vec<bool>,
    flexible: Vec<usize>,
    cut: bool,
    color: bool,
}

/// The width the last column of a fitted stream asks for before the
/// others are cut.
const STREAM_LAST: usize = 40;

impl StreamTable {
    /// `columns` pairs each header with the width its cells fit in;
    /// `flexible` names the free-text columns (the last column is one
    /// anyway) and `optional` those a narrow terminal leaves out, in that
    /// order. Returns the table and its header line.
    pub fn new(
        columns: &[(&str, usize)],
        flexible: &[&str],
        optional: &[&str],
        width: Option<usize>,
        color: bool,
    ) -> (Self, String) {
        let header: Vec<Cell> = columns.iter().map(|(h, _)| Cell::new(*h)).collect();
        let mut widths: Vec<usize> = columns.iter().map(|(_, w)| *w).collect();
        grow(&mut widths, &header);
        let find = |names: &[&str]| -> Vec<usize> {
            names
                .iter()
                .filter_map(|f| columns.iter().position(|(h, _)| h == f))
                .collect()
        };
        let mut flexible = find(flexible);
        let mut shown = vec![true; widths.len()];
        if let Some(width) = width
            && let Some(last) = widths.len().checked_sub(1)
        {
            flexible.push(last);
            widths[last] = widths[last].max(STREAM_LAST);
            shown = fit(&mut widths, &flexible, &find(optional), width);
            // The last column takes whatever room is left.
            widths[last] += width.saturating_sub(total(&widths, &shown));
        }
        let mut table = Self {
            widths,
            shown,
            flexible,
            cut: width.is_some(),
            color,
        };
        let first = table.line_text(&header, true);
        (table, first)
    }

    pub fn line(&mut self, row: &[Cell]) -> String {
        self.line_text(row, false)
    }

    fn line_text(&mut self, row: &[Cell], header: bool) -> String {
        if !self.cut {
            grow(&mut self.widths, row);
            return line(row, &self.widths, self.color, header);
        }
        let (cells, widths): (Vec<Cell>, Vec<usize>) = row
            .iter()
            .enumerate()
            .filter(|(i, _)| self.shown.get(*i) != Some(&false))
            .map(|(i, cell)| {
                let width = self.widths.get(i).copied().unwrap_or(0);
                if self.flexible.contains(&i) {
                    (cell.cut(width), width)
                } else {
                    (cell.clone(), width.max(cell.width()))
                }
            })
            .unzip();
        line(&cells, &widths, self.color, header)
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
        let (mut t, header) = StreamTable::new(
            &[("SEQ", 4), ("KIND", 6), ("MESSAGE", 0)],
            &[],
            &[],
            None,
            false,
        );
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
    fn on_a_terminal_a_stream_stays_aligned_and_within_its_width() {
        let columns = [
            ("SEQ", 3),
            ("AGE", 7),
            ("ACTOR", 6),
            ("KIND", 6),
            ("MESSAGE", 0),
        ];
        let row = |actor: &str, kind: &str, message: &str| -> Vec<Cell> {
            vec![
                "1".into(),
                "now".into(),
                actor.into(),
                kind.into(),
                message.into(),
            ]
        };
        let (mut t, header) = StreamTable::new(&columns, &["ACTOR"], &["AGE"], Some(36), false);
        assert_eq!(header, "SEQ  ACTOR   KIND    MESSAGE\n", "AGE left out");
        let long = t.line(&row(
            "worker:build-1",
            "a",
            "a long message for a narrow terminal",
        ));
        assert_eq!(long, "1    worke…  a       a long message…\n");
        assert_eq!(long.chars().count(), 37, "36 and the newline");
        assert_eq!(t.line(&row("ann", "b", "ok")), "1    ann     b       ok\n");
        let (mut wide, _) = StreamTable::new(&columns, &["ACTOR"], &["AGE"], Some(200), false);
        assert!(
            wide.line(&row("ann", "b", "ok"))
                .starts_with("1    now      ann")
        );
    }

    fn wide() -> Table {
        let mut t = Table::new(&["ID", "NAME", "STATE", "TOKEN", "NOTE"])
            .flexible(&["NAME", "NOTE"])
            .optional(&["TOKEN"]);
        t.row(vec![
            "01HRUN0000000000000000ABCD".into(),
            "deploy-the-payments-api-to-production".into(),
            Cell::state("waiting_approval"),
            "12".into(),
            "waits for an approver of the dba group".into(),
        ]);
        t
    }

    #[test]
    fn a_table_fits_its_terminal_cutting_free_text_first_and_never_ids_or_states() {
        let natural = wide().render(false);
        assert!(natural.lines().any(|l| l.chars().count() > 80), "{natural}");
        for width in [80, 72, 60] {
            let fitted = wide().render_fit(false, Some(width));
            for line in fitted.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            assert!(fitted.contains("01HRUN0000000000000000ABCD"), "{fitted}");
            assert!(fitted.contains("waiting_approval"), "{fitted}");
            assert!(fitted.contains('…'), "{fitted}");
        }
        // Cut to a comfortable width first; then the optional column goes.
        assert!(wide().render_fit(false, Some(100)).contains("TOKEN"));
        assert!(!wide().render_fit(false, Some(60)).contains("TOKEN"));
        // Wide enough: the same as uncut.
        assert_eq!(wide().render_fit(false, Some(500)), natural);
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
