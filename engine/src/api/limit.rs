//! Limits the listeners enforce, each refused with RESOURCE_EXHAUSTED and
//! a sentence naming the limit and where to change it:
//!
//! - connections: each listener has its own budget
//!   (`limits.max_connections`), so a flood on TCP cannot lock out the
//!   Unix socket; the engine's own user and root on the socket are never
//!   refused, so an admin can always get in;
//! - connections not yet authenticated: at most
//!   `limits.max_pending_per_peer` per IP address (or socket user), and
//!   each has `limits.handshake_timeout` to make its first authenticated
//!   call before it is closed — idle sockets cannot hold the engine's
//!   connections;
//! - the size of a message ([`explain_message_limit`]).
//!
//! A connection refused is not dropped silently: it is served by a server
//! that answers every call RESOURCE_EXHAUSTED, and closed after a moment.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// How long a refused connection stays open for its answers to go out.
const REFUSED_LINGER: Duration = Duration::from_secs(2);

/// Who is at the other end of a connection, as far as the kernel says
/// before any byte is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Address(IpAddr),
    User(u32),
    Unknown,
}

/// A connection that can name its peer.
pub trait PeerOf {
    fn peer(&self) -> Peer;

    /// The peer's process, where the kernel says.
    fn pid(&self) -> Option<i32> {
        None
    }
}

impl PeerOf for TcpStream {
    fn peer(&self) -> Peer {
        self.peer_addr()
            .map_or(Peer::Unknown, |a| Peer::Address(a.ip()))
    }
}

impl PeerOf for UnixStream {
    fn peer(&self) -> Peer {
        self.peer_cred()
            .map_or(Peer::Unknown, |c| Peer::User(c.uid()))
    }

    fn pid(&self) -> Option<i32> {
        self.peer_cred().ok().and_then(|c| c.pid())
    }
}

/// Whether process `pid` descends from this one (and is not this one): a
/// step the engine's own local workers started, or something it started.
/// Read from `/proc/PID/status` up the chain of parents.
fn descends_from_engine(pid: i32) -> bool {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let mut at = pid;
    // Parent chains are short; a bound keeps a strange /proc from looping.
    for _ in 0..256 {
        if at <= 1 || at == me {
            return false;
        }
        match parent_of(at) {
            Some(parent) if parent == me => return true,
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

/// The `PPid:` of `/proc/PID/status`.
fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A listener's connection budget.
#[derive(Clone)]
pub struct Budget {
    slots: Arc<Semaphore>,
    max_connections: usize,
    max_pending_per_peer: usize,
    handshake_timeout: Duration,
    pending: Arc<Mutex<HashMap<Peer, usize>>>,
    /// Peers never refused nor timed out: the engine's own user and root.
    trusted_uids: [u32; 2],
}

impl Budget {
    pub fn new(limits: &crate::domain::spec::Limits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            max_pending_per_peer: limits.max_pending_per_peer,
            handshake_timeout: limits.handshake_timeout,
            pending: Arc::default(),
            trusted_uids: [nix::unistd::geteuid().as_raw(), 0],
        }
    }

    fn trusted(&self, peer: &Peer) -> bool {
        matches!(peer, Peer::User(uid) if self.trusted_uids.contains(uid))
    }

    /// A place for a new connection from `peer`, or why there is none.
    /// `local_step`: the peer is a step of the engine's own workers, which
    /// gets nothing of the engine's user.
    fn admit(&self, peer: &Peer, local_step: bool) -> Result<Place, String> {
        if self.trusted(peer) && !local_step {
            return Ok(Place {
                permit: None,
                pending: None,
                deadline: None,
            });
        }
        let pending = {
            let mut counts = self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = counts.entry(peer.clone()).or_insert(0);
            if *n >= self.max_pending_per_peer {
                return Err(format!(
                    "{} already holds {} connections that have not authenticated (limits.max_pending_per_peer \
                     in the engine config); authenticate on them or close them, and retry",
                    describe(peer),
                    self.max_pending_per_peer
                ));
            }
            *n += 1;
            PendingSlot {
                peer: peer.clone(),
                counts: self.pending.clone(),
            }
        };
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            format!(
                "the engine is serving its limit of {} connections (limits.max_connections in the \
                 engine config); close idle clients, retry shortly, or raise the limit",
                self.max_connections
            )
        })?;
        Ok(Place {
            permit: Some(permit),
            pending: Some(pending),
            deadline: Some(self.handshake_timeout),
        })
    }
}

