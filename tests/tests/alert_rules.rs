//! The alert rules in deploy/prometheus/opsdeck-rules.yml name only metrics
//! a real engine exports, so that rules and metrics cannot drift apart
//! (`promtool test rules` checks what the rules do with them).

use std::collections::BTreeSet;
use std::path::Path;

use opsdeck_tests::pb::RunState;
use opsdeck_tests::{DEADLINE, Engine, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every `opsdeck_*` name in the rules' expressions.
fn names_in_rules() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/opsdeck-rules.yml");
    let rules = std::fs::read_to_string(&path).expect("read the rules");
    let mut names = BTreeSet::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("expr:") {
            in_expr = true;
        } else if !line.starts_with("          ") {
            // A block expression's lines are indented deeper than its key.
            in_expr = false;
        }
        if !in_expr {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("opsdeck_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The sample names of a `/metrics` answer.
async fn exported(addr: &str) -> BTreeSet<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_alert_rules_name_is_exported_by_the_engine() {
    let rules = names_in_rules();
    assert!(
        rules.len() >= 10 && rules.contains("opsdeck_queue_wait_seconds_bucket"),
        "the rules were not read: {rules:?}"
    );
    let engine = Engine::start_default().await;
    let _w = Worker::start(&engine, "w1", &["work"], 1).await;
    // A step that ran: its queue wait is observed.
    let run = engine
        .submit("name = \"one\"\n[[step]]\nqueue = \"work\"\nrun = \"true\"\n")
        .await;
    engine
        .wait_run_state(&run.id, RunState::Succeeded, DEADLINE)
        .await;
    let addr = std::fs::read_to_string(engine.data_dir().join("metrics.addr"))
        .expect("metrics.addr")
        .trim()
        .to_owned();
    // Gauges are set when scraped: ask until every name is there, or say
    // which are not.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let got = exported(&addr).await;
        let missing: Vec<&String> = rules.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rules name metrics the engine does not export: {missing:?}\nexported: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
