//! Clear a quarantine: the selected run name.

use futures::future::BoxFuture;
use opsdeck_proto::v1::ClearQuarantineRequest;

use super::{Change, Changed, Confirm, Kind};
use crate::app::{App, active_runs};
use crate::client::Engine;
use crate::model::Data;
use crate::text::time::relative;

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let data = app.shown().0;
    let name = app
        .selected_key()
        .ok_or("no quarantined run name is selected")?;
    let q = data
        .quarantines
        .get(name)
        .ok_or_else(|| format!("{name} is not quarantined (any more)"))?;
    let active = active_runs(data, name);
    let mut lines = vec![format!(
        "run name {name}, quarantined {} after {} stuck lease(s)",
        relative(q.since_ms, app.now_ms),
        q.stuck_count
    )];
    if !q.message.is_empty() {
        lines.push(q.message.clone());
    }
    lines.push(format!(
        "new runs of {name} are accepted again, and the queued steps of its {active} \
         active run(s) are handed out; clear it once the cause is dealt with"
    ));
    Ok(Confirm::new(
        Change::new(kind, name),
        "Clear quarantine".to_owned(),
        lines,
    ))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    if data.quarantines.contains_key(&change.id) {
        Ok(())
    } else {
        Err(format!(
            "{} is no longer quarantined, nothing to do",
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
        let request = ClearQuarantineRequest {
            name: change.id,
            reason,
        };
        let mut client = engine.runs();
        Ok(Changed::Quarantine(
            crate::console::call(client.clear_quarantine(request)).await?,
        ))
    })
}

pub fn outcome(change: &Change, _: &Changed, data: &Data) -> String {
    let name = &change.id;
    format!(
        "cleared the quarantine of {name}: its runs are taken again ({} active)",
        active_runs(data, name)
    )
}
