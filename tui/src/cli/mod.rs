//! The scriptable subcommands: `opsdeck runs`, `opsdeck approve ID`, …
//!
//! One file per resource area; each turns its arguments into one or two
//! calls and hands the answer to the [`output::Printer`], which writes a
//! [`table`] for people or JSON for scripts.
//!
//! - [`error`]: what can fail, its exit code and its words.
//! - [`output`], [`table`], [`json`]: the shared text and JSON layout
//!   (times and the other words the console shares are in [`crate::text`]).
//! - [`runs`], [`bulk`], [`events`], [`approvals`], [`workers`], [`queues`],
//!   [`leases`], [`quarantines`], [`logs`], [`notifications`], [`schedules`]:
//!   the commands.

pub mod approvals;
pub mod bulk;
pub mod error;
pub mod events;
pub mod json;
pub mod leases;
pub mod logs;
pub mod notifications;
pub mod output;
pub mod quarantines;
pub mod queues;
pub mod runs;
pub mod schedules;
pub mod table;
pub mod workers;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use opsdeck_proto::failover::EngineList;
use opsdeck_proto::names::Word;
use opsdeck_proto::tls::ClientTls;
use opsdeck_proto::v1::{IdKind, ResolveIdRequest};

use crate::client::{Auth, Engine, Target, Token};
use error::{CliError, status_hint};
use output::{Format, Printer};

/// The command line. With no subcommand the console will start; until it
/// exists, that prints the help.
#[derive(Debug, Parser)]
#[command(
    name = "opsdeck",
    version,
    about = "Operate an opsdeck engine: runs, approvals, workers, queues, leases and events",
    after_help = "Exit status: 0 success; 1 the engine refused or could not be reached \
                  (or `submit --wait` saw the run not succeed); 2 usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The engine: http://HOST:PORT, HOST:PORT or unix:///PATH [default: the
    /// local engine socket, else http://127.0.0.1:7465]
    ///
    /// The local engine socket is the first that exists of
    /// $XDG_STATE_HOME/opsdeck/engine.sock (XDG_STATE_HOME defaulting to
    /// ~/.local/state), /var/lib/opsdeck/engine.sock and
    /// /run/opsdeck/engine.sock, in that order.
    ///
    /// Several addresses, comma-separated, name engines sharing a database:
    /// commands go to the one that leads.
    #[arg(
        long,
        env = "OPSDECK_ENGINE",
        value_name = "ADDR[,ADDR...]",
        global = true
    )]
    pub engine: Option<EngineList>,

    /// Bearer token sent with every call
    #[arg(
        long,
        env = "OPSDECK_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<Token>,

    /// For an https:// engine: PEM file of the CA that signed its
    /// certificate [default: the system's trusted roots]
    #[arg(long, env = "OPSDECK_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,

    /// For an engine that requires client certificates (mutual TLS): your
    /// PEM certificate; needs --key
    #[arg(long, env = "OPSDECK_CERT", value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert
    #[arg(long, env = "OPSDECK_KEY", value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,

    /// Output format: aligned tables, or one JSON document
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: Format,

    /// Times in tables: relative ("12s ago") or absolute (RFC 3339, UTC)
    /// [default: relative on a terminal, absolute in a pipe or file]
    #[arg(long, value_enum, value_name = "STYLE", global = true)]
    pub time: Option<crate::text::time::TimeStyle>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit runs from TOML spec files (`-` reads stdin), each --count times
    Submit(runs::SubmitArgs),
    /// List runs, newest first, from the whole history, a page at a time
    Runs(runs::ListArgs),
    /// Show a run, its steps and the tail of each step's output
    Run(runs::ShowArgs),
    /// Cancel a run, or every queued, running or waiting run a filter
    /// matches (shown first, and confirmed unless --yes)
    Cancel(runs::CancelArgs),
    /// Give the dead or failed step of a failed run a new attempt; with a
    /// filter, of every failed run it matches
    Retry(runs::RetryArgs),
    /// Print a run's (or a step's) output; -f follows it live to its end
    Logs(logs::LogsArgs),
    /// List pending approvals
    Approvals(approvals::ListArgs),
    /// Approve an approval gate
    Approve(approvals::DecideArgs),
    /// Reject an approval gate
    Reject(approvals::DecideArgs),
    /// List workers; `workers forget ID` forgets a stopped one
    Workers(workers::WorkersArgs),
    /// Stop a worker taking new work; it finishes what it holds
    Drain(workers::WorkerChange),
    /// Let a drained worker take work again
    Undrain(workers::WorkerChange),
    /// Drain a worker, then replace its process with a fresh one
    Recycle(workers::WorkerChange),
    /// Close a worker's open breaker: it takes work again
    ResetBreaker(workers::WorkerChange),
    /// List queues with their depth and rates
    Queues,
    /// Stop handing out a queue's steps
    Pause(queues::QueueChange),
    /// Hand out a paused queue's steps again
    Resume(queues::QueueChange),
    /// Change a queue's settings: `queue set Q --max-running N`
    Queue(queues::QueueArgs),
    /// List live leases (stale ones first)
    Leases(leases::ListArgs),
    /// Force-release a lease: its step goes back to its queue, or fails
    Release(leases::ReleaseArgs),
    /// List the event log, or follow it live
    Events(events::EventsArgs),
    /// List run names quarantined because their steps got stuck too often
    Quarantines,
    /// Let runs of a quarantined name be submitted and run again
    Unquarantine(quarantines::UnquarantineArgs),
    /// List [[notify]] deliveries not delivered yet or given up on
    Notifications(notifications::NotificationsArgs),
    /// Runs submitted on a cron schedule: add, list, show, pause, resume,
    /// remove, run-now
    #[command(subcommand)]
    Schedule(schedules::ScheduleCommand),
}

