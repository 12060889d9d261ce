//! The Events service: the audit trail, read or followed live.

use std::pin::Pin;

use opsdeck_proto::v1 as pb;
use opsdeck_proto::v1::events_server::Events;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Api;

const DEFAULT_LIST: u32 = 1000;

#[tonic::async_trait]
impl Events for Api {
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
        let run = (!req.run_id.is_empty()).then_some(req.run_id.as_str());
        let events = self
            .store
            .events_after(req.after_seq, limit, run)
            .await
            .map_err(super::store_error)?;
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    type FollowEventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn follow_events(
        &self,
        req: Request<pb::FollowEventsRequest>,
    ) -> Result<Response<Self::FollowEventsStream>, Status> {
        let req = req.into_inner();
        let run = (!req.run_id.is_empty()).then_some(req.run_id);
        let feed = super::watch::feed(self, req.after_seq, run, false).await?;
        let stream = async_stream_events(feed);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Events only: a resync ends the stream with an error the client can act on.
fn async_stream_events(
    feed: super::watch::Feed,
) -> impl Stream<Item = Result<pb::Event, Status>> + Send {
    use tokio_stream::StreamExt;
    feed.into_stream().filter_map(|item| match item {
        Ok(pb::WatchMessage {
            kind: Some(pb::watch_message::Kind::Event(e)),
        }) => Some(Ok(e)),
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
