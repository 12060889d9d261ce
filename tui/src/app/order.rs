//! The order of the Runs, Workers and Leases lists: by urgency unless the
//! operator chose a column (`S` state, `N` name, `A` age). Urgency puts
//! first what someone has to look at: failed runs and runs waiting for an
//! approval, then running ones, then the rest, newest first; offline and
//! stuck workers, then draining ones; stuck leases, then stale ones.

use std::cmp::Reverse;

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{RunState, WorkerState};

use super::Screen;
use crate::keys::SortBy;
use crate::model::{self, Data};

/// A chosen order: the column, and whether reversed.
pub type Sort = Option<(SortBy, bool)>;

/// The next order after the key for `by` is pressed: that column, then
/// the other way round, then urgency again.
pub fn next(current: Sort, by: SortBy) -> Sort {
    match current {
        Some((was, false)) if was == by => Some((by, true)),
        Some((was, true)) if was == by => None,
        _ => Some((by, false)),
    }
}

/// How the title of a list says its order: "by name", "by age rev".
pub fn words(sort: Sort) -> Option<String> {
    let (by, reversed) = sort?;
    Some(if reversed {
        format!("by {} rev", by.word())
    } else {
        format!("by {}", by.word())
    })
}

/// A run's urgency: failed or waiting for someone, then under way, then
/// the rest.
fn run_rank(state: RunState) -> u8 {
    match state {
        RunState::Failed | RunState::WaitingApproval => 0,
        RunState::Running | RunState::Queued => 1,
        _ => 2,
    }
}

/// A worker's urgency: gone, stuck or out of dispatch by its breaker, then
/// draining, then the rest.
fn worker_rank(data: &Data, w: &opsdeck_proto::v1::Worker, now_ms: i64) -> u8 {
    let status = model::worker_status(data, w, now_ms);
    if status.stuck
        || w.state() == WorkerState::Offline
        || status.note == Some("disconnected")
        || w.breaker == "open"
    {
        0
    } else if matches!(w.state(), WorkerState::Draining | WorkerState::Recycling) {
        1
    } else {
        2
    }
}

/// A lease's urgency: stuck, stale, overdue, fine.
fn lease_rank(data: &Data, l: &opsdeck_proto::v1::Lease, now_ms: i64) -> u8 {
    if model::lease_stuck(l) {
        0
    } else if model::lease_stale(data, l) {
        1
    } else if model::lease_overdue(data, l, now_ms) {
        2
    } else {
        3
    }
}

/// Orders `keys` (the list's rows, as [`super::rows`] filtered them) for
/// `screen`. A stable sort: rows equal by the chosen column keep their
/// order by urgency and age.
pub fn order(data: &Data, screen: Screen, keys: &mut [String], sort: Sort, now_ms: i64) {
    match screen {
        Screen::Runs => {
            let run = |id: &String| data.runs.get(id);
            match sort {
                None => keys.sort_by_cached_key(|id| run(id).map_or(3, |r| run_rank(r.state()))),
                Some((by, reversed)) => sort_by(keys, reversed, |id| {
                    run(id).map(|r| match by {
                        SortBy::State => (
                            word_of::<RunState>(r.state),
                            Reverse(0),
                            Reverse(String::new()),
                        ),
                        SortBy::Name => (r.name.clone(), Reverse(0), Reverse(String::new())),
                        SortBy::Age => (
                            String::new(),
                            Reverse(r.created_at_ms),
                            Reverse(r.id.clone()),
                        ),
                    })
                }),
            }
        }
        Screen::Workers => {
            let worker = |id: &String| data.workers.get(id);
            match sort {
                None => keys.sort_by_cached_key(|id| {
                    worker(id).map_or(3, |w| worker_rank(data, w, now_ms))
                }),
                Some((by, reversed)) => sort_by(keys, reversed, |id| {
                    worker(id).map(|w| match by {
                        SortBy::State => (
                            model::worker_status(data, w, now_ms).word,
                            Reverse(0),
                            w.id.clone(),
                        ),
                        SortBy::Name => (w.id.clone(), Reverse(0), String::new()),
                        SortBy::Age => (String::new(), Reverse(w.registered_at_ms), w.id.clone()),
                    })
                }),
            }
        }
        Screen::Leases => {
            let lease = |id: &String| data.leases.get(id);
            // Urgency is the order the list is made in.
            if let Some((by, reversed)) = sort {
                sort_by(keys, reversed, |id| {
                    lease(id).map(|l| match by {
                        SortBy::State => (
                            lease_rank(data, l, now_ms).to_string(),
                            Reverse(0),
                            String::new(),
                        ),
                        SortBy::Name => (l.run_name.clone(), Reverse(0), l.step_name.clone()),
                        SortBy::Age => (String::new(), Reverse(l.granted_at_ms), l.id.clone()),
                    })
                });
            }
        }
        _ => {}
    }
}

/// A stable sort by a key, ascending or reversed; rows without a key
/// (gone meanwhile) go last.
fn sort_by<K: Ord>(keys: &mut [String], reversed: bool, key: impl Fn(&String) -> Option<K>) {
    keys.sort_by_cached_key(|k| key(k));
    let missing = keys.iter().take_while(|k| key(k).is_none()).count();
    keys.rotate_left(missing);
    if reversed {
        let present = keys.len() - missing;
        keys[..present].reverse();
    }
}
