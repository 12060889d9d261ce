//! The console's model and its `update`, in the Elm style: one [`App`]
//! holds everything the screen shows, [`update`] applies one [`Msg`] (a key
//! press, something from the watch, an engine call's result, a tick) and
//! returns the [`Cmd`]s to carry out (engine calls, fetches, quitting). The
//! views read `&App` and nothing else; nothing here draws or does I/O, so
//! every behaviour tests by feeding messages.
//!
//! No view types live here: colours, layout and ratatui are the views'.
//!
//! Beside it, in `app/`: [`order`] (the lists' order: urgency, or the
//! column a sort key chose), [`detail`] (the fields the `d` overlay
//! shows), [`panes`] (the Run screen's timeline and output: focus,
//! scrolling, search, wrap), [`copy`] (`y`, through OSC 52) and
//! [`stale`] (whether an open dialog's change still applies).

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent};
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{
    Approval, ApprovalState, Event, Lease, OutputChunk, Quarantine, Queue, Run, RunState,
    WhoamiResponse, Worker, WorkerState,
};
use tui_textarea::{CursorMove, TextArea};

use crate::cli::error::status_hint;
use crate::cli::events::subject;
use crate::cli::runs::{join_chunks, last_lines};
use crate::cli::step_number;
use crate::cli::time::{duration, relative};
use crate::conn::{Update, status_words};
use crate::keys::{Action, Key, lookup};
use crate::model::{self, Data};
use crate::roles;

pub mod copy;
pub mod detail;
pub mod order;
pub mod panes;
pub mod stale;

pub use copy::osc52;
pub use detail::{DetailOf, Field, absolute, fields as detail_fields, when};
pub use order::Sort;
pub use stale::still_applies;

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
}

impl Screen {
    pub const ALL: [Screen; 9] = [
        Self::Overview,
        Self::Runs,
        Self::Run,
        Self::Workers,
        Self::Queues,
        Self::Approvals,
        Self::Leases,
        Self::Events,
        Self::Quarantines,
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
        }
    }

    /// Its digit.
    pub fn number(self) -> usize {
        self.index() + 1
    }

    fn index(self) -> usize {
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

/// The state of the watch connection, as the header shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting {
        attempt: u32,
    },
    /// Connected, reading a snapshot.
    Loading,
    Live,
    /// Broken; the next try is at `retry_at_ms`.
    Retrying {
        retry_at_ms: i64,
        attempt: u32,
        why: String,
    },
}

/// Who and what the console is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The address, as given or found.
    pub engine: String,
    pub link: Link,
    pub identity: String,
    /// The caller's roles, as `Whoami` said them; empty when the engine
    /// does not report roles (then everything is offered).
    pub roles: Vec<String>,
    pub transport: String,
    pub engine_version: String,
    pub engine_id: String,
    /// Since when what is shown may be out of date: the last word heard
    /// before the link broke.
    pub stale_since_ms: Option<i64>,
    /// When the engine last said something: a watch message, or the
    /// answer to connecting. The engine says something at least every
    /// [`QUIET_MS`] on a working link.
    pub heard_at_ms: Option<i64>,
    /// Whether the console has ever connected: until then the header
    /// says "never connected".
    pub connected_once: bool,
    /// Why the last try to connect, or the link, failed.
    pub last_error: Option<String>,
    /// When the engine said it is shutting down (a graceful stop); until
    /// the next connect, failing retries are not news.
    pub shutdown_at_ms: Option<i64>,
    /// The leader's epoch at the last connect (0 from a single engine).
    pub leader_epoch: Option<u64>,
    /// When a reconnect found another leader than before (its epoch
    /// changed). The header says so until the next key press, so that an
    /// operator away from the keyboard still sees it on coming back.
    pub leader_changed_at_ms: Option<i64>,
}

/// A list screen's selection and filter. The selection follows its item
/// (by key) as rows come and go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListState {
    pub selected: usize,
    pub key: Option<String>,
    pub filter: String,
    /// The column chosen with `S`, `N` or `A`; `None` orders by urgency.
    pub sort: Sort,
}

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

/// A change to the engine, with what it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Approve { approval: String },
    Reject { approval: String },
    Cancel { run: String },
    Retry { run: String },
    Drain { worker: String },
    Undrain { worker: String },
    Recycle { worker: String },
    Pause { queue: String },
    Resume { queue: String },
    ForceRelease { lease: String, fail: bool },
    ClearQuarantine { name: String },
}

impl Change {
    /// "approve", as the dialog's OK says it.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Approve { .. } => "approve",
            Self::Reject { .. } => "reject",
            Self::Cancel { .. } => "cancel run",
            Self::Retry { .. } => "retry run",
            Self::Drain { .. } => "drain",
            Self::Undrain { .. } => "undrain",
            Self::Recycle { .. } => "recycle",
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
            Self::ForceRelease { .. } => "force-release",
            Self::ClearQuarantine { .. } => "clear quarantine",
        }
    }

    /// The key's action that asks for this change (for the roles).
    pub fn action(&self) -> Action {
        match self {
            Self::Approve { .. } => Action::Approve,
            Self::Reject { .. } => Action::Reject,
            Self::Cancel { .. } => Action::CancelRun,
            Self::Retry { .. } => Action::Retry,
            Self::Drain { .. } => Action::Drain,
            Self::Undrain { .. } => Action::Undrain,
            Self::Recycle { .. } => Action::Recycle,
            Self::Pause { .. } | Self::Resume { .. } => Action::PauseResume,
            Self::ForceRelease { .. } => Action::ForceRelease,
            Self::ClearQuarantine { .. } => Action::ClearQuarantine,
        }
    }

    /// "approving approval 01J…", while the call is out.
    fn doing(&self) -> String {
        match self {
            Self::Approve { approval } => format!("approving {approval}"),
            Self::Reject { approval } => format!("rejecting {approval}"),
            Self::Cancel { run } => format!("cancelling run {run}"),
            Self::Retry { run } => format!("retrying run {run}"),
            Self::Drain { worker } => format!("draining {worker}"),
            Self::Undrain { worker } => format!("undraining {worker}"),
            Self::Recycle { worker } => format!("recycling {worker}"),
            Self::Pause { queue } => format!("pausing queue {queue}"),
            Self::Resume { queue } => format!("resuming queue {queue}"),
            Self::ForceRelease { lease, .. } => format!("force-releasing lease {lease}"),
            Self::ClearQuarantine { name } => format!("clearing the quarantine of {name}"),
        }
    }
}

/// What a change returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Approval(Approval),
    Run(Run),
    Worker(Worker),
    Queue(Queue),
    Lease(Lease),
    Quarantine(Quarantine),
}

/// Where focus is in the confirmation dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The lease id, typed to confirm a force-release.
    Id,
    Reason,
    /// Force-release: fail the step instead of requeueing it.
    Fail,
    Ok,
    Cancel,
}

/// The confirmation of a change: what it is, in words, and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub change: Change,
    pub title: String,
    /// What will happen, line by line.
    pub lines: Vec<String>,
    /// The id that must be typed to confirm, for a force-release: whole,
    /// or at least [`ID_PART_MIN`] of its first or last characters that
    /// no id in `others` shares.
    pub type_to_confirm: Option<String>,
    /// The other ids of its kind the console knows of, which a typed part
    /// must not also match.
    pub others: Vec<String>,
    /// Why the change no longer applies (the object changed meanwhile,
    /// e.g. the run was cancelled from the CLI): OK then sends nothing.
    pub gone: Option<String>,
    pub typed: TextField,
    pub reason: TextField,
    /// Force-release only: fail the step instead of requeueing it.
    pub fail: Option<bool>,
    pub focus: Focus,
    /// Why OK did nothing.
    pub error: Option<String>,
}

impl Confirm {
    fn new(change: Change, title: String, lines: Vec<String>) -> Self {
        let (type_to_confirm, fail) = match &change {
            Change::ForceRelease { lease, fail } => (Some(lease.clone()), Some(*fail)),
            _ => (None, None),
        };
        Self {
            change,
            title,
            lines,
            type_to_confirm,
            others: Vec::new(),
            gone: None,
            typed: TextField::default(),
            reason: TextField::default(),
            fail,
            // Focus starts on Cancel: a stray Enter changes nothing.
            focus: Focus::Cancel,
            error: None,
        }
    }

    /// The focus ring, in Tab order.
    pub fn ring(&self) -> Vec<Focus> {
        let mut ring = Vec::with_capacity(5);
        if self.type_to_confirm.is_some() {
            ring.push(Focus::Id);
        }
        ring.push(Focus::Reason);
        if self.fail.is_some() {
            ring.push(Focus::Fail);
        }
        ring.extend([Focus::Ok, Focus::Cancel]);
        ring
    }

    fn step_focus(&mut self, forward: bool) {
        let ring = self.ring();
        let at = ring.iter().position(|f| *f == self.focus).unwrap_or(0);
        let next = if forward {
            (at + 1) % ring.len()
        } else {
            (at + ring.len() - 1) % ring.len()
        };
        self.focus = ring[next];
    }

