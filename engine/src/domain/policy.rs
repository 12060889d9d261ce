//! `[[policy]]`: rules of the engine's config that a spec cannot turn off.
//! A policy names queues whose steps need another person's approval first:
//! every run with a step on one of them must have an approval step before
//! it, and those approvals are four-eyes whatever the spec says.

use serde::Deserialize;

use super::scope::Patterns;
use super::spec::RunSpec;
use super::{ANY_QUEUE, StepKindSpec};

/// One `[[policy]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The queues it gates (glob patterns).
    pub queues: Patterns,
    /// Distinct approvers each gating approval needs at least (1 to 10).
    #[serde(default = "one")]
    pub approvals: u32,
}

fn one() -> u32 {
    1
}

/// Makes `spec` obey `policies`: each approval step before a gated step
/// becomes four-eyes with at least the approvers the policy asks for. A
/// gated step with no approval step before it refuses the spec, naming the
/// step, its queue and the policy.
pub fn apply(policies: &[Policy], spec: &mut RunSpec) -> Result<(), String> {
    for index in 0..spec.steps.len() {
        let StepKindSpec::Exec(exec) = &spec.steps[index].kind else {
            continue;
        };
        let queue = exec.queue.clone();
        for (n, policy) in policies.iter().enumerate() {
            if queue == ANY_QUEUE || !policy.queues.matches(&queue) {
                continue;
            }
            let mut gated = false;
            for earlier in &mut spec.steps[..index] {
                if let StepKindSpec::Approval(a) = &mut earlier.kind {
                    a.allow_self_approval = false;
                    a.required = a.required.max(policy.approvals);
                    gated = true;
                }
            }
            if !gated {
                return Err(format!(
                    "step {} ({:?}) runs on queue {queue:?}, which the engine's policy {} (queues = {}) \
                     gates: put an approval step before it; another person must approve it",
                    index + 1,
                    spec.steps[index].name,
                    n + 1,
                    policy.queues.written()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::spec::{Limits, parse};

    fn policy(queues: &[&str], approvals: u32) -> Policy {
        Policy {
            queues: Patterns::new(queues.iter().map(|q| (*q).to_owned()).collect()).unwrap(),
            approvals,
        }
    }

    #[test]
    fn a_gated_step_needs_an_approval_before_it_that_the_spec_cannot_loosen() {
        let policies = [policy(&["prod-*"], 2)];
        let mut bare = parse(
            "name = \"d\"\n[[step]]\nname = \"ship\"\nqueue = \"prod-eu\"\nrun = \"true\"\n",
            &Limits::default(),
        )
        .unwrap();
        let why = apply(&policies, &mut bare).unwrap_err();
        assert!(
            why.contains("step 1 (\"ship\")") && why.contains("prod-*"),
            "{why}"
        );

        let mut gated = parse(
            "name = \"d\"\n[[step]]\nname = \"ok\"\napproval = { allow_self_approval = true }\n\
             [[step]]\nname = \"ship\"\nqueue = \"prod-eu\"\nrun = \"true\"\n",
            &Limits::default(),
        )
        .unwrap();
        apply(&policies, &mut gated).unwrap();
        let StepKindSpec::Approval(a) = &gated.steps[0].kind else {
            panic!("an approval step")
        };
        assert!(!a.allow_self_approval);
        assert_eq!(a.required, 2);

        // An approval after the gated step does not gate it.
        let mut late = parse(
            "name = \"d\"\n[[step]]\nname = \"ship\"\nqueue = \"prod-eu\"\nrun = \"true\"\n\
             [[step]]\nname = \"ok\"\napproval = {}\n",
            &Limits::default(),
        )
        .unwrap();
        assert!(apply(&policies, &mut late).is_err());

        // Other queues are not gated.
        let mut other = parse(
            "name = \"d\"\n[[step]]\nqueue = \"build\"\nrun = \"true\"\n",
            &Limits::default(),
        )
        .unwrap();
        apply(&policies, &mut other).unwrap();
    }
}
