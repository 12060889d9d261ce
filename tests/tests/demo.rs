//! `opsdeck demo`, the real binary, headless, watched through its own
//! engine: the incident it opens with, and what it says when its engine
//! dies.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_tests::{Clients, opsdeck, pb};

/// A headless demo, stopped (SIGTERM, which it cleans up after) when
/// dropped.
struct Demo {
    child: Child,
    addr: String,
    engine_pid: i32,
    data: PathBuf,
}

impl Demo {
    fn start() -> Demo {
        let mut cmd = Command::new(opsdeck());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPSDECK_") {
                cmd.env_remove(&name);
            }
        }
        let mut child = cmd
            .args(["demo", "--headless"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opsdeck demo");
        let stdout = child.stdout.take().expect("the demo's stdout");
        // "demo engine: unix:///tmp/…/engine.sock (pid N; data and logs in DIR)"
        let mut first = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut first).expect("the demo's first line");
        // Keep reading what it prints later, so that it never writes to a
        // closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let rest = first
            .strip_prefix("demo engine: ")
            .unwrap_or_else(|| panic!("not the demo's first line: {first:?}"));
        let (addr, rest) = rest.split_once(" (pid ").expect("the engine's pid");
        let (pid, rest) = rest.split_once(';').expect("the pid, then the data dir");
        let data = rest
            .trim()
            .strip_prefix("data and logs in ")
            .and_then(|d| d.strip_suffix(')'))
            .expect("the data dir");
        Demo {
            child,
            addr: addr.to_owned(),
            engine_pid: pid.parse().expect("a pid"),
            data: PathBuf::from(data),
        }
    }

    async fn api(&self) -> Clients<tonic::transport::Channel> {
        let path = self.addr.strip_prefix("unix://").expect("a socket address");
        let channel = EngineAddr::Unix(path.into())
            .connect()
            .await
            .expect("connect to the demo's engine");
        Clients::new(channel)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) of the demo process this test started.
            unsafe {
                nix::libc::kill(pid, nix::libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_demo_opens_with_an_incident_within_its_first_minute() {
    let started = Instant::now();
    let demo = Demo::start();
    let mut api = demo.api().await;
    let mut highest = 0;
    let (mut backed_up, mut drained_again, mut approval) = (false, false, false);
    let mut kinds: HashSet<(String, String)> = HashSet::new();
    let mut retried: HashSet<String> = HashSet::new();
    let mut succeeded: HashSet<String> = HashSet::new();
    let mut after_seq = 0;
    let done = |k: &HashSet<(String, String)>, r: &HashSet<String>, f: &HashSet<String>| {
        k.contains(&("worker.draining".to_owned(), "build-1".to_owned()))
            && k.contains(&("worker.recycled".to_owned(), "build-1".to_owned()))
            && r.iter().any(|run| f.contains(run))
    };
    while started.elapsed() < Duration::from_secs(60) {
        let queues = api
            .queues
            .list_queues(pb::ListQueuesRequest {})
            .await
            .expect("ListQueues")
            .into_inner()
            .queues;
        let build = queues
            .iter()
            .find(|q| q.name == "build")
            .map_or(0, |q| q.ready);
        highest = highest.max(build);
        backed_up |= build >= 10;
        drained_again |= backed_up && build <= 2;
        approval |= !api
            .approvals
            .list_approvals(pb::ListApprovalsRequest { all: false })
            .await
            .expect("ListApprovals")
            .into_inner()
            .approvals
            .is_empty();
        let events = api
            .events
            .list_events(pb::ListEventsRequest {
                after_seq,
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("ListEvents")
            .into_inner()
            .events;
        for e in events {
            after_seq = after_seq.max(e.seq);
            match e.kind.as_str() {
                "step.succeeded" => {
                    succeeded.insert(e.run_id.clone());
                }
                // A failed attempt with attempts left.
                "step.retry_scheduled" => {
                    retried.insert(e.run_id.clone());
                }
                _ => {}
            }
            kinds.insert((e.kind, e.worker_id));
        }
        if drained_again && approval && done(&kinds, &retried, &succeeded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        backed_up && drained_again,
        "build's depth rose to {highest} (needs 10) and came back to 2 or less: {drained_again}"
    );
    assert!(approval, "an approval waited");
    assert!(
        kinds.contains(&("worker.draining".to_owned(), "build-1".to_owned()))
            && kinds.contains(&("worker.recycled".to_owned(), "build-1".to_owned())),
        "build-1 was drained and recycled: {kinds:?}"
    );
    assert!(
        retried.iter().any(|run| succeeded.contains(run)),
        "a step failed, was retried and then succeeded: retried {retried:?}, succeeded \
         {succeeded:?}"
    );
    let generation = api
        .workers
        .get_worker(pb::GetWorkerRequest {
            id: "build-1".into(),
        })
        .await
        .expect("GetWorker")
        .into_inner()
        .generation;
    assert!(generation >= 2, "build-1 came back as a new generation");
    // Its workers spool results in its own directory, never where a real
    // worker on this machine keeps its own.
    for id in ["build-1", "deploy-1", "ops-1"] {
        let spool = demo.data.join("spool").join(id);
        assert!(spool.is_dir(), "no spool at {}", spool.display());
    }
}

#[tokio::test]
async fn the_demo_says_how_its_engine_died_and_exits_non_zero() {
    let mut demo = Demo::start();
    // SAFETY: kill(2) of the engine the demo started for this test.
    unsafe {
        nix::libc::kill(demo.engine_pid, nix::libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = demo.child.try_wait().expect("wait for the demo") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo went on for 15 s after its engine died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        demo.child.stderr.as_mut().expect("the demo's stderr"),
        &mut stderr,
    )
    .expect("read the demo's stderr");
    let log = demo.data.join("engine.log");
    let kept = demo.data.exists();
    let _ = std::fs::remove_dir_all(&demo.data);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the demo engine died") && stderr.contains("signal 9 (SIGKILL)"),
        "{stderr}"
    );
    assert!(stderr.contains(&log.display().to_string()), "{stderr}");
    assert!(kept, "the data dir, with the engine's log, is kept");
}
