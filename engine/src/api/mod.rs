//! The gRPC API: one file per service, the guard that identifies callers
//! and checks their roles (`auth`, with the table of what each method needs
//! in `opsdeck_proto::access`), and the server that puts them on the TCP and Unix listeners.
//!
//! `grpc.health.v1` and server reflection (v1 and v1alpha) are served
//! without a token so that stock tools (grpcurl, grpc_health_probe) work.

mod agent;
pub mod auth;
mod bulk;
mod events;
mod ids;
mod limit;
mod notifications;
mod output;
mod resources;
mod runs;
mod schedules;
mod watch;

use std::sync::Arc;

use opsdeck_proto::v1::{
    agent_server::AgentServer, approvals_server::ApprovalsServer, console_server::ConsoleServer,
    events_server::EventsServer, leases_server::LeasesServer, queues_server::QueuesServer,
    runs_server::RunsServer, schedules_server::SchedulesServer, workers_server::WorkersServer,
};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::http::Response;
use tonic::transport::Server;

pub use auth::Auth;

use crate::core::CoreHandle;
use crate::domain::spec::Limits;
use crate::store::{Store, StoreError};

/// Requests up to this size are decoded by default (`limits.max_message_bytes`),
/// so that an oversized spec gets the engine's own answer naming the spec
/// limit rather than a transport error.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The least the Agent stream decodes whatever `limits.max_message_bytes`
/// says: a worker's messages are bounded by the worker itself (output in
/// chunks of 64 KiB, an 8 KiB output tail with each result), and a limit
/// set low for API callers must not cut the engine off from its own workers.
pub const MIN_AGENT_MESSAGE_BYTES: usize = 1024 * 1024;

/// State shared by every service.
#[derive(Clone)]
pub struct Api {
    pub core: CoreHandle,
    pub store: Arc<dyn Store>,
    pub limits: Limits,
    /// Names this engine process in Whoami.
    pub engine_id: String,
    /// Leader or standby, and the lead's epoch (Whoami's `leader_epoch`).
    pub role: tokio::sync::watch::Receiver<crate::ha::Role>,
    /// `[[policy]]`, applied to every spec submitted.
    pub policies: Arc<[crate::domain::policy::Policy]>,
}

/// An id argument: present and of sane length.
fn id_arg(what: &str, id: String) -> Result<String, Status> {
    let id = id.trim().to_owned();
    if id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the {what} id is empty; give the id of a {what}"
        )));
    }
    if id.len() > 256 {
        return Err(Status::invalid_argument(format!(
            "the {what} id is {} characters long; ids are at most 256",
            id.len()
        )));
    }
    Ok(id)
}

fn store_error(e: StoreError) -> Status {
    tracing::error!(error = %e, "store read failed");
    Status::unavailable(format!(
        "the engine could not read its database ({e}); retry shortly"
    ))
}

/// The listeners an engine serves on.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<UnixListener>,
    /// TLS on the TCP listener. The Unix socket stays plain: the kernel
    /// names its callers.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// The connections `listener` accepts, with Nagle's algorithm off. tonic
/// turns it off only on the sockets it accepts itself (`tcp_nodelay`
/// below), and these are accepted here: without it, an answer written while
/// an earlier one is unacknowledged waits for the client's delayed ACK —
/// tens of milliseconds, with the CPU idle.
fn accepted(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Unpin {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot turn Nagle's algorithm off on a connection; serving it as it is");
        }
        Ok(conn)
    })
}

