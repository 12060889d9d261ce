//! The one keymap: every key, the screens where it works, what it does and
//! the words that describe it. The `?` help lists [`KEYMAP`] whole, the
//! footer lists the entries of the current screen, and [`lookup`] turns a
//! key press into an [`Action`] from the same table, so the three cannot
//! disagree. The help and the footer leave out the changes the caller's
//! roles do not allow ([`crate::roles`]).
//!
//! Keys that change something (`a`, `x`, `C`, `D`, `U`, `R`, `X`, `p`, `r`)
//! stay off the keys vim and less use to move (`j k g G / ? n N d u f b`
//! and space), so that a navigating hand never approves by accident.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::marks::MARKABLE;
use crate::app::{Kind, Screen};

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A digit: the screen is the digit's.
    Go(Screen),
    /// `:` — type a screen's name.
    Command,
    Filter,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Enter,
    Back,
    Quit,
    /// ctrl-c: quits when pressed twice.
    Interrupt,
    Help,
    /// `space` on Runs and Approvals: mark the selected row.
    Mark,
    /// `*`: mark every row shown (again: unmark them).
    MarkAll,
    /// A change to the engine: asks for confirmation, and is refused
    /// read-only, disconnected or without the role its method needs.
    Change(Kind),
    Follow,
    Freeze,
    Resync,
    /// `L`: the message log.
    Messages,
    /// `d`: every field of the selected item, with absolute times.
    Detail,
    /// `y`: the selected item's full id to the clipboard (OSC 52).
    Copy,
    /// `w`: wrap the Run screen's output lines, or cut them.
    Wrap,
    /// Tab: the other pane of the Run screen (timeline, output).
    Pane,
    /// `n` / `N`: the next / previous line matching the output search.
    SearchNext,
    SearchPrev,
    /// `S`, `N`, `A`: order the list by state, name or age (again:
    /// the other way round; a third time: by urgency again).
    Sort(SortBy),
}

/// What a list can be ordered by besides urgency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortBy {
    State,
    Name,
    Age,
}

impl SortBy {
    pub fn word(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Name => "name",
            Self::Age => "age",
        }
    }
}

impl Action {
    /// Whether the action changes something in the engine: those ask for
    /// confirmation and are refused read-only or disconnected.
    pub fn changes(self) -> bool {
        matches!(self, Self::Change(_))
    }
}

/// One key: a code and the modifiers that must be held (shift is part of
/// an upper-case letter, not a modifier here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn ch(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: false,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: true,
    }
}

const fn code(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

impl Key {
    /// The key a crossterm event names, or `None` for a release.
    pub fn of(event: &KeyEvent) -> Option<Self> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let code = match event.code {
            // Terminals differ on whether shift-tab is BackTab or Tab+SHIFT.
            KeyCode::Tab if event.modifiers.contains(KeyModifiers::SHIFT) => KeyCode::BackTab,
            other => other,
        };
        Some(Self {
            code,
            ctrl: event.modifiers.contains(KeyModifiers::CONTROL),
        })
    }
}

/// Where a binding works.
#[derive(Clone, Copy, Debug)]
pub enum Where {
    All,
    Only(&'static [Screen]),
}

impl Where {
    pub fn includes(self, screen: Screen) -> bool {
        match self {
            Self::All => true,
            Self::Only(screens) => screens.contains(&screen),
        }
    }

