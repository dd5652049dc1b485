//! Notices that this process did not run for a while: SIGSTOP, a paused VM, a CPU-starved node.
//!
//! A speaker that stalled for longer than the membership's suspicion timeout may have been
//! declared down, and its IPs taken over, without it ever seeing that happen: from its own
//! point of view nothing changed. When it runs again it must assume the worst and announce its
//! IPs again (`Announcer::reassert`), before the membership even tells it that it was down.
//! The detector is a clock check on a short tick: a tick that comes much later than due means
//! the process (or the whole machine) was not running.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the clock is checked.
pub const TICK: Duration = Duration::from_millis(25);

/// Pure: feed it the monotonic clock at every tick, it reports gaps longer than allowed.
#[derive(Debug, Clone)]
pub struct StallDetector {
    last: Instant,
    /// A gap longer than the tick plus this is a stall.
    threshold: Duration,
}

impl StallDetector {
    pub fn new(now: Instant, threshold: Duration) -> StallDetector {
        StallDetector {
            last: now,
            threshold,
        }
    }

    /// The length of the stall that ended at `now`, if there was one.
    pub fn observe(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        (gap > TICK + self.threshold).then_some(gap)
    }
}

/// Runs until `cancel`: bumps `stalls` after every stall longer than `threshold`.
pub async fn watch_for_stalls(
    threshold: Duration,
    stalls: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let mut detector = StallDetector::new(Instant::now(), threshold);
    let mut tick = tokio::time::interval(TICK);
    // After a stall, one late tick is what we want to see, not a burst of catch-up ticks.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(gap) = detector.observe(Instant::now()) {
            warn!(
                stalled_ms = gap.as_millis() as u64,
                "this speaker did not run for longer than the suspicion timeout: it may have been \
                 declared down, announcing its IPs again"
            );
            stalls.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gaps_longer_than_the_threshold_are_stalls() {
        let start = Instant::now();
        let threshold = Duration::from_millis(100);
        let mut detector = StallDetector::new(start, threshold);
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(detector.observe(at(25)), None);
        assert_eq!(detector.observe(at(60)), None, "a late tick is not a stall");
        assert_eq!(detector.observe(at(185)), None, "tick + threshold exactly");
        assert_eq!(
            detector.observe(at(2185)),
            Some(Duration::from_secs(2)),
            "SIGSTOP for 2 s"
        );
        assert_eq!(detector.observe(at(2210)), None, "running again");
        // A clock that does not move (the same instant twice) is no stall.
        assert_eq!(detector.observe(at(2210)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_reports_a_frozen_runtime() {
        // Paused time auto-advances only when every task is idle, and the detector reads the
        // real monotonic clock: block the runtime thread for real to look like SIGSTOP.
        let (tx, mut rx) = watch::channel(0);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch_for_stalls(
            Duration::from_millis(50),
            tx,
            cancel.clone(),
        ));
        tokio::time::sleep(TICK * 2).await;
        let before = *rx.borrow_and_update();
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(TICK * 2).await;
        assert!(
            *rx.borrow_and_update() > before,
            "the freeze was not noticed"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
