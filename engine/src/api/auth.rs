//! Who is calling. On the Unix socket the kernel says (the peer's uid); on
//! TCP a bearer token from the config does. A caller with neither is
//! refused before any service sees the request.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};
use tonic::{Request, Status};

use crate::domain::Actor;

/// The identified caller, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller(pub Actor);

/// Known tokens, by the hex SHA-256 of the token.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<HashMap<String, String>>,
}

impl Auth {
    /// `tokens`: (identity, hex sha256 of the token).
    pub fn new(tokens: impl IntoIterator<Item = (String, String)>) -> Self {
        let map = tokens
            .into_iter()
            .map(|(identity, hash)| (hash.to_ascii_lowercase(), identity))
            .collect();
        Self {
            tokens: Arc::new(map),
        }
    }

    fn identify(&self, req: &Request<()>) -> Result<Actor, Status> {
        if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
            let Some(cred) = info.peer_cred else {
                return Err(Status::unauthenticated(
                    "the kernel gave no peer credentials for this socket connection",
                ));
            };
            return Ok(Actor {
                name: user_name(cred.uid()),
                transport: "unix",
            });
        }
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = bearer else {
            let via = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
                .map(|a| format!(" from {a}"))
                .unwrap_or_default();
            return Err(Status::unauthenticated(format!(
                "no identity{via}: send `authorization: Bearer <token>` with a token from the engine's config \
                 (opsdeck --token / OPSDECK_TOKEN), or connect through the engine's Unix socket"
            )));
        };
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        match self.tokens.get(&hash) {
            Some(identity) => Ok(Actor {
                name: identity.clone(),
                transport: "tcp",
            }),
            None => Err(Status::unauthenticated(
                "the bearer token is not known to this engine; check the token, or the [[token]] entries of the engine's config",
            )),
        }
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let actor = self.identify(&req)?;
        req.extensions_mut().insert(Caller(actor));
        Ok(req)
    }
}

/// The caller of a request that went through [`Auth`].
pub fn caller<T>(req: &Request<T>) -> Result<Actor, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no identity on this request"))
}

/// The user name of a uid, or `uid:N` when it has none.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid:{uid}"),
    }
}

/// The hex SHA-256 of a token, as the config stores it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