fn describe(peer: &Peer) -> String {
    match peer {
        Peer::Address(ip) => format!("the address {ip}"),
        Peer::User(uid) => format!("the user with uid {uid}"),
        Peer::Unknown => "a peer the kernel did not name".into(),
    }
}

/// What an admitted connection holds.
struct Place {
    permit: Option<OwnedSemaphorePermit>,
    pending: Option<PendingSlot>,
    deadline: Option<Duration>,
}

/// One of a peer's connections that has not authenticated yet.
struct PendingSlot {
    peer: Peer,
    counts: Arc<Mutex<HashMap<Peer, usize>>>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = counts.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// What the guard and the refuser learn about a connection from its
/// request's extensions.
#[derive(Default)]
pub struct ConnState {
    authenticated: AtomicBool,
    pending: Mutex<Option<PendingSlot>>,
    /// Why the connection was refused, if it was.
    refusal: Option<String>,
    /// The peer is a process the engine's own local workers started.
    pub local_step: bool,
}

impl ConnState {
    /// The connection made an authenticated call: it stays open, and no
    /// longer counts among its peer's pending ones.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            drop(
                self.pending
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take(),
            );
        }
    }
}

/// The connection info tonic puts in each request's extensions: the
/// transport's own, and the connection's [`ConnState`].
#[derive(Clone)]
pub struct ConnInfo<T> {
    pub inner: T,
    pub state: Arc<ConnState>,
}

/// The [`ConnState`] of the connection a request came on, whatever the
/// listener.
pub fn conn_state(ext: &http::Extensions) -> Option<&Arc<ConnState>> {
    ext.get::<ConnInfo<UdsConnectInfo>>()
        .map(|i| &i.state)
        .or_else(|| ext.get::<ConnInfo<TcpConnectInfo>>().map(|i| &i.state))
        .or_else(|| {
            ext.get::<TlsConnectInfo<ConnInfo<TcpConnectInfo>>>()
                .map(|i| &i.get_ref().state)
        })
}

/// A connection, holding its place among the engine's connections while
/// open; closed once its handshake time is up without an authenticated
/// call, or (refused) after [`REFUSED_LINGER`].
pub struct Limited<IO> {
    io: IO,
    _permit: Option<OwnedSemaphorePermit>,
    state: Arc<ConnState>,
    /// When it is closed unless authenticated by then.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = ConnInfo<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            inner: self.io.connect_info(),
            state: self.state.clone(),
        }
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
        if self.state.authenticated.load(Ordering::Acquire) {
            self.deadline = None;
        } else if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::debug!(
                "closed a connection that made no authenticated call in time (limits.handshake_timeout)"
            );
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

