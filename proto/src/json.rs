//! serde helpers for the generated types: enum fields are written as their
//! lowercase words so that `--output json` reads `"state": "succeeded"`.

use serde::Serializer;

use crate::names::{Word, word_of};
use crate::v1::{
    ApprovalState, LeaseState, MissedPolicy, Outcome, OverlapPolicy, RunState, StepKind, StepState,
    WorkerState,
};

fn one<T: Word + TryFrom<i32>, S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&word_of::<T>(*v))
}

macro_rules! field {
    ($name:ident, $ty:ty) => {
        #[doc = concat!("Serializes a `", stringify!($ty), "` field as its word.")]
        pub fn $name<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
            one::<$ty, S>(v, s)
        }
    };
}

field!(run_state, RunState);
field!(step_kind, StepKind);
field!(step_state, StepState);
field!(worker_state, WorkerState);
field!(lease_state, LeaseState);
field!(approval_state, ApprovalState);
field!(outcome, Outcome);
field!(missed_policy, MissedPolicy);
field!(overlap_policy, OverlapPolicy);

/// Serializes a repeated `RunState` field as words.
pub fn run_states<S: Serializer>(v: &[i32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| word_of::<RunState>(*x)))
}
