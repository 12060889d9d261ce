//! Unit tests of [`super`].

use super::*;
use opsdeck_proto::v1::OutputChunk;

#[test]
fn a_broken_call_is_asked_again_and_an_answer_is_not() {
    use tonic::{Code, Status};
    for retried in [
        Status::unavailable("connection refused"),
        Status::unknown("transport error"),
        Status::deadline_exceeded("no answer"),
        Status::cancelled("stream reset"),
    ] {
        assert!(ambiguous(&retried), "{retried:?}");
    }
    for answered in [
        Status::invalid_argument("bad spec"),
        Status::permission_denied("no"),
        Status::unknown("the engine said something odd"),
        Status::new(Code::AlreadyExists, "another spec"),
    ] {
        assert!(!ambiguous(&answered), "{answered:?}");
    }
    assert_ne!(fresh_key(), fresh_key());
    assert!(fresh_key().starts_with("cli-"));
}

const NOW: i64 = 1_700_000_000_000;

fn step(index: u32, name: &str, state: StepState) -> Step {
    Step {
        index,
        name: name.into(),
        kind: StepKind::Exec as i32,
        state: state as i32,
        queue: "build".into(),
        attempt: 1,
        max_attempts: 3,
        worker_id: "w-1".into(),
        started_at_ms: NOW - 60_000,
        ..Step::default()
    }
}

fn run() -> Run {
    Run {
        id: "01HRUN".into(),
        name: "deploy-api".into(),
        submitted_by: "ann".into(),
        state: RunState::Running as i32,
        created_at_ms: NOW - 312_000,
        updated_at_ms: NOW - 5_000,
        current_step: 1,
        steps: vec![
            Step {
                has_exit_code: true,
                finished_at_ms: NOW - 30_000,
                ..step(0, "build", StepState::Succeeded)
            },
            step(1, "deploy", StepState::Running),
        ],
        ..Run::default()
    }
}

fn chunk(step_index: u32, attempt: u32, stream: &str, data: &str) -> OutputChunk {
    OutputChunk {
        step_index,
        attempt,
        stream: stream.into(),
        data: data.into(),
        ..OutputChunk::default()
    }
}

fn list_args(args: &[&str]) -> ListArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ListArgs,
    }
    Cli::try_parse_from(std::iter::once("runs").chain(args.iter().copied()))
        .unwrap()
        .args
}

#[test]
fn runs_flags_become_the_engines_filters() {
    let args = list_args(&[
        "--name",
        "deploy-*",
        "--label",
        "team=web",
        "--label",
        "env=prod=eu",
        "--by",
        "ann",
        "--since",
        "2h",
        "--until",
        "2023-11-14T22:13:20Z",
        "--state",
        "failed",
        "--limit",
        "50",
        "--page",
        "tok1",
    ]);
    let request = list_request(&args, NOW + 3_600_000).unwrap();
    assert_eq!(request.name, "deploy-*");
    assert_eq!(
        request.labels,
        [
            ("team".to_owned(), "web".to_owned()),
            ("env".to_owned(), "prod=eu".to_owned())
        ]
        .into()
    );
    assert_eq!(request.submitted_by, "ann");
    assert_eq!(request.since_ms, NOW - 3_600_000);
    assert_eq!(request.until_ms, NOW);
    assert_eq!(request.states, [RunState::Failed as i32]);
    assert_eq!(request.limit, 50);
    assert_eq!(request.page_token, "tok1");
    assert!(!args.all);

    let none = list_request(&list_args(&[]), NOW).unwrap();
    assert_eq!(none, ListRunsRequest::default(), "no flags, no filters");
}

#[test]
fn since_after_until_is_a_usage_error() {
    let args = list_args(&["--since", "1h", "--until", "2h"]);
    let e = list_request(&args, NOW).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("--since must be before --until"),
        "{e}"
    );
}

#[test]
fn a_label_needs_a_key_and_an_equals_sign() {
    assert_eq!(label("a=b"), Ok(("a".into(), "b".into())));
    assert_eq!(label("a="), Ok(("a".into(), String::new())));
    assert!(label("ab").unwrap_err().contains("KEY=VALUE"));
    assert!(label("=b").is_err());
}

#[test]
fn a_page_as_json_carries_the_next_token_and_as_text_a_hint() {
    let page = ListRunsResponse {
        runs: vec![run()],
        next_page_token: "tok2".into(),
    };
    let json = serde_json::to_value(&page).unwrap();
    assert_eq!(json["next_page_token"], "tok2");
    assert_eq!(json["runs"][0]["id"], "01HRUN");
    assert_eq!(json["runs"][0]["state"], "running");
    let hint = next_page_hint("tok2");
    assert!(hint.contains("--page tok2"), "{hint}");
    assert!(hint.contains("--all"), "{hint}");
}

fn request(spec: &str) -> SubmitRunRequest {
    SubmitRunRequest {
        spec: spec.into(),
        ..SubmitRunRequest::default()
    }
}

#[test]
fn submissions_go_in_calls_of_at_most_ten_thousand_runs() {
    let sizes: Vec<usize> = batches(
        std::iter::repeat_n(request("x"), 25_001),
        SUBMIT_MAX_RUNS,
        SUBMIT_MAX_BYTES,
    )
    .map(|b| b.len())
    .collect();
    assert_eq!(sizes, [10_000, 10_000, 5_001]);
    assert_eq!(batches(std::iter::empty(), 10, 10).count(), 0);
}