    /// Whether what was typed names the id to confirm.
    pub fn id_typed(&self) -> bool {
        self.type_to_confirm
            .as_ref()
            .is_none_or(|id| id_matches(id, &self.typed.text(), &self.others))
    }

    /// What is missing before OK can go ahead.
    pub fn missing(&self) -> Option<String> {
        if let Some(id) = &self.type_to_confirm
            && !self.id_typed()
        {
            return Some(format!(
                "type the lease id {id} (or at least its last or first {ID_PART_MIN} characters) to confirm"
            ));
        }
        if self.reason.text().is_empty() {
            return Some(
                "a reason is needed: it is recorded with your name in the audit trail".to_owned(),
            );
        }
        None
    }
}

/// The fewest characters of an id that may stand for it when typed to
/// confirm: the tail the lists show is 8.
pub const ID_PART_MIN: usize = 6;

/// Whether `typed` names `id`: the whole id, or at least [`ID_PART_MIN`]
/// of its first or last characters (any case) that no id of `others`
/// starts or ends with alike.
pub fn id_matches(id: &str, typed: &str, others: &[String]) -> bool {
    let typed = typed.trim().to_ascii_uppercase();
    let id = id.to_ascii_uppercase();
    if typed == id {
        return true;
    }
    if typed.chars().count() < ID_PART_MIN {
        return false;
    }
    let names = |other: &str| other.starts_with(&typed) || other.ends_with(&typed);
    names(&id)
        && !others
            .iter()
            .map(|o| o.to_ascii_uppercase())
            .any(|o| o != id && names(&o))
}

/// An overlay over the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modal {
    Confirm(Box<Confirm>),
    Help {
        scroll: usize,
    },
    /// The message log (`L`, `:messages`), newest first.
    Messages {
        scroll: usize,
    },
    /// Every field of one item (`d`).
    Detail {
        of: DetailOf,
        scroll: usize,
    },
}

/// What the bottom line is being used for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Normal,
    /// `/`: typing the current list's filter.
    Filter,
    /// `:`: typing a screen's name.
    Command(String),
    /// `/` on the Run screen: typing what to look for in the output.
    Search(String),
}

/// How the status line reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    Info,
    /// A call is out.
    Pending,
    Done,
    /// The engine (or the console) said no.
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub kind: StatusKind,
    pub at_ms: i64,
}

/// A line of a step's output, as the log tail shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub step_index: u32,
    pub attempt: u32,
    pub stderr: bool,
    /// A heading between steps/attempts rather than output.
    pub heading: bool,
    pub text: String,
}

/// The panes of the Run screen that scroll; Tab moves between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pane {
    Timeline,
    #[default]
    Output,
}

/// The run being looked at on the Run screen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunView {
    pub run_id: String,
    /// Its events, by seq (from the log, then live).
    pub timeline: Vec<Event>,
    pub timeline_loaded: bool,
    pub log: Vec<LogLine>,
    pub log_error: Option<String>,
    pub log_fetching: bool,
    /// Another fetch is wanted once the one out is back.
    pub log_wanted: bool,
    pub log_fetched_at_ms: i64,
    /// Keep the newest lines in view.
    pub follow: bool,
    /// The first line shown when not following.
    pub scroll: usize,
    /// The run itself is being read from the engine (the model does not
    /// hold it: evicted, or older than what the engine keeps in memory).
    pub run_fetching: bool,
    /// Another read is wanted once the one out is back: a change to the
    /// run arrived meanwhile, which the answer may predate.
    pub run_wanted: bool,
    /// Why the run could not be read.
    pub run_error: Option<String>,
    /// The pane the scroll keys move.
    pub pane: Pane,
    /// How many events the timeline is scrolled back from the newest;
    /// 0 keeps the newest in view as they come.
    pub timeline_back: usize,
    /// What `/` looked for in the output, and the line found.
    pub search: String,
    pub hit: Option<usize>,
}

/// A list this long is listed again at most every [`BIG_LIST_MS`] when
/// only the data changed (see [`App::sync`]).
const BIG_LIST: usize = 5_000;
const BIG_LIST_MS: i64 = 250;
/// Lines of a step's output kept for the log tail.
const LOG_LINES: usize = 2_000;
/// Bytes of each attempt's output asked for.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// A running step's output is read again this often while shown.
const LOG_REFRESH_MS: i64 = 2_000;
/// Heartbeat-driven fields are read again this often (see [`Data::refresh`]).
const REFRESH_MS: i64 = 3_000;
/// Events read from the log after a snapshot, to fill the tail.
const BACKFILL: u64 = 500;
/// A first ctrl-c waits this long for the second.
const CTRL_C_MS: i64 = 3_000;
/// A status message stays on the status line this long (word of a call
/// still out stays until its answer); the message log keeps it.
pub const STATUS_MS: i64 = 10_000;
/// Status messages the message log keeps.
pub const MESSAGES_KEPT: usize = 50;
/// The engine's watch sends a heartbeat every 10 s when it has nothing
/// else to say: a live link silent for longer than this is suspect,
/// whatever the connection says, and the header says since when.
pub const QUIET_MS: i64 = 15_000;

/// Settings from the command line and the environment.
#[derive(Clone, Debug)]
pub struct Options {
    pub engine: String,
    pub readonly: bool,
    pub palette: Palette,
}

/// Everything the console shows and remembers.
#[derive(Clone, Debug)]
pub struct App {
    pub now_ms: i64,
    pub data: Data,
    /// What the display shows while frozen (space): a copy taken then.
    pub frozen: Option<Box<(Data, RunView)>>,
    pub screen: Screen,
    /// Where Esc goes back to, after Enter drilled in.
    pub back: Vec<Back>,
    pub lists: [ListState; 9],
    /// The current list's row keys, filtered and ordered ([`App::sync`]).
    pub rows: Vec<String>,
    rows_for: Option<(Screen, String, Sort, u64, bool)>,
    rows_at_ms: i64,
    pub run: RunView,
    pub input: Input,
    pub modal: Option<Modal>,
    pub conn: Connection,
    pub status: Option<Status>,
    /// The last [`MESSAGES_KEPT`] status messages, oldest first: what
    /// `L` lists, for a message gone from the status line.
    pub messages: VecDeque<Status>,
    pub readonly: bool,
    pub palette: Palette,
    /// The Events screen keeps the newest event selected.
    pub events_follow: bool,
    /// The Run screen's output wraps long lines (`w`) instead of cutting
    /// them at the edge.
    pub wrap_log: bool,
    ctrl_c_at: Option<i64>,
    refreshing: bool,
    refreshed_at_ms: i64,
    /// Terminal size, for page moves.
    pub size: (u16, u16),
    pub quit: bool,
}

/// A step back: the screen, and the filter to put back on the screen that
/// Enter filtered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Back {
    pub screen: Screen,
    pub restore_filter: Option<(Screen, String)>,
}

/// Something that happened.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Conn(Update),
    /// A change's result.
    Done {
        change: Change,
        result: Result<Changed, tonic::Status>,
    },
    Output {
        run_id: String,
        result: Result<Vec<OutputChunk>, String>,
    },
    Timeline {
        run_id: String,
        result: Result<Vec<Event>, String>,
    },
    /// The run read whole (`GetRun`), for the Run screen.
    Run {
        run_id: String,
        result: Result<Run, String>,
    },
    Backfill(Result<Vec<Event>, String>),
    Refreshed(Result<Refreshed, String>),
    /// A second passed (the clock is `App::now_ms`, set by the caller).
    Tick,
    Resize {
        width: u16,
        height: u16,
    },
}

/// What [`Cmd::Refresh`] read: what changes without an event.
#[derive(Clone, Debug, Default)]
pub struct Refreshed {
    pub workers: Vec<Worker>,
    pub leases: Vec<Lease>,
    pub queues: Vec<Queue>,
}

/// Something to do outside the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Change {
        change: Change,
        reason: String,
    },
    FetchOutput {
        run_id: String,
    },
    FetchTimeline {
        run_id: String,
    },
    /// The run, whole: the model does not hold it.
    FetchRun {
        run_id: String,
    },
    /// Events after this seq, to fill the tail.
    FetchEvents {
        after_seq: u64,
    },
    /// Workers' heartbeats, leases' expiries and the queues (`ListQueues`).
    Refresh,
    /// Text to the terminal's clipboard ([`osc52`]).
    Copy {
        text: String,
    },
    Resync,
    Quit,
}

