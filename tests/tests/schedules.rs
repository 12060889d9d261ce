//! Schedules on a real engine with a real worker: a schedule every two
//! seconds fires once per fire time, a paused one fires none, fire times
//! missed while the engine was stopped follow the missed-fire policy, the
//! overlap policy skips a fire while the previous run goes on, run-now
//! submits at once, bad input is refused naming it, the console's
//! Schedules screen follows them, and on PostgreSQL a failover neither
//! loses nor doubles a fire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opsdeck_tests::pb::{self, ListRunsRequest, RunState};
use opsdeck_tests::{
    DEADLINE, Engine, EngineOpts, Tmux, Worker, describe_events, fresh_postgres_database, opsdeck,
    wait_for,
};

const EVERY_2S: &str = "*/2 * * * * *";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn spec(engine: &Engine, name: &str, command: &str) -> String {
    let path = engine.path(&format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\n[[step]]\nqueue = \"sched\"\nrun = \"{command}\"\n"),
    )
    .unwrap();
    path.display().to_string()
}

fn cli_ok(engine: &Engine, args: &[&str]) -> String {
    let out = engine.cli(args);
    assert!(
        out.status.success(),
        "opsdeck {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add(engine: &Engine, name: &str, file: &str, extra: &[&str]) {
    let mut args = vec!["schedule", "add", name, file, "--cron", EVERY_2S];
    args.extend_from_slice(extra);
    cli_ok(engine, &args);
}

/// The schedule's events of `kind` (fired, skipped, ...).
fn of<'a>(events: &'a [pb::Event], name: &str, kind: &str) -> Vec<&'a pb::Event> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.schedule.as_ref().is_some_and(|s| s.name == name))
        .collect()
}

/// The fire time an event of a fire records.
fn fire_time(e: &pb::Event) -> i64 {
    e.schedule.as_ref().map_or(0, |s| s.last_fire_at_ms)
}

/// Waits until the clock (the engine's, on this machine) is past `at`.
async fn wait_past(at: i64) {
    wait_for("the clock to pass a time", DEADLINE, || async {
        (now_ms() > at).then_some(())
    })
    .await;
}

async fn runs_of(engine: &Engine, name: &str) -> Vec<pb::Run> {
    let mut api = engine.api().await;
    api.runs
        .list_runs(ListRunsRequest {
            labels: [("opsdeck.schedule".to_owned(), name.to_owned())].into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
}

#[tokio::test]
async fn every_two_seconds_fires_once_per_fire_time_and_none_paused() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["sched"], 4).await;
    let file = spec(&engine, "tick", "true");
    // Overlap allowed: a busy machine's slow run must not skip a fire here.
    add(&engine, "tick", &file, &["--overlap", "allow"]);
    let added = engine
        .wait_event("", |e| e.kind == "schedule.added", DEADLINE)
        .await;
    let start = added.at_ms;

    // About ten seconds of fires, as the events record them.
    let last = engine
        .wait_event(
            "",
            |e| e.kind == "schedule.fired" && fire_time(e) >= start + 10_000,
            DEADLINE,
        )
        .await;
    let end = fire_time(&last);
    let events = engine.all_events(0).await;
    let fires: Vec<i64> = of(&events, "tick", "schedule.fired")
        .iter()
        .map(|e| fire_time(e))
        .filter(|t| *t <= end)
        .collect();
    // Every even second after the add up to the last fire, each once.
    let expected: Vec<i64> = ((start / 2000 + 1)..=(end / 2000))
        .map(|k| k * 2000)
        .collect();
    assert!(
        (5..=6).contains(&expected.len()),
        "{} fire times in {}ms",
        expected.len(),
        end - start
    );
    assert_eq!(fires, expected, "{}", describe_events(&events));
    assert!(of(&events, "tick", "schedule.skipped").is_empty());
    // Each fire submitted one run, as the schedule, labelled with it.
    let runs = wait_for("the fired runs to finish", DEADLINE, || async {
        let runs = runs_of(&engine, "tick").await;
        (runs.len() >= fires.len() && runs.iter().all(|r| r.state == RunState::Succeeded as i32))
            .then_some(runs)
    })
    .await;
    assert!(runs.iter().all(|r| r.submitted_by == "schedule:tick"));

    // Paused, it fires none.
    cli_ok(&engine, &["schedule", "pause", "tick", "--reason", "quiet"]);
    let paused = engine
        .wait_event("", |e| e.kind == "schedule.paused", DEADLINE)
        .await;
    wait_past(paused.at_ms + 5_000).await;
    let events = engine.all_events(paused.seq).await;
    assert!(
        of(&events, "tick", "schedule.fired").is_empty(),
        "{}",
        describe_events(&events)
    );
    let shown = cli_ok(&engine, &["schedule", "list"]);
    assert!(
        shown.contains("tick") && shown.contains("paused"),
        "{shown}"
    );

    // Run-now submits one run at once, paused or not, as the person asking.
    let run_id = cli_ok(&engine, &["schedule", "run-now", "tick"]);
    let run = engine.get_run(run_id.trim()).await;
    assert_eq!(
        run.labels.get("opsdeck.schedule").map(String::as_str),
        Some("tick")
    );
    assert_ne!(run.submitted_by, "schedule:tick");
    let shown = cli_ok(&engine, &["schedule", "show", "tick"]);
    assert!(
        shown.contains(&run_id.trim()[run_id.trim().len() - 8..]),
        "{shown}"
    );

    // Removed, it is gone.
    cli_ok(&engine, &["schedule", "remove", "tick"]);
    let out = engine.cli(&["schedule", "show", "tick"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT_FOUND") && err.contains("\"tick\""),
        "{err}"
    );
}

