//! Failed authentications slowed per client: a client address that presented too many
//! wrong credentials (admin or API tokens, write keys, the metrics token) within a
//! window is answered `429 too_many_auth_failures` with `Retry-After`, without its
//! credential being checked, until the window ends.
//!
//! Only wrong credentials count: a request without one, a disabled source's key or a
//! token without the scope do not. Clients are told apart by address: an IPv4 address,
//! or the /64 network of an IPv6 address (one host usually has a whole /64). The table
//! holds at most [`FailureLimit::max_clients`] clients; when full, clients whose window
//! has ended are dropped first, then those whose window began longest ago.
//!
//! Behind a reverse proxy every client has the proxy's address: raise
//! `auth_failures` there (or set it to 0, off) and slow failures at the proxy.

use crate::api_error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::Extensions;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_core::ErrorCode;

/// How many failures a client may have, in what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failed authentications allowed per client within `window`; the next request
    /// needing authentication is answered 429 until the window ends.
    pub failures: u32,
    /// The window, from a client's first failure.
    pub window: Duration,
    /// Clients remembered at most (about 64 bytes each).
    pub max_clients: usize,
}

impl Default for FailureLimit {
    fn default() -> Self {
        Self {
            failures: 200,
            window: Duration::from_secs(60),
            max_clients: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
}

/// Failed authentications by client.
#[derive(Debug)]
pub struct AuthBackoff {
    limit: Option<FailureLimit>,
    clients: Mutex<HashMap<IpAddr, Entry>>,
}

impl Default for AuthBackoff {
    /// Off: in-process tests and embedders opt in.
    fn default() -> Self {
        Self::new(None)
    }
}

/// The key a client is known by: its IPv4 address (also when written as an
/// IPv4-mapped IPv6 address), or the /64 network of its IPv6 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client address of a request, when it came over a socket.
pub fn client_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<crate::http_errors::ClientAddr>>()
        .map(|info| info.0.0.ip())
}

impl AuthBackoff {
    /// A table with `limit` (`None`: failures are never slowed).
    pub fn new(limit: Option<FailureLimit>) -> Self {
        Self {
            limit: limit.filter(|l| l.failures > 0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(429)` when `client` had too many failures in its current window: answer
    /// that without checking the credential.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limit), Some(client)) = (self.limit, client) else {
            return Ok(());
        };
        let now = Instant::now();
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(&client_key(client)) {
            Some(entry)
                if entry.failures >= limit.failures
                    && now.duration_since(entry.since) < limit.window =>
            {
                let left = limit.window - now.duration_since(entry.since);
                Err(too_many(limit, left))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong credential presented by `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let (Some(limit), Some(client)) = (self.limit, client) else {
            return;
        };
        let now = Instant::now();
        let key = client_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(&key) && clients.len() >= limit.max_clients {
            evict(&mut clients, limit, now);
        }
        let entry = clients.entry(key).or_insert(Entry {
            since: now,
            failures: 0,
        });
        if now.duration_since(entry.since) >= limit.window {
            *entry = Entry {
                since: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Clients in the table (for tests and metrics).
    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room: drops clients whose window ended, then, if that freed less than a
/// tenth of the table, those whose window began longest ago (so eviction is rare).
fn evict(clients: &mut HashMap<IpAddr, Entry>, limit: FailureLimit, now: Instant) {
    clients.retain(|_, e| now.duration_since(e.since) < limit.window);
    let room = (limit.max_clients / 10).max(1);
    if clients.len() + room > limit.max_clients {
        let mut starts: Vec<Instant> = clients.values().map(|e| e.since).collect();
        starts.sort_unstable();
        let drop = (clients.len() + room).saturating_sub(limit.max_clients);
        if let Some(cutoff) = starts.get(drop.saturating_sub(1)).copied() {
            clients.retain(|_, e| e.since > cutoff);
        }
    }
}

fn too_many(limit: FailureLimit, left: Duration) -> ApiError {
    let seconds = left.as_secs().max(1);
    ApiError::new(
        ErrorCode::TooManyAuthFailures,
        format!(
            "more than {} failed authentications from this address within {} s: check the credential, and retry after {seconds} s (the Retry-After header)",
            limit.failures,
            limit.window.as_secs()
        ),
    )
    .with_retry_after(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn a_client_over_the_limit_waits_and_others_do_not() {
        let backoff = AuthBackoff::new(Some(FailureLimit {
            failures: 3,
            window: Duration::from_millis(200),
            max_clients: 10,
        }));
        for _ in 0..3 {
            assert!(backoff.check(ip("10.0.0.1")).is_ok());
            backoff.failed(ip("10.0.0.1"));
        }
        let refused = backoff.check(ip("10.0.0.1")).err();
        assert_eq!(
            refused.map(|e| e.code()),
            Some(ErrorCode::TooManyAuthFailures)
        );
        assert!(backoff.check(ip("10.0.0.2")).is_ok());
        // The same IPv4 address written as IPv6, and another address of the same /64.
        assert!(backoff.check(ip("::ffff:10.0.0.1")).is_err());
        for _ in 0..3 {
            backoff.failed(ip("2001:db8:1:2::1"));
        }
        assert!(backoff.check(ip("2001:db8:1:2::ffff")).is_err());
        assert!(backoff.check(ip("2001:db8:1:3::1")).is_ok());
        // No address (in-process requests): never slowed.
        assert!(backoff.check(None).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(backoff.check(ip("10.0.0.1")).is_ok());
        assert!(AuthBackoff::new(None).check(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let backoff = AuthBackoff::new(Some(FailureLimit {
            failures: 2,
            window: Duration::from_secs(60),
            max_clients: 100,
        }));
        backoff.failed(ip("192.0.2.1"));
        backoff.failed(ip("192.0.2.1"));
        for i in 0..5_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            backoff.failed(ip(&format!("10.1.{a}.{b}")));
            assert!(backoff.len() <= 100);
        }
        assert!(backoff.len() <= 100);
        // The oldest went first: the client of long ago is forgotten.
        assert!(backoff.check(ip("192.0.2.1")).is_ok());
    }
}
