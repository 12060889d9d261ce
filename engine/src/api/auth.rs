//! Who is calling, and whether they may make this call.
//!
//! Identity: on the Unix socket the kernel says (the peer's uid and gid,
//! `SO_PEERCRED`), and the user database gives its name and groups; on TCP
//! a bearer token listed in the config by its SHA-256 does, or, with mutual
//! TLS and no token, the verified client certificate whose subject Common
//! Name a `[[tls.client]]` entry names. Roles: the token's or the entry's
//! `roles`; for socket callers, the `[unix]` section of the config.
//!
//! [`Guard`] is a layer over the whole router: every request is identified
//! and checked against the table in [`opsdeck_proto::access`] before any service
//! sees it. No identity is UNAUTHENTICATED; a role missing is
//! PERMISSION_DENIED naming the role needed and the roles held.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::{Request, Status};

use super::limit::{ConnInfo, Subscribers, conn_state};
use crate::config::{TlsClient, TokenEntry, UnixSection};
use crate::domain::scope::AgentScope;
use crate::domain::{Actor, Grants, Role};
use opsdeck_proto::access::{self as roles, Need};

/// How long what the user database said about a socket user is kept:
/// changes to its groups take effect within this.
const UNIX_CACHE_TTL: Duration = Duration::from_secs(30);

/// The identified caller, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    pub grants: Grants,
    /// For the agent role: the worker ids and queues it may serve.
    pub agent: AgentScope,
}

/// Known tokens and the roles of socket users.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// By the lowercase hex SHA-256 of the token.
    tokens: HashMap<String, Caller>,
    /// Client certificates by their subject Common Name.
    certificates: HashMap<String, Caller>,
    unix: UnixSection,
    /// The engine's own uid: it and root are admin (and agent, for the
    /// local workers) unless the config names them.
    own_uid: u32,
    /// Socket callers by (uid, gid), with when they were looked up.
    unix_cache: Mutex<HashMap<(u32, u32), (Instant, Caller)>>,
}

