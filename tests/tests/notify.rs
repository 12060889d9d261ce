//! Notifications through the outbox: a real HTTP receiver in the test gets
//! each notification once per idempotency id with a valid signature, even
//! when the engine is killed between the event's commit and the delivery;
//! a receiver that fails three times gets it on the fourth try; an exec
//! notifier gets the JSON on its stdin; `opsdeck notifications` lists what
//! was given up on; derived events (approval.overdue, worker.offline_long)
//! are notified too; check-config refuses a bad entry by name.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, EngineOpts, Worker, opsdeckd, sh};
use sha2::Sha256;

const KEY: &str = "s3cret-hook-key";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    id: String,
    signature: String,
    body: String,
    answered: u16,
}

#[derive(Default)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    /// Requests still to answer 500.
    fail: AtomicU32,
}

/// A webhook receiver: a real HTTP server on a port of its own.
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `addr` (port 0: any), answering the first `fail`
    /// requests with 500.
    async fn start_on(addr: SocketAddr, fail: u32) -> Receiver {
        let shared = Arc::new(Shared::default());
        shared.fail.store(fail, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = shared.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let failing = state
                        .fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if failing {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    state.hits.lock().unwrap().push(Hit {
                        id: header("idempotency-key"),
                        signature: header("x-opsdeck-signature"),
                        body,
                        answered: status.as_u16(),
                    });
                    status
                }
            }),
        );
        let stop = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, stop }
    }

    async fn start(fail: u32) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), fail).await
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Waits until `n` requests were answered 200.
    async fn wait_delivered(&self, n: usize, engine: &Engine) -> Vec<Hit> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ok: Vec<Hit> = self
                .hits()
                .into_iter()
                .filter(|h| h.answered == 200)
                .collect();
            if ok.len() >= n {
                return ok;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} deliveries, not {n}, within {DEADLINE:?}: {:?}\n{}",
                ok.len(),
                self.hits(),
                engine.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.abort();
    }
}

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Settings fast enough for tests.
fn settings(give_up: &str) -> String {
    format!(
        "[notifications]\nretry_min = \"50ms\"\nretry_max = \"200ms\"\npoll_interval = \"50ms\"\n\
         give_up_after = \"{give_up}\"\n"
    )
}

/// An engine with a signing secret and one webhook notifier.
async fn engine_with_hook(url: &str, on: &str, extra: &str, give_up: &str) -> Engine {
    let config = format!(
        "{}\n[secrets]\nhook_key = {{ env = \"OPSDECK_SECRET_HOOK\" }}\n\n\
         [[notify]]\nname = \"oncall\"\nurl = \"{url}\"\nsecret = \"hook_key\"\non = {on}\n{extra}\n",
        settings(give_up),
    );
    Engine::start(EngineOpts {
        config,
        env: vec![("OPSDECK_SECRET_HOOK".into(), KEY.into())],
        ..Default::default()
    })
    .await
}

