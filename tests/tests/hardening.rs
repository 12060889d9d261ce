//! What a step, another local user or a client-chosen string must not get
//! at, end to end with a real engine and real workers:
//!
//! - under umask 022, everything the engine and the worker create (data
//!   dir, database and WAL, spool, logs, backups) is 0700/0600, and
//!   `check-config` warns about a data dir others can read.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::stat::{Mode, umask};
use opsdeck_tests::pb::{self, RunState, WorkerState};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, opsdeckd, sh};

// ------------------------------------------------------------------ helpers

/// Runs a short-lived command to its end (within [`DEADLINE`]).
fn finish(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Every entry under `dir` (not `dir` itself), with its mode, depth first,
/// leaving out the names `skip` gives.
fn modes_under(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read a dir")
        .map(|e| e.expect("a dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if skip(&path) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let is_dir = meta.is_dir();
        out.push((path.clone(), meta.permissions().mode() & 0o7777, is_dir));
        if is_dir {
            out.extend(modes_under(&path, skip));
        }
    }
    out
}

// ------------------------------------------------------------ file modes

#[tokio::test]
async fn under_umask_022_the_engine_and_the_worker_create_only_private_files() {
    // nextest runs each test in a process of its own: the engine, the
    // worker and the commands below inherit this umask, the usual one for a
    // login shell, under which files have come out world-readable.
    umask(Mode::from_bits_truncate(0o022));
    // The log dir, a backup and a data dir the engine makes itself
    // (migrate) go here, beside the engine's data dir.
    let elsewhere = tempfile::tempdir().unwrap();
    let logs = elsewhere.path().join("logs");
    let engine = Engine::start(EngineOpts {
        args: vec!["--log-dir".into(), logs.display().to_string()],
        ..EngineOpts::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine
        .submit(&format!(
            "name = \"out\"\n[[step]]\nqueue = \"work\"\nrun = {}\n",
            sh("echo some output; echo umask $(umask)")
        ))
        .await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let output = engine.output_text(&run.id).await;
    assert!(
        output.contains("umask 0022"),
        "the step keeps the umask the worker was started with: {output}"
    );
    // So do the steps of the process a recycle puts in its place.
    engine
        .api()
        .await
        .workers
        .recycle_worker(pb::WorkerActionRequest {
            id: "w1".into(),
            reason: "umask after a recycle".into(),
        })
        .await
        .expect("recycle the worker");
    engine
        .wait_worker(
            "w1",
            |w| w.generation == 2 && w.connected && w.state == WorkerState::Online as i32,
            DEADLINE,
        )
        .await;
    let again = engine
        .submit(&format!(
            "name = \"again\"\n[[step]]\nqueue = \"work\"\nrun = {}\n",
            sh("echo umask $(umask)")
        ))
        .await;
    engine
        .wait_run_state(&again.id, RunState::Succeeded, DEADLINE)
        .await;
    let output = engine.output_text(&again.id).await;
    assert!(
        output.contains("umask 0022"),
        "after a recycle, the step keeps the worker's first umask: {output}"
    );

    let backup = elsewhere.path().join("backup.db");
    let db = engine.data_dir().join("opsdeck.db");
    let mut cmd = engine.tagged_command(&opsdeckd());
    cmd.arg("backup")
        .arg(&backup)
        .arg("--database")
        .arg(format!("sqlite://{}", db.display()));
    let out = finish(cmd);
    assert!(out.status.success(), "backup: {}", text(&out.stderr));
    let fresh = elsewhere.path().join("fresh/data");
    let mut cmd = engine.tagged_command(&opsdeckd());
    cmd.arg("migrate").arg("--data-dir").arg(&fresh);
    let out = finish(cmd);
    assert!(out.status.success(), "migrate: {}", text(&out.stderr));

    // The engine's data dir holds the harness's own files too (its config,
    // the processes' stdout logs, the steps' work dir): those are not the
    // engine's, and are left out.
    let root = engine.data_dir();
    let harness = |p: &Path| {
        p.parent() == Some(root.as_path())
            && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == "engine.toml" || n == "w" || (n.ends_with(".log") && n.contains('-'))
            })
    };
    let mut found = modes_under(&root, &harness);
    found.extend(modes_under(elsewhere.path(), &|_| false));
    let names: Vec<String> = found
        .iter()
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    for expected in [
        root.join("opsdeck.db"),
        root.join("opsdeck.db-wal"),
        root.join("engine.addr"),
        root.join("engine.sock"),
        logs.clone(),
        root.join("spool/w1/.lock"),
        backup.clone(),
        fresh.join("opsdeck.db"),
    ] {
        assert!(
            names.contains(&expected.display().to_string()),
            "{} was not made; found {names:#?}",
            expected.display()
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{}/opsdeckd.", logs.display()))),
        "no log file in the log dir: {names:#?}"
    );
    let open: Vec<String> = found
        .iter()
        .filter(|(_, mode, is_dir)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, mode, _)| format!("{mode:04o} {}", path.display()))
        .collect();
    assert!(
        open.is_empty(),
        "not private (dirs 0700, files 0600):\n{}",
        open.join("\n")
    );
    let socket = std::fs::symlink_metadata(root.join("engine.sock")).unwrap();
    assert!(socket.file_type().is_socket());
}

#[tokio::test]
async fn check_config_warns_about_a_data_dir_others_can_read() {
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = keep.path().join("engine.toml");
    std::fs::write(
        &config,
        format!("[engine]\ndata_dir = {}\n", sh(&data.display().to_string())),
    )
    .unwrap();
    let check = || {
        let mut cmd = Command::new(opsdeckd());
        cmd.env_remove("OPSDECK_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .arg("check-config")
            .arg("--config")
            .arg(&config);
        let out = finish(cmd);
        assert!(out.status.success(), "check-config: {}", text(&out.stderr));
        text(&out.stderr)
    };

    chmod(&data, 0o755);
    let warned = check();
    assert!(
        warned.contains(&format!(
            "warning: the data dir {} is open to other users (mode 0755)",
            data.display()
        )) && warned.contains(&format!("chmod 700 {}", data.display())),
        "no warning naming the dir and the fix: {warned}"
    );
    chmod(&data, 0o700);
    let quiet = check();
    assert!(!quiet.contains("warning"), "a private data dir: {quiet}");
}
