//! `opsdeck`: the console and CLI of an opsdeck engine.

use std::process::ExitCode;

use clap::Parser;
use opsdeck_tui::args::{Args, Command};
use opsdeck_tui::client::{Auth, Target};
use opsdeck_tui::{cli, console, demo};

fn main() -> ExitCode {
    // Usage errors exit 2 here, from clap.
    let args = Args::parse();
    // One thread is plenty: a command makes one call at a time, and the
    // console draws a frame in well under a millisecond per thousand rows.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Command::Cli(command)) => runtime.block_on(cli::run(args.global, command)),
        Some(Command::Demo(demo_args)) => runtime.block_on(demo::run(demo_args)),
        None => {
            let tls = args.global.tls();
            let target = Target::resolve(args.global.engine);
            let auth = Auth::new(args.global.token).with_tls(tls);
            match runtime.block_on(console::run(target, auth, args.readonly)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
