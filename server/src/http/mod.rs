//! The HTTP listener (`sluice.http.listen`, default 127.0.0.1:9644; empty turns it off):
//! Prometheus metrics, health and status endpoints and the web console.
//!
//! Data path of a scrape: shard 0 accepts (glommio `TcpListener`) -> one task per connection
//! -> hyper's HTTP/1.1 server over the socket ([`Io`] adapts glommio's stream) -> [`routes`]
//! -> `metrics::snapshot::gather` runs a closure on every shard over the channel mesh (each
//! copies its own counters, nothing is locked) -> rendered on shard 0 -> written back.
//! The data path never waits for HTTP: at most [`MAX_CONNECTIONS`] HTTP connections are
//! served at once, a connection idle for [`IDLE_TIMEOUT`] is closed, and a slow reader only
//! holds its own task.

mod routes;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

/// HTTP connections served at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that moves no byte for this long is closed (also bounds a stalled header).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the HTTP listener (shard 0, at start).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("binding sluice.http.listen {addr}: {e}"))
}

/// Serves HTTP on `listener` until the broker stops.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let shared = shard.shared.clone();
    crate::accept_until_stop(&shared, &listener, "http", |stream| {
        if open.get() >= MAX_CONNECTIONS {
            tracing::debug!("too many HTTP connections; closing a new one");
            return;
        }
        open.set(open.get() + 1);
        let (s, open) = (shard.clone(), open.clone());
        glommio::spawn_local(async move {
            connection(s, stream).await;
            open.set(open.get() - 1);
        })
        .detach();
    })
    .await;
}

async fn connection(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let last = Rc::new(Cell::new(Instant::now()));
    let io = Io {
        inner: stream,
        last: last.clone(),
    };
    let service = hyper::service::service_fn(move |req| {
        let shard = shard.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::route(&shard, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, service);
    let idle = async {
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            if last.get().elapsed() >= IDLE_TIMEOUT {
                break;
            }
        }
    };
    let served = futures_lite::future::or(async { Some(conn.await) }, async {
        idle.await;
        None
    })
    .await;
    match served {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
        None => tracing::debug!(%peer, "idle HTTP connection closed"),
        Some(Ok(())) => {}
    }
}

/// glommio's stream as hyper's I/O: futures-io traits to hyper's, noting activity for the
/// idle timeout.
struct Io {
    inner: TcpStream,
    last: Rc<Cell<Instant>>,
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: the cursor's unfilled part is only written (zeroed first, then read into);
        // `advance` is called with the count the read reports, which it initialised.
        let dst = unsafe { buf.as_mut() };
        for b in dst.iter_mut() {
            b.write(0);
        }
        // SAFETY: every byte of `dst` was just initialised.
        let bytes = unsafe { &mut *(dst as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        match Pin::new(&mut this.inner).poll_read(cx, bytes) {
            Poll::Ready(Ok(n)) => {
                this.last.set(Instant::now());
                // SAFETY: the read initialised (wrote) the first `n` bytes.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            this.last.set(Instant::now());
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
