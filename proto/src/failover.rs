//! Several engines sharing one database, only one of which leads: finding
//! the leader among a list of addresses (`--engine a,b,c`).
//!
//! The leader answers the gRPC health check SERVING; a standby answers
//! NOT_SERVING and puts the leader's address in the [`LEADER_METADATA`]
//! entry of every response, and answers every other call UNAVAILABLE with
//! the same entry. [`EngineList::connect_leader`] tries the addresses in
//! order, going straight to a leader a standby names.

use std::{collections::VecDeque, fmt, str::FromStr, time::Duration};

use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::endpoint::{AddrError, EngineAddr};

/// The response metadata entry in which a standby names the leader's
/// address (as its `--advertise` gives it).
pub const LEADER_METADATA: &str = "opsdeck-leader";

/// How long probing one address may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One engine, or several sharing a database (tried in order), as given
/// to `--engine`: comma-separated addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineList(Vec<EngineAddr>);

impl EngineList {
    /// The addresses, in the order given (never empty).
    pub fn addrs(&self) -> &[EngineAddr] {
        &self.0
    }

    /// The list with `leader` (as a standby named it) tried first.
    pub fn led_by(&self, leader: EngineAddr) -> Self {
        let mut addrs = vec![leader];
        for a in &self.0 {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        Self(addrs)
    }

    /// The first address given.
    pub fn first(&self) -> &EngineAddr {
        // The list is never empty: FromStr and From<EngineAddr> see to it.
        &self.0[0]
    }

    /// Connects to the engine that leads. A single address is connected to
    /// as it is, without a probe: a standby then answers each call
    /// UNAVAILABLE naming the leader.
    pub async fn connect_leader(
        &self,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<(EngineAddr, Channel), NoLeader> {
        if let [only] = self.0.as_slice() {
            return match only.connect_with(tls).await {
                Ok(channel) => Ok((only.clone(), channel)),
                Err(e) => Err(NoLeader {
                    tried: vec![(only.clone(), transport_error(&e))],
                }),
            };
        }
        let mut queue: VecDeque<EngineAddr> = self.0.iter().cloned().collect();
        let mut tried: Vec<(EngineAddr, String)> = Vec::new();
        while let Some(addr) = queue.pop_front() {
            if tried.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            match tokio::time::timeout(PROBE_TIMEOUT, probe(&addr, tls)).await {
                Ok(Probe::Leader(channel)) => return Ok((addr, channel)),
                Ok(Probe::Standby(leader)) => {
                    let said = match &leader {
                        Some(l) => format!("a standby; it names {l} as the leader"),
                        None => "a standby; no engine leads at the moment".to_owned(),
                    };
                    tried.push((addr, said));
                    if let Some(l) = leader {
                        queue.push_front(l);
                    }
                }
                Ok(Probe::Failed(why)) => tried.push((addr, why)),
                Err(_) => tried.push((
                    addr,
                    format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
                )),
            }
        }
        Err(NoLeader { tried })
    }
}

/// No address led to a leader: what each one said.
#[derive(Debug, thiserror::Error)]
pub struct NoLeader {
    pub tried: Vec<(EngineAddr, String)>,
}

impl fmt::Display for NoLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(addr, why)] = self.tried.as_slice() {
            return write!(f, "cannot reach the engine at {addr}: {why}");
        }
        f.write_str("no engine leads among those given: ")?;
        for (i, (addr, why)) in self.tried.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{addr} is {why}")?;
        }
        Ok(())
    }
}

enum Probe {
    Leader(Channel),
    Standby(Option<EngineAddr>),
    Failed(String),
}

async fn probe(addr: &EngineAddr, tls: Option<&ClientTlsConfig>) -> Probe {
    let channel = match addr.connect_with(tls).await {
        Ok(c) => c,
        Err(e) => return Probe::Failed(format!("unreachable ({})", transport_error(&e))),
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    match health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(answer) => {
            let leader = hint(answer.metadata(), addr);
            if answer.get_ref().status == ServingStatus::Serving as i32 {
                Probe::Leader(channel)
            } else {
                Probe::Standby(leader)
            }
        }
        Err(status) => Probe::Failed(format!(
            "not answering its health check ({:?}: {})",
            status.code(),
            status.message()
        )),
    }
}

/// The leader a standby at `asked` named in its answer, if it did and the
/// address is one to follow from there.
pub fn leader_hint(status: &tonic::Status, asked: &EngineAddr) -> Option<EngineAddr> {
    hint(status.metadata(), asked)
}