impl App {
    pub fn new(options: Options, now_ms: i64) -> Self {
        Self {
            now_ms,
            data: Data::default(),
            frozen: None,
            screen: Screen::Overview,
            back: Vec::new(),
            lists: Default::default(),
            rows: Vec::new(),
            rows_for: None,
            rows_at_ms: 0,
            run: RunView::default(),
            input: Input::Normal,
            modal: None,
            conn: Connection {
                engine: options.engine,
                link: Link::Connecting { attempt: 0 },
                identity: String::new(),
                roles: Vec::new(),
                transport: String::new(),
                engine_version: String::new(),
                engine_id: String::new(),
                stale_since_ms: None,
                heard_at_ms: None,
                connected_once: false,
                last_error: None,
                shutdown_at_ms: None,
                leader_epoch: None,
                leader_changed_at_ms: None,
            },
            status: None,
            messages: VecDeque::new(),
            readonly: options.readonly,
            palette: options.palette,
            events_follow: true,
            wrap_log: false,
            ctrl_c_at: None,
            refreshing: false,
            refreshed_at_ms: 0,
            size: (80, 24),
            quit: false,
        }
    }

    /// What the views show: the frozen copy, or the live data.
    pub fn shown(&self) -> (&Data, &RunView) {
        match &self.frozen {
            Some(frozen) => (&frozen.0, &frozen.1),
            None => (&self.data, &self.run),
        }
    }

    pub fn list(&self, screen: Screen) -> &ListState {
        &self.lists[screen.index()]
    }

    fn list_mut(&mut self, screen: Screen) -> &mut ListState {
        &mut self.lists[screen.index()]
    }

    /// Whether changes may be made now (connected and live).
    pub fn live(&self) -> bool {
        self.conn.link == Link::Live
    }

    fn say(&mut self, kind: StatusKind, text: impl Into<String>) {
        let status = Status {
            text: text.into(),
            kind,
            at_ms: self.now_ms,
        };
        if self.messages.len() >= MESSAGES_KEPT {
            self.messages.pop_front();
        }
        self.messages.push_back(status.clone());
        self.status = Some(status);
    }

    /// Since when a live link has been silent for longer than
    /// [`QUIET_MS`]: the last word heard, when that is too long ago.
    pub fn quiet_since(&self) -> Option<i64> {
        let heard = self.conn.heard_at_ms?;
        (self.conn.link == Link::Live && self.now_ms - heard > QUIET_MS).then_some(heard)
    }

    /// Since when what is shown may be out of date: the link broke, or is
    /// up but silent.
    pub fn stale_since(&self) -> Option<i64> {
        self.conn.stale_since_ms.or_else(|| self.quiet_since())
    }

    /// Why nothing shown is known yet (no snapshot has arrived since the
    /// start), in words with the address and the last error; `None` once
    /// something is.
    pub fn unknown_words(&self) -> Option<String> {
        if self.shown().0.loaded {
            return None;
        }
        let engine = &self.conn.engine;
        Some(match (&self.conn.link, &self.conn.last_error) {
            (Link::Loading | Link::Live, _) => {
                format!("connected to {engine}; reading what the engine holds")
            }
            (_, None) => format!("connecting to {engine}"),
            (_, Some(why)) if self.conn.connected_once => {
                format!("nothing read from {engine} yet\n\nthe last try said: {why}")
            }
            (_, Some(why)) => format!("never connected to {engine}\n\nthe last try said: {why}"),
        })
    }

    /// Recomputes the current list's rows if what they depend on changed,
    /// and keeps the selection on its item. The main loop calls it before
    /// drawing; `update` before handling a key.
    pub fn sync(&mut self) {
        let screen = self.screen;
        let frozen = self.frozen.is_some();
        let filter = self.list(screen).filter.clone();
        let sort = self.list(screen).sort;
        let version = self.shown().0.version;
        let key = (screen, filter, sort, version, frozen);
        // A long list whose only change is the data is listed again at
        // most a few times a second: at 1,000 events a second, listing
        // 50,000 runs for every frame is most of what the console would
        // do. The rows shown are looked up afresh every frame, so only a
        // new row's arrival waits.
        let throttled = self.rows_for.as_ref().is_some_and(|(s, f, o, _, z)| {
            (*s, f.as_str(), *o, *z) == (screen, key.1.as_str(), sort, frozen)
                && self.rows.len() >= BIG_LIST
                && self.now_ms - self.rows_at_ms < BIG_LIST_MS
        });
        if self.rows_for.as_ref() != Some(&key) && !throttled {
            let data = self.shown().0;
            let mut rows = rows(data, screen, &key.1, self.now_ms);
            order::order(data, screen, &mut rows, sort, self.now_ms);
            self.rows = rows;
            self.rows_for = Some(key);
            self.rows_at_ms = self.now_ms;
        }
        let len = self.rows.len();
        let follow = screen == Screen::Events && self.events_follow;
        let rows = &self.rows;
        let list = &mut self.lists[screen.index()];
        if follow {
            list.selected = 0;
        } else if let Some(at) = list
            .key
            .as_ref()
            .and_then(|k| rows.iter().position(|r| r == k))
        {
            list.selected = at;
        } else {
            list.selected = list.selected.min(len.saturating_sub(1));
        }
        list.key = rows.get(list.selected).cloned();
    }

    /// The selected row's key on the current list.
    pub fn selected_key(&self) -> Option<&str> {
        self.list(self.screen).key.as_deref()
    }

    fn page(&self) -> usize {
        usize::from(self.size.1.saturating_sub(8)).max(1)
    }

    /// Rows of the log the Run screen has, roughly: for page moves.
    fn log_rows(&self) -> usize {
        usize::from(self.size.1.saturating_sub(8) / 2).max(1)
    }

    /// Whether the footer offers a key here and now: a change only when
    /// this console may make it (not read-only, the roles allow it) and
    /// it applies to the selected item (a cancel to a run that has not
    /// ended, a drain to an online worker, …).
    pub fn offers(&self, action: Action) -> bool {
        if !action.changes() {
            return true;
        }
        !self.readonly && roles::allows(&self.conn.roles, action) && prepare(self, action).is_ok()
    }
}

/// Applies one message; returns what to do next.
pub fn update(app: &mut App, msg: Msg) -> Vec<Cmd> {
    match msg {
        Msg::Key(key) => {
            app.sync();
            on_key(app, key)
        }
        Msg::Conn(update) => {
            let cmds = on_conn(app, update);
            refresh_confirm(app);
            cmds
        }
        Msg::Done { change, result } => {
            match result {
                Ok(changed) => {
                    let text = outcome(&change, &changed, &app.data);
                    app.say(StatusKind::Done, text);
                }
                Err(status) => {
                    let mut text = format!("refused: {}", status_words(&status));
                    if let Some(hint) = status_hint(&status, false, &app.conn.engine) {
                        text.push_str(&format!(" ({hint})"));
                    }
                    app.say(StatusKind::Refused, text);
                }
            }
            Vec::new()
        }
        Msg::Output { run_id, result } => on_output(app, &run_id, result),
        Msg::Timeline { run_id, result } => {
            if app.run.run_id == run_id {
                match result {
                    Ok(events) => merge_timeline(&mut app.run.timeline, events),
                    Err(why) => app.say(
                        StatusKind::Refused,
                        format!("the run's events cannot be read: {why}"),
                    ),
                }
                app.run.timeline_loaded = true;
            }
            Vec::new()
        }
        Msg::Run { run_id, result } => on_run(app, &run_id, result),
        Msg::Backfill(result) => {
            match result {
                Ok(events) => app.data.backfill(events),
                Err(why) => app.say(
                    StatusKind::Info,
                    format!("recent events cannot be read: {why}"),
                ),
            }
            Vec::new()
        }
        Msg::Refreshed(result) => {
            app.refreshing = false;
            if let Ok(read) = result {
                app.data.refresh(&read.workers, &read.leases);
                // Asked when the command went out (one at a time).
                app.data
                    .refresh_queues(read.queues, app.refreshed_at_ms, app.now_ms);
            }
            refresh_confirm(app);
            Vec::new()
        }
        Msg::Tick => on_tick(app),
        Msg::Resize { width, height } => {
            app.size = (width, height);
            Vec::new()
        }
    }
}

fn on_tick(app: &mut App) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    app.data.sample();
    refresh_confirm(app);
    if app.ctrl_c_at.is_some_and(|at| app.now_ms - at > CTRL_C_MS) {
        app.ctrl_c_at = None;
    }
    // Old news leaves the status line (the message log keeps it); word
    // of a call still out stays until its answer replaces it.
    if app
        .status
        .as_ref()
        .is_some_and(|s| s.kind != StatusKind::Pending && app.now_ms - s.at_ms > STATUS_MS)
    {
        app.status = None;
    }
    if app.live() && !app.refreshing && app.now_ms - app.refreshed_at_ms >= REFRESH_MS {
        app.refreshing = true;
        app.refreshed_at_ms = app.now_ms;
        cmds.push(Cmd::Refresh);
    }
    // A running step writes output without events: read it again now and
    // then while someone looks.
    if app.screen == Screen::Run && app.live() && app.frozen.is_none() {
        let running = app
            .data
            .runs
            .get(&app.run.run_id)
            .is_some_and(|r| r.state() == RunState::Running);
        if running && app.now_ms - app.run.log_fetched_at_ms >= LOG_REFRESH_MS {
            cmds.extend(want_output(app));
        }
    }
    cmds
}

