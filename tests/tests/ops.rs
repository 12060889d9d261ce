//! Operating the engine: `check-config` and the example config, Prometheus
//! metrics with `/healthz` and `/readyz`, systemd's notify protocol, log
//! files, and backups of a live database restored into a new engine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use opsdeck_tests::pb::{RunState, StepState};
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, opsdeckd, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn run_opsdeckd(args: &[&str]) -> Output {
    Command::new(opsdeckd())
        .args(args)
        .env_remove("OPSDECK_CONFIG")
        .output()
        .expect("run opsdeckd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spec(name: &str, queue: &str, run: &str) -> String {
    format!(
        "name = \"{name}\"\n[[step]]\nname = \"s\"\nqueue = \"{queue}\"\nmax_attempts = 1\nrun = \"{run}\"\n"
    )
}

/// GET over plain HTTP/1.1: (status, body).
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

fn metrics_addr(engine: &Engine) -> String {
    std::fs::read_to_string(engine.data_dir().join("metrics.addr"))
        .expect("the engine names its metrics address in metrics.addr")
        .trim()
        .to_owned()
}

/// The value of one sample (`name` with exactly `labels`), if present.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|got| got == *v))
        })
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

async fn scrape(addr: &str) -> (prometheus_parse::Scrape, String) {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    (parsed, body)
}

#[test]
fn the_example_config_passes_check_config_and_mistakes_are_named_with_their_lines() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/engine.toml");
    let out = run_opsdeckd(&["check-config", "--config", &example.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(": ok"), "{}", text(&out));

    let dir = tempfile::tempdir().expect("a temp dir");
    let bad = dir.path().join("engine.toml");
    std::fs::write(
        &bad,
        "[engine]\nlisten = \"localhost\"\n\n[metrics]\nlisten = \"127.0.0.1:http\"\n",
    )
    .expect("write the config");
    let out = run_opsdeckd(&["check-config", "--config", &bad.to_string_lossy()]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("line 2: engine.listen"), "{said}");
    assert!(said.contains("line 5: metrics.listen"), "{said}");

    std::fs::write(&bad, "[engine]\nlease_ttl = \"30s\"\nleese = 1\n").expect("write the config");
    let out = run_opsdeckd(&["check-config", "--config", &bad.to_string_lossy()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("line 3"), "{}", text(&out));
    assert!(text(&out).contains("leese"), "{}", text(&out));
}

#[tokio::test]
async fn metrics_count_steps_runs_and_queues_and_parse_as_prometheus_text() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["work"], 2).await;
    let mut ok = Vec::new();
    for i in 0..3 {
        ok.push(
            engine
                .submit(&spec(&format!("ok{i}"), "work", "true"))
                .await,
        );
    }
    let bad = engine.submit(&spec("bad", "work", "false")).await;
    for run in &ok {
        engine
            .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
            .await;
    }
    engine
        .wait_run_state(&bad.id, RunState::Failed, DEADLINE)
        .await;
    // Two steps nobody serves: queue depth and the oldest ready age.
    engine.submit(&spec("idle1", "idle", "true")).await;
    engine.submit(&spec("idle2", "idle", "true")).await;
    engine
        .submit("name = \"gated\"\n[[step]]\nname = \"ok?\"\napproval = { timeout = \"1h\" }\n")
        .await;

    let addr = metrics_addr(&engine);
    let (status, body) = http_get(&addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    // Gauges are read when scraped; wait for the ones set by the last submits.
    let (m, body) = wait_for("the metrics to show the idle queue", DEADLINE, || {
        let addr = addr.clone();
        async move {
            let (m, body) = scrape(&addr).await;
            let ready = sample(
                &m,
                "opsdeck_queue_steps",
                &[("queue", "idle"), ("state", "ready")],
            );
            (ready == Some(2.0)).then_some((m, body))
        }
    })
    .await;
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{body}"))
    };
    assert_eq!(
        get(
            "opsdeck_queue_steps",
            &[("queue", "work"), ("state", "ready")]
        ),
        0.0
    );
    assert_eq!(
        get(
            "opsdeck_queue_steps",
            &[("queue", "work"), ("state", "running")]
        ),
        0.0
    );
    assert!(
        get(
            "opsdeck_queue_oldest_ready_age_seconds",
            &[("queue", "idle")]
        ) >= 0.0
    );
    assert_eq!(get("opsdeck_workers", &[("state", "online")]), 1.0);
    assert_eq!(get("opsdeck_workers", &[("state", "offline")]), 0.0);
    assert_eq!(get("opsdeck_leases_live", &[]), 0.0);
    assert_eq!(get("opsdeck_approvals_pending", &[]), 1.0);
    assert!(get("opsdeck_stream_subscribers", &[]) >= 0.0);
    assert_eq!(get("opsdeck_ready", &[]), 1.0);
    assert_eq!(get("opsdeck_steps_total", &[("outcome", "succeeded")]), 3.0);
    assert_eq!(get("opsdeck_steps_total", &[("outcome", "dead")]), 1.0);
    // At least one per step (a lease lost on a loaded machine adds one).
    assert!(get("opsdeck_assignments_total", &[("outcome", "granted")]) >= 4.0);
    assert!(get("opsdeck_assignments_total", &[("outcome", "released")]) >= 4.0);
    assert_eq!(
        get("opsdeck_run_transitions_total", &[("to", "submitted")]),
        7.0
    );
    assert_eq!(
        get("opsdeck_run_transitions_total", &[("to", "succeeded")]),
        3.0
    );
    assert_eq!(
        get("opsdeck_run_transitions_total", &[("to", "failed")]),
        1.0
    );
    assert!(get("opsdeck_events_total", &[]) >= 20.0);
    assert_eq!(
        get(
            "opsdeck_step_duration_seconds_count",
            &[("outcome", "succeeded")]
        ),
        3.0
    );
    let histogram = m
        .samples
        .iter()
        .find(|s| {
            s.metric == "opsdeck_step_duration_seconds"
                && s.labels.get("outcome") == Some("succeeded")
        })
        .unwrap_or_else(|| panic!("no step duration histogram in\n{body}"));
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("a +Inf bucket");
            assert_eq!(inf.count, 3.0, "{body}");
        }
        other => panic!("not a histogram: {other:?}"),
    }

    let (status, _) = http_get(&addr, "/nothing").await;
    assert_eq!(status, 404);
}

