//! The console's connection: `Console.Whoami`, then `Console.Watch`, as a
//! small state machine, `Connected | Disconnected`, whose [`Conn::next`]
//! reconnects by itself (forever, with jittered exponential backoff) and
//! resumes after the last event applied, so that the main loop never sees
//! reconnect logic, only [`Update`]s.
//!
//! `next` is cancel-safe: it is polled inside `select!`, and every await in
//! it either finishes a step whose result is kept in `self` or can be
//! started again from `self` (a retry deadline is a stored instant, not a
//! pending sleep).
//!
//! The channel pings the engine ([`CONSOLE_KEEPALIVE`]): an engine that
//! stops answering, frozen or cut off, breaks the watch within seconds,
//! where its own heartbeat (every 10 s when idle) would take three times
//! that to be missed.

use std::time::Duration;

use opsdeck_proto::failover::EngineList;
use opsdeck_proto::v1::watch_message::Kind;
use opsdeck_proto::v1::{Event, WatchMessage, WatchRequest, WhoamiRequest, WhoamiResponse};
use rand::Rng;
use tokio::time::Instant;
use tonic::Streaming;

use crate::cli::error::code_word;
use crate::client::{Auth, CONSOLE_KEEPALIVE, Engine, Origin, Target};
use crate::model::Snapshot;

/// How long connecting, Whoami and opening the watch may take each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The engine sends a heartbeat every 10 s when idle; three missed and the
/// stream counts as dead. The pings notice a silent engine long before;
/// this catches one whose HTTP/2 layer answers pings while its watch says
/// nothing (the app says "no word for Ns" meanwhile).
const SILENCE: Duration = Duration::from_secs(30);
/// The first retry waits 125–250 ms, so an engine restart costs about a
/// second; then doubling to at most 10 s.
const BACKOFF_BASE_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 10_000;

/// What the connection has for the app.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Trying to connect now (attempt 0 is the first).
    Connecting {
        attempt: u32,
    },
    /// Connected and watching; a snapshot or the missed events follow.
    Connected {
        /// Who we are, and the leader's epoch (the app tells a new leader).
        whoami: WhoamiResponse,
        /// 0 when a snapshot was asked for, else the seq resumed after.
        resumed_after: u64,
    },
    /// The connection broke or could not be made; the next try is in
    /// `retry_in`.
    Disconnected {
        retry_in: Duration,
        attempt: u32,
        why: String,
        /// The engine said it is shutting down (a graceful stop), rather
        /// than the connection failing.
        shutting_down: bool,
    },
    /// A whole snapshot: replace everything with it.
    Snapshot(Box<Snapshot>),
    Event(Box<Event>),
    /// The engine cut us off (or events went missing): a snapshot is being
    /// read again. What is shown stays until it arrives.
    Resync {
        reason: String,
    },
    /// The engine is there and has nothing new.
    Heartbeat {
        seq: u64,
    },
}

enum State {
    Connected {
        engine: Box<Engine>,
        stream: Box<Streaming<WatchMessage>>,
        heard_at: Instant,
        /// Failures before this connection; cleared once it delivers.
        attempt: u32,
    },
    Disconnected {
        retry_at: Instant,
        attempt: u32,
        /// Whether `Connecting` was said for this attempt.
        announced: bool,
    },
}

/// The watch connection. See the module docs.
pub struct Conn {
    target: Target,
    auth: Auth,
    state: State,
    /// The seq of the last event (or snapshot) handed out: where a
    /// reconnect resumes. 0 asks for a snapshot.
    last_seq: u64,
    /// A snapshot being received, chunk by chunk.
    partial: Option<Snapshot>,
}

impl Conn {
    /// A connection that will connect on the first [`next`](Self::next).
    pub fn new(target: Target, auth: Auth) -> Self {
        Self {
            target,
            auth,
            state: State::Disconnected {
                retry_at: Instant::now(),
                attempt: 0,
                announced: false,
            },
            last_seq: 0,
            partial: None,
        }
    }

