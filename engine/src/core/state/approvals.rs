//! Approval gates: decisions and deadlines.

use super::*;

impl State {
    pub fn decide(
        &mut self,
        tx: &mut Tx,
        id: &str,
        approve: bool,
        actor: &Actor,
        grants: &Grants,
        comment: &str,
    ) -> EngineResult<pb::Approval> {
        let a = self
            .approvals
            .get_mut(id)
            .ok_or_else(|| not_found("approval", id, "opsdeck approvals"))?;
        if a.state != ApprovalState::Pending {
            let by = a
                .decisions
                .last()
                .map(|d| format!(" by {}", d.actor))
                .unwrap_or_default();
            return Err(EngineError::FailedPrecondition(format!(
                "approval {id} is already {}{by}; a decided approval cannot be decided again",
                approval_word(a.state)
            )));
        }
        if let Some(role) = a.spec.role
            && !grants.has(role)
        {
            return Err(EngineError::PermissionDenied(format!(
                "approval {id} may be decided only by the {role} role (the step's approval.role); \
                 {} has {}",
                actor.name,
                grants.describe_roles()
            )));
        }
        if let Some(group) = &a.spec.group
            && !grants.in_group(group)
        {
            return Err(EngineError::PermissionDenied(format!(
                "approval {id} may be decided only by members of group {group:?} (the step's approval.group); \
                 {} is not one: add the user to the Unix group, or the group to the token's `groups` in the engine's config",
                actor.name
            )));
        }
        if actor.name == a.submitted_by && !a.spec.allow_self_approval {
            return Err(EngineError::PermissionDenied(format!(
                "four eyes: {} submitted run {}, so another approver must decide approval {id} \
                 (a step may allow it with approval.allow_self_approval = true, unless the engine's \
                 [[policy]] gates its queue)",
                actor.name, a.run_id
            )));
        }
        if a.retried_by.contains(&actor.name) && !a.spec.allow_self_approval {
            return Err(EngineError::PermissionDenied(format!(
                "four eyes: {} retried run {}, which counts as submitting it, so another approver \
                 must decide approval {id}",
                actor.name, a.run_id
            )));
        }
        if a.decisions.iter().any(|d| d.actor == actor.name) {
            return Err(EngineError::FailedPrecondition(format!(
                "{} has already approved approval {id}; it needs {} distinct approvers",
                actor.name, a.spec.required
            )));
        }
        a.decisions.push(Decision {
            actor: actor.name.clone(),
            approve,
            comment: comment.to_owned(),
            at: tx.now,
        });
        let approvals = a.decisions.iter().filter(|d| d.approve).count() as u32;
        let (run_id, index, required) = (a.run_id.clone(), a.step_index, a.spec.required);
        tx.approvals.insert(id.to_owned());
        if !approve {
            if let Some(run) = self.runs.get_mut(&run_id) {
                run.rejected_by = Some(actor.name.clone());
                tx.run_changed(&run_id);
            }
            let Some(a) = self.approvals.get_mut(id) else {
                return Err(not_found("approval", id, "opsdeck approvals"));
            };
            a.state = ApprovalState::Rejected;
            a.decided_at = Some(tx.now);
            let ev =
                Ev::new("approval.rejected", format!("rejected by {}", actor.name)).approval(a);
            self.emit(tx, actor, comment, ev);
            let msg = format!("rejected by {}: {comment}", actor.name);
            self.fail_step(
                tx,
                &run_id,
                index,
                StepState::Failed,
                msg.clone(),
                actor,
                comment,
            );
            self.finish_run(tx, &run_id, RunState::Failed, msg, actor, comment);
        } else if approvals >= required {
            a.state = ApprovalState::Approved;
            a.decided_at = Some(tx.now);
            let ev =
                Ev::new("approval.approved", format!("approved by {}", actor.name)).approval(a);
            self.emit(tx, actor, comment, ev);
            self.succeed_step(
                tx,
                &run_id,
                index,
                None,
                format!("approved by {}", actor.name),
                actor,
                comment,
            );
        } else {
            let ev = Ev::new(
                "approval.approved",
                format!("approved by {} ({approvals} of {required})", actor.name),
            )
            .approval(a);
            self.emit(tx, actor, comment, ev);
        }
        self.approvals
            .get(id)
            .map(|a| convert::approval(a, self.runs.get(&a.run_id)))
            .ok_or_else(|| not_found("approval", id, "opsdeck approvals"))
    }

    pub(super) fn approval_timed_out(&mut self, tx: &mut Tx, id: &str) {
        let engine = Actor::engine();
        let Some(a) = self.approvals.get_mut(id) else {
            return;
        };
        if a.state != ApprovalState::Pending || a.deadline_at.is_none_or(|d| d > tx.now) {
            return;
        }
        a.decided_at = Some(tx.now);
        let (state, kind) = match a.spec.on_timeout {
            OnTimeout::Reject => (ApprovalState::Rejected, "approval.rejected"),
            OnTimeout::Fail => (ApprovalState::Expired, "approval.expired"),
        };
        a.state = state;
        tx.approvals.insert(id.to_owned());
        let msg = format!(
            "approval timed out; on_timeout = {}",
            a.spec.on_timeout.word()
        );
        let (run_id, index) = (a.run_id.clone(), a.step_index);
        let ev = Ev::new(kind, msg.clone()).approval(a);
        self.emit(tx, &engine, "approval timeout", ev);
        self.fail_step(
            tx,
            &run_id,
            index,
            StepState::Failed,
            msg.clone(),
            &engine,
            "approval timeout",
        );
        self.finish_run(
            tx,
            &run_id,
            RunState::Failed,
            msg,
            &engine,
            "approval timeout",
        );
    }
}
