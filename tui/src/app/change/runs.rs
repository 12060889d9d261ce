//! Cancel and retry: the selected run, or the open one.

use futures::future::BoxFuture;
use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{BulkRunsRequest, CancelRunRequest, RetryRunRequest, Run, RunState};

use super::{Change, Changed, Confirm, Kind, Marked, prepare_marked, still_fits_some};
use crate::app::{App, Screen, marks};
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

/// Why the change cannot be made to the run, if it cannot.
fn refusal(run: &Run, kind: Kind) -> Option<String> {
    let state = word_of::<RunState>(run.state);
    if kind == Kind::Cancel {
        model::run_is_final(run).then(|| format!("run {} is already {state}", run.name))
    } else {
        (run.state() != RunState::Failed).then(|| {
            format!(
                "only a failed run can be retried; run {} is {state}",
                run.name
            )
        })
    }
}

/// What the change does to a run, in words.
fn effect(kind: Kind) -> &'static str {
    if kind == Kind::Cancel {
        "its running step is stopped and the run ends as cancelled"
    } else {
        "its dead or failed step gets a new attempt budget"
    }
}

pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    let marked = marks::marked(app);
    if !marked.is_empty() {
        return prepare_many(app, kind, &marked);
    }
    let run = run_of_screen(app)?;
    let state = word_of::<RunState>(run.state);
    if let Some(why) = refusal(run, kind) {
        return Err(why);
    }
    let title = if kind == Kind::Cancel {
        "Cancel run"
    } else {
        "Retry run"
    };
    let mut lines = vec![format!("run {} ({}), {state}", run.name, run.id)];
    if let Some(step) = run.steps.get(run.current_step as usize) {
        lines.push(format!("step {} {}", step_number(step.index), step.name));
    }
    if !run.message.is_empty() {
        lines.push(run.message.clone());
    }
    lines.push(effect(kind).to_owned());
    Ok(Confirm::new(
        Change::new(kind, run.id.clone()),
        title.to_owned(),
        lines,
    ))
}

/// Cancelling or retrying the marked runs.
fn prepare_many(app: &App, kind: Kind, marked: &[String]) -> Result<Confirm, String> {
    let data = app.shown().0;
    let (title, verb) = if kind == Kind::Cancel {
        ("Cancel", "cancelled")
    } else {
        ("Retry", "retried")
    };
    prepare_marked(
        kind,
        marked,
        |id| data.runs.get(id),
        |run| refusal(run, kind).map_or_else(|| Ok(run.name.clone()), Err),
        Marked {
            rows: "runs",
            title,
            none: &format!("can be {verb}"),
            heading: &format!("runs, to be {verb}:"),
            effect: format!("each: {}", effect(kind)),
        },
    )
}

pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    if change.is_many() {
        return still_fits_some(
            change,
            |id| data.runs.get(id),
            |r| refusal(r, change.kind).is_none(),
            "none of the marked runs can take it any more, nothing to do",
        );
    }
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
    let kind = change.kind;
    let one = move |id: String, engine: Engine, reason: String| async move {
        let mut client = engine.runs();
        if kind == Kind::Cancel {
            let request = CancelRunRequest { id, reason };
            crate::console::call(client.cancel_run(request)).await
        } else {
            let request = RetryRunRequest {
                id,
                reason,
                ..Default::default()
            };
            crate::console::call(client.retry_run(request)).await
        }
    };
    Box::pin(async move {
        if change.is_many() {
            // One call, one commit, one reason for every marked run.
            let request = BulkRunsRequest {
                ids: change.ids,
                reason,
                ..Default::default()
            };
            let mut client = engine.runs();
            let answer = if kind == Kind::Cancel {
                crate::console::call(client.cancel_runs(request)).await?
            } else {
                crate::console::call(client.retry_runs(request)).await?
            };
            let done = answer
                .done
                .into_iter()
                .map(|r| (r.id, Ok(word_of::<RunState>(r.state))));
            let refused = answer
                .refused
                .into_iter()
                .map(|r| (r.id, Err(format!("{}: {}", r.code, r.message))));
            return Ok(Changed::Many(done.chain(refused).collect()));
        }
        Ok(Changed::Run(one(change.id, engine, reason).await?))
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
