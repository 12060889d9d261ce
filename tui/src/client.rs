//! The connection to the engine: where it is ([`Target`]), who we are
//! ([`Auth`]), typed clients over one channel ([`Engine`]) and an event
//! stream that survives engine restarts ([`EventFollower`]).
//!
//! Nothing here prints: the CLI and the console decide what to tell people.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_proto::failover::EngineList;
use opsdeck_proto::tls::ClientTls;
use opsdeck_proto::v1::approvals_client::ApprovalsClient;
use opsdeck_proto::v1::console_client::ConsoleClient;
use opsdeck_proto::v1::events_client::EventsClient;
use opsdeck_proto::v1::leases_client::LeasesClient;
use opsdeck_proto::v1::queues_client::QueuesClient;
use opsdeck_proto::v1::runs_client::RunsClient;
use opsdeck_proto::v1::schedules_client::SchedulesClient;
use opsdeck_proto::v1::workers_client::WorkersClient;
use opsdeck_proto::v1::{Event, FollowEventsRequest};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// The address used when no engine is named and no local socket exists.
pub const FALLBACK_ADDR: &str = "http://127.0.0.1:7465";

/// The largest answer accepted. tonic's default of 4 MiB is too small for a
/// long run list with its steps or a step's output tail, and an answer over
/// the limit fails outright instead of arriving shortened.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A bearer token, kept ready as the `authorization` header value. Its
/// `Debug` does not show it, so it cannot leak into logs.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl FromStr for Token {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the token is empty".to_owned());
        }
        // Checked here rather than left to the header parser, which lets
        // some non-ASCII bytes through that servers then refuse.
        let invalid = || "the token must be printable ASCII without spaces".to_owned();
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid());
        }
        format!("Bearer {s}")
            .parse()
            .map(Self)
            .map_err(|_| invalid())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Adds `authorization: Bearer <token>` to every call when there is a token.
/// An interceptor rather than per-call code, so that no call can forget it.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    token: Option<Token>,
    /// For `https://` engines: the CA to trust, the certificate to show.
    tls: ClientTls,
}

impl Auth {
    pub fn new(token: Option<Token>) -> Self {
        Self {
            token,
            tls: ClientTls::default(),
        }
    }

    /// With these TLS files (`--ca`, `--cert`, `--key`).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(Token(value)) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How the engine's address was chosen; it shapes the advice given when the
/// engine cannot be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--engine` or `OPSDECK_ENGINE`.
    Given,
    /// A local engine socket that exists.
    LocalSocket,
    /// No socket found at any of these paths, so [`FALLBACK_ADDR`].
    Fallback { looked_at: Vec<PathBuf> },
    /// Several addresses given (`--engine a,b,c`): engines sharing a
    /// database, of which the connection goes to the one that leads.
    Replicas(EngineList),
}

/// The engine to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: EngineAddr,
    pub origin: Origin,
}

impl Target {
    /// The given address, or else the local default (see [`Target::local`]),
    /// looking at this process's environment and file system.
    pub fn resolve(given: Option<EngineList>) -> Self {
        match given {
            Some(list) if list.addrs().len() > 1 => Self {
                addr: list.first().clone(),
                origin: Origin::Replicas(list),
            },
            Some(list) => Self {
                addr: list.first().clone(),
                origin: Origin::Given,
            },
            None => Self::local(
                std::env::var_os("XDG_STATE_HOME"),
                std::env::var_os("HOME"),
                |p| p.exists(),
            ),
        }
    }

    /// The first engine socket that exists among [`socket_candidates`],
    /// else [`FALLBACK_ADDR`].
    pub fn local(
        xdg_state_home: Option<OsString>,
        home: Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Self {
        let candidates = socket_candidates(xdg_state_home, home);
        match candidates.iter().find(|p| exists(p)) {
            Some(path) => Self {
                addr: EngineAddr::Unix(path.clone()),
                origin: Origin::LocalSocket,
            },
            None => Self {
                addr: EngineAddr::Tcp(FALLBACK_ADDR.to_owned()),
                origin: Origin::Fallback {
                    looked_at: candidates,
                },
            },
        }
    }
}

/// Where a local engine's socket may be, in the order tried: the user's
/// own engine (`$XDG_STATE_HOME/opsdeck/engine.sock`, XDG_STATE_HOME
/// defaulting to `~/.local/state`), then the system service's.
pub fn socket_candidates(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Vec<PathBuf> {
    // The XDG spec says to ignore a relative (or empty) XDG_STATE_HOME.
    let state = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/state"))
        });
    state
        .map(|s| s.join("opsdeck/engine.sock"))
        .into_iter()
        .chain([
            PathBuf::from("/var/lib/opsdeck/engine.sock"),
            PathBuf::from("/run/opsdeck/engine.sock"),
        ])
        .collect()
}

