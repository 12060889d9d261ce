//! `logs RUN`: a run's output as stored, or followed live until the step
//! (or the run) ends, across engine restarts, each byte once.

use clap::Args;
use opsdeck_proto::v1::{
    FollowOutputRequest, GetRunRequest, IdKind, OutputChunk, OutputPosition, Run, RunState, Step,
    StepState,
};
use tokio::time::Instant;

use super::Ctx;
use super::error::CliError;
use super::output::note;
use super::table::{Cell, Tone};
use crate::client::{backoff, is_transient};
use crate::text::time::span;
use crate::text::{clean, step_number};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id, or a unique prefix or suffix of it (6 characters or more)
    #[arg(value_name = "RUN")]
    pub id: String,
    /// Only this step: its number (1 is the first) or its name. Without
    /// --attempt, from its latest attempt on (with -f, through its retries)
    #[arg(long, value_name = "N|NAME")]
    pub step: Option<String>,
    /// Only this attempt of the step
    #[arg(long, value_name = "K", requires = "step")]
    pub attempt: Option<u32>,
    /// Keep printing output as it is written until the step (or the run)
    /// ends, across engine restarts; exit 0 if it succeeded, 1 if not
    #[arg(long, short)]
    pub follow: bool,
    /// Start at this byte offset of the step's attempt's output (each
    /// chunk's `offset` in JSON output)
    #[arg(long, value_name = "OFFSET", requires = "step")]
    pub from: Option<u64>,
}

/// What is printed, and how far it got.
struct Logs {
    run_id: String,
    step: Option<u32>,
    attempt: Option<u32>,
    /// After the last byte printed; `None` before the first.
    from: Option<OutputPosition>,
    /// Whether the last text printed ended its line.
    at_line_start: bool,
}

pub async fn run(ctx: &mut Ctx, args: LogsArgs) -> Result<std::process::ExitCode, CliError> {
    let id = ctx.resolve(IdKind::Run, &args.id).await?;
    let mut client = ctx.engine().await?.runs();
    let run = ctx
        .call(client.get_run(GetRunRequest { id: id.clone() }))
        .await?;
    let step = args
        .step
        .as_deref()
        .map(|s| step_index(&run, s))
        .transpose()?;
    let from = match (step, args.from) {
        (Some(index), Some(offset)) => Some(OutputPosition {
            step_index: index,
            attempt: args
                .attempt
                .or_else(|| run.steps.get(index as usize).map(|s| s.attempt))
                .unwrap_or(0),
            offset,
        }),
        _ => None,
    };
    let mut logs = Logs {
        run_id: id,
        step,
        attempt: args.attempt,
        from,
        at_line_start: true,
    };
    let mut failures = 0u32;
    loop {
        let request = FollowOutputRequest {
            run_id: logs.run_id.clone(),
            step_index: logs.step,
            attempt: logs.attempt,
            from: logs.from,
            stored_only: !args.follow,
        };
        let why = match client.follow_output(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(chunk)) => {
                            failures = 0;
                            logs.print(ctx, chunk)?;
                        }
                        Ok(None) => break None,
                        Err(status) if resumable(&status) && args.follow => {
                            break Some(status.message().to_owned());
                        }
                        Err(status) => return Err(ctx.refused(status)),
                    }
                }
            }
            Err(status) if resumable(&status) && args.follow => Some(status.message().to_owned()),
            Err(status) => return Err(ctx.refused(status)),
        };
        if !args.follow {
            logs.end_line(ctx)?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        // A stream that ended is over only if the run says so; else it was
        // cut short (an engine stopping) and is followed again.
        let why = match why {
            Some(why) => why,
            None => match ctx
                .call(client.get_run(GetRunRequest {
                    id: logs.run_id.clone(),
                }))
                .await
            {
                Ok(now) if logs.over(&now) => {
                    logs.end_line(ctx)?;
                    return Ok(logs.outcome(&now));
                }
                Ok(_) => "the engine ended the stream early".to_owned(),
                Err(CliError::Engine { status, .. }) if is_transient(&status) => {
                    status.message().to_owned()
                }
                Err(e) => return Err(e),
            },
        };
        let after = backoff(failures);
        failures = failures.saturating_add(1);
        note(&format!(
            "lost the output stream ({}); following again in {}",
            if why.is_empty() {
                "the connection broke"
            } else {
                &why
            },
            span(after)
        ));
        tokio::time::sleep_until(Instant::now() + after).await;
    }
}

