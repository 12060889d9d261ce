//! The Events service: the audit trail, read or followed live, filtered by
//! run, kind and actor on the engine's side.

use std::pin::Pin;

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::events_server::Events;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Api;

const DEFAULT_LIST: u32 = 1000;

/// Events one filtered ListEvents reads from the store at most; the answer
/// says how far it got (`scanned_seq`) so the caller can go on from there.
const MAX_SCAN: usize = 100_000;

/// Events read from the store at once while scanning.
const SCAN_PAGE: u32 = 5_000;

/// What an event must be to be sent.
#[derive(Clone, Debug, Default, PartialEq)]
struct Filter {
    /// Exact kinds, or families as `"run."` (any kind starting with it).
    kinds: Vec<String>,
    actor: Option<String>,
}

impl Filter {
    fn new(kinds: Vec<String>, actor: String) -> Result<Self, Status> {
        if kinds.len() > 64 {
            return Err(Status::invalid_argument(format!(
                "{} kinds given; filter on at most 64",
                kinds.len()
            )));
        }
        let mut out = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let kind = kind.trim();
            if kind.is_empty() || kind.len() > 128 {
                return Err(Status::invalid_argument(format!(
                    "the kind {kind:?} is not a kind: give one such as \"run.submitted\", or a family \
                     such as \"run\" for every run.* kind"
                )));
            }
            let family = kind.strip_suffix(".*").or_else(|| kind.strip_suffix('.'));
            out.push(match family {
                Some(family) => format!("{family}."),
                None if !kind.contains('.') => format!("{kind}."),
                None => kind.to_owned(),
            });
        }
        let actor = actor.trim().to_owned();
        if actor.len() > 256 {
            return Err(Status::invalid_argument(
                "the actor is over 256 characters; give an identity as events show it",
            ));
        }
        Ok(Self {
            kinds: out,
            actor: (!actor.is_empty()).then_some(actor),
        })
    }

    fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.actor.is_none()
    }

    fn matches(&self, event: &pb::Event) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|k| match k.strip_suffix('.') {
                Some(_) => event.kind.starts_with(k.as_str()),
                None => event.kind == *k,
            });
        kind_ok && self.actor.as_ref().is_none_or(|a| event.actor == *a)
    }
}

impl Api {
    /// The newest `limit` events matching `filter` after `after`, oldest
    /// first, read backwards from the head (at most [`MAX_SCAN`] events
    /// looked at). `scanned_seq` is the head: a follower goes on from it.
    async fn newest_events(
        &self,
        filter: &Filter,
        after: u64,
        limit: u32,
        run: Option<&str>,
        first_kept_seq: u64,
    ) -> Result<pb::ListEventsResponse, Status> {
        let page_size = if filter.is_empty() {
            limit + 1
        } else {
            SCAN_PAGE
        };
        let (mut events, mut before, mut scanned, mut head) = (Vec::new(), u64::MAX, 0, after);
        let mut more = false;
        'pages: loop {
            let page = self
                .store
                .events_before(before, after, page_size, run)
                .await
                .map_err(super::store_error)?;
            let full = page.len() == page_size as usize;
            if let Some(newest) = page.first() {
                head = head.max(newest.seq);
            }
            for event in page {
                scanned += 1;
                before = event.seq;
                if filter.matches(&event) {
                    if events.len() == limit as usize {
                        more = true;
                        break 'pages;
                    }
                    events.push(event);
                }
            }
            if !full {
                break;
            }
            if scanned >= MAX_SCAN {
                more = true;
                break;
            }
        }
        events.reverse();
        Ok(pb::ListEventsResponse {
            events,
            scanned_seq: head,
            first_kept_seq,
            more,
        })
    }
}

