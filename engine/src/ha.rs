//! Several engines on one PostgreSQL database: one leads, the others stand
//! by.
//!
//! The lead is a row in the database ([`Store::lead`]): taken when it is
//! free or lapsed (raising its epoch), renewed every third of its TTL on the
//! database's clock. A leader that has not renewed within one TTL, measured
//! on its own monotonic clock from the last renewal it sent, steps down at
//! once; and every commit checks the epoch under a share lock, so a leader
//! that was paused or cut off cannot write once another leads. Stepping
//! down ends the process ([`run`] in `serve` returns an error): its
//! supervisor restarts it, and it comes back as a standby.
//!
//! A standby serves health and reflection; every other call is answered
//! UNAVAILABLE naming the leader, whose address is also in the
//! [`LEADER_METADATA`] entry of every response a standby sends, so clients
//! given several addresses go straight to it.
//!
//! [`run`]: crate::serve::run

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use opsdeck_proto::failover::LEADER_METADATA;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;

use crate::store::{Leadership, Store};

/// The lead's TTL when the config names none.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(10);

/// What this engine is among those sharing its database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not leading (yet). `leader`: where the leader is, when one leads.
    Standby { leader: Option<String>, epoch: u64 },
    /// Leading with `epoch`: the core runs and this engine writes.
    Leader { epoch: u64 },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Leader { .. })
    }

    /// The epoch of the lead this engine holds or last saw (0: none yet).
    pub fn epoch(&self) -> u64 {
        match self {
            Self::Leader { epoch } | Self::Standby { epoch, .. } => *epoch,
        }
    }
}

/// The settings: `--advertise` and `[ha]` in the config.
#[derive(Clone, Debug)]
pub struct HaSettings {
    /// Where clients reach this engine; default: its TCP address.
    pub advertise: Option<String>,
    /// How long a lead lasts unless renewed (every third of it).
    pub leader_ttl: Duration,
}

impl HaSettings {
    /// Says what is wrong, if anything, in words a person can act on.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.leader_ttl >= MIN_LEADER_TTL,
            "leader_ttl ({}) must be at least {}: the lead is renewed every third of it",
            humantime::format_duration(self.leader_ttl),
            humantime::format_duration(MIN_LEADER_TTL)
        );
        Ok(())
    }
}

/// The shortest lead TTL taken: renewals a third of it apart must fit a
/// database round trip with room to spare.
pub const MIN_LEADER_TTL: Duration = Duration::from_millis(300);

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            advertise: None,
            leader_ttl: DEFAULT_LEADER_TTL,
        }
    }
}

/// How this engine takes part in the election.
#[derive(Clone, Debug)]
pub struct HaOptions {
    /// Where clients reach this engine (`--advertise`).
    pub advertise: String,
    /// Its name in the `leader` row: the advertised address and the host,
    /// so that engines on two hosts that advertise the same address (two
    /// Unix sockets at one path, say) cannot renew each other's lead, while
    /// an engine restarted in place takes its own back at once.
    pub holder: String,
    pub leader_ttl: Duration,
}

