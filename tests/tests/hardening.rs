//! What a step, another local user or a client-chosen string must not get
//! at, end to end with a real engine and real workers:
//!
//! - under umask 022, everything the engine and the worker create (data
//!   dir, database and WAL, spool, logs, backups) is 0700/0600, and
//!   `check-config` warns about a data dir others can read;
//! - a step cannot read its worker's token from `/proc` (the worker's
//!   command line or environment), whether the token came from
//!   `OPSDECK_TOKEN` or `--token-file`; `--token` on the command line is
//!   warned about, and a token file others can read is refused;
//! - `opsdeck --output json` escapes C1 controls from a step's output.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::stat::{Mode, umask};
use nix::unistd::Pid;
use opsdeck_tests::pb::{self, RunState, WorkerState};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, new_token, opsdeck, opsdeckd, sh};

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

// -------------------------------------------------------------- the token

/// The user a step runs as must be an ordinary one: root can read any
/// process's `/proc/PID/environ`, dumpable or not (with or without
/// `CAP_SYS_PTRACE`). Run as root (a CI container), the test starts its
/// workers as `nobody` (65534), as `opsdeck-worker@.service` starts them as
/// a user of their own, and `dir` — where they keep their token file and
/// spool — becomes that user's. As another user, nothing changes.
fn as_ordinary_user(cmd: &mut Command, dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    const NOBODY: u32 = 65534;
    for entry in walk(dir) {
        std::os::unix::fs::lchown(&entry, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    }
    cmd.uid(NOBODY).gid(NOBODY);
}

/// `dir` and everything under it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).expect("read a dir") {
            out.extend(walk(&entry.expect("a dir entry").path()));
        }
    }
    out
}

/// `opsdeckd worker` over TCP, set up by `configure`; killed (with its
/// process group) on drop.
struct TcpWorker {
    child: Child,
    log: PathBuf,
}

