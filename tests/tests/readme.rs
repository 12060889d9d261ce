//! The README, as a newcomer reads it: every command and flag its usage
//! blocks name exists in the binaries; every run spec it shows is accepted
//! by a real engine; every engine config fragment is one the engine takes
//! (with its placeholders filled in); and the shell blocks that can run
//! here are run, line by line, against a real engine and worker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, opsdeck, opsdeckd};

/// A fenced block: its language (empty when none), text and first line.
struct Block {
    lang: String,
    text: String,
    line: usize,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(path).expect("read README.md")
}

fn blocks() -> Vec<Block> {
    let text = readme();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    text: String::new(),
                    line: i + 2,
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md ends inside a fenced block");
    out
}

fn run(program: &Path, args: &[&str], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run a binary")
}

/// One command of a usage block: the binary, its subcommand words and the
/// flags shown with it.
#[derive(Debug, Default)]
struct Usage {
    binary: String,
    words: Vec<String>,
    flags: BTreeSet<String>,
}

/// The columns of a line (two or more spaces apart), with where each starts.
fn columns(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let gap = b == b' ' && bytes.get(i + 1) == Some(&b' ');
        match (start, gap || b == b' ' && start.is_none()) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                out.push((s, line[s..i].trim()));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line[s..].trim()));
    }
    out
}

/// The commands of a usage block. `a / b` lists commands of one binary; a
/// column that starts with `[` goes on with the command above it (the one
/// whose column starts nearest to its left); `global:` and `serve:` name
/// whose flags follow.
fn usages(block: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    let mut binary = String::new();
    // Where each column's last command started, for continuation lines.
    let mut at: Vec<(usize, usize)> = Vec::new();
    for line in block.lines() {
        for (offset, column) in columns(line) {
            let mut current = None;
            if column.starts_with('[') {
                current = at
                    .iter()
                    .filter(|(o, _)| *o <= offset)
                    .max_by_key(|(o, _)| *o)
                    .map(|(_, u)| *u);
            }
            for part in column.split(" / ").map(str::trim) {
                let mut in_words = false;
                for word in part.split_whitespace() {
                    if word == "opsdeck" || word == "opsdeckd" {
                        binary = word.to_owned();
                        out.push(Usage {
                            binary: binary.clone(),
                            ..Usage::default()
                        });
                        current = Some(out.len() - 1);
                        in_words = true;
                        continue;
                    }
                    if let Some(sub) = word.strip_suffix(':') {
                        out.push(Usage {
                            binary: binary.clone(),
                            words: if sub == "global" {
                                vec![]
                            } else {
                                vec![sub.to_owned()]
                            },
                            ..Usage::default()
                        });
                        current = Some(out.len() - 1);
                        in_words = false;
                        continue;
                    }
                    let bare = word.trim_matches(|c| "[]().,|;".contains(c));
                    let is_word = !bare.is_empty()
                        && !bare.starts_with('-')
                        && bare.chars().all(|c| c.is_ascii_lowercase() || c == '-');
                    if current.is_none() && is_word {
                        // `a / b`: b is another command of the same binary.
                        out.push(Usage {
                            binary: binary.clone(),
                            ..Usage::default()
                        });
                        current = Some(out.len() - 1);
                        in_words = true;
                    }
                    let Some(u) = current else { continue };
                    if in_words && is_word {
                        out[u].words.push(bare.to_owned());
                        continue;
                    }
                    in_words = false;
                    for flag in word.split(['[', ']', '|', '(', ')', ';']) {
                        let flag = flag.split('=').next().unwrap_or_default();
                        let flag = flag.trim_end_matches(['.', ',']);
                        if flag.starts_with('-') && flag.len() > 1 {
                            out[u].flags.insert(flag.to_owned());
                        }
                    }
                }
                // The next part of `a / b` is a command of its own. A
                // column that starts commands is where continuation lines
                // below it look; it hides those at or right of it above.
                if let Some(u) = current.take()
                    && !column.starts_with('[')
                {
                    at.retain(|(o, _)| *o < offset);
                    at.push((offset, u));
                }
            }
        }
    }
    out
}

fn binary(name: &str) -> PathBuf {
    match name {
        "opsdeck" => opsdeck(),
        _ => opsdeckd(),
    }
}

