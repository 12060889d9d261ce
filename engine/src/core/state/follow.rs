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

#[cfg(test)]
mod tests {
    use super::super::tests::{T0, submit};
    use super::*;

    fn chunk(run_id: &str, step_index: u32, offset: u64) -> pb::OutputChunk {
        pb::OutputChunk {
            run_id: run_id.into(),
            step_index,
            attempt: 1,
            stream: "stdout".into(),
            data: b"x".to_vec(),
            offset,
            ..Default::default()
        }
    }

    #[test]
    fn followers_get_their_runs_output_then_its_changes_and_a_full_one_is_cut_off() {
        let mut s = State::load(
            CoreConfig {
                subscriber_buffer: 3,
                ..CoreConfig::default()
            },
            Loaded::default(),
            T0,
        );
        let spec = "name = \"r\"\n[[step]]\nqueue = \"q\"\nrun = \"true\"\n\
                    [[step]]\nqueue = \"q\"\nrun = \"true\"\n";
        let run = submit(&mut s, spec);
        let other = submit(&mut s, spec);
        let mut whole = s.follow_output(&run, None, T0).unwrap();
        let mut second = s.follow_output(&run, Some(1), T0).unwrap();
        assert!(
            s.follow_output(&run, Some(2), T0).is_err(),
            "a step the run has not is refused"
        );
        let changed = Arc::new(pb::Event {
            run_id: run.clone(),
            run_update: Some(pb::RunUpdate::default()),
            ..Default::default()
        });
        s.publish_output(
            vec![chunk(&run, 1, 0), chunk(&other, 0, 0)],
            std::slice::from_ref(&changed),
        );
        // Output first, then the change; another run's output not at all.
        assert!(matches!(whole.rx.try_recv(), Ok(Followed::Chunk(c)) if c.run_id == run));
        assert!(matches!(whole.rx.try_recv(), Ok(Followed::Changed(_))));
        assert!(whole.rx.try_recv().is_err());
        assert!(matches!(second.rx.try_recv(), Ok(Followed::Chunk(c)) if c.step_index == 1));
        // Step 0's output is not for a follower of step 1.
        s.publish_output(vec![chunk(&run, 0, 0)], &[]);
        assert!(matches!(whole.rx.try_recv(), Ok(Followed::Chunk(_))));
        assert!(!matches!(second.rx.try_recv(), Ok(Followed::Chunk(_))));
        // `whole` stops reading: its buffer of 3 fills and it is cut off,
        // flagged; `second`, which reads, goes on.
        for offset in 1..=4 {
            s.publish_output(vec![chunk(&run, 1, offset)], &[]);
            while second.rx.try_recv().is_ok() {}
        }
        assert!(whole.lagged.is_set());
        assert!(!second.lagged.is_set());
        assert_eq!(s.output_follower_count(), 1);
    }
}
