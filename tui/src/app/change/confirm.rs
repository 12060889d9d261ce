//! The confirmation dialog of a change: what will happen, line by line,
//! a reason (always), the id typed again for a force-release, and OK or
//! Cancel — with Cancel focused, so that a stray Enter changes nothing.

use crossterm::event::{KeyCode, KeyEvent};

use super::{Change, Kind, press_ok};
use crate::app::{App, Cmd, Modal, StatusKind, TextField};

/// Where focus is in the confirmation dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The lease id, typed to confirm a force-release.
    Id,
    Reason,
    /// Force-release: fail the step instead of requeueing it.
    Fail,
    Ok,
    Cancel,
}

/// The confirmation of a change: what it is, in words, and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub change: Change,
    pub title: String,
    /// What will happen, line by line.
    pub lines: Vec<String>,
    /// The id that must be typed to confirm, for a force-release: whole,
    /// or at least [`ID_PART_MIN`] of its first or last characters that
    /// no id in `others` shares.
    pub type_to_confirm: Option<String>,
    /// The other ids of its kind the console knows of, which a typed part
    /// must not also match.
    pub others: Vec<String>,
    /// Why the change no longer applies (the object changed meanwhile,
    /// e.g. the run was cancelled from the CLI): OK then sends nothing.
    pub gone: Option<String>,
    pub typed: TextField,
    pub reason: TextField,
    /// Force-release only: fail the step instead of requeueing it.
    pub fail: Option<bool>,
    pub focus: Focus,
    /// Why OK did nothing.
    pub error: Option<String>,
}

impl Confirm {
    pub(super) fn new(change: Change, title: String, lines: Vec<String>) -> Self {
        let (type_to_confirm, fail) = match change.kind {
            Kind::ForceRelease => (Some(change.id.clone()), Some(change.fail)),
            _ => (None, None),
        };
        Self {
            change,
            title,
            lines,
            type_to_confirm,
            others: Vec::new(),
            gone: None,
            typed: TextField::default(),
            reason: TextField::default(),
            fail,
            // Focus starts on Cancel: a stray Enter changes nothing.
            focus: Focus::Cancel,
            error: None,
        }
    }

    /// The focus ring, in Tab order.
    pub fn ring(&self) -> Vec<Focus> {
        let mut ring = Vec::with_capacity(5);
        if self.type_to_confirm.is_some() {
            ring.push(Focus::Id);
        }
        ring.push(Focus::Reason);
        if self.fail.is_some() {
            ring.push(Focus::Fail);
        }
        ring.extend([Focus::Ok, Focus::Cancel]);
        ring
    }

    fn step_focus(&mut self, forward: bool) {
        let ring = self.ring();
        let at = ring.iter().position(|f| *f == self.focus).unwrap_or(0);
        let next = if forward {
            (at + 1) % ring.len()
        } else {
            (at + ring.len() - 1) % ring.len()
        };
        self.focus = ring[next];
    }

    /// Whether what was typed names the id to confirm.
    pub fn id_typed(&self) -> bool {
        self.type_to_confirm
            .as_ref()
            .is_none_or(|id| id_matches(id, &self.typed.text(), &self.others))
    }

    /// What is missing before OK can go ahead.
    pub fn missing(&self) -> Option<String> {
        if let Some(id) = &self.type_to_confirm
            && !self.id_typed()
        {
            return Some(format!(
                "type the lease id {id} (or at least its last or first {ID_PART_MIN} characters) to confirm"
            ));
        }
        if self.reason.text().is_empty() {
            return Some(
                "a reason is needed: it is recorded with your name in the audit trail".to_owned(),
            );
        }
        None
    }
}

/// The fewest characters of an id that may stand for it when typed to
/// confirm: the tail the lists show is 8.
pub const ID_PART_MIN: usize = 6;

/// Whether `typed` names `id`: the whole id, or at least [`ID_PART_MIN`]
/// of its first or last characters (any case) that no id of `others`
/// starts or ends with alike.
pub fn id_matches(id: &str, typed: &str, others: &[String]) -> bool {
    let typed = typed.trim().to_ascii_uppercase();
    let id = id.to_ascii_uppercase();
    if typed == id {
        return true;
    }
    if typed.chars().count() < ID_PART_MIN {
        return false;
    }
    let names = |other: &str| other.starts_with(&typed) || other.ends_with(&typed);
    names(&id)
        && !others
            .iter()
            .map(|o| o.to_ascii_uppercase())
            .any(|o| o != id && names(&o))
}

/// A key pressed while the dialog is open.
pub fn on_key(app: &mut App, mut c: Confirm, key: KeyEvent) -> Vec<Cmd> {
    let ctrl = key
        .modifiers
        .contains(crossterm::event::KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Esc => {
            app.say(StatusKind::Info, "nothing changed");
            return Vec::new();
        }
        KeyCode::Tab
            if !key
                .modifiers
                .contains(crossterm::event::KeyModifiers::SHIFT) =>
        {
            c.step_focus(true)
        }
        KeyCode::Tab | KeyCode::BackTab => c.step_focus(false),
        KeyCode::Enter => match c.focus {
            Focus::Cancel => {
                app.say(StatusKind::Info, "nothing changed");
                return Vec::new();
            }
            // Enter in the reason is the end of typing it: OK, unless
            // there is no reason yet.
            Focus::Ok | Focus::Reason => {
                if let Some(cmds) = press_ok(app, &mut c) {
                    return cmds;
                }
            }
            Focus::Fail => {
                c.fail = c.fail.map(|f| !f);
            }
            Focus::Id => c.step_focus(true),
        },
        KeyCode::Left | KeyCode::Right if matches!(c.focus, Focus::Ok | Focus::Cancel) => {
            c.focus = if c.focus == Focus::Ok {
                Focus::Cancel
            } else {
                Focus::Ok
            };
        }
        KeyCode::Char(' ') if c.focus == Focus::Fail => c.fail = c.fail.map(|f| !f),
        _ => match c.focus {
            Focus::Id => c.typed.input(key),
            Focus::Reason => c.reason.input(key),
            Focus::Ok | Focus::Cancel | Focus::Fail => {
                // Typing on a button types into the first field that
                // still needs it, rather than being lost.
                if let KeyCode::Char(ch) = key.code
                    && !ctrl
                {
                    let id_missing = !c.id_typed();
                    if id_missing {
                        c.focus = Focus::Id;
                        c.typed.insert(&ch.to_string());
                    } else {
                        c.focus = Focus::Reason;
                        c.reason.insert(&ch.to_string());
                    }
                }
            }
        },
    }
    // An error goes once what it asked for is done (not on the Enter that
    // raised it).
    if key.code != KeyCode::Enter && c.missing().is_none() {
        c.error = None;
    }
    app.modal = Some(Modal::Confirm(Box::new(c)));
    Vec::new()
}
