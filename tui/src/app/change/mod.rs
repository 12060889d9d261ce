//! Changes the console makes to the engine: the one table of them,
//! [`CHANGES`], and the steps every change goes through — the key is
//! allowed ([`start`]), a dialog says what will happen ([`Confirm`]), OK
//! sends it ([`Cmd::Change`]) and the status line says what came of it
//! ([`outcome`]).
//!
//! A change is one entry in [`CHANGES`] plus its handler, in the file of
//! the object it changes (`runs`, `approvals`, `workers`, `queues`,
//! `leases`, `quarantines`): what the dialog says, whether the change
//! still applies, the engine call and the words for its result. The role a
//! change needs comes from the engine's own table of what each method
//! needs ([`opsdeck_proto::access`]), through the method named here.

use futures::future::BoxFuture;
use opsdeck_proto::v1::{Approval, Lease, Quarantine, Queue, Run, Worker};

use super::{App, Cmd, Modal, StatusKind, link_words};
use crate::client::Engine;
use crate::keys::Action;
use crate::model::Data;
use crate::roles;

mod approvals;
mod confirm;
mod leases;
mod quarantines;
mod queues;
mod runs;
mod workers;

pub use confirm::{Confirm, Focus, ID_PART_MIN, id_matches, on_key};

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Approve,
    Reject,
    Cancel,
    Retry,
    Drain,
    Undrain,
    Recycle,
    /// `p` on a queue: pauses a running queue, resumes a paused one.
    Pause,
    Resume,
    ForceRelease,
    ClearQuarantine,
}

/// A change to the engine, with what it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    /// The id (or name, for queues and quarantines) of what it changes;
    /// empty for a change to marked rows, which `ids` lists.
    pub id: String,
    /// A change to several marked rows: their ids, those it applies to.
    pub ids: Vec<String>,
    /// Force-release only: fail the step instead of requeueing it.
    pub fail: bool,
}

/// What a change returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Approval(Approval),
    Run(Run),
    Worker(Worker),
    Queue(Queue),
    Lease(Lease),
    Quarantine(Quarantine),
    /// A change to marked rows: per id, what came of it in words, or why
    /// the engine refused.
    Many(Vec<(String, Result<String, String>)>),
}

/// One change the console can make.
pub struct Def {
    pub kind: Kind,
    /// The gRPC method it calls: the role it needs is that method's.
    pub method: &'static str,
    /// "cancel run", as the dialog's OK says it.
    pub verb: &'static str,
    /// "cancelling run", before the id, while the call is out.
    pub doing: &'static str,
    /// "cancelling a run", as "… needs the operator role" says it.
    pub what: &'static str,
    /// The dialog for the current selection, or why there is nothing to
    /// change.
    pub prepare: fn(&App, Kind) -> Result<Confirm, String>,
    /// Whether the change still makes sense with the data as it stands;
    /// `Err` says why not.
    pub still_applies: fn(&Data, &Change) -> Result<(), String>,
    /// The engine call.
    pub call: fn(Engine, Change, String) -> BoxFuture<'static, Result<Changed, tonic::Status>>,
    /// The status line once the call went through.
    pub outcome: fn(&Change, &Changed, &Data) -> String,
}

