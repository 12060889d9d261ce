//! The detail overlay (`d`): every field of one run, worker, lease,
//! approval or event, in words, with times both absolute (UTC, RFC 3339,
//! so that they can be put beside logs and tickets) and relative. Lists
//! cut long messages at the edge of the terminal; here nothing is cut:
//! the overlay wraps and scrolls.

use std::time::{Duration, UNIX_EPOCH};

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{
    Approval, ApprovalState, Event, Lease, LeaseState, Run, RunState, Step, StepKind, StepState,
    Worker,
};

use super::{App, Screen};
use crate::model::{self, Data, Holder};
use crate::text::step_number;
use crate::text::time::relative;

/// What the overlay shows, by id: the fields are read afresh at every
/// frame, so that they follow the engine while the overlay is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetailOf {
    Run(String),
    Worker(String),
    Lease(String),
    Approval(String),
    Event(u64),
}

/// One line of the overlay: a field's name (empty for a heading or a
/// continuation) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
    /// A heading between groups of fields (a run's steps).
    pub heading: bool,
}

/// A time as "2023-11-14T22:13:20Z (3m ago)"; "-" when unset.
pub fn when(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "-".to_owned();
    }
    format!("{} ({})", absolute(at_ms), relative(at_ms, now_ms))
}

/// A time in UTC, RFC 3339, to the second: "2023-11-14T22:13:20Z".
pub fn absolute(at_ms: i64) -> String {
    let ms = u64::try_from(at_ms).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

struct Fields {
    out: Vec<Field>,
    now: i64,
}

impl Fields {
    fn new(now: i64) -> Self {
        Self {
            out: Vec::new(),
            now,
        }
    }

    /// A field; an empty value is left out (an unset field says nothing).
    fn text(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.out.push(Field {
                name: name.to_owned(),
                value,
                heading: false,
            });
        }
    }

    fn time(&mut self, name: &str, at_ms: i64) {
        if at_ms > 0 {
            let value = when(at_ms, self.now);
            self.text(name, value);
        }
    }

    fn heading(&mut self, text: String) {
        self.out.push(Field {
            name: String::new(),
            value: text,
            heading: true,
        });
    }
}

/// The overlay's title and fields; `Err` says why there is nothing to
/// show (the item is gone from what the console holds).
pub fn fields(data: &Data, of: &DetailOf, now_ms: i64) -> Result<(String, Vec<Field>), String> {
    match of {
        DetailOf::Run(id) => data
            .runs
            .get(id)
            .map(|r| (format!("run {}", r.name), run(r, now_ms)))
            .ok_or_else(|| format!("run {id} is no longer held here")),
        DetailOf::Worker(id) => data
            .workers
            .get(id)
            .map(|w| (format!("worker {id}"), worker(data, w, now_ms)))
            .ok_or_else(|| format!("worker {id} is no longer known")),
        DetailOf::Lease(id) => data
            .leases
            .get(id)
            .map(|l| (format!("lease of {}", l.run_name), lease(data, l, now_ms)))
            .ok_or_else(|| format!("lease {id} is no longer live (released or expired)")),
        DetailOf::Approval(id) => data
            .approvals
            .get(id)
            .map(|a| (format!("approval of {}", a.run_name), approval(a, now_ms)))
            .ok_or_else(|| format!("approval {id} is no longer held here")),
        DetailOf::Event(seq) => data
            .event(*seq)
            .map(|e| (format!("event {seq}"), event(e, now_ms)))
            .ok_or_else(|| format!("event {seq} has left the console's tail")),
    }
}

fn run(r: &Run, now: i64) -> Vec<Field> {
    let mut f = Fields::new(now);
    f.text("id", r.id.clone());
    f.text("name", r.name.clone());
    f.text("state", word_of::<RunState>(r.state));
    f.text("message", r.message.clone());
    f.text("submitted by", r.submitted_by.clone());
    f.time("created", r.created_at_ms);
    f.time("updated", r.updated_at_ms);
    f.time("finished", r.finished_at_ms);
    let mut labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    f.text("labels", labels.join(" "));
    f.text("idempotency", r.idempotency_key.clone());
    if let Some(s) = r.steps.get(r.current_step as usize) {
        f.text(
            "current",
            format!(
                "step {} of {} ({})",
                step_number(s.index),
                r.steps.len(),
                s.name
            ),
        );
    }
    for s in &r.steps {
        step(&mut f, s);
    }
    f.out
}

