//! Request-rate limits per client: a token bucket per key (the client's
//! address outside a class, the learner inside one, so a room behind one
//! NAT is limited per person, not as one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Run requests one client may send at once.
pub const RUN_REQUEST_BURST: f64 = 12.0;
/// And then one per this long (30 a minute: a learner clicking "Run 5
/// times" on every card stays well inside).
pub const RUN_REQUEST_EVERY: Duration = Duration::from_secs(2);

/// Density sweeps one client may start at once outside a class (each
/// holds every slot of its queue while it runs).
pub const DENSITY_BURST: f64 = 2.0;
/// And then one per this long.
pub const DENSITY_EVERY: Duration = Duration::from_secs(300);

/// Keys kept before idle (full) buckets are forgotten.
const MAX_KEYS: usize = 10_000;

/// A token bucket per key.
pub struct RateLimit {
    burst: f64,
    every: Duration,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Default for RateLimit {
    /// The limit on run requests.
    fn default() -> Self {
        RateLimit::new(RUN_REQUEST_BURST, RUN_REQUEST_EVERY)
    }
}

impl RateLimit {
    /// The limit on density sweeps outside a class.
    pub fn density() -> Self {
        RateLimit::new(DENSITY_BURST, DENSITY_EVERY)
    }

    /// `burst` requests at once, then one per `every`.
    pub fn new(burst: f64, every: Duration) -> Self {
        RateLimit {
            burst,
            every,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `key`, or says how long until one would be
    /// taken.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let refill = |(tokens, at): (f64, Instant)| {
            let earned = now.duration_since(at).as_secs_f64() / self.every.as_secs_f64();
            (tokens + earned).min(self.burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS {
            let burst = self.burst;
            buckets.retain(|_, b| refill(*b) < burst);
        }
        let tokens = buckets.get(key).map_or(self.burst, |b| refill(*b));
        if tokens < 1.0 {
            buckets.insert(key.to_owned(), (tokens, now));
            return Err(self.every.mul_f64(1.0 - tokens));
        }
        buckets.insert(key.to_owned(), (tokens - 1.0, now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_taken_then_one_per_period_and_keys_are_apart() {
        let limit = RateLimit::new(3.0, Duration::from_millis(100));
        for _ in 0..3 {
            assert!(limit.take("a").is_ok());
        }
        let wait = limit.take("a").unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(limit.take("b").is_ok(), "another client is not limited");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limit.take("a").is_ok());
        assert!(limit.take("a").is_err());
    }
}