/// Every change, one entry each, in the order of [`Kind`].
pub const CHANGES: &[Def] = &[
    Def {
        kind: Kind::Approve,
        method: "/opsdeck.v1.Approvals/Decide",
        verb: "approve",
        doing: "approving",
        what: "approving",
        prepare: approvals::prepare,
        still_applies: approvals::still_applies,
        call: approvals::call,
        outcome: approvals::outcome,
    },
    Def {
        kind: Kind::Reject,
        method: "/opsdeck.v1.Approvals/Decide",
        verb: "reject",
        doing: "rejecting",
        what: "rejecting",
        prepare: approvals::prepare,
        still_applies: approvals::still_applies,
        call: approvals::call,
        outcome: approvals::outcome,
    },
    Def {
        kind: Kind::Cancel,
        method: "/opsdeck.v1.Runs/CancelRun",
        verb: "cancel run",
        doing: "cancelling run",
        what: "cancelling a run",
        prepare: runs::prepare,
        still_applies: runs::still_applies,
        call: runs::call,
        outcome: runs::outcome,
    },
    Def {
        kind: Kind::Retry,
        method: "/opsdeck.v1.Runs/RetryRun",
        verb: "retry run",
        doing: "retrying run",
        what: "retrying a run",
        prepare: runs::prepare,
        still_applies: runs::still_applies,
        call: runs::call,
        outcome: runs::outcome,
    },
    Def {
        kind: Kind::Drain,
        method: "/opsdeck.v1.Workers/DrainWorker",
        verb: "drain",
        doing: "draining",
        what: "draining a worker",
        prepare: workers::prepare,
        still_applies: workers::still_applies,
        call: workers::call,
        outcome: workers::outcome,
    },
    Def {
        kind: Kind::Undrain,
        method: "/opsdeck.v1.Workers/UndrainWorker",
        verb: "undrain",
        doing: "undraining",
        what: "undraining a worker",
        prepare: workers::prepare,
        still_applies: workers::still_applies,
        call: workers::call,
        outcome: workers::outcome,
    },
    Def {
        kind: Kind::Recycle,
        method: "/opsdeck.v1.Workers/RecycleWorker",
        verb: "recycle",
        doing: "recycling",
        what: "recycling a worker",
        prepare: workers::prepare,
        still_applies: workers::still_applies,
        call: workers::call,
        outcome: workers::outcome,
    },
    Def {
        kind: Kind::Pause,
        method: "/opsdeck.v1.Queues/PauseQueue",
        verb: "pause",
        doing: "pausing queue",
        what: "pausing or resuming a queue",
        prepare: queues::prepare,
        still_applies: queues::still_applies,
        call: queues::call,
        outcome: queues::outcome,
    },
    Def {
        kind: Kind::Resume,
        method: "/opsdeck.v1.Queues/ResumeQueue",
        verb: "resume",
        doing: "resuming queue",
        what: "pausing or resuming a queue",
        prepare: queues::prepare,
        still_applies: queues::still_applies,
        call: queues::call,
        outcome: queues::outcome,
    },
    Def {
        kind: Kind::ForceRelease,
        method: "/opsdeck.v1.Leases/ForceRelease",
        verb: "force-release",
        doing: "force-releasing lease",
        what: "force-releasing a lease",
        prepare: leases::prepare,
        still_applies: leases::still_applies,
        call: leases::call,
        outcome: leases::outcome,
    },
    Def {
        kind: Kind::ClearQuarantine,
        method: "/opsdeck.v1.Runs/ClearQuarantine",
        verb: "clear quarantine",
        doing: "clearing the quarantine of",
        what: "clearing a quarantine",
        prepare: quarantines::prepare,
        still_applies: quarantines::still_applies,
        call: quarantines::call,
        outcome: quarantines::outcome,
    },
];

impl Kind {
    /// Its entry in [`CHANGES`].
    pub fn def(self) -> &'static Def {
        // In the order of the kinds (a test checks).
        &CHANGES[self as usize]
    }
}

impl Change {
    pub fn new(kind: Kind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            ids: Vec::new(),
            fail: false,
        }
    }

    /// The change to several marked rows.
    pub fn many(kind: Kind, ids: Vec<String>) -> Self {
        Self {
            kind,
            id: String::new(),
            ids,
            fail: false,
        }
    }

    /// Whether it changes several marked rows.
    pub fn is_many(&self) -> bool {
        !self.ids.is_empty()
    }

    pub fn def(&self) -> &'static Def {
        self.kind.def()
    }

    /// "approve", as the dialog's OK says it.
    pub fn verb(&self) -> &'static str {
        self.def().verb
    }

    /// The key's action that asks for this change (for the roles).
    pub fn action(&self) -> Action {
        Action::Change(self.kind)
    }

    /// "approving 01J…", while the call is out.
    fn doing(&self) -> String {
        if self.is_many() {
            format!("{}: {} marked", self.def().verb, self.ids.len())
        } else {
            format!("{} {}", self.def().doing, self.id)
        }
    }
}

/// Whether a change still makes sense with the data as it stands now;
/// `Err` says why not ("run deploy-web is already cancelled, nothing to
/// do").
pub fn still_applies(data: &Data, change: &Change) -> Result<(), String> {
    (change.def().still_applies)(data, change)
}

/// The engine call that makes a change.
pub fn call(
    engine: Engine,
    change: Change,
    reason: String,
) -> BoxFuture<'static, Result<Changed, tonic::Status>> {
    (change.def().call)(engine, change, reason)
}