fn on_conn(app: &mut App, update: Update) -> Vec<Cmd> {
    let now = app.now_ms;
    if matches!(
        update,
        Update::Connected { .. }
            | Update::Snapshot(_)
            | Update::Event(_)
            | Update::Heartbeat { .. }
            | Update::Resync { .. }
    ) {
        app.conn.heard_at_ms = Some(now);
    }
    match update {
        Update::Connecting { attempt } => {
            if !matches!(app.conn.link, Link::Loading) {
                app.conn.link = Link::Connecting { attempt };
            }
            Vec::new()
        }
        Update::Connected {
            whoami,
            resumed_after,
        } => {
            let was_down = app.conn.stale_since_ms.is_some();
            // Another leader, not merely the same engine restarted (its
            // host:pid changes then too, so engine_id cannot tell).
            let leader_changed = app
                .conn
                .leader_epoch
                .is_some_and(|epoch| epoch != whoami.leader_epoch);
            set_identity(&mut app.conn, whoami);
            app.conn.connected_once = true;
            app.conn.shutdown_at_ms = None;
            if leader_changed {
                app.conn.leader_changed_at_ms = Some(now);
            }
            if resumed_after == 0 {
                app.conn.link = Link::Loading;
            } else {
                app.conn.link = Link::Live;
                app.conn.stale_since_ms = None;
            }
            if leader_changed {
                app.say(
                    StatusKind::Info,
                    format!(
                        "leader changed: engine {} leads now (epoch {}); resumed after seq {resumed_after}",
                        app.conn.engine_id,
                        app.conn.leader_epoch.unwrap_or(0)
                    ),
                );
            } else if was_down && resumed_after > 0 {
                app.say(
                    StatusKind::Info,
                    format!("reconnected; resumed after seq {resumed_after}"),
                );
            }
            Vec::new()
        }
        Update::Disconnected {
            retry_in,
            attempt,
            why,
            shutting_down,
        } => {
            // What is shown was last confirmed by the last word heard, not
            // when the break was noticed (seconds later, for a silent one).
            if app.conn.stale_since_ms.is_none() && app.data.loaded {
                app.conn.stale_since_ms = Some(app.conn.heard_at_ms.unwrap_or(now).min(now));
            }
            if shutting_down && app.conn.shutdown_at_ms.is_none() {
                app.conn.shutdown_at_ms = Some(now);
            }
            let retry_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX);
            let text = if app.conn.shutdown_at_ms.is_some() {
                // The retries fail until it is back, each with a socket
                // error that says nothing new.
                format!(
                    "the engine is shutting down (a graceful stop); retrying (attempt {})",
                    attempt + 1
                )
            } else {
                format!(
                    "no connection to the engine: {why}; retrying (attempt {})",
                    attempt + 1
                )
            };
            app.say(StatusKind::Refused, text);
            app.conn.last_error = Some(why.clone());
            app.conn.link = Link::Retrying {
                retry_at_ms: now.saturating_add(retry_ms),
                attempt,
                why,
            };
            app.refreshing = false;
            Vec::new()
        }
        Update::Snapshot(snapshot) => {
            let seq = snapshot.seq;
            app.data.apply_snapshot(*snapshot, now);
            app.conn.link = Link::Live;
            app.conn.stale_since_ms = None;
            let newest = app.data.events.back().map_or(0, |e| e.seq);
            let mut cmds = vec![Cmd::FetchEvents {
                after_seq: newest.max(seq.saturating_sub(BACKFILL)),
            }];
            if !app.run.run_id.is_empty() {
                cmds.push(Cmd::FetchTimeline {
                    run_id: app.run.run_id.clone(),
                });
                cmds.extend(want_output(app));
                cmds.extend(want_run(app));
            }
            cmds
        }
        Update::Event(event) => {
            let ours = !app.run.run_id.is_empty() && event.run_id == app.run.run_id;
            let applied = app.data.apply_event(*event, now).clone();
            if ours {
                let before = app.run.timeline.len();
                merge_timeline(&mut app.run.timeline, vec![applied]);
                // A timeline scrolled back stays on what is being read.
                if app.run.timeline_back > 0 {
                    app.run.timeline_back += app.run.timeline.len() - before;
                }
                let mut cmds = want_output(app);
                // A change to a run we do not hold was not applied: read
                // it whole instead.
                cmds.extend(want_run(app));
                return cmds;
            }
            Vec::new()
        }
        Update::Resync { reason } => {
            app.conn.link = Link::Loading;
            app.say(
                StatusKind::Info,
                format!("reading everything again: {reason}"),
            );
            Vec::new()
        }
        Update::Heartbeat { .. } => Vec::new(),
    }
}

fn set_identity(conn: &mut Connection, whoami: WhoamiResponse) {
    conn.identity = whoami.identity;
    conn.roles = whoami.roles;
    conn.leader_epoch = Some(whoami.leader_epoch);
    conn.transport = whoami.transport;
    conn.engine_version = whoami.engine_version;
    conn.engine_id = whoami.engine_id;
}

/// A fetch of the open run's output, unless one is out (then one more is
/// made when it is back).
fn want_output(app: &mut App) -> Vec<Cmd> {
    if app.run.run_id.is_empty() {
        return Vec::new();
    }
    if app.run.log_fetching {
        app.run.log_wanted = true;
        return Vec::new();
    }
    app.run.log_fetching = true;
    app.run.log_wanted = false;
    app.run.log_fetched_at_ms = app.now_ms;
    vec![Cmd::FetchOutput {
        run_id: app.run.run_id.clone(),
    }]
}

/// A read of the open run, when the model does not hold it, unless one is
/// out (then one more is made when it is back).
fn want_run(app: &mut App) -> Vec<Cmd> {
    if app.run.run_id.is_empty() || app.data.runs.contains_key(&app.run.run_id) {
        return Vec::new();
    }
    if app.run.run_fetching {
        app.run.run_wanted = true;
        return Vec::new();
    }
    app.run.run_fetching = true;
    app.run.run_wanted = false;
    vec![Cmd::FetchRun {
        run_id: app.run.run_id.clone(),
    }]
}

fn on_run(app: &mut App, run_id: &str, result: Result<Run, String>) -> Vec<Cmd> {
    if app.run.run_id != run_id {
        return Vec::new();
    }
    app.run.run_fetching = false;
    match result {
        Ok(run) => {
            app.run.run_error = None;
            // What the stream applied meanwhile may be newer than the
            // answer; the newer of the two stays.
            let newer = app
                .data
                .runs
                .get(&run.id)
                .is_none_or(|ours| run.updated_at_ms >= ours.updated_at_ms);
            if newer {
                app.data.runs.insert(run);
                app.data.version += 1;
            }
        }
        Err(why) => app.run.run_error = Some(why),
    }
    if std::mem::take(&mut app.run.run_wanted) {
        // A change arrived while the answer was out: read it again, now
        // that it is held or not.
        app.run.run_fetching = true;
        return vec![Cmd::FetchRun {
            run_id: run_id.to_owned(),
        }];
    }
    Vec::new()
}

fn on_output(app: &mut App, run_id: &str, result: Result<Vec<OutputChunk>, String>) -> Vec<Cmd> {
    if app.run.run_id != run_id {
        return Vec::new();
    }
    app.run.log_fetching = false;
    match result {
        Ok(chunks) => {
            app.run.log = log_lines(&chunks);
            app.run.log_error = None;
        }
        Err(why) => app.run.log_error = Some(why),
    }
    if app.run.log_wanted {
        return want_output(app);
    }
    Vec::new()
}

/// Output chunks as the log tail's lines: a heading per step, attempt and
/// stream, then the text made safe for the terminal.
pub fn log_lines(chunks: &[OutputChunk]) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for part in join_chunks(chunks) {
        let stderr = part.stream == "stderr";
        let mut heading = format!(
            "step {} attempt {} {}",
            step_number(part.step_index),
            part.attempt,
            part.stream
        );
        if part.truncated {
            heading.push_str(" (capped by the engine)");
        }
        lines.push(LogLine {
            step_index: part.step_index,
            attempt: part.attempt,
            stderr,
            heading: true,
            text: heading,
        });
        for text in last_lines(&part.text, usize::MAX) {
            lines.push(LogLine {
                step_index: part.step_index,
                attempt: part.attempt,
                stderr,
                heading: false,
                text,
            });
        }
    }
    let skip = lines.len().saturating_sub(LOG_LINES);
    lines.drain(..skip);
    lines
}

fn merge_timeline(timeline: &mut Vec<Event>, events: Vec<Event>) {
    for mut e in events {
        model::strip(&mut e);
        match timeline.binary_search_by_key(&e.seq, |t| t.seq) {
            Ok(_) => {}
            Err(at) => timeline.insert(at, e),
        }
    }
}

