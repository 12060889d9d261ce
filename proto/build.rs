//! Generates the opsdeck.v1 code with protox, a protobuf compiler written in
//! Rust, so a build needs nothing but cargo: no system `protoc`.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "opsdeck/v1/resources.proto",
    "opsdeck/v1/services.proto",
    "opsdeck/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=opsdeck");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    // Served by gRPC reflection, so grpcurl works without the .proto files.
    fs::write(out.join("opsdeck_descriptor.bin"), fds.encode_to_vec())?;

    let builder =
        tonic_prost_build::configure().type_attribute(".opsdeck.v1", "#[derive(serde::Serialize)]");
    let builder = ENUM_FIELDS.iter().fold(builder, |b, (path, func)| {
        b.field_attribute(
            path,
            format!("#[serde(serialize_with = \"crate::json::{func}\")]"),
        )
    });
    let builder = BOXED.iter().fold(builder, |b, path| b.boxed(path));
    builder.compile_fds(fds)?;
    Ok(())
}

/// An event's whole objects, boxed: most events carry none or one of them,
/// and inline they made every event (moved, queued, cloned per watcher)
/// five times larger than its own fields.
const BOXED: &[&str] = &[
    ".opsdeck.v1.Event.run",
    ".opsdeck.v1.Event.worker",
    ".opsdeck.v1.Event.lease",
    ".opsdeck.v1.Event.approval",
    ".opsdeck.v1.Event.quarantine",
    ".opsdeck.v1.Event.schedule",
];

/// Enum fields, shown in JSON as lowercase words (`succeeded`) instead of
/// their wire numbers.
const ENUM_FIELDS: &[(&str, &str)] = &[
    (".opsdeck.v1.Run.state", "run_state"),
    (".opsdeck.v1.Step.kind", "step_kind"),
    (".opsdeck.v1.Step.state", "step_state"),
    (".opsdeck.v1.Worker.state", "worker_state"),
    (".opsdeck.v1.Lease.state", "lease_state"),
    (".opsdeck.v1.Approval.state", "approval_state"),
    (".opsdeck.v1.ListRunsRequest.states", "run_states"),
    (".opsdeck.v1.StepResult.outcome", "outcome"),
    (".opsdeck.v1.RunUpdate.state", "run_state"),
    (".opsdeck.v1.StepUpdate.state", "step_state"),
    (".opsdeck.v1.SubmittedRun.state", "run_state"),
    (".opsdeck.v1.Schedule.missed", "missed_policy"),
    (".opsdeck.v1.Schedule.overlap", "overlap_policy"),
    (".opsdeck.v1.Schedule.last_run_state", "run_state"),
];
