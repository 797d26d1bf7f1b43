//! Per-identity token buckets: how much a peer organisation, or a user of this node, may ask
//! of it per second.
//!
//! Keys are identities taken from verified certificates (a peer's org id, a user's subject),
//! so the map is bounded by the federation's size, not by what a caller sends. A bucket holds
//! up to `burst` tokens and refills at `rate` per second; a caller that runs dry is told to
//! come back later, never dropped: a peer's surplus envelopes are answered `RETRY_LATER`
//! (its delivery worker backs off and resends them), a client's request fails with
//! `RESOURCE_EXHAUSTED`.

use std::time::Instant;

use dashmap::DashMap;

/// Token buckets by identity.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up (both at least 1).
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Tokens refilled per second.
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Takes up to `want` tokens from `who`'s bucket and returns how many it got.
    pub fn take_up_to(&self, who: &str, want: u64) -> u64 {
        self.take_up_to_at(who, want, Instant::now())
    }

    /// Takes one token; false if `who` has none left.
    pub fn try_take(&self, who: &str) -> bool {
        self.take_up_to(who, 1) == 1
    }

    fn take_up_to_at(&self, who: &str, want: u64, now: Instant) -> u64 {
        let mut b = self.buckets.entry(who.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        if now > b.last {
            b.last = now;
        }
        let got = (b.tokens.floor() as u64).min(want);
        b.tokens -= got as f64;
        got
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let l = RateLimiter::new(100, 10);
        let t0 = Instant::now();
        assert_eq!(
            l.take_up_to_at("a", 25, t0),
            10,
            "a full bucket holds the burst"
        );
        assert_eq!(l.take_up_to_at("a", 1, t0), 0, "then nothing");
        // 50 ms at 100/s: 5 tokens back.
        assert_eq!(l.take_up_to_at("a", 25, t0 + Duration::from_millis(50)), 5);
        // Never more than the burst, however long the pause.
        assert_eq!(l.take_up_to_at("a", 100, t0 + Duration::from_secs(60)), 10);
    }

    #[test]
    fn identities_do_not_share_a_bucket() {
        let l = RateLimiter::new(1, 3);
        let t0 = Instant::now();
        assert_eq!(l.take_up_to_at("noisy", 3, t0), 3);
        assert_eq!(l.take_up_to_at("noisy", 1, t0), 0);
        assert_eq!(l.take_up_to_at("quiet", 1, t0), 1);
        assert!(!l.try_take("noisy"));
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing_extra() {
        let l = RateLimiter::new(1000, 5);
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!(l.take_up_to_at("a", 5, t0), 5);
        assert_eq!(l.take_up_to_at("a", 5, t0 - Duration::from_millis(500)), 0);
    }
}