#[test]
fn big_specs_go_in_smaller_calls_and_one_too_big_goes_alone() {
    let spec = "x".repeat(400);
    let sizes: Vec<usize> = batches(std::iter::repeat_n(request(&spec), 10), 100, 1_000)
        .map(|b| b.len())
        .collect();
    assert_eq!(sizes, [2, 2, 2, 2, 2]);
    let huge = "y".repeat(5_000);
    let sizes: Vec<usize> = batches(
        [request("a"), request(&huge), request("b")].into_iter(),
        100,
        1_000,
    )
    .map(|b| b.len())
    .collect();
    assert_eq!(sizes, [1, 1, 1]);
}

fn submit_args(args: &[&str]) -> SubmitArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SubmitArgs,
    }
    Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied()))
        .unwrap()
        .args
}

#[test]
fn several_runs_cannot_be_waited_for_nor_share_a_key_nor_read_stdin_twice() {
    assert!(check_many(&submit_args(&["a.toml", "b.toml"])).is_ok());
    for (args, words) in [
        (
            &["a.toml", "b.toml", "--wait"][..],
            "--wait follows one run",
        ),
        (
            &["a.toml", "--count", "3", "--idempotency-key", "k"],
            "names one run",
        ),
        (&["-", "-"], "only once"),
    ] {
        let e = check_many(&submit_args(args)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(words), "{args:?}: {e}");
    }
}

#[test]
fn submit_wait_ends_on_the_update_that_makes_the_run_final() {
    use opsdeck_proto::v1::{Event, RunUpdate};
    let update = |state: RunState| Event {
        run_id: "01HRUN".into(),
        run_update: Some(RunUpdate {
            state: state as i32,
            ..RunUpdate::default()
        }),
        ..Event::default()
    };
    assert!(ends(&update(RunState::Failed), "01HRUN"));
    assert!(!ends(&update(RunState::Running), "01HRUN"));
    assert!(!ends(&update(RunState::Failed), "01HOTHER"));
    let plain = Event {
        run_id: "01HRUN".into(),
        ..Event::default()
    };
    assert!(!ends(&plain, "01HRUN"));
}

#[test]
fn runs_table_shows_state_words_step_and_age() {
    assert_eq!(
        run_table(&[run()], Clock::relative(NOW)).render(false),
        "ID      NAME        STATE    STEP        BY   CREATED\n\
         01HRUN  deploy-api  running  2/2 deploy  ann  5m12s ago\n"
    );
}

#[test]
fn run_detail_shows_fields_steps_and_the_last_attempts_tail() {
    let output = join_chunks(&[
        chunk(0, 1, "stdout", "compiling\n"),
        chunk(1, 1, "stdout", "old attempt\n"),
        chunk(1, 2, "stdout", "one\ntwo\n"),
        chunk(1, 2, "stderr", "three\n"),
    ]);
    let text = run_detail(&run(), &output, 2, Clock::relative(NOW), false, None);
    assert_eq!(
        text,
        "run        01HRUN\n\
         name       deploy-api\n\
         state      running\n\
         submitted  5m12s ago by ann\n\
         updated    5s ago\n\
         \n\
         STEP  NAME    KIND  STATE      QUEUE  ATTEMPT  WORKER  EXIT  STARTED  FINISHED  NOTE\n\
         1     build   exec  succeeded  build  1/3      w-1     0     1m ago   30s ago   -\n\
         2     deploy  exec  running    build  1/3      w-1     -     1m ago   -         -\n\
         \n\
         --- step 1 build, attempt 1, last line\n  compiling\n\
         \n\
         --- step 2 deploy, attempt 2, last 2 lines\n  two\n  three\n"
    );
}

#[test]
fn chunks_of_one_stream_are_joined_into_text() {
    let mut capped = chunk(0, 1, "stdout", "b");
    capped.truncated = true;
    let joined = join_chunks(&[
        chunk(0, 1, "stdout", "a"),
        capped,
        chunk(0, 1, "stderr", "c"),
    ]);
    assert_eq!(joined.len(), 2);
    assert_eq!((joined[0].text.as_str(), joined[0].truncated), ("ab", true));
    assert_eq!(
        (joined[1].stream.as_str(), joined[1].text.as_str()),
        ("stderr", "c")
    );
    let json = serde_json::to_value(&joined[0]).unwrap();
    assert_eq!(json["text"], "ab");
}

#[test]
fn last_lines_keeps_what_a_terminal_would_show() {
    assert_eq!(last_lines("a\nb\nc\n", 2), vec!["b", "c"]);
    assert_eq!(
        last_lines("10%\r50%\r100%\r\ndone\r\n", 5),
        vec!["100%", "done"]
    );
    assert_eq!(last_lines("\x1b[32mok\x1b[0m\tx\x07", 1), vec!["ok    x?"]);
    assert!(last_lines("", 5).is_empty());
    assert!(last_lines("a\n", 0).is_empty());
}

#[test]
fn an_unreadable_or_empty_spec_is_a_usage_error() {
    let e = read_spec(Path::new("/no/such/spec.toml")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("/no/such/spec.toml"), "{e}");
    let dir = std::env::temp_dir().join(format!("opsdeck-spec-{}", std::process::id()));
    std::fs::write(&dir, "  \n").unwrap();
    let e = read_spec(&dir).unwrap_err();
    std::fs::remove_file(&dir).unwrap();
    assert!(e.to_string().contains("is empty"), "{e}");
}
