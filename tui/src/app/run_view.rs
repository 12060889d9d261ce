//! The Run screen's run: its timeline, the tail of its output, and the
//! reads that keep them current.

use opsdeck_proto::v1::{Event, OutputChunk, Run};

use super::{App, Cmd, LOG_LINES};
use crate::model;
use crate::text::output::{join_chunks, last_lines};
use crate::text::step_number;

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

/// A fetch of the open run's output, unless one is out (then one more is
/// made when it is back).
pub(super) fn want_output(app: &mut App) -> Vec<Cmd> {
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
pub(super) fn want_run(app: &mut App) -> Vec<Cmd> {
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

pub(super) fn on_run(app: &mut App, run_id: &str, result: Result<Run, String>) -> Vec<Cmd> {
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

pub(super) fn on_output(
    app: &mut App,
    run_id: &str,
    result: Result<Vec<OutputChunk>, String>,
) -> Vec<Cmd> {
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

pub(super) fn merge_timeline(timeline: &mut Vec<Event>, events: Vec<Event>) {
    for mut e in events {
        model::strip(&mut e);
        match timeline.binary_search_by_key(&e.seq, |t| t.seq) {
            Ok(_) => {}
            Err(at) => timeline.insert(at, e),
        }
    }
}
