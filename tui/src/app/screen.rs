//! The screens, in the order of their digits, and the colours the
//! terminal can show.

/// The screens, in the order of their digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Screen {
    Overview,
    Runs,
    Run,
    Workers,
    Queues,
    Approvals,
    Leases,
    Events,
    Quarantines,
    Schedules,
}

impl Screen {
    pub const ALL: [Screen; 10] = [
        Self::Overview,
        Self::Runs,
        Self::Run,
        Self::Workers,
        Self::Queues,
        Self::Approvals,
        Self::Leases,
        Self::Events,
        Self::Quarantines,
        Self::Schedules,
    ];

    /// The name `:` takes, and the help uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Overview => "overview",
            Self::Runs => "runs",
            Self::Run => "run",
            Self::Workers => "workers",
            Self::Queues => "queues",
            Self::Approvals => "approvals",
            Self::Leases => "leases",
            Self::Events => "events",
            Self::Quarantines => "quarantines",
            Self::Schedules => "schedules",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Runs => "Runs",
            Self::Run => "Run",
            Self::Workers => "Workers",
            Self::Queues => "Queues",
            Self::Approvals => "Approvals",
            Self::Leases => "Leases",
            Self::Events => "Events",
            Self::Quarantines => "Quarantines",
            Self::Schedules => "Schedules",
        }
    }

    /// Its digit: 1 to 9, then 0.
    pub fn number(self) -> usize {
        (self.index() + 1) % 10
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Screens that show a list with a selection and a filter.
    pub fn is_list(self) -> bool {
        !matches!(self, Self::Overview | Self::Run)
    }

    /// The screen a typed name means: the exact name, else the first whose
    /// name starts with it.
    pub fn from_name(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() {
            return None;
        }
        Self::ALL
            .iter()
            .find(|s| s.name() == text)
            .or_else(|| Self::ALL.iter().find(|s| s.name().starts_with(&text)))
            .copied()
    }
}

/// Which colours the terminal gets. Chosen once from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Palette {
    /// `NO_COLOR` (or a dumb terminal): bold, dim and reverse only.
    Mono,
    /// The 16 ANSI colours every colour terminal has.
    Ansi16,
    /// 256 colours, when `COLORTERM` or `TERM` says so.
    Ansi256,
}

impl Palette {
    pub fn detect(no_color: Option<&str>, term: Option<&str>, colorterm: Option<&str>) -> Self {
        if no_color.is_some_and(|v| !v.is_empty()) || term == Some("dumb") {
            return Self::Mono;
        }
        let truecolor = colorterm.is_some_and(|c| c == "truecolor" || c == "24bit");
        if truecolor || term.is_some_and(|t| t.contains("256color")) {
            Self::Ansi256
        } else {
            Self::Ansi16
        }
    }

    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        Self::detect(
            var("NO_COLOR").as_deref(),
            var("TERM").as_deref(),
            var("COLORTERM").as_deref(),
        )
    }
}
