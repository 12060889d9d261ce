//! Runs: `submit`, `runs`, `run`, `cancel`, `retry` (of many runs at once:
//! [`super::bulk`]).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::runs_client::RunsClient;
use opsdeck_proto::v1::{
    CancelRunRequest, GetOutputRequest, GetRunRequest, IdKind, ListRunsRequest, ListRunsResponse,
    RetryRunRequest, Run, RunState, Step, StepKind, StepState, SubmitRunRequest, SubmitRunsRequest,
    SubmitRunsResponse,
};
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::error::CliError;
use super::output::note;
use super::table::{Cell, Fields, Table, Tone};
use super::{Ctx, Reason, word};
use crate::client::{Authed, EventFollower, Followed, is_transient};
use crate::text::output::{OutputText, join_chunks, last_lines};
use crate::text::time::{Clock, When, now_ms, span};
use crate::text::{clean, step_number};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Run specs, TOML; `-` reads one from stdin. Several files (or
    /// --count) are submitted together, checked all before any is made
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Submit each file this many times
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,
    /// Wait until the run is over, then show it; exit 0 only if it
    /// succeeded (one file, without --count)
    #[arg(long)]
    pub wait: bool,
    /// Submitting again with the same key returns the first run instead
    /// of a new one (one file, without --count)
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// A value for a parameter the spec declares under [params]; repeat
    /// for several
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = label)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub reason: Reason,
}

/// `retry RUN [-p NAME=VALUE]...`, or `retry` of every failed run a
/// filter matches.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The run's id, or a unique prefix or suffix of it (6 characters or
    /// more); or, instead, a filter (--name, --label, --state, ...)
    #[arg(
        value_name = "RUN",
        required_unless_present = "RunFilterArgs",
        conflicts_with_all = ["RunFilterArgs", "BulkArgs"]
    )]
    pub id: Option<String>,
    /// Instead of going on from the failed step: a new run of the same
    /// spec with this parameter changed (the others as the run had them),
    /// linked to it; repeat for several (with RUN only)
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = label, conflicts_with_all = ["RunFilterArgs", "BulkArgs"])]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub filter: RunFilterArgs,
    #[command(flatten)]
    pub bulk: super::bulk::BulkArgs,
    #[command(flatten)]
    pub reason: Reason,
}

/// Which runs: the filters `runs` lists by and `cancel` and `retry` act on.
#[derive(Debug, Default, Args)]
pub struct RunFilterArgs {
    /// Only runs in this state; repeat or separate with commas (queued,
    /// running, waiting_approval, succeeded, failed, cancelled)
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = word::<RunState>)]
    pub state: Vec<RunState>,
    /// Only runs of this name: exact, or a prefix ending in `*` (`deploy-*`)
    #[arg(long, value_name = "PATTERN")]
    pub name: Option<String>,
    /// Only runs carrying this label; repeat for several (all must match)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// Only runs submitted by this identity
    #[arg(long, value_name = "IDENTITY")]
    pub by: Option<String>,
    /// Only runs created since then: a span ago (30m, 2h, 1d12h) or an RFC
    /// 3339 time (2026-03-01T12:00:00Z)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<When>,
    /// Only runs created before then, as --since takes it
    #[arg(long, value_name = "WHEN")]
    pub until: Option<When>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: RunFilterArgs,
    /// Runs per page [default: the engine's, 100; at most 1000]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Start at this page: the token the previous page ended with
    #[arg(long, value_name = "TOKEN")]
    pub page: Option<String>,
    /// Every page, following each page's token to the end of the history
    #[arg(long)]
    pub all: bool,
}

/// `--label KEY=VALUE`.
pub fn label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, not {text:?}")),
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's id, or a unique prefix or suffix of it (6 characters or more)
    #[arg(value_name = "ID")]
    pub id: String,
    /// Lines of output to show per step, from its last attempt; 0 for none
    #[arg(long, value_name = "LINES", default_value_t = DEFAULT_TAIL_LINES)]
    pub tail: usize,
}

/// `cancel RUN`, or `cancel` of every run a filter matches.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run's id, or a unique prefix or suffix of it (6 characters or
    /// more); or, instead, a filter (--name, --label, --state, ...)
    #[arg(
        value_name = "RUN",
        required_unless_present = "RunFilterArgs",
        conflicts_with_all = ["RunFilterArgs", "BulkArgs"]
    )]
    pub id: Option<String>,
    #[command(flatten)]
    pub filter: RunFilterArgs,
    #[command(flatten)]
    pub bulk: super::bulk::BulkArgs,
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