impl Auth {
    pub fn new(tokens: &[TokenEntry], certificates: &[TlsClient], unix: UnixSection) -> Self {
        let tokens = tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    actor: Actor {
                        name: t.identity.clone(),
                        transport: "tcp",
                    },
                    grants: Grants::new(t.roles.iter().copied(), t.groups.iter().cloned()),
                    agent: AgentScope {
                        workers: t.workers.clone(),
                        queues: t.queues.clone(),
                        unbounded: false,
                    },
                };
                (t.sha256.to_ascii_lowercase(), caller)
            })
            .collect();
        let certificates = certificates
            .iter()
            .map(|c| {
                let caller = Caller {
                    actor: Actor {
                        name: c.name.clone(),
                        transport: "tls",
                    },
                    grants: Grants::new(c.roles.iter().copied(), c.groups.iter().cloned()),
                    agent: AgentScope {
                        workers: c.workers.clone(),
                        queues: c.queues.clone(),
                        unbounded: false,
                    },
                };
                (c.name.clone(), caller)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                tokens,
                certificates,
                unix,
                own_uid: nix::unistd::geteuid().as_raw(),
                unix_cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The layer that guards every request with this, and holds streaming
    /// subscriptions to `subscribers`.
    pub fn guard(&self, subscribers: Subscribers) -> Guard {
        Guard {
            auth: self.clone(),
            subscribers,
        }
    }

    /// The caller of a request, if it may call `path`; `Ok(None)` for an
    /// open method.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Option<Caller>, Status> {
        let method = path.trim_start_matches('/');
        let Some(need) = roles::need(path) else {
            // Not in the table: nothing here serves it (a newer client, a
            // typo), which is what UNIMPLEMENTED says, whoever asks.
            return Err(Status::unimplemented(format!(
                "{method} is not a method this engine serves; is the client newer than the engine?"
            )));
        };
        if need == Need::Open {
            return Ok(None);
        }
        let caller = self.identify(headers, extensions)?;
        match need {
            Need::Open | Need::Identity => Ok(Some(caller)),
            Need::Role(role) if caller.grants.has(role) => Ok(Some(caller)),
            Need::Role(role) => {
                tracing::info!(
                    identity = %caller.actor.name,
                    transport = caller.actor.transport,
                    method,
                    "call refused: the {role} role is needed"
                );
                Err(Status::permission_denied(refusal(method, role, &caller)))
            }
        }
    }

    fn identify(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, Status> {
        if let Some(info) = extensions
            .get::<ConnInfo<UdsConnectInfo>>()
            .map(|i| &i.inner)
        {
            let Some(cred) = info.peer_cred else {
                return Err(Status::unauthenticated(
                    "the kernel gave no peer credentials for this socket connection",
                ));
            };
            // The engine's own local workers, in this very process: the
            // worker protocol, whatever the config says of the engine's user
            // (which an admin may demote, so that the steps those workers
            // run as that user cannot act as it).
            if cred
                .pid()
                .is_some_and(|pid| u32::try_from(pid) == Ok(std::process::id()))
            {
                let mut caller = self.unix_caller(cred.uid(), cred.gid());
                caller.grants = Grants::new(vec![Role::Agent], Vec::new());
                caller.agent = AgentScope::unbounded();
                return Ok(caller);
            }
            // A step of those workers (or what it started) runs as the
            // engine's user but must not act as it.
            if conn_state(extensions).is_some_and(|c| c.local_step) {
                return Err(Status::permission_denied(
                    "this connection comes from a step of the engine's own local workers, which gets no \
                     role on the engine's socket whatever its user; give the step a token of its own \
                     (as a secret) and connect over TCP",
                ));
            }
            return Ok(self.unix_caller(cred.uid(), cred.gid()));
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let tls = extensions.get::<TlsConnectInfo<ConnInfo<TcpConnectInfo>>>();
        let Some(token) = bearer else {
            // rustls hands over client certificates only once they chained
            // to `[tls] client_ca`, and tonic passes on only those.
            if let Some(certs) = tls.and_then(|i| i.peer_certs())
                && let Some(leaf) = certs.first()
            {
                return self.certificate_caller(leaf.as_ref());
            }
            let via = extensions
                .get::<ConnInfo<TcpConnectInfo>>()
                .or(tls.map(|i| i.get_ref()))
                .map(|i| &i.inner)
                .and_then(|i| i.remote_addr())
                .map(|a| format!(" from {a}"))
                .unwrap_or_default();
            return Err(Status::unauthenticated(format!(
                "no identity{via}: send `authorization: Bearer <token>` with a token from the engine's config \
                 (opsdeck --token / OPSDECK_TOKEN), or connect through the engine's Unix socket"
            )));
        };
        match self.inner.tokens.get(&token_hash(token)) {
            // Over TLS the event log says so.
            Some(caller) if tls.is_some() => {
                let mut caller = caller.clone();
                caller.actor.transport = "tls";
                Ok(caller)
            }
            Some(caller) => Ok(caller.clone()),
            None => Err(Status::unauthenticated(
                "the bearer token is not known to this engine; check the token, or the [[token]] entries of the engine's config",
            )),
        }
    }

    /// The caller a verified client certificate names: the
    /// `[[tls.client]]` entry of its subject Common Name.
    fn certificate_caller(&self, leaf: &[u8]) -> Result<Caller, Status> {
        let name = certificate_name(leaf).map_err(Status::unauthenticated)?;
        match self.inner.certificates.get(&name) {
            Some(caller) => Ok(caller.clone()),
            None => {
                tracing::info!(
                    certificate = %name,
                    "call refused: no [[tls.client]] entry names the client certificate"
                );
                Err(Status::unauthenticated(format!(
                    "the client certificate {name:?} (its subject Common Name) is not named by any \
                     [[tls.client]] entry of the engine's config; add one with its roles, or send \
                     `authorization: Bearer <token>`"
                )))
            }
        }
    }

    /// A socket caller by its uid and gid, looked up at most every
    /// [`UNIX_CACHE_TTL`].
    fn unix_caller(&self, uid: u32, gid: u32) -> Caller {
        let now = Instant::now();
        let cache = || {
            self.inner
                .unix_cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if let Some((at, caller)) = cache().get(&(uid, gid))
            && now.duration_since(*at) < UNIX_CACHE_TTL
        {
            return caller.clone();
        }
        // Looked up without the lock held: the user database may be a
        // directory service, and one slow answer must not hold up every
        // other socket caller.
        let caller = self.look_up_unix(uid, gid);
        let mut cache = cache();
        cache.retain(|_, (at, _)| now.duration_since(*at) < UNIX_CACHE_TTL);
        cache.insert((uid, gid), (now, caller.clone()));
        caller
    }

    fn look_up_unix(&self, uid: u32, gid: u32) -> Caller {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let name = user
            .as_ref()
            .map_or_else(|| format!("uid:{uid}"), |u| u.name.clone());
        let groups = unix_groups(user.as_ref(), gid);
        let privileged = uid == self.inner.own_uid || uid == 0;
        let roles = unix_roles(&self.inner.unix, &name, &groups, privileged);
        let agent = unix_agent_scope(&self.inner.unix, &name, &groups, privileged);
        Caller {
            actor: Actor {
                name,
                transport: "unix",
            },
            grants: Grants::new(roles, groups),
            agent,
        }
    }
}

/// The roles of a socket user named `name` in `groups`. `privileged`: the
/// engine's own user or root, admin and agent unless a `[[unix.user]]`
/// entry names it.
fn unix_roles(unix: &UnixSection, name: &str, groups: &[String], privileged: bool) -> Vec<Role> {
    let mut roles = Vec::new();
    let named = unix.user.iter().filter(|e| e.name == name);
    let mut matched = false;
    for entry in named {
        matched = true;
        roles.extend(entry.roles.iter().copied());
    }
    if !matched && privileged {
        matched = true;
        roles.extend([Role::Admin, Role::Agent]);
    }
    for entry in unix.group.iter().filter(|e| groups.contains(&e.name)) {
        matched = true;
        roles.extend(entry.roles.iter().copied());
    }
    if !matched {
        roles.extend(unix.others.iter().copied());
    }
    roles
}

/// What a socket user holding the agent role may serve: the union of the
/// scopes of the entries that give it the role (one that bounds nothing
/// leaves that bound off); the engine's own user and root, unnamed, are
/// unbounded.
fn unix_agent_scope(
    unix: &UnixSection,
    name: &str,
    groups: &[String],
    privileged: bool,
) -> AgentScope {
    let users: Vec<&crate::config::UnixRoles> =
        unix.user.iter().filter(|e| e.name == name).collect();
    if users.is_empty() && privileged {
        return AgentScope::unbounded();
    }
    let granting = users
        .into_iter()
        .chain(unix.group.iter().filter(|e| groups.contains(&e.name)))
        .filter(|e| e.roles.contains(&Role::Agent));
    let mut scope: Option<AgentScope> = None;
    for entry in granting {
        scope = Some(match scope {
            None => AgentScope {
                workers: entry.workers.clone(),
                queues: entry.queues.clone(),
                unbounded: false,
            },
            Some(s) => AgentScope {
                workers: union(s.workers, entry.workers.as_ref()),
                queues: union(s.queues, entry.queues.as_ref()),
                unbounded: false,
            },
        });
    }
    scope.unwrap_or_default()
}

/// Either list's names; no bound if either has none.
fn union(
    a: Option<crate::domain::scope::Patterns>,
    b: Option<&crate::domain::scope::Patterns>,
) -> Option<crate::domain::scope::Patterns> {
    a.zip(b).map(|(a, b)| a.union(b))
}

/// The subject Common Name of a DER certificate, or why it has none to go
/// by.
fn certificate_name(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let mut names = cert.subject().iter_common_name();
    let (Some(first), None) = (names.next(), names.next()) else {
        return Err(format!(
            "the client certificate ({}) must have exactly one subject Common Name (CN) to be \
             named by a [[tls.client]] entry; issue it with one CN, or send \
             `authorization: Bearer <token>`",
            cert.subject()
        ));
    };
    first.as_str().map(str::to_owned).map_err(|e| {
        format!(
            "the Common Name of the client certificate ({}) is not text ({e}); issue it with a \
             UTF-8 CN, or send `authorization: Bearer <token>`",
            cert.subject()
        )
    })
}

/// The names of the peer's gid and of every group the user database puts
/// the user in.
fn unix_groups(user: Option<&nix::unistd::User>, gid: u32) -> Vec<String> {
    use nix::unistd::{Gid, Group};
    let mut gids = vec![Gid::from_raw(gid)];
    if let Some(user) = user
        && let Ok(name) = std::ffi::CString::new(user.name.clone())
        && let Ok(more) = nix::unistd::getgrouplist(&name, user.gid)
    {
        gids.extend(more);
    }
    gids.sort_by_key(|g| g.as_raw());
    gids.dedup();
    gids.into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten().map(|g| g.name))
        .collect()
}

/// "opsdeck.v1.Runs/SubmitRun needs the operator role; alice (tcp) has viewer".
fn refusal(method: &str, role: Role, caller: &Caller) -> String {
    let also = match role {
        Role::Viewer | Role::Operator | Role::Approver => " (admin includes it)",
        Role::Admin | Role::Agent => "",
    };
    let how = match (role, caller.actor.transport) {
        (Role::Agent, _) => {
            "; workers connect with a token holding the agent role (`opsdeckd token new --role agent`), \
             or a client certificate whose [[tls.client]] entry holds it"
        }
        (_, "unix") => "; socket users get roles from the [unix] section of the engine's config",
        (_, "tls") => {
            "; a token gets roles from the `roles` of its [[token]] entry, a client certificate \
             from those of its [[tls.client]] entry, in the engine's config"
        }
        _ => "; a token gets roles from the `roles` of its [[token]] entry in the engine's config",
    };
    format!(
        "{method} needs the {role} role{also}; {} ({}) has {}{how}",
        caller.actor.name,
        caller.actor.transport,
        caller.grants.describe_roles()
    )
}

/// The caller of a request that went through [`Guard`].
pub fn caller<T>(req: &Request<T>) -> Result<Actor, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.actor.clone())
        .ok_or_else(|| Status::unauthenticated("no identity on this request"))
}

