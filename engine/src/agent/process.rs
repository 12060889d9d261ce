//! [`ProcessExecutor`]: each step is a real process in its own process group.
//!
//! The group is what gets signalled, so `sh -c 'a | b'` and whatever it
//! forks stop together. A step owns its group for its whole life: when the
//! main process exits, anything it left running in the group is killed, so a
//! finished step cannot leak processes or keep its output pipes open.

use std::{
    io,
    os::unix::process::ExitStatusExt,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use opsdeck_proto::v1::Assignment;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
    time::Instant,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument as _;

use super::executor::{
    Executor, MAX_OUTPUT_CHUNK, OutputStream, Reporter, StepContext, StepControl, StepExit,
    StepFuture,
};
use super::mask::Masker;

/// How long output may keep flowing after the step's process group is gone.
/// Only a process that escaped the group (`setsid`) can hold the pipes open
/// longer, and the step must not wait for it.
const OUTPUT_LINGER: Duration = Duration::from_secs(2);

/// Variables of the worker's own environment that steps do not inherit: the
/// token would let any step speak to the engine as this worker.
const PRIVATE_ENV: &[&str] = &[
    "OPSDECK_TOKEN",
    // Where the token is: a step runs as the worker's user and could read
    // it; it need not be shown the way.
    "OPSDECK_TOKEN_FILE",
    "OPSDECK_WORKER_GENERATION",
    // The engine's database URL (it may hold a password), for local workers.
    "OPSDECK_DATABASE",
    // systemd's, meant for the worker (or the engine) itself: a step must
    // not be able to report readiness or ping the watchdog in its name.
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Runs steps as processes: `sh -c <shell>`, or `argv` without a shell.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessExecutor;

impl Executor for ProcessExecutor {
    fn execute(&self, step: Assignment, ctx: StepContext) -> StepFuture {
        Box::pin(run(step, ctx))
    }
}

async fn run(step: Assignment, ctx: StepContext) -> StepExit {
    let StepContext {
        reporter,
        mut control,
    } = ctx;
    let mut command = match command(&step) {
        Ok(command) => command,
        Err(why) => return StepExit::failed(None, format!("could not start: {why}")),
    };
    if let Err(why) = check_workdir(&step.workdir).await {
        return StepExit::failed(None, format!("could not start: {why}"));
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = command
                .as_std()
                .get_program()
                .to_string_lossy()
                .into_owned();
            return StepExit::failed(
                None,
                format!("could not start: {} ({program})", describe_io(&e)),
            );
        }
    };
    let Some(pid) = child.id() else {
        return StepExit::failed(None, "could not start: the process vanished at once");
    };
    let group = ProcessGroup::new(pid);
    tracing::info!(pid, "step started");
    reporter.started(pid).await;

    let masker = || Masker::new(secret_values(&step));
    let pumps = [
        child
            .stdout
            .take()
            .map(|pipe| pump(pipe, OutputStream::Stdout, reporter.clone(), masker())),
        child
            .stderr
            .take()
            .map(|pipe| pump(pipe, OutputStream::Stderr, reporter.clone(), masker())),
    ];
    let exit = supervise(&mut child, &group, &mut control).await;
    group.finish();

    let drained = tokio::time::timeout(OUTPUT_LINGER, async {
        for pump in pumps.into_iter().flatten() {
            // A pump that failed has already said why.
            let _ = pump.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "the step's output was still open {} after it ended (a process left its process group?); closing it",
            humantime::format_duration(OUTPUT_LINGER)
        );
    }
    let lost = reporter.lost_bytes();
    if lost > 0 {
        tracing::warn!(
            lost_bytes = lost,
            "output lost while the engine was unreachable"
        );
    }
    exit
}

/// Builds the command for `step`, or says why there is nothing to run.
fn command(step: &Assignment) -> Result<Command, &'static str> {
    let mut command = if !step.shell.is_empty() {
        let mut command = Command::new("sh");
        // `--` so a script starting with `-` is not read as options.
        command.arg("-c").arg("--").arg(&step.shell);
        command
    } else if let Some((program, args)) = step.argv.split_first()
        && !program.is_empty()
    {
        let mut command = Command::new(program);
        command.args(args);
        command
    } else {
        return Err("the step has neither a shell command nor argv");
    };
    for name in PRIVATE_ENV {
        command.env_remove(name);
    }
    // The engine's secret variables, when the worker runs inside the engine:
    // a step gets only the secrets its spec names, through its own env.
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"OPSDECK_SECRET_") {
            command.env_remove(&name);
        }
    }
    command
        .env("OPSDECK_RUN_ID", &step.run_id)
        .env("OPSDECK_STEP_INDEX", step.step_index.to_string())
        .env("OPSDECK_STEP_NAME", &step.step_name)
        .env("OPSDECK_ATTEMPT", step.attempt.to_string())
        .envs(&step.env);
    if !step.workdir.is_empty() {
        command.current_dir(&step.workdir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The group guard kills the whole group, not only the leader.
        .kill_on_drop(false);
    // `opsdeckd` runs under umask 077 to keep its own files private; the
    // step gets the umask the worker was started with, as its files are
    // the job's business.
    if let Some(inherited) = crate::private::inherited_umask() {
        // SAFETY: runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: umask(2) is one, and the
        // closure allocates nothing and touches no shared state.
        unsafe {
            command.pre_exec(move || {
                nix::sys::stat::umask(inherited);
                Ok(())
            });
        }
    }
    Ok(command)
}

/// A missing working directory fails `spawn` with ENOENT, which would read
/// as if the program were missing; check it first to say which it is.
async fn check_workdir(workdir: &str) -> Result<(), String> {
    if workdir.is_empty() {
        return Ok(());
    }
    match tokio::fs::metadata(workdir).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("working directory {workdir} is not a directory")),
        Err(e) => Err(format!("working directory {workdir}: {}", describe_io(&e))),
    }
}

