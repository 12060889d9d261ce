//! Styles by meaning. The views ask for "bad" or "selected", never for a
//! colour, so that `NO_COLOR` (bold, dim and reverse only), the 16 ANSI
//! colours and 256 colours are one switch here.

use ratatui::style::{Color, Modifier, Style};

use crate::app::Palette;
use crate::cli::table::Tone;

#[derive(Clone, Copy, Debug)]
pub struct Theme {
    palette: Palette,
}

impl Theme {
    pub fn new(palette: Palette) -> Self {
        Self { palette }
    }

    fn color(&self, c16: Color, c256: u8) -> Option<Color> {
        match self.palette {
            Palette::Mono => None,
            Palette::Ansi16 => Some(c16),
            Palette::Ansi256 => Some(Color::Indexed(c256)),
        }
    }

    fn fg(&self, c16: Color, c256: u8, mono: Modifier) -> Style {
        match self.color(c16, c256) {
            Some(c) => Style::new().fg(c),
            None => Style::new().add_modifier(mono),
        }
    }

    /// The style of a tone (what a state word means).
    pub fn tone(&self, tone: Tone) -> Style {
        match tone {
            Tone::Plain => Style::new(),
            Tone::Good => self.fg(Color::Green, 71, Modifier::empty()),
            Tone::Bad => self.fg(Color::Red, 203, Modifier::BOLD),
            Tone::Warn => self.fg(Color::Yellow, 214, Modifier::BOLD),
            Tone::Busy => self.fg(Color::Cyan, 80, Modifier::empty()),
            Tone::Dim => self.dim(),
        }
    }

    /// A state word's style: `failed` is bad wherever it appears.
    pub fn state(&self, word: &str) -> Style {
        self.tone(Tone::of_state(word))
    }

    pub fn good(&self) -> Style {
        self.tone(Tone::Good)
    }

    pub fn bad(&self) -> Style {
        self.tone(Tone::Bad)
    }

    pub fn warn(&self) -> Style {
        self.tone(Tone::Warn)
    }

    /// Less important text: ids, headings, "-".
    pub fn dim(&self) -> Style {
        match self.color(Color::DarkGray, 245) {
            Some(c) => Style::new().fg(c),
            None => Style::new().add_modifier(Modifier::DIM),
        }
    }

    /// What needs someone now: overdue, stuck, stale.
    pub fn alert(&self) -> Style {
        match self.palette {
            Palette::Mono => Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            _ => self.bad().add_modifier(Modifier::BOLD),
        }
    }

    /// The selected row.
    pub fn selected(&self) -> Style {
        match self.palette {
            Palette::Mono | Palette::Ansi16 => Style::new().add_modifier(Modifier::REVERSED),
            Palette::Ansi256 => Style::new()
                .bg(Color::Indexed(238))
                .add_modifier(Modifier::BOLD),
        }
    }

    /// The header bar.
    pub fn bar(&self) -> Style {
        match self.palette {
            Palette::Mono => Style::new().add_modifier(Modifier::REVERSED),
            Palette::Ansi16 => Style::new().bg(Color::Blue).fg(Color::White),
            Palette::Ansi256 => Style::new().bg(Color::Indexed(24)).fg(Color::Indexed(231)),
        }
    }

    /// A table's column titles.
    pub fn heading(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// A key in the footer or the help.
    pub fn key(&self) -> Style {
        match self.color(Color::Cyan, 80) {
            Some(c) => Style::new().fg(c).add_modifier(Modifier::BOLD),
            None => Style::new().add_modifier(Modifier::BOLD),
        }
    }

    /// A focused button or field.
    pub fn focus(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }

    /// A badge on the header: stands out on the bar.
    pub fn badge(&self) -> Style {
        match self.palette {
            Palette::Mono => Style::new().add_modifier(Modifier::BOLD),
            Palette::Ansi16 => Style::new()
                .bg(Color::Yellow)
                .fg(Color::Black)
                .add_modifier(Modifier::BOLD),
            Palette::Ansi256 => Style::new()
                .bg(Color::Indexed(214))
                .fg(Color::Indexed(16))
                .add_modifier(Modifier::BOLD),
        }
    }

    /// A header badge for what needs someone now (quarantined run
    /// names): the colours of a broken link.
    pub fn alarm(&self) -> Style {
        self.link(false)
    }

    /// The connection state on the header.
    pub fn link(&self, live: bool) -> Style {
        match (self.palette, live) {
            (Palette::Mono, true) => Style::new().add_modifier(Modifier::BOLD),
            (Palette::Mono, false) => {
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            }
            (Palette::Ansi16, true) => Style::new().bg(Color::Green).fg(Color::Black),
            (Palette::Ansi16, false) => Style::new()
                .bg(Color::Red)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD),
            (Palette::Ansi256, true) => Style::new().bg(Color::Indexed(71)).fg(Color::Indexed(16)),
            (Palette::Ansi256, false) => Style::new()
                .bg(Color::Indexed(160))
                .fg(Color::Indexed(231))
                .add_modifier(Modifier::BOLD),
        }
    }

    /// Whether colours are used at all.
    pub fn mono(&self) -> bool {
        self.palette == Palette::Mono
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_means_no_colour_anywhere() {
        let t = Theme::new(Palette::Mono);
        let styles = [
            t.good(),
            t.bad(),
            t.warn(),
            t.dim(),
            t.alert(),
            t.selected(),
            t.bar(),
            t.key(),
            t.badge(),
            t.alarm(),
            t.link(true),
            t.link(false),
            t.tone(Tone::Busy),
        ];
        for s in styles {
            assert_eq!((s.fg, s.bg), (None, None), "{s:?}");
        }
    }

    #[test]
    fn sixteen_colours_use_only_the_ansi_names() {
        let t = Theme::new(Palette::Ansi16);
        for s in [
            t.good(),
            t.bad(),
            t.warn(),
            t.dim(),
            t.bar(),
            t.badge(),
            t.link(false),
        ] {
            for c in [s.fg, s.bg].into_iter().flatten() {
                assert!(!matches!(c, Color::Indexed(_) | Color::Rgb(..)), "{c:?}");
            }
        }
    }
}
