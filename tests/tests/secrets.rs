//! Secret env entries, end to end with a real engine, a real worker and a
//! real SQLite file: a spec names a secret of the engine's `[secrets]`; the
//! step's process gets the value; no answer, event, CLI output, log,
//! spool file or byte of the database (WAL included) holds it, and the
//! step's own output shows `***` in its place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use opsdeck_tests::pb::{self, watch_message::Kind};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, assert_status, opsdeck, sh};
use tonic::Code;

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn cli(engine: &Engine, args: &[&str]) -> String {
    let mut cmd = Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .env("NO_COLOR", "1")
        .args(["--engine", &engine.unix_addr()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run opsdeck");
    assert!(
        out.status.success(),
        "opsdeck {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_secret_reaches_its_step_and_nothing_else_not_even_the_database_file() {
    let secret = format!("s3cr3t-{}", hex::encode(rand::random::<[u8; 12]>()));
    let from_env = format!("envs3cr3t-{}", hex::encode(rand::random::<[u8; 12]>()));
    // A plain value, which the search below must find: it proves the search.
    let plain = format!("plain-{}", hex::encode(rand::random::<[u8; 12]>()));
    // Outside the engine's data dir, which is searched whole below.
    let keep = tempfile::tempdir().unwrap();
    let secret_file = keep.path().join("db_pass");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let engine = Engine::start(EngineOpts {
        config: format!(
            "[secrets]\ndb_pass = {{ file = {} }}\napi_key = {{ env = \"OPSDECK_SECRET_API_KEY\" }}\n",
            sh(&secret_file.display().to_string())
        ),
        env: vec![("OPSDECK_SECRET_API_KEY".into(), from_env.clone())],
        ..EngineOpts::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;

    let proof = engine.path("got-the-secret");
    let script = format!(
        "echo \"pass=$DB_PASS key=$API_KEY plain=$PLAIN\"; echo \"$DB_PASS\" >&2; \
         printf %s \"$DB_PASS $API_KEY\" > {}",
        proof.display()
    );
    let spec = format!(
        "name = \"secretive\"\n[[step]]\nname = \"use\"\nqueue = \"work\"\nrun = {}\n\
         env = {{ PLAIN = \"{plain}\", DB_PASS = {{ secret = \"db_pass\" }}, API_KEY = {{ secret = \"api_key\" }} }}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;
    let run = engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(
        std::fs::read_to_string(&proof).unwrap(),
        format!("{secret} {from_env}"),
        "the step's process got both values"
    );

    // What the engine answers and streams.
    let api = engine.api().await;
    let got = api
        .runs
        .clone()
        .get_run(pb::GetRunRequest { id: run.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let env = &got.steps[0].env;
    let db_pass = env.iter().find(|e| e.name == "DB_PASS").unwrap();
    assert!(db_pass.secret && db_pass.value.is_empty() && db_pass.secret_name == "db_pass");
    assert!(env.iter().any(|e| e.name == "PLAIN" && e.value == plain));
    let output = api
        .runs
        .clone()
        .get_output(pb::GetOutputRequest {
            run_id: run.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text: String = output
        .chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect();
    assert!(
        text.contains(&format!("pass=*** key=*** plain={plain}")),
        "the output masks the secrets: {text:?}"
    );
    let events = engine.all_events(0).await;
    let mut watch = api
        .console
        .clone()
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = Vec::new();
    while let Some(msg) = watch.message().await.unwrap() {
        let end = matches!(msg.kind, Some(Kind::SnapshotEnd(_)));
        snapshot.push(msg);
        if end {
            break;
        }
    }
    drop(watch);
    let answers = format!("{got:?}\n{output:?}\n{events:?}\n{snapshot:?}");

    // What the CLI prints.
    let printed = format!(
        "{}\n{}\n{}",
        cli(&engine, &["run", &run.id, "-o", "json"]),
        cli(&engine, &["events", "-o", "json"]),
        cli(&engine, &["events"]),
    );

    for value in [&secret, &from_env] {
        assert!(
            !answers.contains(value.as_str()),
            "an API answer holds a secret"
        );
        assert!(
            !printed.contains(value.as_str()),
            "the CLI printed a secret"
        );
        assert!(
            !engine.logs().contains(value.as_str()),
            "a log holds a secret"
        );
    }

    // Every file of the engine's data dir but the step's own work dir: the
    // database, its WAL and shared memory, the logs, the worker's spool.
    let searched: Vec<PathBuf> = files(&engine.data_dir())
        .into_iter()
        .filter(|p| !p.starts_with(engine.work_dir()))
        .collect();
    let names: Vec<String> = searched
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.iter().any(|n| n == "opsdeck.db"),
        "the database file is among the searched: {names:?}"
    );
    let mut plain_found_in = Vec::new();
    for path in &searched {
        let bytes = std::fs::read(path).unwrap_or_default();
        if contains(&bytes, plain.as_bytes()) {
            plain_found_in.push(path.display().to_string());
        }
        for value in [&secret, &from_env] {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "{} holds a secret value",
                path.display()
            );
        }
    }
    assert!(
        plain_found_in.iter().any(|p| p.contains("opsdeck.db")),
        "the search finds a plain value in the database (or its WAL): {plain_found_in:?}"
    );
}

#[tokio::test]
async fn a_spec_naming_an_unknown_secret_or_holding_a_secret_value_is_refused() {
    let engine = Engine::start_default().await;
    let runs = engine.api().await.runs;
    let submit = |spec: String| {
        let mut runs = runs.clone();
        async move {
            runs.submit_run(pb::SubmitRunRequest {
                spec,
                reason: "test".into(),
                ..Default::default()
            })
            .await
        }
    };
    let step = |env: &str| {
        format!(
            "name = \"x\"\n[[step]]\nname = \"s\"\nqueue = \"q\"\nrun = \"true\"\nenv = {env}\n"
        )
    };
    assert_status(
        submit(step("{ TOKEN = { secret = \"nope\" } }")).await,
        Code::InvalidArgument,
        &["env TOKEN", "\"nope\"", "[secrets]"],
    );
    let refused = submit(step(
        "{ TOKEN = { value = \"inline-s3cr3t-value\", secret = true } }",
    ))
    .await;
    let message = refused
        .as_ref()
        .map_err(|s| s.message().to_owned())
        .unwrap_err();
    assert!(!message.contains("inline-s3cr3t-value"), "{message}");
    assert_status(refused, Code::InvalidArgument, &["env TOKEN", "[secrets]"]);
}

#[tokio::test]
async fn a_step_of_the_engines_own_workers_does_not_inherit_its_secret_variables() {
    let value = format!(
        "inherited-s3cr3t-{}",
        hex::encode(rand::random::<[u8; 12]>())
    );
    let engine = Engine::start(EngineOpts {
        config: "[secrets]\napi_key = { env = \"OPSDECK_SECRET_API_KEY\" }\n".into(),
        env: vec![("OPSDECK_SECRET_API_KEY".into(), value.clone())],
        args: vec![
            "--local-workers".into(),
            "1".into(),
            "--trust-local-steps".into(),
        ],
        ..EngineOpts::default()
    })
    .await;
    // The local worker runs steps in the engine's own environment; a step
    // that prints all of it must find no secret there, named or not.
    let run = engine
        .submit("name = \"nosy\"\n[[step]]\nname = \"env\"\nqueue = \"any\"\nrun = \"env\"\n")
        .await;
    engine
        .wait_run_state(&run.id, pb::RunState::Succeeded, DEADLINE)
        .await;
    let text = engine.output_text(&run.id).await;
    assert!(
        text.contains("OPSDECK_RUN_ID="),
        "the step printed its environment: {text}"
    );
    assert!(
        !text.contains(&value) && !text.contains("OPSDECK_SECRET_"),
        "a secret variable of the engine reached the step: {text}"
    );
}