/// Waits for the step's process to exit, stopping it when asked: SIGTERM to
/// the group, then SIGKILL once the grace period is over.
async fn supervise(child: &mut Child, group: &ProcessGroup, control: &mut StepControl) -> StepExit {
    let stop = tokio::select! {
        status = child.wait() => return match status {
            Ok(status) => exited(status),
            Err(e) => lost_track(&e),
        },
        stop = control.stop_requested() => stop,
    };
    tracing::info!(
        reason = %stop.reason,
        grace = %humantime::format_duration(stop.grace),
        "stopping the step: SIGTERM to its process group"
    );
    let termed_at = Instant::now();
    group.signal(Signal::SIGTERM);
    let mut kill_at = termed_at + stop.grace;
    let mut killed = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = tokio::time::sleep_until(kill_at), if !killed => {
                tracing::warn!("the step ignored SIGTERM: SIGKILL to its process group");
                group.signal(Signal::SIGKILL);
                killed = true;
            }
            // E.g. a cancel with no grace while a timeout's grace runs.
            later = control.stop_requested() => kill_at = kill_at.min(Instant::now() + later.grace),
        }
    };
    match status {
        Ok(status) => {
            let mut how = describe_status(status);
            if killed {
                let waited = humantime::format_duration(kill_at - termed_at);
                how.push_str(&format!(" after ignoring SIGTERM for {waited}"));
            }
            StepExit::stopped(&stop, status.code(), &how)
        }
        Err(e) => lost_track(&e),
    }
}

fn exited(status: ExitStatus) -> StepExit {
    match status.code() {
        Some(0) => StepExit::succeeded(describe_status(status)),
        code => StepExit::failed(code, describe_status(status)),
    }
}

fn lost_track(e: &io::Error) -> StepExit {
    StepExit::failed(
        None,
        format!("lost track of the process: {}", describe_io(e)),
    )
}

/// "exited with status 3", "killed by signal 9 (SIGKILL)".
fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(signal) = status.signal() else {
        return format!("ended with wait status {}", status.into_raw());
    };
    let name = Signal::try_from(signal)
        .map(Signal::as_str)
        .unwrap_or("unknown signal");
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    format!("killed by signal {signal} ({name}{core})")
}

