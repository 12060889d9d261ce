//! Spec parameters end to end: `opsdeck submit -p`, values in the command,
//! the env and the labels, `OPSDECK_PARAM_*` for the step, refusals that
//! name the parameter, and `opsdeck retry RUN -p` making a new run linked
//! to the first.

use std::process::Output;

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, Worker, sh};
use serde_json::Value;

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "opsdeck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn spec(engine: &Engine) -> String {
    let text = format!(
        r#"name = "deploy"
labels = {{ env = "${{params.env}}" }}

[params]
version = {{ required = true, pattern = "v[0-9]+" }}
env = {{ type = "enum", values = ["staging", "prod"], default = "staging" }}
replicas = {{ type = "int", default = 2 }}

[[step]]
queue = "deploy"
run = {}
env = {{ TARGET = "${{params.env}}-cluster" }}
"#,
        sh(
            "echo \"deploying ${params.version} x${params.replicas} to $TARGET ($OPSDECK_PARAM_VERSION)\""
        )
    );
    let path = engine.work_dir().join("deploy.toml");
    std::fs::write(&path, text).expect("write the spec");
    path.display().to_string()
}

#[tokio::test]
async fn values_reach_the_command_env_and_labels_and_the_step_gets_them_as_variables() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["deploy"], 1).await;
    let spec = spec(&engine);
    let doc = json(&engine.cli(&[
        "submit",
        &spec,
        "-p",
        "version=v42",
        "-p",
        "env=prod",
        "--wait",
        "--output",
        "json",
    ]));
    let run = &doc["run"];
    assert_eq!(run["state"], "succeeded", "{doc}");
    assert_eq!(run["labels"]["env"], "prod", "{doc}");
    assert_eq!(run["params"]["version"], "v42", "{doc}");
    assert_eq!(
        run["params"]["replicas"], "2",
        "a default is recorded: {doc}"
    );
    let id = run["id"].as_str().expect("an id");
    let out = engine.output_text(id).await;
    assert!(
        out.contains("deploying v42 x2 to prod-cluster (v42)"),
        "output: {out}"
    );
}

#[tokio::test]
async fn a_missing_or_bad_value_is_invalid_argument_naming_the_parameter() {
    let engine = Engine::start_default().await;
    let spec = spec(&engine);
    for (args, want) in [
        (
            vec![],
            "parameter \"version\" is required and was not given; pass -p version=VALUE",
        ),
        (
            vec!["-p", "version=7"],
            "parameter \"version\" is \"7\", which does not match its pattern \"v[0-9]+\"",
        ),
        (
            vec!["-p", "version=v1", "-p", "env=qa"],
            "parameter \"env\" is \"qa\", which is not one of: staging, prod",
        ),
        (
            vec!["-p", "version=v1", "-p", "verison=v2"],
            "parameter \"verison\" is not declared by the spec; it declares: env, replicas, version",
        ),
    ] {
        let mut all = vec!["submit", spec.as_str()];
        all.extend(args.iter().copied());
        let out = engine.cli(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains("INVALID_ARGUMENT"), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let runs = json(&engine.cli(&["runs", "--all", "--output", "json"]));
    assert_eq!(
        runs["runs"].as_array().map(Vec::len),
        Some(0),
        "nothing was made: {runs}"
    );
}

#[tokio::test]
async fn retry_with_a_parameter_makes_a_new_run_of_the_spec_linked_to_the_first() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["deploy"], 1).await;
    let spec = spec(&engine);
    let first = json(&engine.cli(&[
        "submit",
        &spec,
        "-p",
        "version=v1",
        "--wait",
        "--output",
        "json",
    ]));
    let first_id = first["run"]["id"].as_str().expect("an id").to_owned();
    let second = json(&engine.cli(&["retry", &first_id, "-p", "version=v2", "--output", "json"]));
    let second_id = second["id"].as_str().expect("an id").to_owned();
    assert_ne!(second_id, first_id, "a new run: {second}");
    assert_eq!(second["retry_of"], first_id.as_str(), "{second}");
    assert_eq!(second["params"]["version"], "v2");
    assert_eq!(
        second["params"]["env"], "staging",
        "the others as the first had them"
    );
    let done = engine
        .wait_run_state(&second_id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.retry_of, first_id);
    let out = engine.output_text(&second_id).await;
    assert!(out.contains("deploying v2 x2 to staging-cluster"), "{out}");
    // The first run is unchanged.
    assert_eq!(engine.get_run(&first_id).await.params["version"], "v1");

    // A spec without parameters has none to change.
    let plain = engine.work_dir().join("plain.toml");
    std::fs::write(
        &plain,
        format!(
            "name = \"plain\"\n[[step]]\nqueue = \"deploy\"\nrun = {}\n",
            sh("true")
        ),
    )
    .expect("write");
    let made = json(&engine.cli(&[
        "submit",
        &plain.display().to_string(),
        "--wait",
        "--output",
        "json",
    ]));
    let plain_id = made["run"]["id"].as_str().expect("an id");
    let out = engine.cli(&["retry", plain_id, "-p", "x=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    assert!(err.contains("declares no parameters"), "{err}");
}