/// Splits a listener's connections into those within its budget and those
/// over it, each to be served by its own server. Accepting stops once both
/// servers are gone.
pub fn split<S, IO>(mut incoming: S, budget: Budget) -> (Incoming<IO>, Incoming<IO>)
where
    S: Stream<Item = io::Result<IO>> + Unpin + Send + 'static,
    IO: PeerOf + Send + 'static,
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
            let local_step = io.pid().is_some_and(descends_from_engine);
            match budget.admit(&io.peer(), local_step) {
                Ok(place) => {
                    let state = ConnState {
                        authenticated: AtomicBool::new(place.deadline.is_none()),
                        pending: Mutex::new(place.pending),
                        refusal: None,
                        local_step,
                    };
                    let conn = Limited {
                        io,
                        _permit: place.permit,
                        state: Arc::new(state),
                        deadline: place.deadline.map(|d| Box::pin(tokio::time::sleep(d))),
                        close_at: None,
                    };
                    if ok_tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    tracing::warn!("connection refused: {why}");
                    let conn = Limited {
                        io,
                        _permit: None,
                        state: Arc::new(ConnState {
                            refusal: Some(why),
                            ..ConnState::default()
                        }),
                        deadline: None,
                        close_at: Some(Box::pin(tokio::time::sleep(REFUSED_LINGER))),
                    };
                    // Nobody serving refusals any more: just drop it.
                    let _ = refused_tx.try_send(Ok(conn));
                }
            }
        }
    });
    (ReceiverStream::new(ok_rx), ReceiverStream::new(refused_rx))
}

/// Answers every call RESOURCE_EXHAUSTED, saying which limit the
/// connection is over: what refused connections are served with.
#[derive(Clone, Default)]
pub struct Refuse;

impl<B> tower::Service<http::Request<B>> for Refuse {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let why = conn_state(req.extensions())
            .and_then(|s| s.refusal.clone())
            .unwrap_or_else(|| {
                "the engine is at a connection limit (limits in the engine config)".into()
            });
        std::future::ready(Ok(Status::resource_exhausted(why).into_http()))
    }
}

/// Streaming subscriptions open at once, in all and per identity
/// (`limits.max_subscribers`, `limits.max_subscribers_per_identity`): each
/// holds a subscriber in the core (or the health service) with a buffer,
/// so their number is bounded like connections are.
#[derive(Clone)]
pub struct Subscribers {
    inner: Arc<SubscribersInner>,
}

struct SubscribersInner {
    max: usize,
    per_identity: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

impl Subscribers {
    pub fn new(limits: &crate::domain::spec::Limits) -> Self {
        Self {
            inner: Arc::new(SubscribersInner {
                max: limits.max_subscribers,
                per_identity: limits.max_subscribers_per_identity,
                open: Mutex::default(),
            }),
        }
    }

    /// Whether calls of `path` are subscriptions this bounds.
    pub fn bounds(path: &str) -> bool {
        matches!(
            path,
            "/opsdeck.v1.Console/Watch"
                | "/opsdeck.v1.Events/FollowEvents"
                | "/opsdeck.v1.Runs/FollowOutput"
                | "/grpc.health.v1.Health/Watch"
        )
    }

    /// A place for one more subscription of `who`, or why there is none.
    pub fn take(&self, who: &str) -> Result<Subscription, String> {
        let mut open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, by_identity) = &mut *open;
        if *total >= self.inner.max {
            return Err(format!(
                "the engine is serving its limit of {} open subscriptions (limits.max_subscribers in \
                 the engine config); close other consoles or followers, or retry shortly",
                self.inner.max
            ));
        }
        let mine = by_identity.entry(who.to_owned()).or_insert(0);
        if *mine >= self.inner.per_identity {
            return Err(format!(
                "{who} already has {} open subscriptions (limits.max_subscribers_per_identity in the \
                 engine config); close some of its consoles or followers first",
                self.inner.per_identity
            ));
        }
        *mine += 1;
        *total += 1;
        Ok(Subscription {
            who: who.to_owned(),
            of: self.inner.clone(),
        })
    }
}

/// One open subscription; its place is given back when dropped.
pub struct Subscription {
    who: String,
    of: Arc<SubscribersInner>,
}

impl Subscription {
    /// The response body, holding this place until the stream ends.
    pub fn hold(self, body: tonic::body::Body) -> tonic::body::Body {
        tonic::body::Body::new(Held { body, _place: self })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut open = self
            .of
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, by_identity) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_identity.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_identity.remove(&self.who);
            }
        }
    }
}

/// A response body that holds a [`Subscription`] while it streams.
struct Held {
    body: tonic::body::Body,
    _place: Subscription,
}

impl http_body::Body for Held {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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
