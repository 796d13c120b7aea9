//! Deadlines pingora does not keep on client connections.
//!
//! - **A whole request head** (`[server] request_head_timeout`). pingora times each read of
//!   a head (60 s), not the head, so a client sending a byte now and then (slow-loris) would
//!   keep its connection for as long as it likes, up to the 1 MiB head limit. Past the
//!   deadline the client gets a JSON 408 and the connection is closed.
//! - **An idle keep-alive connection** (`[server] keepalive_timeout`). Between two requests
//!   of an HTTP/1.1 connection pingora waits for the next one without limit; past the
//!   deadline the connection is closed quietly, as nginx's `keepalive_timeout` does.
//!
//! [`Deadlines`] wraps the proxy service and runs its HTTP/1 connections (the loop over a
//! connection's requests is pingora's own, `ServerApp for HttpServerApp`, with a signal
//! added between requests). Each HTTP/1 connection's stream becomes a [`Timed`] stream,
//! which watches the bytes pingora reads: the head deadline starts with the first byte of a
//! request and ends with the empty line after its header fields (a body, however slow, is not
//! under it); the idle deadline starts when the connection's next request is awaited.
//! HTTP/2 connections (ALPN `h2`) are left to pingora: h2 frames its own requests.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The proxy service `A` with the deadlines of this module on every HTTP/1 connection.
pub struct Deadlines<A> {
    inner: Arc<A>,
    head: Duration,
    idle: Duration,
    /// The whole 408 response, written when a head's deadline passes.
    timed_out: Bytes,
}

impl<A> Deadlines<A> {
    pub fn new(inner: A, head: Duration, idle: Duration) -> Deadlines<A> {
        Deadlines {
            inner: Arc::new(inner),
            head,
            idle,
            timed_out: response_408(head),
        }
    }
}

fn response_408(head: Duration) -> Bytes {
    let body = serde_json::json!({
        "status": "error",
        "errorType": "request_timeout",
        "error": format!(
            "the request head was not complete within {}; the connection is closed",
            humantime::format_duration(head)
        ),
    })
    .to_string();
    Bytes::from(format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Deadlines<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if (*stream).selected_alpn_proto() == Some(ALPN::H2) {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let next = Arc::new(AtomicBool::new(false));
        let timed = Timed::new(
            stream,
            self.head,
            self.idle,
            self.timed_out.clone(),
            next.clone(),
        );
        // As pingora's own HTTP/1 loop (`impl ServerApp for HttpServerApp`).
        let mut session = ServerSession::new_http1(Box::new(timed));
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(self.idle.as_secs()));
        }
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, persistent)) = result.map(|r| r.consume()) {
            next.store(true, Ordering::Relaxed);
            let mut session = ServerSession::new_http1(stream);
            if let Some(p) = persistent {
                p.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first byte of a request: the idle deadline.
    Idle,
    /// Reading a request head: the head deadline.
    Head,
    /// The head is complete: no deadline of ours (pingora times body reads).
    Body,
    /// A deadline passed: every further read ends.
    Closed,
}

/// A client connection's stream under the deadlines of [`Deadlines`].
#[derive(Debug)]
pub struct Timed {
    inner: Stream,
    head: Duration,
    idle: Duration,
    timed_out: Bytes,
    state: State,
    timer: Pin<Box<Sleep>>,
    /// Set by [`Deadlines`] when the connection's next request is awaited.
    next: Arc<AtomicBool>,
    /// In the head: a byte other than CR or LF has been read (empty lines before a request
    /// line are skipped by the parser, so they cannot end a head).
    started: bool,
    /// In the head: the last byte other than CR was LF.
    after_lf: bool,
}

impl Timed {
    fn new(
        inner: Stream,
        head: Duration,
        idle: Duration,
        timed_out: Bytes,
        next: Arc<AtomicBool>,
    ) -> Timed {
        Timed {
            inner,
            head,
            idle,
            timed_out,
            state: State::Idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            next,
            started: false,
            after_lf: false,
        }
    }

    /// pingora is back for the connection's next request.
    fn next_request(&mut self) {
        if self.state != State::Closed {
            self.state = State::Idle;
            self.timer.as_mut().reset(Instant::now() + self.idle);
        }
    }

    /// Follows the head through bytes just read.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.state == State::Idle {
            self.state = State::Head;
            self.started = false;
            self.after_lf = false;
            self.timer.as_mut().reset(Instant::now() + self.head);
        }
        if self.state != State::Head {
            return;
        }
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' if !self.started => {}
                b'\n' if self.after_lf => {
                    self.state = State::Body;
                    return;
                }
                b'\n' => self.after_lf = true,
                _ => {
                    self.started = true;
                    self.after_lf = false;
                }
            }
        }
    }

    /// The read is pending: has a deadline passed meanwhile?
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let state = self.state;
        if !matches!(state, State::Idle | State::Head) || self.timer.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        self.state = State::Closed;
        let metrics = crate::process::telemetry::metrics();
        if state == State::Idle {
            metrics
                .connections_timed_out
                .with_label_values(&["keepalive"])
                .inc();
            // The end of the stream: pingora closes the connection as if the client had.
            return Poll::Ready(Ok(()));
        }
        metrics
            .connections_timed_out
            .with_label_values(&["request_head"])
            .inc();
        tracing::debug!(
            client = ?self.inner.get_socket_digest().and_then(|d| d.peer_addr().cloned()),
            "request head not complete in time: 408, connection closed"
        );
        // Best effort: the socket's send buffer is empty while a head is read, so the 408
        // goes out at once or not at all; the connection is closed either way.
        let inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(n)) = inner.poll_write(cx, &self.timed_out)
            && n == self.timed_out.len()
        {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request head not complete within {}",
                humantime::format_duration(self.head)
            ),
        )))
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.next.load(Ordering::Relaxed) {
            this.next.store(false, Ordering::Relaxed);
            this.next_request();
        }
        if this.state == State::Closed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_deadline(cx),
            other => other,
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// What pingora asks of a stream besides reading and writing: the wrapped stream's answers.

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Timed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Timed` over one end of a socket pair; `saw` is what is tested.
    fn timed() -> Timed {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let s = pingora::protocols::l4::stream::Stream::from(a);
        let one = Duration::from_secs(1);
        Timed::new(Box::new(s), one, one, Bytes::new(), Arc::default())
    }

    #[tokio::test]
    async fn the_head_ends_at_its_empty_line_whatever_the_pieces() {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let end = head.len() - "BODY".len();
        for split in 0..end {
            let mut t = timed();
            t.saw(&head[..split]);
            assert_ne!(t.state, State::Body, "split at {split}");
            t.saw(&head[split..]);
            assert_eq!(t.state, State::Body, "split at {split}");
        }
    }

    #[tokio::test]
    async fn empty_lines_before_the_request_line_do_not_end_the_head() {
        let mut t = timed();
        t.saw(b"\r\n\r\n\n\n");
        assert_eq!(t.state, State::Head);
        t.saw(b"GET / HTTP/1.1\r\nHost: a\r\n");
        assert_eq!(t.state, State::Head);
        t.saw(b"\n");
        assert_eq!(t.state, State::Body, "a bare LF ends it too");
        // The next request starts idle, then a new head.
        t.next_request();
        assert_eq!(t.state, State::Idle);
        t.saw(b"G");
        assert_eq!(t.state, State::Head);
    }
}
