//! The console's model and its `update`, in the Elm style: one [`App`]
//! holds everything the screen shows, [`update`] applies one [`Msg`] (a key
//! press, something from the watch, an engine call's result, a tick) and
//! returns the [`Cmd`]s to carry out (engine calls, fetches, quitting). The
//! views read `&App` and nothing else; nothing here draws or does I/O (a
//! change's engine call is a future the console runs), so every behaviour
//! tests by feeding messages.
//!
//! No view types live here: colours, layout and ratatui are the views'.
//!
//! Beside it, in `app/`, one file per concern: [`screen`] (the screens
//! and the palette), [`link`] (the connection and what its words do),
//! [`nav`] (keys: moving, filtering, switching screens, drilling in),
//! [`change`] (the table of changes, their dialogs and handlers),
//! [`run_view`] (the Run screen's run, timeline and output), [`rows`]
//! (which items each list shows), [`order`] (the lists' order: urgency, or
//! the column a sort key chose), [`detail`] (the fields the `d` overlay
//! shows), [`marks`] (rows marked for one change to all), [`panes`] (the Run screen's timeline and output: focus,
//! scrolling, search, wrap), [`copy`] (`y`, through OSC 52) and [`field`]
//! (a line being typed).

use std::collections::{BTreeSet, VecDeque};

use crossterm::event::KeyEvent;
use opsdeck_proto::v1::{Event, Lease, OutputChunk, OutputPosition, Queue, Run, Worker};

use crate::cli::error::status_hint;
use crate::conn::{Update, status_words};
use crate::keys::Action;
use crate::model::Data;
use crate::roles;

pub mod change;
pub mod copy;
pub mod detail;
pub mod field;
pub mod link;
pub mod marks;
pub mod nav;
pub mod order;
pub mod panes;
pub mod rows;
pub mod run_view;
pub mod screen;

pub use change::{
    Change, Changed, Confirm, Focus, ID_PART_MIN, Kind, id_matches, outcome, still_applies,
};
pub use copy::osc52;
pub use detail::{DetailOf, Field, absolute, fields as detail_fields, when};
pub use field::TextField;
pub use link::{Connection, Link, link_words};
pub use order::Sort;
pub use rows::{active_runs, age, rows};
pub use run_view::{LogLine, Pane, RunView, log_lines};
pub use screen::{Palette, Screen};

/// A list screen's selection and filter. The selection follows its item
/// (by key) as rows come and go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListState {
    pub selected: usize,
    pub key: Option<String>,
    pub filter: String,
    /// The column chosen with `S`, `N` or `A`; `None` orders by urgency.
    pub sort: Sort,
    /// The rows marked with `space` or `*`, by key ([`marks`]).
    pub marked: BTreeSet<String>,
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
    pub lists: [ListState; 10],
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
    /// A chunk of the followed run's output, as it was written.
    OutputChunk {
        run_id: String,
        chunk: OutputChunk,
    },
    /// The followed output's stream ended: the run is over, or the
    /// stream broke (why).
    OutputEnded {
        run_id: String,
        result: Result<(), String>,
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
    /// Follow the run's output live from this position (after what was
    /// read); replaces any output followed before.
    FollowOutput {
        run_id: String,
        from: Option<OutputPosition>,
    },
    /// Stop following output: the Run screen was left.
    StopOutput,
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

    pub(crate) fn list_mut(&mut self, screen: Screen) -> &mut ListState {
        &mut self.lists[screen.index()]
    }

    /// Whether changes may be made now (connected and live).
    pub fn live(&self) -> bool {
        self.conn.link == Link::Live
    }

    pub(crate) fn say(&mut self, kind: StatusKind, text: impl Into<String>) {
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
        let Action::Change(kind) = action else {
            return true;
        };
        !self.readonly && roles::allows(&self.conn.roles, action) && change::applies(self, kind)
    }
}

/// Applies one message; returns what to do next.
pub fn update(app: &mut App, msg: Msg) -> Vec<Cmd> {
    let mut cmds = handle(app, msg);
    // Output is followed for the Run screen alone: leaving it ends the
    // stream (coming back reads the output again, which follows again).
    if app.run.streaming && app.screen != Screen::Run {
        app.run.streaming = false;
        cmds.push(Cmd::StopOutput);
    }
    cmds
}

fn handle(app: &mut App, msg: Msg) -> Vec<Cmd> {
    match msg {
        Msg::Key(key) => {
            app.sync();
            nav::on_key(app, key)
        }
        Msg::Conn(update) => {
            let cmds = link::on_conn(app, update);
            change::refresh_confirm(app);
            cmds
        }
        Msg::Done { change, result } => {
            match result {
                Ok(changed) => {
                    let text = outcome(&change, &changed, &app.data);
                    app.say(StatusKind::Done, text);
                    marks::done(app, &change);
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
        Msg::Output { run_id, result } => run_view::on_output(app, &run_id, result),
        Msg::OutputChunk { run_id, chunk } => run_view::on_chunk(app, &run_id, chunk),
        Msg::OutputEnded { run_id, result } => run_view::on_output_ended(app, &run_id, result),
        Msg::Timeline { run_id, result } => {
            if app.run.run_id == run_id {
                match result {
                    Ok(events) => run_view::merge_timeline(&mut app.run.timeline, events),
                    Err(why) => app.say(
                        StatusKind::Refused,
                        format!("the run's events cannot be read: {why}"),
                    ),
                }
                app.run.timeline_loaded = true;
            }
            Vec::new()
        }
        Msg::Run { run_id, result } => run_view::on_run(app, &run_id, result),
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
            change::refresh_confirm(app);
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
    change::refresh_confirm(app);
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
    // A running run's output comes on a stream; when that broke (the
    // engine restarting, say), read it again, which follows it again.
    if app.screen == Screen::Run && app.live() && app.frozen.is_none() {
        let running = app
            .data
            .runs
            .get(&app.run.run_id)
            .is_some_and(|r| !run_view::is_final(r.state()));
        if running && !app.run.streaming && app.now_ms - app.run.log_fetched_at_ms >= LOG_REFRESH_MS
        {
            cmds.extend(run_view::want_output(app));
        }
    }
    cmds
}