/// `--reason`, which every change takes: it is recorded with the change's
/// event in the audit trail.
#[derive(Debug, Args)]
pub struct Reason {
    /// Why: recorded in the audit trail with your identity
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl Reason {
    pub fn text(&self) -> String {
        self.reason.clone().unwrap_or_default()
    }
}

impl GlobalArgs {
    /// The TLS files given, for `https://` engines.
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// The longest a single call may take. A script must not hang on an engine
/// that accepted the connection but stopped answering.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a command runs with: the printer, and the engine, connected when
/// first needed so that usage errors are reported before connection errors.
#[derive(Debug)]
pub struct Ctx {
    pub printer: Printer,
    target: Target,
    auth: Auth,
    engine: Option<Engine>,
    /// What [`resolve`](Self::resolve) said of an id it found nothing for.
    unresolved: Option<tonic::Status>,
}

impl Ctx {
    pub fn new(global: GlobalArgs) -> Self {
        let tls = global.tls();
        Self {
            printer: Printer::new(global.output, global.time),
            target: Target::resolve(global.engine),
            auth: Auth::new(global.token).with_tls(tls),
            engine: None,
            unresolved: None,
        }
    }

    /// The engine, connecting on first use.
    pub async fn engine(&mut self) -> Result<&Engine, CliError> {
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => Engine::connect(self.target.clone(), self.auth.clone()).await?,
        };
        Ok(self.engine.insert(engine))
    }

    /// Drops the connection: the next [`engine`](Self::engine) connects
    /// anew (to whichever engine leads by then).
    pub fn disconnect(&mut self) {
        self.engine = None;
    }

