//! Runs: `submit`, `runs`, `run`, `cancel`, `retry`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::runs_client::RunsClient;
use opsdeck_proto::v1::{
    CancelRunRequest, GetOutputRequest, GetRunRequest, ListRunsRequest, OutputChunk,
    RetryRunRequest, Run, RunState, Step, StepKind, StepState, SubmitRunRequest,
};
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::error::CliError;
use super::output::note;
use super::table::{Cell, Fields, Table, Tone, clean};
use super::time::{now_ms, relative, span};
use super::{Ctx, Reason, step_number, word};
use crate::client::{Authed, EventFollower, Followed, is_transient};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The run spec, TOML; `-` reads it from stdin
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Wait until the run is over, then show it; exit 0 only if it succeeded
    #[arg(long)]
    pub wait: bool,
    /// Submitting again with the same key returns the first run instead of a new one
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub reason: Reason,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs in this state; repeat or separate with commas (queued,
    /// running, waiting_approval, succeeded, failed, cancelled)
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = word::<RunState>)]
    pub state: Vec<RunState>,
    /// At most this many runs [default: the engine's, 100]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's id
    #[arg(value_name = "ID")]
    pub id: String,
    /// Lines of output to show per step, from its last attempt; 0 for none
    #[arg(long, value_name = "LINES", default_value_t = DEFAULT_TAIL_LINES)]
    pub tail: usize,
}

/// `cancel RUN` and `retry RUN`.
#[derive(Debug, Args)]
pub struct RunChange {
    /// The run's id
    #[arg(value_name = "RUN")]
    pub id: String,
    #[command(flatten)]
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug)]
pub enum RunAction {
    Cancel,
    Retry,
}

const DEFAULT_TAIL_LINES: usize = 20;

/// How often `submit --wait` asks for the run besides following its events:
/// a safety net should an event that ends the run not carry it.
const WAIT_POLL: Duration = Duration::from_secs(5);