impl TcpWorker {
    fn spawn(
        engine: &Engine,
        id: &str,
        queue: &str,
        spool: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let log = engine.data_dir().join(format!("worker-{id}.log"));
        let out = File::create(&log).expect("create the worker's log");
        let mut cmd = engine.tagged_command(&opsdeckd());
        cmd.arg("worker")
            .args(["--engine", &format!("http://{}", engine.tcp_addr())])
            .args(["--id", id, "--queue", queue, "--cancel-grace", "1s"])
            .arg("--spool-dir")
            .arg(spool)
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out);
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawn opsdeckd worker");
        TcpWorker { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TcpWorker {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A step that prints what `/proc` shows of process `pid` (the worker, which
/// is also its `$PPID`): command line and environment.
fn peek_spec(queue: &str, pid: u32) -> String {
    let script = format!(
        "for p in {pid} $PPID; do \
           echo \"== $p cmdline\"; tr '\\0' ' ' < /proc/$p/cmdline; echo; \
           echo \"== $p environ\"; tr '\\0' '\\n' < /proc/$p/environ; echo; \
         done; true"
    );
    format!(
        "name = \"peek\"\n[[step]]\nqueue = \"{queue}\"\nrun = {}\n",
        sh(&script)
    )
}

/// Starts an engine and a worker over TCP whose token `give` hands it
/// (through its environment or a file in the directory given), runs
/// [`peek_spec`] on it, and checks that the step found its worker but not
/// the token.
async fn assert_step_cannot_read_the_token(give: impl FnOnce(&mut Command, &str, &Path)) {
    let (token, entry) = new_token("worker-1", &["agent"], &[]);
    let engine = Engine::start(EngineOpts {
        config: entry,
        ..EngineOpts::default()
    })
    .await;
    // Outside the engine's data dir: the worker's token file and spool.
    let keep = tempfile::tempdir().unwrap();
    let worker = TcpWorker::spawn(&engine, "w1", "peek", &keep.path().join("spool"), |cmd| {
        give(cmd, &token, keep.path());
        as_ordinary_user(cmd, keep.path());
    });
    let pid = worker.pid();
    engine
        .wait_worker(
            "w1",
            |w| w.state == WorkerState::Online as i32 && w.connected && w.pid == pid,
            DEADLINE,
        )
        .await;

    let run = engine.submit(&peek_spec("peek", pid)).await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let output = engine.output_text(&run.id).await;
    // The step did find its worker: the command line is public.
    assert!(
        output.contains(&format!("== {pid} cmdline")) && output.contains("worker --engine"),
        "the step did not read its worker's command line:\n{output}"
    );
    assert!(
        !output.contains(&token),
        "the step read its worker's token from /proc:\n{output}"
    );
    assert!(
        !worker.log().contains("visible to every local user in ps"),
        "no warning without --token on the command line:\n{}",
        worker.log()
    );
}

#[tokio::test]
async fn a_step_cannot_read_its_workers_token_from_proc_when_it_came_in_the_environment() {
    assert_step_cannot_read_the_token(|cmd, token, _| {
        cmd.env("OPSDECK_TOKEN", token);
    })
    .await;
}

#[tokio::test]
async fn a_step_cannot_read_its_workers_token_from_proc_when_it_came_in_a_file() {
    assert_step_cannot_read_the_token(|cmd, token, dir| {
        let file = dir.join("worker.token");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        chmod(&file, 0o600);
        cmd.arg("--token-file").arg(&file);
    })
    .await;
}

#[tokio::test]
async fn a_token_on_the_command_line_is_warned_about_and_an_open_token_file_is_refused() {
    let (token, entry) = new_token("worker-1", &["agent"], &[]);
    let engine = Engine::start(EngineOpts {
        config: entry,
        ..EngineOpts::default()
    })
    .await;
    let spool = Worker::spool_dir_of(&engine, "w-line");
    let on_line = TcpWorker::spawn(&engine, "w-line", "line", &spool, |cmd| {
        cmd.args(["--token", token.as_str()]);
    });
    let pid = on_line.pid();
    engine
        .wait_worker(
            "w-line",
            |w| w.state == WorkerState::Online as i32 && w.connected && w.pid == pid,
            DEADLINE,
        )
        .await;
    let log = on_line.log();
    assert!(
        log.contains(
            "--token on the command line is visible to every local user in ps; use --token-file"
        ),
        "no warning about --token:\n{log}"
    );

    let keep = tempfile::tempdir().unwrap();
    let open = keep.path().join("open.token");
    std::fs::write(&open, &token).unwrap();
    chmod(&open, 0o644);
    let mut cmd = engine.tagged_command(&opsdeckd());
    cmd.arg("worker")
        .args(["--engine", &format!("http://{}", engine.tcp_addr())])
        .args(["--id", "w-open", "--queue", "open", "--token-file"])
        .arg(&open)
        .arg("--spool-dir")
        .arg(Worker::spool_dir_of(&engine, "w-open"));
    let out = finish(cmd);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a worker started with {err}");
    assert!(
        err.contains(&format!(
            "the token file {} is open to other users (mode 0644)",
            open.display()
        )) && err.contains(&format!("chmod 600 {}", open.display())),
        "the refusal does not name the file and the fix: {err}"
    );
    assert!(!err.contains(&token), "the refusal shows the token: {err}");
}

// ------------------------------------------------------------- CLI JSON

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn cli_json_escapes_c1_controls_from_a_steps_output() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    // U+009B (CSI, a terminal's escape in one character) is C2 9B in UTF-8.
    let run = engine
        .submit(&format!(
            "name = \"c1\"\n[[step]]\nqueue = \"work\"\nrun = {}\n",
            sh("printf 'before\\302\\233after\\n'")
        ))
        .await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    assert!(
        engine
            .output_text(&run.id)
            .await
            .contains("before\u{9b}after"),
        "the step printed U+009B"
    );

    let mut cmd = Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1")
        .args(["--engine", &engine.unix_addr(), "--output", "json", "run"])
        .arg(&run.id);
    let out = finish(cmd);
    assert!(out.status.success(), "opsdeck run: {}", text(&out.stderr));
    let stdout = out.stdout;
    assert!(
        !contains(&stdout, "\u{9b}".as_bytes()),
        "a raw C1 control in the JSON: {}",
        text(&stdout)
    );
    assert!(
        contains(&stdout, br"before\u009bafter"),
        "the C1 control is not escaped: {}",
        text(&stdout)
    );
    let value: serde_json::Value = serde_json::from_slice(&stdout).expect("one JSON document");
    let texts: Vec<&str> = value["output"]
        .as_array()
        .expect("the output")
        .iter()
        .filter_map(|o| o["text"].as_str())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("before\u{9b}after")),
        "a JSON reader gets the character back: {texts:?}"
    );
}
