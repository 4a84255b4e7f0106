//! The HTTP listener with limits: how many connections, how long a client may take
//! to send its request headers, how long a connection may sit idle.
//!
//! Without them anyone who can reach the port, no key needed, holds connections and
//! memory for as long as they like: half-sent headers, idle keep-alive connections
//! and bodies sent a byte a second all stay open, and at the process's file limit
//! every other client is cut off. So:
//! - at most [`ConnectionLimits::max_connections`] connections are open; one more is
//!   answered `503 too_many_connections` (JSON, `Connection: close`) and closed;
//! - one client address (an IPv4 address, an IPv6 /64) holds at most
//!   [`ConnectionLimits::max_connections_per_client`] of them; one more is answered
//!   `429 too_many_client_connections` and closed, so one stranger cannot take them all;
//! - a request's headers must arrive within [`ConnectionLimits::header_timeout`], and
//!   the same limit closes a keep-alive connection that sends no next request;
//! - request bodies have their own deadline where they are read (the tracking API),
//!   see [`ConnectionLimits::body_timeout`].
//!
//! At start the process's soft limit on open files is raised to its hard limit, and
//! the connection cap kept below it, so the cap and not the file limit decides.

use crate::{AppState, router};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tessera_core::ErrorCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits of the HTTP listener (configuration: `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most (further ones get 503); lowered at start to fit the
    /// process's open-file limit.
    pub max_connections: usize,
    /// A request's headers, and a keep-alive connection's next request, must arrive
    /// within this.
    pub header_timeout: Duration,
    /// A tracking request's body must arrive within this (`408 request_timeout`).
    pub body_timeout: Duration,
    /// Tracking requests reading a body without a write key in their headers at
    /// once (the key is in the body, so the body is read before the key is known);
    /// more get `503 overloaded`. Bounds the memory strangers can hold.
    pub keyless_bodies: usize,
    /// Open connections one client address may hold (further ones get 429).
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keyless_bodies: 64,
            max_connections_per_client: 1_000,
        }
    }
}

/// What the tracking API needs of the limits while it reads a body.
#[derive(Debug)]
pub struct BodyGate {
    /// A body must arrive within this.
    pub timeout: Duration,
    /// Permits to read a body whose write key is not in the headers.
    pub keyless: Semaphore,
}

impl BodyGate {
    /// The gate of `limits`.
    pub fn new(limits: &ConnectionLimits) -> Self {
        Self {
            timeout: limits.body_timeout,
            keyless: Semaphore::new(limits.keyless_bodies),
        }
    }
}

impl Default for BodyGate {
    fn default() -> Self {
        Self::new(&ConnectionLimits::default())
    }
}

/// File descriptors kept free for the stores, logs and outgoing connections.
const RESERVED_FILES: u64 = 256;
/// How long a refused connection gets to take its 503.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Raises the soft open-file limit to the hard one where the platform allows, and
/// returns the connection cap that fits under it.
pub fn fit_to_file_limit(limits: ConnectionLimits) -> ConnectionLimits {
    let files = raise_file_limit();
    let fits = files.map_or(limits.max_connections, |files| {
        usize::try_from(files.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX)
    });
    let max_connections = limits.max_connections.min(fits);
    if max_connections < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max_connections,
            "the open-file limit allows fewer connections than configured; raise it (ulimit -n) to allow more"
        );
    }
    ConnectionLimits {
        max_connections,
        ..limits
    }
}

#[cfg(unix)]
fn raise_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        limit.current = Some(hard);
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise_file_limit() -> Option<u64> {
    None
}

/// Serves the application on `listener` with `limits` until `shutdown` completes,
/// then stops accepting and waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::new(limits.max_connections_per_client));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a reset before accept: not fatal.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(client) = PerClient::enter(&per_client, peer.ip()) else {
            state.metrics.connections_refused.inc();
            tokio::spawn(refuse(
                stream,
                Refusal::Client(limits.max_connections_per_client),
            ));
            continue;
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            tokio::spawn(refuse(stream, Refusal::Server));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo(crate::http_errors::ClientAddr(peer)));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        // The parser's own bodiless 4xx (414, 431, 400, 408) leave with a JSON body.
        let io = TokioIo::new(crate::http_errors::JsonErrorsIo::new(stream));
        let connection = graceful.watch(http.serve_connection(io, service));
        let metrics = Arc::clone(&state.metrics);
        tokio::spawn(async move {
            metrics.connections_open.inc();
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            metrics.connections_open.dec();
            drop(permit);
            drop(client);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Open connections by client (see [`crate::auth_backoff::client_key`]).
struct PerClient {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One open connection of a client; leaving frees its place.
struct ClientSlot {
    table: Arc<PerClient>,
    key: std::net::IpAddr,
}

impl PerClient {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A place for one more connection of `ip`, or `None` when it holds the most.
    fn enter(table: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let key = crate::auth_backoff::client_key(ip);
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= table.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: Arc::clone(table),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why a connection is refused.
enum Refusal {
    /// The server holds `max_connections`.
    Server,
    /// The client holds this many, its most.
    Client(usize),
}

/// Answers a connection over a cap with a JSON error and closes it.
async fn refuse(mut stream: TcpStream, why: Refusal) {
    let (status, code, message) = match why {
        Refusal::Server => (
            "503 Service Unavailable",
            ErrorCode::TooManyConnections,
            "this server has as many open connections as it takes; retry shortly (after the Retry-After seconds)".to_owned(),
        ),
        Refusal::Client(max) => (
            "429 Too Many Requests",
            ErrorCode::TooManyClientConnections,
            format!(
                "this address has {max} open connections, the most one client may hold ([http] max_connections_per_client): reuse or close some, then retry"
            ),
        ),
    };
    let body = serde_json::json!({"code": code.as_str(), "message": message}).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_under_the_file_limit() {
        let fitted = fit_to_file_limit(ConnectionLimits {
            max_connections: usize::MAX,
            ..ConnectionLimits::default()
        });
        assert!(fitted.max_connections < usize::MAX);
        assert!(fitted.max_connections >= 16);
        let small = fit_to_file_limit(ConnectionLimits {
            max_connections: 5,
            ..ConnectionLimits::default()
        });
        assert_eq!(small.max_connections, 5, "a lower setting is kept");
    }

    #[test]
    fn each_client_holds_at_most_its_share() {
        let table = Arc::new(PerClient::new(2));
        let ip = |text: &str| text.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let a1 = PerClient::enter(&table, ip("10.0.0.1"));
        let a2 = PerClient::enter(&table, ip("10.0.0.1"));
        assert!(a1.is_some() && a2.is_some());
        assert!(PerClient::enter(&table, ip("10.0.0.1")).is_none());
        assert!(PerClient::enter(&table, ip("::ffff:10.0.0.1")).is_none());
        let b = PerClient::enter(&table, ip("10.0.0.2"));
        assert!(b.is_some());
        drop(a1);
        assert!(PerClient::enter(&table, ip("10.0.0.1")).is_some());
        drop((a2, b));
        assert!(table.open.lock().map(|o| o.is_empty()).unwrap_or(false));
    }
}
