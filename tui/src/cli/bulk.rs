//! `cancel` and `retry` of every run a filter matches: a dry run shows the
//! matches, a person confirms (or `--yes` does), and one call acts on
//! exactly the runs shown.
//!
//! Exit status: 0 when every matching run was acted on; 1 when any was
//! refused (each is listed with why), so that a script notices.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::runs_client::RunsClient;
use opsdeck_proto::v1::{BulkRefusal, BulkRun, BulkRunsRequest, BulkRunsResponse, RunState};

use super::error::CliError;
use super::output::note;
use super::runs::{RunAction, RunFilterArgs, filter_request};
use super::table::{Cell, Table};
use crate::cli::Ctx;
use crate::client::Authed;
use crate::text::time::now_ms;

/// How many matches the question shows before asking.
const SHOWN: usize = 10;
/// The most runs one call acts on, as the engine allows.
const MAX_RUNS: u32 = 10_000;

/// Flags of a `cancel` or `retry` by filter.
#[derive(Debug, Default, Args)]
pub struct BulkArgs {
    /// Act without asking: needed when stdin is not a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only show the runs the filter matches and which would be refused;
    /// change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Act on at most N matching runs, the newest [default: every match;
    /// more than 10000 is refused]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUNS)))]
    pub limit: Option<u32>,
}

/// Cancels or retries what `filter` matches.
pub async fn run(
    ctx: &mut Ctx,
    action: RunAction,
    filter: &RunFilterArgs,
    args: &BulkArgs,
    reason: String,
) -> Result<ExitCode, CliError> {
    let f = filter_request(filter, now_ms())?;
    let ask = BulkRunsRequest {
        ids: Vec::new(),
        states: f.states,
        name: f.name,
        labels: f.labels,
        submitted_by: f.submitted_by,
        since_ms: f.since_ms,
        until_ms: f.until_ms,
        reason: reason.clone(),
        dry_run: true,
        limit: args.limit.unwrap_or(0),
    };
    let mut client = ctx.engine().await?.runs();
    let seen = ctx.call(send(&mut client, action, ask)).await?;
    if args.dry_run {
        print(ctx, action, &seen, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !seen.done.is_empty() && !args.yes {
        confirm(action, &seen)?;
    }
    let mut answer = if seen.done.is_empty() {
        BulkRunsResponse::default()
    } else {
        // Exactly the runs shown: none that started to match since.
        let act = BulkRunsRequest {
            ids: seen.done.iter().map(|r| r.id.clone()).collect(),
            reason,
            ..Default::default()
        };
        ctx.call(send(&mut client, action, act)).await?
    };
    // Runs the dry run found it could not act on are refused all the same.
    answer.refused.splice(0..0, seen.refused);
    answer.matched = u32::try_from(answer.done.len() + answer.refused.len()).unwrap_or(u32::MAX);
    answer.more = seen.more;
    print(ctx, action, &answer, false)?;
    Ok(if answer.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn send(
    client: &mut RunsClient<Authed>,
    action: RunAction,
    request: BulkRunsRequest,
) -> Result<tonic::Response<BulkRunsResponse>, tonic::Status> {
    match action {
        RunAction::Cancel => client.cancel_runs(request).await,
        RunAction::Retry => client.retry_runs(request).await,
    }
}

fn verb(action: RunAction) -> &'static str {
    match action {
        RunAction::Cancel => "cancel",
        RunAction::Retry => "retry",
    }
}

fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// Shows the first matches on stderr and asks on a terminal; without one,
/// refuses: a script says --yes.
fn confirm(action: RunAction, seen: &BulkRunsResponse) -> Result<(), CliError> {
    let n = seen.done.len();
    let verb = verb(action);
    let mut text = format!("{} to {verb}", runs(n));
    if n > SHOWN {
        text.push_str(&format!("; the first {SHOWN}:"));
    } else {
        text.push(':');
    }
    note(&text);
    note(
        done_table(&seen.done[..n.min(SHOWN)])
            .render(false)
            .trim_end(),
    );
    if !seen.refused.is_empty() {
        note(&format!(
            "{} matching would be refused (listed once done)",
            runs(seen.refused.len())
        ));
    }
    if !io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "not asking, as stdin is not a terminal: pass --yes to {verb} these {}, or --dry-run to only list them",
            runs(n)
        )));
    }
    eprint!("{verb} {}? [y/N] ", runs(n));
    // Nothing useful can be done when stderr itself is gone.
    let _ = io::stderr().flush();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("nothing done: cannot read the answer ({e})")))?;
    if yes(&line) {
        Ok(())
    } else {
        Err(CliError::Usage(format!("nothing done: did not {verb}")))
    }
}

/// Whether an answer to `[y/N]` is yes.
fn yes(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn print(
    ctx: &Ctx,
    action: RunAction,
    answer: &BulkRunsResponse,
    dry_run: bool,
) -> Result<(), CliError> {
    if ctx.printer.json() {
        return ctx.printer.document(answer);
    }
    let verb = verb(action);
    let done = answer.done.len();
    let past = match action {
        RunAction::Cancel => "cancelled",
        RunAction::Retry => "retried",
    };
    let head = if dry_run {
        format!("{} would be {past}", runs(done))
    } else {
        format!("{past} {}", runs(done))
    };
    let refused = match answer.refused.len() {
        0 => String::new(),
        n => format!("; {} refused", runs(n)),
    };
    ctx.printer.text(&format!("{head}{refused}\n"))?;
    if dry_run && done > 0 {
        ctx.printer.text(&fit(ctx, done_table(&answer.done)))?;
    }
    if !answer.refused.is_empty() {
        ctx.printer
            .text(&fit(ctx, refusal_table(&answer.refused)))?;
    }
    if answer.more {
        ctx.printer.hint(&format!(
            "more runs match than --limit; {verb} again for the next ones"
        ))?;
    }
    Ok(())
}

fn fit(ctx: &Ctx, table: Table) -> String {
    table.render_fit(ctx.printer.color(), ctx.printer.width())
}

fn done_table(runs: &[BulkRun]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "STATE"]);
    for run in runs {
        table.row(vec![
            Cell::new(&run.id),
            Cell::new(&run.name),
            Cell::state(word_of::<RunState>(run.state)),
        ]);
    }
    table
}

fn refusal_table(refused: &[BulkRefusal]) -> Table {
    let mut table = Table::new(&["REFUSED", "NAME", "CODE", "WHY"]).flexible(&["WHY"]);
    for r in refused {
        table.row(vec![
            Cell::new(&r.id),
            Cell::new(&r.name),
            Cell::new(&r.code),
            Cell::new(&r.message),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        for answer in ["y\n", "Y", " yes \n", "YES"] {
            assert!(yes(answer), "{answer:?}");
        }
        for answer in ["", "\n", "n", "no", "yep", "y es"] {
            assert!(!yes(answer), "{answer:?}");
        }
    }
}
