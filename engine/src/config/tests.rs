//! Unit tests of [`super`].

use super::*;

#[test]
fn parses_durations_and_tokens() {
    let cfg = ConfigFile::parse(
        "[engine]\nlease_ttl = \"2s\"\n[[token]]\nidentity = \"ci\"\nsha256 = \""
            .to_owned()
            .as_str(),
        Path::new("x.toml"),
    );
    assert!(cfg.is_err());
    let hash = "a".repeat(64);
    let cfg = ConfigFile::parse(
        &format!(
            "[engine]\nlease_ttl = \"2s\"\n[[token]]\nidentity = \"ci\"\nsha256 = \"{hash}\"\n"
        ),
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(cfg.core_config().lease_ttl, Duration::from_secs(2));
    assert_eq!(cfg.token.len(), 1);
}

#[test]
fn mistakes_are_named_with_their_line() {
    let err = ConfigFile::parse("[engine]\nlease_tll = \"2s\"\n", Path::new("e.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lease_tll") && err.contains("line 2"), "{err}");
    let err = ConfigFile::parse("[engine]\nlease_ttl = \"soon\"\n", Path::new("e.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a duration") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn semantic_mistakes_are_named_with_their_line() {
    let text = "[engine]\nlisten = \"nowhere\"\ndatabase = \"mysql://x\"\n\n[metrics]\nlisten = \"1.2.3.4\"\n\n\
                [log]\nformat = \"xml\"\n\n[[token]]\nidentity = \"a\"\nsha256 = \"short\"\n";
    let err = ConfigFile::parse(text, Path::new("e.toml"))
        .unwrap_err()
        .to_string();
    for want in [
        "line 2: engine.listen",
        "line 3: engine.database",
        "line 6: metrics.listen",
        "line 9: log.format",
        "line 13: token[0].sha256",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    let err = ConfigFile::parse(
        "[engine]\nheartbeat_interval = \"5s\"\nlease_ttl = \"5s\"\n",
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 3: engine.lease_ttl"), "{err}");
}

#[test]
fn step_timeout_settings_are_checked_with_their_line() {
    let ok = ConfigFile::parse(
        "[engine]\ndefault_step_timeout = \"30m\"\nmax_step_timeout = \"2h\"\n",
        Path::new("e.toml"),
    )
    .unwrap();
    let c = ok.core_config();
    assert_eq!(
        (c.default_step_timeout, c.max_step_timeout),
        (Duration::from_secs(1800), Duration::from_secs(7200))
    );
    let err = ConfigFile::parse(
        "[engine]\ndefault_step_timeout = \"3h\"\nmax_step_timeout = \"2h\"\n",
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 2: engine.default_step_timeout")
            && err.contains("longer than max_step_timeout"),
        "{err}"
    );
    let err = ConfigFile::parse(
        "[engine]\nmax_step_timeout = \"10m\"\n",
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2: engine.max_step_timeout"), "{err}");
    let err = ConfigFile::parse("[engine]\nbreaker_cooldown = \"0s\"\n", Path::new("e.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2: engine.breaker_cooldown"), "{err}");
}

#[test]
fn tls_client_mistakes_are_named_with_their_line() {
    let tls = "[tls]\ncert = \"e.pem\"\nkey = \"e.key\"\n";
    let ok = ConfigFile::parse(
        &format!(
            "{tls}client_ca = \"ca.pem\"\n\n[[tls.client]]\nname = \"worker-7\"\nroles = [\"agent\"]\n"
        ),
        Path::new("e.toml"),
    )
    .unwrap();
    let clients = ok.tls.unwrap().client;
    assert_eq!(clients[0].name, "worker-7");
    assert_eq!(clients[0].roles, [Role::Agent]);
    let err = ConfigFile::parse(
        &format!(
            "{tls}client_ca = \"ca.pem\"\n\n[[tls.client]]\nname = \"a\"\n\n\
             [[tls.client]]\nname = \" \"\n\n[[tls.client]]\nname = \"a\"\n"
        ),
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    for want in [
        "line 10: tls.client[1].name: name is empty",
        "line 13: tls.client[2].name: \"a\" is named by an earlier",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    let err = ConfigFile::parse(
        &format!("{tls}\n[[tls.client]]\nname = \"a\"\n"),
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 5") && err.contains("need [tls] client_ca"),
        "{err}"
    );
    let err = ConfigFile::parse(
        &format!("{tls}client_ca = \"ca.pem\"\n[[tls.client]]\nname = \"a\"\nroles = [\"root\"]\n"),
        Path::new("e.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 7") && err.contains("root"), "{err}");
}

#[test]
fn an_agent_credential_without_queues_is_warned_about() {
    let text = "[[token]]\nidentity = \"fleet\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"agent\"]\n\n\
                [[token]]\nidentity = \"builders\"\nsha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\nroles = [\"agent\"]\nqueues = [\"build\"]\n";
    let cfg = ConfigFile::parse(text, Path::new("t.toml")).unwrap();
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("\"fleet\"") && warnings[0].contains("queues"),
        "{warnings:?}"
    );
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let text = include_str!("../../../examples/engine.toml");
    let cfg = ConfigFile::parse(text, Path::new("examples/engine.toml")).unwrap();
    let d = CoreConfig::default();
    let c = cfg.core_config();
    assert_eq!(c.lease_ttl, d.lease_ttl);
    assert_eq!(c.heartbeat_interval, d.heartbeat_interval);
    // Every setting is written out, commented with one '#' (prose has
    // two), and is still valid with every setting uncommented.
    let uncommented: String = text
        .lines()
        .filter(|l| !l.starts_with("##"))
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let full = ConfigFile::parse(&uncommented, Path::new("examples/engine.toml"));
    assert!(full.is_ok(), "{full:?}");
    for key in [
        "data_dir",
        "listen",
        "socket",
        "database",
        "local_workers",
        "trust_local_steps",
        "heartbeat_interval",
        "lease_ttl",
        "worker_timeout",
        "cancel_grace",
        "output_cap_bytes",
        "subscriber_buffer",
        "quarantine_after",
        "quarantine_window",
        "failure_quarantine_after",
        "failure_quarantine_window",
        "default_step_timeout",
        "max_step_timeout",
        "breaker_after",
        "breaker_cooldown",
        "finished_runs_kept",
        "finished_runs_kept_for",
        "runs",
        "events",
        "output",
        "workers",
        "interval",
        "batch",
        "max_spec_bytes",
        "max_steps",
        "max_command_bytes",
        "max_env_entries",
        "max_attempts",
        "max_message_bytes",
        "max_connections",
        "max_pending_per_peer",
        "handshake_timeout",
        "max_streams_per_connection",
        "max_subscribers",
        "max_subscribers_per_identity",
        "format",
        "dir",
        "identity",
        "sha256",
        "roles",
        "groups",
        "workers",
        "queues",
        "approvals",
        "others",
        "approval_overdue_before",
        "worker_offline_after",
        "give_up_after",
        "retry_min",
        "retry_max",
        "poll_interval",
        "url",
        "secret",
        "timeout",
        "on",
        "run_name",
        "label",
    ] {
        assert!(
            uncommented.contains(&format!("\n{key} = ")),
            "examples/engine.toml does not show {key}"
        );
    }
}
