//! Cancel and retry: the selected run, or the open one.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{CancelRunRequest, RetryRunRequest, Run, RunState};

use super::{Change, Changed, Confirm, Kind};
use crate::app::{App, Screen};
use crate::client::Engine;
use crate::model::{self, Data};
use crate::text::step_number;

/// The run a change is about: the open one on the Run screen, else the
/// selected one.
fn run_of_screen(app: &App) -> Result<&Run, String> {
    let (data, run_view) = app.shown();
    let id = match app.screen {
        Screen::Run => Some(run_view.run_id.as_str()),
        _ => app.selected_key(),
    };
    let id = id.ok_or("no run is selected")?;
    data.runs
        .get(id)
        .ok_or_else(|| format!("run {id} is not known here"))
}

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let run = run_of_screen(app)?;
    let state = word_of::<RunState>(run.state);
    let (title, effect) = if kind == Kind::Cancel {
        if model::run_is_final(run) {
            return Err(format!("run {} is already {state}", run.name));
        }
        (
            "Cancel run",
            "its running step is stopped and the run ends as cancelled",
        )
    } else {
        if run.state() != RunState::Failed {
            return Err(format!(
                "only a failed run can be retried; run {} is {state}",
                run.name
            ));
        }
        (
            "Retry run",
            "its dead or failed step gets a new attempt budget",
        )
    };
    let mut lines = vec![format!("run {} ({}), {state}", run.name, run.id)];
    if let Some(step) = run.steps.get(run.current_step as usize) {
        lines.push(format!("step {} {}", step_number(step.index), step.name));
    }
    if !run.message.is_empty() {
        lines.push(run.message.clone());
    }
    lines.push(effect.to_owned());
    Ok(Confirm::new(
        Change::new(kind, run.id.clone()),
        title.to_owned(),
        lines,
    ))
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    let Some(r) = data.runs.get(&change.id) else {
        return Ok(());
    };
    let state = word_of::<RunState>(r.state);
    match change.kind {
        Kind::Cancel if model::run_is_final(r) => {
            Err(format!("run {} is already {state}, nothing to do", r.name))
        }
        Kind::Retry if r.state() != RunState::Failed => Err(format!(
            "run {} is {state} now, not failed, nothing to do",
            r.name
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
        let mut client = engine.runs();
        let run = if change.kind == Kind::Cancel {
            let request = CancelRunRequest {
                id: change.id,
                reason,
            };
            crate::console::call(client.cancel_run(request)).await?
        } else {
            let request = RetryRunRequest {
                id: change.id,
                reason,
                ..Default::default()
            };
            crate::console::call(client.retry_run(request)).await?
        };
        Ok(Changed::Run(run))
    })
}

pub fn outcome(change: &Change, changed: &Changed, _: &Data) -> String {
    let Changed::Run(r) = changed else {
        return format!("{} done", change.verb());
    };
    let state = word_of::<RunState>(r.state);
    if change.kind == Kind::Cancel {
        format!(
            "cancel of run {} ({}) accepted: it is {state}",
            r.name, change.id
        )
    } else {
        format!(
            "run {} ({}) retried: it is {state} again",
            r.name, change.id
        )
    }
}
