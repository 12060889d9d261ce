//! ListNotifications: the outbox, as operators look at it.

use opsdeck_proto::v1 as pb;
use tonic::{Response, Status};

use super::Api;
use crate::store::{Notification, NotificationState};

const DEFAULT_LIST: u32 = 100;
const MAX_LIST: u32 = 1000;

fn states(word: &str) -> Result<Vec<NotificationState>, Status> {
    use NotificationState::{Failed, Pending};
    match word.trim() {
        "" => Ok(vec![Pending, Failed]),
        "all" => Ok(vec![]),
        other => other.parse().map(|s| vec![s]).map_err(|_| {
            Status::invalid_argument(format!(
                "state {other:?} is not one; give pending, failed, delivered or all"
            ))
        }),
    }
}

fn to_pb(n: Notification) -> pb::Notification {
    pb::Notification {
        id: n.id,
        notifier: n.notifier,
        event_seq: n.event_seq,
        event_kind: n.event_kind,
        state: n.state.word().to_owned(),
        attempts: n.attempts,
        created_at_ms: n.created_at,
        next_attempt_at_ms: n.next_at,
        updated_at_ms: n.updated_at,
        last_error: n.last_error,
    }
}

pub(super) async fn list(
    api: &Api,
    req: pb::ListNotificationsRequest,
) -> Result<Response<pb::ListNotificationsResponse>, Status> {
    let states = states(&req.state)?;
    let limit = match req.limit {
        0 => DEFAULT_LIST,
        n => n.min(MAX_LIST),
    };
    let found = api
        .store
        .list_notifications(&states, limit)
        .await
        .map_err(super::store_error)?;
    Ok(Response::new(pb::ListNotificationsResponse {
        notifications: found.into_iter().map(to_pb).collect(),
    }))
}