#[tokio::test]
async fn fire_times_missed_while_stopped_follow_the_missed_fire_policy() {
    let mut engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["sched"], 4).await;
    let file = spec(&engine, "nightly", "true");
    // Overlap allowed: a run still going when the engine stops (its result
    // not yet in) must not turn the missed-fire policy into an overlap skip.
    add(
        &engine,
        "once",
        &file,
        &["--missed", "run-once", "--overlap", "allow"],
    );
    add(
        &engine,
        "skip",
        &file,
        &["--missed", "skip", "--overlap", "allow"],
    );
    engine
        .wait_event("", |e| e.kind == "schedule.fired", DEADLINE)
        .await;

    let status = engine.sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", engine.logs());
    let stopped = now_ms();
    // At least two fire times pass while no engine runs.
    wait_past(stopped + 5_000).await;
    engine.restart().await;

    let first = |events: &[pb::Event], name: &str| -> pb::Event {
        events
            .iter()
            .find(|e| {
                fire_time(e) > stopped
                    && matches!(e.kind.as_str(), "schedule.fired" | "schedule.skipped")
                    && e.schedule.as_ref().is_some_and(|s| s.name == name)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no fire of {name} after the restart"))
    };
    for name in ["once", "skip"] {
        engine
            .wait_event(
                "",
                |e| {
                    fire_time(e) > stopped
                        && matches!(e.kind.as_str(), "schedule.fired" | "schedule.skipped")
                        && e.schedule.as_ref().is_some_and(|s| s.name == name)
                },
                DEADLINE,
            )
            .await;
    }
    let events = engine.all_events(0).await;

    // run-once: one run for every time missed, then on as usual.
    let once = first(&events, "once");
    assert_eq!(once.kind, "schedule.fired", "{}", describe_events(&events));
    assert!(once.message.contains("run-once"), "{}", once.message);
    let missed: Vec<i64> = of(&events, "once", "schedule.fired")
        .iter()
        .map(|e| fire_time(e))
        .filter(|t| *t > stopped && *t <= fire_time(&once))
        .collect();
    assert_eq!(missed, [fire_time(&once)], "one fire for the missed times");

    // skip: none of them runs, and one event says how many were skipped.
    let skip = first(&events, "skip");
    assert_eq!(
        skip.kind,
        "schedule.skipped",
        "{}",
        describe_events(&events)
    );
    assert!(skip.message.contains("missed"), "{}", skip.message);
    let fired_in_gap = of(&events, "skip", "schedule.fired")
        .iter()
        .filter(|e| fire_time(e) > stopped && fire_time(e) <= fire_time(&skip))
        .count();
    assert_eq!(fired_in_gap, 0, "{}", describe_events(&events));
}

/// Every event, or `None` while the engine does not answer (a standby).
async fn try_events(engine: &Engine) -> Option<Vec<pb::Event>> {
    let mut api = engine.api().await;
    let mut out: Vec<pb::Event> = Vec::new();
    loop {
        let req = pb::ListEventsRequest {
            after_seq: out.last().map_or(0, |e| e.seq),
            limit: 10_000,
            ..Default::default()
        };
        let page = api.events.list_events(req).await.ok()?.into_inner().events;
        if page.is_empty() {
            return Some(out);
        }
        out.extend(page);
    }
}

#[tokio::test]
async fn a_fire_while_the_previous_run_goes_on_is_skipped_and_run_now_too() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["sched"], 4).await;
    let file = spec(&engine, "long", "sleep 60");
    add(&engine, "long", &file, &[]);
    let fired = engine
        .wait_event("", |e| e.kind == "schedule.fired", DEADLINE)
        .await;
    let skipped = engine
        .wait_event("", |e| e.kind == "schedule.skipped", DEADLINE)
        .await;
    assert!(
        skipped.message.contains(&fired.run_id) && skipped.message.contains("still going"),
        "{}",
        skipped.message
    );
    let out = engine.cli(&["schedule", "run-now", "long"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still going"), "{err}");
    assert_eq!(runs_of(&engine, "long").await.len(), 1);
}

#[tokio::test]
async fn bad_cron_zone_and_names_are_refused_naming_them() {
    let engine = Engine::start_default().await;
    let file = spec(&engine, "x", "true");
    let refused = |args: &[&str], code: &str, names: &str| {
        let out = engine.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(code) && err.contains(names), "{args:?}: {err}");
    };
    refused(
        &["schedule", "add", "x", &file, "--cron", "61 * * * *"],
        "INVALID_ARGUMENT",
        "\"61 * * * *\"",
    );
    refused(
        &["schedule", "add", "x", &file, "--cron", "0 3 * *"],
        "INVALID_ARGUMENT",
        "4 fields",
    );
    refused(
        &[
            "schedule",
            "add",
            "x",
            &file,
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Mars/Olympus",
        ],
        "INVALID_ARGUMENT",
        "\"Mars/Olympus\"",
    );
    refused(&["schedule", "pause", "nope"], "NOT_FOUND", "\"nope\"");
    cli_ok(
        &engine,
        &[
            "schedule",
            "add",
            "x",
            &file,
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Berlin",
        ],
    );
    refused(
        &["schedule", "add", "x", &file, "--cron", "0 3 * * *"],
        "ALREADY_EXISTS",
        "\"x\"",
    );
    let out = engine.cli(&[
        "schedule",
        "add",
        "y",
        &file,
        "--cron",
        "0 3 * * *",
        "--missed",
        "later",
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad policy is a usage error");
}

#[tokio::test]
async fn on_postgres_a_failover_neither_loses_nor_doubles_a_fire() {
    let Some(db) = fresh_postgres_database("opsdeck_sched").await else {
        eprintln!("OPSDECK_TEST_POSTGRES is not set: no PostgreSQL to fail over on");
        return;
    };
    let replica = || {
        Engine::start(EngineOpts {
            args: vec![
                "--database".into(),
                db.to_string(),
                "--leader-ttl".into(),
                "1s".into(),
            ],
            standby_ok: true,
            ..EngineOpts::default()
        })
    };
    let mut a = replica().await;
    let b = replica().await;
    let file = spec(&a, "ha", "true");
    add(
        &a,
        "ha",
        &file,
        &["--missed", "run-once", "--overlap", "allow"],
    );
    let added = a
        .wait_event("", |e| e.kind == "schedule.added", DEADLINE)
        .await;
    a.wait_event(
        "",
        |e| e.kind == "schedule.fired" && fire_time(e) >= added.at_ms + 4_000,
        DEADLINE,
    )
    .await;
    a.kill9();

    let killed = now_ms();

    // The standby leads and goes on firing: six seconds of fires after the kill.
    let events = wait_for("the standby to fire", Duration::from_secs(60), || async {
        let events = try_events(&b).await?;
        of(&events, "ha", "schedule.fired")
            .iter()
            .any(|e| fire_time(e) >= killed + 6_000)
            .then_some(events)
    })
    .await;
    let fired = of(&events, "ha", "schedule.fired");
    let times: Vec<i64> = fired.iter().map(|e| fire_time(e)).collect();
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(
        times,
        unique,
        "a fire time fired twice:\n{}",
        describe_events(&events)
    );
    // Every fire time from the first to the last is accounted for: fired
    // on time, or covered by the one run-once fire after the gap, which
    // says how many it covers.
    for pair in fired.windows(2) {
        let gap = (fire_time(pair[1]) - fire_time(pair[0])) / 2000;
        if gap == 1 {
            continue;
        }
        assert!(
            pair[1]
                .message
                .contains(&format!("missed {gap} fire times")),
            "fire times between {} and {} lost:\n{}",
            fire_time(pair[0]),
            fire_time(pair[1]),
            describe_events(&events)
        );
    }
    assert!(of(&events, "ha", "schedule.skipped").is_empty());
}

#[tokio::test]
async fn the_console_shows_schedules_with_their_next_fire_and_last_run() {
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["sched"], 4).await;
    let file = spec(&engine, "beat", "true");
    cli_ok(
        &engine,
        &[
            "schedule",
            "add",
            "later",
            &file,
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Berlin",
        ],
    );
    let tmux = Tmux::start(&opsdeck(), &["--engine", &engine.unix_addr()], 120, 24);
    tmux.wait("the console live", DEADLINE, |s| s.contains("live"))
        .await;
    tmux.keys(&["0"]);
    tmux.wait("the Schedules screen", DEADLINE, |s| {
        s.contains("Schedules 1") && s.contains("later") && s.contains("Europe/Berlin")
    })
    .await;
    // A schedule added while the console runs shows up, and its fires
    // fill in its last run and how it went.
    add(&engine, "often", &file, &[]);
    tmux.wait("the new schedule's last run, succeeded", DEADLINE, |s| {
        s.lines()
            .any(|l| l.contains("often") && l.contains("active") && l.contains("succeeded"))
    })
    .await;
    cli_ok(&engine, &["schedule", "pause", "often"]);
    tmux.wait("the schedule paused", DEADLINE, |s| {
        s.lines()
            .any(|l| l.contains("often") && l.contains("paused"))
    })
    .await;
    tmux.keys(&["q"]);
}
