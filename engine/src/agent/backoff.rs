//! How long to wait before reconnecting: 200 ms doubling to 10 s, jittered so
//! a fleet of workers that lost the engine together does not come back in
//! lockstep.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failure and says how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(ceiling(self.failures), rand::random::<f64>());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// A session worked: start again from the shortest wait.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The wait before jitter after `failures` failures.
fn ceiling(failures: u32) -> Duration {
    FIRST.saturating_mul(1 << failures.min(16)).min(CAP)
}

/// Between half and all of `ceiling` ("equal jitter"): spread out, yet never
/// close to zero, so a dead engine is not hammered.
pub(crate) fn jittered(ceiling: Duration, unit: f64) -> Duration {
    let half = ceiling / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_200ms_to_10s() {
        let ceilings: Vec<_> = (0..9).map(|n| ceiling(n).as_millis()).collect();
        assert_eq!(
            ceilings,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(ceiling(u32::MAX), CAP);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_ceiling() {
        let ceiling = Duration::from_millis(800);
        assert_eq!(jittered(ceiling, 0.0), Duration::from_millis(400));
        assert_eq!(jittered(ceiling, 1.0), ceiling);
        assert_eq!(jittered(ceiling, 0.5), Duration::from_millis(600));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert!(backoff.next_delay() >= Duration::from_secs(5));
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
        assert_eq!(backoff.failures(), 1);
    }
}