// ----------------------------------------------------------------- keys

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Cmd> {
    let Some(k) = Key::of(&key) else {
        return Vec::new();
    };
    if k.ctrl && k.code == KeyCode::Char('c') {
        return interrupt(app);
    }
    app.ctrl_c_at = None;
    // Seen: the header stops saying so.
    app.conn.leader_changed_at_ms = None;
    match app.modal.take() {
        Some(Modal::Confirm(confirm)) => return on_confirm_key(app, *confirm, key),
        Some(Modal::Help { scroll }) => {
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Help { scroll });
            return Vec::new();
        }
        Some(Modal::Messages { scroll }) => {
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Messages { scroll });
            return Vec::new();
        }
        Some(Modal::Detail { of, scroll }) => {
            if k == (Key {
                code: KeyCode::Char('y'),
                ctrl: false,
            }) {
                let text = detail::id_of(&of);
                app.modal = Some(Modal::Detail { of, scroll });
                return copy::copy(app, text);
            }
            app.modal = scrolled(k, app.screen, scroll).map(|scroll| Modal::Detail { of, scroll });
            return Vec::new();
        }
        None => {}
    }
    match std::mem::replace(&mut app.input, Input::Normal) {
        Input::Filter => return on_filter_key(app, key),
        Input::Command(text) => return on_command_key(app, text, key),
        Input::Search(text) => return panes::on_search_key(app, text, key),
        Input::Normal => {}
    }
    let Some(action) = lookup(k, app.screen) else {
        return Vec::new();
    };
    if action.changes() {
        return start_change(app, action);
    }
    act(app, action)
}

/// A scrolling overlay's scroll after a key; `None` closes it (`?`, `L`,
/// Esc, q and anything else that does not scroll).
fn scrolled(k: Key, screen: Screen, scroll: usize) -> Option<usize> {
    match lookup(k, screen) {
        Some(Action::Down) => Some(scroll.saturating_add(1)),
        Some(Action::Up) => Some(scroll.saturating_sub(1)),
        Some(Action::PageDown) => Some(scroll.saturating_add(10)),
        Some(Action::PageUp) => Some(scroll.saturating_sub(10)),
        Some(Action::Top) => Some(0),
        _ => None,
    }
}

fn interrupt(app: &mut App) -> Vec<Cmd> {
    if app.ctrl_c_at.is_some() {
        app.quit = true;
        return vec![Cmd::Quit];
    }
    app.ctrl_c_at = Some(app.now_ms);
    app.say(StatusKind::Info, "press ctrl-c again to quit");
    Vec::new()
}

fn on_filter_key(app: &mut App, key: KeyEvent) -> Vec<Cmd> {
    let screen = app.screen;
    let ctrl = key
        .modifiers
        .contains(crossterm::event::KeyModifiers::CONTROL);
    let filter = &mut app.list_mut(screen).filter;
    match key.code {
        KeyCode::Esc => filter.clear(),
        KeyCode::Enter => return Vec::new(),
        KeyCode::Backspace => {
            filter.pop();
            app.input = Input::Filter;
        }
        KeyCode::Char('u') if ctrl => {
            filter.clear();
            app.input = Input::Filter;
        }
        KeyCode::Char(c) if !ctrl => {
            filter.push(c);
            app.input = Input::Filter;
        }
        _ => app.input = Input::Filter,
    }
    // The filter changed what the rows are: start at the top.
    let list = app.list_mut(screen);
    list.selected = 0;
    list.key = None;
    Vec::new()
}

/// What `:` runs besides switching screens.
const QUIT_COMMANDS: [&str; 4] = ["q", "quit", "q!", "qa"];
const MESSAGES_COMMAND: &str = "messages";

fn on_command_key(app: &mut App, mut text: String, key: KeyEvent) -> Vec<Cmd> {
    let command = text.trim().to_ascii_lowercase();
    match key.code {
        KeyCode::Esc => Vec::new(),
        // `:q` quits, as in vim and k9s, though `q` is a prefix of queues.
        KeyCode::Enter if QUIT_COMMANDS.contains(&command.as_str()) => {
            app.quit = true;
            vec![Cmd::Quit]
        }
        // No screen's name starts with an m, so any prefix will do.
        KeyCode::Enter if !command.is_empty() && MESSAGES_COMMAND.starts_with(command.as_str()) => {
            app.modal = Some(Modal::Messages { scroll: 0 });
            Vec::new()
        }
        KeyCode::Enter => match Screen::from_name(&text) {
            Some(screen) => go(app, screen),
            None => {
                let names: Vec<&str> = Screen::ALL.iter().map(|s| s.name()).collect();
                app.say(
                    StatusKind::Refused,
                    format!(
                        "no screen named {text:?}; there are: {}; and :messages, :q",
                        names.join(", ")
                    ),
                );
                Vec::new()
            }
        },
        KeyCode::Backspace => {
            if text.pop().is_some() {
                app.input = Input::Command(text);
            }
            Vec::new()
        }
        KeyCode::Char(c) => {
            text.push(c);
            app.input = Input::Command(text);
            Vec::new()
        }
        _ => {
            app.input = Input::Command(text);
            Vec::new()
        }
    }
}

fn act(app: &mut App, action: Action) -> Vec<Cmd> {
    match action {
        Action::Go(screen) => go(app, screen),
        Action::Command => {
            app.input = Input::Command(String::new());
            Vec::new()
        }
        Action::Filter => {
            match app.screen {
                Screen::Run => app.input = Input::Search(String::new()),
                Screen::Overview => app.say(
                    StatusKind::Info,
                    "the Overview has nothing to filter: / filters the lists (2, 4-9) \
                     and searches the output on the Run screen (3)",
                ),
                _ => app.input = Input::Filter,
            }
            Vec::new()
        }
        Action::Detail => {
            match detail::detail_of(app) {
                Some(of) => app.modal = Some(Modal::Detail { of, scroll: 0 }),
                None => app.say(StatusKind::Info, "nothing is selected to show"),
            }
            Vec::new()
        }
        Action::Copy => match copy::copied_id(app) {
            Some(text) => copy::copy(app, text),
            None => {
                app.say(StatusKind::Info, "nothing is selected to copy");
                Vec::new()
            }
        },
        Action::Wrap => {
            panes::toggle_wrap(app);
            Vec::new()
        }
        Action::Pane => {
            panes::switch(app);
            Vec::new()
        }
        Action::SearchNext | Action::SearchPrev => {
            panes::again(app, action == Action::SearchNext);
            Vec::new()
        }
        Action::Sort(by) => {
            let screen = app.screen;
            let list = app.list_mut(screen);
            list.sort = order::next(list.sort, by);
            let word = order::words(list.sort).map_or("ordered by urgency again".to_owned(), |w| {
                format!("sorted {w}")
            });
            app.say(StatusKind::Info, word);
            app.sync();
            Vec::new()
        }
        Action::Up => move_by(app, -1),
        Action::Down => move_by(app, 1),
        Action::PageUp => move_by(app, -(isize::try_from(app.page()).unwrap_or(1))),
        Action::PageDown => move_by(app, isize::try_from(app.page()).unwrap_or(1)),
        Action::Top => move_by(app, isize::MIN),
        Action::Bottom => move_by(app, isize::MAX),
        Action::Enter => enter(app),
        Action::Back => {
            if !go_back(app) {
                app.list_mut(app.screen).filter.clear();
            }
            Vec::new()
        }
        Action::Quit => {
            if go_back(app) {
                return Vec::new();
            }
            app.quit = true;
            vec![Cmd::Quit]
        }
        Action::Interrupt => interrupt(app),
        Action::Help => {
            app.modal = Some(Modal::Help { scroll: 0 });
            Vec::new()
        }
        Action::Messages => {
            app.modal = Some(Modal::Messages { scroll: 0 });
            Vec::new()
        }
        Action::Follow => {
            match app.screen {
                Screen::Run => {
                    app.run.follow = !app.run.follow;
                    let word = if app.run.follow {
                        "following the log"
                    } else {
                        "stopped following"
                    };
                    app.say(StatusKind::Info, word);
                }
                Screen::Events => {
                    app.events_follow = !app.events_follow;
                    let word = if app.events_follow {
                        "following new events"
                    } else {
                        "stopped following"
                    };
                    app.say(StatusKind::Info, word);
                }
                _ => {}
            }
            app.sync();
            Vec::new()
        }
        Action::Freeze => {
            if app.frozen.take().is_some() {
                app.say(StatusKind::Info, "live again");
            } else {
                app.frozen = Some(Box::new((app.data.clone(), app.run.clone())));
                app.say(
                    StatusKind::Info,
                    "frozen: this display stops here, the engine goes on; space to go live",
                );
            }
            app.sync();
            Vec::new()
        }
        Action::Resync => {
            app.conn.link = Link::Loading;
            app.say(StatusKind::Info, "reading everything from the engine again");
            vec![Cmd::Resync]
        }
        // Changes go through start_change.
        _ => Vec::new(),
    }
}

