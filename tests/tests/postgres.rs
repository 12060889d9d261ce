//! The engine on PostgreSQL: the same behaviour as on SQLite, with state
//! that survives a kill -9. Runs whenever `OPSDECK_TEST_POSTGRES` names a
//! server (CI sets it); each test gets a database of its own.

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, fresh_postgres_database, sh};

#[tokio::test]
async fn on_postgres_runs_finish_and_survive_an_engine_kill() {
    let Some(url) = fresh_postgres_database("opsdeck_e2e").await else {
        eprintln!("OPSDECK_TEST_POSTGRES is not set: nothing to test against");
        return;
    };
    let opts = EngineOpts {
        config: format!("[engine]\ndatabase = \"{url}\"\n"),
        ..Default::default()
    };
    let mut engine = Engine::start(opts).await;
    let _worker = Worker::start(&engine, "w1", &["pg"], 2).await;
    let marker = engine.path("ran");
    let spec = format!(
        "name = \"on-pg\"\n[[step]]\nqueue = \"pg\"\nrun = {}\n[[step]]\nqueue = \"pg\"\nrun = \"true\"\n",
        sh(&format!("echo ran >> {}", marker.display()))
    );
    let run = engine.submit(&spec).await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let before = engine.all_events(0).await;

    engine.kill9();
    engine.restart().await;
    let reloaded = engine.get_run(&run.id).await;
    assert_eq!(reloaded.state, RunState::Succeeded as i32);
    let after = engine.all_events(0).await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "every event is still there after kill -9"
    );

    // The seq carries on from the stored log.
    let second = engine.submit(&spec).await;
    engine
        .wait_run_state(&second.id, RunState::Succeeded, DEADLINE)
        .await;
    let all = engine.all_events(0).await;
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one gap-free seq"
    );
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("the marker")
            .lines()
            .count(),
        2,
        "each run's step ran once"
    );
}
