//! Who may do what, from the console: the one table of which role each
//! change needs. The engine decides (it refuses with PERMISSION_DENIED);
//! the console reads the caller's roles from `Whoami` and offers only the
//! keys they allow, so that nobody fills in a reason for a change that is
//! bound to be refused.
//!
//! - viewer: looks only.
//! - operator: cancels and retries runs, drains and undrains workers,
//!   pauses and resumes queues.
//! - approver: approves and rejects.
//! - admin: everything, and alone force-releases leases, recycles
//!   workers and clears quarantines.
//! - agent: the worker protocol; nothing here.
//!
//! An engine that reports no roles (an empty list) is one that does not
//! check them: everything is offered, as before roles existed.

use opsdeck_proto::access::{self, Role};

use crate::keys::Action;

/// The role a change needs (admin may do every change too): the one its
/// engine method needs, from the engine's own table
/// ([`opsdeck_proto::access`]); `None` for what changes nothing, which
/// every role may do.
pub fn needed(action: Action) -> Option<Role> {
    match action {
        Action::Change(kind) => access::role_of(kind.def().method),
        _ => None,
    }
}

/// Whether the caller's roles allow the action. No roles at all: an
/// engine that does not report them, so everything is allowed.
pub fn allows(roles: &[String], action: Action) -> bool {
    let Some(role) = needed(action) else {
        return true;
    };
    roles.is_empty()
        || roles
            .iter()
            .any(|r| r == role.word() || r == Role::Admin.word())
}

/// The roles as the header shows them: without those another one
/// implies (viewer under any other, operator and approver under admin)
/// and without agent, which is no business of a console's. An engine
/// may list them expanded ("viewer, operator, approver, admin, agent"
/// for its own user); the header says "admin".
pub fn shown(roles: &[String]) -> Vec<&str> {
    let has = |role: Role| roles.iter().any(|r| r == role.word());
    let admin = has(Role::Admin);
    let mut out: Vec<&str> = roles
        .iter()
        .map(String::as_str)
        .filter(|r| match *r {
            "agent" => false,
            "viewer" => !(admin || has(Role::Operator) || has(Role::Approver)),
            "operator" | "approver" => !admin,
            _ => true,
        })
        .collect();
    out.dedup();
    if out.is_empty() && !roles.is_empty() {
        // Only agent: say so rather than nothing.
        out = roles.iter().map(String::as_str).collect();
    }
    out
}

/// What the change is, as "… needs the X role" says it.
fn doing(action: Action) -> &'static str {
    match action {
        Action::Change(kind) => kind.def().what,
        _ => "this",
    }
}

/// Why a key did nothing, for the status line; `None` when allowed.
pub fn refusal(roles: &[String], action: Action) -> Option<String> {
    if allows(roles, action) {
        return None;
    }
    let role = needed(action)?;
    let also = if role == Role::Admin {
        String::new()
    } else {
        " (or admin)".to_owned()
    };
    Some(format!(
        "not allowed: {} needs the {} role{also}; you are {}",
        doing(action),
        role.word(),
        shown(roles).join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Kind;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    const CHANGES: [Action; 10] = [
        Action::Change(Kind::Approve),
        Action::Change(Kind::Reject),
        Action::Change(Kind::Cancel),
        Action::Change(Kind::Retry),
        Action::Change(Kind::Drain),
        Action::Change(Kind::Undrain),
        Action::Change(Kind::Recycle),
        Action::Change(Kind::ForceRelease),
        Action::Change(Kind::Pause),
        Action::Change(Kind::ClearQuarantine),
    ];

    fn allowed(names: &[&str]) -> Vec<Action> {
        let roles = roles(names);
        CHANGES.into_iter().filter(|a| allows(&roles, *a)).collect()
    }

    #[test]
    fn every_change_needs_a_role_and_nothing_else_does() {
        for action in CHANGES {
            assert!(action.changes());
            assert!(needed(action).is_some(), "{action:?}");
        }
        for b in crate::keys::KEYMAP {
            assert_eq!(b.action.changes(), needed(b.action).is_some(), "{b:?}");
        }
    }

    #[test]
    fn a_viewer_or_an_agent_changes_nothing_but_may_look() {
        assert!(allowed(&["viewer"]).is_empty());
        assert!(allowed(&["agent"]).is_empty());
        assert!(allows(&roles(&["viewer"]), Action::Help));
        assert!(allows(&roles(&["viewer"]), Action::Enter));
    }

    #[test]
    fn an_operator_runs_things_and_an_approver_decides() {
        assert_eq!(
            allowed(&["operator"]),
            [
                Action::Change(Kind::Cancel),
                Action::Change(Kind::Retry),
                Action::Change(Kind::Drain),
                Action::Change(Kind::Undrain),
                Action::Change(Kind::Pause)
            ]
        );
        assert_eq!(
            allowed(&["approver"]),
            [Action::Change(Kind::Approve), Action::Change(Kind::Reject)]
        );
        assert_eq!(allowed(&["operator", "approver"]).len(), 7);
    }

    #[test]
    fn an_admin_does_everything_and_alone_the_dangerous_ones() {
        assert_eq!(allowed(&["admin"]), CHANGES);
        for dangerous in [
            Action::Change(Kind::ForceRelease),
            Action::Change(Kind::Recycle),
            Action::Change(Kind::ClearQuarantine),
        ] {
            assert!(!allows(&roles(&["operator", "approver"]), dangerous));
        }
    }

    #[test]
    fn an_engine_that_reports_no_roles_allows_everything() {
        assert_eq!(allowed(&[]), CHANGES);
        assert_eq!(refusal(&[], Action::Change(Kind::ForceRelease)), None);
    }

    #[test]
    fn unknown_role_names_allow_nothing() {
        assert!(allowed(&["root", "Admin"]).is_empty());
    }

    #[test]
    fn the_header_shows_roles_without_those_another_implies() {
        let all = roles(&["viewer", "operator", "approver", "admin", "agent"]);
        assert_eq!(shown(&all), ["admin"]);
        assert_eq!(
            shown(&roles(&["viewer", "operator", "approver"])),
            ["operator", "approver"]
        );
        assert_eq!(shown(&roles(&["viewer"])), ["viewer"]);
        assert_eq!(shown(&roles(&["agent"])), ["agent"]);
        assert!(shown(&[]).is_empty());
    }

    #[test]
    fn a_refusal_names_the_role_needed_and_the_roles_held() {
        assert_eq!(
            refusal(&roles(&["viewer"]), Action::Change(Kind::Approve)).as_deref(),
            Some("not allowed: approving needs the approver role (or admin); you are viewer")
        );
        assert_eq!(
            refusal(
                &roles(&["operator", "approver"]),
                Action::Change(Kind::ClearQuarantine)
            )
            .as_deref(),
            Some(
                "not allowed: clearing a quarantine needs the admin role; you are operator, approver"
            )
        );
        assert_eq!(
            refusal(&roles(&["admin"]), Action::Change(Kind::Recycle)),
            None
        );
    }
}
