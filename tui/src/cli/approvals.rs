//! Approvals: `approvals`, `approve`, `reject`.

use clap::Args;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{Approval, ApprovalState, DecideRequest, IdKind, ListApprovalsRequest};

use super::Ctx;
use super::error::CliError;
use super::table::{Cell, Table};
use crate::text::step_number;
use crate::text::time::Clock;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Decided approvals too, not only pending ones
    #[arg(long)]
    pub all: bool,
}

/// `approve ID` and `reject ID`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id, or a unique prefix or suffix of it (6 characters
    /// or more)
    #[arg(value_name = "ID")]
    pub id: String,
    /// The decision's comment, recorded in the audit trail with your identity
    #[arg(long, visible_alias = "comment", value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum Verdict {
    Approve,
    Reject,
}

pub async fn list(ctx: &mut Ctx, args: ListArgs) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.approvals();
    let request = ListApprovalsRequest { all: args.all };
    let approvals = ctx.call(client.list_approvals(request)).await?.approvals;
    let none = if args.all {
        "no approvals"
    } else {
        "no pending approvals"
    };
    ctx.printer
        .list(&approvals, none, |a| approval_table(a, ctx.printer.clock()))
}

pub async fn decide(ctx: &mut Ctx, verdict: Verdict, args: DecideArgs) -> Result<(), CliError> {
    let id = ctx.resolve(IdKind::Approval, &args.id).await?;
    let mut client = ctx.engine().await?.approvals();
    let request = DecideRequest {
        id,
        approve: matches!(verdict, Verdict::Approve),
        reason: args.reason.unwrap_or_default(),
    };
    let approval = ctx.call(client.decide(request)).await?;
    ctx.printer
        .one(&approval, |a| approval_table(a, ctx.printer.clock()))
}

/// The approvals table: one row per approval gate.
pub fn approval_table(approvals: &[Approval], clock: Clock) -> Table {
    let mut table = Table::new(&[
        "ID",
        "RUN",
        "STEP",
        "STATE",
        "VOTES",
        "BY",
        "REQUESTED",
        "DEADLINE",
    ])
    .flexible(&["RUN", "STEP", "BY", "DEADLINE"])
    .optional(&["VOTES", "REQUESTED"]);
    for a in approvals {
        let run = if a.run_name.is_empty() {
            &a.run_id
        } else {
            &a.run_name
        };
        let approvals = a.decisions.iter().filter(|d| d.approve).count();
        let mut deadline = clock.at(a.deadline_at_ms);
        if a.deadline_at_ms > 0 && !a.on_timeout.is_empty() {
            deadline = format!("{deadline}, then {}", a.on_timeout);
        }
        table.row(vec![
            Cell::new(&a.id),
            Cell::new(run),
            Cell::new(format!("{} {}", step_number(a.step_index), a.step_name)),
            Cell::state(word_of::<ApprovalState>(a.state)),
            Cell::new(format!("{approvals}/{}", a.required)),
            Cell::new(&a.submitted_by),
            Cell::new(clock.at(a.requested_at_ms)),
            Cell::new(deadline),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsdeck_proto::v1::Decision;

    #[test]
    fn approvals_table_counts_votes_and_shows_the_deadline() {
        let now = 1_700_000_000_000;
        let a = Approval {
            id: "01HAPP".into(),
            run_id: "01HRUN".into(),
            run_name: "deploy-api".into(),
            step_index: 1,
            step_name: "prod".into(),
            state: ApprovalState::Pending as i32,
            submitted_by: "ann".into(),
            required: 2,
            decisions: vec![Decision {
                approve: true,
                ..Decision::default()
            }],
            requested_at_ms: now - 120_000,
            deadline_at_ms: now + 3_600_000,
            on_timeout: "reject".into(),
            ..Approval::default()
        };
        assert_eq!(
            approval_table(&[a], Clock::relative(now)).render(false),
            "ID      RUN         STEP    STATE    VOTES  BY   REQUESTED  DEADLINE\n\
             01HAPP  deploy-api  2 prod  pending  1/2    ann  2m ago     in 1h, then reject\n"
        );
    }
}
