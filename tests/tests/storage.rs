//! Storage faults: a database locked by another process, or a full disk.
//! The engine answers UNAVAILABLE saying what happened, keeps nothing of the
//! refused request, recovers by itself once the cause is gone, and its
//! database passes SQLite's integrity check.

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use opsdeck_tests::pb::{ListRunsRequest, SubmitRunRequest};
use opsdeck_tests::{Engine, EngineOpts, assert_status};
use sqlx::{ConnectOptions, Connection};
use tonic::Code;

fn gate(label: &str) -> String {
    format!(
        "name = \"stored\"\nlabels = {{ pad = \"{label}\" }}\n[[step]]\nname = \"gate\"\napproval = {{ timeout = \"1h\" }}\n"
    )
}

fn request(spec: String) -> SubmitRunRequest {
    SubmitRunRequest {
        spec,
        reason: "storage".into(),
        ..Default::default()
    }
}

async fn open_db(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("a SQLite URL")
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the engine's database")
}

async fn integrity(path: &std::path::Path) -> String {
    let mut db = open_db(path).await;
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .expect("integrity_check");
    db.close().await.ok();
    ok
}

async fn run_count(engine: &Engine) -> usize {
    engine
        .api()
        .await
        .runs
        .list_runs(ListRunsRequest {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
        .len()
}

#[tokio::test]
async fn a_locked_database_is_unavailable_within_the_busy_timeout_and_the_engine_recovers_once_it_is_released()
 {
    let engine = Engine::start_default().await;
    let db_path = engine.data_dir().join("opsdeck.db");
    engine.submit(&gate("before")).await;

    // Another process takes the database's write lock and keeps it.
    let mut locker = open_db(&db_path).await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("take the lock");

    let mut runs = engine.api().await.runs;
    let asked = Instant::now();
    let refused = runs.submit_run(request(gate("while-locked"))).await;
    let took = asked.elapsed();
    assert_status(
        refused,
        Code::Unavailable,
        &[
            "could not write to its database",
            "locked",
            "nothing of this request was kept",
            "retry",
        ],
    );
    // The engine's busy timeout is 5 s.
    assert!(took < Duration::from_secs(10), "UNAVAILABLE took {took:?}");

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("release the lock");
    locker.close().await.ok();

    // Recovered by itself: the next submit is taken; the refused one was
    // never kept.
    engine.submit(&gate("after")).await;
    assert_eq!(run_count(&engine).await, 2);
    let events = engine.all_events(0).await;
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "no gap in the event log"
    );
    let refused_kept = events.iter().any(|e| {
        e.run
            .as_ref()
            .is_some_and(|r| r.labels.get("pad").is_some_and(|p| p == "while-locked"))
    });
    assert!(!refused_kept, "nothing of the refused submit was kept");
    assert_eq!(integrity(&db_path).await, "ok");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes to `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 16 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_disk_is_unavailable_and_the_engine_recovers_once_there_is_room_again() {
    // Needs a small file system of its own: a tmpfs, which takes root.
    let disk = match Tmpfs::mount("8m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!(
                "SKIPPED: cannot mount a small tmpfs to fill ({why}); run as root to test a full disk"
            );
            return;
        }
    };
    let db_path = disk.0.path().join("opsdeck.db");
    let opts = EngineOpts {
        config: format!("[engine]\ndatabase = \"sqlite://{}\"\n", db_path.display()),
        ..EngineOpts::default()
    };
    let engine = Engine::start(opts).await;
    let mut runs = engine.api().await.runs;
    let mut kept = Vec::new();
    kept.push(engine.submit(&gate("before")).await.id);

    let filler = disk.0.path().join("filler");
    fill(&filler);
    let pad = "p".repeat(2048);
    let mut refused = None;
    for _ in 0..200 {
        match runs.submit_run(request(gate(&pad))).await {
            Ok(r) => kept.push(r.into_inner().run.expect("the run").id),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses a write");
    assert_status(
        Err::<(), _>(refused),
        Code::Unavailable,
        &["could not write to its database", "full", "retry"],
    );
    // Reads still answer, from memory.
    assert_eq!(run_count(&engine).await, kept.len());

    std::fs::remove_file(&filler).expect("make room");
    let after = runs
        .submit_run(request(gate("after")))
        .await
        .expect("with room again, a submit is taken");
    kept.push(after.into_inner().run.expect("the run").id);
    assert_eq!(
        run_count(&engine).await,
        kept.len(),
        "every acknowledged run, and only those"
    );
    let events = engine.all_events(0).await;
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "no gap in the event log"
    );
    assert_eq!(integrity(&db_path).await, "ok");
    drop(runs);
    drop(engine);
    drop(disk);
}
