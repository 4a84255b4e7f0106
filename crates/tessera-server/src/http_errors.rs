//! JSON bodies for the errors the HTTP/1.1 parser answers by itself.
//!
//! A request line over 64 KB (414), too many or too large headers (431) and a request
//! that is not HTTP/1.1 at all (400) are refused by hyper before the request reaches
//! the router, with an empty body and the connection closed. [`JsonErrorsIo`]
//! wraps each connection (see `connections::serve`) so such a response leaves with the `{"code", "message"}`
//! body of every other error. It recognises them by their shape: a 4xx head with
//! `content-length: 0` and no `content-type`, written as one piece with nothing
//! after it. The router never answers a 4xx like that (`api_error::json_rejections`
//! gives every one of its 4xx a JSON body), so nothing else is rewritten.

use crate::api_error::ApiError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tessera_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client's address, as `ConnectInfo<ClientAddr>` in a request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// One connection: reads pass through; a bodiless 4xx head is replaced by one with
/// a JSON body.
#[derive(Debug)]
pub struct JsonErrorsIo<S> {
    inner: S,
    /// A rewritten response not yet written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrorsIo<S> {
    /// Wraps a connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrorsIo<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(rewritten) = with_json_body(buf) {
            // Taken whole; written by the flush that follows (or the next write).
            this.pending = rewritten;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(rewritten) = with_json_body(only)
        {
            this.pending = rewritten;
            return Poll::Ready(Ok(only.len()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The response `head` again with a JSON error body, when it is a complete 4xx head
/// with `content-length: 0`, no `content-type` and nothing after it.
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..500).contains(&status) {
        return None;
    }
    let lines = text.strip_suffix("\r\n\r\n")?;
    if lines.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = lines.split("\r\n");
    let status_line = lines.next()?;
    let mut headers = Vec::new();
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
        } else {
            headers.push(line);
        }
    }
    if !empty {
        return None;
    }
    let error = match status {
        414 => ApiError::new(
            ErrorCode::UriTooLong,
            "the request's path and query are over 64 KB: send long parameters in a body",
        ),
        431 => ApiError::new(
            ErrorCode::HeadersTooLarge,
            "the request has too many headers (over 100) or too large ones: send fewer or shorter headers",
        ),
        _ => ApiError::new(
            ErrorCode::InvalidRequest,
            "the request is not well-formed HTTP/1.1 (its request line, a header or Content-Length)",
        ),
    };
    let body =
        serde_json::json!({"code": error.code().as_str(), "message": error.message()}).to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(status_line);
    out.push_str("\r\n");
    for line in headers {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 00:46:36 GMT\r\n\r\n";

    fn body_of(response: &[u8]) -> serde_json::Value {
        let text = String::from_utf8_lossy(response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse::<usize>().ok());
        assert_eq!(length, Some(body.len()), "{text}");
        assert!(head.contains("content-type: application/json"), "{text}");
        serde_json::from_str(body).unwrap_or_default()
    }

    #[test]
    fn the_parsers_bodiless_errors_get_a_json_body() {
        for (head, status, code) in [
            (URI_TOO_LONG.to_vec(), "414", "uri_too_long"),
            (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
                "431",
                "headers_too_large",
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
                "400",
                "invalid_request",
            ),
        ] {
            let rewritten = with_json_body(&head).unwrap_or_default();
            assert!(rewritten.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
            assert!(String::from_utf8_lossy(&rewritten).contains("connection: close\r\n"));
            let body = body_of(&rewritten);
            assert_eq!(body["code"], code, "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn other_responses_pass_unchanged() {
        for head in [
            // Ours: a JSON body.
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            // Success, and a 4xx head written before its body.
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"[..],
            // Not a whole head, or a body.
            &b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n"[..],
            &b"{\"code\":\"x\"}"[..],
        ] {
            assert_eq!(with_json_body(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[tokio::test]
    async fn the_connection_writes_the_rewritten_response() -> io::Result<()> {
        let mut io = JsonErrorsIo::new(Vec::new());
        io.write_all(URI_TOO_LONG).await?;
        io.flush().await?;
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await?;
        io.shutdown().await?;
        let text = String::from_utf8_lossy(&io.inner).to_string();
        let (first, second) = text.split_once("HTTP/1.1 200").unwrap_or_default();
        assert_eq!(body_of(first.as_bytes())["code"], "uri_too_long");
        assert!(second.ends_with("ok"));
        Ok(())
    }
}