fn step(f: &mut Fields, s: &Step) {
    let kind = if s.kind() == StepKind::Approval {
        "approval"
    } else {
        "exec"
    };
    f.heading(format!(
        "step {} {} ({kind}): {}",
        step_number(s.index),
        s.name,
        word_of::<StepState>(s.state)
    ));
    if s.kind() == StepKind::Exec {
        f.text("queue", s.queue.clone());
        if s.shell.is_empty() {
            f.text("argv", s.argv.join(" "));
        } else {
            f.text("shell", s.shell.clone());
        }
        let env: Vec<String> = s
            .env
            .iter()
            .map(|e| {
                if e.secret {
                    format!("{}=(secret {})", e.name, e.secret_name)
                } else {
                    format!("{}={}", e.name, e.value)
                }
            })
            .collect();
        f.text("env", env.join(" "));
        f.text("workdir", s.workdir.clone());
        let mut selector: Vec<String> = s.worker.iter().map(|(k, v)| format!("{k}={v}")).collect();
        selector.sort();
        f.text("needs labels", selector.join(" "));
        if s.attempt > 0 {
            f.text("attempt", crate::text::attempt_text(s));
        } else {
            f.text("attempts", format!("at most {}", s.max_attempts));
        }
        if s.timeout_ms > 0 {
            f.text("timeout", crate::text::time::duration(s.timeout_ms));
        }
        f.text("worker", s.worker_id.clone());
        f.text("lease", s.lease_id.clone());
        if s.has_exit_code {
            f.text("exit code", s.exit_code.to_string());
        }
    } else {
        f.text("approval", s.approval_id.clone());
    }
    f.text("waiting for", s.waiting_for.clone());
    f.text("message", s.message.clone());
    f.time("started", s.started_at_ms);
    f.time("finished", s.finished_at_ms);
    if s.state() == StepState::RetryWait {
        f.time("next attempt", s.next_attempt_at_ms);
    }
}

fn worker(data: &Data, w: &Worker, now: i64) -> Vec<Field> {
    let mut f = Fields::new(now);
    let status = model::worker_status(data, w, now);
    let mut state = status.word.clone();
    if let Some(note) = status.note {
        state.push_str(&format!(" ({note})"));
    }
    if status.stuck {
        state.push_str(", a lease of it is STUCK");
    }
    f.text("id", w.id.clone());
    f.text("state", state);
    f.text("connected", if w.connected { "yes" } else { "no" });
    f.text("recycle", if w.recycle_requested { "asked" } else { "" });
    f.text("host", w.host.clone());
    if w.pid > 0 {
        f.text("pid", w.pid.to_string());
    }
    f.text("identity", w.identity.clone());
    f.text("version", w.version.clone());
    f.text("generation", w.generation.to_string());
    f.text(
        "slots",
        format!("{} of {} busy", w.lease_ids.len(), w.slots),
    );
    f.text("queues", w.queues.join(", "));
    let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    f.text("labels", labels.join(" "));
    f.time("registered", w.registered_at_ms);
    f.time("heartbeat", w.last_heartbeat_at_ms);
    for id in &w.lease_ids {
        let what = data.leases.get(id).map_or(String::new(), |l| {
            format!(" ({} step {})", l.run_name, step_number(l.step_index))
        });
        f.text("lease", format!("{id}{what}"));
    }
    f.out
}

fn lease(data: &Data, l: &Lease, now: i64) -> Vec<Field> {
    let mut f = Fields::new(now);
    f.text("id", l.id.clone());
    let mut state = word_of::<LeaseState>(l.state);
    if model::lease_stuck(l) {
        state.push_str(", STUCK: its worker could not stop the step");
    } else if model::lease_stale(data, l) {
        state.push_str(", stale: its holder is gone, it waits to expire");
    } else if model::lease_overdue(data, l, now) {
        state.push_str(", overdue");
    }
    f.text("state", state);
    f.text("run", format!("{} ({})", l.run_name, l.run_id));
    f.text(
        "step",
        format!("{} {}", step_number(l.step_index), l.step_name),
    );
    f.text("queue", l.queue.clone());
    let holder = match model::holder(data, l) {
        Holder::Ok => "connected",
        Holder::Gone => "gone",
        Holder::Unknown => "not known here",
    };
    f.text("worker", format!("{} ({holder})", l.worker_id));
    f.text("attempt", l.attempt.to_string());
    f.text("fencing", l.fencing_token.to_string());
    f.time("granted", l.granted_at_ms);
    f.time("expires", l.expires_at_ms);
    f.time("ended", l.ended_at_ms);
    f.out
}