/// The engine could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the engine at {addr}: {detail}")]
pub struct ConnectError {
    pub addr: EngineAddr,
    /// What failed, from the outermost error to its root cause.
    pub detail: String,
    /// What to check, in words.
    pub hint: String,
}

impl ConnectError {
    fn new(target: &Target, error: &tonic::transport::Error) -> Self {
        let mut causes: Vec<String> = Vec::new();
        let mut kind = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
            }
            let text = e.to_string();
            // Wrappers often repeat their cause's text; say each thing once.
            if !causes.iter().any(|c| c.contains(&text)) {
                causes.push(text);
            }
            source = e.source();
        }
        Self {
            addr: target.addr.clone(),
            detail: causes.join(": "),
            hint: connect_hint(target, kind),
        }
    }
}

fn connect_hint(target: &Target, kind: Option<std::io::ErrorKind>) -> String {
    use std::io::ErrorKind;
    let mut hint = match (&target.addr, kind) {
        (EngineAddr::Unix(path), Some(ErrorKind::NotFound)) => format!(
            "there is no socket at {}: check that opsdeckd is running on this host \
             (systemctl status opsdeckd)",
            path.display()
        ),
        (EngineAddr::Unix(path), Some(ErrorKind::PermissionDenied)) => format!(
            "you may not open {}: ask to be added to the group that owns it (ls -l {0})",
            path.display()
        ),
        (EngineAddr::Unix(_), _) => "the socket exists but nothing answers on it: check that \
             opsdeckd is running (systemctl status opsdeckd, journalctl -u opsdeckd)"
            .to_owned(),
        (EngineAddr::Tcp(_), _) => "check that opsdeckd is running and listening on that \
             host and port, and that no firewall is in the way"
            .to_owned(),
    };
    match &target.origin {
        Origin::Given | Origin::Replicas(_) => {
            hint.push_str("; the address came from --engine or OPSDECK_ENGINE");
        }
        Origin::LocalSocket => {
            hint.push_str("; to use another engine, pass --engine ADDR or set OPSDECK_ENGINE");
        }
        Origin::Fallback { looked_at } => {
            let paths: Vec<String> = looked_at.iter().map(|p| p.display().to_string()).collect();
            hint = format!(
                "no engine was named and there is no local engine socket ({}): start opsdeckd, \
                 or name the engine with --engine ADDR or OPSDECK_ENGINE",
                paths.join(", ")
            );
        }
    }
    hint
}

/// Channels to every operator service, all authenticated.
pub type Authed = InterceptedService<Channel, Auth>;

/// A connected engine.
#[derive(Clone, Debug)]
pub struct Engine {
    target: Target,
    channel: Channel,
    auth: Auth,
}

macro_rules! clients {
    ($($(#[$doc:meta])* $name:ident: $client:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> $client<Authed> {
                $client::with_interceptor(self.channel.clone(), self.auth.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
            }
        )*
    };
}

pub use opsdeck_proto::endpoint::Keepalive;

/// The console's pings: a silent engine is noticed within 4 s. A ping is
/// nine bytes, answered by the engine's HTTP/2 layer without work.
pub const CONSOLE_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(2),
};

impl Engine {
    /// Connects now, so that an unreachable engine is reported once, with
    /// advice, instead of as the first call's UNAVAILABLE. The channel
    /// reconnects by itself afterwards.
    pub async fn connect(target: Target, auth: Auth) -> Result<Self, ConnectError> {
        Self::connect_with(target, auth, None).await
    }

