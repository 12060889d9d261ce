//! The real `opsdeck` console in a real terminal (tmux, 80×24) against a
//! real engine and a real worker: it shows a pending approval; keys
//! approve it with a typed reason; the engine records the approval with
//! that reason and the run finishes; the engine restarts and the console,
//! never restarted, shows the events after the restart (and no "leader
//! changed": the same engine came back); resized to 20×5 it says it is
//! too small, and back to 80×24 it renders everything again. A stuck
//! lease and its quarantined run name show on the Overview, the Leases and
//! the Quarantines screens, and keys clear the quarantine with a reason. A viewer is not offered changes and
//! is told which role a change needs. A frozen engine (SIGSTOP) takes the
//! header off "live" within seconds, stale since its last word; thawed, it
//! is live again; a graceful stop is said as one on every retry. A
//! console that never connected says so, with the address and the error,
//! and shows no zeros. A queue only a worker serves is on the Queues
//! screen without ctrl-r, as `opsdeck queues` lists it. On the Run
//! screen, `/line 5` searches the output: the text typed after `/` is
//! text, not keys (5 would switch to Queues).
//!
//! The run is submitted over TCP as the token's identity, so that the
//! console (on the Unix socket, as the OS user) is another person and the
//! four-eyes rule lets it approve. Every wait polls the screen or the API
//! with a deadline; nothing sleeps to assert.

use std::time::Duration;

use opsdeck_tests::pb::{
    ApprovalState, ListApprovalsRequest, ListQuarantinesRequest, ListQueuesRequest, RunState,
    StepState, SubmitRunRequest, WhoamiRequest,
};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, FakeAgent, TOKEN_IDENTITY, Tmux, Worker, describe_events,
    opsdeck, sh,
};

/// A run that builds, waits for an approval (four eyes), then ships.
fn gated(name: &str, engine: &Engine) -> String {
    format!(
        "name = \"{name}\"\n\
         [[step]]\nname = \"build\"\nqueue = \"build\"\nrun = {}\n\
         [[step]]\nname = \"gate\"\napproval = {{ timeout = \"10m\" }}\n\
         [[step]]\nname = \"ship\"\nqueue = \"build\"\nrun = {}\n",
        sh("echo built"),
        sh(&format!("echo shipped > {}", engine.path(name).display())),
    )
}

#[tokio::test]
async fn console_approves_with_a_typed_reason_survives_an_engine_restart_and_a_resize() {
    let mut engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let me = engine.os_identity().await;
    assert_ne!(me, TOKEN_IDENTITY);

    let submit = |spec: String| SubmitRunRequest {
        spec,
        reason: "console e2e".into(),
        ..Default::default()
    };
    let run = engine
        .ci_api()
        .await
        .runs
        .submit_run(submit(gated("ship-it", &engine)))
        .await
        .expect("submit over TCP with the token")
        .into_inner()
        .run
        .expect("the run");
    assert_eq!(run.submitted_by, TOKEN_IDENTITY);
    let approval = engine.pending_approval(&run.id).await;

    let engine_addr = engine.unix_addr();
    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine_addr], 80, 24);

    // It shows the pending approval: the header badge, then the list.
    tmux.wait("the pending-approval badge", DEADLINE, |s| {
        s.contains("1 approval pending")
    })
    .await;
    tmux.keys(&["6"]);
    let screen = tmux
        .wait("the approval on the Approvals screen", DEADLINE, |s| {
            s.contains("ship-it") && s.contains("pending")
        })
        .await;
    assert!(
        screen.contains(&format!("as {me}")),
        "the header names who we are:\n{screen}"
    );

    // a, Tab to the reason, type it, Tab to OK, Enter.
    tmux.keys(&["a"]);
    tmux.wait("the confirmation", DEADLINE, |s| {
        s.contains("Approve") && s.contains("OK: approve")
    })
    .await;
    tmux.keys(&["Tab"]);
    let reason = "e2e: change 42 looks good";
    tmux.text(reason);
    tmux.wait("the typed reason", DEADLINE, |s| s.contains(reason))
        .await;
    tmux.keys(&["Tab", "Enter"]);
    tmux.wait("the outcome in the status line", DEADLINE, |s| {
        s.contains(&format!("approved {}", approval.id)) && s.contains("continues")
    })
    .await;

    // The engine recorded it, with that reason and our name; the run ends.
    let done = engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(done.state, RunState::Succeeded as i32);
    let events = engine.events(&run.id).await;
    let approved = events
        .iter()
        .find(|e| e.kind == "approval.approved")
        .unwrap_or_else(|| panic!("no approval.approved event:\n{}", describe_events(&events)));
    assert_eq!(approved.reason, reason);
    assert_eq!(approved.actor, me);
    tmux.keys(&["8"]);
    tmux.wait("the run's end on the Events screen", DEADLINE, |s| {
        s.contains("run.succeeded")
    })
    .await;

    // The engine restarts; the console is not restarted and shows what
    // happens after.
    engine.restart().await;
    let after = engine
        .ci_api()
        .await
        .runs
        .submit_run(submit(gated("after-restart", &engine)))
        .await
        .expect("submit after the restart")
        .into_inner()
        .run
        .expect("the run");
    engine.pending_approval(&after.id).await;
    let screen = tmux
        .wait(
            "the events after the restart, live",
            Duration::from_secs(30),
            |s| {
                s.contains("after-restart")
                    && s.contains("approval.requested")
                    && s.contains(" live ")
            },
        )
        .await;
    // The same engine came back (a new process, the same leader epoch):
    // not a new leader.
    assert!(
        !screen.contains("leader changed"),
        "a restart is not a leader change:\n{screen}"
    );

    // Squeezed to 20×5 it says it needs more room (and does not crash);
    // back to 80×24 everything is there again.
    tmux.resize(20, 5);
    tmux.wait("the size it needs, at 20×5", DEADLINE, |s| {
        let lines: Vec<&str> = s.lines().collect();
        s.contains("too small") && lines.iter().all(|l| l.chars().count() <= 20)
    })
    .await;
    tmux.resize(80, 24);
    tmux.wait("the full screen again at 80×24", DEADLINE, |s| {
        s.contains("after-restart") && s.contains("8 Events") && s.contains("1 approval pending")
    })
    .await;

    // q quits from the top, and the terminal is left as it was found.
    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

