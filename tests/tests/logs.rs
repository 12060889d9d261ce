//! `opsdeck logs`: a step's output printed as the step writes it, followed
//! to the step's end (the exit status is its outcome), resumed across an
//! engine restart with every line exactly once; `Runs.FollowOutput`'s
//! refusals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use opsdeck_tests::pb::{FollowOutputRequest, OutputPosition, StepState};
use opsdeck_tests::{DEADLINE, Engine, Worker, sh};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A one-step run on `work` that prints `before`, waits for `gate` to
/// exist, prints `after`, and exits `code`.
fn gated(name: &str, before: &[&str], gate: &Path, after: &[&str], code: i32) -> String {
    let echo = |lines: &[&str]| -> String { lines.iter().map(|l| format!("echo {l}; ")).collect() };
    let script = format!(
        "{}while [ ! -e {} ]; do sleep 0.05; done; {}exit {code}",
        echo(before),
        gate.display(),
        echo(after)
    );
    format!(
        "name = \"{name}\"\n[[step]]\nname = \"talk\"\nqueue = \"work\"\nrun = {}\n",
        sh(&script)
    )
}

/// `opsdeck logs ARGS` running, its stdout read line by line.
struct Following {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Following {
    fn start(engine: &Engine, args: &[&str]) -> Self {
        let mut cmd = tokio::process::Command::from(engine.cli_command(args));
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start opsdeck logs");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line, within [`DEADLINE`]; `None` at the end.
    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("a line from opsdeck logs within the deadline")
            .expect("read opsdeck logs' stdout")
    }

    /// Every line left, the exit code and stderr.
    async fn finish(mut self) -> (Vec<String>, i32, String) {
        let mut rest = Vec::new();
        while let Some(line) = self.line().await {
            rest.push(line);
        }
        let out = tokio::time::timeout(DEADLINE, self.child.wait_with_output())
            .await
            .expect("opsdeck logs ends with its step")
            .expect("wait for opsdeck logs");
        let code = out.status.code().expect("exited, not killed");
        (
            rest,
            code,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll opsdeck logs").is_none()
    }
}

#[tokio::test]
async fn logs_follow_prints_lines_as_the_step_prints_them_and_exits_with_its_outcome() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 2).await;
    for (name, code, want) in [("talks", 0, 0), ("fails", 3, 1)] {
        let gate = engine.path(&format!("gate-{name}"));
        let run = engine
            .submit(&gated(name, &["line1"], &gate, &["line2"], code))
            .await;
        let mut logs = Following::start(&engine, &["logs", &run.id, "--step", "1", "-f"]);
        // The step is still waiting at its gate: line1 came live.
        assert_eq!(logs.line().await.as_deref(), Some("line1"), "{name}");
        assert!(logs.running(), "{name}: logs -f waits for the step's end");
        let step = engine.get_run(&run.id).await.steps[0].state;
        assert_eq!(step, StepState::Running as i32, "{name}");
        std::fs::write(&gate, "").unwrap();
        let (rest, exit, stderr) = logs.finish().await;
        assert_eq!(rest, ["line2"], "{name}: {stderr}");
        assert_eq!(
            exit, want,
            "{name}: the step's outcome is the exit status; {stderr}"
        );
    }
}

#[tokio::test]
async fn a_follow_resumed_after_an_engine_restart_misses_nothing_and_repeats_nothing() {
    let mut engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    let gate = engine.path("gate");
    let run = engine
        .submit(&gated(
            "restarted",
            &["line1", "line2"],
            &gate,
            &["line3", "line4", "line5"],
            0,
        ))
        .await;
    let mut logs = Following::start(&engine, &["logs", &run.id, "-f"]);
    assert_eq!(logs.line().await.as_deref(), Some("line1"));
    assert_eq!(logs.line().await.as_deref(), Some("line2"));

    let head = engine.all_events(0).await.last().map_or(0, |e| e.seq);
    engine.restart().await;
    // The worker is back on the new engine before the step prints again
    // (output printed while no engine listens is not kept live).
    engine
        .wait_event(
            "",
            |e| e.kind == "worker.registered" && e.seq > head,
            Duration::from_secs(30),
        )
        .await;
    let lease_alive = engine.get_run(&run.id).await.steps[0].state;
    assert_eq!(lease_alive, StepState::Running as i32, "{}", engine.logs());
    std::fs::write(&gate, "").unwrap();

    let (rest, exit, stderr) = logs.finish().await;
    let mut all = vec!["line1".to_owned(), "line2".to_owned()];
    all.extend(rest);
    for n in 1..=5 {
        let line = format!("line{n}");
        let count = all.iter().filter(|l| **l == line).count();
        assert_eq!(count, 1, "{line} printed {count} times: {all:?}\n{stderr}");
    }
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(exit, 0, "{stderr}");
    assert!(
        stderr.contains("lost the output stream"),
        "the reconnect is noted on stderr: {stderr}"
    );
}

