//! `opsdeck`: the console and CLI of an opsdeck engine.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use opsdeck_tui::args::{Args, Command};
use opsdeck_tui::client::{Auth, Target};
use opsdeck_tui::{cli, console, demo, manual};

fn main() -> ExitCode {
    // Usage errors exit 2 here, from clap.
    let args = Args::parse();
    match args.command {
        // These need no engine and no runtime.
        Some(Command::Completions { shell }) => print(&manual::completions(Args::command(), shell)),
        Some(Command::Manpage { out_dir: None }) => match manual::man_page(Args::command()) {
            Ok(page) => print(&page),
            Err(e) => fail(format_args!("cannot render the man page: {e}")),
        },
        Some(Command::Manpage { out_dir: Some(dir) }) => write_man_pages(&dir),
        _ => run(args),
    }
}

fn run(args: Args) -> ExitCode {
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
        // Answered by `main` before a runtime is made.
        Some(Command::Completions { .. } | Command::Manpage { .. }) => ExitCode::SUCCESS,
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

/// Bytes to stdout; a closed pipe (`| head`) is an error, not a panic.
fn print(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("cannot write to stdout: {e}")),
    }
}

fn write_man_pages(dir: &Path) -> ExitCode {
    match manual::write_man_pages(Args::command(), dir) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!(
            "cannot write the man pages to {}: {e}",
            dir.display()
        )),
    }
}

fn fail(message: std::fmt::Arguments) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
