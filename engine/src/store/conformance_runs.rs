//! Runs and steps as rows on both databases: what a commit writes, what
//! loads back, the history reads with their filters and pages, and ids.

use std::sync::Arc;

use super::conformance::*;
use super::{Batch, RunFilter, Store};
use crate::domain::spec::{Limits, parse};
use crate::domain::{Run, RunState, Step, StepState};

/// A run in the form the core commits it: the header in `runs`, every
/// step in `steps`.
pub(crate) fn split(r: &Run) -> Batch {
    Batch {
        runs: vec![r.header()],
        steps: r.steps.iter().map(|s| (r.id.clone(), s.clone())).collect(),
        ..Default::default()
    }
}

pub(super) fn two_step_run(id: &str) -> Run {
    let spec = parse(
        "name = \"deploy\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n[[step]]\nqueue = \"q\"\nrun = \"false\"\n",
        &Limits::default(),
    )
    .unwrap();
    Run {
        name: "deploy".into(),
        steps: spec
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::new(i as u32, s))
            .collect(),
        ..run(id, RunState::Queued)
    }
}

pub(super) fn finished(id: &str, state: RunState, at: i64) -> Run {
    Run {
        finished_at: Some(at),
        ..run(id, state)
    }
}

pub(super) fn ids(runs: &[Run]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn a_new_run_committed_as_header_and_steps_reads_back_whole() {
    for b in backends().await {
        let r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        assert_eq!(
            b.store.get_run("r1").await.unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );
        assert_eq!(b.store.get_run("nope").await.unwrap(), None, "{}", b.name);
        assert_eq!(
            b.store.load(10).await.unwrap().runs,
            vec![r.clone()],
            "{}",
            b.name
        );
        let listed = b.store.list_runs(&RunFilter::default(), 10).await.unwrap();
        assert_eq!(listed, vec![r], "{}", b.name);
    }
}

#[tokio::test]
async fn a_runs_spec_text_is_written_with_it_and_never_again() {
    for b in backends().await {
        let made = run("r1", RunState::Running);
        assert!(made.template.is_some());
        b.store
            .commit(&Batch {
                runs: vec![made.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        // A later header that does not carry the text (or carries another)
        // leaves the first one.
        for template in [None, Some("name = \"other\"".to_owned())] {
            let later = Run {
                state: RunState::Succeeded,
                template,
                ..made.clone()
            };
            b.store
                .commit(&Batch {
                    runs: vec![later],
                    ..Default::default()
                })
                .await
                .unwrap();
            let read = b.store.get_run("r1").await.unwrap().unwrap();
            assert_eq!(read.state, RunState::Succeeded, "{}", b.name);
            assert_eq!(read.template, made.template, "{}", b.name);
        }
    }
}

#[tokio::test]
async fn a_step_change_rewrites_only_that_step() {
    for b in backends().await {
        let mut r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        let mut second = r.steps[1].clone();
        second.state = StepState::Running;
        second.attempt = 1;
        second.worker_id = Some("w".into());
        r.steps[1] = second.clone();
        let change = Batch {
            steps: vec![("r1".into(), second)],
            ..Default::default()
        };
        b.store.commit(&change).await.unwrap();
        assert_eq!(
            b.store.get_run("r1").await.unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );

        // A header change leaves the steps as they are.
        r.state = RunState::Running;
        r.message = "going".into();
        let header = Batch {
            runs: vec![r.header()],
            ..Default::default()
        };
        b.store.commit(&header).await.unwrap();
        assert_eq!(b.store.get_run("r1").await.unwrap(), Some(r), "{}", b.name);
    }
}

#[tokio::test]
async fn load_returns_the_live_runs_and_at_most_recent_finished_ones_newest_first() {
    for b in backends().await {
        let mut batch = Batch::default();
        for r in [
            run("a-live", RunState::Queued),
            run("b-live", RunState::WaitingApproval),
            finished("c-old", RunState::Succeeded, 100),
            finished("d-newest", RunState::Failed, 300),
            finished("e-mid", RunState::Cancelled, 200),
        ] {
            let one = split(&r);
            batch.runs.extend(one.runs);
            batch.steps.extend(one.steps);
        }
        b.store.commit(&batch).await.unwrap();
        let loaded = b.store.load(2).await.unwrap();
        assert_eq!(
            ids(&loaded.runs),
            ["a-live", "b-live", "d-newest", "e-mid"],
            "{}",
            b.name
        );
        assert!(loaded.runs.iter().all(|r| r.steps.len() == 1), "{}", b.name);
        assert_eq!(
            ids(&b.store.load(0).await.unwrap().runs),
            ["a-live", "b-live"],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_run_is_found_by_its_idempotency_key() {
    for b in backends().await {
        let r = two_step_run("r1");
        b.store.commit(&split(&r)).await.unwrap();
        assert_eq!(
            b.store
                .run_by_idempotency_key("alice", "key-r1")
                .await
                .unwrap(),
            Some(r.clone()),
            "{}",
            b.name
        );
        assert_eq!(
            b.store
                .run_by_idempotency_key("alice", "key-r2")
                .await
                .unwrap(),
            None,
            "{}",
            b.name
        );
        // Keys are each submitter's own: bob's key-r1 is another run.
        assert_eq!(
            b.store
                .run_by_idempotency_key("bob", "key-r1")
                .await
                .unwrap(),
            None,
            "{}",
            b.name
        );
        let mut bobs = two_step_run("r9");
        bobs.submitted_by = "bob".into();
        bobs.idempotency_key = Some("key-r1".into());
        b.store.commit(&split(&bobs)).await.unwrap();
        assert_eq!(
            b.store
                .run_by_idempotency_key("bob", "key-r1")
                .await
                .unwrap()
                .map(|r| r.id),
            Some("r9".to_owned()),
            "{}",
            b.name
        );
    }
}

/// Runs with every filtered field varied: (id, name, state, labels,
/// submitted_by, created_at).
fn catalogue() -> Vec<Run> {
    type Row = (
        &'static str,
        &'static str,
        RunState,
        &'static [(&'static str, &'static str)],
        &'static str,
        i64,
    );
    let rows: [Row; 8] = [
        (
            "r01",
            "deploy-web",
            RunState::Succeeded,
            &[("team", "sre"), ("env", "prod")],
            "alice",
            10,
        ),
        (
            "r02",
            "deploy-db",
            RunState::Failed,
            &[("team", "dba")],
            "bob",
            20,
        ),
        (
            "r03",
            "deploy_x",
            RunState::Running,
            &[("team", "sre")],
            "alice",
            30,
        ),
        ("r04", "deployXx", RunState::Queued, &[], "carol", 40),
        (
            "r05",
            "Deploy-web",
            RunState::Succeeded,
            &[("we\"ird", "v'al")],
            "alice",
            50,
        ),
        (
            "r06",
            "backup",
            RunState::Cancelled,
            &[("team", "sre"), ("env", "dev")],
            "bob",
            60,
        ),
        (
            "r07",
            "deploy-web",
            RunState::Running,
            &[("env", "prod")],
            "alice",
            70,
        ),
        (
            "r08",
            "deploy%",
            RunState::Succeeded,
            &[("team", "sre"), ("env", "prod")],
            "dave",
            80,
        ),
    ];
    rows.into_iter()
        .map(|(id, name, state, labels, who, at)| Run {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            submitted_by: who.into(),
            created_at: at,
            finished_at: state.is_final().then_some(at + 1),
            idempotency_key: None,
            ..run(id, state)
        })
        .collect()
}

pub(super) async fn commit_all(store: &Arc<dyn Store>, runs: &[Run]) {
    let mut batch = Batch::default();
    for r in runs {
        let one = split(r);
        batch.runs.extend(one.runs);
        batch.steps.extend(one.steps);
    }
    store.commit(&batch).await.unwrap();
}

#[tokio::test]
async fn list_runs_applies_every_filter_newest_first_as_run_filter_matches() {
    for b in backends().await {
        commit_all(&b.store, &catalogue()).await;
        let list = |f: RunFilter| {
            let store = b.store.clone();
            async move {
                let runs = store.list_runs(&f, 100).await.unwrap();
                let ids = runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
                // The engine matches the runs it holds in memory by the
                // same rules (bulk cancel and retry).
                let mut held: Vec<String> = catalogue()
                    .iter()
                    .filter(|r| f.matches(r))
                    .map(|r| r.id.clone())
                    .collect();
                held.sort_by(|a, b| b.cmp(a));
                assert_eq!(held, ids, "in memory vs stored: {f:?}");
                ids
            }
        };
        let all = list(RunFilter::default()).await;
        assert_eq!(
            all,
            ["r08", "r07", "r06", "r05", "r04", "r03", "r02", "r01"],
            "{}",
            b.name
        );
        let f = RunFilter {
            states: vec![RunState::Running, RunState::Failed],
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r07", "r03", "r02"], "{}", b.name);
        let name = |n: &str| RunFilter {
            name: Some(n.into()),
            ..Default::default()
        };
        assert_eq!(list(name("deploy-web")).await, ["r07", "r01"], "{}", b.name);
        assert_eq!(
            list(name("deploy-*")).await,
            ["r07", "r02", "r01"],
            "{}",
            b.name
        );
        // Wildcards of LIKE are plain characters, and case counts.
        assert_eq!(list(name("deploy_*")).await, ["r03"], "{}", b.name);
        assert_eq!(list(name("deploy%*")).await, ["r08"], "{}", b.name);
        assert_eq!(list(name("deploy%")).await, ["r08"], "{}", b.name);
        assert_eq!(list(name("Deploy*")).await, ["r05"], "{}", b.name);
        assert_eq!(list(name("*")).await.len(), 8, "{}", b.name);
        let labels = |l: &[(&str, &str)]| RunFilter {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            list(labels(&[("team", "sre")])).await,
            ["r08", "r06", "r03", "r01"],
            "{}",
            b.name
        );
        assert_eq!(
            list(labels(&[("team", "sre"), ("env", "prod")])).await,
            ["r08", "r01"],
            "{}",
            b.name
        );
        assert_eq!(
            list(labels(&[("we\"ird", "v'al")])).await,
            ["r05"],
            "{}",
            b.name
        );
        assert!(
            list(labels(&[("team", "nobody")])).await.is_empty(),
            "{}",
            b.name
        );
        let f = RunFilter {
            submitted_by: Some("bob".into()),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r06", "r02"], "{}", b.name);
        let f = RunFilter {
            since: Some(30),
            until: Some(60),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r05", "r04", "r03"], "{}", b.name);
        let f = RunFilter {
            before_id: Some("r03".into()),
            ..Default::default()
        };
        assert_eq!(list(f).await, ["r02", "r01"], "{}", b.name);
        let f = RunFilter {
            states: vec![RunState::Succeeded],
            name: Some("deploy*".into()),
            labels: [("env".to_string(), "prod".to_string())].into(),
            submitted_by: Some("alice".into()),
            since: Some(1),
            until: Some(100),
            before_id: Some("r09".into()),
        };
        assert_eq!(list(f).await, ["r01"], "{}", b.name);
    }
}

#[tokio::test]
async fn paging_with_before_id_returns_every_matching_run_exactly_once() {
    for b in backends().await {
        let runs: Vec<Run> = (0..23)
            .map(|i| Run {
                labels: [(
                    "team".to_string(),
                    if i % 3 == 0 { "dba" } else { "sre" }.to_string(),
                )]
                .into(),
                ..two_step_run(&format!("r{i:02}"))
            })
            .collect();
        commit_all(&b.store, &runs).await;
        let mut filter = RunFilter {
            labels: [("team".to_string(), "sre".to_string())].into(),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = b.store.list_runs(&filter, 4).await.unwrap();
            assert!(page.len() <= 4, "{}", b.name);
            assert!(page.iter().all(|r| r.steps.len() == 2), "{}", b.name);
            let Some(last) = page.last() else { break };
            filter.before_id = Some(last.id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let want: Vec<String> = runs
            .iter()
            .rev()
            .filter(|r| r.labels["team"] == "sre")
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(seen, want, "{}", b.name);
    }
}

#[tokio::test]
async fn a_large_batch_commits_in_few_statements_and_reads_back() {
    for b in backends().await {
        // 20,000 one-step runs: more rows than one statement may bind.
        let runs: Vec<Run> = (0..20_000)
            .map(|i| run(&format!("r{i:05}"), RunState::Queued))
            .collect();
        commit_all(&b.store, &runs).await;
        let loaded = b.store.load(0).await.unwrap();
        assert_eq!(loaded.runs.len(), 20_000, "{}", b.name);
        assert_eq!(loaded.runs[19_999], runs[19_999], "{}", b.name);
    }
}

#[tokio::test]
async fn ids_are_matched_whole_by_prefix_and_by_suffix() {
    use super::IdTable;
    for b in backends().await {
        let runs: Vec<Run> = [
            "01HAAAAAAA0000000000QFDW01",
            "01HAAAAAAA0000000000QFDW02",
            "01HBBBBBBB1111111111XYZ123",
        ]
        .iter()
        .map(|id| run(id, RunState::Succeeded))
        .collect();
        commit_all(&b.store, &runs).await;
        b.store.commit(&sample()).await.unwrap();
        let find = |table, text: &'static str| {
            let store = b.store.clone();
            async move { store.match_ids(table, text, 11).await.unwrap().ids }
        };
        let name = b.name;
        // Whole, a prefix, a suffix: one each.
        assert_eq!(
            find(IdTable::Runs, "01HAAAAAAA0000000000QFDW02").await,
            ["01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        assert_eq!(
            find(IdTable::Runs, "01HBBB").await,
            ["01HBBBBBBB1111111111XYZ123"],
            "{name}"
        );
        assert_eq!(
            find(IdTable::Runs, "QFDW02").await,
            ["01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        // Several: every candidate; none: nothing.
        assert_eq!(
            find(IdTable::Runs, "01HAAAAAAA").await,
            ["01HAAAAAAA0000000000QFDW01", "01HAAAAAAA0000000000QFDW02"],
            "{name}"
        );
        assert!(find(IdTable::Runs, "NOSUCH").await.is_empty(), "{name}");
        // Each kind in its own table.
        assert_eq!(find(IdTable::Workers, "w").await, ["w"], "{name}");
        assert!(find(IdTable::Leases, "01HBBB").await.is_empty(), "{name}");
        let stored = b.store.match_ids(IdTable::Runs, "QFDW", 11).await.unwrap();
        assert!(
            !stored.bounded,
            "{name}: three runs are well under the scan"
        );
    }
}
