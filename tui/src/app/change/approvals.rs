//! Approve and reject: the selected approval, or the one the open run
//! waits for.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{ApprovalState, DecideRequest};

use super::{Change, Changed, Confirm, Kind};
use crate::app::App;
use crate::app::Screen;
use crate::client::Engine;
use crate::model::Data;
use crate::text::{step_number, time::relative};

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let (data, run_view) = app.shown();
    let approval = match app.screen {
        Screen::Run => {
            let run = data
                .runs
                .get(&run_view.run_id)
                .ok_or_else(|| format!("run {} is not known here", run_view.run_id))?;
            data.pending_approval_of(&run.id)
                .ok_or_else(|| format!("run {} waits for no approval", run.name))?
        }
        _ => {
            let id = app.selected_key().ok_or("no approval is selected")?;
            data.approvals
                .get(id)
                .ok_or_else(|| format!("approval {id} is not known here"))?
        }
    };
    if approval.state() != ApprovalState::Pending {
        return Err(format!(
            "approval {} is already {}",
            approval.id,
            word_of::<ApprovalState>(approval.state)
        ));
    }
    let approve = kind == Kind::Approve;
    let votes = approval.decisions.iter().filter(|d| d.approve).count();
    let mut lines = vec![
        format!("approval {}", approval.id),
        format!(
            "run {} ({}), step {} {}",
            approval.run_name,
            approval.run_id,
            step_number(approval.step_index),
            approval.step_name
        ),
        format!(
            "asked by {} {}; {votes} of {} approvals so far",
            approval.submitted_by,
            relative(approval.requested_at_ms, app.now_ms),
            approval.required.max(1)
        ),
    ];
    lines.push(if approve {
        "approving lets the run go on once enough approvals are in".to_owned()
    } else {
        "rejecting fails the step and the run".to_owned()
    });
    let title = if approve { "Approve" } else { "Reject" };
    Ok(Confirm::new(
        Change::new(kind, approval.id.clone()),
        title.to_owned(),
        lines,
    ))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    match data.approvals.get(&change.id) {
        Some(a) if a.state() != ApprovalState::Pending => Err(format!(
            "approval {} is already {}, nothing to do",
            change.id,
            word_of::<ApprovalState>(a.state)
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
        let request = DecideRequest {
            id: change.id,
            approve: change.kind == Kind::Approve,
            reason,
        };
        let mut client = engine.approvals();
        Ok(Changed::Approval(
            crate::console::call(client.decide(request)).await?,
        ))
    })
}

pub fn outcome(change: &Change, changed: &Changed, _: &Data) -> String {
    let id = &change.id;
    match (change.kind, changed) {
        (Kind::Approve, Changed::Approval(a)) if a.state() == ApprovalState::Approved => {
            format!("approved {id}: run {} continues", a.run_name)
        }
        (Kind::Approve, Changed::Approval(a)) => {
            let votes = a.decisions.iter().filter(|d| d.approve).count();
            format!(
                "approval of {id} recorded: {votes} of {} so far, it stays {}",
                a.required.max(1),
                word_of::<ApprovalState>(a.state)
            )
        }
        (_, Changed::Approval(a)) => format!("rejected {id}: run {} fails", a.run_name),
        _ => format!("{} done", change.verb()),
    }
}