    /// How the help names the screens.
    pub fn describe(self) -> String {
        match self {
            Self::All => "everywhere".to_owned(),
            Self::Only(screens) => screens
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// One row of the keymap.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub keys: &'static [Key],
    /// The keys as the help and the footer write them.
    pub label: &'static str,
    pub action: Action,
    pub screens: Where,
    /// What it does, in the help.
    pub what: &'static str,
    /// The footer's word for it; `None` keeps it out of the footer.
    pub short: Option<&'static str>,
}

use Screen::{
    Approvals, Events, Leases, Overview, Quarantines, Queues, Run, Runs, Schedules, Workers,
};

/// The lists the sort keys work on.
pub const SORTED: &[Screen] = &[Runs, Workers, Leases];

const DIGITS: &[Key] = &[
    ch('1'),
    ch('2'),
    ch('3'),
    ch('4'),
    ch('5'),
    ch('6'),
    ch('7'),
    ch('8'),
    ch('9'),
    ch('0'),
];

/// The keymap, in the order the footer offers keys: what a screen is for
/// first, moving about last.
pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: &[ch('a')],
        label: "a",
        action: Action::Change(Kind::Approve),
        screens: Where::Only(&[Approvals, Run]),
        what: "approve the selected approval (asks for a reason)",
        short: Some("approve"),
    },
    Binding {
        keys: &[ch('x')],
        label: "x",
        action: Action::Change(Kind::Reject),
        screens: Where::Only(&[Approvals, Run]),
        what: "reject the selected approval (asks for a reason)",
        short: Some("reject"),
    },
    Binding {
        keys: &[ch('C')],
        label: "C",
        action: Action::Change(Kind::Cancel),
        screens: Where::Only(&[Runs, Run]),
        what: "cancel the run",
        short: Some("cancel"),
    },
    Binding {
        keys: &[ch('r')],
        label: "r",
        action: Action::Change(Kind::Retry),
        screens: Where::Only(&[Runs, Run]),
        what: "retry the failed run's dead step",
        short: Some("retry"),
    },
    Binding {
        keys: &[ch('D')],
        label: "D",
        action: Action::Change(Kind::Drain),
        screens: Where::Only(&[Workers]),
        what: "drain the worker: no new work, it finishes what it holds",
        short: Some("drain"),
    },
    Binding {
        keys: &[ch('U')],
        label: "U",
        action: Action::Change(Kind::Undrain),
        screens: Where::Only(&[Workers]),
        what: "undrain the worker: it takes work again",
        short: Some("undrain"),
    },
    Binding {
        keys: &[ch('R')],
        label: "R",
        action: Action::Change(Kind::Recycle),
        screens: Where::Only(&[Workers]),
        what: "recycle the worker: drain, then a fresh process",
        short: Some("recycle"),
    },
    Binding {
        keys: &[ch('X')],
        label: "X",
        action: Action::Change(Kind::ForceRelease),
        screens: Where::Only(&[Leases]),
        what: "force-release the lease (type its id to confirm)",
        short: Some("release"),
    },
    Binding {
        keys: &[ch('p')],
        label: "p",
        action: Action::Change(Kind::Pause),
        screens: Where::Only(&[Queues]),
        what: "pause or resume the queue",
        short: Some("pause/resume"),
    },
    Binding {
        keys: &[ch('U')],
        label: "U",
        action: Action::Change(Kind::ClearQuarantine),
        screens: Where::Only(&[Quarantines]),
        what: "clear the quarantine: runs of the name are taken again (asks for a reason)",
        short: Some("clear"),
    },
    Binding {
        keys: &[ch('F')],
        label: "F",
        action: Action::Follow,
        screens: Where::Only(&[Run, Events]),
        what: "follow: keep the newest lines in view",
        short: Some("follow"),
    },
    Binding {
        keys: &[code(KeyCode::Enter)],
        label: "enter",
        action: Action::Enter,
        screens: Where::Only(&[
            Runs,
            Workers,
            Queues,
            Approvals,
            Leases,
            Events,
            Quarantines,
            Schedules,
        ]),
        what: "open the selected item (a run, or the list it belongs to; else its detail)",
        short: Some("open"),
    },
    Binding {
        keys: &[ch('d')],
        label: "d",
        action: Action::Detail,
        screens: Where::Only(&[Runs, Run, Workers, Leases, Approvals, Events]),
        what: "detail: every field of the selected item, times absolute (UTC) and relative",
        short: Some("detail"),
    },
    Binding {
        keys: &[ch('/')],
        label: "/",
        action: Action::Filter,
        screens: Where::All,
        what: "filter the list by text (enter keeps it, esc clears it); on the Run screen, search the output",
        short: Some("filter"),
    },
    Binding {
        keys: &[ch('n')],
        label: "n",
        action: Action::SearchNext,
        screens: Where::Only(&[Run]),
        what: "the next output line matching the search (/ on the Run screen)",
        short: None,
    },
    Binding {
        keys: &[ch('N')],
        label: "N",
        action: Action::SearchPrev,
        screens: Where::Only(&[Run]),
        what: "the previous output line matching the search",
        short: None,
    },
    Binding {
        keys: &[code(KeyCode::Tab), code(KeyCode::BackTab)],
        label: "tab",
        action: Action::Pane,
        screens: Where::Only(&[Run]),
        what: "move between the timeline and the output: j/k, pgup/pgdn, g/G scroll the one in focus",
        short: Some("pane"),
    },
    Binding {
        keys: &[ch('w')],
        label: "w",
        action: Action::Wrap,
        screens: Where::Only(&[Run]),
        what: "wrap long output lines, or cut them at the edge",
        short: Some("wrap"),
    },
    Binding {
        keys: &[ch('S')],
        label: "S",
        action: Action::Sort(SortBy::State),
        screens: Where::Only(SORTED),
        what: "sort by state; again reverses, a third time back to urgency (the default)",
        short: None,
    },
    Binding {
        keys: &[ch('N')],
        label: "N",
        action: Action::Sort(SortBy::Name),
        screens: Where::Only(SORTED),
        what: "sort by name; again reverses, a third time back to urgency",
        short: None,
    },
    Binding {
        keys: &[ch('A')],
        label: "A",
        action: Action::Sort(SortBy::Age),
        screens: Where::Only(SORTED),
        what: "sort by age, newest first; again reverses, a third time back to urgency",
        short: None,
    },
    Binding {
        keys: &[ch('y')],
        label: "y",
        action: Action::Copy,
        screens: Where::Only(&[
            Runs,
            Run,
            Workers,
            Queues,
            Approvals,
            Leases,
            Events,
            Quarantines,
        ]),
        what: "copy the selected item's full id to the clipboard (OSC 52, works over SSH)",
        short: None,
    },
    Binding {
        keys: &[code(KeyCode::Esc)],
        label: "esc",
        action: Action::Back,
        screens: Where::All,
        what: "back to where enter came from; clears the filter at the top",
        short: None,
    },
    Binding {
        keys: &[ch('q')],
        label: "q",
        action: Action::Quit,
        screens: Where::All,
        what: "back; quits from the top",
        short: Some("back/quit"),
    },
    Binding {
        keys: &[ch('?')],
        label: "?",
        action: Action::Help,
        screens: Where::All,
        what: "show every key",
        short: Some("help"),
    },
    Binding {
        keys: DIGITS,
        label: "0-9",
        action: Action::Go(Screen::Overview),
        screens: Where::All,
        what: "switch screen: 1 overview 2 runs 3 run 4 workers 5 queues 6 approvals 7 leases 8 events 9 quarantines 0 schedules",
        short: None,
    },
    Binding {
        keys: &[ch(':')],
        label: ":",
        action: Action::Command,
        screens: Where::All,
        what: "switch screen by name (:runs, :workers, ...; a prefix will do); :q quits",
        short: None,
    },
    Binding {
        keys: &[ch('j'), code(KeyCode::Down)],
        label: "j/down",
        action: Action::Down,
        screens: Where::All,
        what: "move down",
        short: None,
    },
    Binding {
        keys: &[ch('k'), code(KeyCode::Up)],
        label: "k/up",
        action: Action::Up,
        screens: Where::All,
        what: "move up",
        short: None,
    },
    Binding {
        keys: &[code(KeyCode::PageDown)],
        label: "pgdn",
        action: Action::PageDown,
        screens: Where::All,
        what: "a page down",
        short: None,
    },
    Binding {
        keys: &[code(KeyCode::PageUp)],
        label: "pgup",
        action: Action::PageUp,
        screens: Where::All,
        what: "a page up",
        short: None,
    },
    Binding {
        keys: &[ch('g'), code(KeyCode::Home)],
        label: "g/home",
        action: Action::Top,
        screens: Where::All,
        what: "to the top",
        short: None,
    },
    Binding {
        keys: &[ch('G'), code(KeyCode::End)],
        label: "G/end",
        action: Action::Bottom,
        screens: Where::All,
        what: "to the bottom",
        short: None,
    },
    Binding {
        keys: &[ch(' ')],
        label: "space",
        action: Action::Mark,
        screens: Where::Only(MARKABLE),
        what: "mark the row (or unmark it): a change key then applies to every marked row",
        short: Some("mark"),
    },
    Binding {
        keys: &[ch('*')],
        label: "*",
        action: Action::MarkAll,
        screens: Where::Only(MARKABLE),
        what: "mark every row shown (again: unmark them); esc unmarks",
        short: None,
    },
    Binding {
        keys: &[ch(' ')],
        label: "space",
        action: Action::Freeze,
        screens: Where::Only(&[
            Overview,
            Run,
            Workers,
            Queues,
            Leases,
            Events,
            Quarantines,
            Schedules,
        ]),
        what: "freeze the display (this console only; the engine goes on)",
        short: Some("freeze"),
    },
    Binding {
        keys: &[ch('z')],
        label: "z",
        action: Action::Freeze,
        screens: Where::All,
        what: "freeze the display, on every screen (space marks rows on Runs and Approvals)",
        short: None,
    },
    Binding {
        keys: &[ch('L')],
        label: "L",
        action: Action::Messages,
        screens: Where::All,
        what: "the last 50 status messages, with their times (also :messages)",
        short: None,
    },
    Binding {
        keys: &[ctrl('r')],
        label: "ctrl-r",
        action: Action::Resync,
        screens: Where::All,
        what: "drop what is shown and read everything from the engine again",
        short: None,
    },
    Binding {
        keys: &[ctrl('c')],
        label: "ctrl-c",
        action: Action::Interrupt,
        screens: Where::All,
        what: "quit (press twice)",
        short: None,
    },
];

/// The action of a key on a screen, if it has one there.
pub fn lookup(key: Key, screen: Screen) -> Option<Action> {
    let binding = KEYMAP
        .iter()
        .find(|b| b.keys.contains(&key) && b.screens.includes(screen))?;
    match binding.action {
        Action::Go(_) => {
            let KeyCode::Char(c) = key.code else {
                return None;
            };
            let n = usize::try_from(c.to_digit(10)?).ok()?;
            Screen::ALL.get((n + 9) % 10).map(|s| Action::Go(*s))
        }
        action => Some(action),
    }
}

/// The bindings the caller's roles allow, in keymap order: what the help
/// lists.
pub fn offered(roles: &[String]) -> impl Iterator<Item = &'static Binding> {
    KEYMAP
        .iter()
        .filter(move |b| crate::roles::allows(roles, b.action))
}

