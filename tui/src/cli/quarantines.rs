//! Quarantines: `quarantines`, `unquarantine`.
//!
//! A run name whose leases got stuck too often is quarantined by the
//! engine: new runs of it are refused and its queued steps wait. An
//! operator clears it once the cause is fixed.

use clap::Args;
use opsdeck_proto::v1::{ClearQuarantineRequest, ListQuarantinesRequest, Quarantine};

use super::error::CliError;
use super::table::{Cell, Table};
use super::{Ctx, Reason};
use crate::text::time::Clock;

/// `unquarantine NAME`.
#[derive(Debug, Args)]
pub struct UnquarantineArgs {
    /// The run name (the spec's `name`)
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub reason: Reason,
}

pub async fn list(ctx: &mut Ctx) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.runs();
    let quarantines = ctx
        .call(client.list_quarantines(ListQuarantinesRequest {}))
        .await?
        .quarantines;
    ctx.printer
        .list(&quarantines, "no quarantined run names", |q| {
            quarantine_table(q, ctx.printer.clock())
        })
}

pub async fn clear(ctx: &mut Ctx, args: UnquarantineArgs) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.runs();
    let request = ClearQuarantineRequest {
        name: args.name,
        reason: args.reason.text(),
    };
    let cleared = ctx.call(client.clear_quarantine(request)).await?;
    ctx.printer
        .one(&cleared, |q| quarantine_table(q, ctx.printer.clock()))
}

/// The quarantines table: which run names, since when, and why.
pub fn quarantine_table(quarantines: &[Quarantine], clock: Clock) -> Table {
    let mut table = Table::new(&["NAME", "SINCE", "STUCK", "WHY"]).flexible(&["NAME", "WHY"]);
    for q in quarantines {
        table.row(vec![
            Cell::new(&q.name),
            Cell::new(clock.at(q.since_ms)),
            Cell::new(q.stuck_count.to_string()),
            Cell::new(&q.message),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantines_table_shows_name_age_count_and_why() {
        let now = 1_700_000_000_000;
        let q = Quarantine {
            name: "nightly-backup".into(),
            since_ms: now - 120_000,
            stuck_count: 5,
            message: "5 leases got stuck within 1h".into(),
        };
        assert_eq!(
            quarantine_table(&[q], Clock::relative(now)).render(false),
            "NAME            SINCE   STUCK  WHY\n\
             nightly-backup  2m ago  5      5 leases got stuck within 1h\n"
        );
    }
}
