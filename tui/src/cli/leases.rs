//! Leases: `leases`, `release`.

use clap::Args;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{ForceReleaseRequest, IdKind, Lease, LeaseState, ListLeasesRequest};

use super::error::CliError;
use super::table::{Cell, Table};
use super::{Ctx, Reason};
use crate::text::step_number;
use crate::text::time::Clock;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Ended leases too, not only live ones
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lease's id, or a unique prefix or suffix of it (6 characters or
    /// more)
    #[arg(value_name = "LEASE")]
    pub id: String,
    /// Fail the step instead of putting it back on its queue
    #[arg(long)]
    pub fail: bool,
    #[command(flatten)]
    pub reason: Reason,
}

pub async fn list(ctx: &mut Ctx, args: ListArgs) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.leases();
    let leases = ctx
        .call(client.list_leases(ListLeasesRequest { all: args.all }))
        .await?
        .leases;
    let none = if args.all {
        "no leases"
    } else {
        "no live leases"
    };
    ctx.printer
        .list(&leases, none, |l| lease_table(l, ctx.printer.clock()))
}

pub async fn release(ctx: &mut Ctx, args: ReleaseArgs) -> Result<(), CliError> {
    let id = ctx.resolve(IdKind::Lease, &args.id).await?;
    let mut client = ctx.engine().await?.leases();
    let request = ForceReleaseRequest {
        id,
        fail: args.fail,
        reason: args.reason.text(),
    };
    let lease = ctx.call(client.force_release(request)).await?;
    ctx.printer
        .one(&lease, |l| lease_table(l, ctx.printer.clock()))
}

/// The leases table: who holds which step attempt, and until when.
pub fn lease_table(leases: &[Lease], clock: Clock) -> Table {
    let mut table = Table::new(&[
        "ID", "RUN", "STEP", "WORKER", "ATTEMPT", "TOKEN", "STATE", "GRANTED", "EXPIRES",
    ])
    .flexible(&["RUN", "STEP", "WORKER", "EXPIRES"])
    .optional(&["TOKEN", "ATTEMPT", "GRANTED"]);
    for l in leases {
        let run = if l.run_name.is_empty() {
            &l.run_id
        } else {
            &l.run_name
        };
        let expires = if l.state() == LeaseState::Active || l.ended_at_ms == 0 {
            clock.at(l.expires_at_ms)
        } else {
            format!("ended {}", clock.at(l.ended_at_ms))
        };
        table.row(vec![
            Cell::new(&l.id),
            Cell::new(run),
            Cell::new(format!("{} {}", step_number(l.step_index), l.step_name)),
            Cell::new(&l.worker_id),
            Cell::new(l.attempt.to_string()),
            Cell::new(l.fencing_token.to_string()),
            Cell::state(word_of::<LeaseState>(l.state)),
            Cell::new(clock.at(l.granted_at_ms)),
            Cell::new(expires),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_table_shows_time_to_expiry_or_end() {
        let now = 1_700_000_000_000;
        let live = Lease {
            id: "01HL1".into(),
            run_id: "01HRUN".into(),
            run_name: "deploy-api".into(),
            step_index: 0,
            step_name: "build".into(),
            worker_id: "w-1".into(),
            attempt: 2,
            fencing_token: 7,
            state: LeaseState::Active as i32,
            granted_at_ms: now - 40_000,
            expires_at_ms: now + 20_000,
            ..Lease::default()
        };
        let ended = Lease {
            id: "01HL0".into(),
            state: LeaseState::Expired as i32,
            ended_at_ms: now - 60_000,
            ..live.clone()
        };
        assert_eq!(
            lease_table(&[live, ended], Clock::relative(now)).render(false),
            "ID     RUN         STEP     WORKER  ATTEMPT  TOKEN  STATE    GRANTED  EXPIRES\n\
             01HL1  deploy-api  1 build  w-1     2        7      active   40s ago  in 20s\n\
             01HL0  deploy-api  1 build  w-1     2        7      expired  40s ago  ended 1m ago\n"
        );
    }
}
