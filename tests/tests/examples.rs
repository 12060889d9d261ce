//! Every file under `examples/`, as a user would use it: each run spec
//! submitted with `opsdeck submit FILE` to a real engine with real
//! `opsdeckd worker` processes on the queues it names and the secrets it
//! names in the engine's `[secrets]`, its approvals decided by another
//! identity over TCP, run to success; each engine config passed through
//! `opsdeckd check-config`. A file this test cannot place fails it, so a new
//! example cannot go untested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use opsdeck_tests::pb::{self, ApprovalState, RunState};
use opsdeck_tests::{Engine, EngineOpts, Worker, opsdeck, opsdeckd};

/// The top-level tables of the engine config (`examples/engine.toml` lists
/// them all).
const CONFIG_TABLES: &[&str] = &[
    "engine",
    "retention",
    "notifications",
    "notify",
    "limits",
    "metrics",
    "log",
    "ha",
    "tls",
    "secrets",
    "policy",
    "token",
    "unix",
];

enum Example {
    /// A run spec: the queues and the secrets its steps name.
    Spec {
        queues: BTreeSet<String>,
        secrets: BTreeSet<String>,
    },
    Config,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every file under `examples/`, sorted; fails on a directory (nothing
/// below would look into it).
fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("read examples/")
        .map(|e| e.expect("an entry of examples/").path())
        .collect();
    files.sort();
    for f in &files {
        assert!(
            f.is_file(),
            "{} is not a file; tests/tests/examples.rs covers files only",
            f.display()
        );
    }
    assert!(!files.is_empty(), "examples/ is empty");
    files
}

/// What `path` is, or a failure naming it when this test does not know.
fn classify(path: &Path) -> Example {
    let name = path.display();
    assert!(
        path.extension().is_some_and(|e| e == "toml"),
        "{name}: tests/tests/examples.rs knows only TOML specs and engine configs; cover this example there"
    );
    let text = std::fs::read_to_string(path).expect("read the example");
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not TOML: {e}"));
    if let Some(steps) = doc.get("step") {
        let steps = steps
            .as_array()
            .unwrap_or_else(|| panic!("{name}: `step` is not an array of tables"));
        let mut queues = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for step in steps {
            if let Some(q) = step.get("queue").and_then(|q| q.as_str()) {
                queues.insert(q.to_owned());
            }
            let env = step.get("env").and_then(|e| e.as_table());
            for value in env.into_iter().flat_map(|t| t.values()) {
                if let Some(s) = value.get("secret").and_then(|s| s.as_str()) {
                    secrets.insert(s.to_owned());
                }
            }
        }
        return Example::Spec { queues, secrets };
    }
    let unknown: Vec<&String> = doc
        .keys()
        .filter(|k| !CONFIG_TABLES.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{name} is neither a run spec (no [[step]]) nor an engine config ({unknown:?}); cover it in tests/tests/examples.rs"
    );
    Example::Config
}

/// `program` with none of the `OPSDECK_*` settings of the test's environment.
fn clean(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

fn cli(engine: &Engine, args: &[&str]) -> Output {
    clean(&opsdeck())
        .env("NO_COLOR", "1")
        .args(["--engine", &engine.unix_addr()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run opsdeck")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Decides every pending approval of the run as the harness's TCP token
/// (not the submitter) until the run ends; the run as it ended.
async fn approve_until_final(engine: &Engine, run_id: &str) -> pb::Run {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut approver = engine.ci_api().await;
    loop {
        let run = engine.get_run(run_id).await;
        let state = run.state();
        if matches!(
            state,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        ) {
            return run;
        }
        if state == RunState::WaitingApproval {
            let pending = engine
                .api()
                .await
                .approvals
                .list_approvals(pb::ListApprovalsRequest { all: false })
                .await
                .expect("ListApprovals")
                .into_inner()
                .approvals
                .into_iter()
                .filter(|a| a.run_id == run_id && a.state == ApprovalState::Pending as i32);
            for a in pending {
                approver
                    .approvals
                    .decide(pb::DecideRequest {
                        id: a.id.clone(),
                        approve: true,
                        reason: "example looks right".into(),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("approving {} of run {run_id}: {s:?}", a.id));
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not end within 90s: {run:#?}\n{}",
            engine.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_example_is_valid_specs_run_to_success_and_configs_pass_check_config() {
    let files = example_files();
    let mut specs = Vec::new();
    let mut configs = Vec::new();
    let (mut queues, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for f in files {
        match classify(&f) {
            Example::Spec {
                queues: q,
                secrets: s,
            } => {
                queues.extend(q);
                secrets.extend(s);
                specs.push(f);
            }
            Example::Config => configs.push(f),
        }
    }

    for config in &configs {
        let out = clean(&opsdeckd())
            .arg("check-config")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .output()
            .expect("run opsdeckd check-config");
        assert!(
            out.status.success(),
            "opsdeckd check-config --config {}: {}",
            config.display(),
            text(&out)
        );
    }

    // The engine holds every secret the specs name, each with a value no
    // output may show, from its environment.
    let values: Vec<(String, String, String)> = secrets
        .iter()
        .map(|name| {
            let var = format!(
                "OPSDECK_SECRET_{}",
                name.to_uppercase().replace(['-', '.'], "_")
            );
            let value = format!("s3cr3t-{}", hex::encode(rand::random::<[u8; 12]>()));
            (name.clone(), var, value)
        })
        .collect();
    let mut config = String::from("[secrets]\n");
    for (name, var, _) in &values {
        config.push_str(&format!("{name:?} = {{ env = {var:?} }}\n"));
    }
    let engine = Engine::start(EngineOpts {
        config,
        env: values
            .iter()
            .map(|(_, var, value)| (var.clone(), value.clone()))
            .collect(),
        ..EngineOpts::default()
    })
    .await;
    let mut workers = Vec::new();
    for q in &queues {
        workers.push(Worker::start(&engine, &format!("w-{q}"), &[q.as_str()], 2).await);
    }

    for spec in &specs {
        let path = spec.display().to_string();
        let out = cli(&engine, &["submit", &path, "--output", "json"]);
        assert!(
            out.status.success(),
            "opsdeck submit {path}: {}",
            text(&out)
        );
        let submitted: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("one JSON document");
        let run_id = submitted["run"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id in {submitted}"))
            .to_owned();
        let run = approve_until_final(&engine, &run_id).await;
        let output = engine.output_text(&run_id).await;
        assert_eq!(
            run.state(),
            RunState::Succeeded,
            "{path} did not succeed: {run:#?}\noutput:\n{output}\n{}",
            engine.logs()
        );
        for (name, _, value) in &values {
            assert!(
                !output.contains(value.as_str()),
                "{path}: the value of secret {name} is in the output:\n{output}"
            );
        }
    }
}