/// A leader address from a standby's metadata, kept only when it speaks as
/// securely as the address asked: never from `https://` down to `http://`
/// (the next call would carry the bearer token in clear), and never to a
/// Unix socket, which names a path on the standby's host, not ours.
fn hint(metadata: &tonic::metadata::MetadataMap, asked: &EngineAddr) -> Option<EngineAddr> {
    let named: EngineAddr = metadata.get(LEADER_METADATA)?.to_str().ok()?.parse().ok()?;
    match (&named, asked) {
        (EngineAddr::Tcp(to), EngineAddr::Tcp(from)) if is_tls(to) == is_tls(from) => Some(named),
        // A local socket asked: a TCP leader is as good as the scheme says.
        (EngineAddr::Tcp(_), EngineAddr::Unix(_)) => Some(named),
        _ => None,
    }
}

fn is_tls(addr: &str) -> bool {
    addr.starts_with("https://")
}

/// A transport error with its causes, which tonic keeps apart.
fn transport_error(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = cause_of(source);
    }
    text
}

fn cause_of<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(std::error::Error::source)
}

impl FromStr for EngineList {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addrs = s
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(EngineAddr::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            // Nothing but commas and spaces: refused as a single address is.
            return EngineAddr::from_str(&s.replace(',', "")).map(|a| Self(vec![a]));
        }
        Ok(Self(addrs))
    }
}

impl fmt::Display for EngineList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

impl From<EngineAddr> for EngineList {
    fn from(addr: EngineAddr) -> Self {
        Self(vec![addr])
    }
}

/// A list of one address equals that address.
impl PartialEq<EngineAddr> for EngineList {
    fn eq(&self, other: &EngineAddr) -> bool {
        matches!(self.0.as_slice(), [only] if only == other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_hint_is_followed_only_as_securely_as_the_address_asked() {
        let said = |leader: &str| {
            let mut status = tonic::Status::unavailable("a standby");
            status
                .metadata_mut()
                .insert(LEADER_METADATA, leader.parse().unwrap());
            status
        };
        let plain: EngineAddr = "http://b:7465".parse().unwrap();
        let tls: EngineAddr = "https://b:7465".parse().unwrap();
        let local: EngineAddr = "unix:///run/opsdeck/engine.sock".parse().unwrap();
        let to = |s: &str| Some(s.parse::<EngineAddr>().unwrap());
        assert_eq!(
            leader_hint(&said("http://a:7465"), &plain),
            to("http://a:7465")
        );
        assert_eq!(
            leader_hint(&said("https://a:7465"), &tls),
            to("https://a:7465")
        );
        assert_eq!(
            leader_hint(&said("http://a:7465"), &tls),
            None,
            "never down to clear text"
        );
        assert_eq!(leader_hint(&said("https://a:7465"), &plain), None);
        assert_eq!(
            leader_hint(&said("unix:///x.sock"), &plain),
            None,
            "a path on their host"
        );
        assert_eq!(
            leader_hint(&said("http://a:7465"), &local),
            to("http://a:7465")
        );
        assert_eq!(
            leader_hint(&tonic::Status::unavailable("no hint"), &plain),
            None
        );
    }

    #[test]
    fn a_list_is_comma_separated_addresses_in_order() {
        let list: EngineList = "10.0.0.1:7465, http://10.0.0.2:7465,unix:///run/e.sock"
            .parse()
            .unwrap();
        assert_eq!(
            list.addrs(),
            [
                EngineAddr::Tcp("http://10.0.0.1:7465".into()),
                EngineAddr::Tcp("http://10.0.0.2:7465".into()),
                EngineAddr::Unix("/run/e.sock".into()),
            ]
        );
        assert_eq!(
            list.to_string(),
            "http://10.0.0.1:7465,http://10.0.0.2:7465,unix:///run/e.sock"
        );
        let one: EngineList = "127.0.0.1:7465".parse().unwrap();
        assert_eq!(one, EngineAddr::Tcp("http://127.0.0.1:7465".into()));
        assert!("".parse::<EngineList>().is_err());
        assert!(",".parse::<EngineList>().is_err());
        assert!("a:1,ftp://x".parse::<EngineList>().is_err());
    }

    #[test]
    fn no_leader_says_what_each_address_said() {
        let err = NoLeader {
            tried: vec![
                (
                    EngineAddr::Tcp("http://a:1".into()),
                    "a standby; no engine leads at the moment".into(),
                ),
                (EngineAddr::Tcp("http://b:1".into()), "unreachable".into()),
            ],
        };
        assert_eq!(
            err.to_string(),
            "no engine leads among those given: http://a:1 is a standby; no engine leads at the moment; http://b:1 is unreachable"
        );
    }
}