/// The status line after a change went through, in words.
pub fn outcome(change: &Change, changed: &Changed, data: &Data) -> String {
    if let Changed::Many(results) = changed {
        return many_outcome(change, results);
    }
    (change.def().outcome)(change, changed, data)
}

/// "cancel run: 3 of 4 done; refused: 01J… (already succeeded)".
fn many_outcome(change: &Change, results: &[(String, Result<String, String>)]) -> String {
    let done = results.iter().filter(|(_, r)| r.is_ok()).count();
    let mut text = format!("{}: {done} of {} done", change.verb(), results.len());
    let refused: Vec<String> = results
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|why| format!("{id} ({why})")))
        .collect();
    if !refused.is_empty() {
        text.push_str(&format!("; refused: {}", refused.join(", ")));
    }
    text
}

/// The words a change to marked rows says itself with.
pub(super) struct Marked<'a> {
    /// "runs", as in "Cancel 2 runs".
    pub rows: &'a str,
    /// "Cancel", the dialog's title before the count.
    pub title: &'a str,
    /// "can be cancelled", as in "none of the 3 marked runs can be …".
    pub none: &'a str,
    /// "runs, to be cancelled:", after "2 of 3 marked".
    pub heading: &'a str,
    /// What the change does to each, the dialog's last line.
    pub effect: String,
}

/// The dialog for a change to marked rows: `check` gives, for each row
/// the console holds, the few words that name it, or why the change does
/// not fit it. The change goes to those it fits; the dialog counts them,
/// names the first few and lists those left out with why.
pub(super) fn prepare_marked<'d, T: 'd>(
    kind: Kind,
    marked: &[String],
    get: impl Fn(&str) -> Option<&'d T>,
    check: impl Fn(&T) -> Result<String, String>,
    words: Marked<'_>,
) -> Result<Confirm, String> {
    let (mut fit, mut skipped) = (Vec::new(), Vec::new());
    for id in marked {
        match get(id).map(&check) {
            None => skipped.push((id.clone(), "not known here".to_owned())),
            Some(Err(why)) => skipped.push((id.clone(), why)),
            Some(Ok(name)) => fit.push((id.clone(), name)),
        }
    }
    if fit.is_empty() {
        let why = skipped
            .first()
            .map_or(String::new(), |(_, why)| format!(": {why}"));
        return Err(format!(
            "none of the {} marked {} {}{why}",
            marked.len(),
            words.rows,
            words.none
        ));
    }
    let mut lines = many_lines(words.heading, marked.len(), &fit, &skipped);
    lines.push(words.effect);
    let title = format!("{} {} {}", words.title, fit.len(), words.rows);
    let ids = fit.into_iter().map(|(id, _)| id).collect();
    Ok(Confirm::new(Change::many(kind, ids), title, lines))
}

/// Whether a change to marked rows still fits one of them at least (a
/// row the console no longer holds counts: the engine decides); `Err`
/// with `gone` when none.
pub(super) fn still_fits_some<'d, T: 'd>(
    change: &Change,
    get: impl Fn(&str) -> Option<&'d T>,
    fits: impl Fn(&T) -> bool,
    gone: &str,
) -> Result<(), String> {
    if change.ids.iter().any(|id| get(id).is_none_or(&fits)) {
        Ok(())
    } else {
        Err(gone.to_owned())
    }
}

/// The dialog's lines for a change to marked rows: how many, the first
/// few by name, and those left out with why.
fn many_lines(
    what: &str,
    marked: usize,
    fit: &[(String, String)],
    skipped: &[(String, String)],
) -> Vec<String> {
    const SHOWN: usize = 5;
    let mut lines = vec![format!("{} of {marked} marked {what}", fit.len())];
    for (id, name) in fit.iter().take(SHOWN) {
        lines.push(format!("  {name} ({id})"));
    }
    if fit.len() > SHOWN {
        lines.push(format!("  … and {} more", fit.len() - SHOWN));
    }
    if !skipped.is_empty() {
        lines.push(format!("left out, {}:", skipped.len()));
        for (id, why) in skipped.iter().take(SHOWN) {
            lines.push(format!("  {id}: {why}"));
        }
        if skipped.len() > SHOWN {
            lines.push(format!("  … and {} more", skipped.len() - SHOWN));
        }
    }
    lines
}

