//! Force-release: the selected lease, its id typed again to confirm.

use futures::future::BoxFuture;
use opsdeck_proto::v1::ForceReleaseRequest;

use super::{Change, Changed, Confirm, Kind};
use crate::app::App;
use crate::client::Engine;
use crate::model::Data;
use crate::text::step_number;

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let data = app.shown().0;
    let id = app.selected_key().ok_or("no lease is selected")?;
    let l = data
        .leases
        .get(id)
        .ok_or_else(|| format!("lease {id} is not known here"))?;
    let lines = vec![
        format!("lease {id}, held by {}", l.worker_id),
        format!(
            "run {} ({}), step {} {}, attempt {}",
            l.run_name,
            l.run_id,
            step_number(l.step_index),
            l.step_name,
            l.attempt
        ),
        "the step goes back to its queue, or fails if you say so below; \
         its worker can no longer report on it"
            .to_owned(),
    ];
    let mut confirm = Confirm::new(
        Change::new(kind, id),
        "Force-release lease".to_owned(),
        lines,
    );
    confirm.others = data.leases.keys().filter(|k| *k != id).cloned().collect();
    Ok(confirm)
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    if data.leases.contains_key(&change.id) {
        Ok(())
    } else {
        Err(format!(
            "lease {} is no longer live (its step ended or it was released), nothing to do",
            change.id
        ))
    }
}

pub fn call(
    engine: Engine,
    change: Change,
    reason: String,
) -> BoxFuture<'static, Result<Changed, tonic::Status>> {
    Box::pin(async move {
        let request = ForceReleaseRequest {
            id: change.id,
            fail: change.fail,
            reason,
        };
        let mut client = engine.leases();
        Ok(Changed::Lease(
            crate::console::call(client.force_release(request)).await?,
        ))
    })
}

pub fn outcome(change: &Change, changed: &Changed, data: &Data) -> String {
    let Changed::Lease(l) = changed else {
        return format!("{} done", change.verb());
    };
    let lease = &change.id;
    let step = format!(
        "step {} {} of run {}",
        step_number(l.step_index),
        l.step_name,
        l.run_name
    );
    let queue = data
        .runs
        .get(&l.run_id)
        .and_then(|r| r.steps.get(l.step_index as usize))
        .map_or(l.queue.clone(), |s| s.queue.clone());
    if change.fail {
        format!("force-released lease {lease}: {step} fails")
    } else {
        format!("force-released lease {lease}: {step} goes back to queue {queue}")
    }
}