/// Worth following again from the last byte: the connection broke, the
/// engine restarted, or it cut this reader off for falling behind.
fn resumable(status: &tonic::Status) -> bool {
    is_transient(status) || status.code() == tonic::Code::ResourceExhausted
}

/// A step by number (1 is the first) or name.
fn step_index(run: &Run, text: &str) -> Result<u32, CliError> {
    let names = || {
        run.steps
            .iter()
            .map(|s| format!("{} {}", step_number(s.index), s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Ok(n) = text.trim().parse::<u64>() {
        return match run.steps.iter().find(|s| step_number(s.index) == n) {
            Some(s) => Ok(s.index),
            None => Err(CliError::Usage(format!(
                "run {} has no step {n}; its steps: {}",
                run.id,
                names()
            ))),
        };
    }
    run.steps
        .iter()
        .find(|s| s.name == text.trim())
        .map(|s| s.index)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "run {} has no step named {text:?}; its steps: {}",
                run.id,
                names()
            ))
        })
}

impl Logs {
    /// The step followed, as the run has it now.
    fn step_of<'a>(&self, run: &'a Run) -> Option<&'a Step> {
        self.step.and_then(|i| run.steps.get(i as usize))
    }

    /// Whether what is followed has ended.
    fn over(&self, run: &Run) -> bool {
        let Some(step) = self.step_of(run) else {
            return matches!(
                run.state(),
                RunState::Succeeded | RunState::Failed | RunState::Cancelled
            );
        };
        let state = step.state();
        let done = matches!(
            state,
            StepState::Succeeded | StepState::Failed | StepState::Cancelled | StepState::Dead
        );
        match self.attempt {
            None => done,
            Some(k) => {
                done || step.attempt > k
                    || (step.attempt == k
                        && !matches!(state, StepState::Leased | StepState::Running))
            }
        }
    }

    /// 0 when what was followed succeeded, 1 when not (failed, dead,
    /// cancelled, or an attempt that a retry followed).
    fn outcome(&self, run: &Run) -> std::process::ExitCode {
        let succeeded = match self.step_of(run) {
            None => run.state() == RunState::Succeeded,
            Some(step) => {
                step.state() == StepState::Succeeded
                    && self.attempt.is_none_or(|k| k == step.attempt)
            }
        };
        if succeeded {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }

    /// One chunk: a JSON Lines record, its bytes as they are into a pipe
    /// or file, or on a terminal its text made safe, stderr's lines marked.
    fn print(&mut self, ctx: &Ctx, chunk: OutputChunk) -> Result<(), CliError> {
        self.from = Some(OutputPosition {
            step_index: chunk.step_index,
            attempt: chunk.attempt,
            offset: chunk.offset + chunk.data.len() as u64,
        });
        if ctx.printer.json() {
            return ctx.printer.record(&chunk);
        }
        if !ctx.printer.tty() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk.data)?;
            out.flush()?;
            return Ok(());
        }
        let color = ctx.printer.color();
        let text = String::from_utf8_lossy(&chunk.data);
        let mut out = String::with_capacity(text.len() + 16);
        for piece in text.split_inclusive('\n') {
            if self.at_line_start && chunk.stream == "stderr" {
                out.push_str(&Cell::toned("stderr| ", Tone::Bad).paint(color));
            }
            let line = piece.strip_suffix('\n');
            out.push_str(&clean(&line.unwrap_or(piece).replace('\t', "    "), '?'));
            self.at_line_start = line.is_some();
            if self.at_line_start {
                out.push('\n');
            }
        }
        ctx.printer.text(&out)
    }

    /// Ends a last line that had no newline, on a terminal.
    fn end_line(&mut self, ctx: &Ctx) -> Result<(), CliError> {
        if ctx.printer.tty() && !ctx.printer.json() && !self.at_line_start {
            self.at_line_start = true;
            ctx.printer.text("\n")?;
        }
        Ok(())
    }
}