/// Runs a `SubmitRuns` call takes at most.
pub const SUBMIT_MAX_RUNS: usize = 10_000;
/// Spec bytes sent in one `SubmitRuns` call at most: well under the
/// engine's default limit on a request (16 MiB), whatever the specs' size.
const SUBMIT_MAX_BYTES: usize = 8 * 1024 * 1024;

pub async fn submit(ctx: &mut Ctx, args: SubmitArgs) -> Result<ExitCode, CliError> {
    // Before connecting: a usage error is reported as one (exit 2) even
    // when the engine is down.
    let [file] = args.files.as_slice() else {
        return submit_many(ctx, args).await;
    };
    if args.count.is_some() {
        return submit_many(ctx, args).await;
    }
    let spec = read_spec(file)?;
    let request = SubmitRunRequest {
        spec,
        // Every submit carries a key, so that asking again after an
        // ambiguous failure cannot make a second run.
        idempotency_key: args.idempotency_key.unwrap_or_else(fresh_key),
        reason: args.reason.text(),
        params: args.params.iter().cloned().collect(),
    };
    let mut response = retrying(ctx, |mut client| {
        let request = request.clone();
        async move { client.submit_run(request).await }
    })
    .await?;
    let mut client = ctx.engine().await?.runs();
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
            ctx.printer
                .one(&run, |runs| run_table(runs, ctx.printer.clock()))?;
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

/// What `submit` of several runs cannot do, said before anything is read
/// or sent.
fn check_many(args: &SubmitArgs) -> Result<(), CliError> {
    if args.wait {
        return Err(CliError::Usage(
            "--wait follows one run: submit one file without --count to wait for it, or \
             watch several with `opsdeck events --follow`"
                .to_owned(),
        ));
    }
    if args.idempotency_key.is_some() {
        return Err(CliError::Usage(
            "an idempotency key names one run: give it with one file and without --count"
                .to_owned(),
        ));
    }
    if args.files.iter().filter(|f| *f == Path::new("-")).count() > 1 {
        return Err(CliError::Usage(
            "stdin (`-`) can be read only once".to_owned(),
        ));
    }
    Ok(())
}

/// A fresh idempotency key for a submit that names none.
fn fresh_key() -> String {
    format!("cli-{:024x}", rand::random::<u128>() >> 32)
}

/// How often a submit is asked again after a transport error.
const SUBMIT_TRIES: u32 = 5;

/// Whether `status` leaves it unknown if the call took effect: the
/// connection broke or timed out rather than the engine answering.
fn ambiguous(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => status.message().contains("transport"),
        _ => false,
    }
}

