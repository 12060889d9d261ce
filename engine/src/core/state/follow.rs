//! Followers of a run's output: the chunks of each commit and the changes
//! of the run, sent only once they are committed, output before the
//! changes of the same commit, so that a follower that sees its step end
//! has had all of the step's output. A follower whose buffer is full is
//! cut off rather than slowing the engine or growing without bound.

use super::*;

/// What a follower of a run's output gets.
#[derive(Debug)]
pub enum Followed {
    Chunk(Arc<pb::OutputChunk>),
    /// An event of the run that carries its changes (state, steps).
    Changed(Arc<pb::Event>),
}

pub(super) struct OutputFollower {
    tx: mpsc::Sender<Followed>,
    run_id: String,
    step: Option<u32>,
    lagged: Arc<Lagged>,
}

/// A follower, registered: the run as it was when it was, and what comes
/// after.
pub struct OutputFollow {
    pub run: pb::Run,
    pub rx: mpsc::Receiver<Followed>,
    /// Set when the follower was cut off for falling behind.
    pub lagged: Arc<Lagged>,
}

impl State {
    /// Registers a follower of `run_id`'s output (only `step`'s when
    /// given). Everything committed before it is in the store by the time
    /// the caller hears back; everything after comes on its channel.
    pub fn follow_output(
        &mut self,
        run_id: &str,
        step: Option<u32>,
        now: Millis,
    ) -> EngineResult<OutputFollow> {
        let run = self.get_run(run_id, now)?;
        if let Some(index) = step
            && index as usize >= run.steps.len()
        {
            return Err(EngineError::InvalidArgument(format!(
                "run {run_id} has {} steps; step numbers go from 1 to {}",
                run.steps.len(),
                run.steps.len()
            )));
        }
        let (tx, rx) = mpsc::channel(self.cfg.subscriber_buffer);
        let lagged = Arc::new(Lagged::default());
        self.output_followers.push(OutputFollower {
            tx,
            run_id: run_id.to_owned(),
            step,
            lagged: lagged.clone(),
        });
        Ok(OutputFollow { run, rx, lagged })
    }

    /// Sends a committed transaction's output, then its run changes, to
    /// the followers of those runs.
    pub fn publish_output(&mut self, outputs: Vec<pb::OutputChunk>, events: &[Arc<pb::Event>]) {
        if self.output_followers.is_empty() {
            return;
        }
        let outputs: Vec<Arc<pb::OutputChunk>> = outputs.into_iter().map(Arc::new).collect();
        let changes = events
            .iter()
            .filter(|e| e.run_update.is_some() || !e.step_updates.is_empty());
        self.output_followers.retain(|f| {
            if f.tx.is_closed() {
                return false;
            }
            let chunks = outputs
                .iter()
                .filter(|c| c.run_id == f.run_id && f.step.is_none_or(|s| s == c.step_index))
                .map(|c| Followed::Chunk(c.clone()));
            let changed = changes
                .clone()
                .filter(|e| e.run_id == f.run_id)
                .map(|e| Followed::Changed(e.clone()));
            for item in chunks.chain(changed) {
                match f.tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        f.lagged.set();
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    pub fn output_follower_count(&self) -> usize {
        self.output_followers.len()
    }
}
