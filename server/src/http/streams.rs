//! Event streams are long-lived connections: capped per client and in
//! total, so one client (or a crowd) cannot hold every socket the server
//! has. Refused with 429 and `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::AppError;

/// Streams one client (address) may hold open: a learner's cards, the
/// room page, with room for a few tabs.
pub const PER_CLIENT: usize = 32;
/// Streams open at once on the server.
pub const TOTAL: usize = 2048;

/// The open streams, per client and in all.
#[derive(Debug)]
pub struct Streams {
    by_client: Mutex<HashMap<String, usize>>,
    per_client: usize,
    total: usize,
}

impl Default for Streams {
    fn default() -> Self {
        Streams::new(PER_CLIENT, TOTAL)
    }
}

impl Streams {
    /// At most `per_client` per client and `total` in all.
    pub fn new(per_client: usize, total: usize) -> Self {
        Streams {
            by_client: Mutex::new(HashMap::new()),
            per_client,
            total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.by_client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().values().sum()
    }

    /// One more stream for `client`, counted until the guard drops; or
    /// 429 when it or the server has as many as it may.
    pub fn try_open(self: &Arc<Self>, client: &str) -> Result<OpenStream, AppError> {
        let mut by_client = self.lock();
        let all: usize = by_client.values().sum();
        let mine = by_client.get(client).copied().unwrap_or(0);
        if mine >= self.per_client || all >= self.total {
            let whose = if mine >= self.per_client {
                format!("this client already has {mine} live streams open")
            } else {
                format!("the server has {all} live streams open")
            };
            return Err(AppError::RateLimited {
                message: format!("{whose}; close a tab or try again shortly"),
                retry_after_s: 5,
            });
        }
        *by_client.entry(client.to_owned()).or_default() += 1;
        Ok(OpenStream {
            streams: self.clone(),
            client: client.to_owned(),
        })
    }
}

/// Counts an open event stream until dropped.
#[derive(Debug)]
pub struct OpenStream {
    streams: Arc<Streams>,
    client: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut by_client = self.streams.lock();
        if let Some(n) = by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_client_and_in_all_and_freed_on_drop() {
        let streams = Arc::new(Streams::new(2, 3));
        let a1 = streams.try_open("a").unwrap();
        let _a2 = streams.try_open("a").unwrap();
        assert!(streams.try_open("a").is_err(), "a third for one client");
        let _b1 = streams.try_open("b").unwrap();
        assert!(streams.try_open("c").is_err(), "a fourth in all");
        assert_eq!(streams.open(), 3);
        drop(a1);
        assert!(streams.try_open("c").is_ok());
    }
}