fn approval(a: &Approval, now: i64) -> Vec<Field> {
    let mut f = Fields::new(now);
    f.text("id", a.id.clone());
    let mut state = word_of::<ApprovalState>(a.state);
    if model::overdue(a, now) {
        state.push_str(", OVERDUE");
    }
    f.text("state", state);
    f.text("run", format!("{} ({})", a.run_name, a.run_id));
    f.text(
        "step",
        format!("{} {}", step_number(a.step_index), a.step_name),
    );
    f.text("asked by", a.submitted_by.clone());
    let votes = a.decisions.iter().filter(|d| d.approve).count();
    f.text(
        "approvals",
        format!("{votes} of {} needed", a.required.max(1)),
    );
    f.text("role", a.role.clone());
    f.text(
        "own run",
        if a.allow_self_approval {
            "the submitter may approve"
        } else {
            "the submitter may not approve"
        },
    );
    f.time("requested", a.requested_at_ms);
    f.time("deadline", a.deadline_at_ms);
    f.text("on timeout", a.on_timeout.clone());
    f.time("decided", a.decided_at_ms);
    for d in &a.decisions {
        let verb = if d.approve { "approved" } else { "rejected" };
        let mut text = format!("{verb} by {} at {}", d.actor, when(d.at_ms, now));
        if !d.comment.is_empty() {
            text.push_str(&format!(": {}", d.comment));
        }
        f.text("decision", text);
    }
    f.out
}

fn event(e: &Event, now: i64) -> Vec<Field> {
    let mut f = Fields::new(now);
    f.text("seq", e.seq.to_string());
    f.time("at", e.at_ms);
    f.text("kind", e.kind.clone());
    f.text("message", e.message.clone());
    f.text("reason", e.reason.clone());
    f.text("actor", e.actor.clone());
    f.text("identity", e.identity.clone());
    f.text("transport", e.transport.clone());
    f.text("run", e.run_id.clone());
    if !e.run_id.is_empty() && e.kind.starts_with("step.") {
        f.text("step", step_number(e.step_index).to_string());
    }
    f.text("worker", e.worker_id.clone());
    f.text("lease", e.lease_id.clone());
    f.text("approval", e.approval_id.clone());
    f.text("queue", e.queue.clone());
    f.out
}

/// What `d` shows here: the selected item, or the open run.
pub(super) fn detail_of(app: &App) -> Option<DetailOf> {
    if app.screen == Screen::Run {
        let id = &app.shown().1.run_id;
        return (!id.is_empty()).then(|| DetailOf::Run(id.clone()));
    }
    let key = app.selected_key()?.to_owned();
    Some(match app.screen {
        Screen::Runs => DetailOf::Run(key),
        Screen::Workers => DetailOf::Worker(key),
        Screen::Leases => DetailOf::Lease(key),
        Screen::Approvals => DetailOf::Approval(key),
        Screen::Events => DetailOf::Event(key.parse().ok()?),
        _ => return None,
    })
}

/// The full id of a run, worker, lease or approval the overlay is about,
/// for `y` there.
pub fn id_of(of: &DetailOf) -> String {
    match of {
        DetailOf::Run(id) | DetailOf::Worker(id) | DetailOf::Lease(id) | DetailOf::Approval(id) => {
            id.clone()
        }
        DetailOf::Event(seq) => seq.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_in_utc_and_relative() {
        assert_eq!(absolute(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            when(1_700_000_000_000 - 180_000, 1_700_000_000_000),
            "2023-11-14T22:10:20Z (3m ago)"
        );
        assert_eq!(when(0, 1_700_000_000_000), "-");
    }
}
