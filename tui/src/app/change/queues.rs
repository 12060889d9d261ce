//! Pause and resume: the selected queue, whichever of the two it needs.

use futures::future::BoxFuture;
use opsdeck_proto::v1::QueueActionRequest;

use super::{Change, Changed, Confirm, Kind};
use crate::app::App;
use crate::client::Engine;
use crate::model::Data;

/// `p` pauses a running queue and resumes a paused one, whichever kind
/// asked.
pub fn prepare(app: &App, _: Kind) -> Result<Confirm, String> {
    let data = app.shown().0;
    let name = app.selected_key().ok_or("no queue is selected")?;
    let q = data
        .queues
        .get(name)
        .ok_or_else(|| format!("queue {name} is not known here"))?;
    let q = &q.queue;
    let figures = format!(
        "queue {name}: {} ready, {} delayed, {} running",
        q.ready, q.delayed, q.running
    );
    let (kind, title, effect) = if q.paused {
        (
            Kind::Resume,
            "Resume queue",
            "its ready steps are handed out to workers again",
        )
    } else {
        (
            Kind::Pause,
            "Pause queue",
            "no step is handed out until it is resumed; running steps go on",
        )
    };
    Ok(Confirm::new(
        Change::new(kind, name),
        title.to_owned(),
        vec![figures, effect.to_owned()],
    ))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    let pause = change.kind == Kind::Pause;
    match data.queues.get(&change.id) {
        Some(q) if q.queue.paused == pause => Err(format!(
            "queue {} is already {}, nothing to do",
            change.id,
            if pause { "paused" } else { "running" }
        )),
        _ => Ok(()),
    }
}

pub fn call(
    engine: Engine,
    change: Change,
    reason: String,
) -> BoxFuture<'static, Result<Changed, tonic::Status>> {
    Box::pin(async move {
        let mut client = engine.queues();
        let pause = change.kind == Kind::Pause;
        let request = QueueActionRequest {
            name: change.id,
            reason,
            create: false,
        };
        let queue = if pause {
            crate::console::call(client.pause_queue(request)).await?
        } else {
            crate::console::call(client.resume_queue(request)).await?
        };
        Ok(Changed::Queue(queue))
    })
}

pub fn outcome(change: &Change, changed: &Changed, _: &Data) -> String {
    let queue = &change.id;
    match (change.kind, changed) {
        (Kind::Pause, Changed::Queue(q)) => format!(
            "paused queue {queue}: its {} ready step(s) wait until it is resumed",
            q.ready
        ),
        (_, Changed::Queue(q)) => format!(
            "resumed queue {queue}: {} ready step(s) are handed out again",
            q.ready
        ),
        _ => format!("{} done", change.verb()),
    }
}