/// How often a standby tries to take the lead: often enough that a lapsed
/// lead is taken soon after it lapses, whatever the TTL.
fn campaign_interval(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Stands by until this engine leads, keeping `role` up to date with who
/// does. `None` once `shutdown` is cancelled first.
pub async fn campaign(
    store: &Arc<dyn Store>,
    ha: &HaOptions,
    role: &watch::Sender<Role>,
    shutdown: &CancellationToken,
) -> Option<u64> {
    let mut last_seen = None;
    loop {
        match store
            .lead(&ha.holder, &ha.advertise, ha.leader_ttl, None)
            .await
        {
            Ok(Leadership::Leader { epoch }) => return Some(epoch),
            Ok(Leadership::Follower { epoch, address }) => {
                if last_seen.as_ref() != Some(&(epoch, address.clone())) {
                    tracing::info!(epoch, leader = ?address, "standing by");
                    last_seen = Some((epoch, address.clone()));
                }
                role.send_replace(Role::Standby {
                    leader: address,
                    epoch,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the database to take the lead; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(campaign_interval(ha.leader_ttl)) => {}
        }
    }
}

/// Renews the lead held with `epoch` until `shutdown` (`Ok`) or until it
/// is lost (`Err`, saying why): another engine took it, or no renewal got
/// through within one TTL.
pub async fn hold(
    store: &Arc<dyn Store>,
    ha: &HaOptions,
    epoch: u64,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let ttl = ha.leader_ttl;
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        let sent = Instant::now();
        let since = sent.duration_since(renewed);
        if since >= ttl {
            // No renewal within the TTL: this process stalled (a paused VM,
            // SIGSTOP, a swap storm) or the database did not answer. The
            // lead is still this engine's if no other took it meanwhile —
            // always so on a store only one engine can use — so ask once
            // before giving it up.
            let asked = tokio::time::timeout(
                (ttl / 3).max(Duration::from_secs(1)),
                store.lead(&ha.holder, &ha.advertise, ttl, Some(epoch)),
            )
            .await;
            if let Ok(Ok(Leadership::Leader { .. })) = asked {
                tracing::warn!(
                    epoch,
                    unrenewed_for = %humantime::format_duration(since),
                    "the lead went unrenewed past its TTL, but no other engine took it: still leading"
                );
                renewed = sent;
                continue;
            }
            return Err(format!(
                "the lead (epoch {epoch}) was not renewed within its TTL of {}",
                humantime::format_duration(ttl)
            ));
        }
        let left = ttl - since;
        match tokio::time::timeout(
            left,
            store.lead(&ha.holder, &ha.advertise, ttl, Some(epoch)),
        )
        .await
        {
            Ok(Ok(Leadership::Leader { .. })) => renewed = sent,
            Ok(Ok(Leadership::Follower {
                epoch: now,
                address,
            })) => {
                return Err(format!(
                    "another engine ({}) took the lead with epoch {now}",
                    address.as_deref().unwrap_or("address unknown")
                ));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, epoch, "renewing the lead failed; retrying"),
            Err(_) => tracing::warn!(epoch, "renewing the lead timed out"),
        }
    }
}

/// Keeps the gRPC health service in step with the role: SERVING for the
/// leader, NOT_SERVING for a standby.
pub async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    mut role: watch::Receiver<Role>,
) {
    loop {
        let status = if role.borrow_and_update().is_leader() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status("opsdeck.v1.Runs", status).await;
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// The answer a standby gives to every call but health and reflection.
pub fn standby_status(role: &Role) -> tonic::Status {
    let (leader, message) = match role {
        Role::Standby {
            leader: Some(addr), ..
        } => (
            Some(addr.clone()),
            format!("this engine is a standby; the leader is at {addr}"),
        ),
        _ => (
            None,
            "this engine is a standby and no engine leads at the moment; retry shortly".to_owned(),
        ),
    };
    let mut status = tonic::Status::unavailable(message);
    if let Some(value) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_METADATA, value);
    }
    status
}

/// A tower layer that lets only health and reflection through while the
/// engine stands by, and tells every caller where the leader is.
#[derive(Clone)]
pub struct StandbyGate {
    role: watch::Receiver<Role>,
}

impl StandbyGate {
    pub fn new(role: watch::Receiver<Role>) -> Self {
        Self { role }
    }
}

impl<S> tower::Layer<S> for StandbyGate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            role: self.role.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    role: watch::Receiver<Role>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let role = self.role.borrow().clone();
        if role.is_leader() {
            return Box::pin(self.inner.call(req));
        }
        let path = req.uri().path();
        if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
            let leader = match &role {
                Role::Standby {
                    leader: Some(addr), ..
                } => http::HeaderValue::from_str(addr).ok(),
                _ => None,
            };
            let answer = self.inner.call(req);
            return Box::pin(async move {
                let mut response = answer.await?;
                if let Some(addr) = leader {
                    response.headers_mut().insert(LEADER_METADATA, addr);
                }
                Ok(response)
            });
        }
        let response = standby_status(&role).into_http();
        Box::pin(async move { Ok(response) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_names_the_leader_in_words_and_in_metadata() {
        let status = standby_status(&Role::Standby {
            leader: Some("http://10.0.0.2:7465".into()),
            epoch: 3,
        });
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("http://10.0.0.2:7465"));
        assert_eq!(
            status
                .metadata()
                .get(LEADER_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("http://10.0.0.2:7465")
        );
        let none = standby_status(&Role::Standby {
            leader: None,
            epoch: 0,
        });
        assert!(none.metadata().get(LEADER_METADATA).is_none());
    }

    #[test]
    fn a_lead_too_short_to_renew_is_refused_naming_the_setting() {
        let short = HaSettings {
            advertise: None,
            leader_ttl: Duration::from_millis(100),
        };
        let err = short.check().unwrap_err().to_string();
        assert!(err.contains("leader_ttl (100ms)"), "{err}");
        assert!(HaSettings::default().check().is_ok());
    }

    #[test]
    fn a_standby_tries_often_whatever_the_ttl() {
        assert_eq!(
            campaign_interval(Duration::from_secs(10)),
            Duration::from_millis(500)
        );
        assert_eq!(
            campaign_interval(Duration::from_millis(600)),
            Duration::from_millis(200)
        );
    }
}
