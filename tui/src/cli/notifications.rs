//! `notifications`: the outbox of `[[notify]]` deliveries — those not
//! delivered yet and those given up on, or as `--state` asks.

use clap::{Args, ValueEnum};
use opsdeck_proto::v1::{ListNotificationsRequest, Notification};

use super::Ctx;
use super::error::CliError;
use super::table::{Cell, Table};
use crate::text::time::Clock;

/// Which deliveries `notifications` lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Not delivered yet, and given up on
    #[default]
    Open,
    /// Not delivered yet: retried with backoff
    Pending,
    /// Given up on
    Failed,
    /// Delivered
    Delivered,
    /// Every state
    All,
}

/// `notifications [--state …]`.
#[derive(Debug, Args)]
pub struct NotificationsArgs {
    /// Which deliveries to list
    #[arg(long, value_enum, default_value_t = Which::Open)]
    pub state: Which,
    /// At most this many, newest event first
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn list(ctx: &mut Ctx, args: NotificationsArgs) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.events();
    let state = match args.state {
        Which::Open => "",
        Which::Pending => "pending",
        Which::Failed => "failed",
        Which::Delivered => "delivered",
        Which::All => "all",
    };
    let request = ListNotificationsRequest {
        state: state.to_owned(),
        limit: args.limit,
    };
    let found = ctx
        .call(client.list_notifications(request))
        .await?
        .notifications;
    ctx.printer.list(&found, "no notifications", |n| {
        notification_table(n, ctx.printer.clock())
    })
}

/// The deliveries table: which, to whom, how far it got, and why not.
pub fn notification_table(list: &[Notification], clock: Clock) -> Table {
    let mut table = Table::new(&[
        "ID",
        "NOTIFIER",
        "EVENT",
        "STATE",
        "ATTEMPTS",
        "NEXT TRY",
        "LAST ERROR",
    ])
    .flexible(&["LAST ERROR"]);
    for n in list {
        let next = if n.state == "pending" {
            clock.at(n.next_attempt_at_ms)
        } else {
            "-".to_owned()
        };
        table.row(vec![
            Cell::new(&n.id),
            Cell::new(&n.notifier),
            Cell::new(&n.event_kind),
            Cell::state(&n.state),
            Cell::new(n.attempts.to_string()),
            Cell::new(next),
            Cell::new(&n.last_error),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_state_attempts_next_try_and_error() {
        let now = 1_700_000_000_000;
        let n = Notification {
            id: "42-oncall".into(),
            notifier: "oncall".into(),
            event_seq: 42,
            event_kind: "run.failed".into(),
            state: "pending".into(),
            attempts: 3,
            next_attempt_at_ms: now - 60_000,
            last_error: "the receiver answered HTTP 500".into(),
            ..Default::default()
        };
        let text = notification_table(&[n], Clock::relative(now)).render(false);
        assert!(
            text.starts_with("ID         NOTIFIER  EVENT       STATE    ATTEMPTS"),
            "{text}"
        );
        assert!(
            text.contains("42-oncall  oncall    run.failed  pending  3"),
            "{text}"
        );
        assert!(text.contains("the receiver answered HTTP 500"), "{text}");
    }
}
