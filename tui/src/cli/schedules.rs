//! Schedules: `schedule add|list|show|pause|resume|remove|run-now`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use opsdeck_proto::names::{Word, word_of};
use opsdeck_proto::v1::{
    AddScheduleRequest, ListSchedulesRequest, MissedPolicy, OverlapPolicy, RunState, Schedule,
    ScheduleRequest,
};
use serde::Serialize;

use super::error::CliError;
use super::runs::{label, read_spec};
use super::table::{Cell, Fields, Table};
use super::{Ctx, Reason, word};
use crate::text::time::Clock;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Submit a run spec on a cron schedule
    Add(AddArgs),
    /// List schedules with their next fire and last run
    List,
    /// Show a schedule, its spec and parameters
    Show(NameArg),
    /// Fire no run until resumed
    Pause(Change),
    /// Fire again, from the next time after now
    Resume(Change),
    /// Remove a schedule; runs it submitted go on
    Remove(Change),
    /// Submit one run of the schedule now (the overlap policy applies)
    RunNow(Change),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The schedule's name: letters, digits, '.', '_' and '-'
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The run spec, TOML; `-` reads it from stdin
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// When: 5 fields (minute hour day-of-month month day-of-week), or 6
    /// with seconds first, e.g. "0 3 * * *" or "*/30 * * * * *"
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// The IANA time zone the cron is read in, daylight saving and all
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub timezone: String,
    /// A value for a parameter the spec declares under [params]; repeat
    /// for several
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = label)]
    pub params: Vec<(String, String)>,
    /// Fire times missed while no engine led: skip them, or run once for
    /// them all
    #[arg(long, value_name = "POLICY", default_value = "skip", value_parser = word::<MissedPolicy>)]
    pub missed: MissedPolicy,
    /// A fire while the previous run of the schedule is still going: skip
    /// it, allow both, or cancel the previous run
    #[arg(long, value_name = "POLICY", default_value = "skip", value_parser = word::<OverlapPolicy>)]
    pub overlap: OverlapPolicy,
    #[command(flatten)]
    pub reason: Reason,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The schedule's name
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct Change {
    /// The schedule's name
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub reason: Reason,
}

pub async fn run(ctx: &mut Ctx, command: ScheduleCommand) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.schedules();
    let clock = ctx.printer.clock();
    let request = |c: Change| ScheduleRequest {
        name: c.name,
        reason: c.reason.text(),
    };
    let one = |s: Schedule| s;
    let schedule = match command {
        ScheduleCommand::Add(args) => {
            let spec = read_spec(&args.file)?;
            let add = AddScheduleRequest {
                name: args.name,
                spec,
                params: args.params.into_iter().collect(),
                cron: args.cron,
                timezone: args.timezone,
                missed: args.missed as i32,
                overlap: args.overlap as i32,
                reason: args.reason.text(),
            };
            one(ctx.call(client.add_schedule(add)).await?)
        }
        ScheduleCommand::List => {
            let list = ctx
                .call(client.list_schedules(ListSchedulesRequest {}))
                .await?
                .schedules;
            return ctx
                .printer
                .list(&list, "no schedules", |s| schedule_table(s, clock));
        }
        ScheduleCommand::Show(args) => {
            let s = ctx
                .call(client.get_schedule(ScheduleRequest {
                    name: args.name,
                    reason: String::new(),
                }))
                .await?;
            if ctx.printer.json() {
                return ctx.printer.document(&s);
            }
            return ctx
                .printer
                .text(&schedule_detail(&s, clock, ctx.printer.color()));
        }
        ScheduleCommand::Pause(c) => ctx.call(client.pause_schedule(request(c))).await?,
        ScheduleCommand::Resume(c) => ctx.call(client.resume_schedule(request(c))).await?,
        ScheduleCommand::Remove(c) => ctx.call(client.remove_schedule(request(c))).await?,
        ScheduleCommand::RunNow(c) => {
            let answer = ctx.call(client.run_schedule_now(request(c))).await?;
            if ctx.printer.json() {
                return ctx.printer.document(&RunNow {
                    run_id: &answer.run_id,
                    skipped: &answer.skipped,
                    schedule: answer.schedule.as_ref(),
                });
            }
            return if answer.run_id.is_empty() {
                Err(CliError::Engine {
                    status: tonic::Status::failed_precondition(format!(
                        "no run submitted: {}",
                        answer.skipped
                    )),
                    hint: None,
                })
            } else {
                ctx.printer.text(&format!("{}\n", answer.run_id))
            };
        }
    };
    ctx.printer.one(&schedule, |s| schedule_table(s, clock))
}

