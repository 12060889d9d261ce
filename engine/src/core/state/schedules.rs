//! Schedules: runs submitted on a cron expression. A fire is one change of
//! the batch it happens in: the run it submits, the schedule's new last and
//! next fire times and the `schedule.fired` (or `schedule.skipped`) event
//! are written in one commit, so a fire is recorded exactly once whatever
//! stops the engine. Only a leading engine runs the core, so only it fires.

use super::*;
use crate::domain::schedule::{MissedPolicy, OverlapPolicy, Schedule, When};

/// The label every run a schedule submits carries: the schedule's name.
pub const SCHEDULE_LABEL: &str = "opsdeck.schedule";

/// A fire time later than this is missed, even when it is the only one that
/// passed (the engine was down or not leading at the time).
const ON_TIME_MS: Millis = 60_000;

/// The most missed fire times counted one by one (a per-second schedule
/// down for a day would otherwise be counted for a long time).
const MAX_COUNTED: u32 = 10_000;

/// A schedule and its parsed cron expression.
pub(super) struct Live {
    pub schedule: Schedule,
    when: When,
}

/// What one fire did.
enum Fired {
    Run(String),
    Skipped(String),
}

impl State {
    /// Loads the stored schedules. A fire time that passed while no engine
    /// led is taken at once (its timer set for `now`, so it does not read
    /// as the engine stalling), the missed-fire policy deciding.
    pub(super) fn load_schedules(&mut self, schedules: Vec<Schedule>, now: Millis) {
        for s in schedules {
            let when = match When::parse(&s.cron, &s.timezone) {
                Ok(w) => w,
                Err(e) => {
                    // Checked when it was added: only a zone a newer zone
                    // database dropped gets here.
                    tracing::error!(schedule = %s.name, error = %e, "schedule not loaded");
                    continue;
                }
            };
            self.arm(
                &s.name,
                s.next_fire_at.filter(|_| !s.paused).map(|at| at.max(now)),
            );
            self.schedules
                .insert(s.name.clone(), Live { schedule: s, when });
        }
    }

    pub fn list_schedules(&self) -> Vec<pb::Schedule> {
        self.schedules
            .values()
            .map(|l| self.schedule_pb(l))
            .collect()
    }

    pub fn get_schedule(&self, name: &str) -> EngineResult<pb::Schedule> {
        Ok(self.schedule_pb(self.schedule_live(name)?))
    }

    fn schedule_live(&self, name: &str) -> EngineResult<&Live> {
        self.schedules
            .get(name)
            .ok_or_else(|| unknown_schedule(name))
    }

    fn schedule_pb(&self, l: &Live) -> pb::Schedule {
        let last = l
            .schedule
            .last_run_id
            .as_deref()
            .and_then(|id| self.runs.get(id))
            .map(|r| r.state);
        convert::schedule(&l.schedule, last)
    }

