//! Drain, undrain and recycle: the selected worker.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{WorkerActionRequest, WorkerState};

use super::{Change, Changed, Confirm, Kind};
use crate::app::App;
use crate::client::Engine;
use crate::model::Data;

/// Whether a worker in this state can take the change.
fn fits(kind: Kind, state: WorkerState) -> bool {
    match kind {
        Kind::Drain => state == WorkerState::Online,
        Kind::Undrain => state == WorkerState::Draining,
        _ => matches!(state, WorkerState::Online | WorkerState::Draining),
    }
}

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let data = app.shown().0;
    let id = app.selected_key().ok_or("no worker is selected")?;
    let w = data
        .workers
        .get(id)
        .ok_or_else(|| format!("worker {id} is not known here"))?;
    let state = word_of::<WorkerState>(w.state);
    if !fits(kind, w.state()) {
        return Err(match kind {
            Kind::Drain => format!("only an online worker can be drained; {id} is {state}"),
            Kind::Undrain => format!("only a draining worker can be undrained; {id} is {state}"),
            _ => format!("only an online or draining worker can be recycled; {id} is {state}"),
        });
    }
    let (title, effect) = match kind {
        Kind::Drain => (
            "Drain worker",
            format!(
                "it takes no new work and finishes the {} step(s) it holds",
                w.lease_ids.len()
            ),
        ),
        Kind::Undrain => ("Undrain worker", "it takes work again".to_owned()),
        _ => (
            "Recycle worker",
            format!(
                "it drains, then a fresh process replaces it as generation {}",
                w.generation + 1
            ),
        ),
    };
    let lines = vec![
        format!(
            "worker {id} on {}, {state}, generation {}",
            if w.host.is_empty() { "?" } else { &w.host },
            w.generation
        ),
        format!(
            "{}/{} slots busy; queues {}",
            w.lease_ids.len(),
            w.slots,
            w.queues.join(", ")
        ),
        effect,
    ];
    Ok(Confirm::new(Change::new(kind, id), title.to_owned(), lines))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    let worker = &change.id;
    let Some(w) = data.workers.get(worker) else {
        return Err(format!("worker {worker} is gone, nothing to do"));
    };
    if fits(change.kind, w.state()) {
        Ok(())
    } else {
        Err(format!(
            "worker {worker} is {} now, nothing to do",
            word_of::<WorkerState>(w.state)
        ))
    }
}

pub fn call(
    engine: Engine,
    change: Change,
    reason: String,
) -> BoxFuture<'static, Result<Changed, tonic::Status>> {
    Box::pin(async move {
        let mut client = engine.workers();
        let request = WorkerActionRequest {
            id: change.id,
            reason,
        };
        let worker = match change.kind {
            Kind::Drain => crate::console::call(client.drain_worker(request)).await?,
            Kind::Undrain => crate::console::call(client.undrain_worker(request)).await?,
            _ => crate::console::call(client.recycle_worker(request)).await?,
        };
        Ok(Changed::Worker(worker))
    })
}

pub fn outcome(change: &Change, changed: &Changed, _: &Data) -> String {
    let worker = &change.id;
    let Changed::Worker(w) = changed else {
        return format!("{} done", change.verb());
    };
    match change.kind {
        Kind::Drain => format!(
            "draining {worker}: no new work; it finishes the {} step(s) it holds",
            w.lease_ids.len()
        ),
        Kind::Undrain => format!("{worker} takes work again"),
        _ => format!(
            "recycling {worker}: generation {} is replaced by a fresh process once drained",
            w.generation
        ),
    }
}
