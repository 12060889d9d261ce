//! Marked rows in the real console (tmux, 100×30) against a real engine
//! and worker: `space` marks three of four pending approvals, `a` approves
//! the three with one confirmation and one reason; the engine records each
//! approval with that reason and the console user's name, the fourth stays
//! pending, and the three runs go on to finish.
//!
//! The runs are submitted over TCP as the token's identity, so that the
//! console (on the Unix socket, as the OS user) is another person and the
//! four-eyes rule lets it approve.

use opsdeck_tests::pb::{ApprovalState, ListApprovalsRequest, RunState, SubmitRunRequest};
use opsdeck_tests::{DEADLINE, Engine, TOKEN_IDENTITY, Tmux, Worker, opsdeck, sh};

fn gated(name: &str) -> String {
    format!(
        "name = \"{name}\"\n\
         [[step]]\nname = \"gate\"\napproval = {{ timeout = \"10m\" }}\n\
         [[step]]\nname = \"ship\"\nqueue = \"build\"\nrun = {}\n",
        sh("echo shipped"),
    )
}

#[tokio::test]
async fn the_console_marks_three_approvals_and_approves_them_with_one_reason() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["build"], 2).await;
    let me = engine.os_identity().await;
    assert_ne!(me, TOKEN_IDENTITY);

    let mut runs = Vec::new();
    for name in ["ship-a", "ship-b", "ship-c", "ship-d"] {
        let run = engine
            .ci_api()
            .await
            .runs
            .submit_run(SubmitRunRequest {
                spec: gated(name),
                reason: "marks e2e".into(),
                ..Default::default()
            })
            .await
            .expect("submit over TCP with the token")
            .into_inner()
            .run
            .expect("the run");
        engine.pending_approval(&run.id).await;
        runs.push(run);
    }

    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 100, 30);
    tmux.wait("the pending approvals", DEADLINE, |s| {
        s.contains("4 approvals pending")
    })
    .await;
    tmux.keys(&["6"]);
    tmux.wait("the four on the Approvals screen", DEADLINE, |s| {
        ["ship-a", "ship-b", "ship-c", "ship-d"]
            .iter()
            .all(|n| s.contains(n))
    })
    .await;

    // space marks the selected row and moves down: three presses, three
    // marked rows.
    tmux.keys(&["Space", "Space", "Space"]);
    let screen = tmux
        .wait("three marked", DEADLINE, |s| s.contains("3 marked"))
        .await;
    assert_eq!(
        screen
            .lines()
            .filter(|l| l.trim_start_matches(['│', ' ']).starts_with('*'))
            .count(),
        3,
        "three rows carry the mark:\n{screen}"
    );

    // One `a`, one dialog for the three, one reason.
    tmux.keys(&["a"]);
    tmux.wait("one confirmation for the three", DEADLINE, |s| {
        s.contains("Approve 3 approvals") && s.contains("3 of 3 marked")
    })
    .await;
    tmux.keys(&["Tab"]);
    let reason = "e2e: the three canaries look good";
    tmux.text(reason);
    tmux.wait("the typed reason", DEADLINE, |s| s.contains(reason))
        .await;
    tmux.keys(&["Tab", "Enter"]);
    let screen = tmux
        .wait("the outcome in the status line", DEADLINE, |s| {
            s.contains("approve: 3 of 3 done")
        })
        .await;
    assert!(
        !screen.contains("marked"),
        "the marks go once the change is done:\n{screen}"
    );

    // The engine recorded three approvals, each with the one reason and
    // our name; the fourth is still pending.
    let approvals = engine
        .api()
        .await
        .approvals
        .list_approvals(ListApprovalsRequest { all: true })
        .await
        .expect("list approvals")
        .into_inner()
        .approvals;
    let approved: Vec<_> = approvals
        .iter()
        .filter(|a| a.state == ApprovalState::Approved as i32)
        .collect();
    assert_eq!(approved.len(), 3, "{approvals:#?}");
    for a in &approved {
        let decision = a.decisions.last().expect("a decision");
        assert_eq!(decision.actor, me);
        assert_eq!(decision.comment, reason);
    }
    let pending: Vec<_> = approvals
        .iter()
        .filter(|a| a.state == ApprovalState::Pending as i32)
        .collect();
    assert_eq!(pending.len(), 1, "{approvals:#?}");
    for run in &runs {
        if run.id == pending[0].run_id {
            continue;
        }
        engine
            .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
            .await;
    }
}
