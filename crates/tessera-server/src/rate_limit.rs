//! Per-key rate limits: a token bucket per write key (tracking API) and per token
//! (admin and profile APIs). Over the limit, a request gets `429 rate_limited` with
//! `Retry-After`, which Segment's SDKs honour.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Limits per key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key.
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with `limit` per key (`None`: no limit).
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `false` when it is empty.
    pub fn allow(&self, key: &str) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: limit.burst,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 1000.0,
            burst: 3.0,
        }));
        assert!((0..3).all(|_| limiter.allow("a")));
        assert!(!limiter.allow("a"));
        // Other keys have their own bucket.
        assert!(limiter.allow("b"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(limiter.allow("a"));
        assert!(RateLimiter::new(None).allow("a"));
    }
}
