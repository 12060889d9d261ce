//! Queues: `queues`, `pause`, `resume`.

use clap::Args;
use opsdeck_proto::v1::{ListQueuesRequest, Queue, QueueActionRequest};

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

/// The queues table: depth, age of the oldest ready step, rates per minute.
pub fn queue_table(queues: &[Queue]) -> Table {
    let mut table = Table::new(&[
        "QUEUE", "STATE", "READY", "DELAYED", "RUNNING", "OLDEST", "IN/MIN", "DONE/MIN", "WORKERS",
    ]);
    for q in queues {
        let state = if q.paused { "paused" } else { "active" };
        table.row(vec![
            Cell::new(&q.name),
            Cell::state(state),
            Cell::new(q.ready.to_string()),
            Cell::new(q.delayed.to_string()),
            Cell::new(q.running.to_string()),
            Cell::new(duration_or_dash(q.oldest_ready_age_ms)),
            Cell::new(q.enqueued_last_minute.to_string()),
            Cell::new(q.completed_last_minute.to_string()),
            Cell::new(q.workers.to_string()),
        ]);
    }
    table
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
        };
        let idle = Queue {
            name: "deploy".into(),
            ..Queue::default()
        };
        assert_eq!(
            queue_table(&[q, idle]).render(false),
            "QUEUE   STATE   READY  DELAYED  RUNNING  OLDEST  IN/MIN  DONE/MIN  WORKERS\n\
             build   paused  12     1        4        1m35s   30      28        2\n\
             deploy  active  0      0        0        -       0       0         0\n"
        );
    }
}
