//! Minimal HTTP/1.1 client plumbing over hyper's connection API (one keep-alive connection per
//! worker), restricted to loopback targets.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `User-Agent` sent with every request.
pub const AGENT: &str = concat!("tessera-bench/", env!("CARGO_PKG_VERSION"));

/// A resolved loopback HTTP target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Socket address (always loopback).
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    /// Path prefix without trailing slash (usually empty).
    pub base_path: String,
}

impl Target {
    /// Parses `http://127.0.0.1:PORT[/prefix]` and resolves it; refuses non-loopback addresses.
    pub async fn resolve(url: &str) -> Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported (got {url:?})");
        }
        let host = uri.host().context("URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolved to nothing"))?;
        if !addr.ip().is_loopback() {
            bail!(
                "refusing to send load to {addr}: only loopback targets (127.0.0.1, ::1) are allowed"
            );
        }
        let authority = uri
            .authority()
            .map_or_else(|| format!("{host}:{port}"), |a| a.as_str().to_owned());
        Ok(Self {
            addr,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Full request path for an API path such as `/v1/batch`.
    pub fn path(&self, p: &str) -> String {
        format!("{}{p}", self.base_path)
    }

    /// Opens one HTTP/1.1 keep-alive connection (TCP_NODELAY).
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the peer closes; either is fine.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Builds a request with the usual headers.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.path(path))
            .header(HOST, &self.authority)
            .header(USER_AGENT, AGENT);
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(Full::new(body)).context("building request")
    }

    /// One request on a fresh connection; returns status, headers and the whole body.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut sender = self.connect().await?;
        let req = self.request(method, path, auth, body)?;
        send(&mut sender, req).await
    }
}

/// One admin API call with the bearer token; the JSON answer, or an error naming the
/// status and body when it is not a success.
pub async fn admin(
    target: &Target,
    token: &str,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let auth = format!("Bearer {token}");
    let (status, _, body) = target.once(method, path, Some(&auth), bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}

/// Sends a request and reads the whole response.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    sender.ready().await.context("connection not ready")?;
    let resp = sender.send_request(req).await.context("sending request")?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .context("reading response body")?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// `Basic` authorization value for a Segment write key (username = key, empty password).
pub fn basic_auth(write_key: &str) -> String {
    format!("Basic {}", base64(format!("{write_key}:").as_bytes()))
}

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(char::from(T[(n >> 18) as usize & 63]));
        out.push(char::from(T[(n >> 12) as usize & 63]));
        out.push(if chunk.len() > 1 {
            char::from(T[(n >> 6) as usize & 63])
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            char::from(T[n as usize & 63])
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(basic_auth("abc"), "Basic YWJjOg==");
    }

    #[tokio::test]
    async fn refuses_non_loopback() {
        assert!(Target::resolve("http://192.0.2.1:80").await.is_err());
        assert!(Target::resolve("https://127.0.0.1:80").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:8080").await.is_ok());
    }
}
