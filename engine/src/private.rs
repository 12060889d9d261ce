//! What the engine and the worker keep on disk is theirs alone, and their
//! memory is out of their steps' reach.
//!
//! Files: the data dir holds the database (every run's spec, output and
//! event), the spools hold results with the tail of the steps' output, the
//! logs name identities and runs. None of it is for other local users, so
//! directories are made 0700 and files 0600 whatever the umask.
//!
//! Two layers do that. `opsdeckd` sets its umask to 077 first thing
//! ([`restrict_umask`]): it is the one sure way to cover the files created
//! by code that takes no mode — SQLite's database, `-wal` and `-shm`
//! (created by the SQLite library inside sqlx, at times of its choosing),
//! `VACUUM INTO` backups and the log files `tracing-appender` opens as days
//! roll. Chmod after the fact would leave a window and miss files made
//! later. Beside it, every directory and file our own code creates names
//! its mode ([`create_dir_all`], [`write`], [`file_options`]), so the
//! engine run as a library (tests, `bench`) keeps them private too.
//!
//! The umask the process was started with is kept ([`inherited_umask`]):
//! steps get it back (their files are the job's business, not ours), and the
//! Unix socket's mode follows it, so that `UMask=0007` in the unit still
//! lets the `opsdeck` group connect.
//!
//! Memory: [`make_non_dumpable`] stops a process of the same user (such as
//! a step) from reading `/proc/PID/environ`, `/proc/PID/mem` or attaching a
//! debugger. Removing a variable from the environment would not do: the
//! kernel shows the block the process started with, whatever it changes
//! later. (`/proc/PID/cmdline` stays readable by every local user: secrets
//! do not belong on a command line.)

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

use nix::sys::stat::{Mode, umask};

/// Directories: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files: the owner only, no execute.
pub const FILE_MODE: u32 = 0o600;

/// Permission bits that open something to the group or to others.
const OPEN_TO_OTHERS: u32 = 0o077;

static INHERITED_UMASK: OnceLock<Mode> = OnceLock::new();

/// Sets this process's umask to 077 and remembers the one it was started
/// with. Call it first thing in `main`, before any thread starts: the umask
/// is process-wide.
pub fn restrict_umask() {
    let inherited = umask(Mode::from_bits_truncate(OPEN_TO_OTHERS));
    // A second call would find 077 and must not forget the real one.
    let _ = INHERITED_UMASK.set(inherited);
}

/// The umask the process was started with, once [`restrict_umask`] ran.
pub fn inherited_umask() -> Option<Mode> {
    INHERITED_UMASK.get().copied()
}

/// Makes this process non-dumpable: a process of the same user without
/// `CAP_SYS_PTRACE` can then no longer read its `/proc/PID/environ`,
/// `/proc/PID/mem` or `/proc/PID/fd`, nor trace it; no core file is written
/// either. Its children are not affected: `execve` makes the step dumpable
/// again, so steps can still be debugged.
pub fn make_non_dumpable() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

/// `mkdir -p` with [`DIR_MODE`] for every directory it creates (existing
/// ones are left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options to create a file with [`FILE_MODE`] (the mode applies when the
/// file is created; an existing file keeps its own).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Writes `contents` to `path`, creating it with [`FILE_MODE`], replacing
/// what it held.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let mut file = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents.as_ref())
}

/// Gives `path` [`FILE_MODE`].
pub fn restrict_file(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
}

/// The permission bits of `path` when they let the group or others in
/// (`None` when they do not, or `path` does not exist).
pub fn open_to_others(path: &Path) -> io::Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            Ok((mode & OPEN_TO_OTHERS != 0).then_some(mode))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A warning for a data dir that other local users can look into, saying
/// how to fix it; `None` when it is private or does not exist yet (the
/// engine will create it private).
pub fn data_dir_warning(dir: &Path) -> Option<String> {
    match open_to_others(dir) {
        Ok(None) => None,
        Ok(Some(mode)) => Some(format!(
            "the data dir {} is open to other users (mode {mode:04o}): it holds the database, \
             with every run's output; run `chmod 700 {}`",
            dir.display(),
            dir.display()
        )),
        Err(e) => Some(format!(
            "cannot check the permissions of the data dir {}: {e}",
            dir.display()
        )),
    }
}

/// The mode for the Unix socket under the umask the process was started
/// with. Connecting needs write permission, the only bit that matters on a
/// socket: the owner always, the group and others as the umask allows.
pub fn socket_mode(inherited: Mode) -> u32 {
    let allowed = !inherited.bits();
    let group = if allowed & 0o020 != 0 { 0o060 } else { 0 };
    let others = if allowed & 0o002 != 0 { 0o006 } else { 0 };
    0o600 | group | others
}

/// `mkdir -p` for the directories leading to the Unix socket, each given
/// the mode the umask the process was started with would have given it,
/// so that the users the socket is for can reach it.
pub fn create_socket_dirs(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut dir = Some(path);
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        if let Some(inherited) = inherited_umask() {
            fs::set_permissions(d, Permissions::from_mode(0o777 & !inherited.bits()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_and_files_are_made_for_the_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let file = deep.join("f");
        write(&file, "x").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn a_data_dir_open_to_others_is_warned_about_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        assert_eq!(data_dir_warning(&dir), None, "missing: made private later");
        create_dir_all(&dir).unwrap();
        assert_eq!(data_dir_warning(&dir), None);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let warning = data_dir_warning(&dir).expect("a warning");
        assert!(warning.contains(&dir.display().to_string()), "{warning}");
        assert!(warning.contains("0755"), "{warning}");
        assert!(
            warning.contains(&format!("chmod 700 {}", dir.display())),
            "{warning}"
        );
        fs::set_permissions(&dir, Permissions::from_mode(0o710)).unwrap();
        assert!(data_dir_warning(&dir).is_some());
    }

    #[test]
    fn the_socket_is_writable_by_whom_the_umask_allows() {
        let m = |bits| Mode::from_bits_truncate(bits);
        assert_eq!(socket_mode(m(0o022)), 0o600);
        assert_eq!(socket_mode(m(0o077)), 0o600);
        assert_eq!(socket_mode(m(0o007)), 0o660);
        assert_eq!(socket_mode(m(0o002)), 0o660);
        assert_eq!(socket_mode(m(0o000)), 0o666);
    }
}
