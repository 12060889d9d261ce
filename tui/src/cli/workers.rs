//! Workers: `workers`, `workers forget`, `drain`, `undrain`, `recycle`,
//! `reset-breaker`.

use clap::{Args, Subcommand};
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{IdKind, ListWorkersRequest, Worker, WorkerActionRequest, WorkerState};

use super::error::CliError;
use super::table::{Cell, Table, Tone};
use super::{Ctx, Reason};
use crate::text::time::Clock;

/// `drain WORKER`, `undrain WORKER`, `recycle WORKER`, `reset-breaker WORKER`.
#[derive(Debug, Args)]
pub struct WorkerChange {
    /// The worker's id, or a unique prefix or suffix of it (6 characters
    /// or more)
    #[arg(value_name = "WORKER")]
    pub id: String,
    #[command(flatten)]
    pub reason: Reason,
}

/// `workers [forget WORKER]`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(subcommand)]
    pub action: Option<WorkersAction>,
}

#[derive(Debug, Subcommand)]
pub enum WorkersAction {
    /// Forget a stopped worker: its record, and the binding of its id to
    /// the identity that first registered it (admin)
    Forget(WorkerChange),
}

#[derive(Clone, Copy, Debug)]
pub enum WorkerAction {
    Drain,
    Undrain,
    Recycle,
    Forget,
    ResetBreaker,
}

pub async fn list(ctx: &mut Ctx) -> Result<(), CliError> {
    let mut client = ctx.engine().await?.workers();
    let workers = ctx
        .call(client.list_workers(ListWorkersRequest {}))
        .await?
        .workers;
    ctx.printer.list(&workers, "no workers", |w| {
        worker_table(w, ctx.printer.clock())
    })
}

pub async fn change(
    ctx: &mut Ctx,
    action: WorkerAction,
    args: WorkerChange,
) -> Result<(), CliError> {
    let id = ctx.resolve(IdKind::Worker, &args.id).await?;
    let mut client = ctx.engine().await?.workers();
    let request = WorkerActionRequest {
        id,
        reason: args.reason.text(),
    };
    let worker = match action {
        WorkerAction::Drain => ctx.call(client.drain_worker(request)).await?,
        WorkerAction::Undrain => ctx.call(client.undrain_worker(request)).await?,
        WorkerAction::Recycle => ctx.call(client.recycle_worker(request)).await?,
        WorkerAction::Forget => ctx.call(client.forget_worker(request)).await?,
        WorkerAction::ResetBreaker => ctx.call(client.reset_breaker(request)).await?,
    };
    ctx.printer
        .one(&worker, |w| worker_table(w, ctx.printer.clock()))
}

/// The workers table: one row per worker process.
pub fn worker_table(workers: &[Worker], clock: Clock) -> Table {
    // NOTE says why a breaker is open: shown only when one is.
    let notes = workers.iter().any(|w| !w.breaker.is_empty());
    let mut header = vec![
        "ID",
        "STATE",
        "BUSY",
        "QUEUES",
        "HOST",
        "PID",
        "GEN",
        "HEARTBEAT",
        "VERSION",
    ];
    if notes {
        header.push("NOTE");
    }
    let mut table = Table::new(&header)
        .flexible(&["QUEUES", "HOST", "NOTE"])
        .optional(&["VERSION", "PID", "GEN"]);
    for w in workers {
        let word = word_of::<WorkerState>(w.state);
        let mut state = word.clone();
        if w.recycle_requested && w.state() != WorkerState::Recycling {
            state.push_str(" (recycle)");
        }
        if !w.connected && matches!(w.state(), WorkerState::Online | WorkerState::Draining) {
            state.push_str(" (disconnected)");
        }
        let mut tone = Tone::of_state(&word);
        let mut note = String::new();
        if !w.breaker.is_empty() {
            state.push_str(&format!(" (breaker {})", w.breaker.replace('_', "-")));
            tone = Tone::Bad;
            note = format!(
                "breaker opened {}: {}",
                clock.at(w.breaker_opened_at_ms),
                w.breaker_message
            );
        }
        let mut row = vec![
            Cell::new(&w.id),
            Cell::toned(state, tone),
            Cell::new(format!("{}/{}", w.lease_ids.len(), w.slots)),
            Cell::new(w.queues.join(",")),
            Cell::new(&w.host),
            Cell::new(w.pid.to_string()),
            Cell::new(w.generation.to_string()),
            Cell::new(clock.at(w.last_heartbeat_at_ms)),
            Cell::new(&w.version),
        ];
        if notes {
            row.push(Cell::new(note));
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_table_shows_load_and_pending_recycles() {
        let now = 1_700_000_000_000;
        let w = Worker {
            id: "w-1".into(),
            state: WorkerState::Draining as i32,
            queues: vec!["build".into(), "deploy".into()],
            slots: 4,
            lease_ids: vec!["l1".into()],
            host: "ci-7".into(),
            pid: 4242,
            generation: 3,
            last_heartbeat_at_ms: now - 2_000,
            version: "0.1.0".into(),
            connected: true,
            recycle_requested: true,
            ..Worker::default()
        };
        assert_eq!(
            worker_table(&[w], Clock::relative(now)).render(false),
            "ID   STATE               BUSY  QUEUES        HOST  PID   GEN  HEARTBEAT  VERSION\n\
             w-1  draining (recycle)  1/4   build,deploy  ci-7  4242  3    2s ago     0.1.0\n"
        );
    }

    #[test]
    fn workers_table_shows_an_open_breaker_and_why() {
        let now = 1_700_000_000_000;
        let w = Worker {
            id: "w-2".into(),
            state: WorkerState::Online as i32,
            queues: vec!["build".into()],
            slots: 1,
            connected: true,
            breaker: "open".into(),
            breaker_message: "its last 5 attempts failed".into(),
            breaker_opened_at_ms: now - 60_000,
            ..Worker::default()
        };
        let text = worker_table(&[w], Clock::relative(now)).render(false);
        assert!(text.contains("online (breaker open)"), "{text}");
        assert!(
            text.contains("breaker opened 1m ago: its last 5 attempts failed"),
            "{text}"
        );
    }
}
