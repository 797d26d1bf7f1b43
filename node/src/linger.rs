//! Waiting a little for more work, only while work arrives quickly (`[delivery] linger_us`).
//!
//! A signature, a store commit and a Deliver call each cost about the same whether they carry
//! one message or ten. At a low rate a stage acts on each message at once. When the stage
//! woke less than `linger` ago as well, messages are arriving faster than one per `linger`:
//! it then waits up to `linger` for more before acting, so the fixed cost is shared. Kafka's
//! producer `linger.ms` makes the same trade; this one applies only under load.
//!
//! Used by the origin's signing thread ([`crate::sealer`]) and by each delivery worker. A
//! pure decision on the times it is given, so it is tested without a clock.

use std::time::{Duration, Instant};

/// When a stage last woke, and how long it may wait.
#[derive(Debug, Clone)]
pub struct Linger {
    max: Duration,
    last_wake: Option<Instant>,
}

impl Linger {
    /// `max`: the longest wait; zero never waits.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            last_wake: None,
        }
    }

    /// The stage woke at `now` with work to do: how long to wait for more before acting on it.
    /// `max` when the previous wake was less than `max` before `now`, else nothing.
    pub fn on_wake(&mut self, now: Instant) -> Duration {
        let busy = self
            .last_wake
            .is_some_and(|last| now.saturating_duration_since(last) < self.max);
        self.last_wake = Some(now);
        if busy { self.max } else { Duration::ZERO }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lone_wake_acts_at_once_and_a_quick_second_one_waits() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        assert_eq!(
            l.on_wake(t0),
            Duration::ZERO,
            "the first wake has no rate to go by"
        );
        assert_eq!(l.on_wake(t0 + MS), 2 * MS, "1 ms after the last: busy");
        assert_eq!(
            l.on_wake(t0 + MS + 2 * MS - Duration::from_nanos(1)),
            2 * MS,
            "just under the limit since the last wake"
        );
    }

    #[test]
    fn a_wake_at_or_past_the_limit_acts_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0);
        assert_eq!(l.on_wake(t0 + 2 * MS), Duration::ZERO, "exactly the limit");
        assert_eq!(l.on_wake(t0 + 10 * MS), Duration::ZERO, "long after");
        // Each wake counts from the one before, not from the first.
        assert_eq!(l.on_wake(t0 + 11 * MS), 2 * MS);
    }

    #[test]
    fn zero_never_waits_and_a_clock_going_back_is_not_a_rate() {
        let t0 = Instant::now() + 10 * MS;
        let mut off = Linger::new(Duration::ZERO);
        off.on_wake(t0);
        assert_eq!(off.on_wake(t0), Duration::ZERO);
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0);
        // An earlier instant (not monotonic across callers) counts as no time at all: busy.
        assert_eq!(l.on_wake(t0 - 5 * MS), 2 * MS);
    }
}