#[test]
fn every_command_and_flag_of_the_usage_blocks_exists() {
    let mut checked = 0;
    for block in blocks().iter().filter(|b| b.lang.is_empty()) {
        let first = block.text.trim_start();
        if !(first.starts_with("opsdeck ") || first.starts_with("opsdeckd ")) {
            continue;
        }
        for usage in usages(&block.text) {
            let mut args: Vec<&str> = usage.words.iter().map(String::as_str).collect();
            args.push("--help");
            let out = run(&binary(&usage.binary), &args, None);
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "README line {}: `{} {}` is not a command: {}",
                block.line,
                usage.binary,
                usage.words.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            for flag in &usage.flags {
                let shown = help
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
                    .any(|w| w == flag);
                assert!(
                    shown,
                    "README line {}: `{} {}` has no {flag}:\n{help}",
                    block.line,
                    usage.binary,
                    usage.words.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} commands found in the README's usage blocks"
    );
}

/// The `[[step]]` blocks, with the values of their required parameters.
fn spec_blocks() -> Vec<Block> {
    blocks()
        .into_iter()
        .filter(|b| b.lang == "toml" && b.text.contains("[[step]]"))
        .collect()
}

#[tokio::test]
async fn every_run_spec_shown_is_accepted_by_a_real_engine() {
    let engine = Engine::start(EngineOpts {
        config: "[secrets]\napi_token = { env = \"OPSDECK_SECRET_API_TOKEN\" }\n".into(),
        env: vec![("OPSDECK_SECRET_API_TOKEN".into(), "s3cret".into())],
        ..EngineOpts::default()
    })
    .await;
    let specs = spec_blocks();
    assert!(specs.len() >= 2, "the README shows run specs");
    for (i, block) in specs.iter().enumerate() {
        let file = engine.work_dir().join(format!("readme-{i}.toml"));
        std::fs::write(&file, &block.text).expect("write the spec");
        let file = file.display().to_string();
        let mut args = vec!["--engine", "", "submit", file.as_str()];
        let addr = engine.unix_addr();
        args[1] = &addr;
        if block.text.contains("required = true") {
            // The values the README's own command gives.
            args.extend(["-p", "version=v1.4.2"]);
        }
        let out = run(&opsdeck(), &args, None);
        assert!(
            out.status.success(),
            "README line {}: the run spec was refused: {}",
            block.line,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_engine_config_fragment_is_taken_by_check_config() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut checked = 0;
    for block in blocks().into_iter().filter(|b| {
        b.lang == "toml" && !b.text.contains("[[step]]") && !b.text.contains("name = \"deploy")
    }) {
        // Placeholders a reader fills in: a token's hash, and files this
        // machine does not have (made here, empty or as PEM-shaped text
        // the check does not parse).
        let text = block.text.replace(
            "sha256 = \"…\"",
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
        );
        let mut text = text;
        for path in paths_in(&text) {
            let local = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&local, "x\n").expect("write a placeholder file");
            std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("a secret file only its owner reads");
            text = text.replace(&path, &local.display().to_string());
        }
        let file = dir.path().join(format!("fragment-{}.toml", block.line));
        std::fs::write(&file, &text).expect("write the fragment");
        let out = Command::new(opsdeckd())
            .args(["check-config", "--config", &file.display().to_string()])
            // What the secrets fragment reads from the environment.
            .env("OPSDECK_SECRET_API_TOKEN", "s3cret")
            .stdin(Stdio::null())
            .output()
            .expect("run opsdeckd check-config");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A fragment may lean on what the rest of a config gives (TLS
        // files that hold real certificates); what it must never be is
        // misspelt or of the wrong shape.
        assert!(
            out.status.success() || said.contains("certificate") || said.contains("PEM"),
            "README line {}: check-config refused the fragment:\n{text}\n{said}",
            block.line
        );
        assert!(
            !said.contains("unknown field") && !said.contains("invalid type"),
            "README line {}: {said}",
            block.line
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} config fragments found");
}

/// Absolute paths under /etc a fragment names.
fn paths_in(text: &str) -> Vec<String> {
    text.split('"')
        .filter(|s| s.starts_with("/etc/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_parameters_commands_run_as_shown() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["deploy"], 1).await;
    let all = blocks();
    // The spec the commands submit is the block before them.
    let at = all
        .iter()
        .position(|b| b.lang == "sh" && b.text.contains("opsdeck submit deploy.toml"))
        .expect("the README's parameters commands");
    let spec = &all[at - 1];
    assert_eq!(
        spec.lang, "toml",
        "the spec block comes before the commands"
    );
    let dir = engine.work_dir();
    // The spec's command stands in for a real deploy tool.
    let text = spec.text.replace("run = \"deploy ", "run = \"echo deploy ");
    std::fs::write(dir.join("deploy.toml"), text).expect("write deploy.toml");
    let addr = engine.unix_addr();
    let mut first_id = String::new();
    for line in all[at].text.lines() {
        let command = line.split('#').next().unwrap_or_default().trim();
        let command = command.replace("RUN", &first_id);
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"opsdeck"), "{line}");
        let mut args = vec!["--engine", addr.as_str()];
        args.extend(&words[1..]);
        let out = run(&opsdeck(), &args, Some(&dir));
        assert!(
            out.status.success(),
            "README line `{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if first_id.is_empty() {
            let runs = run(
                &opsdeck(),
                &["--engine", &addr, "runs", "--output", "json"],
                None,
            );
            let doc: serde_json::Value = serde_json::from_slice(&runs.stdout).expect("JSON");
            first_id = doc["runs"][0]["id"].as_str().expect("a run").to_owned();
        }
    }
    let first = engine
        .wait_run_state(&first_id, RunState::Succeeded, DEADLINE)
        .await;
    assert_eq!(first.params["env"], "prod");
    assert!(
        engine
            .output_text(&first_id)
            .await
            .contains("deploy --version v1.4.2 --replicas 2")
    );
}
