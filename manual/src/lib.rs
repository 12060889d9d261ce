//! Shell completions and man pages, generated from a binary's own clap
//! definition so that they cannot drift from it. Both binaries have the
//! two commands (`opsdeckd completions SHELL`, `opsdeck manpage [--out-dir
//! DIR]`, ...), which the Debian package runs when it is built.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// The man page (section 1) of `cmd` itself, which lists its subcommands.
pub fn man_page(cmd: clap::Command) -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    Ok(page)
}

/// Writes the man page of `cmd` and one of each of its subcommands
/// (`opsdeckd-serve.1`, `opsdeck-workers-forget.1`, ...) into `dir`, made if
/// missing; every page readable by all (0644) whatever the umask. Returns
/// the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    // Built, the subcommands carry their display names (`opsdeckd-serve`).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // Every page's footer names the program and its version.
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut written = Vec::new();
    write_pages(cmd, &source, dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: clap::Command,
    source: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub.clone(), source, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd).source(source);
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)?;
    file.write_all(&page)?;
    // An existing file keeps its mode through open(); the umask only
    // narrows a new one's.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    written.push(path);
    Ok(())
}
