//! Limits the listeners enforce: how many connections are served at once,
//! and how large a message may be, each refused with RESOURCE_EXHAUSTED and
//! a sentence naming the limit and where to change it.
//!
//! Connections: one semaphore for every listener. A connection that finds
//! no permit is not dropped silently — it is served by a server that
//! answers every call RESOURCE_EXHAUSTED, and closed after a moment.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::Connected;

/// How long a refused connection stays open for its answers to go out.
const REFUSED_LINGER: Duration = Duration::from_secs(2);

/// A connection, holding its place among the engine's connections while
/// open, or (refused) closing itself after [`REFUSED_LINGER`].
pub struct Limited<IO> {
    io: IO,
    _permit: Option<OwnedSemaphorePermit>,
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO: Connected> Connected for Limited<IO> {
    // The inner connection's, so the auth interceptor still finds the
    // peer's credentials or address.
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(close_at) = self.close_at.as_mut()
            && close_at.as_mut().poll(cx).is_ready()
        {
            // End of input: the server finishes its answers and closes.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type Incoming<IO> = ReceiverStream<io::Result<Limited<IO>>>;

/// Splits a listener's connections into those within the limit and those
/// over it, each to be served by its own server. Accepting stops once both
/// servers are gone.
pub fn split<S, IO>(mut incoming: S, slots: Arc<Semaphore>) -> (Incoming<IO>, Incoming<IO>)
where
    S: Stream<Item = io::Result<IO>> + Unpin + Send + 'static,
    IO: Send + 'static,
{
    let (ok_tx, ok_rx) = mpsc::channel(16);
    let (refused_tx, refused_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = ok_tx.closed() => return,
            };
            let io = match next {
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    // E.g. out of file descriptors: wait for some to close
                    // rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => return,
            };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let conn = Limited {
                        io,
                        _permit: Some(permit),
                        close_at: None,
                    };
                    if ok_tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        "connection refused: the engine is at its limit of connections (limits.max_connections)"
                    );
                    let close_at = Some(Box::pin(tokio::time::sleep(REFUSED_LINGER)));
                    let conn = Limited {
                        io,
                        _permit: None,
                        close_at,
                    };
                    // Nobody serving refusals any more: just drop it.
                    let _ = refused_tx.try_send(Ok(conn));
                }
            }
        }
    });
    (ReceiverStream::new(ok_rx), ReceiverStream::new(refused_rx))
}

/// Answers every call RESOURCE_EXHAUSTED: what connections over the limit
/// are served with.
#[derive(Clone)]
pub struct Refuse {
    message: Arc<str>,
}

impl Refuse {
    pub fn new(max_connections: usize) -> Self {
        let message = format!(
            "the engine is serving its limit of {max_connections} connections (limits.max_connections in the \
             engine config); close idle clients, retry shortly, or raise the limit"
        );
        Self {
            message: message.into(),
        }
    }
}

impl<B> tower::Service<http::Request<B>> for Refuse {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(
            Status::resource_exhausted(self.message.to_string()).into_http()
        ))
    }
}

/// tonic refuses a request over the decoding limit with OUT_OF_RANGE and a
/// sentence that names no setting; say which limit it was and what to do.
pub fn explain_message_limit(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let message = status.message();
    if !message.contains("message length too large") {
        return response;
    }
    // "…: found N bytes, the limit is: M bytes"
    let number_after = |label: &str| {
        message
            .split(label)
            .nth(1)
            .and_then(|rest| rest.trim_start().split(' ').next())
            .map(str::to_owned)
    };
    let found = number_after("found").unwrap_or_else(|| "too many".into());
    let limit = number_after("limit is:").unwrap_or_else(|| "fewer".into());
    let better = Status::resource_exhausted(format!(
        "the request is {found} bytes; the engine takes messages of at most {limit} bytes \
         (limits.max_message_bytes in the engine config): send less in one call"
    ));
    // Only fails for a message that cannot be a header, which this is not.
    let _ = better.add_header(response.headers_mut());
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_request_is_resource_exhausted_naming_the_setting() {
        let too_big = Status::out_of_range(
            "Error, decoded message length too large: found 20000000 bytes, the limit is: 16777216 bytes",
        )
        .into_http::<tonic::body::Body>();
        let explained = explain_message_limit(too_big);
        let status = Status::from_header_map(explained.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("20000000 bytes"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("at most 16777216 bytes"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("limits.max_message_bytes"),
            "{}",
            status.message()
        );

        let other = Status::out_of_range("something else").into_http::<tonic::body::Body>();
        let kept = explain_message_limit(other);
        assert_eq!(
            Status::from_header_map(kept.headers()).unwrap().code(),
            tonic::Code::OutOfRange
        );
    }
}