pub async fn submit(ctx: &mut Ctx, args: SubmitArgs) -> Result<ExitCode, CliError> {
    // Before connecting: a usage error is reported as one (exit 2) even
    // when the engine is down.
    let spec = read_spec(&args.file)?;
    let request = SubmitRunRequest {
        spec,
        idempotency_key: args.idempotency_key.unwrap_or_default(),
        reason: args.reason.text(),
    };
    let mut client = ctx.engine().await?.runs();
    let mut response = ctx.call(client.submit_run(request)).await?;
    let run = response.run.take().ok_or_else(|| {
        ctx.refused(tonic::Status::internal(
            "the engine answered without the run",
        ))
    })?;
    let json = ctx.printer.json();
    if !response.created && !json {
        note(&format!(
            "run {} was submitted before with this idempotency key",
            run.id
        ));
    }
    if !args.wait {
        if json {
            response.run = Some(run);
            ctx.printer.document(&response)?;
        } else {
            ctx.printer.one(&run, |runs| run_table(runs, now_ms()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    if !json {
        note(&format!(
            "run {} ({}) submitted; waiting for it to end",
            run.id, run.name
        ));
    }
    let run = wait_until_final(ctx, run, !json).await?;
    let succeeded = run.state() == RunState::Succeeded;
    if json {
        response.run = Some(run);
        ctx.printer.document(&response)?;
    } else {
        show_run(ctx, &mut client, run, DEFAULT_TAIL_LINES).await?;
    }
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_spec(file: &Path) -> Result<String, CliError> {
    let (from, text) = if file == Path::new("-") {
        // Blocking is fine: nothing else runs while the spec is read.
        let mut text = String::new();
        (
            "stdin".to_owned(),
            io::stdin().read_to_string(&mut text).map(|_| text),
        )
    } else {
        (file.display().to_string(), std::fs::read_to_string(file))
    };
    let text =
        text.map_err(|e| CliError::Usage(format!("cannot read the run spec from {from}: {e}")))?;
    if text.trim().is_empty() {
        return Err(CliError::Usage(format!(
            "the run spec from {from} is empty"
        )));
    }
    Ok(text)
}

fn is_final(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::Cancelled
    )
}

/// Follows the run's events until one shows it final, then reads it whole.
/// Also asks for the run every few seconds, in case the event that ends it
/// does not carry it; only that, if the engine cannot stream events. Engine
/// restarts on the way are waited out, not reported as failures.
async fn wait_until_final(ctx: &mut Ctx, run: Run, progress: bool) -> Result<Run, CliError> {
    if is_final(run.state()) {
        return Ok(run);
    }
    let engine = ctx.engine().await?.clone();
    let mut client = engine.runs();
    let mut follower = EventFollower::new(&engine, run.id.clone(), 0);
    let mut following = true;
    let mut poll = tokio::time::interval(WAIT_POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate and the run was just read.
    poll.tick().await;
    loop {
        tokio::select! {
            next = follower.next(), if following => match next {
                Ok(Followed::Event(event)) => {
                    if progress {
                        note(&format!("  {:<20} {}", event.kind, clean(&event.message, ' ')));
                    }
                    let ended = event.run.as_ref().is_some_and(|r| r.id == run.id && is_final(r.state()));
                    if ended {
                        break;
                    }
                }
                Ok(Followed::Reconnecting { after, why }) => note(&format!(
                    "lost the run's events ({why}); following again in {}",
                    span(after)
                )),
                Err(status) if status.code() == Code::Unimplemented => {
                    note("the engine cannot stream events; asking for the run every few seconds");
                    following = false;
                }
                Err(status) => return Err(ctx.refused(status)),
            },
            _ = poll.tick() => match get_run(ctx, &mut client, &run.id).await {
                Ok(now) if is_final(now.state()) => return Ok(now),
                Ok(_) => {}
                Err(CliError::Engine { status, .. }) if is_transient(&status) => {}
                Err(e) => return Err(e),
            },
        }
    }
    get_run(ctx, &mut client, &run.id).await
}

async fn get_run(ctx: &Ctx, client: &mut RunsClient<Authed>, id: &str) -> Result<Run, CliError> {
    ctx.call(client.get_run(GetRunRequest { id: id.to_owned() }))
        .await
}

pub async fn list(ctx: &mut Ctx, args: ListArgs) -> Result<(), CliError> {
    let request = ListRunsRequest {
        states: args.state.iter().map(|s| *s as i32).collect(),
        limit: args.limit.unwrap_or(0),
    };
    let mut client = ctx.engine().await?.runs();
    let runs = ctx.call(client.list_runs(request)).await?.runs;
    ctx.printer
        .list(&runs, "no runs", |runs| run_table(runs, now_ms()))
}

pub async fn show(ctx: &mut Ctx, args: ShowArgs) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.runs();
    let run = get_run(ctx, &mut client, &args.id).await?;
    show_run(ctx, &mut client, run, args.tail).await
}

pub async fn change(ctx: &mut Ctx, action: RunAction, args: RunChange) -> Result<(), CliError> {
    let (id, reason) = (args.id, args.reason.text());
    let mut client = ctx.engine().await?.runs();
    let run = match action {
        RunAction::Cancel => {
            ctx.call(client.cancel_run(CancelRunRequest { id, reason }))
                .await?
        }
        RunAction::Retry => {
            ctx.call(client.retry_run(RetryRunRequest { id, reason }))
                .await?
        }
    };
    ctx.printer.one(&run, |runs| run_table(runs, now_ms()))
}

/// `run ID` in JSON: the run, and the output the engine kept of each step.
#[derive(Debug, Serialize)]
struct RunWithOutput<'a> {
    run: &'a Run,
    output: Vec<OutputText>,
}

/// Output chunks in a row of the same step, attempt and stream, joined and
/// read as text, so that JSON readers get strings rather than byte arrays.
#[derive(Debug, PartialEq, Serialize)]
pub struct OutputText {
    pub step_index: u32,
    pub attempt: u32,
    pub stream: String,
    pub text: String,
    pub truncated: bool,
}

async fn show_run(
    ctx: &Ctx,
    client: &mut RunsClient<Authed>,
    run: Run,
    tail_lines: usize,
) -> Result<(), CliError> {
    let output = if tail_lines == 0 {
        Vec::new()
    } else {
        let request = GetOutputRequest {
            run_id: run.id.clone(),
            step_index: None,
            // Enough bytes for the lines asked for, unless they are very long.
            tail_bytes: (tail_lines as u64)
                .saturating_mul(512)
                .clamp(4096, 1024 * 1024),
        };
        // The run is what was asked for; its output is a bonus that must
        // not hide it.
        match ctx.call(client.get_output(request)).await {
            Ok(response) => join_chunks(&response.chunks),
            Err(e) => {
                note(&format!("warning: the steps' output cannot be shown: {e}"));
                Vec::new()
            }
        }
    };
    if ctx.printer.json() {
        return ctx.printer.document(&RunWithOutput { run: &run, output });
    }
    ctx.printer.text(&run_detail(
        &run,
        &output,
        tail_lines,
        now_ms(),
        ctx.printer.color(),
    ))
}

pub fn join_chunks(chunks: &[OutputChunk]) -> Vec<OutputText> {
    let mut joined: Vec<(u32, u32, &str, Vec<u8>, bool)> = Vec::new();
    for c in chunks {
        match joined.last_mut() {
            Some((step, attempt, stream, data, truncated))
                if (*step, *attempt, *stream) == (c.step_index, c.attempt, c.stream.as_str()) =>
            {
                data.extend_from_slice(&c.data);
                *truncated |= c.truncated;
            }
            _ => joined.push((
                c.step_index,
                c.attempt,
                &c.stream,
                c.data.clone(),
                c.truncated,
            )),
        }
    }
    joined
        .into_iter()
        .map(
            |(step_index, attempt, stream, data, truncated)| OutputText {
                step_index,
                attempt,
                stream: stream.to_owned(),
                text: String::from_utf8_lossy(&data).into_owned(),
                truncated,
            },
        )
        .collect()
}

/// The runs table: one row per run.
pub fn run_table(runs: &[Run], now: i64) -> Table {
    let mut table = Table::new(&["ID", "NAME", "STATE", "STEP", "BY", "CREATED"]);
    for run in runs {
        let step = match run.steps.get(run.current_step as usize) {
            Some(s) => format!("{}/{} {}", step_number(s.index), run.steps.len(), s.name),
            None => String::new(),
        };
        table.row(vec![
            Cell::new(&run.id),
            Cell::new(&run.name),
            Cell::state(word_of::<RunState>(run.state)),
            Cell::new(step),
            Cell::new(&run.submitted_by),
            Cell::new(relative(run.created_at_ms, now)),
        ]);
    }
    table
}

fn step_table(steps: &[Step], now: i64) -> Table {
    let mut table = Table::new(&[
        "STEP", "NAME", "KIND", "STATE", "QUEUE", "ATTEMPT", "WORKER", "EXIT", "STARTED",
        "FINISHED", "NOTE",
    ]);
    for step in steps {
        let exec = step.kind() == StepKind::Exec;
        let attempt = if exec && step.attempt > 0 {
            format!("{}/{}", step.attempt, step.max_attempts)
        } else {
            String::new()
        };
        let exit = if step.has_exit_code {
            step.exit_code.to_string()
        } else {
            String::new()
        };
        let mut note = Vec::new();
        if step.state() == StepState::RetryWait && step.next_attempt_at_ms > 0 {
            note.push(format!(
                "next attempt {}",
                relative(step.next_attempt_at_ms, now)
            ));
        }
        if !step.approval_id.is_empty() {
            note.push(format!("approval {}", step.approval_id));
        }
        if !step.message.is_empty() {
            note.push(step.message.clone());
        }
        table.row(vec![
            Cell::new(step_number(step.index).to_string()),
            Cell::new(&step.name),
            Cell::new(word_of::<StepKind>(step.kind)),
            Cell::state(word_of::<StepState>(step.state)),
            Cell::new(&step.queue),
            Cell::new(attempt),
            Cell::new(&step.worker_id),
            Cell::new(exit),
            Cell::new(relative(step.started_at_ms, now)),
            Cell::new(relative(step.finished_at_ms, now)),
            Cell::new(note.join("; ")),
        ]);
    }
    table
}

/// `run ID` as text: the run's fields, its steps, then the tail of each
/// step's last attempt.
fn run_detail(
    run: &Run,
    output: &[OutputText],
    tail_lines: usize,
    now: i64,
    color: bool,
) -> String {
    let state = word_of::<RunState>(run.state);
    let mut fields = Fields::new();
    fields
        .field("run", run.id.as_str())
        .field("name", run.name.as_str());
    fields.field("state", Cell::state(&state));
    if !run.message.is_empty() {
        fields.field("message", run.message.as_str());
    }
    if !run.labels.is_empty() {
        let labels: BTreeMap<_, _> = run.labels.iter().collect();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.field("labels", labels.join(" "));
    }
    let by = if run.submitted_by.is_empty() {
        "?"
    } else {
        &run.submitted_by
    };
    fields.field(
        "submitted",
        format!("{} by {by}", relative(run.created_at_ms, now)),
    );
    if run.finished_at_ms > 0 {
        fields.field("finished", relative(run.finished_at_ms, now));
    } else {
        fields.field("updated", relative(run.updated_at_ms, now));
    }
    if !run.idempotency_key.is_empty() {
        fields.field("key", run.idempotency_key.as_str());
    }
    let mut out = fields.render(color);
    if !run.steps.is_empty() {
        out.push('\n');
        out.push_str(&step_table(&run.steps, now).render(color));
    }
    for step in &run.steps {
        out.push_str(&step_tail(step, output, tail_lines, color));
    }
    out
}

/// The last lines of a step's last attempt with output, under a heading;
/// nothing when it has none.
fn step_tail(step: &Step, output: &[OutputText], lines: usize, color: bool) -> String {
    let ours = output.iter().filter(|o| o.step_index == step.index);
    let Some(attempt) = ours.clone().map(|o| o.attempt).max() else {
        return String::new();
    };
    let last: Vec<&OutputText> = ours.filter(|o| o.attempt == attempt).collect();
    let text: String = last.iter().map(|o| o.text.as_str()).collect();
    let tail = last_lines(&text, lines);
    if tail.is_empty() {
        return String::new();
    }
    let lines = match tail.len() {
        1 => "last line".to_owned(),
        n => format!("last {n} lines"),
    };
    let mut heading = format!(
        "--- step {} {}, attempt {attempt}, {lines}",
        step_number(step.index),
        step.name,
    );
    if last.iter().any(|o| o.truncated) {
        heading.push_str(" (output was capped by the engine)");
    }
    let mut out = format!("\n{}\n", Cell::toned(heading, Tone::Dim).paint(color));
    for line in tail {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The last `n` lines of a step's output, safe to print. A carriage return
/// rewrites its line (progress bars), so only what follows the last one is
/// kept, as a terminal would have shown it.
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() || n == 0 {
        return Vec::new();
    }
    let lines: Vec<&str> = text.split('\n').collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let shown = line.rsplit('\r').next().unwrap_or(line);
            clean(&shown.replace('\t', "    "), '?')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn step(index: u32, name: &str, state: StepState) -> Step {
        Step {
            index,
            name: name.into(),
            kind: StepKind::Exec as i32,
            state: state as i32,
            queue: "build".into(),
            attempt: 1,
            max_attempts: 3,
            worker_id: "w-1".into(),
            started_at_ms: NOW - 60_000,
            ..Step::default()
        }
    }

    fn run() -> Run {
        Run {
            id: "01HRUN".into(),
            name: "deploy-api".into(),
            submitted_by: "ann".into(),
            state: RunState::Running as i32,
            created_at_ms: NOW - 312_000,
            updated_at_ms: NOW - 5_000,
            current_step: 1,
            steps: vec![
                Step {
                    has_exit_code: true,
                    finished_at_ms: NOW - 30_000,
                    ..step(0, "build", StepState::Succeeded)
                },
                step(1, "deploy", StepState::Running),
            ],
            ..Run::default()
        }
    }

    fn chunk(step_index: u32, attempt: u32, stream: &str, data: &str) -> OutputChunk {
        OutputChunk {
            step_index,
            attempt,
            stream: stream.into(),
            data: data.into(),
            ..OutputChunk::default()
        }
    }

    #[test]
    fn runs_table_shows_state_words_step_and_age() {
        assert_eq!(
            run_table(&[run()], NOW).render(false),
            "ID      NAME        STATE    STEP        BY   CREATED\n\
             01HRUN  deploy-api  running  2/2 deploy  ann  5m12s ago\n"
        );
    }

    #[test]
    fn run_detail_shows_fields_steps_and_the_last_attempts_tail() {
        let output = join_chunks(&[
            chunk(0, 1, "stdout", "compiling\n"),
            chunk(1, 1, "stdout", "old attempt\n"),
            chunk(1, 2, "stdout", "one\ntwo\n"),
            chunk(1, 2, "stderr", "three\n"),
        ]);
        let text = run_detail(&run(), &output, 2, NOW, false);
        assert_eq!(
            text,
            "run        01HRUN\n\
             name       deploy-api\n\
             state      running\n\
             submitted  5m12s ago by ann\n\
             updated    5s ago\n\
             \n\
             STEP  NAME    KIND  STATE      QUEUE  ATTEMPT  WORKER  EXIT  STARTED  FINISHED  NOTE\n\
             1     build   exec  succeeded  build  1/3      w-1     0     1m ago   30s ago   -\n\
             2     deploy  exec  running    build  1/3      w-1     -     1m ago   -         -\n\
             \n\
             --- step 1 build, attempt 1, last line\n  compiling\n\
             \n\
             --- step 2 deploy, attempt 2, last 2 lines\n  two\n  three\n"
        );
    }

    #[test]
    fn chunks_of_one_stream_are_joined_into_text() {
        let mut capped = chunk(0, 1, "stdout", "b");
        capped.truncated = true;
        let joined = join_chunks(&[
            chunk(0, 1, "stdout", "a"),
            capped,
            chunk(0, 1, "stderr", "c"),
        ]);
        assert_eq!(joined.len(), 2);
        assert_eq!((joined[0].text.as_str(), joined[0].truncated), ("ab", true));
        assert_eq!(
            (joined[1].stream.as_str(), joined[1].text.as_str()),
            ("stderr", "c")
        );
        let json = serde_json::to_value(&joined[0]).unwrap();
        assert_eq!(json["text"], "ab");
    }

    #[test]
    fn last_lines_keeps_what_a_terminal_would_show() {
        assert_eq!(last_lines("a\nb\nc\n", 2), vec!["b", "c"]);
        assert_eq!(
            last_lines("10%\r50%\r100%\r\ndone\r\n", 5),
            vec!["100%", "done"]
        );
        assert_eq!(last_lines("\x1b[32mok\x1b[0m\tx\x07", 1), vec!["ok    x?"]);
        assert!(last_lines("", 5).is_empty());
        assert!(last_lines("a\n", 0).is_empty());
    }

    #[test]
    fn an_unreadable_or_empty_spec_is_a_usage_error() {
        let e = read_spec(Path::new("/no/such/spec.toml")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("/no/such/spec.toml"), "{e}");
        let dir = std::env::temp_dir().join(format!("opsdeck-spec-{}", std::process::id()));
        std::fs::write(&dir, "  \n").unwrap();
        let e = read_spec(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}