/// The OS's sentence for an error, without Rust's "(os error 2)" suffix.
fn describe_io(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

/// The values of the step's secret env entries, which its output must not
/// show.
fn secret_values(step: &Assignment) -> impl Iterator<Item = &str> {
    step.secret_env
        .iter()
        .filter_map(|name| step.env.get(name).map(String::as_str))
}

/// Copies one output pipe to the engine as it arrives, secrets masked. Each
/// read returns what is there (up to a chunk), so output goes up live, not
/// in batches; only bytes that may begin a secret wait for the next read.
fn pump(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: OutputStream,
    reporter: Reporter,
    mut masker: Masker,
) -> AbortOnDropHandle<()> {
    let copy = async move {
        let mut buf = vec![0; MAX_OUTPUT_CHUNK];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let data = masker.feed(&buf[..n]);
                    if !data.is_empty() {
                        reporter.output(stream, &data).await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(
                        stream = stream.as_str(),
                        "could not read the step's output: {e}"
                    );
                    break;
                }
            }
        }
        let rest = masker.finish();
        if !rest.is_empty() {
            reporter.output(stream, &rest).await;
        }
    };
    // In the step's span, so what the pump logs names the step.
    AbortOnDropHandle::new(tokio::spawn(copy.instrument(tracing::Span::current())))
}

/// The step's process group. Dropped while armed (the step's future was
/// dropped: the agent is going away without waiting), it kills the group.
struct ProcessGroup {
    pgid: Pid,
    armed: bool,
}

impl ProcessGroup {
    fn new(leader: u32) -> Self {
        // With process_group(0) the group id is the leader's pid; pids fit in i32.
        Self {
            pgid: Pid::from_raw(leader as i32),
            armed: true,
        }
    }

