//! Enum values as lowercase words: `RUN_STATE_WAITING_APPROVAL` is shown and
//! typed as `waiting_approval`.

use crate::v1::{
    ApprovalState, IdKind, LeaseState, MissedPolicy, Outcome, OverlapPolicy, RunState, StepKind,
    StepState, WorkerState,
};

/// A protobuf enum with a lowercase word for each value.
pub trait Word: Sized + Copy + 'static {
    /// The prefix every value's protobuf name starts with.
    const PREFIX: &'static str;
    /// The protobuf name (`RUN_STATE_RUNNING`).
    fn proto_name(self) -> &'static str;
    /// Parses the protobuf name.
    fn from_proto_name(name: &str) -> Option<Self>;
    /// Every value but UNSPECIFIED.
    fn all() -> &'static [Self];

    /// The lowercase word (`running`).
    fn word(self) -> String {
        self.proto_name()
            .strip_prefix(Self::PREFIX)
            .unwrap_or(self.proto_name())
            .to_ascii_lowercase()
    }

    /// Parses a lowercase word (case-insensitive; `-` may stand for `_`).
    fn from_word(word: &str) -> Option<Self> {
        let name = format!(
            "{}{}",
            Self::PREFIX,
            word.replace('-', "_").to_ascii_uppercase()
        );
        Self::from_proto_name(&name).filter(|v| v.proto_name() != Self::unspecified_name())
    }

    /// The UNSPECIFIED value's name.
    fn unspecified_name() -> String {
        format!("{}UNSPECIFIED", Self::PREFIX)
    }

    /// The words of every value, for error messages.
    fn words() -> String {
        Self::all()
            .iter()
            .map(|v| v.word())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! word {
    ($ty:ty, $prefix:literal, [$($v:ident),* $(,)?]) => {
        impl Word for $ty {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
            fn all() -> &'static [Self] {
                &[$(<$ty>::$v),*]
            }
        }
    };
}

word!(
    RunState,
    "RUN_STATE_",
    [
        Queued,
        Running,
        WaitingApproval,
        Succeeded,
        Failed,
        Cancelled
    ]
);
word!(StepKind, "STEP_KIND_", [Exec, Approval]);
word!(
    StepState,
    "STEP_STATE_",
    [
        Blocked, Queued, Leased, Running, Succeeded, Failed, RetryWait, Cancelled, Dead, Waiting
    ]
);
word!(
    WorkerState,
    "WORKER_STATE_",
    [Online, Draining, Recycling, Offline, Stopped]
);
word!(
    LeaseState,
    "LEASE_STATE_",
    [Active, Released, Expired, ForceReleased]
);
word!(
    ApprovalState,
    "APPROVAL_STATE_",
    [Pending, Approved, Rejected, Expired, Cancelled]
);
word!(
    Outcome,
    "OUTCOME_",
    [Succeeded, Failed, TimedOut, Cancelled]
);
word!(IdKind, "ID_KIND_", [Run, Approval, Lease, Worker]);
word!(MissedPolicy, "MISSED_POLICY_", [Skip, RunOnce]);
word!(
    OverlapPolicy,
    "OVERLAP_POLICY_",
    [Skip, Allow, CancelPrevious]
);

/// The word for an enum field's wire value; "unknown" for a value this build
/// does not know.
pub fn word_of<T: Word + TryFrom<i32>>(value: i32) -> String {
    T::try_from(value)
        .map(Word::word)
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        assert_eq!(RunState::WaitingApproval.word(), "waiting_approval");
        assert_eq!(
            RunState::from_word("waiting_approval"),
            Some(RunState::WaitingApproval)
        );
        assert_eq!(
            RunState::from_word("waiting-approval"),
            Some(RunState::WaitingApproval)
        );
        assert_eq!(RunState::from_word("unspecified"), None);
        assert_eq!(
            StepState::from_word("retry_wait"),
            Some(StepState::RetryWait)
        );
        assert_eq!(word_of::<LeaseState>(4), "force_released");
        assert_eq!(word_of::<LeaseState>(99), "unknown");
    }
}