fn failing_run(name: &str) -> String {
    format!("name = \"{name}\"\n[[step]]\nname = \"migrate\"\nqueue = \"q\"\nrun = \"exit 3\"\n")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `opsdeck -o json notifications ARGS`, parsed.
fn listed(engine: &Engine, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["-o", "json", "notifications"];
    all.extend_from_slice(args);
    let out = engine.cli(&all);
    assert!(
        out.status.success(),
        "opsdeck notifications failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `opsdeck notifications` until one matches.
async fn wait_listed(
    engine: &Engine,
    args: &[&str],
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = listed(engine, args);
        if let Some(n) = list.iter().find(|n| pred(n)) {
            return n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching notification within {DEADLINE:?}: {list:?}\n{}",
            engine.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failed_run_is_posted_once_with_a_valid_signature_and_a_readable_summary() {
    let receiver = Receiver::start(0).await;
    let engine = engine_with_hook(
        &receiver.url(),
        "[\"run.failed\"]",
        "run_name = \"deploy-*\"",
        "1h",
    )
    .await;
    let _worker = Worker::start(&engine, "w1", &["q"], 1).await;
    // Not matching the notifier's run_name: never posted.
    let other = engine.submit(&failing_run("backup")).await;
    engine
        .wait_run_state(&other.id, RunState::Failed, DEADLINE)
        .await;
    let run = engine.submit(&failing_run("deploy-api")).await;
    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;

    let hits = receiver.wait_delivered(1, &engine).await;
    let hit = &hits[0];
    assert_eq!(
        hit.signature,
        signature(&hit.body),
        "the signature verifies"
    );
    let body = json(&hit.body);
    assert_eq!(body["version"], 1);
    assert_eq!(
        body["id"],
        hit.id.as_str(),
        "the id is in the body and the header"
    );
    assert_eq!(body["notifier"], "oncall");
    assert_eq!(body["event"]["kind"], "run.failed");
    assert_eq!(body["event"]["run_id"], run.id.as_str());
    assert_eq!(body["event"]["run_name"], "deploy-api");
    let seq = body["event"]["seq"].as_u64().unwrap();
    assert_eq!(hit.id, format!("{seq}-oncall"));
    let summary = body["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("run deploy-api ")
            && summary.contains("failed")
            && !summary.contains("http"),
        "{summary}"
    );

    // Recorded as delivered on the first attempt: nothing more is sent.
    let delivered = wait_listed(&engine, &["--state", "delivered"], |n| {
        n["id"] == hit.id.as_str()
    })
    .await;
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["event_kind"], "run.failed");
    let ids: Vec<String> = receiver.hits().into_iter().map(|h| h.id).collect();
    assert_eq!(
        ids,
        vec![hit.id.clone()],
        "one request, for the matching run only"
    );
    assert!(listed(&engine, &[]).is_empty(), "nothing pending or failed");
}

#[tokio::test]
async fn a_notification_committed_before_a_kill_9_is_delivered_once_after_the_restart() {
    // A port nobody listens on yet: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{port}/hook");
    let mut engine = engine_with_hook(&url, "[\"run.*\"]", "", "1h").await;
    let mut worker = Worker::start(&engine, "w1", &["q"], 1).await;
    let run = engine.submit(&failing_run("deploy-db")).await;
    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;

    // The event is committed and its delivery failed at least once.
    let pending = wait_listed(&engine, &["--state", "pending"], |n| {
        n["event_kind"] == "run.failed" && n["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let id = pending["id"].as_str().unwrap().to_owned();
    assert!(
        pending["last_error"].as_str().unwrap_or_default().len() > 3,
        "the failed attempt says why: {pending}"
    );
    let table = engine.cli(&["notifications"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(&id) && text.contains("pending"), "{text}");

    worker.kill9();
    engine.kill9();
    let receiver = Receiver::start_on(port, 0).await;
    engine.restart().await;

    let hits = receiver.wait_delivered(2, &engine).await;
    let failed: Vec<&Hit> = hits
        .iter()
        .filter(|h| json(&h.body)["event"]["kind"] == "run.failed")
        .collect();
    assert_eq!(failed.len(), 1, "run.failed delivered once: {hits:?}");
    assert_eq!(failed[0].id, id, "under the id it had before the crash");
    assert_eq!(failed[0].signature, signature(&failed[0].body));
    wait_listed(&engine, &["--state", "delivered"], |n| {
        n["id"] == id.as_str()
    })
    .await;
    let mut ids: Vec<String> = receiver.hits().into_iter().map(|h| h.id).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "each id once: {ids:?}");
}

#[tokio::test]
async fn a_receiver_that_answers_500_three_times_gets_it_on_the_fourth_try() {
    let receiver = Receiver::start(3).await;
    let engine = engine_with_hook(&receiver.url(), "[\"run.failed\"]", "", "1h").await;
    let _worker = Worker::start(&engine, "w1", &["q"], 1).await;
    let run = engine.submit(&failing_run("deploy-web")).await;
    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;

    let ok = receiver.wait_delivered(1, &engine).await;
    let hits = receiver.hits();
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 500, 500, 200],
        "three failures, then the fourth try"
    );
    assert!(
        hits.iter().all(|h| h.id == ok[0].id),
        "one id throughout: {hits:?}"
    );
    assert!(
        hits.iter().all(|h| h.body == ok[0].body),
        "the same body each time"
    );
    let row = wait_listed(&engine, &["--state", "all"], |n| {
        n["id"] == ok[0].id.as_str()
    })
    .await;
    assert_eq!(row["state"], "delivered");
    assert_eq!(row["attempts"], 4);
}

#[tokio::test]
async fn an_exec_notifier_gets_the_json_on_its_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.json");
    let config = format!(
        "{}\n[[notify]]\nname = \"script\"\nexec = [\"sh\", \"-c\", {}]\non = [\"step.dead\", \"run.failed\"]\nqueue = \"q\"\n",
        settings("1h"),
        sh(&format!(
            "cat > {0}.$OPSDECK_NOTIFICATION_ID.tmp && mv {0}.$OPSDECK_NOTIFICATION_ID.tmp {0}.$OPSDECK_NOTIFICATION_ID",
            out.display()
        ))
    );
    let engine = Engine::start(EngineOpts {
        config,
        ..Default::default()
    })
    .await;
    let _worker = Worker::start(&engine, "w1", &["q"], 1).await;
    let run = engine.submit(&failing_run("nightly")).await;
    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;

    let deadline = Instant::now() + DEADLINE;
    let files = loop {
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .collect();
        files.sort();
        if files.len() >= 2 {
            break files;
        }
        assert!(
            Instant::now() < deadline,
            "the script did not write both: {files:?}\n{}",
            engine.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut kinds = Vec::new();
    for f in &files {
        let body = json(&std::fs::read_to_string(f).unwrap());
        assert_eq!(body["version"], 1);
        assert_eq!(body["notifier"], "script");
        assert_eq!(body["event"]["queue"], "q");
        let id = body["id"].as_str().unwrap();
        assert!(
            f.to_string_lossy().ends_with(id),
            "{f:?} named by its id {id}"
        );
        kinds.push(body["event"]["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["run.failed", "step.dead"]);
}

#[tokio::test]
async fn a_delivery_given_up_on_is_listed_as_failed_with_an_event() {
    let receiver = Receiver::start(u32::MAX).await;
    let engine = engine_with_hook(&receiver.url(), "[\"run.failed\"]", "", "500ms").await;
    let _worker = Worker::start(&engine, "w1", &["q"], 1).await;
    let run = engine.submit(&failing_run("deploy-cache")).await;
    engine
        .wait_run_state(&run.id, RunState::Failed, DEADLINE)
        .await;

    let failed = wait_listed(&engine, &[], |n| n["state"] == "failed").await;
    assert!(failed["attempts"].as_u64().unwrap() >= 2, "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    let id = failed["id"].as_str().unwrap().to_owned();
    let event = engine
        .wait_event("", |e| e.kind == "notification.failed", DEADLINE)
        .await;
    assert!(event.message.contains(&id), "{}", event.message);
    assert!(event.message.contains("oncall"), "{}", event.message);

    let table = engine.cli(&["notifications", "--state", "failed"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("ID") && text.contains(&id) && text.contains("failed"),
        "{text}"
    );
    // Given up on: no more requests.
    let before = receiver.hits().len();
    let row = listed(&engine, &["--state", "failed"]);
    assert_eq!(row.len(), 1);
    assert_eq!(row[0]["attempts"].as_u64().unwrap() as usize, before);

    let bad = engine.cli(&["notifications", "--state", "sideways"]);
    assert!(!bad.status.success(), "an unknown state is refused");
}

#[tokio::test]
async fn approval_overdue_and_worker_offline_long_are_notified() {
    let receiver = Receiver::start(0).await;
    let config = format!(
        "{}approval_overdue_before = \"4s\"\nworker_offline_after = \"300ms\"\n\n\
         [[notify]]\nname = \"oncall\"\nurl = \"{}\"\non = [\"approval.overdue\", \"worker.offline_long\"]\n",
        settings("1h"),
        receiver.url()
    );
    let engine = Engine::start(EngineOpts {
        config,
        ..Default::default()
    })
    .await;
    let run = engine
        .submit("name = \"gated\"\n[[step]]\nname = \"gate\"\napproval = { timeout = \"5s\" }\n")
        .await;
    let mut worker = Worker::start(&engine, "w9", &["q"], 1).await;
    worker.kill9();

    let hits = receiver.wait_delivered(2, &engine).await;
    let bodies: Vec<serde_json::Value> = hits.iter().map(|h| json(&h.body)).collect();
    let overdue = bodies
        .iter()
        .find(|b| b["event"]["kind"] == "approval.overdue")
        .unwrap_or_else(|| panic!("no approval.overdue: {bodies:?}"));
    assert_eq!(overdue["event"]["run_id"], run.id.as_str());
    assert!(
        overdue["summary"].as_str().unwrap().contains("gated"),
        "{overdue}"
    );
    let offline = bodies
        .iter()
        .find(|b| b["event"]["kind"] == "worker.offline_long")
        .unwrap_or_else(|| panic!("no worker.offline_long: {bodies:?}"));
    assert_eq!(offline["event"]["worker_id"], "w9");
    assert!(
        hits.iter().all(|h| h.signature.is_empty()),
        "no secret, no signature"
    );
}

#[tokio::test]
async fn check_config_refuses_a_bad_notify_entry_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.toml");
    std::fs::write(
        &path,
        "[[notify]]\nname = \"pager\"\nurl = \"https://example.invalid/hook\"\nexec = [\"true\"]\non = [\"run.failed\"]\n\n\
         [[notify]]\nname = \"chat\"\nurl = \"https://example.invalid/chat\"\nsecret = \"missing\"\non = [\"run.*\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(opsdeckd())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad [[notify]] is refused");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("notify[0]")
            && text.contains("\"pager\"")
            && text.contains("exactly one of url"),
        "{text}"
    );
    assert!(
        text.contains("notify[1].secret") && text.contains("\"missing\""),
        "{text}"
    );
}
