//! Queues: `queues`, `pause`, `resume`, `queue set`.

use clap::{Args, Subcommand};
use opsdeck_proto::v1::{ListQueuesRequest, Queue, QueueActionRequest, SetQueueRequest};

use super::error::CliError;
use super::table::{Cell, Table};
use super::{Ctx, Reason};
use crate::text::time::duration_or_dash;

/// `pause QUEUE` and `resume QUEUE`.
#[derive(Debug, Args)]
pub struct QueueChange {
    /// The queue's name
    #[arg(value_name = "QUEUE")]
    pub name: String,
    /// Pause a queue no step has used and no worker serves yet
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    pub reason: Reason,
}

/// `queue set QUEUE --max-running N`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Change a queue's settings
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The queue's name
    #[arg(value_name = "QUEUE")]
    pub name: String,
    /// At most this many of the queue's steps leased at once; 0 removes
    /// the limit
    #[arg(long, value_name = "N")]
    pub max_running: Option<u32>,
    #[command(flatten)]
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug)]
pub enum QueueAction {
    Pause,
    Resume,
}

pub async fn list(ctx: &mut Ctx) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.queues();
    let queues = ctx
        .call(client.list_queues(ListQueuesRequest {}))
        .await?
        .queues;
    ctx.printer.list(&queues, "no queues", queue_table)
}

pub async fn change(ctx: &mut Ctx, action: QueueAction, args: QueueChange) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.queues();
    let request = QueueActionRequest {
        name: args.name,
        reason: args.reason.text(),
        create: args.create,
    };
    let queue = match action {
        QueueAction::Pause => ctx.call(client.pause_queue(request)).await?,
        QueueAction::Resume => ctx.call(client.resume_queue(request)).await?,
    };
    ctx.printer.one(&queue, queue_table)
}

pub async fn queue(ctx: &mut Ctx, args: QueueArgs) -> Result<(), CliError> {
    match args.command {
        QueueCommand::Set(args) => {
            if args.max_running.is_none() {
                return Err(CliError::Usage(
                    "nothing to set: give --max-running N (0 removes the limit)".into(),
                ));
            }
            let mut client = ctx.engine().await?.queues();
            let request = SetQueueRequest {
                name: args.name,
                max_running: args.max_running,
                reason: args.reason.text(),
            };
            let queue = ctx.call(client.set_queue(request)).await?;
            ctx.printer.one(&queue, queue_table)
        }
    }
}

/// The queues table: depth, age of the oldest ready step, rates per minute.
pub fn queue_table(queues: &[Queue]) -> Table {
    let mut table = Table::new(&[
        "QUEUE", "STATE", "READY", "DELAYED", "RUNNING", "MAX", "OLDEST", "IN/MIN", "DONE/MIN",
        "WORKERS",
    ]);
    for q in queues {
        let state = if q.paused { "paused" } else { "active" };
        table.row(vec![
            Cell::new(&q.name),
            Cell::state(state),
            Cell::new(q.ready.to_string()),
            Cell::new(q.delayed.to_string()),
            Cell::new(q.running.to_string()),
            Cell::new(max_running_word(q.max_running)),
            Cell::new(duration_or_dash(q.oldest_ready_age_ms)),
            Cell::new(q.enqueued_last_minute.to_string()),
            Cell::new(q.completed_last_minute.to_string()),
            Cell::new(q.workers.to_string()),
        ]);
    }
    table
}

/// A queue's `max_running` as tables show it: `-` for no limit.
pub fn max_running_word(max: u32) -> String {
    if max == 0 {
        "-".to_owned()
    } else {
        max.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_table_shows_depth_age_and_rates() {
        let q = Queue {
            name: "build".into(),
            paused: true,
            ready: 12,
            delayed: 1,
            running: 4,
            oldest_ready_age_ms: 95_000,
            enqueued_last_minute: 30,
            completed_last_minute: 28,
            workers: 2,
            max_running: 4,
        };
        let idle = Queue {
            name: "deploy".into(),
            ..Queue::default()
        };
        assert_eq!(
            queue_table(&[q, idle]).render(false),
            "QUEUE   STATE   READY  DELAYED  RUNNING  MAX  OLDEST  IN/MIN  DONE/MIN  WORKERS\n\
             build   paused  12     1        4        4    1m35s   30      28        2\n\
             deploy  active  0      0        0        -    -       0       0         0\n"
        );
    }
}