const WEDGED: &str = "name = \"wedged\"\n[[step]]\nname = \"s\"\nqueue = \"hang\"\ntimeout = \"1s\"\nrun = \"true\"\n";

#[tokio::test]
async fn console_shows_a_stuck_lease_and_its_quarantined_name_and_clears_the_quarantine_with_keys()
{
    // One stuck lease quarantines the name.
    let opts = EngineOpts {
        config: "[engine]\nquarantine_after = 1\nquarantine_window = \"10m\"\n".into(),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    // A worker that takes the step and keeps heartbeating but never
    // reports, as one whose step's processes cannot be killed.
    let (mut fake, _) = FakeAgent::connect(&engine, "wedged-host", &["hang"], 1).await;
    let run = engine.submit(WEDGED).await;
    let a = fake.assignment().await;
    fake.started(&a, 4242).await;
    let beating = fake.keep_heartbeating(&[&a], Duration::from_millis(100));
    engine
        .wait_event(&run.id, |e| e.kind == "lease.stuck", DEADLINE)
        .await;
    engine
        .wait_event("", |e| e.kind == "run_name.quarantined", DEADLINE)
        .await;
    let me = engine.os_identity().await;

    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 80, 24);

    // The Overview: a header badge, the stuck lease counted, the name.
    tmux.wait(
        "the quarantine and the stuck lease on the Overview",
        DEADLINE,
        |s| {
            s.contains("1 quarantined")
                && s.contains("1 STUCK")
                && s.contains("quarantine wedged (1 stuck")
        },
    )
    .await;

    // The Leases screen marks the lease.
    tmux.keys(&["7"]);
    tmux.wait("the stuck lease on the Leases screen", DEADLINE, |s| {
        s.contains("Leases 1/1 (1 STUCK)") && s.contains("wedged") && s.contains("STUCK")
    })
    .await;

    // The Quarantines screen lists it; U, a reason, OK clears it.
    tmux.keys(&["9"]);
    tmux.wait("the Quarantines screen", DEADLINE, |s| {
        s.contains("Quarantines 1") && s.contains("wedged") && s.contains("U clear")
    })
    .await;
    tmux.keys(&["U"]);
    tmux.wait("the confirmation", DEADLINE, |s| {
        s.contains("Clear quarantine") && s.contains("OK: clear quarantine")
    })
    .await;
    tmux.keys(&["Tab"]);
    let reason = "e2e: the NFS mount is back";
    tmux.text(reason);
    tmux.wait("the typed reason", DEADLINE, |s| s.contains(reason))
        .await;
    tmux.keys(&["Tab", "Enter"]);
    tmux.wait("the outcome, and the list empty", DEADLINE, |s| {
        s.contains("cleared the quarantine of wedged")
            && s.contains("no quarantined run names")
            && !s.contains("1 quarantined")
    })
    .await;

    // The engine cleared it, with our reason and name, and takes the name
    // again.
    let mut api = engine.api().await;
    let left = api
        .runs
        .list_quarantines(ListQuarantinesRequest {})
        .await
        .expect("list quarantines")
        .into_inner()
        .quarantines;
    assert!(left.is_empty(), "{left:#?}");
    let cleared = engine
        .wait_event("", |e| e.kind == "run_name.quarantine_cleared", DEADLINE)
        .await;
    assert_eq!(cleared.reason, reason);
    assert_eq!(cleared.actor, me);
    let again = engine.submit(WEDGED).await;
    assert_eq!(again.steps[0].state, StepState::Queued as i32, "{again:#?}");
    beating.abort();

    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

const VIEWER_TOKEN: &str = "tok_e2e_viewer_only";

#[tokio::test]
async fn a_viewer_is_offered_no_changes_and_is_told_the_role_a_key_needs() {
    let opts = EngineOpts {
        config: opsdeck_tests::token_entry(VIEWER_TOKEN, "watcher", &["viewer"], &[]),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    let who = engine
        .tcp_api(Some(VIEWER_TOKEN))
        .await
        .console
        .whoami(WhoamiRequest {})
        .await
        .expect("whoami as the viewer")
        .into_inner();
    assert_eq!(who.roles, ["viewer"], "{who:#?}");
    let run = engine
        .submit("name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = {}\n")
        .await;
    let approval = engine.pending_approval(&run.id).await;

    let addr = engine.tcp_addr().to_string();
    let tmux = Tmux::start(
        &opsdeck(),
        &["--engine", &addr, "--token", VIEWER_TOKEN],
        80,
        24,
    );
    tmux.wait("who we are and our role", DEADLINE, |s| {
        s.contains("as watcher (viewer)") && s.contains("1 approval pending")
    })
    .await;
    tmux.keys(&["6"]);
    let screen = tmux
        .wait("the approval, without its keys", DEADLINE, |s| {
            s.contains("gated") && s.contains("pending")
        })
        .await;
    assert!(
        !screen.contains("a approve") && !screen.contains("x reject"),
        "a viewer is offered approve:\n{screen}"
    );
    tmux.keys(&["a"]);
    tmux.wait("the role needed, in the status line", DEADLINE, |s| {
        s.contains("approving needs the approver role")
    })
    .await;
    assert!(
        !tmux.screen().contains("OK: approve"),
        "no dialog for a change that would be refused"
    );
    let approvals = engine
        .api()
        .await
        .approvals
        .list_approvals(ListApprovalsRequest::default())
        .await
        .expect("list approvals")
        .into_inner()
        .approvals;
    let still = approvals
        .iter()
        .find(|a| a.id == approval.id)
        .expect("the approval");
    assert_eq!(still.state, ApprovalState::Pending as i32);

    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

/// The header: the first line of the screen.
fn header(screen: &str) -> &str {
    screen.lines().next().unwrap_or("")
}

/// Whether the header says the link is live (tmux trims the line's end).
fn live(screen: &str) -> bool {
    format!("{} ", header(screen)).contains(" live ")
}

/// The time of day now, in seconds, as the console's clock reads it (the
/// local time zone).
fn seconds_of_day_now() -> u32 {
    let out = std::process::Command::new("date")
        .arg("+%H:%M:%S")
        .output()
        .expect("run date");
    seconds_of_day(String::from_utf8_lossy(&out.stdout).trim()).expect("date's time")
}

fn seconds_of_day(clock: &str) -> Option<u32> {
    let mut parts = clock.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(h * 3600 + m * 60 + s)
}

/// The retry the status line counts: "(attempt N)", else 0.
fn attempt(screen: &str) -> u32 {
    screen
        .split("(attempt ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The "HH:MM:SS" after "stale since" on the header.
fn stale_since(screen: &str) -> Option<u32> {
    let rest = header(screen).split("stale since ").nth(1)?;
    seconds_of_day(rest.get(..8)?)
}

#[tokio::test]
async fn a_frozen_engine_goes_stale_within_seconds_from_its_last_word_and_a_stopped_one_says_so() {
    let mut engine = Engine::start_default().await;
    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 80, 24);
    tmux.wait("the console live", DEADLINE, live).await;

    // Frozen: the socket stays open and nothing answers. The header leaves
    // "live" within a few seconds, while the engine is still stopped, and
    // "stale since" is the time of the last word heard, not of the resume.
    let frozen_at = seconds_of_day_now();
    engine.freeze();
    let frozen = std::time::Instant::now();
    let screen = tmux
        .wait(
            "the header leaving live while the engine is frozen",
            Duration::from_secs(7),
            |s| !live(s) && header(s).contains("stale since"),
        )
        .await;
    let noticed = frozen.elapsed();
    assert!(
        opsdeck_tests::process_stopped(engine.pid() as i32),
        "the engine is still stopped"
    );
    let since = stale_since(&screen).expect("a time after stale since");
    // The engine says something at least every 10 s; the last word came
    // before the freeze (allowing a second for the clocks' rounding).
    let before = (frozen_at + 86_400 + 1 - since) % 86_400;
    assert!(
        before <= 12,
        "stale since is {before}s before the freeze (noticed after {noticed:?}):\n{screen}"
    );

    // Thawed, it is live again and no longer stale.
    engine.thaw();
    tmux.wait("live again after the thaw", Duration::from_secs(30), |s| {
        live(s) && !header(s).contains("stale since")
    })
    .await;

    // A graceful stop is said as one, not as a socket error, on every
    // retry after it.
    engine.sigterm().await;
    let screen = tmux
        .wait(
            "the engine's shutdown on the header, retried",
            DEADLINE,
            |s| header(s).contains("engine shut down") && attempt(s) >= 3,
        )
        .await;
    assert!(
        screen.contains("shutting down"),
        "the status line says the engine is shutting down:\n{screen}"
    );
    assert!(
        !screen.contains("os error") && !screen.contains("transport error"),
        "a raw socket error is shown:\n{screen}"
    );

    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

#[tokio::test]
async fn a_console_that_never_connected_says_so_with_the_address_and_shows_no_zeros() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("no-engine.sock");
    let addr = format!("unix://{}", socket.display());
    let tmux = Tmux::start(&opsdeck(), &["--engine", &addr], 80, 24);
    let screen = tmux
        .wait(
            "never connected, the address and the error",
            DEADLINE,
            |s| {
                header(s).contains("never connected")
                    && s.contains("no-engine.sock")
                    && s.contains("No such file")
            },
        )
        .await;
    assert!(
        !screen.contains("0 idle") && !screen.contains("0 pending"),
        "nothing is known, so nothing is zero:\n{screen}"
    );
    assert!(
        screen.contains('?'),
        "unknowns are shown as such:\n{screen}"
    );

    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

#[tokio::test]
async fn a_queue_only_a_worker_serves_appears_on_the_queues_screen_without_a_resync() {
    let engine = Engine::start_default().await;
    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 80, 24);
    tmux.wait("the console live", DEADLINE, live).await;
    tmux.keys(&["5"]);
    tmux.wait("the Queues screen", DEADLINE, |s| s.contains("Queues 0"))
        .await;

    // A worker serving a queue no step has named yet: `opsdeck queues`
    // lists it, and so does the console, without ctrl-r.
    let _worker = Worker::start(&engine, "w-deploy", &["deploy"], 1).await;
    let listed = engine
        .api()
        .await
        .queues
        .list_queues(ListQueuesRequest {})
        .await
        .expect("list queues")
        .into_inner()
        .queues;
    assert!(listed.iter().any(|q| q.name == "deploy"), "{listed:#?}");
    tmux.wait("the worker's queue on the Queues screen", DEADLINE, |s| {
        s.contains("Queues 1") && s.contains("deploy")
    })
    .await;

    tmux.keys(&["q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}

#[tokio::test]
async fn a_search_typed_on_the_run_screen_finds_the_line_and_no_character_is_taken_for_a_key() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 1).await;
    let spec = format!(
        "name = \"counts\"\n[[step]]\nname = \"count\"\nqueue = \"build\"\nrun = {}\n",
        sh("i=1; while [ $i -le 40 ]; do echo line $i; i=$((i+1)); done")
    );
    let run = engine
        .api()
        .await
        .runs
        .submit_run(SubmitRunRequest {
            spec,
            reason: "console e2e".into(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .run
        .expect("the run");
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;

    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 80, 24);
    tmux.wait("the console live", DEADLINE, live).await;
    tmux.keys(&["2"]);
    tmux.wait("the run on the Runs screen", DEADLINE, |s| {
        s.contains("counts") && s.contains("Runs 1/1")
    })
    .await;
    tmux.keys(&["Enter"]);
    tmux.wait("the run's output", DEADLINE, |s| {
        s.contains("Output") && s.contains("line 40")
    })
    .await;

    // `/line 5`: l, i, n, e, space and 5 are keys elsewhere (5 is the
    // Queues screen, space freezes); typed after `/` they are text.
    tmux.keys(&["/"]);
    tmux.text("line 5");
    let typing = tmux
        .wait("the search being typed", DEADLINE, |s| {
            s.contains("/line 5")
        })
        .await;
    assert!(
        !typing.contains("Queues 0"),
        "5 switched screens:\n{typing}"
    );
    tmux.keys(&["Enter"]);
    let found = tmux
        .wait("the line found", DEADLINE, |s| {
            s.contains("/line 5: line 6 of 41")
        })
        .await;
    assert!(found.contains("Output"), "not on the Run screen:\n{found}");
    assert!(
        !found.contains("frozen"),
        "space froze the display:\n{found}"
    );

    tmux.keys(&["q", "q"]);
    tmux.wait("the console's exit", DEADLINE, |s| {
        s.contains("[console exited: 0]")
    })
    .await;
}
