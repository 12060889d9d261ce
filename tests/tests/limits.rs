//! Limits: spec size, steps per run, command length, message size, output
//! per attempt and connections — each refused (or capped) with
//! RESOURCE_EXHAUSTED and a sentence naming the limit and where to change it.

use std::time::Duration;

use opsdeck_tests::pb::{GetOutputRequest, RunState, SubmitRunRequest, WhoamiRequest};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, assert_status, sh, wait_for};
use tonic::Code;

fn request(spec: String) -> SubmitRunRequest {
    SubmitRunRequest {
        spec,
        reason: "limits".into(),
        ..Default::default()
    }
}

fn steps(n: usize) -> String {
    let mut spec = "name = \"many\"\n".to_owned();
    for i in 0..n {
        spec.push_str(&format!(
            "[[step]]\nname = \"s{i}\"\nqueue = \"work\"\nrun = \"true\"\n"
        ));
    }
    spec
}

#[tokio::test]
async fn specs_steps_commands_messages_and_output_over_their_limits_are_refused_or_capped_naming_the_setting()
 {
    let opts = EngineOpts {
        config: "[engine]\noutput_cap_bytes = 1000\n\
                 [limits]\nmax_spec_bytes = 4000\nmax_steps = 3\nmax_command_bytes = 100\nmax_message_bytes = 65536\n"
            .into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    let mut runs = engine.api().await.runs;

    let padded = format!("# {}\n{}", "x".repeat(5000), steps(1));
    assert_status(
        runs.submit_run(request(padded)).await,
        Code::ResourceExhausted,
        &["4000", "limits.max_spec_bytes in the engine config"],
    );
    assert_status(
        runs.submit_run(request(steps(4))).await,
        Code::ResourceExhausted,
        &[
            "4 steps",
            "limit is 3",
            "limits.max_steps in the engine config",
        ],
    );
    let long = format!(
        "name = \"long\"\n[[step]]\nname = \"s\"\nqueue = \"work\"\nrun = {}\n",
        sh(&format!("echo {}", "a".repeat(200)))
    );
    assert_status(
        runs.submit_run(request(long)).await,
        Code::ResourceExhausted,
        &[
            "205 bytes",
            "limit is 100",
            "limits.max_command_bytes in the engine config",
        ],
    );
    // Over the message limit, refused before the spec is even read.
    let huge = format!("# {}\n{}", "x".repeat(100_000), steps(1));
    assert_status(
        runs.submit_run(request(huge)).await,
        Code::ResourceExhausted,
        &[
            "at most 65536 bytes",
            "limits.max_message_bytes in the engine config",
        ],
    );
    // Within every limit, a run goes through.
    let ok = runs
        .submit_run(request(steps(3)))
        .await
        .expect("a spec within the limits");
    assert!(ok.into_inner().created);

    // Output: an attempt that prints 100 KB keeps the first 1000 bytes and
    // a marker saying where the cap is set.
    let _w = Worker::start(&engine, "w1", &["loud"], 1).await;
    let spec = format!(
        "name = \"loud\"\n[[step]]\nname = \"s\"\nqueue = \"loud\"\nrun = {}\n",
        sh("head -c 100000 /dev/zero | tr '\\\\0' a")
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let chunks = runs
        .get_output(GetOutputRequest {
            run_id: run.id.clone(),
            ..Default::default()
        })
        .await
        .expect("GetOutput")
        .into_inner()
        .chunks;
    let kept: usize = chunks
        .iter()
        .filter(|c| !c.truncated)
        .map(|c| c.data.len())
        .sum();
    assert_eq!(kept, 1000, "exactly the cap is kept: {chunks:?}");
    let marker = chunks.last().expect("output was kept");
    assert!(marker.truncated, "the last chunk marks the cap: {chunks:?}");
    let text = String::from_utf8_lossy(&marker.data);
    assert!(
        text.contains("1000 bytes") && text.contains("output_cap_bytes in the engine config"),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_over_the_limit_is_answered_resource_exhausted_naming_the_setting_and_closed()
{
    let opts = EngineOpts {
        config: "[limits]\nmax_connections = 3\n".into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    // The harness's own readiness probe may still be closing: let it go.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Fill the engine's TCP connections, then one more.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= 3, "more than max_connections were served");
        let mut api = engine.tcp_api(Some(engine.token())).await;
        match api.console.whoami(WhoamiRequest {}).await {
            Ok(_) => held.push(api),
            Err(status) => break status,
        }
    };
    assert!(!held.is_empty());
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limit of 3 connections")
            && refused
                .message()
                .contains("limits.max_connections in the engine config"),
        "{refused:?}"
    );
    // The ones within the limit still work.
    for c in &mut held {
        c.console
            .whoami(WhoamiRequest {})
            .await
            .expect("a served connection keeps working");
    }
    // The socket has a budget of its own, and the engine's own user on it
    // is never refused.
    for _ in 0..5 {
        let mut api = engine.api().await;
        api.console
            .whoami(WhoamiRequest {})
            .await
            .expect("the engine's user gets in on the socket whatever TCP holds");
    }

    // Closing connections frees room for new ones.
    drop(held);
    wait_for("a new connection to be served", DEADLINE, || async {
        let mut api = engine.tcp_api(Some(engine.token())).await;
        api.console.whoami(WhoamiRequest {}).await.ok()
    })
    .await;
}
