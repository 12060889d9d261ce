//! opsdeck's gRPC API, package `opsdeck.v1`.
//!
//! - [`v1`]: the generated messages, clients and servers.
//! - [`access`]: the roles, and what each method needs of its caller.
//! - [`names`]: enum values as the lowercase words people read and type
//!   (`waiting_approval`), both ways.
//! - [`json`]: serde helpers the generated types use for those words.
//! - [`endpoint`]: engine addresses (`http://host:port`, `unix:///path`) and
//!   how to connect to one.
//! - [`failover`]: several engines sharing a database (`--engine a,b,c`):
//!   finding the one that leads.
//! - [`tls`]: TLS files for the engine's TCP listener and its `https://`
//!   clients (certificates, keys, mutual TLS).
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for gRPC reflection.

pub mod access;
pub mod endpoint;
pub mod failover;
pub mod json;
pub mod names;
pub mod tls;

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("opsdeck.v1");
}

/// The encoded `FileDescriptorSet` of every opsdeck.v1 file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/opsdeck_descriptor.bin"));

/// The engine's default TCP port.
pub const DEFAULT_PORT: u16 = 7465;