    /// The engine, while connected: engine calls go over the same channel.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.state {
            State::Connected { engine, .. } => Some(engine.as_ref()),
            State::Disconnected { .. } => None,
        }
    }

    /// Drops what was received and watches again from a snapshot, now.
    pub fn resync(&mut self) {
        self.last_seq = 0;
        self.partial = None;
        self.state = State::Disconnected {
            retry_at: Instant::now(),
            attempt: 0,
            announced: false,
        };
    }

    /// The next thing to tell the app. Never fails: failures are
    /// [`Update::Disconnected`], and the call after one waits and retries.
    pub async fn next(&mut self) -> Update {
        loop {
            match &mut self.state {
                State::Disconnected {
                    retry_at,
                    attempt,
                    announced,
                } => {
                    tokio::time::sleep_until(*retry_at).await;
                    if !*announced {
                        *announced = true;
                        return Update::Connecting { attempt: *attempt };
                    }
                    let attempt = *attempt;
                    return match self.connect().await {
                        Ok((engine, stream, whoami)) => {
                            self.partial = None;
                            self.state = State::Connected {
                                engine: Box::new(engine),
                                stream: Box::new(stream),
                                heard_at: Instant::now(),
                                attempt,
                            };
                            Update::Connected {
                                whoami,
                                resumed_after: self.last_seq,
                            }
                        }
                        Err(failure) => self.broke(attempt, failure),
                    };
                }
                State::Connected {
                    stream,
                    heard_at,
                    attempt,
                    ..
                } => {
                    let deadline = *heard_at + SILENCE;
                    let attempt = *attempt;
                    let message = match tokio::time::timeout_at(deadline, stream.message()).await {
                        Err(_) => {
                            let why = format!("no word from the engine for {}s", SILENCE.as_secs());
                            return self.broke(attempt, why.into());
                        }
                        Ok(Ok(Some(message))) => message,
                        Ok(Ok(None)) => {
                            let why = "the engine closed the stream".to_owned();
                            return self.broke(attempt, why.into());
                        }
                        Ok(Err(status)) => return self.broke(attempt, Failure::of(&status)),
                    };
                    *heard_at = Instant::now();
                    if let Some(update) = self.handle(message) {
                        return update;
                    }
                }
            }
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<(Engine, Streaming<WatchMessage>, WhoamiResponse), Failure> {
        let engine = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Engine::connect_with(
                self.target.clone(),
                self.auth.clone(),
                Some(CONSOLE_KEEPALIVE),
            ),
        )
        .await
        {
            Ok(Ok(engine)) => engine,
            // With what to check: the first thing someone whose console
            // never connected needs.
            Ok(Err(e)) => return Err(format!("{e}; {}", e.hint).into()),
            Err(_) => {
                return Err(format!("no answer from {} within 10s", self.target.addr).into());
            }
        };
        let mut console = engine.console();
        let whoami =
            match tokio::time::timeout(CONNECT_TIMEOUT, console.whoami(WhoamiRequest {})).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    self.follow_leader(&status);
                    return Err(Failure::of(&status));
                }
                Err(_) => return Err("the engine did not answer Whoami within 10s".into()),
            };
        let request = WatchRequest {
            resume_after_seq: self.last_seq,
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, console.watch(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(Failure::of(&status)),
            Err(_) => return Err("the engine did not start the watch within 10s".into()),
        };
        Ok((engine, stream, whoami))
    }

    /// A standby answered, naming the leader: the next attempt goes there,
    /// keeping the addresses given to fall back on.
    fn follow_leader(&mut self, status: &tonic::Status) {
        let Some(leader) = opsdeck_proto::failover::leader_hint(status, &self.target.addr) else {
            return;
        };
        let given = match &self.target.origin {
            Origin::Replicas(list) => list.clone(),
            _ => EngineList::from(self.target.addr.clone()),
        };
        self.target = Target {
            addr: leader.clone(),
            origin: Origin::Replicas(given.led_by(leader)),
        };
    }

    fn broke(&mut self, attempt: u32, failure: Failure) -> Update {
        let retry_in = backoff(attempt, rand::rng().random_range(0.0..1.0));
        self.partial = None;
        self.state = State::Disconnected {
            retry_at: Instant::now() + retry_in,
            attempt: attempt.saturating_add(1),
            announced: false,
        };
        Update::Disconnected {
            retry_in,
            attempt,
            why: failure.why,
            shutting_down: failure.shutting_down,
        }
    }

    /// One message of the stream: `Some` when the app has something to do.
    fn handle(&mut self, message: WatchMessage) -> Option<Update> {
        let kind = message.kind?;
        if matches!(
            kind,
            Kind::SnapshotEnd(_) | Kind::Event(_) | Kind::Heartbeat(_)
        ) && let State::Connected { attempt, .. } = &mut self.state
        {
            // It delivers: the next break starts the backoff afresh.
            *attempt = 0;
        }
        match kind {
            Kind::SnapshotBegin(begin) => {
                self.partial = Some(Snapshot {
                    seq: begin.seq,
                    ..Snapshot::default()
                });
                None
            }
            Kind::SnapshotChunk(chunk) => {
                let partial = self.partial.get_or_insert_with(Snapshot::default);
                partial.runs.extend(chunk.runs);
                partial.workers.extend(chunk.workers);
                partial.queues.extend(chunk.queues);
                partial.leases.extend(chunk.leases);
                partial.approvals.extend(chunk.approvals);
                partial.quarantines.extend(chunk.quarantines);
                partial.schedules.extend(chunk.schedules);
                None
            }
            Kind::SnapshotEnd(end) => {
                let mut snapshot = self.partial.take().unwrap_or_default();
                snapshot.seq = end.seq;
                self.last_seq = end.seq;
                Some(Update::Snapshot(Box::new(snapshot)))
            }
            Kind::Event(event) => {
                if self.last_seq != 0 && event.seq <= self.last_seq {
                    // Already applied (a replay overlapping what we had).
                    return None;
                }
                if self.last_seq != 0 && event.seq > self.last_seq + 1 {
                    let reason = format!(
                        "events {}..{} never arrived; reading everything again",
                        self.last_seq + 1,
                        event.seq - 1
                    );
                    self.resync();
                    return Some(Update::Resync { reason });
                }
                self.last_seq = event.seq;
                Some(Update::Event(Box::new(event)))
            }
            Kind::Resync(resync) => {
                self.resync();
                Some(Update::Resync {
                    reason: resync.reason,
                })
            }
            Kind::Heartbeat(beat) => Some(Update::Heartbeat { seq: beat.seq }),
        }
    }
}