#[tonic::async_trait]
impl Events for Api {
    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        super::notifications::list(self, req.into_inner()).await
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_LIST
        } else {
            req.limit.min(10_000)
        };
        let filter = Filter::new(req.kinds, req.actor)?;
        let run = (!req.run_id.is_empty()).then_some(req.run_id.as_str());
        // Read first: events pruned after it are reported as kept, which
        // errs on the side of saying nothing is missing only for that instant.
        let first_kept_seq = self
            .store
            .first_kept_seq()
            .await
            .map_err(super::store_error)?;
        if req.newest {
            return Ok(Response::new(
                self.newest_events(&filter, req.after_seq, limit, run, first_kept_seq)
                    .await?,
            ));
        }
        if filter.is_empty() {
            // One more than asked, to say whether the answer was cut.
            let mut events = self
                .store
                .events_after(req.after_seq, limit + 1, run)
                .await
                .map_err(super::store_error)?;
            let more = events.len() > limit as usize;
            events.truncate(limit as usize);
            let scanned_seq = events.last().map_or(req.after_seq, |e| e.seq);
            return Ok(Response::new(pb::ListEventsResponse {
                events,
                scanned_seq,
                first_kept_seq,
                more,
            }));
        }
        let (mut events, mut scanned, mut cursor) = (Vec::new(), 0, req.after_seq);
        while events.len() < limit as usize && scanned < MAX_SCAN {
            let page = self
                .store
                .events_after(cursor, SCAN_PAGE, run)
                .await
                .map_err(super::store_error)?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            let full = page.len() == SCAN_PAGE as usize;
            for event in page {
                scanned += 1;
                if filter.matches(&event) {
                    events.push(event);
                    if events.len() == limit as usize {
                        cursor = events.last().map_or(cursor, |e| e.seq);
                        break;
                    }
                }
            }
            if !full {
                break;
            }
        }
        let more = events.len() == limit as usize;
        Ok(Response::new(pb::ListEventsResponse {
            events,
            scanned_seq: cursor,
            first_kept_seq,
            more,
        }))
    }

    type FollowEventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn follow_events(
        &self,
        req: Request<pb::FollowEventsRequest>,
    ) -> Result<Response<Self::FollowEventsStream>, Status> {
        let req = req.into_inner();
        let filter = Filter::new(req.kinds, req.actor)?;
        let run = (!req.run_id.is_empty()).then_some(req.run_id);
        let feed = super::watch::feed(self, req.after_seq, run, false).await?;
        let stream = async_stream_events(feed, filter);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Events only: a resync ends the stream with an error the client can act on.
fn async_stream_events(
    feed: super::watch::Feed,
    filter: Filter,
) -> impl Stream<Item = Result<pb::Event, Status>> + Send {
    use tokio_stream::StreamExt;
    feed.into_stream().filter_map(move |item| match item {
        Ok(pb::WatchMessage {
            kind: Some(pb::watch_message::Kind::Event(e)),
        }) => filter.matches(&e).then_some(Ok(e)),
        Ok(pb::WatchMessage {
            kind: Some(pb::watch_message::Kind::Resync(r)),
        }) => Some(Err(Status::resource_exhausted(format!(
            "{}; follow again from your last seq",
            r.reason
        )))),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, actor: &str) -> pb::Event {
        pb::Event {
            kind: kind.into(),
            actor: actor.into(),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_match_exactly_or_by_family() {
        let f = Filter::new(vec!["run".into(), "lease.expired".into()], String::new()).unwrap();
        assert!(f.matches(&event("run.submitted", "ann")));
        assert!(!f.matches(&event("run_name.quarantined", "ann")));
        assert!(f.matches(&event("lease.expired", "opsdeckd")));
        assert!(!f.matches(&event("lease.granted", "opsdeckd")));
        for family in ["step.", "step.*", "step"] {
            let f = Filter::new(vec![family.into()], String::new()).unwrap();
            assert!(f.matches(&event("step.failed", "x")), "{family}");
            assert!(!f.matches(&event("run.failed", "x")), "{family}");
        }
    }

    #[test]
    fn the_actor_must_match_exactly() {
        let f = Filter::new(vec![], " ann ".into()).unwrap();
        assert!(f.matches(&event("run.submitted", "ann")));
        assert!(!f.matches(&event("run.submitted", "anne")));
        assert!(Filter::new(vec![], String::new()).unwrap().is_empty());
    }

    #[test]
    fn a_blank_kind_is_refused_naming_what_to_give() {
        let err = Filter::new(vec![" ".into()], String::new()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("run.submitted"), "{}", err.message());
    }
}