#[tokio::test]
async fn stored_output_is_printed_plain_into_a_pipe_with_stderr_unmarked() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    let spec = format!(
        "name = \"both\"\n[[step]]\nname = \"one\"\nqueue = \"work\"\nrun = {}\n\
         [[step]]\nname = \"two\"\nqueue = \"work\"\nrun = \"echo second\"\n",
        sh("echo out; sleep 0.2; echo err >&2")
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_run(
            &run.id,
            |r| r.state == opsdeck_tests::pb::RunState::Succeeded as i32,
            DEADLINE,
        )
        .await;
    let out = engine.cli(&["logs", &run.id, "--step", "one"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "out\nerr\n", "bytes as written, no marks in a pipe");
    // The whole run; then a step by number from an offset.
    let out = engine.cli(&["logs", &run.id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nerr\nsecond\n");
    let out = engine.cli(&["logs", &run.id, "--step", "1", "--from", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t\nerr\n");
    // A step the run has not: a usage error naming its steps.
    let out = engine.cli(&["logs", &run.id, "--step", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no step 3") && stderr.contains("1 one, 2 two"),
        "{stderr}"
    );
}

#[tokio::test]
async fn follow_output_refuses_what_it_cannot_follow() {
    let engine = Engine::start_default().await;
    let run = engine
        .submit("name = \"idle\"\n[[step]]\nqueue = \"nobody\"\nrun = \"true\"\n")
        .await;
    let api = engine.api().await;
    let ask = |req: FollowOutputRequest| {
        let mut runs = api.runs.clone();
        async move { runs.follow_output(req).await.map(|_| ()).unwrap_err() }
    };
    let e = ask(FollowOutputRequest {
        run_id: run.id.clone(),
        attempt: Some(1),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("step_index"), "{e:?}");
    let e = ask(FollowOutputRequest {
        run_id: run.id.clone(),
        step_index: Some(4),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = ask(FollowOutputRequest {
        run_id: "01HNOSUCHRUN0000000000000Z".into(),
        from: Some(OutputPosition::default()),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn the_console_run_screen_shows_each_line_within_a_second_of_the_step_printing_it() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    let gates: Vec<_> = (1..=3).map(|n| engine.path(&format!("gate{n}"))).collect();
    // Prints `first`, then one line per gate as each appears.
    let mut script = "echo first; ".to_owned();
    for (n, gate) in gates.iter().enumerate() {
        script.push_str(&format!(
            "while [ ! -e {} ]; do sleep 0.02; done; echo fresh-{}; ",
            gate.display(),
            n + 1
        ));
    }
    let spec = format!(
        "name = \"tails\"\n[[step]]\nname = \"talk\"\nqueue = \"work\"\nrun = {}\n",
        sh(&script)
    );
    let run = engine.submit(&spec).await;

    let tmux = opsdeck_tests::Tmux::start(
        &opsdeck_tests::opsdeck(),
        &["--engine", &engine.unix_addr()],
        80,
        24,
    );
    tmux.wait("the console live", DEADLINE, |s| s.contains("live"))
        .await;
    tmux.keys(&["2"]);
    tmux.wait("the run on the Runs screen", DEADLINE, |s| {
        s.contains("tails")
    })
    .await;
    tmux.keys(&["Enter"]);
    tmux.wait("the step's first line", DEADLINE, |s| {
        s.contains("Output") && s.contains("first")
    })
    .await;
    for (n, gate) in gates.iter().enumerate() {
        let line = format!("fresh-{}", n + 1);
        std::fs::write(gate, "").unwrap();
        // Live from the stream: well within the old 2 s between reads.
        tmux.wait(
            &format!("{line} within a second"),
            Duration::from_secs(1),
            |s| s.contains(&line),
        )
        .await;
    }
    engine
        .wait_run_state(&run.id, opsdeck_tests::pb::RunState::Succeeded, DEADLINE)
        .await;
    tmux.keys(&["q", "q"]);
}
