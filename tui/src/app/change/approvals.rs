//! Approve and reject: the selected approval, or the one the open run
//! waits for.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{Approval, ApprovalState, DecideRequest};

use super::{Change, Changed, Confirm, Kind, each, many_lines};
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
    let (mut fit, mut skipped) = (Vec::new(), Vec::new());
    for id in marked {
        match data.approvals.get(id) {
            None => skipped.push((id.clone(), "not known here".to_owned())),
            Some(a) => match refusal(a) {
                Some(why) => skipped.push((id.clone(), why)),
                None => fit.push((
                    id.clone(),
                    format!(
                        "run {}, step {} {}",
                        a.run_name,
                        step_number(a.step_index),
                        a.step_name
                    ),
                )),
            },
        }
    }
    if fit.is_empty() {
        let why = skipped
            .first()
            .map_or(String::new(), |(_, why)| format!(": {why}"));
        return Err(format!(
            "none of the {} marked approvals can be decided{why}",
            marked.len()
        ));
    }
    let approve = kind == Kind::Approve;
    let mut lines = many_lines("approvals, pending:", marked.len(), &fit, &skipped);
    lines.push(if approve {
        "each is approved on its own: the four-eyes rules apply to each, and the engine \
         refuses those you may not approve"
            .to_owned()
    } else {
        "each rejection fails its step and its run".to_owned()
    });
    let title = format!(
        "{} {} approvals",
        if approve { "Approve" } else { "Reject" },
        fit.len()
    );
    let ids = fit.into_iter().map(|(id, _)| id).collect();
    Ok(Confirm::new(Change::many(kind, ids), title, lines))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    if change.is_many() {
        let pending = change
            .ids
            .iter()
            .filter(|id| data.approvals.get(*id).is_none_or(|a| refusal(a).is_none()))
            .count();
        return if pending == 0 {
            Err("none of the marked approvals is pending any more, nothing to do".to_owned())
        } else {
            Ok(())
        };
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