/// Switches screen (digits, `:name`): a fresh start, so no way back.
fn go(app: &mut App, screen: Screen) -> Vec<Cmd> {
    app.back.clear();
    if screen == Screen::Run && app.run.run_id.is_empty() {
        // The run selected on the Runs screen, if any.
        let selected = app.list(Screen::Runs).key.clone();
        return match selected {
            Some(id) => open_run(app, id),
            None => {
                app.say(
                    StatusKind::Info,
                    "no run is open: pick one on the Runs screen (2) and press enter",
                );
                Vec::new()
            }
        };
    }
    app.screen = screen;
    app.sync();
    Vec::new()
}

fn go_back(app: &mut App) -> bool {
    let Some(back) = app.back.pop() else {
        return false;
    };
    if let Some((screen, filter)) = back.restore_filter {
        app.list_mut(screen).filter = filter;
    }
    app.screen = back.screen;
    app.sync();
    true
}

fn drill(app: &mut App, to: Screen, filter: Option<String>) {
    let restore_filter = filter.map(|f| {
        let old = std::mem::replace(&mut app.list_mut(to).filter, f);
        (to, old)
    });
    app.back.push(Back {
        screen: app.screen,
        restore_filter,
    });
    app.screen = to;
    let list = app.list_mut(to);
    list.selected = 0;
    list.key = None;
    app.sync();
}

fn open_run(app: &mut App, run_id: String) -> Vec<Cmd> {
    if app.screen != Screen::Run {
        app.back.push(Back {
            screen: app.screen,
            restore_filter: None,
        });
    }
    app.screen = Screen::Run;
    if app.run.run_id == run_id {
        return Vec::new();
    }
    app.run = RunView {
        run_id: run_id.clone(),
        follow: true,
        ..RunView::default()
    };
    // The run looked at stays in the model however old it is; the one
    // looked at before goes the way of the others.
    app.data.runs.pin(Some(run_id.clone()));
    let mut cmds = vec![Cmd::FetchTimeline { run_id }];
    cmds.extend(want_output(app));
    cmds.extend(want_run(app));
    cmds
}

fn enter(app: &mut App) -> Vec<Cmd> {
    let Some(key) = app.selected_key().map(str::to_owned) else {
        return Vec::new();
    };
    let data = app.shown().0;
    match app.screen {
        Screen::Runs => open_run(app, key),
        Screen::Approvals => match data.approvals.get(&key).map(|a| a.run_id.clone()) {
            Some(run) => open_run(app, run),
            None => Vec::new(),
        },
        Screen::Leases => match data.leases.get(&key).map(|l| l.run_id.clone()) {
            Some(run) => open_run(app, run),
            None => Vec::new(),
        },
        Screen::Events => {
            let event = key.parse().ok().and_then(|seq| data.event(seq));
            let (run, worker) = event.map_or((String::new(), String::new()), |e| {
                (e.run_id.clone(), e.worker_id.clone())
            });
            if !run.is_empty() {
                open_run(app, run)
            } else if !worker.is_empty() {
                drill(app, Screen::Workers, Some(worker));
                Vec::new()
            } else {
                // Nothing to open: its detail, as `d` shows it.
                if let Ok(seq) = key.parse() {
                    app.modal = Some(Modal::Detail {
                        of: DetailOf::Event(seq),
                        scroll: 0,
                    });
                }
                Vec::new()
            }
        }
        Screen::Workers => {
            drill(app, Screen::Leases, Some(key));
            Vec::new()
        }
        Screen::Queues | Screen::Quarantines => {
            drill(app, Screen::Runs, Some(key));
            Vec::new()
        }
        Screen::Overview | Screen::Run => Vec::new(),
    }
}

fn move_by(app: &mut App, delta: isize) -> Vec<Cmd> {
    if app.screen == Screen::Run {
        panes::scroll(app, delta);
        return Vec::new();
    }
    if !app.screen.is_list() {
        return Vec::new();
    }
    let len = app.rows.len();
    let screen = app.screen;
    let list = &mut app.lists[screen.index()];
    let to = match delta {
        isize::MIN => 0,
        isize::MAX => len.saturating_sub(1),
        d if d < 0 => list.selected.saturating_sub(d.unsigned_abs()),
        d => list
            .selected
            .saturating_add(d.unsigned_abs())
            .min(len.saturating_sub(1)),
    };
    list.selected = to;
    list.key = app.rows.get(to).cloned();
    if screen == Screen::Events {
        // The newest is at the top: being there is following.
        app.events_follow = to == 0;
    }
    Vec::new()
}

// -------------------------------------------------------------- changes

fn start_change(app: &mut App, action: Action) -> Vec<Cmd> {
    if app.readonly {
        app.say(
            StatusKind::Refused,
            "read-only: this console was started with --readonly, so nothing can be changed from it",
        );
        return Vec::new();
    }
    if let Some(why) = roles::refusal(&app.conn.roles, action) {
        app.say(StatusKind::Refused, why);
        return Vec::new();
    }
    if !app.live() {
        let text = format!(
            "not connected: changes are disabled until the engine is back ({})",
            link_words(app)
        );
        app.say(StatusKind::Refused, text);
        return Vec::new();
    }
    match prepare(app, action) {
        Ok(confirm) => app.modal = Some(Modal::Confirm(Box::new(confirm))),
        Err(why) => app.say(StatusKind::Refused, why),
    }
    Vec::new()
}

/// The connection state in words: "live", "reconnecting in 3s", "never
/// connected, retry in 3s", "engine shutting down", "no word for 20s", ….
pub fn link_words(app: &App) -> String {
    let conn = &app.conn;
    let shut_down = conn.shutdown_at_ms.is_some();
    let never = !conn.connected_once;
    match &conn.link {
        Link::Live => match app.quiet_since() {
            Some(heard) => format!("no word for {}s", (app.now_ms - heard) / 1000),
            None => "live".to_owned(),
        },
        Link::Loading => "loading".to_owned(),
        Link::Connecting { .. } if shut_down => "engine shut down, connecting".to_owned(),
        Link::Connecting { attempt } if never && *attempt > 0 => {
            "never connected, connecting".to_owned()
        }
        Link::Connecting { .. } => "connecting".to_owned(),
        Link::Retrying {
            retry_at_ms,
            attempt,
            ..
        } => {
            let secs = ((retry_at_ms - app.now_ms).max(0) + 999) / 1000;
            if shut_down && *attempt == 0 {
                // The word itself, until the first try to come back.
                "engine shutting down".to_owned()
            } else if shut_down {
                format!("engine shut down, retry in {secs}s")
            } else if never {
                format!("never connected, retry in {secs}s")
            } else {
                format!("reconnecting in {secs}s")
            }
        }
    }
}

