//! Approve and reject: the selected approval, or the one the open run
//! waits for.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{Approval, ApprovalState, DecideRequest};

use super::{Change, Changed, Confirm, Kind, Marked, each, prepare_marked, still_fits_some};
use crate::app::{App, Screen, marks};
use crate::client::Engine;
use crate::model::Data;
use crate::text::{step_number, time::relative};

/// Why an approval cannot be decided, if it cannot.
fn refusal(a: &Approval) -> Option<String> {
    (a.state() != ApprovalState::Pending).then(|| {
        format!(
            "approval {} is already {}",
            a.id,
            word_of::<ApprovalState>(a.state)
        )
    })
}

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let marked = marks::marked(app);
    if !marked.is_empty() {
        return prepare_many(app, kind, &marked);
    }
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
    if let Some(why) = refusal(approval) {
        return Err(why);
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

/// Approving or rejecting the marked approvals, each on its own.
fn prepare_many(app: &App, kind: Kind, marked: &[String]) -> Result<Confirm, String> {
    let data = app.shown().0;
    let approve = kind == Kind::Approve;
    let effect = if approve {
        "each is approved on its own: the four-eyes rules apply to each, and the engine \
         refuses those you may not approve"
    } else {
        "each rejection fails its step and its run"
    };
    prepare_marked(
        kind,
        marked,
        |id| data.approvals.get(id),
        |a| {
            refusal(a).map_or_else(
                || {
                    Ok(format!(
                        "run {}, step {} {}",
                        a.run_name,
                        step_number(a.step_index),
                        a.step_name
                    ))
                },
                Err,
            )
        },
        Marked {
            rows: "approvals",
            title: if approve { "Approve" } else { "Reject" },
            none: "can be decided",
            heading: "approvals, pending:",
            effect: effect.to_owned(),
        },
    )
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    if change.is_many() {
        return still_fits_some(
            change,
            |id| data.approvals.get(id),
            |a| refusal(a).is_none(),
            "none of the marked approvals is pending any more, nothing to do",
        );
    }
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
    let approve = change.kind == Kind::Approve;
    let decide = move |id: String, engine: Engine, reason: String| async move {
        let request = DecideRequest {
            id,
            approve,
            reason,
        };
        let mut client = engine.approvals();
        crate::console::call(client.decide(request)).await
    };
    Box::pin(async move {
        if change.is_many() {
            let results = each(change.ids, |id| {
                let decided = decide(id, engine.clone(), reason.clone());
                async move {
                    let a = decided.await?;
                    Ok(word_of::<ApprovalState>(a.state))
                }
            })
            .await;
            return Ok(Changed::Many(results));
        }
        Ok(Changed::Approval(decide(change.id, engine, reason).await?))
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
