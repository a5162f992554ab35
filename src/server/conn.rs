//! Accepted TCP connections the server can cut at once. tonic's graceful shutdown waits, with
//! no deadline, for every connection to close, and runs each connection on its own task that
//! nobody can abort; a client that stops reading (its flow-control window full) keeps its
//! connection — and with it the services and the writer handle they hold — alive for ever.
//! Every connection accepted here fails its next read or write once the kill token is
//! cancelled, so the connection task ends and drops what it holds.
//!
//! With TLS, [`TlsIncoming`] runs each handshake on its own task (bounded by
//! `tls::HANDSHAKE_TIMEOUT`) so a slow client does not hold up the others, and hands tonic the
//! TLS stream; tonic's `TlsConnectInfo` then carries the client certificate to each request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pause after a failed accept: tonic retries at once, and accept keeps failing while the
/// process is out of file descriptors — without a pause that is a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener as a stream of killable connections (for `serve_with_incoming_shutdown`).
pub struct Incoming {
    listener: TcpListener,
    kill: CancellationToken,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Incoming {
    pub fn new(listener: TcpListener, kill: CancellationToken) -> Self {
        Self {
            listener,
            kill,
            backoff: None,
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pause) = this.backoff.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.backoff = None;
        }
        match this.listener.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => {
                // Small request/response frames: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                Poll::Ready(Some(Ok(Conn {
                    io: stream,
                    killed: Box::pin(this.kill.clone().cancelled_owned()),
                })))
            }
            Poll::Ready(Err(e)) => {
                tracing::warn!(error = %e, "accept failed; pausing before the next one");
                this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The listener's connections once their TLS handshake is done; failed or timed-out
/// handshakes are logged (debug: a port scan is not an incident) and dropped.
pub struct TlsIncoming {
    plain: Incoming,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsStream<Conn>>>,
}

impl TlsIncoming {
    pub fn new(plain: Incoming, config: Arc<ServerConfig>) -> Self {
        Self {
            plain,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, conn: Conn) {
        let accept = self.acceptor.accept(conn);
        self.handshakes.spawn(async move {
            match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsStream<Conn>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Every connection waiting to be accepted starts its handshake; the accept stays
        // registered with the waker, so a new connection wakes this stream too.
        loop {
            match Pin::new(&mut this.plain).poll_next(cx) {
                Poll::Ready(Some(Ok(conn))) => this.start_handshake(conn),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
            if let Ok(Some(stream)) = done {
                return Poll::Ready(Some(Ok(stream)));
            }
        }
        Poll::Pending
    }
}

/// One accepted connection.
pub struct Conn {
    io: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Conn {
    /// Registers for the kill and fails once it happened.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.killed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "shutdown grace period over",
            ));
        }
        Ok(())
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