/// The confirmation for a change on the current selection, or why there is
/// nothing to change.
fn prepare(app: &App, action: Action) -> Result<Confirm, String> {
    let (data, run_view) = app.shown();
    let now = app.now_ms;
    let selected = app.selected_key();
    let run_of_screen = || -> Result<&Run, String> {
        let id = match app.screen {
            Screen::Run => Some(run_view.run_id.as_str()),
            _ => selected,
        };
        let id = id.ok_or("no run is selected")?;
        data.runs
            .get(id)
            .ok_or_else(|| format!("run {id} is not known here"))
    };
    match action {
        Action::Approve | Action::Reject => {
            let approval = match app.screen {
                Screen::Run => {
                    let run = run_of_screen()?;
                    data.pending_approval_of(&run.id)
                        .ok_or_else(|| format!("run {} waits for no approval", run.name))?
                }
                _ => {
                    let id = selected.ok_or("no approval is selected")?;
                    data.approvals
                        .get(id)
                        .ok_or_else(|| format!("approval {id} is not known here"))?
                }
            };
            if approval.state() != ApprovalState::Pending {
                return Err(format!(
                    "approval {} is already {}",
                    approval.id,
                    word_of::<ApprovalState>(approval.state)
                ));
            }
            let approve = action == Action::Approve;
            let change = if approve {
                Change::Approve {
                    approval: approval.id.clone(),
                }
            } else {
                Change::Reject {
                    approval: approval.id.clone(),
                }
            };
            let votes = approval.decisions.iter().filter(|d| d.approve).count();
            let mut lines = vec![
                format!("approval {}", approval.id),
                format!(
                    "run {} ({}), step {} {}",
                    approval.run_name,
                    approval.run_id,
                    step_number(approval.step_index),
                    approval.step_name
                ),
                format!(
                    "asked by {} {}; {votes} of {} approvals so far",
                    approval.submitted_by,
                    relative(approval.requested_at_ms, now),
                    approval.required.max(1)
                ),
            ];
            lines.push(if approve {
                "approving lets the run go on once enough approvals are in".to_owned()
            } else {
                "rejecting fails the step and the run".to_owned()
            });
            let title = if approve { "Approve" } else { "Reject" };
            Ok(Confirm::new(change, title.to_owned(), lines))
        }
        Action::CancelRun | Action::Retry => {
            let run = run_of_screen()?;
            let state = word_of::<RunState>(run.state);
            let (change, title, effect) = if action == Action::CancelRun {
                if model::run_is_final(run) {
                    return Err(format!("run {} is already {state}", run.name));
                }
                (
                    Change::Cancel {
                        run: run.id.clone(),
                    },
                    "Cancel run",
                    "its running step is stopped and the run ends as cancelled",
                )
            } else {
                if run.state() != RunState::Failed {
                    return Err(format!(
                        "only a failed run can be retried; run {} is {state}",
                        run.name
                    ));
                }
                (
                    Change::Retry {
                        run: run.id.clone(),
                    },
                    "Retry run",
                    "its dead or failed step gets a new attempt budget",
                )
            };
            let mut lines = vec![format!("run {} ({}), {state}", run.name, run.id)];
            if let Some(step) = run.steps.get(run.current_step as usize) {
                lines.push(format!("step {} {}", step_number(step.index), step.name));
            }
            if !run.message.is_empty() {
                lines.push(run.message.clone());
            }
            lines.push(effect.to_owned());
            Ok(Confirm::new(change, title.to_owned(), lines))
        }
        Action::Drain | Action::Undrain | Action::Recycle => {
            let id = selected.ok_or("no worker is selected")?;
            let w = data
                .workers
                .get(id)
                .ok_or_else(|| format!("worker {id} is not known here"))?;
            let state = word_of::<WorkerState>(w.state);
            let (change, title, effect) = match action {
                Action::Drain => {
                    if w.state() != WorkerState::Online {
                        return Err(format!(
                            "only an online worker can be drained; {id} is {state}"
                        ));
                    }
                    (
                        Change::Drain {
                            worker: id.to_owned(),
                        },
                        "Drain worker",
                        format!(
                            "it takes no new work and finishes the {} step(s) it holds",
                            w.lease_ids.len()
                        ),
                    )
                }
                Action::Undrain => {
                    if w.state() != WorkerState::Draining {
                        return Err(format!(
                            "only a draining worker can be undrained; {id} is {state}"
                        ));
                    }
                    (
                        Change::Undrain {
                            worker: id.to_owned(),
                        },
                        "Undrain worker",
                        "it takes work again".to_owned(),
                    )
                }
                _ => {
                    if !matches!(w.state(), WorkerState::Online | WorkerState::Draining) {
                        return Err(format!(
                            "only an online or draining worker can be recycled; {id} is {state}"
                        ));
                    }
                    (
                        Change::Recycle {
                            worker: id.to_owned(),
                        },
                        "Recycle worker",
                        format!(
                            "it drains, then a fresh process replaces it as generation {}",
                            w.generation + 1
                        ),
                    )
                }
            };
            let lines = vec![
                format!(
                    "worker {id} on {}, {state}, generation {}",
                    if w.host.is_empty() { "?" } else { &w.host },
                    w.generation
                ),
                format!(
                    "{}/{} slots busy; queues {}",
                    w.lease_ids.len(),
                    w.slots,
                    w.queues.join(", ")
                ),
                effect,
            ];
            Ok(Confirm::new(change, title.to_owned(), lines))
        }
        Action::PauseResume => {
            let name = selected.ok_or("no queue is selected")?;
            let q = data
                .queues
                .get(name)
                .ok_or_else(|| format!("queue {name} is not known here"))?;
            let q = &q.queue;
            let figures = format!(
                "queue {name}: {} ready, {} delayed, {} running",
                q.ready, q.delayed, q.running
            );
            let (change, title, effect) = if q.paused {
                (
                    Change::Resume {
                        queue: name.to_owned(),
                    },
                    "Resume queue",
                    "its ready steps are handed out to workers again",
                )
            } else {
                (
                    Change::Pause {
                        queue: name.to_owned(),
                    },
                    "Pause queue",
                    "no step is handed out until it is resumed; running steps go on",
                )
            };
            Ok(Confirm::new(
                change,
                title.to_owned(),
                vec![figures, effect.to_owned()],
            ))
        }
        Action::ForceRelease => {
            let id = selected.ok_or("no lease is selected")?;
            let l = data
                .leases
                .get(id)
                .ok_or_else(|| format!("lease {id} is not known here"))?;
            let lines = vec![
                format!("lease {id}, held by {}", l.worker_id),
                format!(
                    "run {} ({}), step {} {}, attempt {}",
                    l.run_name,
                    l.run_id,
                    step_number(l.step_index),
                    l.step_name,
                    l.attempt
                ),
                "the step goes back to its queue, or fails if you say so below; \
                 its worker can no longer report on it"
                    .to_owned(),
            ];
            let change = Change::ForceRelease {
                lease: id.to_owned(),
                fail: false,
            };
            let mut confirm = Confirm::new(change, "Force-release lease".to_owned(), lines);
            confirm.others = data.leases.keys().filter(|k| *k != id).cloned().collect();
            Ok(confirm)
        }
        Action::ClearQuarantine => {
            let name = selected.ok_or("no quarantined run name is selected")?;
            let q = data
                .quarantines
                .get(name)
                .ok_or_else(|| format!("{name} is not quarantined (any more)"))?;
            let active = active_runs(data, name);
            let mut lines = vec![format!(
                "run name {name}, quarantined {} after {} stuck lease(s)",
                relative(q.since_ms, now),
                q.stuck_count
            )];
            if !q.message.is_empty() {
                lines.push(q.message.clone());
            }
            lines.push(format!(
                "new runs of {name} are accepted again, and the queued steps of its {active} \
                 active run(s) are handed out; clear it once the cause is dealt with"
            ));
            Ok(Confirm::new(
                Change::ClearQuarantine {
                    name: name.to_owned(),
                },
                "Clear quarantine".to_owned(),
                lines,
            ))
        }
        _ => Err("nothing to change".to_owned()),
    }
}

fn on_confirm_key(app: &mut App, mut c: Confirm, key: KeyEvent) -> Vec<Cmd> {
    let ctrl = key
        .modifiers
        .contains(crossterm::event::KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Esc => {
            app.say(StatusKind::Info, "nothing changed");
            return Vec::new();
        }
        KeyCode::Tab
            if !key
                .modifiers
                .contains(crossterm::event::KeyModifiers::SHIFT) =>
        {
            c.step_focus(true)
        }
        KeyCode::Tab | KeyCode::BackTab => c.step_focus(false),
        KeyCode::Enter => match c.focus {
            Focus::Cancel => {
                app.say(StatusKind::Info, "nothing changed");
                return Vec::new();
            }
            // Enter in the reason is the end of typing it: OK, unless
            // there is no reason yet.
            Focus::Ok | Focus::Reason => {
                if let Some(cmds) = press_ok(app, &mut c) {
                    return cmds;
                }
            }
            Focus::Fail => {
                c.fail = c.fail.map(|f| !f);
            }
            Focus::Id => c.step_focus(true),
        },
        KeyCode::Left | KeyCode::Right if matches!(c.focus, Focus::Ok | Focus::Cancel) => {
            c.focus = if c.focus == Focus::Ok {
                Focus::Cancel
            } else {
                Focus::Ok
            };
        }
        KeyCode::Char(' ') if c.focus == Focus::Fail => c.fail = c.fail.map(|f| !f),
        _ => match c.focus {
            Focus::Id => c.typed.input(key),
            Focus::Reason => c.reason.input(key),
            Focus::Ok | Focus::Cancel | Focus::Fail => {
                // Typing on a button types into the first field that
                // still needs it, rather than being lost.
                if let KeyCode::Char(ch) = key.code
                    && !ctrl
                {
                    let id_missing = !c.id_typed();
                    if id_missing {
                        c.focus = Focus::Id;
                        c.typed.insert(&ch.to_string());
                    } else {
                        c.focus = Focus::Reason;
                        c.reason.insert(&ch.to_string());
                    }
                }
            }
        },
    }
    // An error goes once what it asked for is done (not on the Enter that
    // raised it).
    if key.code != KeyCode::Enter && c.missing().is_none() {
        c.error = None;
    }
    app.modal = Some(Modal::Confirm(Box::new(c)));
    Vec::new()
}

/// OK pressed: the change to send, or `None` with why not in `c.error`.
fn press_ok(app: &mut App, c: &mut Confirm) -> Option<Vec<Cmd>> {
    if let Some(gone) = &c.gone {
        // The object changed meanwhile: a request now is bound to be
        // refused, so none goes; the dialog closes.
        app.say(StatusKind::Info, format!("nothing changed: {gone}"));
        return Some(Vec::new());
    }
    if !app.live() {
        c.error = Some(format!(
            "not connected ({}): try again once live",
            link_words(app)
        ));
        return None;
    }
    if let Some(why) = roles::refusal(&app.conn.roles, c.change.action()) {
        // The roles changed (a reconnect) while the dialog was open.
        c.error = Some(why);
        return None;
    }
    if let Some(missing) = c.missing() {
        c.error = Some(missing);
        return None;
    }
    let mut change = c.change.clone();
    if let (Change::ForceRelease { fail, .. }, Some(chosen)) = (&mut change, c.fail) {
        *fail = chosen;
    }
    app.say(StatusKind::Pending, format!("{}...", change.doing()));
    Some(vec![Cmd::Change {
        change,
        reason: c.reason.text(),
    }])
}