    /// One unary call, bounded by [`CALL_TIMEOUT`], its error worded.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CliError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.refused(status)),
            Err(_) => Err(self.refused(tonic::Status::deadline_exceeded(format!(
                "the engine did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))),
        }
    }

    /// The whole id of a `kind` of object from what was typed: the id, or
    /// a unique prefix or suffix of it (tables and the console show an
    /// id's last characters). The engine matches it against everything it
    /// keeps (`Console.ResolveId`); several matches are refused, listed.
    ///
    /// When nothing matches, the text goes to the call as typed, so that
    /// the call answers as it would have (PERMISSION_DENIED to a caller
    /// without its role, say); should it too find nothing, its NOT_FOUND
    /// is the resolver's, which says what was looked for. Text goes as
    /// typed too to an older engine without the call, and for a caller
    /// the resolver refuses (whom the call will refuse in its own words).
    pub async fn resolve(&mut self, kind: IdKind, text: &str) -> Result<String, CliError> {
        let mut client = self.engine().await?.console();
        let request = ResolveIdRequest {
            kind: kind as i32,
            id: text.to_owned(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.resolve_id(request)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner().id),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                self.unresolved = Some(status);
                Ok(text.to_owned())
            }
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unimplemented | tonic::Code::PermissionDenied
                ) =>
            {
                Ok(text.to_owned())
            }
            Ok(Err(status)) => Err(self.refused(status)),
            Err(_) => Err(self.refused(tonic::Status::deadline_exceeded(format!(
                "the engine did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))),
        }
    }

    /// An engine error, with advice where the fix is on this side.
    pub fn refused(&self, status: tonic::Status) -> CliError {
        let status = match &self.unresolved {
            Some(unresolved) if status.code() == tonic::Code::NotFound => unresolved.clone(),
            _ => status,
        };
        let hint = status_hint(
            &status,
            self.auth.has_token(),
            &self.target.addr.to_string(),
        );
        CliError::Engine { status, hint }
    }
}

/// Runs one subcommand and says how the process should exit.
pub async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    let mut ctx = Ctx::new(global);
    match dispatch(&mut ctx, command).await {
        Ok(code) => code,
        Err(e) => {
            if let Some(report) = e.report() {
                output::note(&report);
            }
            if ctx.printer.json()
                && let Some(doc) = e.json()
            {
                // stdout may be what failed; stderr said it already.
                let _ = ctx.printer.document(&doc);
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(ctx: &mut Ctx, command: Command) -> Result<ExitCode, CliError> {
    use approvals::Verdict;
    use queues::QueueAction;
    use workers::WorkerAction;
    match command {
        Command::Submit(args) => return runs::submit(ctx, args).await,
        Command::Runs(args) => runs::list(ctx, args).await?,
        Command::Run(args) => runs::show(ctx, args).await?,
        Command::Cancel(args) => return runs::cancel(ctx, args).await,
        Command::Retry(args) => return runs::retry(ctx, args).await,
        Command::Logs(args) => return logs::run(ctx, args).await,
        Command::Approvals(args) => approvals::list(ctx, args).await?,
        Command::Approve(args) => approvals::decide(ctx, Verdict::Approve, args).await?,
        Command::Reject(args) => approvals::decide(ctx, Verdict::Reject, args).await?,
        Command::Workers(args) => match args.action {
            None => workers::list(ctx).await?,
            Some(workers::WorkersAction::Forget(change)) => {
                workers::change(ctx, WorkerAction::Forget, change).await?
            }
        },
        Command::Drain(args) => workers::change(ctx, WorkerAction::Drain, args).await?,
        Command::Undrain(args) => workers::change(ctx, WorkerAction::Undrain, args).await?,
        Command::Recycle(args) => workers::change(ctx, WorkerAction::Recycle, args).await?,
        Command::ResetBreaker(args) => {
            workers::change(ctx, WorkerAction::ResetBreaker, args).await?
        }
        Command::Queues => queues::list(ctx).await?,
        Command::Pause(args) => queues::change(ctx, QueueAction::Pause, args).await?,
        Command::Resume(args) => queues::change(ctx, QueueAction::Resume, args).await?,
        Command::Queue(args) => queues::queue(ctx, args).await?,
        Command::Leases(args) => leases::list(ctx, args).await?,
        Command::Release(args) => leases::release(ctx, args).await?,
        Command::Events(args) => events::run(ctx, args).await?,
        Command::Quarantines => quarantines::list(ctx).await?,
        Command::Unquarantine(args) => quarantines::clear(ctx, args).await?,
        Command::Notifications(args) => notifications::list(ctx, args).await?,
        Command::Schedule(command) => schedules::run(ctx, command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a state word (`waiting_approval`, or `waiting-approval`) for
/// clap; the error lists the words there are.
pub fn word<T: Word>(text: &str) -> Result<T, String> {
    T::from_word(text).ok_or_else(|| format!("expected one of: {}", T::words()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use opsdeck_proto::endpoint::EngineAddr;
    use opsdeck_proto::v1::RunState;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("opsdeck").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_parses_so_the_console_can_become_the_default() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = parse(&["runs", "--output", "json", "--engine", "unix:///tmp/e.sock"]).unwrap();
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(
            cli.global.engine,
            Some(EngineAddr::Unix("/tmp/e.sock".into()).into())
        );
        let cli = parse(&["-o", "json", "--engine", "10.0.0.1:7465", "queues"]).unwrap();
        assert_eq!(
            cli.global.engine,
            Some(EngineAddr::Tcp("http://10.0.0.1:7465".into()).into())
        );
        assert!(matches!(cli.command, Some(Command::Queues)));
    }

    #[test]
    fn bad_engine_addresses_and_formats_are_usage_errors() {
        let e = parse(&["--engine", "ftp://x", "runs"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("unix:///PATH"), "{e}");
        assert_eq!(parse(&["-o", "yaml", "runs"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["cancel"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn runs_takes_repeated_or_comma_separated_states() {
        let cli = parse(&[
            "runs",
            "--state",
            "running",
            "--state",
            "queued,waiting-approval",
        ]);
        let Some(Command::Runs(args)) = cli.unwrap().command else {
            panic!("not runs")
        };
        assert_eq!(
            args.filter.state,
            vec![
                RunState::Running,
                RunState::Queued,
                RunState::WaitingApproval
            ]
        );
        let e = parse(&["runs", "--state", "sleeping"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("waiting_approval"),
            "lists the words: {e}"
        );
    }

    #[test]
    fn submit_takes_its_flags() {
        let cli = parse(&[
            "submit",
            "-",
            "--wait",
            "--idempotency-key",
            "k1",
            "--reason",
            "r",
        ]);
        let Some(Command::Submit(args)) = cli.unwrap().command else {
            panic!("not submit")
        };
        assert_eq!(args.files, [std::path::PathBuf::from("-")]);
        assert_eq!(args.count, None);
        assert!(args.wait);
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(args.reason.text(), "r");
    }

    #[test]
    fn submit_takes_several_files_and_a_count() {
        let cli = parse(&["submit", "a.toml", "b.toml", "--count", "500"]);
        let Some(Command::Submit(args)) = cli.unwrap().command else {
            panic!("not submit")
        };
        assert_eq!(args.files.len(), 2);
        assert_eq!(args.count, Some(500));
        assert_eq!(parse(&["submit"]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["submit", "a.toml", "--count", "0"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn runs_takes_filters_and_paging_and_refuses_bad_values_as_usage_errors() {
        let cli = parse(&[
            "runs",
            "--name",
            "nightly-*",
            "--label",
            "a=1",
            "--label",
            "b=2",
            "--by",
            "cron",
            "--since",
            "1d",
            "--until",
            "2026-03-01T00:00:00Z",
            "--limit",
            "20",
            "--all",
        ]);
        let Some(Command::Runs(args)) = cli.unwrap().command else {
            panic!("not runs")
        };
        assert_eq!(args.filter.labels.len(), 2);
        assert!(args.all);
        for bad in [
            &["runs", "--label", "nokey"][..],
            &["runs", "--since", "yesterday"],
            &["runs", "--until", "2026-13-01T00:00:00Z"],
            &["runs", "--limit", "many"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn approve_takes_comment_as_another_name_for_reason() {
        let cli = parse(&["approve", "a1", "--comment", "looks good"]).unwrap();
        let Some(Command::Approve(args)) = cli.command else {
            panic!("not approve")
        };
        assert_eq!(args.id, "a1");
        assert_eq!(args.reason.as_deref(), Some("looks good"));
        let cli = parse(&["reject", "a1", "--reason", "not now"]).unwrap();
        let Some(Command::Reject(args)) = cli.command else {
            panic!("not reject")
        };
        assert_eq!(args.reason.as_deref(), Some("not now"));
    }

    #[test]
    fn every_change_takes_a_reason() {
        for change in [
            &["cancel", "r1"][..],
            &["retry", "r1"],
            &["drain", "w1"],
            &["undrain", "w1"],
            &["recycle", "w1"],
            &["reset-breaker", "w1"],
            &["pause", "q"],
            &["resume", "q"],
            &["queue", "set", "q", "--max-running", "2"],
            &["release", "l1", "--fail"],
            &["unquarantine", "nightly-backup"],
        ] {
            let mut args = change.to_vec();
            args.extend(["--reason", "incident 42"]);
            assert!(parse(&args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn cancel_and_retry_take_a_run_or_a_filter_not_both() {
        let cli = parse(&[
            "cancel", "--name", "deploy-*", "--label", "env=prod", "--yes",
        ])
        .unwrap();
        let Some(Command::Cancel(args)) = cli.command else {
            panic!("not cancel")
        };
        assert!(args.id.is_none() && args.bulk.yes);
        assert_eq!(args.filter.name.as_deref(), Some("deploy-*"));
        let cli = parse(&["retry", "--state", "failed", "--since", "1h", "--dry-run"]).unwrap();
        let Some(Command::Retry(args)) = cli.command else {
            panic!("not retry")
        };
        assert!(args.id.is_none() && args.bulk.dry_run);
        assert!(parse(&["retry", "r1", "-p", "v=1"]).is_ok());
        for bad in [
            &["cancel"][..],
            &["cancel", "r1", "--name", "x"],
            &["cancel", "r1", "--yes"],
            &["retry"],
            &["retry", "r1", "--state", "failed"],
            &["retry", "--name", "x", "-p", "v=1"],
            &["cancel", "--name", "x", "--limit", "0"],
            &["cancel", "--name", "x", "--limit", "10001"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn events_flags() {
        let cli = parse(&["events", "-f", "--from", "42", "--run", "r1"]).unwrap();
        let Some(Command::Events(args)) = cli.command else {
            panic!("not events")
        };
        assert!(args.follow);
        assert_eq!(args.from, Some(42));
        assert_eq!(args.run.as_deref(), Some("r1"));
    }

    #[test]
    fn the_token_is_hidden_from_debug_output() {
        let cli = parse(&["--token", "s3cret", "workers"]).unwrap();
        assert!(!format!("{cli:?}").contains("s3cret"));
    }
}
