//! `Runs.FollowOutput`: a run's output, stored then live.
//!
//! The follower is registered with the core first (in the step that reads
//! the run), then what is stored from the asked position is read, then the
//! live chunks follow; a chunk seen both ways is dropped by its position,
//! so nothing is missed and nothing is sent twice. The stream ends when
//! what is followed is over: the attempt, the step, or the run.

use opsdeck_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{Api, id_arg};
use crate::core::{Followed, OutputFollow};
use crate::store::{OutputPos, OutputQuery, Store};

/// Chunks read from the store per page.
const PAGE: u32 = 512;

type Item = Result<pb::OutputChunk, Status>;

/// What is followed, and how far it got.
struct Follow {
    query: OutputQuery,
    /// The run's state and its steps' (state, attempt), as last heard.
    run_state: i32,
    steps: Vec<(i32, u32)>,
}

impl Follow {
    /// Whether what is followed has ended.
    fn over(&self) -> bool {
        use pb::StepState as S;
        let Some(index) = self.query.step else {
            return matches!(
                pb::RunState::try_from(self.run_state),
                Ok(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
            );
        };
        let Some(&(state, attempt)) = self.steps.get(index as usize) else {
            return true;
        };
        let state = S::try_from(state).unwrap_or(S::Unspecified);
        let final_ = matches!(state, S::Succeeded | S::Failed | S::Cancelled | S::Dead);
        match self.query.attempt {
            None => final_,
            Some(k) => {
                final_ || attempt > k || (attempt == k && !matches!(state, S::Leased | S::Running))
            }
        }
    }

    fn heard(&mut self, e: &pb::Event) {
        if let Some(u) = &e.run_update {
            self.run_state = u.state;
        }
        for s in &e.step_updates {
            if let Some(slot) = self.steps.get_mut(s.index as usize) {
                *slot = (s.state, s.attempt);
            }
        }
    }
}

pub async fn follow(
    api: &Api,
    req: pb::FollowOutputRequest,
) -> Result<ReceiverStream<Item>, Status> {
    let id = id_arg("run", req.run_id)?;
    if req.attempt.is_some() && req.step_index.is_none() {
        return Err(Status::invalid_argument(
            "attempt needs step_index: name the step whose attempt to follow",
        ));
    }
    let step = req.step_index;
    let OutputFollow { run, rx, lagged } = api
        .with_run(id.clone(), move |s, tx, id| {
            s.follow_output(id, step, tx.now)
        })
        .await?;
    let steps: Vec<(i32, u32)> = run.steps.iter().map(|s| (s.state, s.attempt)).collect();
    // A step's output starts at its asked attempt, else its latest.
    let start = match step {
        Some(index) => OutputPos {
            step_index: index,
            attempt: req
                .attempt
                .unwrap_or_else(|| steps.get(index as usize).map_or(0, |s| s.1)),
            offset: 0,
        },
        None => OutputPos::default(),
    };
    // A position given is where to go on from (even in an attempt before
    // the latest: a follower resumed after a retry misses nothing).
    let from = req.from.map_or(start, |p| OutputPos {
        step_index: p.step_index,
        attempt: p.attempt,
        offset: p.offset,
    });
    let follow = Follow {
        query: OutputQuery {
            run_id: id,
            step,
            attempt: req.attempt,
            from,
        },
        run_state: run.state,
        steps,
    };
    let (out, stream) = mpsc::channel(64);
    let live = (!req.stored_only).then_some((rx, lagged));
    tokio::spawn(pump(api.store.clone(), follow, live, out));
    Ok(ReceiverStream::new(stream))
}

/// Sends what is stored, then (unless it is over, or only what is stored
/// was asked for) the live chunks until it is.
async fn pump(
    store: std::sync::Arc<dyn Store>,
    mut f: Follow,
    live: Option<(
        mpsc::Receiver<Followed>,
        std::sync::Arc<crate::core::Lagged>,
    )>,
    out: mpsc::Sender<Item>,
) {
    loop {
        let page = match store.output_from(&f.query, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                let _ = out.send(Err(super::store_error(e))).await;
                return;
            }
        };
        let full = page.len() == PAGE as usize;
        for chunk in page {
            f.query.from = OutputPos::after(&chunk);
            if out.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if !full {
            break;
        }
    }
    let Some((mut rx, lagged)) = live else {
        return;
    };
    loop {
        if f.over() {
            return;
        }
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = out.closed() => return,
        };
        let chunk = match item {
            Some(Followed::Chunk(c)) => c,
            Some(Followed::Changed(e)) => {
                f.heard(&e);
                continue;
            }
            None => break,
        };
        if f.query.attempt.is_some_and(|k| k != chunk.attempt) {
            continue;
        }
        let Some(chunk) = f.query.from.keep(std::sync::Arc::unwrap_or_clone(chunk)) else {
            continue;
        };
        let next = OutputPos::after(&chunk);
        // A reader that stopped reading blocks this send; once the core
        // cuts it off, stop waiting and drop what is buffered.
        tokio::select! {
            biased;
            () = lagged.wait() => break,
            sent = out.send(Ok(chunk)) => match sent {
                Ok(()) => f.query.from = next,
                Err(_) => return,
            },
        }
    }
    drop(rx);
    let p = f.query.from;
    let resume = format!(
        "follow again from step_index {} attempt {} offset {}",
        p.step_index, p.attempt, p.offset
    );
    let status = if lagged.is_set() {
        Status::resource_exhausted(format!(
            "this reader fell behind (more unread output than its buffer holds); {resume}"
        ))
    } else {
        Status::unavailable(format!("the engine is shutting down; {resume}"))
    };
    let _ = out.send(Err(status)).await;
}