/// Serves the API on every listener until `shutdown` is cancelled.
pub async fn serve(
    api: Api,
    auth: Auth,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // SERVING while this engine leads, NOT_SERVING while it stands by.
    tokio::spawn(crate::ha::report_health(health, api.role.clone()));

    let mut tasks = tokio::task::JoinSet::new();
    // Each listener has its own budget of connections; subscriptions are
    // counted over all of them.
    let subscribers = limit::Subscribers::new(&api.limits);
    if let Some(l) = listeners.tcp {
        let budget = limit::Budget::new(&api.limits);
        let (ok, refused) = limit::split(accepted(l), budget);
        let router = router(
            &api,
            &auth,
            subscribers.clone(),
            health_service.clone(),
            listeners.tls.clone(),
        )?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(ok, stop.cancelled())
                .await
        });
        let stop = shutdown.clone();
        let refuser = refuser(server(listeners.tls.clone(), &api.limits)?);
        tasks.spawn(async move {
            refuser
                .serve_with_incoming_shutdown(refused, stop.cancelled())
                .await
        });
    }
    if let Some(l) = listeners.unix {
        let budget = limit::Budget::new(&api.limits);
        let (ok, refused) = limit::split(UnixListenerStream::new(l), budget);
        let router = router(&api, &auth, subscribers, health_service.clone(), None)?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(ok, stop.cancelled())
                .await
        });
        let stop = shutdown.clone();
        let refuser = refuser(server(None, &api.limits)?);
        tasks.spawn(async move {
            refuser
                .serve_with_incoming_shutdown(refused, stop.cancelled())
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Serves connections over a limit: every call is answered
/// RESOURCE_EXHAUSTED naming the limit, and the connection closes soon
/// after.
fn refuser(
    server: Server,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<
        tower::layer::LayerFn<impl Fn(tonic::service::Routes) -> limit::Refuse + Clone>,
        tower::layer::util::Identity,
    >,
> {
    let (_, health) = tonic_health::server::health_reporter();
    server
        .layer(tower::layer::layer_fn(move |_| limit::Refuse))
        .add_service(health)
}

/// A server builder, speaking TLS when `tls` is set, with at most
/// `limits.max_streams_per_connection` calls in flight on a connection.
fn server(
    tls: Option<tonic::transport::ServerTlsConfig>,
    limits: &Limits,
) -> anyhow::Result<Server> {
    // A TLS handshake reads through the connection's handshake deadline
    // (`limit::Limited`) too, so a client stalling it is closed in time.
    let server = Server::builder().max_concurrent_streams(Some(limits.max_streams_per_connection));
    Ok(match tls {
        Some(tls) => server.tls_config(tls)?,
        None => server,
    })
}

type Explained = tower::layer::util::Stack<
    crate::ha::StandbyGate,
    tower::layer::util::Stack<
        auth::Guard,
        tower::layer::util::Stack<
            tower::util::MapResponseLayer<
                fn(Response<tonic::body::Body>) -> Response<tonic::body::Body>,
            >,
            tower::layer::util::Identity,
        >,
    >,
>;

fn router(
    api: &Api,
    auth: &Auth,
    subscribers: limit::Subscribers,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> anyhow::Result<tonic::transport::server::Router<Explained>> {
    let descriptors = [
        opsdeck_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for d in descriptors {
        v1 = v1.register_encoded_file_descriptor_set(d);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(d);
    }
    let a = api.clone();
    let max = api.limits.max_message_bytes;
    let explain: fn(Response<tonic::body::Body>) -> Response<tonic::body::Body> =
        limit::explain_message_limit;
    Ok(server(tls, &api.limits)?
        // Layers run in the order added, the first outermost.
        .layer(tower::util::MapResponseLayer::new(explain))
        // Every request, to every service: identity and role first (so a
        // standby names its leader only to callers it knows).
        .layer(auth.guard(subscribers))
        // A standby answers only health and reflection, naming the leader.
        .layer(crate::ha::StandbyGate::new(api.role.clone()))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(health)
        .add_service(v1.build_v1()?)
        .add_service(v1alpha.build_v1alpha()?)
        .add_service(RunsServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(EventsServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(WorkersServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(QueuesServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(ApprovalsServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(LeasesServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(SchedulesServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(ConsoleServer::new(a.clone()).max_decoding_message_size(max))
        .add_service(
            AgentServer::new(a).max_decoding_message_size(max.max(MIN_AGENT_MESSAGE_BYTES)),
        ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[tokio::test]
    async fn connections_are_served_with_nagles_algorithm_off() {
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::accepted(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let served = incoming.next().await.unwrap().unwrap();
        assert!(
            served.nodelay().unwrap(),
            "the engine's side delays small writes"
        );
        drop(client);
    }

    proptest! {
        /// Every id argument is taken trimmed or refused as INVALID_ARGUMENT
        /// naming what kind of id it is.
        #[test]
        fn any_id_argument_is_taken_or_refused_naming_it(id in "\\PC{0,300}") {
            match super::id_arg("lease", id.clone()) {
                Ok(taken) => prop_assert!(!taken.is_empty() && taken.len() <= 256 && taken == id.trim()),
                Err(status) => {
                    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                    prop_assert!(status.message().contains("lease id"), "{}", status.message());
                }
            }
        }
    }
}
