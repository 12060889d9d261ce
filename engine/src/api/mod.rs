//! The gRPC API: one file per service, the auth interceptor, and the
//! server that puts them on the TCP and Unix listeners.
//!
//! `grpc.health.v1` and server reflection (v1 and v1alpha) are served
//! without a token so that stock tools (grpcurl, grpc_health_probe) work.

mod agent;
pub mod auth;
mod events;
mod resources;
mod runs;
mod watch;

use std::sync::Arc;

use opsdeck_proto::v1::{
    agent_server::AgentServer, approvals_server::ApprovalsServer, console_server::ConsoleServer,
    events_server::EventsServer, leases_server::LeasesServer, queues_server::QueuesServer,
    runs_server::RunsServer, workers_server::WorkersServer,
};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

pub use auth::Auth;

use crate::core::CoreHandle;
use crate::domain::spec::Limits;
use crate::store::{Store, StoreError};

/// Requests up to this size are decoded, so that an oversized spec gets the
/// engine's own answer naming the limit rather than a transport error.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// State shared by every service.
#[derive(Clone)]
pub struct Api {
    pub core: CoreHandle,
    pub store: Arc<dyn Store>,
    pub limits: Limits,
    /// Names this engine process in Whoami.
    pub engine_id: String,
}

/// An id argument: present and of sane length.
fn id_arg(what: &str, id: String) -> Result<String, Status> {
    let id = id.trim().to_owned();
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("the {what} id is empty; give the id of a {what}")));
    }
    if id.len() > 256 {
        return Err(Status::invalid_argument(format!("the {what} id is {} characters long; ids are at most 256", id.len())));
    }
    Ok(id)
}

fn store_error(e: StoreError) -> Status {
    tracing::error!(error = %e, "store read failed");
    Status::unavailable(format!("the engine could not read its database ({e}); retry shortly"))
}

/// The listeners an engine serves on.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<UnixListener>,
}

/// Serves the API on every listener until `shutdown` is cancelled.
pub async fn serve(api: Api, auth: Auth, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RunsServer<Api>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = listeners.tcp {
        let router = router(&api, &auth, health_service.clone())?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            router.serve_with_incoming_shutdown(TcpListenerStream::new(l), stop.cancelled()).await
        });
    }
    if let Some(l) = listeners.unix {
        let router = router(&api, &auth, health_service.clone())?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            router.serve_with_incoming_shutdown(UnixListenerStream::new(l), stop.cancelled()).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn router(
    api: &Api,
    auth: &Auth,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> anyhow::Result<tonic::transport::server::Router> {
    let descriptors = [opsdeck_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for d in descriptors {
        v1 = v1.register_encoded_file_descriptor_set(d);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(d);
    }
    let guarded = |svc| InterceptedService::new(svc, auth.clone());
    let a = api.clone();
    Ok(Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(health)
        .add_service(v1.build_v1()?)
        .add_service(v1alpha.build_v1alpha()?)
        .add_service(InterceptedService::new(RunsServer::new(a.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES), auth.clone()))
        .add_service(InterceptedService::new(EventsServer::new(a.clone()), auth.clone()))
        .add_service(InterceptedService::new(WorkersServer::new(a.clone()), auth.clone()))
        .add_service(InterceptedService::new(QueuesServer::new(a.clone()), auth.clone()))
        .add_service(InterceptedService::new(ApprovalsServer::new(a.clone()), auth.clone()))
        .add_service(InterceptedService::new(LeasesServer::new(a.clone()), auth.clone()))
        .add_service(InterceptedService::new(ConsoleServer::new(a.clone()), auth.clone()))
        .add_service(guarded(AgentServer::new(a).max_decoding_message_size(MAX_MESSAGE_BYTES))))
}