/// What the caller of a request that went through [`Guard`] holds.
pub fn grants<T>(req: &Request<T>) -> Result<Grants, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.grants.clone())
        .ok_or_else(|| Status::unauthenticated("no identity on this request"))
}

/// What the caller of a request that went through [`Guard`] may serve as
/// an agent.
pub fn agent_scope<T>(req: &Request<T>) -> Result<AgentScope, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.agent.clone())
        .ok_or_else(|| Status::unauthenticated("no identity on this request"))
}

/// The hex SHA-256 of a token, as the config stores it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Identifies and authorizes every request before the router sees it;
/// bounds streaming subscriptions.
#[derive(Clone)]
pub struct Guard {
    auth: Auth,
    subscribers: Subscribers,
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            auth: self.auth.clone(),
            subscribers: self.subscribers.clone(),
        }
    }
}

/// A service behind [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Auth,
    subscribers: Subscribers,
}

type GuardedFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = GuardedFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let caller = match self.auth.admit(path, req.headers(), req.extensions()) {
            Ok(caller) => caller,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        // A subscription holds its place until its stream ends.
        let place = if Subscribers::bounds(path) {
            let who = caller
                .as_ref()
                .map_or("anyone without an identity", |c| c.actor.name.as_str());
            match self.subscribers.take(who) {
                Ok(place) => Some(place),
                Err(why) => {
                    let status = Status::resource_exhausted(why);
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        } else {
            None
        };
        if let Some(caller) = caller {
            if let Some(conn) = conn_state(req.extensions()) {
                conn.authenticated();
            }
            req.extensions_mut().insert(caller);
        }
        let answer = self.inner.call(req);
        match place {
            None => Box::pin(answer),
            Some(place) => Box::pin(async move {
                let response = answer.await?;
                Ok(response.map(|body| place.hold(body)))
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::UnixRoles;

    fn auth() -> Auth {
        let token = |identity: &str, token: &str, roles: &[Role]| TokenEntry {
            identity: identity.into(),
            sha256: token_hash(token).to_ascii_uppercase(),
            roles: roles.to_vec(),
            groups: vec!["dba".into()],
            workers: None,
            queues: None,
        };
        Auth::new(
            &[
                token("ci", "t-op", &[Role::Operator]),
                token("w1", "t-agent", &[Role::Agent]),
            ],
            &[],
            UnixSection::default(),
        )
    }

    fn call(auth: &Auth, path: &str, token: Option<&str>) -> Result<Option<Caller>, Status> {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = token {
            headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        auth.admit(path, &headers, &http::Extensions::new())
    }

    #[test]
    fn a_token_gets_its_roles_and_groups_and_is_refused_what_they_lack() {
        let a = auth();
        let ok = call(&a, "/opsdeck.v1.Runs/SubmitRun", Some("t-op"))
            .unwrap()
            .unwrap();
        assert_eq!(ok.actor.name, "ci");
        assert!(ok.grants.has(Role::Viewer) && ok.grants.in_group("dba"));
        let no = call(&a, "/opsdeck.v1.Leases/ForceRelease", Some("t-op")).unwrap_err();
        assert_eq!(no.code(), tonic::Code::PermissionDenied);
        assert!(
            no.message().contains("needs the admin role")
                && no.message().contains("ci (tcp) has viewer, operator"),
            "{}",
            no.message()
        );
        let agent = call(&a, "/opsdeck.v1.Agent/Session", Some("t-op")).unwrap_err();
        assert!(
            agent.message().contains("agent role"),
            "{}",
            agent.message()
        );
        let runs = call(&a, "/opsdeck.v1.Runs/ListRuns", Some("t-agent")).unwrap_err();
        assert_eq!(runs.code(), tonic::Code::PermissionDenied);
        assert!(call(&a, "/opsdeck.v1.Agent/Session", Some("t-agent")).is_ok());
        assert!(call(&a, "/opsdeck.v1.Console/Whoami", Some("t-agent")).is_ok());
    }

    #[test]
    fn no_identity_is_unauthenticated_except_for_health_and_reflection() {
        let a = auth();
        let none = call(&a, "/opsdeck.v1.Runs/ListRuns", None).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let wrong = call(&a, "/opsdeck.v1.Runs/ListRuns", Some("nope")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(
            call(&a, "/grpc.health.v1.Health/Check", None)
                .unwrap()
                .is_none()
        );
        for who in [Some("t-op"), None] {
            let unlisted = call(&a, "/opsdeck.v1.Runs/Nuke", who).unwrap_err();
            assert_eq!(unlisted.code(), tonic::Code::Unimplemented, "{unlisted:?}");
        }
    }

    /// A DER certificate with this subject Common Name, or none,
    /// self-signed: `certificate_caller` is given only certificates rustls
    /// verified.
    fn cert(common_name: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for cn in common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_client_certificate_is_the_identity_its_tls_client_entry_names() {
        let entry = TlsClient {
            name: "worker-7".into(),
            roles: vec![Role::Agent],
            groups: vec!["build".into()],
            workers: None,
            queues: None,
        };
        let a = Auth::new(&[], &[entry], UnixSection::default());
        let caller = a.certificate_caller(&cert(&["worker-7"])).unwrap();
        assert_eq!(
            (caller.actor.name.as_str(), caller.actor.transport),
            ("worker-7", "tls")
        );
        assert!(caller.grants.has(Role::Agent) && !caller.grants.has(Role::Viewer));
        assert!(caller.grants.in_group("build"));

        let unknown = a.certificate_caller(&cert(&["worker-8"])).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(
            unknown.message().contains("\"worker-8\"")
                && unknown.message().contains("[[tls.client]]"),
            "{}",
            unknown.message()
        );
        let none = a.certificate_caller(&cert(&[])).unwrap_err();
        assert!(
            none.message().contains("exactly one subject Common Name"),
            "{}",
            none.message()
        );
        let garbage = a.certificate_caller(b"not a certificate").unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn socket_users_get_roles_by_name_and_group_and_privileged_ones_admin() {
        let entry = |name: &str, roles: &[Role]| UnixRoles {
            name: name.into(),
            roles: roles.to_vec(),
            workers: None,
            queues: None,
        };
        let unix = UnixSection {
            others: vec![Role::Viewer],
            user: vec![entry("alice", &[Role::Approver])],
            group: vec![entry("sre", &[Role::Operator])],
        };
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            unix_roles(&unix, "bob", &groups(&["users"]), false),
            [Role::Viewer]
        );
        assert_eq!(
            unix_roles(&unix, "alice", &groups(&["sre"]), false),
            [Role::Approver, Role::Operator]
        );
        assert_eq!(
            unix_roles(&unix, "carol", &groups(&["sre"]), false),
            [Role::Operator]
        );
        assert_eq!(
            unix_roles(&unix, "opsdeck", &groups(&["sre"]), true),
            [Role::Admin, Role::Agent, Role::Operator]
        );
        assert_eq!(unix_roles(&unix, "alice", &[], true), [Role::Approver]);
    }
}
