//! The rows of each list: which items a filter keeps, by key.

use opsdeck_proto::names::word_of;
use opsdeck_proto::v1::{Approval, ApprovalState, Lease, Quarantine, RunState};

use super::Screen;
use crate::model::{self, Data};
use crate::text::subject;
use crate::text::time::duration;

/// The keys of a list's rows, filtered and in display order.
pub fn rows(data: &Data, screen: Screen, filter: &str, now_ms: i64) -> Vec<String> {
    let words: Vec<String> = filter.split_whitespace().map(str::to_lowercase).collect();
    let keep = |hay: &[&str]| -> bool {
        words.is_empty()
            || words
                .iter()
                .all(|w| hay.iter().any(|h| h.to_lowercase().contains(w.as_str())))
    };
    match screen {
        Screen::Runs => data
            .runs
            .values()
            .rev()
            .filter(|r| {
                if words.is_empty() {
                    return true;
                }
                let state = word_of::<RunState>(r.state);
                let mut hay: Vec<&str> = vec![&r.id, &r.name, &state, &r.submitted_by];
                hay.extend(r.labels.values().map(String::as_str));
                hay.extend(r.steps.iter().map(|s| s.queue.as_str()));
                hay.extend(r.steps.iter().map(|s| s.name.as_str()));
                keep(&hay)
            })
            .map(|r| r.id.clone())
            .collect(),
        Screen::Workers => data
            .workers
            .values()
            .filter(|w| {
                if words.is_empty() {
                    return true;
                }
                let status = model::worker_status(data, w, now_ms);
                let mut hay: Vec<&str> = vec![&w.id, &status.word, &w.host];
                hay.extend(status.note);
                if status.stuck {
                    hay.push("stuck");
                }
                hay.extend(w.queues.iter().map(String::as_str));
                keep(&hay)
            })
            .map(|w| w.id.clone())
            .collect(),
        Screen::Queues => data
            .queues
            .values()
            .filter(|q| {
                keep(&[
                    &q.queue.name,
                    if q.queue.paused { "paused" } else { "active" },
                ])
            })
            .map(|q| q.queue.name.clone())
            .collect(),
        Screen::Approvals => {
            let mut list: Vec<&Approval> = data
                .approvals
                .values()
                .filter(|a| {
                    let state = word_of::<ApprovalState>(a.state);
                    let overdue = if model::overdue(a, now_ms) {
                        "overdue"
                    } else {
                        ""
                    };
                    keep(&[
                        &a.id,
                        &a.run_id,
                        &a.run_name,
                        &a.step_name,
                        &state,
                        &a.submitted_by,
                        overdue,
                    ])
                })
                .collect();
            // Pending first, oldest ask first; then the latest decisions.
            list.sort_by_cached_key(|a| {
                let pending = a.state() == ApprovalState::Pending;
                (
                    !pending,
                    if pending {
                        a.requested_at_ms
                    } else {
                        -a.decided_at_ms
                    },
                    a.id.clone(),
                )
            });
            list.into_iter().map(|a| a.id.clone()).collect()
        }
        Screen::Leases => {
            let mut list: Vec<&Lease> = data
                .leases
                .values()
                .filter(|l| {
                    let mark = if model::lease_stuck(l) {
                        "stuck"
                    } else if model::lease_stale(data, l) {
                        "stale"
                    } else if model::lease_overdue(data, l, now_ms) {
                        "overdue"
                    } else {
                        ""
                    };
                    keep(&[
                        &l.id,
                        &l.run_id,
                        &l.run_name,
                        &l.step_name,
                        &l.worker_id,
                        &l.queue,
                        mark,
                    ])
                })
                .collect();
            // Stuck ones first (someone has to act), then stale ones,
            // then the soonest to expire.
            list.sort_by_cached_key(|l| {
                (
                    !model::lease_stuck(l),
                    !model::lease_stale(data, l),
                    l.expires_at_ms,
                    l.id.clone(),
                )
            });
            list.into_iter().map(|l| l.id.clone()).collect()
        }
        Screen::Quarantines => {
            let mut list: Vec<&Quarantine> = data
                .quarantines
                .values()
                .filter(|q| keep(&[&q.name, &q.message]))
                .collect();
            // The latest first.
            list.sort_by_cached_key(|q| (-q.since_ms, q.name.clone()));
            list.into_iter().map(|q| q.name.clone()).collect()
        }
        Screen::Schedules => data
            .schedules
            .values()
            .filter(|s| keep(&[&s.name, &s.cron, &s.timezone, &s.run_name]))
            .map(|s| s.name.clone())
            .collect(),
        Screen::Events => data
            .events
            .iter()
            .rev()
            .filter(|e| {
                if words.is_empty() {
                    return true;
                }
                let subject = subject(e);
                keep(&[
                    &e.kind,
                    &e.actor,
                    &e.message,
                    &e.reason,
                    &subject,
                    &e.run_id,
                    &e.worker_id,
                    &e.lease_id,
                    &e.approval_id,
                    &e.queue,
                ])
            })
            .map(|e| e.seq.to_string())
            .collect(),
        Screen::Overview | Screen::Run => Vec::new(),
    }
}

/// Runs of a name that have not ended: while the name is quarantined,
/// their queued steps wait.
pub fn active_runs(data: &Data, name: &str) -> usize {
    data.runs
        .values()
        .filter(|r| r.name == name && !model::run_is_final(r))
        .count()
}

/// How long ago, in whole seconds and up: "0s", "3s", "5m12s". Under a
/// second is "0s": engine and console clocks are rarely closer than that.
pub fn age(from_ms: i64, now_ms: i64) -> String {
    let ms = u64::try_from(now_ms.saturating_sub(from_ms)).unwrap_or(0);
    duration(ms - ms % 1000)
}