    /// Adds a schedule; its first fire is the cron's first time after now.
    pub fn add_schedule(
        &mut self,
        tx: &mut Tx,
        mut schedule: Schedule,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Schedule> {
        let name = schedule.name.clone();
        if self.schedules.contains_key(&name) {
            return Err(EngineError::AlreadyExists(format!(
                "a schedule named {name:?} exists; remove it first with `opsdeck schedule remove {name}` or pick another name"
            )));
        }
        let when = When::parse(&schedule.cron, &schedule.timezone)
            .map_err(EngineError::InvalidArgument)?;
        schedule.next_fire_at = when.next_after(tx.now);
        if schedule.next_fire_at.is_none() {
            return Err(EngineError::InvalidArgument(format!(
                "cron expression {:?} has no time after now; it would never fire",
                schedule.cron
            )));
        }
        schedule.created_at = tx.now;
        schedule.updated_at = tx.now;
        schedule.created_by = actor.name.clone();
        schedule.updated_by = actor.name.clone();
        let msg = format!(
            "schedule {name} added: {} runs on {:?} ({}), next at {}",
            schedule.run_name,
            schedule.cron,
            when.zone(),
            schedule.next_fire_at.map(time_word).unwrap_or_default()
        );
        let first = schedule.next_fire_at;
        self.schedules.insert(name.clone(), Live { schedule, when });
        self.arm(&name, first);
        self.schedule_changed(tx, &name);
        self.schedule_event(tx, actor, reason, "schedule.added", &name, msg);
        self.get_schedule(&name)
    }

    /// Pauses (no fire until resumed) or resumes a schedule. Resumed, it
    /// fires next at the cron's first time after now: times that passed
    /// while paused are not made up.
    pub fn set_schedule_paused(
        &mut self,
        tx: &mut Tx,
        name: &str,
        paused: bool,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Schedule> {
        let now = tx.now;
        let l = self
            .schedules
            .get_mut(name)
            .ok_or_else(|| unknown_schedule(name))?;
        if l.schedule.paused == paused {
            return Err(EngineError::FailedPrecondition(format!(
                "schedule {name} is already {}",
                if paused {
                    "paused"
                } else {
                    "running (not paused)"
                }
            )));
        }
        l.schedule.paused = paused;
        l.schedule.next_fire_at = if paused { None } else { l.when.next_after(now) };
        l.schedule.updated_at = now;
        l.schedule.updated_by = actor.name.clone();
        let (kind, msg) = if paused {
            (
                "schedule.paused",
                format!(
                    "schedule {name} paused by {}: it fires no run until resumed",
                    actor.name
                ),
            )
        } else {
            (
                "schedule.resumed",
                format!(
                    "schedule {name} resumed by {}: next at {}",
                    actor.name,
                    l.schedule.next_fire_at.map(time_word).unwrap_or_default()
                ),
            )
        };
        let next = l.schedule.next_fire_at;
        self.arm(name, next);
        self.schedule_changed(tx, name);
        self.schedule_event(tx, actor, reason, kind, name, msg);
        self.get_schedule(name)
    }

    /// Removes a schedule; runs it submitted go on.
    pub fn remove_schedule(
        &mut self,
        tx: &mut Tx,
        name: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<pb::Schedule> {
        let removed = self.get_schedule(name)?;
        let msg = format!(
            "schedule {name} removed by {}; runs it submitted go on",
            actor.name
        );
        self.schedule_event(tx, actor, reason, "schedule.removed", name, msg);
        self.schedules.remove(name);
        tx.schedules.insert(name.to_owned());
        Ok(removed)
    }

    /// Submits one run of a schedule now, as a fire would (the overlap
    /// policy applies), leaving its next fire where it is: the run's id,
    /// or why none was submitted.
    pub fn run_schedule_now(
        &mut self,
        tx: &mut Tx,
        name: &str,
        actor: &Actor,
        reason: &str,
    ) -> EngineResult<(pb::Schedule, Result<String, String>)> {
        self.schedule_live(name)?;
        let why = format!("run now by {}", actor.name);
        let outcome = match self.fire(tx, name, actor, reason, &why) {
            Fired::Run(id) => Ok(id),
            Fired::Skipped(why) => Err(why),
        };
        self.schedule_changed(tx, name);
        Ok((self.get_schedule(name)?, outcome))
    }

    /// A schedule's timer: fires it if its time has come, once, whatever
    /// number of its times passed (the missed-fire policy decides).
    pub(super) fn schedule_due(&mut self, tx: &mut Tx, name: &str) {
        let now = tx.now;
        let Some(l) = self.schedules.get(name) else {
            return;
        };
        let Some(due) = l.schedule.next_fire_at.filter(|_| !l.schedule.paused) else {
            return;
        };
        if due > now {
            // Moved since this timer was set (paused and resumed).
            self.timers
                .push(Reverse((due, Timer::ScheduleDue(name.to_owned()))));
            return;
        }
        // Every fire time that has passed, the last of them and the next one.
        let mut passed = 1u32;
        let mut last = due;
        let mut next = l.when.next_after(due);
        while let Some(at) = next.filter(|at| *at <= now) {
            passed += 1;
            last = at;
            if passed >= MAX_COUNTED {
                next = l.when.next_after(now);
                break;
            }
            next = l.when.next_after(at);
        }
        let policy = l.schedule.missed;
        let engine = Actor::engine();
        let on_time = passed == 1 && now - due <= ON_TIME_MS;
        let missed = if passed >= MAX_COUNTED {
            format!("{MAX_COUNTED} or more")
        } else {
            passed.to_string()
        };
        let span = if passed == 1 {
            format!("its fire time {}", time_word(due))
        } else {
            format!(
                "{missed} fire times from {} to {}",
                time_word(due),
                time_word(last)
            )
        };
        // Recorded first, so that the fire's event carries the fire time.
        if let Some(l) = self.schedules.get_mut(name) {
            l.schedule.last_fire_at = Some(last);
            l.schedule.next_fire_at = next;
        }
        self.arm(name, next);
        if on_time {
            let why = format!("fire time {}", time_word(due));
            self.fire(tx, name, &engine, "", &why);
        } else if policy == MissedPolicy::RunOnce {
            let why = format!(
                "missed {span} while no engine led; missed-fire policy run-once: one run for them"
            );
            self.fire(tx, name, &engine, "", &why);
        } else {
            let msg = format!(
                "schedule {name} skipped {span}, missed while no engine led (missed-fire policy skip)"
            );
            self.schedule_event(tx, &engine, "", "schedule.skipped", name, msg);
        }
        self.schedule_changed(tx, name);
    }

    /// Submits the schedule's run, minding its overlap policy, and records
    /// the `schedule.fired` or `schedule.skipped` event. `why` says what
    /// fired it.
    fn fire(&mut self, tx: &mut Tx, name: &str, actor: &Actor, reason: &str, why: &str) -> Fired {
        let outcome = self.try_fire(tx, name, actor, reason);
        match &outcome {
            Fired::Run(id) => {
                if let Some(l) = self.schedules.get_mut(name) {
                    l.schedule.last_run_id = Some(id.clone());
                }
                let msg = format!("schedule {name} fired ({why}): run {id}");
                self.schedule_event_on(tx, actor, reason, "schedule.fired", name, Some(id), msg);
            }
            Fired::Skipped(skip) => {
                let msg = format!("schedule {name} skipped ({why}): {skip}");
                self.schedule_event(tx, actor, reason, "schedule.skipped", name, msg);
            }
        }
        outcome
    }

    fn try_fire(&mut self, tx: &mut Tx, name: &str, actor: &Actor, reason: &str) -> Fired {
        let Some(l) = self.schedules.get(name) else {
            return Fired::Skipped("the schedule is gone".into());
        };
        let s = &l.schedule;
        let previous = s
            .last_run_id
            .clone()
            .filter(|id| self.runs.get(id).is_some_and(|r| !r.state.is_final()));
        let (overlap, template, params) = (s.overlap, s.spec.clone(), s.params.clone());
        let mut spec = match crate::domain::spec::parse_with(&template, &self.cfg.limits, &params) {
            Ok(spec) => spec,
            Err(e) => return Fired::Skipped(format!("its spec is refused: {e}")),
        };
        if let Err(e) = crate::domain::policy::apply(&self.cfg.policies, &mut spec) {
            return Fired::Skipped(format!("its spec is refused: {e}"));
        }
        spec.labels
            .insert(SCHEDULE_LABEL.to_owned(), name.to_owned());
        if let Some(prev) = previous {
            match overlap {
                OverlapPolicy::Skip => {
                    return Fired::Skipped(format!(
                        "its previous run {prev} is still going (overlap policy skip)"
                    ));
                }
                OverlapPolicy::Allow => {}
                OverlapPolicy::CancelPrevious => {
                    let why =
                        format!("schedule {name} fired again (overlap policy cancel-previous)");
                    let reason = if reason.is_empty() {
                        why.as_str()
                    } else {
                        reason
                    };
                    if let Err(e) = self.cancel_run(tx, &prev, actor, reason) {
                        tracing::warn!(run = %prev, error = %e, "cancelling a schedule's previous run");
                    }
                }
            }
        }
        // A fire by the engine is submitted as the schedule; run-now, as the
        // person who asked (so that four eyes still holds for its gates).
        let submitter = if actor.transport == "engine" {
            Actor {
                name: format!("schedule:{name}"),
                transport: "engine",
            }
        } else {
            actor.clone()
        };
        match self.submit(tx, spec, None, &submitter, reason) {
            Ok((id, _)) => Fired::Run(id),
            Err(e) => Fired::Skipped(format!("its run was refused: {e}")),
        }
    }

    /// Sets the schedule's timer for `at` (none for `None`).
    fn arm(&mut self, name: &str, at: Option<Millis>) {
        if let Some(at) = at {
            self.timers
                .push(Reverse((at, Timer::ScheduleDue(name.to_owned()))));
        }
    }

    fn schedule_changed(&mut self, tx: &mut Tx, name: &str) {
        tx.schedules.insert(name.to_owned());
    }

    fn schedule_event(
        &mut self,
        tx: &mut Tx,
        actor: &Actor,
        reason: &str,
        kind: &'static str,
        name: &str,
        msg: String,
    ) {
        self.schedule_event_on(tx, actor, reason, kind, name, None, msg);
    }

    /// Records a schedule event, carrying the schedule as it stands and,
    /// for a fire, the run it submitted.
    #[allow(clippy::too_many_arguments)]
    fn schedule_event_on(
        &mut self,
        tx: &mut Tx,
        actor: &Actor,
        reason: &str,
        kind: &'static str,
        name: &str,
        run: Option<&str>,
        msg: String,
    ) {
        let mut ev = Ev::new(kind, msg);
        if let Some(l) = self.schedules.get(name) {
            ev = ev.schedule(self.schedule_pb(l));
        }
        if let Some(run) = run {
            ev = ev.run(run);
        }
        self.emit(tx, actor, reason, ev);
    }
}

fn unknown_schedule(name: &str) -> EngineError {
    EngineError::NotFound(format!(
        "no schedule named {name:?}; `opsdeck schedule list` lists them"
    ))
}