/// An open dialog's words follow the clock and the data ("asked by ann 3m
/// ago", the votes so far), as long as they are about the same change;
/// once the change no longer applies (the run ended, the approval was
/// decided, the lease released — from the CLI or another console), the
/// dialog says so and OK sends nothing.
fn refresh_confirm(app: &mut App) {
    let Some(Modal::Confirm(c)) = &app.modal else {
        return;
    };
    let gone = still_applies(app.shown().0, &c.change).err();
    let fresh = prepare(app, c.change.action())
        .ok()
        .filter(|fresh| fresh.change == c.change);
    if let Some(Modal::Confirm(c)) = &mut app.modal {
        if let Some(fresh) = fresh {
            c.lines = fresh.lines;
            // Leases come and go: a typed part must still name one only.
            c.others = fresh.others;
        }
        if gone.is_some() {
            c.error = None;
        }
        c.gone = gone;
    }
}

/// The status line after a change went through, in words.
pub fn outcome(change: &Change, changed: &Changed, data: &Data) -> String {
    match (change, changed) {
        (Change::Approve { approval }, Changed::Approval(a)) => {
            if a.state() == ApprovalState::Approved {
                format!("approved {approval}: run {} continues", a.run_name)
            } else {
                let votes = a.decisions.iter().filter(|d| d.approve).count();
                format!(
                    "approval of {approval} recorded: {votes} of {} so far, it stays {}",
                    a.required.max(1),
                    word_of::<ApprovalState>(a.state)
                )
            }
        }
        (Change::Reject { approval }, Changed::Approval(a)) => {
            format!("rejected {approval}: run {} fails", a.run_name)
        }
        (Change::Cancel { run }, Changed::Run(r)) => {
            format!(
                "cancel of run {} ({run}) accepted: it is {}",
                r.name,
                word_of::<RunState>(r.state)
            )
        }
        (Change::Retry { run }, Changed::Run(r)) => {
            format!(
                "run {} ({run}) retried: it is {} again",
                r.name,
                word_of::<RunState>(r.state)
            )
        }
        (Change::Drain { worker }, Changed::Worker(w)) => format!(
            "draining {worker}: no new work; it finishes the {} step(s) it holds",
            w.lease_ids.len()
        ),
        (Change::Undrain { worker }, Changed::Worker(_)) => format!("{worker} takes work again"),
        (Change::Recycle { worker }, Changed::Worker(w)) => format!(
            "recycling {worker}: generation {} is replaced by a fresh process once drained",
            w.generation
        ),
        (Change::Pause { queue }, Changed::Queue(q)) => {
            format!(
                "paused queue {queue}: its {} ready step(s) wait until it is resumed",
                q.ready
            )
        }
        (Change::Resume { queue }, Changed::Queue(q)) => {
            format!(
                "resumed queue {queue}: {} ready step(s) are handed out again",
                q.ready
            )
        }
        (Change::ForceRelease { lease, fail }, Changed::Lease(l)) => {
            let step = format!(
                "step {} {} of run {}",
                step_number(l.step_index),
                l.step_name,
                l.run_name
            );
            let queue = data
                .runs
                .get(&l.run_id)
                .and_then(|r| r.steps.get(l.step_index as usize))
                .map_or(l.queue.clone(), |s| s.queue.clone());
            if *fail {
                format!("force-released lease {lease}: {step} fails")
            } else {
                format!("force-released lease {lease}: {step} goes back to queue {queue}")
            }
        }
        (Change::ClearQuarantine { name }, Changed::Quarantine(_)) => format!(
            "cleared the quarantine of {name}: its runs are taken again ({} active)",
            active_runs(data, name)
        ),
        (change, _) => format!("{} done", change.verb()),
    }
}

// ----------------------------------------------------------------- rows

/// The keys of a list's rows, filtered and in display order.
pub fn rows(data: &Data, screen: Screen, filter: &str, now_ms: i64) -> Vec<String> {
    let words: Vec<String> = filter.split_whitespace().map(str::to_lowercase).collect();
    let keep = |hay: &[&str]| -> bool {
        words.is_empty()
            || words
                .iter()
                .all(|w| hay.iter().any(|h| h.to_lowercase().contains(w.as_str())))
    };
    match screen {
        Screen::Runs => data
            .runs
            .values()
            .rev()
            .filter(|r| {
                if words.is_empty() {
                    return true;
                }
                let state = word_of::<RunState>(r.state);
                let mut hay: Vec<&str> = vec![&r.id, &r.name, &state, &r.submitted_by];
                hay.extend(r.labels.values().map(String::as_str));
                hay.extend(r.steps.iter().map(|s| s.queue.as_str()));
                hay.extend(r.steps.iter().map(|s| s.name.as_str()));
                keep(&hay)
            })
            .map(|r| r.id.clone())
            .collect(),
        Screen::Workers => data
            .workers
            .values()
            .filter(|w| {
                if words.is_empty() {
                    return true;
                }
                let status = model::worker_status(data, w, now_ms);
                let mut hay: Vec<&str> = vec![&w.id, &status.word, &w.host];
                hay.extend(status.note);
                if status.stuck {
                    hay.push("stuck");
                }
                hay.extend(w.queues.iter().map(String::as_str));
                keep(&hay)
            })
            .map(|w| w.id.clone())
            .collect(),
        Screen::Queues => data
            .queues
            .values()
            .filter(|q| {
                keep(&[
                    &q.queue.name,
                    if q.queue.paused { "paused" } else { "active" },
                ])
            })
            .map(|q| q.queue.name.clone())
            .collect(),
        Screen::Approvals => {
            let mut list: Vec<&Approval> = data
                .approvals
                .values()
                .filter(|a| {
                    let state = word_of::<ApprovalState>(a.state);
                    let overdue = if model::overdue(a, now_ms) {
                        "overdue"
                    } else {
                        ""
                    };
                    keep(&[
                        &a.id,
                        &a.run_id,
                        &a.run_name,
                        &a.step_name,
                        &state,
                        &a.submitted_by,
                        overdue,
                    ])
                })
                .collect();
            // Pending first, oldest ask first; then the latest decisions.
            list.sort_by_cached_key(|a| {
                let pending = a.state() == ApprovalState::Pending;
                (
                    !pending,
                    if pending {
                        a.requested_at_ms
                    } else {
                        -a.decided_at_ms
                    },
                    a.id.clone(),
                )
            });
            list.into_iter().map(|a| a.id.clone()).collect()
        }
        Screen::Leases => {
            let mut list: Vec<&Lease> = data
                .leases
                .values()
                .filter(|l| {
                    let mark = if model::lease_stuck(l) {
                        "stuck"
                    } else if model::lease_stale(data, l) {
                        "stale"
                    } else if model::lease_overdue(data, l, now_ms) {
                        "overdue"
                    } else {
                        ""
                    };
                    keep(&[
                        &l.id,
                        &l.run_id,
                        &l.run_name,
                        &l.step_name,
                        &l.worker_id,
                        &l.queue,
                        mark,
                    ])
                })
                .collect();
            // Stuck ones first (someone has to act), then stale ones,
            // then the soonest to expire.
            list.sort_by_cached_key(|l| {
                (
                    !model::lease_stuck(l),
                    !model::lease_stale(data, l),
                    l.expires_at_ms,
                    l.id.clone(),
                )
            });
            list.into_iter().map(|l| l.id.clone()).collect()
        }
        Screen::Quarantines => {
            let mut list: Vec<&Quarantine> = data
                .quarantines
                .values()
                .filter(|q| keep(&[&q.name, &q.message]))
                .collect();
            // The latest first.
            list.sort_by_cached_key(|q| (-q.since_ms, q.name.clone()));
            list.into_iter().map(|q| q.name.clone()).collect()
        }
        Screen::Events => data
            .events
            .iter()
            .rev()
            .filter(|e| {
                if words.is_empty() {
                    return true;
                }
                let subject = subject(e);
                keep(&[
                    &e.kind,
                    &e.actor,
                    &e.message,
                    &e.reason,
                    &subject,
                    &e.run_id,
                    &e.worker_id,
                    &e.lease_id,
                    &e.approval_id,
                    &e.queue,
                ])
            })
            .map(|e| e.seq.to_string())
            .collect(),
        Screen::Overview | Screen::Run => Vec::new(),
    }
}

/// Runs of a name that have not ended: while the name is quarantined,
/// their queued steps wait.
pub fn active_runs(data: &Data, name: &str) -> usize {
    data.runs
        .values()
        .filter(|r| r.name == name && !model::run_is_final(r))
        .count()
}

/// How long ago, in whole seconds and up: "0s", "3s", "5m12s". Under a
/// second is "0s": engine and console clocks are rarely closer than that.
pub fn age(from_ms: i64, now_ms: i64) -> String {
    let ms = u64::try_from(now_ms.saturating_sub(from_ms)).unwrap_or(0);
    duration(ms - ms % 1000)
}
