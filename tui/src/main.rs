//! `opsdeck`: the console and CLI of an opsdeck engine.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use opsdeck_tui::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit 2 here, from clap.
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        // The console will start here. Until then, say what there is.
        eprint!("{}", Cli::command().render_help());
        return ExitCode::from(2);
    };
    // One thread is plenty: a command makes one call at a time.
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
    runtime.block_on(cli::run(cli.global, command))
}