/// Carries out a change to marked rows one call at a time, each with the
/// same reason; a refusal is recorded and the rest go on.
pub(super) async fn each<F, Fut>(ids: Vec<String>, one: F) -> Vec<(String, Result<String, String>)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, tonic::Status>>,
{
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let result = one(id.clone())
            .await
            .map_err(|e| crate::conn::status_words(&e));
        results.push((id, result));
    }
    results
}

/// The confirmation for a change on the current selection, or why there
/// is nothing to change.
pub fn prepare(app: &App, kind: Kind) -> Result<Confirm, String> {
    (kind.def().prepare)(app, kind)
}

/// A change key pressed: the dialog, or why not.
pub fn start(app: &mut App, kind: Kind) -> Vec<Cmd> {
    let action = Action::Change(kind);
    if app.readonly {
        app.say(
            StatusKind::Refused,
            "read-only: this console was started with --readonly, so nothing can be changed from it",
        );
        return Vec::new();
    }
    if let Some(why) = roles::refusal(&app.conn.roles, action) {
        app.say(StatusKind::Refused, why);
        return Vec::new();
    }
    if !app.live() {
        let text = format!(
            "not connected: changes are disabled until the engine is back ({})",
            link_words(app)
        );
        app.say(StatusKind::Refused, text);
        return Vec::new();
    }
    match prepare(app, kind) {
        Ok(confirm) => app.modal = Some(Modal::Confirm(Box::new(confirm))),
        Err(why) => app.say(StatusKind::Refused, why),
    }
    Vec::new()
}

/// OK pressed: the change to send, or `None` with why not in `c.error`.
fn press_ok(app: &mut App, c: &mut Confirm) -> Option<Vec<Cmd>> {
    if let Some(gone) = &c.gone {
        // The object changed meanwhile: a request now is bound to be
        // refused, so none goes; the dialog closes.
        app.say(StatusKind::Info, format!("nothing changed: {gone}"));
        return Some(Vec::new());
    }
    if !app.live() {
        c.error = Some(format!(
            "not connected ({}): try again once live",
            link_words(app)
        ));
        return None;
    }
    if let Some(why) = roles::refusal(&app.conn.roles, c.change.action()) {
        // The roles changed (a reconnect) while the dialog was open.
        c.error = Some(why);
        return None;
    }
    if let Some(missing) = c.missing() {
        c.error = Some(missing);
        return None;
    }
    let mut change = c.change.clone();
    if let Some(chosen) = c.fail {
        change.fail = chosen;
    }
    app.say(StatusKind::Pending, format!("{}...", change.doing()));
    Some(vec![Cmd::Change {
        change,
        reason: c.reason.text(),
    }])
}

/// An open dialog's words follow the clock and the data ("asked by ann 3m
/// ago", the votes so far), as long as they are about the same change;
/// once the change no longer applies (the run ended, the approval was
/// decided, the lease released — from the CLI or another console), the
/// dialog says so and OK sends nothing.
pub fn refresh_confirm(app: &mut App) {
    let Some(Modal::Confirm(c)) = &app.modal else {
        return;
    };
    let gone = still_applies(app.shown().0, &c.change).err();
    let fresh = prepare(app, c.change.kind)
        .ok()
        .filter(|fresh| fresh.change == c.change);
    if let Some(Modal::Confirm(c)) = &mut app.modal {
        if let Some(fresh) = fresh {
            c.lines = fresh.lines;
            // Leases come and go: a typed part must still name one only.
            c.others = fresh.others;
        }
        if gone.is_some() {
            c.error = None;
        }
        c.gone = gone;
    }
}

/// Whether a change of this kind may be offered on the selection now.
pub fn applies(app: &App, kind: Kind) -> bool {
    prepare(app, kind).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_entry_and_every_method_needs_a_role() {
        for def in CHANGES {
            assert_eq!(
                CHANGES.iter().filter(|d| d.kind == def.kind).count(),
                1,
                "{:?}",
                def.kind
            );
            assert!(
                opsdeck_proto::access::role_of(def.method).is_some(),
                "{} is not in the engine's table of methods",
                def.method
            );
        }
        for (at, def) in CHANGES.iter().enumerate() {
            assert_eq!(def.kind as usize, at, "{:?} is out of order", def.kind);
            assert_eq!(def.kind.def().kind, def.kind);
        }
    }
}