    fn signal(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            // ESRCH: everyone in the group has exited already.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = %self.pgid, "could not send {signal} to the step: {e}"),
        }
    }

    /// The leader has been reaped: kill what it left behind and disarm. Its
    /// pid is not reused while the group has members, and the few
    /// microseconds between the reap and this call are the only window.
    fn finish(mut self) {
        self.signal(Signal::SIGKILL);
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use opsdeck_proto::v1::{AgentMessage, Outcome, agent_message};
    use tokio::sync::mpsc;

    use super::*;
    use crate::agent::executor::{
        Stop, StopReason,
        testing::{self, Harness},
    };

    const GRACE: Duration = Duration::from_secs(10);

    fn shell(script: &str) -> Assignment {
        Assignment {
            lease_id: "lease-1".into(),
            fencing_token: 1,
            shell: script.into(),
            ..Default::default()
        }
    }

    async fn run_step(step: Assignment) -> (StepExit, testing::Sent) {
        let (ctx, mut harness) = testing::context(&step, GRACE);
        let exit = ProcessExecutor.execute(step, ctx).await;
        (exit, harness.drain())
    }

    /// Receives until stdout contains `needle`, so a test can act once the
    /// step is where it wants it (e.g. a trap is installed).
    async fn wait_for_stdout(up: &mut mpsc::Receiver<AgentMessage>, needle: &str) -> (u32, String) {
        let mut pid = 0;
        let mut stdout = String::new();
        while !stdout.contains(needle) {
            match up.recv().await.and_then(|m| m.kind) {
                Some(agent_message::Kind::Started(s)) => pid = s.pid,
                Some(agent_message::Kind::Output(o)) if o.stream == "stdout" => {
                    stdout.push_str(&String::from_utf8_lossy(&o.data));
                }
                Some(_) => {}
                None => panic!("the step ended before printing {needle:?}"),
            }
        }
        (pid, stdout)
    }

    fn stdout_of(harness: &mut Harness) -> String {
        String::from_utf8_lossy(&harness.drain().stdout).into_owned()
    }

    #[tokio::test]
    async fn exit_zero_succeeds_and_both_streams_are_captured() {
        let (exit, sent) = run_step(shell("echo hello; echo oops >&2")).await;
        assert_eq!(exit, StepExit::succeeded("exited with status 0"));
        assert_eq!(sent.started.len(), 1);
        assert_ne!(sent.started[0], 0);
        assert_eq!(sent.stdout, b"hello\n");
        assert_eq!(sent.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn secret_values_are_masked_in_both_streams_even_when_split_across_writes() {
        let step = Assignment {
            env: HashMap::from([
                ("DB_PASS".into(), "hunter2-secret".into()),
                ("PLAIN".into(), "visible".into()),
            ]),
            secret_env: vec!["DB_PASS".into()],
            ..shell(
                "echo \"pass=$DB_PASS plain=$PLAIN\"; printf 'x=hunter2-'; sleep 0.2; \
                 printf 'secret.\\n'; echo \"$DB_PASS\" >&2; printf 'hunter2'",
            )
        };
        let (exit, sent) = run_step(step).await;
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(
            String::from_utf8_lossy(&sent.stdout),
            "pass=*** plain=visible\nx=***.\nhunter2"
        );
        assert_eq!(String::from_utf8_lossy(&sent.stderr), "***\n");
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_its_status() {
        let (exit, _) = run_step(shell("exit 3")).await;
        assert_eq!(exit, StepExit::failed(Some(3), "exited with status 3"));
    }

    #[tokio::test]
    async fn death_by_signal_fails_without_an_exit_code() {
        let (exit, _) = run_step(shell("kill -9 $$")).await;
        assert_eq!(exit, StepExit::failed(None, "killed by signal 9 (SIGKILL)"));
    }

    #[tokio::test]
    async fn a_missing_program_could_not_start() {
        let step = Assignment {
            argv: vec!["/nonexistent/opsdeck-test".into()],
            ..shell("")
        };
        let (exit, sent) = run_step(step).await;
        assert_eq!(exit.outcome, Outcome::Failed);
        assert_eq!(
            exit.message,
            "could not start: No such file or directory (/nonexistent/opsdeck-test)"
        );
        assert!(sent.started.is_empty());
    }

    #[tokio::test]
    async fn a_step_without_a_command_could_not_start() {
        let (exit, _) = run_step(shell("")).await;
        assert_eq!(
            exit,
            StepExit::failed(
                None,
                "could not start: the step has neither a shell command nor argv"
            )
        );
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell() {
        let argv = ["printf", "%s|", "a b", "$HOME"].map(String::from).to_vec();
        let (exit, sent) = run_step(Assignment { argv, ..shell("") }).await;
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(sent.stdout, b"a b|$HOME|");
    }

    #[tokio::test]
    async fn env_and_workdir_are_applied_and_the_step_knows_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let step = Assignment {
            run_id: "01RUN".into(),
            step_index: 2,
            env: HashMap::from([("GREETING".into(), "hi there".into())]),
            workdir: dir_path.to_string_lossy().into_owned(),
            ..shell(
                r#"printf '%s|%s|%s|%s' "$GREETING" "$(pwd -P)" "$OPSDECK_RUN_ID" "$OPSDECK_STEP_INDEX""#,
            )
        };
        let (exit, sent) = run_step(step).await;
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(
            String::from_utf8_lossy(&sent.stdout),
            format!("hi there|{}|01RUN|2", dir_path.display())
        );
    }

    #[test]
    fn the_worker_token_is_not_passed_to_steps() {
        let command = command(&shell("true")).unwrap();
        let removed: Vec<_> = command
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for private in ["OPSDECK_TOKEN", "OPSDECK_TOKEN_FILE"] {
            assert!(removed.contains(&private.to_owned()), "{removed:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_workdir_is_named_as_such() {
        let step = Assignment {
            workdir: "/nonexistent/opsdeck-dir".into(),
            ..shell("true")
        };
        let (exit, _) = run_step(step).await;
        assert_eq!(
            exit.message,
            "could not start: working directory /nonexistent/opsdeck-dir: No such file or directory"
        );
    }

    #[tokio::test]
    async fn large_output_arrives_whole_in_chunks_of_at_most_64k() {
        let (exit, sent) = run_step(shell("head -c 300000 /dev/zero")).await;
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(sent.stdout.len(), 300_000);
        assert!(
            sent.chunks.iter().all(|&n| n > 0 && n <= MAX_OUTPUT_CHUNK),
            "{:?}",
            sent.chunks
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_step_and_reports_timed_out() {
        let step = Assignment {
            timeout_ms: 200,
            ..shell("sleep 30")
        };
        let started = Instant::now();
        let (exit, _) = run_step(step).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(exit.outcome, Outcome::TimedOut);
        assert_eq!(exit.exit_code, None);
        assert_eq!(
            exit.message,
            "timed out after 200ms: killed by signal 15 (SIGTERM)"
        );
    }

    #[tokio::test]
    async fn cancel_sends_sigterm_to_the_group_then_sigkill_after_the_grace() {
        let step = shell("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done");
        let (ctx, mut harness) = testing::context(&step, GRACE);
        let task = tokio::spawn(ProcessExecutor.execute(step, ctx));
        wait_for_stdout(&mut harness.up, "ready").await;

        let grace = Duration::from_millis(300);
        let cancelled_at = Instant::now();
        harness.stop.send_replace(Some(Stop {
            reason: StopReason::Cancelled {
                reason: "operator: wrong host".into(),
            },
            grace,
        }));
        let exit = task.await.unwrap();

        assert!(cancelled_at.elapsed() >= grace);
        assert_eq!(exit.outcome, Outcome::Cancelled);
        assert_eq!(
            exit.message,
            "cancelled by the engine (operator: wrong host): killed by signal 9 (SIGKILL) \
             after ignoring SIGTERM for 300ms"
        );
        assert!(stdout_of(&mut harness).contains("got TERM"));
    }

    #[tokio::test]
    async fn a_step_that_honours_sigterm_stops_within_the_grace() {
        let step = shell("echo ready; sleep 30");
        let (ctx, mut harness) = testing::context(&step, GRACE);
        let task = tokio::spawn(ProcessExecutor.execute(step, ctx));
        wait_for_stdout(&mut harness.up, "ready").await;
        let started = Instant::now();
        harness.stop.send_replace(Some(Stop {
            reason: StopReason::Cancelled {
                reason: String::new(),
            },
            grace: GRACE,
        }));
        let exit = task.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            exit.message,
            "cancelled by the engine: killed by signal 15 (SIGTERM)"
        );
    }

    #[tokio::test]
    async fn a_shorter_later_grace_cuts_the_wait() {
        let step = Assignment {
            timeout_ms: 100,
            ..shell("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        };
        let (ctx, mut harness) = testing::context(&step, GRACE);
        let task = tokio::spawn(ProcessExecutor.execute(step, ctx));
        wait_for_stdout(&mut harness.up, "ready").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The timeout fired with a 10 s grace; the worker now wants it gone.
        harness.stop.send_replace(Some(Stop {
            reason: StopReason::Shutdown,
            grace: Duration::ZERO,
        }));
        let exit = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.outcome, Outcome::TimedOut);
        assert!(exit.message.contains("SIGKILL"), "{}", exit.message);
    }

    #[tokio::test]
    async fn leftover_background_processes_do_not_hold_the_step_open() {
        let started = Instant::now();
        let (exit, sent) = run_step(shell("sleep 30 & echo done")).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(exit.outcome, Outcome::Succeeded);
        assert_eq!(sent.stdout, b"done\n");
    }

    #[tokio::test]
    async fn dropping_the_step_kills_its_process_group() {
        let step = shell("sleep 30 & echo \"background $!\"; echo ready; wait");
        let (ctx, mut harness) = testing::context(&step, GRACE);
        let task = tokio::spawn(ProcessExecutor.execute(step, ctx));
        let (leader, stdout) = wait_for_stdout(&mut harness.up, "ready").await;
        let background: u32 = stdout
            .lines()
            .find_map(|line| line.strip_prefix("background "))
            .and_then(|pid| pid.parse().ok())
            .unwrap();
        task.abort();
        let _ = task.await;
        let deadline = Instant::now() + Duration::from_secs(5);
        for pid in [leader, background] {
            while is_alive(pid) {
                assert!(Instant::now() < deadline, "process {pid} survived the drop");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Alive and not a zombie (a killed child waits for the runtime's reaper).
    fn is_alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }
}
