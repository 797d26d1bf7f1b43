//! Waiting a little for more publishes, only while the origin is busy (`[delivery] linger_us`).
//!
//! A signature costs about the same whether it covers one message or ten, and every receiver
//! checks each one. The origin's
//! signing thread ([`crate::sealer`]) signs at once, unless two things hold:
//! - its previous wake (or the end of the wait that followed it) was less than `linger` ago:
//!   messages are coming faster than one per `linger`;
//! - another publish is still in progress (being stored or answered, or on its way to the
//!   signing thread): the node is busy, so what would be saved is worth a short wait.
//!
//! It then waits `linger` for more before signing. Kafka's producer `linger.ms` makes the same
//! trade, but always; this one only while the previous message was close and another is still
//! in progress. So a message that follows the previous one by more than `linger` never waits,
//! and neither does a client that publishes one message at a time and waits for each answer
//! while no other publish is in progress on the node.
//!
//! Delivery workers do not wait: a worker has one call in flight per peer, and what queues
//! while it is out goes in the next call, which batches under load on its own. Waiting at
//! the workers as well added a second wait to the latency and saved little more CPU
//! (BENCHMARKS.md, "Lingering at the signing thread only").
//!
//! A pure decision on the times and the state it is given, so it is tested without a clock.

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
    /// before `now`, and `others_in_progress` (other publishes than those about to be signed
    /// are in progress: being stored or answered, or about to reach the signing thread); else
    /// nothing. Counting from the end of the wait keeps a steady
    /// stream waiting every time, not every other time (the wait itself puts `max` between
    /// wakes).
    pub fn on_wake(&mut self, now: Instant, others_in_progress: bool) -> Duration {
        let close = self
            .last_wake
            .is_some_and(|last| now.saturating_duration_since(last) < self.max);
        let wait = if close && others_in_progress {
            self.max
        } else {
            Duration::ZERO
        };
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
            l.on_wake(t0, true),
            Duration::ZERO,
            "the first wake has no rate to go by"
        );
        assert_eq!(
            l.on_wake(t0 + MS, true),
            2 * MS,
            "1 ms after the last: busy"
        );
    }

    #[test]
    fn a_steady_stream_waits_every_time_counted_from_the_end_of_each_wait() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0, true);
        // One message a millisecond: each wake comes 1 ms after the previous wait ended.
        let mut now = t0 + MS;
        for i in 0..5 {
            let wait = l.on_wake(now, true);
            assert_eq!(wait, 2 * MS, "wake {i} of a steady stream did not wait");
            now += wait + MS;
        }
        // Just under the limit after the end of the last wait: still busy.
        now = now - MS + 2 * MS - Duration::from_nanos(1);
        assert_eq!(l.on_wake(now, true), 2 * MS);
    }

    #[test]
    fn a_wake_at_or_past_the_limit_acts_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0, true);
        assert_eq!(
            l.on_wake(t0 + 2 * MS, true),
            Duration::ZERO,
            "exactly the limit"
        );
        assert_eq!(l.on_wake(t0 + 10 * MS, true), Duration::ZERO, "long after");
        // Each wake counts from the one before, not from the first.
        assert_eq!(l.on_wake(t0 + 11 * MS, true), 2 * MS);
        // ... and from the end of the wait it was told: 3 ms after that wake is 1 ms after
        // its wait ended.
        assert_eq!(l.on_wake(t0 + 14 * MS, true), 2 * MS);
        // 4 ms after the end of that wait (at 16 ms): not busy.
        assert_eq!(l.on_wake(t0 + 20 * MS, true), Duration::ZERO);
    }

    #[test]
    fn nothing_else_in_progress_never_waits_however_close_the_wake() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0, true);
        // A client that publishes one message at a time: each wake close to the last, and
        // nothing else in progress.
        let mut now = t0;
        for i in 0..5 {
            now += MS / 2;
            assert_eq!(
                l.on_wake(now, false),
                Duration::ZERO,
                "lone wake {i} waited"
            );
        }
        // The same close wake with another publish in progress waits, counted from the last
        // wake (which told no wait).
        assert_eq!(l.on_wake(now + MS, true), 2 * MS);
        // A far wake never waits, busy or not.
        assert_eq!(l.on_wake(now + 10 * MS, true), Duration::ZERO);
    }

    #[test]
    fn zero_never_waits_and_a_clock_going_back_counts_as_busy() {
        let t0 = Instant::now() + 10 * MS;
        let mut off = Linger::new(Duration::ZERO);
        off.on_wake(t0, true);
        assert_eq!(off.on_wake(t0, true), Duration::ZERO);
        let mut l = Linger::new(2 * MS);
        l.on_wake(t0, true);
        // An earlier instant (a clock read elsewhere) counts as no time at all: busy.
        assert_eq!(l.on_wake(t0 - 5 * MS, true), 2 * MS);
    }
}