    /// As [`connect`](Self::connect), with HTTP/2 pings when `keepalive`
    /// is given: what a long-lived watch needs to notice a silent engine.
    pub async fn connect_with(
        target: Target,
        auth: Auth,
        keepalive: Option<Keepalive>,
    ) -> Result<Self, ConnectError> {
        let tls = if auth.tls == ClientTls::default() {
            None
        } else {
            Some(auth.tls.load().map_err(|e| {
                ConnectError {
                    addr: target.addr.clone(),
                    detail: e.to_string(),
                    hint: "fix --ca, --cert or --key (or OPSDECK_CA, OPSDECK_CERT, OPSDECK_KEY)"
                        .to_owned(),
                }
            })?)
        };
        let mut target = target;
        let channel = match &target.origin {
            Origin::Replicas(list) => {
                let (leader, channel) =
                    list.connect_leader(tls.as_ref())
                        .await
                        .map_err(|e| ConnectError {
                            addr: target.addr.clone(),
                            detail: e.to_string(),
                            hint: "check that the engines are running and that one of them leads \
                               (its /readyz says so); the addresses came from --engine or \
                               OPSDECK_ENGINE"
                                .to_owned(),
                        })?;
                target.addr = leader;
                match keepalive {
                    // The leader found, a pinging channel to it instead.
                    Some(_) => target
                        .addr
                        .connect_pinging(tls.as_ref(), keepalive)
                        .await
                        .map_err(|e| ConnectError::new(&target, &e))?,
                    None => channel,
                }
            }
            _ => target
                .addr
                .connect_pinging(tls.as_ref(), keepalive)
                .await
                .map_err(|e| ConnectError::new(&target, &e))?,
        };
        Ok(Self {
            target,
            channel,
            auth,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    clients! {
        runs: RunsClient,
        events: EventsClient,
        workers: WorkersClient,
        queues: QueuesClient,
        approvals: ApprovalsClient,
        leases: LeasesClient,
        schedules: SchedulesClient,
        console: ConsoleClient,
    }
}

/// Whether a failed call or stream is worth trying again: the connection
/// broke or the engine is restarting. How tonic reports a broken connection
/// depends on where it broke (UNAVAILABLE while connecting, UNKNOWN or
/// CANCELLED for a stream reset mid-way), so all three count.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// Whether a followed stream should be followed again from its last event:
/// when [`is_transient`], and when the engine cut off a reader that fell
/// behind (RESOURCE_EXHAUSTED, its "resync"), which it asks to follow again.
fn is_resumable(status: &Status) -> bool {
    is_transient(status) || status.code() == Code::ResourceExhausted
}

/// What [`EventFollower::next`] has for its caller.
#[derive(Debug)]
pub enum Followed {
    Event(Box<Event>),
    /// The stream broke; the next call to `next` waits `after`, then
    /// follows again from the last event seen.
    Reconnecting {
        after: Duration,
        why: String,
    },
}

/// `Events.FollowEvents`, resumed after the last event seen whenever the
/// stream breaks, so that a caller sees each event once, in order, across
/// engine restarts, without handling reconnects itself.
#[derive(Debug)]
pub struct EventFollower {
    client: EventsClient<Authed>,
    run_id: String,
    /// Only these kinds (exact, or families such as `run`) and this actor;
    /// empty: all.
    kinds: Vec<String>,
    actor: String,
    after_seq: u64,
    stream: Option<Streaming<Event>>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// Not before this instant, after a failure. A deadline rather than a
    /// pending sleep, so that `next` stays cancel-safe inside `select!`.
    retry_at: Option<Instant>,
}

impl EventFollower {
    /// Follows events after `after_seq` (0 = from the first), only those of
    /// `run_id` when it is not empty.
    pub fn new(engine: &Engine, run_id: String, after_seq: u64) -> Self {
        Self {
            client: engine.events(),
            run_id,
            kinds: Vec::new(),
            actor: String::new(),
            after_seq,
            stream: None,
            failures: 0,
            retry_at: None,
        }
    }

    /// Only events of these kinds (exact, or families such as `run`) by
    /// this actor, filtered by the engine; empty ones filter nothing.
    pub fn with_filter(mut self, kinds: Vec<String>, actor: String) -> Self {
        self.kinds = kinds;
        self.actor = actor;
        self
    }

    /// The next event, or word that the stream broke and will be resumed.
    /// Errors that retrying cannot fix (refused, unauthenticated, not
    /// implemented) are returned as they are.
    pub async fn next(&mut self) -> Result<Followed, Status> {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            let Some(stream) = &mut self.stream else {
                let request = FollowEventsRequest {
                    after_seq: self.after_seq,
                    run_id: self.run_id.clone(),
                    kinds: self.kinds.clone(),
                    actor: self.actor.clone(),
                };
                match self.client.follow_events(request).await {
                    Ok(response) => self.stream = Some(response.into_inner()),
                    Err(status) if is_resumable(&status) => return Ok(self.broke(status.message())),
                    Err(status) => return Err(status),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    // A replay after a reconnect must not show an event twice.
                    if event.seq <= self.after_seq && self.after_seq != 0 {
                        continue;
                    }
                    self.after_seq = event.seq;
                    self.failures = 0;
                    return Ok(Followed::Event(Box::new(event)));
                }
                Ok(None) => return Ok(self.broke("the engine closed the stream")),
                Err(status) if is_resumable(&status) => return Ok(self.broke(status.message())),
                Err(status) => return Err(status),
            }
        }
    }

    fn broke(&mut self, why: &str) -> Followed {
        self.stream = None;
        let after = backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + after);
        let why = if why.is_empty() {
            "the connection broke"
        } else {
            why
        };
        Followed::Reconnecting {
            after,
            why: why.to_owned(),
        }
    }
}

/// 0.5 s, doubling per consecutive failure, at most 10 s: quick after a
/// blip, gentle on an engine that is down.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.min(5));
    Duration::from_millis(ms.min(10_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn default_engine_is_the_first_local_socket_that_exists() {
        let t = Target::local(None, os("/home/ann"), |p| {
            p == Path::new("/home/ann/.local/state/opsdeck/engine.sock")
        });
        assert_eq!(
            t.addr,
            "unix:///home/ann/.local/state/opsdeck/engine.sock"
                .parse()
                .unwrap()
        );
        assert_eq!(t.origin, Origin::LocalSocket);

        let t = Target::local(os("/xdg"), os("/home/ann"), |p| {
            p.starts_with("/xdg") || p.starts_with("/run")
        });
        assert_eq!(t.addr, EngineAddr::Unix("/xdg/opsdeck/engine.sock".into()));

        let t = Target::local(os("/xdg"), None, |p| p.starts_with("/var/lib"));
        assert_eq!(
            t.addr,
            EngineAddr::Unix("/var/lib/opsdeck/engine.sock".into())
        );

        let t = Target::local(os("/xdg"), None, |p| p.starts_with("/run"));
        assert_eq!(t.addr, EngineAddr::Unix("/run/opsdeck/engine.sock".into()));
    }

    #[test]
    fn default_engine_falls_back_to_local_tcp_and_remembers_where_it_looked() {
        let t = Target::local(None, os("/home/ann"), |_| false);
        assert_eq!(t.addr, EngineAddr::Tcp("http://127.0.0.1:7465".into()));
        assert_eq!(
            t.origin,
            Origin::Fallback {
                looked_at: vec![
                    "/home/ann/.local/state/opsdeck/engine.sock".into(),
                    "/var/lib/opsdeck/engine.sock".into(),
                    "/run/opsdeck/engine.sock".into(),
                ]
            }
        );
    }

    #[test]
    fn relative_or_missing_state_dirs_are_skipped() {
        assert_eq!(
            socket_candidates(os("relative/dir"), os("/home/ann"))[0],
            PathBuf::from("/home/ann/.local/state/opsdeck/engine.sock")
        );
        assert_eq!(socket_candidates(os(""), None).len(), 2);
        assert_eq!(
            socket_candidates(None, None)[0],
            PathBuf::from("/var/lib/opsdeck/engine.sock")
        );
    }

    #[test]
    fn token_is_sent_as_a_bearer_header_and_never_shown() {
        let token: Token = "s3cret".parse().unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let mut auth = Auth::new(Some(token));
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );

        let request = Auth::default().call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn tokens_a_header_cannot_carry_are_refused() {
        assert!("".parse::<Token>().is_err());
        assert!("bad\ntoken".parse::<Token>().is_err());
        assert!("tøken".parse::<Token>().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(10));
    }

    #[test]
    fn a_missing_socket_hint_names_the_path_and_the_service() {
        let target = Target {
            addr: EngineAddr::Unix("/run/opsdeck/engine.sock".into()),
            origin: Origin::LocalSocket,
        };
        let hint = connect_hint(&target, Some(std::io::ErrorKind::NotFound));
        assert!(
            hint.contains("no socket at /run/opsdeck/engine.sock"),
            "{hint}"
        );
        assert!(hint.contains("systemctl status opsdeckd"), "{hint}");
    }
}
