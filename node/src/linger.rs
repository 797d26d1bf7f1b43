//! Waiting a little for more work, only while work arrives quickly (`[delivery] linger_us`).
//!
//! A signature, a store commit and a Deliver call each cost about the same whether they carry
//! one message or ten. A stage that wakes with work acts at once, unless its previous wake (or
//! the end of the wait that followed it) was less than `linger` ago: messages are then coming
//! faster than one per `linger`, and it waits `linger` for more before acting, so the fixed
//! cost is shared. Kafka's producer `linger.ms` makes the same trade, but always; this one
//! only while the previous message was close. So one message that follows another by less
//! than `linger` may wait up to `linger` at the origin's signing thread and again at each
//! delivery worker; a message that follows the previous one by more never waits.
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
    /// `max` when the previous wake, or the end of the wait it was told, was less than `max`
    /// before `now`; else nothing. Counting from the end of the wait keeps a steady stream
    /// waiting every time, not every other time (the wait itself puts `max` between wakes).
    pub fn on_wake(&mut self, now: Instant) -> Duration {
        let busy = self
            .last_wake
            .is_some_and(|last| now.saturating_duration_since(last) < self.max);
        let wait = if busy { self.max } else { Duration::ZERO };
        self.last_wake = Some(now + wait);
        wait
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
    }

    #[test]
    fn a_steady_stream_waits_every_time_counted_from_the_end_of_each_wait() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0);
        // One message a millisecond: each wake comes 1 ms after the previous wait ended.
        let mut now = t0 + MS;
        for i in 0..5 {
            let wait = l.on_wake(now);
            assert_eq!(wait, 2 * MS, "wake {i} of a steady stream did not wait");
            now += wait + MS;
        }
        // Just under the limit after the end of the last wait: still busy.
        now = now - MS + 2 * MS - Duration::from_nanos(1);
        assert_eq!(l.on_wake(now), 2 * MS);
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
        // ... and from the end of the wait it was told: 3 ms after that wake is 1 ms after
        // its wait ended.
        assert_eq!(l.on_wake(t0 + 14 * MS), 2 * MS);
        // 4 ms after the end of that wait (at 16 ms): not busy.
        assert_eq!(l.on_wake(t0 + 20 * MS), Duration::ZERO);
    }

    #[test]
    fn zero_never_waits_and_a_clock_going_back_counts_as_busy() {
        let t0 = Instant::now() + 10 * MS;
        let mut off = Linger::new(Duration::ZERO);
        off.on_wake(t0);
        assert_eq!(off.on_wake(t0), Duration::ZERO);
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0);
        // An earlier instant (callers on other threads) counts as no time at all: busy.
        assert_eq!(l.on_wake(t0 - 5 * MS), 2 * MS);
    }
}
