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

/// How the joins of one class from one address are paced: a bucket of
/// twice the class's size (`max_members`), refilled at the class's size
/// per [`JOIN_REFILL`].
///
/// A room behind one NAT (a school's or a company's single public
/// address) joins all at once in the first minute of a workshop, so the
/// whole class must fit in one burst, and with room to spare: a learner
/// who reloads the join page joins again, and a class that is full must
/// answer `class_full` (a reason a person can act on), not "too many
/// joins". Refilling the class's size a minute, a real room never runs
/// dry: it joins once, and even "everyone reload the page" comes at most
/// once a minute. A script inventing learner ids from one address gets
/// the same allowance, the class's `max_members` caps how many of its
/// inventions stay, and what it cannot do is hammer the store with
/// thousands of joins a second.
pub const JOIN_REFILL: Duration = Duration::from_secs(60);
/// The bucket's size, in classes (see [`JOIN_REFILL`]).
pub const JOIN_BURST_CLASSES: f64 = 2.0;

/// Joins of codes no class has that one address may try at once, then one
/// per [`UNKNOWN_CODE_EVERY`]: a learner mistypes a code a few times; a
/// script guessing codes is slowed to a crawl.
pub const UNKNOWN_CODE_BURST: f64 = 10.0;
/// See [`UNKNOWN_CODE_BURST`].
pub const UNKNOWN_CODE_EVERY: Duration = Duration::from_secs(6);

/// The pace of joins per client address (see [`JOIN_REFILL`]).
#[derive(Default)]
pub struct JoinLimit {
    buckets: Buckets,
}

impl JoinLimit {
    /// Takes one join of the class `code`, of size `max_members`, from
    /// `address`, or says how long until one would be taken.
    pub fn take(&self, address: &str, code: &str, max_members: u32) -> Result<(), Duration> {
        let size = f64::from(max_members.max(1));
        self.buckets.take(
            &format!("{address} {code}"),
            size * JOIN_BURST_CLASSES,
            JOIN_REFILL.div_f64(size),
        )
    }

    /// Takes one join of a code no class has from `address`.
    pub fn take_unknown(&self, address: &str) -> Result<(), Duration> {
        self.buckets.take(
            &format!("{address} unknown"),
            UNKNOWN_CODE_BURST,
            UNKNOWN_CODE_EVERY,
        )
    }
}

/// Token buckets by key, each with its own size and pace.
#[derive(Default)]
struct Buckets(Mutex<HashMap<String, Bucket>>);

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    burst: f64,
    every: Duration,
}

impl Bucket {
    fn now(self, now: Instant) -> f64 {
        let earned = now.duration_since(self.at).as_secs_f64() / self.every.as_secs_f64();
        (self.tokens + earned).min(self.burst)
    }
}

impl Buckets {
    fn take(&self, key: &str, burst: f64, every: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| b.now(now) < b.burst);
        }
        let tokens = buckets.get(key).map_or(burst, |b| b.now(now));
        let (left, result) = if tokens < 1.0 {
            (tokens, Err(every.mul_f64(1.0 - tokens)))
        } else {
            (tokens - 1.0, Ok(()))
        };
        buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: left,
                at: now,
                burst,
                every,
            },
        );
        result
    }
}

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

    /// A class of 20 joins at once from one address, twice over; the
    /// 41st join from there waits about 3 s (a minute per 20); another
    /// class, or another address, has a bucket of its own.
    #[test]
    fn a_whole_class_joins_at_once_from_one_address_and_no_faster() {
        let limit = JoinLimit::default();
        for _ in 0..40 {
            assert!(limit.take("address 10.0.0.1", "K7QM2P", 20).is_ok());
        }
        let wait = limit.take("address 10.0.0.1", "K7QM2P", 20).unwrap_err();
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        assert!(limit.take("address 10.0.0.2", "K7QM2P", 20).is_ok());
        assert!(limit.take("address 10.0.0.1", "ABCDEF", 20).is_ok());
        for _ in 0..10 {
            assert!(limit.take_unknown("address 10.0.0.1").is_ok());
        }
        assert!(limit.take_unknown("address 10.0.0.1").is_err());
    }

    #[test]
    fn a_burst_is_taken_then_one_per_period_and_keys_are_apart() {
        // A period long against a loaded host's scheduling delays: the
        // second take below fails unless 0.8 s more went by unseen.
        let limit = RateLimit::new(3.0, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(limit.take("a").is_ok());
        }
        let wait = limit.take("a").unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(limit.take("b").is_ok(), "another client is not limited");
        std::thread::sleep(Duration::from_millis(1200));
        assert!(limit.take("a").is_ok());
        assert!(limit.take("a").is_err());
    }
}