/// `schedule run-now --output json`.
#[derive(Serialize)]
struct RunNow<'a> {
    run_id: &'a str,
    skipped: &'a str,
    schedule: Option<&'a Schedule>,
}

/// A policy's word as typed on the command line (`run-once`).
fn policy<T: Word + TryFrom<i32>>(v: i32) -> String {
    word_of::<T>(v).replace('_', "-")
}

/// The last run and how it ended: `01HX…(succeeded)`, or "-".
fn last_run(s: &Schedule) -> String {
    if s.last_run_id.is_empty() {
        return "-".to_owned();
    }
    let id = short(&s.last_run_id);
    if s.last_run_state == RunState::Unspecified as i32 {
        id
    } else {
        format!("{id} {}", word_of::<RunState>(s.last_run_state))
    }
}

/// An id's last characters, as the other tables show them.
fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

pub fn schedule_table(schedules: &[Schedule], clock: Clock) -> Table {
    let mut table = Table::new(&[
        "SCHEDULE", "STATE", "CRON", "ZONE", "RUN", "NEXT", "LAST RUN", "MISSED", "OVERLAP",
    ]);
    for s in schedules {
        let state = if s.paused { "paused" } else { "active" };
        let next = if s.paused {
            "-".to_owned()
        } else {
            clock.at(s.next_fire_at_ms)
        };
        table.row(vec![
            Cell::new(&s.name),
            Cell::state(state),
            Cell::new(&s.cron),
            Cell::new(&s.timezone),
            Cell::new(&s.run_name),
            Cell::new(next),
            Cell::new(last_run(s)),
            Cell::new(policy::<MissedPolicy>(s.missed)),
            Cell::new(policy::<OverlapPolicy>(s.overlap)),
        ]);
    }
    table
}

fn schedule_detail(s: &Schedule, clock: Clock, color: bool) -> String {
    let mut fields = Fields::new();
    fields
        .field("schedule", s.name.as_str())
        .field(
            "state",
            Cell::state(if s.paused { "paused" } else { "active" }),
        )
        .field("cron", format!("{} ({})", s.cron, s.timezone))
        .field("run", s.run_name.as_str())
        .field(
            "next",
            if s.paused {
                "-".to_owned()
            } else {
                clock.at(s.next_fire_at_ms)
            },
        )
        .field("last fire", clock.at(s.last_fire_at_ms))
        .field("last run", last_run(s))
        .field("missed", policy::<MissedPolicy>(s.missed))
        .field("overlap", policy::<OverlapPolicy>(s.overlap));
    if !s.params.is_empty() {
        let params: BTreeMap<_, _> = s.params.iter().collect();
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.field("params", params.join(" "));
    }
    fields
        .field(
            "created",
            format!("{} by {}", clock.at(s.created_at_ms), s.created_by),
        )
        .field(
            "updated",
            format!("{} by {}", clock.at(s.updated_at_ms), s.updated_by),
        );
    let mut text = fields.render(color);
    text.push('\n');
    text.push_str(&s.spec);
    if !s.spec.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn the_table_shows_next_fire_last_run_and_policies() {
        let s = Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            run_name: "backup".into(),
            next_fire_at_ms: NOW + 3_600_000,
            last_run_id: "01JRUN0000000000000ABCDEFGH".into(),
            last_run_state: RunState::Succeeded as i32,
            missed: MissedPolicy::RunOnce as i32,
            overlap: OverlapPolicy::CancelPrevious as i32,
            ..Default::default()
        };
        let paused = Schedule {
            name: "p".into(),
            cron: "*/2 * * * * *".into(),
            timezone: "UTC".into(),
            paused: true,
            ..Default::default()
        };
        let text = schedule_table(&[s, paused], Clock::relative(NOW)).render(false);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[1].contains("in 1h"), "{text}");
        assert!(rows[1].contains("ABCDEFGH succeeded"), "{text}");
        assert!(rows[1].contains("run-once"), "{text}");
        assert!(rows[1].contains("cancel-previous"), "{text}");
        assert!(rows[2].contains("paused"), "{text}");
    }
}
