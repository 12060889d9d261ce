//! The `opsdeck` command line: the console (no subcommand), `demo`, and
//! every scriptable subcommand of [`cli`](crate::cli), which keeps its own
//! flags and help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cli::{self, GlobalArgs};
use crate::demo::DemoArgs;
use crate::manual;

#[derive(Debug, Parser)]
#[command(
    name = "opsdeck",
    version,
    about = "Operate an opsdeck engine: with no subcommand, the live console; \
             with one, a scriptable command",
    after_help = "Exit status: 0 success; 1 the engine refused or could not be reached \
                  (or `submit --wait` saw the run not succeed); 2 usage error."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Open the console with every key that changes something turned off
    #[arg(long)]
    pub readonly: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a throwaway engine, three workers and a workload, and open the console on it
    Demo(DemoArgs),
    #[command(flatten)]
    Cli(cli::Command),
    /// Print the completion script for a shell, e.g. `opsdeck completions bash > /etc/bash_completion.d/opsdeck`
    Completions {
        #[arg(value_enum)]
        shell: manual::Shell,
    },
    /// Print the man page, or with --out-dir write one per command there (opsdeck.1, opsdeck-submit.1, ...)
    Manpage {
        /// The directory to write the pages to, e.g. /usr/local/share/man/man1
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("opsdeck").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn no_subcommand_opens_the_console_with_the_clis_engine_flags() {
        let args = parse(&["--engine", "unix:///tmp/e.sock", "--readonly"]).unwrap();
        assert!(args.command.is_none());
        assert!(args.readonly);
        assert!(args.global.engine.is_some());
        assert!(!parse(&[]).unwrap().readonly);
    }

    #[test]
    fn the_cli_subcommands_and_demo_are_all_there() {
        assert!(matches!(
            parse(&["approve", "a1", "--reason", "ok"]).unwrap().command,
            Some(Command::Cli(cli::Command::Approve(_)))
        ));
        assert!(matches!(
            parse(&["demo"]).unwrap().command,
            Some(Command::Demo(_))
        ));
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    }
}