/// A submit, asked again on a new connection after an ambiguous failure
/// (a leader killed mid-call, a dropped connection): its idempotency keys
/// make the answer the runs of the first attempt if it did commit, so
/// `submit` makes each run once from the caller's side.
async fn retrying<T, F, Fut>(ctx: &mut Ctx, mut call: F) -> Result<T, CliError>
where
    F: FnMut(opsdeck_proto::v1::runs_client::RunsClient<crate::client::Authed>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut pause = std::time::Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let client = ctx.engine().await?.runs();
        let status = match tokio::time::timeout(crate::cli::CALL_TIMEOUT, call(client)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded(format!(
                "the engine did not answer within {}s",
                crate::cli::CALL_TIMEOUT.as_secs()
            )),
        };
        if !ambiguous(&status) || attempt >= SUBMIT_TRIES {
            return Err(ctx.refused(status));
        }
        note(&format!(
            "the submit may not have reached the engine ({}); asking again with the same \
             idempotency key",
            status.message()
        ));
        ctx.disconnect();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

/// `submit` of several files, or of one `--count` times: `SubmitRuns`, in
/// calls of at most [`SUBMIT_MAX_RUNS`] runs. Each call is all or nothing;
/// should one be refused, the runs of the calls before it stay submitted,
/// and are shown before the error.
async fn submit_many(ctx: &mut Ctx, args: SubmitArgs) -> Result<ExitCode, CliError> {
    check_many(&args)?;
    let specs = args
        .files
        .iter()
        .map(|f| read_spec(f))
        .collect::<Result<Vec<_>, _>>()?;
    let count = usize::try_from(args.count.unwrap_or(1)).unwrap_or(usize::MAX);
    let total = specs.len().saturating_mul(count);
    let reason = args.reason.text();
    let params: std::collections::HashMap<String, String> = args.params.iter().cloned().collect();
    let key = fresh_key();
    let requests = specs
        .iter()
        .flat_map(|spec| std::iter::repeat_n(spec, count))
        .enumerate()
        .map(|(n, spec)| SubmitRunRequest {
            spec: spec.clone(),
            idempotency_key: format!("{key}-{n}"),
            reason: reason.clone(),
            params: params.clone(),
        });
    let mut done = SubmitRunsResponse::default();
    let mut calls = 0usize;
    for batch in batches(requests, SUBMIT_MAX_RUNS, SUBMIT_MAX_BYTES) {
        let size = batch.len();
        let request = SubmitRunsRequest { runs: batch };
        let answer = retrying(ctx, |mut client| {
            let request = request.clone();
            async move { client.submit_runs(request).await }
        })
        .await;
        match answer {
            Ok(answer) => done.runs.extend(answer.runs),
            Err(e) => {
                if !done.runs.is_empty() {
                    print_submitted(ctx, &done)?;
                    note(&format!(
                        "{} of {total} runs were submitted (shown above) before the engine \
                         refused the next {size}",
                        done.runs.len()
                    ));
                }
                return Err(e);
            }
        }
        calls += 1;
    }
    print_submitted(ctx, &done)?;
    if !ctx.printer.json() {
        let calls = if calls == 1 {
            "one call".to_owned()
        } else {
            format!("{calls} calls")
        };
        note(&format!("submitted {} runs in {calls}", done.runs.len()));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_submitted(ctx: &Ctx, done: &SubmitRunsResponse) -> Result<(), CliError> {
    if ctx.printer.json() {
        return ctx.printer.document(done);
    }
    ctx.printer.list(&done.runs, "no runs submitted", |runs| {
        submitted_table(runs, ctx.printer.clock())
    })
}

/// Runs a bulk submit made: id, name, state and age.
fn submitted_table(runs: &[opsdeck_proto::v1::SubmittedRun], clock: Clock) -> Table {
    let mut table = Table::new(&["ID", "NAME", "STATE", "CREATED"]).flexible(&["NAME", "CREATED"]);
    for run in runs {
        let created = if run.created {
            clock.at(run.created_at_ms)
        } else {
            "earlier (same idempotency key)".to_owned()
        };
        table.row(vec![
            Cell::new(&run.id),
            Cell::new(&run.name),
            Cell::state(word_of::<RunState>(run.state)),
            Cell::new(created),
        ]);
    }
    table
}

/// Requests in calls of at most `max_runs` runs and (unless one spec is
/// bigger) `max_bytes` of spec text.
pub fn batches(
    requests: impl Iterator<Item = SubmitRunRequest>,
    max_runs: usize,
    max_bytes: usize,
) -> impl Iterator<Item = Vec<SubmitRunRequest>> {
    let mut requests = requests.peekable();
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < max_runs {
            let Some(next) = requests.peek() else { break };
            let size = next.spec.len() + next.reason.len();
            if !batch.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            batch.extend(requests.next());
        }
        (!batch.is_empty()).then_some(batch)
    })
}

pub fn read_spec(file: &Path) -> Result<String, CliError> {
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
                    if ends(&event, &run.id) {
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

/// Whether an event says the run is over: its `run_update` (or the whole
/// run, on the event that made it) shows it final.
fn ends(event: &opsdeck_proto::v1::Event, run_id: &str) -> bool {
    if event.run_id != run_id {
        return false;
    }
    let update = event.run_update.as_ref().map(|u| u.state());
    let whole = event.run.as_deref().map(Run::state);
    update.or(whole).is_some_and(is_final)
}

async fn get_run(ctx: &Ctx, client: &mut RunsClient<Authed>, id: &str) -> Result<Run, CliError> {
    ctx.call(client.get_run(GetRunRequest { id: id.to_owned() }))
        .await
}

/// The request `runs` makes of its flags, times counted back from `now_ms`.
pub fn list_request(args: &ListArgs, now_ms: i64) -> Result<ListRunsRequest, CliError> {
    Ok(ListRunsRequest {
        limit: args.limit.unwrap_or(0),
        page_token: args.page.clone().unwrap_or_default(),
        ..filter_request(&args.filter, now_ms)?
    })
}

/// The filter fields of a request, from the filter flags.
pub fn filter_request(args: &RunFilterArgs, now_ms: i64) -> Result<ListRunsRequest, CliError> {
    let since_ms = args.since.map_or(0, |w| w.ms(now_ms));
    let until_ms = args.until.map_or(0, |w| w.ms(now_ms));
    if since_ms > 0 && until_ms > 0 && since_ms >= until_ms {
        return Err(CliError::Usage(
            "--since must be before --until: no run could be in between".to_owned(),
        ));
    }
    Ok(ListRunsRequest {
        states: args.state.iter().map(|s| *s as i32).collect(),
        name: args.name.clone().unwrap_or_default(),
        labels: args.labels.iter().cloned().collect(),
        submitted_by: args.by.clone().unwrap_or_default(),
        since_ms,
        until_ms,
        ..Default::default()
    })
}

/// How to get the page after this one, in words.
pub fn next_page_hint(token: &str) -> String {
    format!("more runs: add --page {token} for the next page, or --all for every page")
}

/// `runs`: one page (the first, or --page's), or with --all every page.
/// As JSON the answer is the engine's: `{"runs": [...],
/// "next_page_token": "..."}`, the token empty on the last page.
pub async fn list(ctx: &mut Ctx, args: ListArgs) -> Result<(), CliError> {
    let mut request = list_request(&args, now_ms())?;
    let mut client = ctx.engine().await?.runs();
    let mut answer = ctx.call(client.list_runs(request.clone())).await?;
    if args.all {
        let mut seen = std::collections::HashSet::new();
        while !answer.next_page_token.is_empty() {
            if !seen.insert(answer.next_page_token.clone()) {
                return Err(ctx.refused(tonic::Status::internal(
                    "the engine gave a page token twice; stopped following the pages",
                )));
            }
            request.page_token = std::mem::take(&mut answer.next_page_token);
            let page = ctx.call(client.list_runs(request.clone())).await?;
            answer.runs.extend(page.runs);
            answer.next_page_token = page.next_page_token;
        }
    }
    print_page(ctx, &answer)
}

fn print_page(ctx: &Ctx, page: &ListRunsResponse) -> Result<(), CliError> {
    if ctx.printer.json() {
        return ctx.printer.document(page);
    }
    let none = if page.next_page_token.is_empty() {
        "no runs"
    } else {
        "no runs on this page"
    };
    ctx.printer.list(&page.runs, none, |runs| {
        run_table(runs, ctx.printer.clock())
    })?;
    if !page.next_page_token.is_empty() {
        ctx.printer.hint(&next_page_hint(&page.next_page_token))?;
    }
    Ok(())
}

pub async fn show(ctx: &mut Ctx, args: ShowArgs) -> Result<(), CliError> {
    let id = ctx.resolve(IdKind::Run, &args.id).await?;
    let mut client = ctx.engine().await?.runs();
    let run = get_run(ctx, &mut client, &id).await?;
    show_run(ctx, &mut client, run, args.tail).await
}

/// `cancel RUN`, or with a filter every matching run.
pub async fn cancel(ctx: &mut Ctx, args: CancelArgs) -> Result<ExitCode, CliError> {
    let reason = args.reason.text();
    let Some(id) = args.id else {
        return super::bulk::run(ctx, RunAction::Cancel, &args.filter, &args.bulk, reason).await;
    };
    change(ctx, RunAction::Cancel, &id, reason).await?;
    Ok(ExitCode::SUCCESS)
}

async fn change(
    ctx: &mut Ctx,
    action: RunAction,
    id: &str,
    reason: String,
) -> Result<(), CliError> {
    let id = ctx.resolve(IdKind::Run, id).await?;
    let mut client = ctx.engine().await?.runs();
    let run = match action {
        RunAction::Cancel => {
            ctx.call(client.cancel_run(CancelRunRequest { id, reason }))
                .await?
        }
        RunAction::Retry => {
            ctx.call(client.retry_run(RetryRunRequest {
                id,
                reason,
                ..Default::default()
            }))
            .await?
        }
    };
    ctx.printer
        .one(&run, |runs| run_table(runs, ctx.printer.clock()))
}

/// `retry RUN`: the run goes on from its failed step; with `-p`, a new run
/// of its spec with those parameters changed; with a filter, every
/// matching failed run goes on.
pub async fn retry(ctx: &mut Ctx, args: RetryArgs) -> Result<ExitCode, CliError> {
    let reason = args.reason.text();
    let Some(id) = args.id else {
        return super::bulk::run(ctx, RunAction::Retry, &args.filter, &args.bulk, reason).await;
    };
    if args.params.is_empty() {
        change(ctx, RunAction::Retry, &id, reason).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = RetryRunRequest {
        id: ctx.resolve(IdKind::Run, &id).await?,
        reason,
        params: args.params.into_iter().collect(),
        // A new run: asking again after an ambiguous failure must not
        // make a second one.
        idempotency_key: fresh_key(),
    };
    let run = retrying(ctx, |mut client| {
        let request = request.clone();
        async move { client.retry_run(request).await }
    })
    .await?;
    ctx.printer
        .one(&run, |runs| run_table(runs, ctx.printer.clock()))?;
    Ok(ExitCode::SUCCESS)
}

/// `run ID` in JSON: the run, and the output the engine kept of each step.
#[derive(Debug, Serialize)]
struct RunWithOutput<'a> {
    run: &'a Run,
    output: Vec<OutputText>,
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
        ctx.printer.clock(),
        ctx.printer.color(),
        ctx.printer.width(),
    ))
}

/// The runs table: one row per run.
pub fn run_table(runs: &[Run], clock: Clock) -> Table {
    let mut table = Table::new(&["ID", "NAME", "STATE", "STEP", "BY", "CREATED"])
        .flexible(&["NAME", "STEP", "BY"])
        .optional(&["BY"]);
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
            Cell::new(clock.at(run.created_at_ms)),
        ]);
    }
    table
}

