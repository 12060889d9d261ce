//! A Python grpcio client — gRPC's C core, not tonic — against a real
//! engine, over the Unix socket and over TCP with the admin token: health,
//! reflection, Console.Whoami, Runs.SubmitRun and Console.Watch. Its stubs
//! are generated from proto/ at test time with grpcio-tools.
//!
//! On the socket the client sets `grpc.default_authority`, as the README
//! tells C-core clients to: by default the C core sends the socket's path,
//! percent-encoded, as the `:authority`, which the engine's HTTP/2 server
//! refuses as malformed.
//!
//! The Python environment: a venv with grpcio, grpcio-tools,
//! grpcio-reflection and grpcio-health-checking, which `.ci/run` makes
//! before the tests (and names in `OPSDECK_TEST_PYTHON_VENV`), or this test
//! makes in `target/python-venv` on first use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opsdeck_tests::{Engine, TOKEN_IDENTITY};
use serde_json::Value;
use tokio::process::Command;

const VENV_VAR: &str = "OPSDECK_TEST_PYTHON_VENV";

/// Generous: the first import of grpcio on a busy machine takes a while.
const PYTHON_DEADLINE: Duration = Duration::from_secs(120);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The Python packages the client needs.
const PACKAGES: [&str; 4] = [
    "grpcio",
    "grpcio-tools",
    "grpcio-reflection",
    "grpcio-health-checking",
];

/// The venv's interpreter: the one `OPSDECK_TEST_PYTHON_VENV` names
/// (`.ci/run` makes it before the tests), else `target/python-venv`, made
/// here with the packages from PyPI when it is not there yet. Fails the
/// test, saying what to install, when it cannot be made.
fn python() -> PathBuf {
    let venv = std::env::var_os(VENV_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("python-venv"));
    let python = venv.join("bin").join("python");
    if python.exists() {
        return python;
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "cannot make the Python venv {}: install python3 and python3-venv \
         (`apt-get install python3-venv`), or set {VENV_VAR} to a venv holding {PACKAGES:?}",
        venv.display()
    );
    let installed = std::process::Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet"])
        .args(PACKAGES)
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "cannot install {PACKAGES:?} from PyPI into {}; install them there, or set {VENV_VAR}",
        venv.display()
    );
    python
}

async fn run(cmd: &mut Command, what: &str) -> String {
    let out = tokio::time::timeout(PYTHON_DEADLINE, cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PYTHON_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Python stubs for proto/, generated into `dir`.
async fn generate_stubs(python: &Path, dir: &Path) {
    let proto = workspace_root().join("proto");
    let mut cmd = Command::new(python);
    cmd.args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()));
    for file in ["agent", "resources", "services"] {
        cmd.arg(proto.join(format!("opsdeck/v1/{file}.proto")));
    }
    run(&mut cmd, "python -m grpc_tools.protoc").await;
}

/// Runs tests/python/client.py against `target`; what it got.
async fn client(
    python: &Path,
    stubs: &Path,
    engine: &Engine,
    target: &str,
    authority: Option<&str>,
) -> Value {
    let script = workspace_root().join("tests/python/client.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(target)
        .arg(engine.token())
        .arg(stubs)
        .args(authority);
    let out = run(&mut cmd, &format!("{} {target}", script.display())).await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("client.py printed no JSON ({e}): {out}"))
}

async fn check(engine: &Engine, got: &Value, identity: &str, transport: &str) {
    assert_eq!(got["health"], "SERVING", "{got}");
    let services: Vec<&str> = got["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for service in [
        "grpc.health.v1.Health",
        "opsdeck.v1.Console",
        "opsdeck.v1.Runs",
    ] {
        assert!(services.contains(&service), "{service} not listed: {got}");
    }
    assert_eq!(got["whoami"]["identity"], identity, "{got}");
    assert_eq!(got["whoami"]["transport"], transport, "{got}");
    assert!(
        got["whoami"]["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == "admin")),
        "{got}"
    );
    let id = got["run"]["id"].as_str().expect("the run's id");
    let run = engine.get_run(id).await;
    assert_eq!(run.name, format!("python-{transport}"));
    assert_eq!(got["run"]["name"], run.name, "{got}");
    assert_eq!(
        got["watch_first"], "snapshot_begin",
        "a Watch from 0 starts with a snapshot: {got}"
    );
}

#[tokio::test]
async fn python_grpcio_client_over_the_socket_and_tcp() {
    let python = python();
    let stubs = tempfile::tempdir().expect("a temp dir for the stubs");
    generate_stubs(&python, stubs.path()).await;
    let engine = Engine::start_default().await;

    let unix = format!("unix://{}", engine.socket().display());
    let got = client(&python, stubs.path(), &engine, &unix, Some("localhost")).await;
    check(&engine, &got, &engine.os_identity().await, "unix").await;

    let tcp = engine.tcp_addr().to_string();
    let got = client(&python, stubs.path(), &engine, &tcp, None).await;
    check(&engine, &got, TOKEN_IDENTITY, "tcp").await;
}
