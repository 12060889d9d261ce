//! Where a command's answer goes: a table for a person, or exactly one JSON
//! document for a script (JSON Lines for a followed stream).

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use super::error::CliError;
use super::table::Table;
use crate::text::time::{Clock, TimeStyle, now_ms};

/// `--output`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned tables for a person.
    #[default]
    Text,
    /// One JSON document on stdout (JSON Lines with `events --follow`).
    Json,
}

/// Writes a command's answer to stdout, and notes to stderr.
#[derive(Debug)]
pub struct Printer {
    format: Format,
    color: bool,
    /// Whether stdout is a terminal (a person reads it).
    tty: bool,
    /// The terminal's columns, which tables fit in; `None` when stdout is
    /// not a terminal: a file or a pipe gets every cell whole.
    width: Option<usize>,
    time: TimeStyle,
}

impl Printer {
    /// A printer for this process's stdout, coloured and fitted to the
    /// terminal only when a person is looking at it. Times are relative on
    /// a terminal and absolute elsewhere, unless `time` says.
    pub fn new(format: Format, time: Option<TimeStyle>) -> Self {
        let tty = io::stdout().is_terminal();
        let color = format == Format::Text
            && use_color(
                std::env::var_os("NO_COLOR").as_deref(),
                std::env::var_os("TERM").as_deref(),
                tty,
            );
        let width = tty.then(terminal_width).flatten();
        let time = time.unwrap_or(if tty {
            TimeStyle::Relative
        } else {
            TimeStyle::Absolute
        });
        Self {
            format,
            color,
            tty,
            width,
            time,
        }
    }

    /// How times are written, as of now: call it for each line of a
    /// followed stream, so that its ages are those of the moment it is
    /// printed.
    pub fn clock(&self) -> Clock {
        Clock {
            now_ms: now_ms(),
            style: self.time,
        }
    }

    /// The terminal's width, when tables are fitted to one.
    pub fn width(&self) -> Option<usize> {
        self.width
    }

    /// A line that helps a person go on (the next page, say): on stdout
    /// under the answer when a person reads it there, else on stderr, so
    /// that a script's stdout holds only the answer.
    pub fn hint(&self, text: &str) -> Result<(), CliError> {
        if self.tty && !self.json() {
            self.text(&format!("{text}\n"))
        } else {
            note(text);
            Ok(())
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    pub fn color(&self) -> bool {
        self.color
    }

    /// Text as it is; the caller ends its lines.
    pub fn text(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        // Flushed at once: a followed stream must show each line when it
        // happens, not when a buffer fills.
        out.flush()?;
        Ok(())
    }

    /// One pretty JSON document, in the CLI's shape ([`super::json`]).
    pub fn document<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let value = super::json::shape(serde_json::to_value(value).map_err(io::Error::other)?);
        let text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
        let mut text = escape_c1(text);
        text.push('\n');
        self.text(&text)
    }

    /// One JSON Lines record, in the CLI's shape.
    pub fn record<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let value = super::json::shape(serde_json::to_value(value).map_err(io::Error::other)?);
        let text = serde_json::to_string(&value).map_err(io::Error::other)?;
        let mut text = escape_c1(text);
        text.push('\n');
        self.text(&text)
    }

    /// A list: a JSON array, or a table (a note on stderr when it is empty,
    /// so that stdout holds only the table).
    pub fn list<T: Serialize>(
        &self,
        items: &[T],
        none: &str,
        table: impl FnOnce(&[T]) -> Table,
    ) -> Result<(), CliError> {
        if self.json() {
            return self.document(items);
        }
        let table = table(items);
        if table.is_empty() {
            note(none);
            return Ok(());
        }
        self.text(&table.render_fit(self.color, self.width))
    }

    /// One object a change returned: the object in JSON, or its row of the
    /// resource's usual table.
    pub fn one<T: Serialize>(
        &self,
        item: &T,
        table: impl FnOnce(&[T]) -> Table,
    ) -> Result<(), CliError> {
        if self.json() {
            return self.document(item);
        }
        self.text(&table(std::slice::from_ref(item)).render_fit(self.color, self.width))
    }
}

/// JSON from serde_json with the C1 controls (U+0080–U+009F) and the line
/// and paragraph separators (U+2028, U+2029) written as `\u009b` escapes.
/// serde_json escapes only C0; a C1 control is as live as ESC in many
/// terminals (U+009B is CSI), and steps' output and clients' strings reach
/// this JSON, which people do look at with `cat` or `less -R`.
///
/// Done on the finished text, safely: outside strings serde_json writes
/// ASCII only, so every such character is inside a string, where its
/// `\uXXXX` escape means the same character to every JSON reader; an
/// escape serde wrote (`\\`, `\u001b`) is ASCII and left alone.
pub fn escape_c1(json: String) -> String {
    let escape = |c: char| matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}');
    if !json.contains(escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escape(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The terminal's columns: `COLUMNS` when set (as shells export it), else
/// what the terminal says.
fn terminal_width() -> Option<usize> {
    let columns = std::env::var("COLUMNS").ok();
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
        .or_else(|| {
            crossterm::terminal::size()
                .ok()
                .map(|(c, _)| usize::from(c))
        })
        .filter(|c| *c > 0)
}

/// A line on stderr: progress and warnings, never part of the answer.
pub fn note(text: &str) {
    // Nothing useful can be done when stderr itself is gone.
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Colour only for a terminal, and never when NO_COLOR is set to anything
/// (no-color.org) or the terminal says it cannot show it.
pub fn use_color(no_color: Option<&OsStr>, term: Option<&OsStr>, is_tty: bool) -> bool {
    is_tty && no_color.is_none_or(OsStr::is_empty) && term.is_none_or(|t| t != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_c1_controls_and_line_separators() {
        #[derive(Serialize)]
        struct Out<'a> {
            text: &'a str,
        }
        let value = Out {
            text: "csi \u{9b}31m nel \u{85} esc \u{1b} back\\slash \u{2028}\u{2029} é ✓",
        };
        for json in [
            escape_c1(serde_json::to_string(&value).unwrap()),
            escape_c1(serde_json::to_string_pretty(&value).unwrap()),
        ] {
            assert!(
                !json.contains(['\u{9b}', '\u{85}', '\u{1b}', '\u{2028}']),
                "{json:?}"
            );
            assert!(
                json.contains(r"csi \u009b31m nel \u0085 esc \u001b"),
                "{json}"
            );
            assert!(json.contains(r"back\\slash \u2028\u2029 é ✓"), "{json}");
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back["text"], value.text, "the same text to a JSON reader");
        }
        let plain = r#"{"text":"ok"}"#.to_owned();
        assert_eq!(escape_c1(plain.clone()), plain);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert!(use_color(None, s("xterm-256color"), true));
        assert!(!use_color(None, s("xterm"), false));
        assert!(!use_color(s("1"), s("xterm"), true));
        assert!(use_color(s(""), None, true));
        assert!(!use_color(None, s("dumb"), true));
    }
}