/// Why a connection broke or could not be made.
struct Failure {
    why: String,
    shutting_down: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Self {
            why,
            shutting_down: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Self {
        why.to_owned().into()
    }
}

impl Failure {
    fn of(status: &tonic::Status) -> Self {
        let why = if unanswered_ping(status) {
            format!(
                "the engine stopped answering (no reply to a ping within {}s)",
                CONSOLE_KEEPALIVE.timeout.as_secs()
            )
        } else {
            status_words(status)
        };
        Self {
            why,
            shutting_down: is_shutdown(status),
        }
    }
}

/// Whether the connection was dropped because the engine did not answer
/// a ping: tonic says only "http2 error", its causes say which.
fn unanswered_ping(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.to_string().contains("keep-alive timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the engine said it is going away: it ends every watch with
/// UNAVAILABLE "the engine is shutting down; …" on a graceful stop, and
/// refuses calls in the same words while it stops.
pub fn is_shutdown(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("shutting down")
}

/// The wait before retry number `attempt` (0-based): 250 ms doubling to
/// 10 s, of which a random part (`jitter` in 0..1) is taken off so that
/// consoles cut off together do not come back together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.min(16))
        .min(BACKOFF_MAX_MS);
    // Between half and all of it.
    let half = full / 2;
    let extra = (half as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(half + extra)
}

/// A gRPC error in the words the status line uses.
pub fn status_words(status: &tonic::Status) -> String {
    match status.message() {
        "" => format!(
            "{}: {}",
            code_word(status.code()),
            status.code().description()
        ),
        message => format!("{}: {message}", code_word(status.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsdeck_proto::endpoint::EngineAddr;
    use opsdeck_proto::v1::{Heartbeat, Resync, Run, SnapshotBegin, SnapshotChunk, SnapshotEnd};

    fn conn() -> Conn {
        Conn::new(
            Target {
                addr: EngineAddr::Tcp("http://127.0.0.1:1".into()),
                origin: crate::client::Origin::Given,
            },
            Auth::default(),
        )
    }

    fn msg(kind: Kind) -> WatchMessage {
        WatchMessage { kind: Some(kind) }
    }

    fn event(seq: u64) -> Kind {
        Kind::Event(Event {
            seq,
            ..Event::default()
        })
    }

    #[test]
    fn backoff_grows_from_a_quarter_second_to_ten_with_jitter() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(125));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn a_snapshot_arrives_whole_and_sets_the_resume_point() {
        let mut c = conn();
        assert_eq!(
            c.handle(msg(Kind::SnapshotBegin(SnapshotBegin { seq: 7 }))),
            None
        );
        let chunk = |id: &str| SnapshotChunk {
            runs: vec![Run {
                id: id.into(),
                ..Run::default()
            }],
            ..SnapshotChunk::default()
        };
        assert_eq!(c.handle(msg(Kind::SnapshotChunk(chunk("a")))), None);
        assert_eq!(c.handle(msg(Kind::SnapshotChunk(chunk("b")))), None);
        let Some(Update::Snapshot(s)) = c.handle(msg(Kind::SnapshotEnd(SnapshotEnd { seq: 7 })))
        else {
            panic!("no snapshot")
        };
        assert_eq!(s.seq, 7);
        assert_eq!(s.runs.len(), 2);
        assert_eq!(c.last_seq, 7);
    }

    #[test]
    fn replayed_events_are_skipped_and_a_gap_asks_for_a_resync() {
        let mut c = conn();
        c.last_seq = 10;
        assert_eq!(c.handle(msg(event(9))), None);
        assert_eq!(c.handle(msg(event(10))), None);
        assert!(matches!(c.handle(msg(event(11))), Some(Update::Event(_))));
        assert_eq!(c.last_seq, 11);
        let Some(Update::Resync { reason }) = c.handle(msg(event(14))) else {
            panic!("no resync")
        };
        assert!(reason.contains("12..13"), "{reason}");
        assert_eq!(c.last_seq, 0, "watches again from a snapshot");
    }

    #[test]
    fn the_engines_resync_starts_over_from_zero() {
        let mut c = conn();
        c.last_seq = 10;
        let got = c.handle(msg(Kind::Resync(Resync {
            reason: "slow".into(),
        })));
        assert_eq!(
            got,
            Some(Update::Resync {
                reason: "slow".into()
            })
        );
        assert_eq!(c.last_seq, 0);
        assert_eq!(
            c.handle(msg(Kind::Heartbeat(Heartbeat { seq: 3, at_ms: 0 }))),
            Some(Update::Heartbeat { seq: 3 })
        );
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_reported_and_retried_not_fatal() {
        let mut c = conn();
        assert_eq!(c.next().await, Update::Connecting { attempt: 0 });
        let Update::Disconnected { attempt, why, .. } = c.next().await else {
            panic!("connected to nothing")
        };
        assert_eq!(attempt, 0);
        assert!(why.contains("127.0.0.1:1"), "{why}");
        assert_eq!(c.next().await, Update::Connecting { attempt: 1 });
    }

    #[test]
    fn the_engines_shutdown_is_told_from_a_broken_connection() {
        let said = tonic::Status::unavailable(
            "the engine is shutting down; reconnect and resume from your last seq",
        );
        assert!(is_shutdown(&said));
        let failure = Failure::of(&said);
        assert!(failure.shutting_down);
        assert!(failure.why.contains("shutting down"), "{}", failure.why);
        assert!(!is_shutdown(&tonic::Status::unavailable("transport error")));
        assert!(!is_shutdown(&tonic::Status::internal("shutting down")));
    }

    #[tokio::test]
    async fn an_engine_that_answers_nothing_is_given_up_on_within_seconds() {
        // A socket that takes connections and never says a word, as a
        // frozen engine's does (the kernel accepts for it).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frozen.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let mut c = Conn::new(
            Target {
                addr: EngineAddr::Unix(path),
                origin: crate::client::Origin::Given,
            },
            Auth::default(),
        );
        assert_eq!(c.next().await, Update::Connecting { attempt: 0 });
        let started = std::time::Instant::now();
        let update = c.next().await;
        let took = started.elapsed();
        let Update::Disconnected { why, .. } = update else {
            panic!("connected to a silent socket: {update:?}")
        };
        assert!(
            took < Duration::from_secs(6),
            "a silent engine took {took:?} to be given up on: {why}"
        );
        assert!(why.contains("stopped answering"), "{why}");
        held.abort();
    }
}