/// The footer's keys for a screen, in keymap order: (label, word).
pub fn footer(
    screen: Screen,
    roles: &[String],
) -> impl Iterator<Item = (&'static str, &'static str)> {
    offered(roles).filter_map(move |b| {
        let short = b.short?;
        b.screens.includes(screen).then_some((b.label, short))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> Key {
        ch(c)
    }

    #[test]
    fn digits_switch_to_their_screen_everywhere() {
        assert_eq!(lookup(key('1'), Runs), Some(Action::Go(Screen::Overview)));
        assert_eq!(lookup(key('8'), Run), Some(Action::Go(Events)));
        assert_eq!(lookup(key('9'), Run), Some(Action::Go(Quarantines)));
        assert_eq!(lookup(key('0'), Run), Some(Action::Go(Schedules)));
    }

    #[test]
    fn change_keys_work_only_where_their_object_is() {
        assert_eq!(
            lookup(key('a'), Approvals),
            Some(Action::Change(Kind::Approve))
        );
        assert_eq!(lookup(key('a'), Workers), None);
        assert_eq!(lookup(key('D'), Workers), Some(Action::Change(Kind::Drain)));
        assert_eq!(
            lookup(key('X'), Leases),
            Some(Action::Change(Kind::ForceRelease))
        );
        assert_eq!(lookup(key('p'), Queues), Some(Action::Change(Kind::Pause)));
        assert_eq!(
            lookup(key('U'), Quarantines),
            Some(Action::Change(Kind::ClearQuarantine))
        );
        assert_eq!(
            lookup(key('U'), Workers),
            Some(Action::Change(Kind::Undrain))
        );
    }

    #[test]
    fn no_change_sits_on_a_vim_or_less_navigation_key() {
        let navigation = "hjklgGwbefdunN/?q ";
        for b in KEYMAP.iter().filter(|b| b.action.changes()) {
            for k in b.keys {
                if let KeyCode::Char(c) = k.code {
                    assert!(!navigation.contains(c), "{c} changes something");
                }
            }
        }
    }

    #[test]
    fn no_key_means_two_things_on_one_screen() {
        for screen in Screen::ALL {
            let mut seen = Vec::new();
            for b in KEYMAP.iter().filter(|b| b.screens.includes(screen)) {
                for k in b.keys {
                    assert!(!seen.contains(k), "{k:?} twice on {screen:?}");
                    seen.push(*k);
                }
            }
        }
    }

    #[test]
    fn the_footer_offers_the_screens_own_keys_first() {
        let approvals: Vec<_> = footer(Approvals, &[]).map(|(_, w)| w).collect();
        assert_eq!(approvals[..2], ["approve", "reject"]);
        assert!(approvals.contains(&"help"));
        assert!(!footer(Workers, &[]).any(|(_, w)| w == "approve"));
    }

    #[test]
    fn the_footer_and_help_leave_out_what_the_roles_do_not_allow() {
        let operator = ["operator".to_owned()];
        let workers: Vec<_> = footer(Workers, &operator).map(|(_, w)| w).collect();
        assert_eq!(workers[..2], ["drain", "undrain"]);
        assert!(!workers.contains(&"recycle"), "{workers:?}");
        assert!(!footer(Approvals, &operator).any(|(_, w)| w == "approve"));
        assert!(footer(Quarantines, &["admin".to_owned()]).any(|(_, w)| w == "clear"));
        let viewer = ["viewer".to_owned()];
        assert!(offered(&viewer).all(|b| !b.action.changes()));
        assert!(offered(&viewer).any(|b| b.action == Action::Help));
    }

    #[test]
    fn slash_does_something_on_every_screen_and_n_means_search_or_sort_by_screen() {
        for screen in Screen::ALL {
            assert_eq!(lookup(key('/'), screen), Some(Action::Filter), "{screen:?}");
        }
        assert_eq!(lookup(key('N'), Run), Some(Action::SearchPrev));
        assert_eq!(lookup(key('N'), Runs), Some(Action::Sort(SortBy::Name)));
        assert_eq!(lookup(key('S'), Queues), None);
        assert_eq!(
            lookup(code(KeyCode::BackTab), Run),
            lookup(code(KeyCode::Tab), Run)
        );
    }

    #[test]
    fn ctrl_keys_and_shift_tab_are_read_from_crossterm_events() {
        let e = KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL);
        assert_eq!(lookup(Key::of(&e).unwrap(), Runs), Some(Action::Resync));
        let e = KeyEvent::new(KeyCode::Char('C'), KeyModifiers::SHIFT);
        assert_eq!(
            lookup(Key::of(&e).unwrap(), Runs),
            Some(Action::Change(Kind::Cancel))
        );
        let e = KeyEvent::new(KeyCode::Tab, KeyModifiers::SHIFT);
        assert_eq!(Key::of(&e).unwrap().code, KeyCode::BackTab);
    }
}