fn step_table(steps: &[Step], clock: Clock) -> Table {
    let mut table = Table::new(&[
        "STEP", "NAME", "KIND", "STATE", "QUEUE", "ATTEMPT", "WORKER", "EXIT", "STARTED",
        "FINISHED", "NOTE",
    ])
    .flexible(&["NAME", "QUEUE", "ATTEMPT", "WORKER", "NOTE"])
    .optional(&["KIND", "STARTED", "EXIT"]);
    for step in steps {
        let exec = step.kind() == StepKind::Exec;
        let attempt = if exec && step.attempt > 0 {
            crate::text::attempt_text(step)
        } else {
            String::new()
        };
        let exit = if step.has_exit_code {
            step.exit_code.to_string()
        } else {
            String::new()
        };
        let mut note = Vec::new();
        if step.hung {
            note.push(format!(
                "hung: no output for {}",
                crate::text::time::span(std::time::Duration::from_millis(step.quiet_timeout_ms))
            ));
        }
        if step.state() == StepState::RetryWait && step.next_attempt_at_ms > 0 {
            note.push(format!(
                "next attempt {}",
                clock.at(step.next_attempt_at_ms)
            ));
        }
        if !step.approval_id.is_empty() {
            note.push(format!("approval {}", step.approval_id));
        }
        if !step.message.is_empty() {
            note.push(step.message.clone());
        }
        if !step.worker.is_empty() {
            let mut wanted: Vec<String> = step
                .worker
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            wanted.sort();
            note.push(format!("worker {}", wanted.join(",")));
        }
        if !step.waiting_for.is_empty() {
            note.push(format!("waits: {}", step.waiting_for));
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
            Cell::new(clock.at(step.started_at_ms)),
            Cell::new(clock.at(step.finished_at_ms)),
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
    clock: Clock,
    color: bool,
    width: Option<usize>,
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
        format!("{} by {by}", clock.at(run.created_at_ms)),
    );
    if run.finished_at_ms > 0 {
        fields.field("finished", clock.at(run.finished_at_ms));
    } else {
        fields.field("updated", clock.at(run.updated_at_ms));
    }
    if !run.params.is_empty() {
        let mut params: Vec<_> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        params.sort();
        fields.field("params", params.join(" ").as_str());
    }
    if !run.retry_of.is_empty() {
        fields.field("retries", run.retry_of.as_str());
    }
    if !run.concurrency_key.is_empty() {
        fields.field(
            "concurrency",
            format!("{} (limit {})", run.concurrency_key, run.concurrency_limit),
        );
    }
    if !run.idempotency_key.is_empty() {
        fields.field("key", run.idempotency_key.as_str());
    }
    let mut out = fields.render(color);
    if !run.steps.is_empty() {
        out.push('\n');
        out.push_str(&step_table(&run.steps, clock).render_fit(color, width));
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

#[cfg(test)]
mod tests;