/// Reads notify datagrams until `done` says the messages so far suffice.
async fn notifications(
    socket: &tokio::net::UnixDatagram,
    seen: &mut Vec<String>,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 4096];
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(e)) => panic!("receiving notifications: {e}"),
            Err(_) => panic!("no {what} within {DEADLINE:?}; got {seen:?}"),
        }
    }
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut engine = Engine::start(EngineOpts {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.to_string_lossy().into_owned()),
            // Pings every 150ms.
            ("WATCHDOG_USEC".into(), "300000".into()),
        ],
        ..EngineOpts::default()
    })
    .await;
    let mut seen = Vec::new();
    notifications(&socket, &mut seen, "READY=1", |s| {
        s.iter().any(|m| m.lines().any(|l| l == "READY=1"))
    })
    .await;
    let ready = seen
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("READY=1");
    assert!(ready.contains("STATUS=leading on"), "{ready:?}");
    notifications(&socket, &mut seen, "three watchdog pings", |s| {
        s.iter().filter(|m| m.trim() == "WATCHDOG=1").count() >= 3
    })
    .await;
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");

    let status = engine.sigterm().await;
    assert!(status.success(), "{status}\n{}", engine.logs());
    notifications(&socket, &mut seen, "STOPPING=1", |s| {
        s.iter().any(|m| m.lines().any(|l| l == "STOPPING=1"))
    })
    .await;
}

