//! The JSON a notifier receives, version 1. Its fields are stable: new
//! ones may be added, none is renamed, removed or changes meaning without
//! a new `version`.
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "1042-oncall",
//!   "notifier": "oncall",
//!   "summary": "run deploy-api 01JD…3F2A failed at step 2 (migrate): step migrate dead after 3 attempts: exited with status 1",
//!   "event": {
//!     "seq": 1042, "kind": "run.failed", "at": "2026-11-30T03:12:45.120Z",
//!     "at_ms": 1796008365120, "actor": "engine", "reason": "",
//!     "message": "step migrate dead after 3 attempts: exited with status 1",
//!     "run_id": "01JD…", "run_name": "deploy-api", "labels": {"team": "payments"},
//!     "step_index": 2, "step_name": "migrate", "queue": "deploy",
//!     "worker_id": "", "lease_id": "", "approval_id": ""
//!   }
//! }
//! ```

use opsdeck_proto::v1 as pb;
use serde_json::json;

use crate::domain::{Millis, Run};

/// The payload's version; bumped only for a change that is not an addition.
pub const VERSION: u32 = 1;

/// A run id as people read it in a chat line: its first and last four.
fn short_id(id: &str) -> String {
    let n = id.chars().count();
    if n <= 10 {
        return id.to_owned();
    }
    let head: String = id.chars().take(4).collect();
    let tail: String = id.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

fn rfc3339(at: Millis) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// One line an SRE can read in a chat message: what happened, to what,
/// and why. No links.
pub fn summary(event: &pb::Event, run: Option<&Run>) -> String {
    let run_part = run
        .map(|r| format!("run {} {}", r.name, short_id(&r.id)))
        .or_else(|| (!event.run_id.is_empty()).then(|| format!("run {}", short_id(&event.run_id))));
    let what = match (event.kind.as_str(), &run_part) {
        ("run.failed", Some(r)) => match run.and_then(|run| run.step(run.current_step)) {
            Some(step) => format!("{r} failed at step {} ({})", step.index + 1, step.spec.name),
            None => format!("{r} failed"),
        },
        ("run.succeeded", Some(r)) => format!("{r} succeeded"),
        ("run.cancelled", Some(r)) => format!("{r} was cancelled"),
        ("approval.requested", Some(r)) => format!("{r} waits for an approval"),
        ("approval.overdue", Some(r)) => format!("{r}: an approval is near its deadline"),
        (kind, Some(r)) => format!("{kind} in {r}"),
        (kind, None) if !event.worker_id.is_empty() => {
            format!("{kind} on worker {}", event.worker_id)
        }
        (kind, None) => kind.to_owned(),
    };
    let mut line = if event.message.is_empty() {
        what
    } else {
        format!("{what}: {}", event.message)
    };
    if !event.reason.is_empty() {
        line.push_str(&format!(" (reason: {})", event.reason));
    }
    line
}

/// The body delivered for `event` to `notifier` under idempotency id `id`.
pub fn body(id: &str, notifier: &str, event: &pb::Event, run: Option<&Run>, queue: &str) -> String {
    let step = run
        .and_then(|r| r.step(event.step_index))
        .filter(|_| !event.run_id.is_empty());
    let v = json!({
        "version": VERSION,
        "id": id,
        "notifier": notifier,
        "summary": summary(event, run),
        "event": {
            "seq": event.seq,
            "kind": event.kind,
            "at": rfc3339(event.at_ms),
            "at_ms": event.at_ms,
            "actor": event.actor,
            "reason": event.reason,
            "message": event.message,
            "run_id": event.run_id,
            "run_name": run.map(|r| r.name.as_str()).unwrap_or_default(),
            "labels": run.map(|r| r.labels.clone()).unwrap_or_default(),
            "step_index": event.step_index,
            "step_name": step.map(|s| s.spec.name.as_str()).unwrap_or_default(),
            "queue": queue,
            "worker_id": event.worker_id,
            "lease_id": event.lease_id,
            "approval_id": event.approval_id,
        },
    });
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_the_run_and_says_why() {
        let e = pb::Event {
            kind: "run.failed".into(),
            run_id: "01JD00000000000000000F2A".into(),
            message: "step 2 (migrate): exit 1".into(),
            ..Default::default()
        };
        assert_eq!(
            summary(&e, None),
            "run 01JD…0F2A failed: step 2 (migrate): exit 1"
        );
        let w = pb::Event {
            kind: "worker.offline_long".into(),
            worker_id: "w1".into(),
            message: "offline for 5m".into(),
            ..Default::default()
        };
        assert_eq!(
            summary(&w, None),
            "worker.offline_long on worker w1: offline for 5m"
        );
    }
}
