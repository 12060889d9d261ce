//! Shell completions and man pages, as the Debian package makes them and as
//! a user without it does: `completions SHELL` and `manpage [--out-dir DIR]`
//! of both binaries, generated from their real command lines.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use opsdeck_tests::{opsdeck, opsdeckd};

/// Subcommands each binary must show in its completions and man pages.
const OPSDECKD_COMMANDS: &[&str] = &["serve", "worker", "check-config", "migrate", "token"];
const OPSDECK_COMMANDS: &[&str] = &["submit", "approve", "workers", "events", "demo"];

fn run(program: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(program)
        .args(args)
        .env_remove("OPSDECK_CONFIG")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn assert_mentions(what: &str, text: &str, words: &[&str]) {
    for word in words {
        assert!(
            text.contains(word),
            "{what} does not mention {word:?}:\n{text}"
        );
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_offer_every_subcommand_of_both_binaries() {
    for (program, name, commands) in [
        (opsdeckd(), "opsdeckd", OPSDECKD_COMMANDS),
        (opsdeck(), "opsdeck", OPSDECK_COMMANDS),
    ] {
        let bash = run(&program, &["completions", "bash"]);
        assert!(
            bash.contains(&format!("complete -F _{name}")),
            "the bash script does not register {name}:\n{bash}"
        );
        assert_mentions(&format!("{name}'s bash completions"), &bash, commands);
        let zsh = run(&program, &["completions", "zsh"]);
        assert!(
            zsh.starts_with(&format!("#compdef {name}")),
            "the zsh script is not for {name}:\n{zsh}"
        );
        assert_mentions(&format!("{name}'s zsh completions"), &zsh, commands);
        let fish = run(&program, &["completions", "fish"]);
        assert!(
            fish.contains(&format!("complete -c {name}")),
            "the fish script is not for {name}:\n{fish}"
        );
        assert_mentions(&format!("{name}'s fish completions"), &fish, commands);
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_shells() {
    let out = Command::new(opsdeckd())
        .args(["completions", "tcsh"])
        .output()
        .expect("run opsdeckd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh") && stderr.contains("fish"),
        "{stderr}"
    );
}

#[test]
fn the_man_page_lists_the_subcommands_and_out_dir_writes_one_readable_page_per_command() {
    for (program, name, commands) in [
        (opsdeckd(), "opsdeckd", OPSDECKD_COMMANDS),
        (opsdeck(), "opsdeck", OPSDECK_COMMANDS),
    ] {
        // roff writes a hyphen as `\-`.
        let page = run(&program, &["manpage"]).replace("\\-", "-");
        assert!(
            page.contains(&format!(".TH {name} 1")),
            "not the man page of {name}:\n{page}"
        );
        assert_mentions(&format!("{name}'s man page"), &page, commands);

        let dir = tempfile::tempdir().expect("a temp dir");
        let out_dir = dir.path().join("man1");
        let listed = run(
            &program,
            &[
                "manpage",
                "--out-dir",
                out_dir.to_str().expect("a UTF-8 path"),
            ],
        );
        for command in
            std::iter::once(name.to_owned()).chain(commands.iter().map(|c| format!("{name}-{c}")))
        {
            let path = out_dir.join(format!("{command}.1"));
            assert!(
                listed.contains(&path.display().to_string()),
                "{path:?} not listed:\n{listed}"
            );
            let text = std::fs::read_to_string(&path).expect("the page was written");
            assert!(
                text.contains(&format!("\"{name} {}\"", env!("CARGO_PKG_VERSION"))),
                "{path:?} does not name {name} and its version:\n{text}"
            );
            assert!(
                text.contains(&format!(".TH {command} 1")),
                "{path:?} is not the page of {command}:\n{text}"
            );
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o644, "{path:?} must be readable by everyone");
        }
    }
}