fn utc_date() -> String {
    let out = Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn the_engine_writes_json_log_files_named_by_day_with_run_and_step_ids_keeping_30_days() {
    let logs = tempfile::tempdir().expect("a temp dir");
    // 31 earlier days (oldest first) and a file that is not the engine's:
    // opening today's file leaves the newest 29 of them, 30 in all.
    let old: Vec<PathBuf> = (1..=31)
        .map(|day| logs.path().join(format!("opsdeckd.2001-01-{day:02}.log")))
        .collect();
    for path in &old {
        std::fs::write(path, "{}\n").expect("write an old log file");
        // Pruning goes by creation time, which the kernel keeps in ticks.
        std::thread::sleep(Duration::from_millis(25));
    }
    let other = logs.path().join("notes.txt");
    std::fs::write(&other, "kept\n").expect("write a file");
    let before = utc_date();
    // The file names the dir and the format; the environment overrides the
    // format, as flags would.
    let mut engine = Engine::start(EngineOpts {
        config: format!(
            "[log]\nformat = \"plain\"\ndir = \"{}\"\n",
            logs.path().display()
        ),
        env: vec![
            ("OPSDECK_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info,opsdeck_engine::core=debug".into()),
        ],
        ..EngineOpts::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["work"], 1).await;
    let run = engine.submit(&spec("logged", "work", "true")).await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let status = engine.sigterm().await;
    assert!(status.success(), "{status}");
    let after = utc_date();

    assert!(other.exists());
    assert!(
        !old[0].exists() && !old[1].exists(),
        "the oldest days are pruned"
    );
    assert!(
        old[2..].iter().all(|p| p.exists()),
        "the newest 29 days are kept"
    );
    let files: Vec<PathBuf> = log_files(logs.path())
        .into_iter()
        .filter(|p| !old.contains(p) && *p != other)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let days: BTreeSet<String> = [before, after]
        .iter()
        .map(|d| format!("opsdeckd.{d}.log"))
        .collect();
    assert!(days.contains(name), "{name} is not one of {days:?}");

    let text = std::fs::read_to_string(&files[0]).expect("read the log file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_owned();
    assert!(
        lines.iter().any(|l| message(l) == "opsdeckd serving"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| message(l) == "opsdeckd stopped"),
        "{text}"
    );
    let granted = lines
        .iter()
        .find(|l| {
            l["fields"]["kind"] == "lease.granted" && l["fields"]["run_id"] == run.id.as_str()
        })
        .unwrap_or_else(|| panic!("no lease.granted line for {} in\n{text}", run.id));
    assert_eq!(granted["fields"]["worker_id"], "w1", "{granted}");
    assert_eq!(granted["fields"]["step_index"], 0, "{granted}");
    assert!(
        granted["fields"]["lease_id"]
            .as_str()
            .is_some_and(|l| !l.is_empty()),
        "{granted}"
    );
    // stderr carries the same lines, in the same format.
    let stderr = engine.logs();
    assert!(
        stderr.contains("\"message\":\"opsdeckd serving\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_backup_of_a_live_engine_opens_in_a_new_engine_with_every_run() {
    let engine = Engine::start_default().await;
    let _worker = Worker::start(&engine, "w1", &["work"], 2).await;
    let done1 = engine.submit(&spec("done1", "work", "true")).await;
    let done2 = engine.submit(&spec("done2", "work", "true")).await;
    for run in [&done1, &done2] {
        engine
            .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
            .await;
    }
    let waiting = engine.submit(&spec("waiting", "idle", "true")).await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let copy = dir.path().join("copy.db");
    let db = format!(
        "sqlite://{}",
        engine.data_dir().join("opsdeck.db").display()
    );
    // Taken while the engine serves and keeps committing.
    let busy = engine.submit(&spec("busy", "work", "sleep 0.2")).await;
    let out = run_opsdeckd(&["backup", &copy.to_string_lossy(), "--database", &db]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("backed up"), "{}", text(&out));
    engine
        .wait_run_state(&busy.id, RunState::Succeeded, DEADLINE)
        .await;

    // Never over an existing file; PostgreSQL is pg_dump's job.
    let out = run_opsdeckd(&["backup", &copy.to_string_lossy(), "--database", &db]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let other = dir.path().join("pg.db");
    let out = run_opsdeckd(&[
        "backup",
        &other.to_string_lossy(),
        "--database",
        "postgres://postgres@127.0.0.1/opsdeck",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("pg_dump"), "{}", text(&out));
    assert!(!other.exists());

    // Restore: a new engine on the copy has every run the backup held.
    let restored = Engine::start(EngineOpts {
        args: vec!["--database".into(), format!("sqlite://{}", copy.display())],
        ..EngineOpts::default()
    })
    .await;
    for run in [&done1, &done2] {
        let got = restored.get_run(&run.id).await;
        assert_eq!(got.state, RunState::Succeeded as i32, "{got:#?}");
    }
    let got = restored.get_run(&waiting.id).await;
    assert_eq!(got.steps[0].state, StepState::Queued as i32, "{got:#?}");
    let got = restored.get_run(&busy.id).await;
    assert_eq!(got.name, "busy");
}

#[test]
fn a_metrics_port_in_use_stops_the_start_with_a_sentence_naming_the_setting() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = busy.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = run_opsdeckd(&[
        "serve",
        "--data-dir",
        &dir.path().to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("cannot listen for metrics on {addr}"))
            && said.contains("[metrics] listen"),
        "{said}"
    );
}

#[test]
fn check_config_warns_about_an_agent_credential_that_bounds_no_queues() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\ndata_dir = {:?}\n\n[[token]]\nidentity = \"fleet\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
            dir.path().join("data").display().to_string(),
            "0".repeat(64)
        ),
    )
    .expect("write the config");
    let out = run_opsdeckd(&["check-config", "--config", &config.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("\"fleet\" holds the agent role with no `queues`"),
        "{}",
        text(&out)
    );
}
