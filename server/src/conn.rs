//! One client connection: read length-prefixed frames, run each request as its own task
//! (pipelining), and write the responses in request order. A malformed frame, an unknown API
//! key or a frame above socket.request.max.bytes closes the connection with a log line; other
//! connections are unaffected.
//!
//! Data path: accepted socket -> [`Transport`] (plain TCP today; any byte stream, such as a TLS
//! session, fits) -> `read_frame` -> one task per request (`api::handle`) -> the writer, which
//! sends responses in order, sendfile'ing fetched segment ranges when the transport is a raw
//! socket and copying them through the stream otherwise.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::TcpStream;
use thiserror::Error;

use crate::api;
use crate::shard::Shard;
use crate::wire::{Piece, Response};

/// Requests of one connection being processed at once; further reads wait (back-pressure).
pub const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    FrameTooLarge { size: i64, max: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("{0:?} request before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    #[error("the SASL session expired (connections.max.reauth.ms) without re-authentication")]
    SessionExpired,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the request handler panicked: {0}")]
    HandlerPanicked(String),
    #[error("idle for connections.max.idle.ms ({0} ms)")]
    Idle(u64),
}

type Pending = glommio::task::JoinHandle<Result<Option<Response>, ConnError>>;

/// The byte stream a connection runs over.
pub struct Transport<S> {
    pub stream: S,
    /// The client's address, for logs.
    pub peer: Rc<str>,
    /// The socket under `stream` when bytes written to it reach the peer unchanged (plain TCP):
    /// fetched segment ranges may then be sendfile'd to it. `None` for a stream that transforms
    /// what it writes (TLS): everything goes through `stream`.
    pub raw_fd: Option<RawFd>,
    /// Who the transport authenticated (a client certificate's principal), else
    /// `User:ANONYMOUS`.
    pub principal: String,
}

/// The client's address, for logs.
pub fn peer_name(stream: &TcpStream) -> Rc<str> {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
        .into()
}

impl Transport<TcpStream> {
    /// A plaintext TCP connection.
    pub fn tcp(stream: TcpStream) -> Self {
        let peer = peer_name(&stream);
        let _ = stream.set_nodelay(true);
        let raw_fd = Some(stream.as_raw_fd());
        Transport {
            stream,
            peer,
            raw_fd,
            principal: crate::security::principal::ANONYMOUS.to_string(),
        }
    }
}

impl Transport<futures_rustls::server::TlsStream<TcpStream>> {
    /// A TLS session (after its handshake): no sendfile, fetched ranges are copied through it.
    pub fn tls(
        stream: futures_rustls::server::TlsStream<TcpStream>,
        peer: Rc<str>,
        principal: String,
    ) -> Self {
        let _ = stream.get_ref().0.set_nodelay(true);
        Transport {
            stream,
            peer,
            raw_fd: None,
            principal,
        }
    }
}

/// What a request knows about the connection it came on.
pub struct Session {
    /// The client's address, for logs and group descriptions.
    pub peer: Rc<str>,
    /// Index into the broker's listeners of the one the client connected to: Metadata and
    /// FindCoordinator answer with that listener's endpoints.
    pub listener: usize,
    /// `User:<name>`: from SASL or the client certificate, else `User:ANONYMOUS`.
    pub principal: std::cell::RefCell<Rc<str>>,
    /// SASL listeners: where the authentication stands (None on PLAINTEXT and SSL ones).
    pub sasl: Option<std::cell::RefCell<crate::security::sasl::SaslState>>,
    /// Client quotas: no further request is handled before this (KIP-219 muting).
    pub throttled_until: Cell<Option<std::time::Instant>>,
    /// The last request came under a client quota: requests are then read one at a time.
    pub quota_bound: Cell<bool>,
}

impl Session {
    /// A new connection's session: `principal` as the transport authenticated it, `sasl` on
    /// SASL listeners; not throttled.
    pub fn new(peer: Rc<str>, listener: usize, principal: &str, sasl: bool) -> Session {
        Session {
            peer,
            listener,
            principal: std::cell::RefCell::new(principal.into()),
            sasl: sasl.then(|| std::cell::RefCell::new(crate::security::sasl::SaslState::new())),
            throttled_until: Cell::new(None),
            quota_bound: Cell::new(false),
        }
    }

    /// A SASL listener's client that has not authenticated yet: its requests are served one
    /// at a time, and only the authentication ones.
    pub fn authenticating(&self) -> bool {
        self.sasl
            .as_ref()
            .is_some_and(|s| !s.borrow().authenticated())
    }

    /// A response throttled for `ms` (quota): mutes the connection that long.
    pub fn throttle(&self, ms: i32) {
        if ms > 0 {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
            let later = self.throttled_until.get().map_or(until, |t| t.max(until));
            self.throttled_until.set(Some(later));
        }
    }

    /// Waits out a quota throttle, if any.
    async fn muted(&self) {
        if let Some(until) = self.throttled_until.take() {
            let now = std::time::Instant::now();
            if until > now {
                glommio::timer::sleep(until - now).await;
            }
        }
    }

    /// After a v0 SaslHandshake the next frame is a bare SASL token.
    pub fn expects_raw_token(&self) -> bool {
        self.sasl
            .as_ref()
            .is_some_and(|s| s.borrow().expects_raw_token())
    }
}

/// Serves one connection until the peer closes it, an error occurs, or the broker stops.
pub async fn serve<S>(
    shard: Rc<Shard>,
    transport: Transport<S>,
    listener: usize,
    open_conns: Rc<Cell<usize>>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    open_conns.set(open_conns.get() + 1);
    shard.metrics.connection_opened();
    let Transport {
        stream,
        peer,
        raw_fd,
        principal,
    } = transport;
    let sasl = shard.shared.listeners[listener].protocol.sasl();
    let session = Rc::new(Session::new(peer.clone(), listener, &principal, sasl));
    let (reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Pending>(MAX_IN_FLIGHT);
    // sendfile only where the socket carries the bytes as they are
    let sendfile_fd = raw_fd.filter(|_| shard.shared.config.fetch_zero_copy);
    // requests queued for the writer; it flushes when this drops to zero
    let queued = Rc::new(Cell::new(0usize));
    let writer_exit = Rc::new(event_listener::Event::new());
    let writer_exited = writer_exit.listen();
    let budget = Rc::new(RequestBudget::new(
        shard.shared.config.queued_max_request_bytes,
    ));
    let writer_task = {
        let queued = queued.clone();
        let budget = budget.clone();
        let s = shard.clone();
        let exit = writer_exit.clone();
        glommio::spawn_local(async move {
            write_loop(rx, writer, sendfile_fd, queued, &budget, &s).await;
            exit.notify(usize::MAX);
        })
    };
    let max = shard.shared.config.socket_request_max_bytes;
    let idle = std::time::Duration::from_millis(shard.shared.config.connections_max_idle_ms);
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let read_result = futures_lite::future::or(
        async {
            loop {
                // between frames, a broker stop ends the connection (in-flight requests finish)
                let stop = shard.shared.stop.listen();
                if shard.shared.is_stopping() {
                    return Ok(());
                }
                let raw = session.expects_raw_token();
                let min = if raw { 0 } else { 8 };
                let next = futures_lite::future::or(
                    read_frame(&mut reader, min, max, &budget, &shard.metrics),
                    async {
                        stop.await;
                        Ok(None)
                    },
                );
                // connections.max.idle.ms: no new request (and none in flight) for that long
                let next = futures_lite::future::or(next, async {
                    loop {
                        glommio::timer::sleep(idle).await;
                        if queued.get() == 0 {
                            return Err(ConnError::Idle(idle.as_millis() as u64));
                        }
                    }
                });
                let frame = match next.await {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                };
                // a quota throttle on an earlier answer: this request waits it out (KIP-219)
                if session.throttled_until.get().is_some() {
                    let stop = shard.shared.stop.listen();
                    futures_lite::future::or(session.muted(), stop).await;
                }
                let s = shard.clone();
                let session = session.clone();
                let size = frame.len();
                let task = if raw {
                    // v0 SASL framing: a bare token, answered as one
                    let r = api::sasl::raw_token(&s, &frame, &session);
                    budget.answered(size, &r);
                    glommio::spawn_local(async move { r }).detach()
                } else if session.authenticating() {
                    // one request at a time until authenticated: the next frame may depend on
                    // this one's outcome (a v0 handshake switches the framing)
                    let r = guarded(api::handle(&s, frame, &session), &s).await;
                    budget.answered(size, &r);
                    glommio::spawn_local(async move { r }).detach()
                } else if session.quota_bound.get() {
                    // under a client quota: one request at a time, as Kafka serves every
                    // connection, so that each answer's throttle holds back the next request
                    // (pipelined requests would otherwise all be in before the first throttle)
                    let r = guarded(api::handle(&s, frame, &session), &s).await;
                    budget.answered(size, &r);
                    glommio::spawn_local(async move { r }).detach()
                } else {
                    let b = budget.clone();
                    glommio::spawn_local(async move {
                        let r = guarded(api::handle(&s, frame, &session), &s).await;
                        b.answered(size, &r);
                        r
                    })
                    .detach()
                };
                queued.set(queued.get() + 1);
                if tx.send(task).await.is_err() {
                    return Ok(()); // writer stopped
                }
            }
        },
        async {
            // the writer ending first (write error, bad request) ends the connection
            writer_exited.await;
            Ok(())
        },
    )
    .await;
    drop(tx);
    if let Err(e) = read_result {
        tracing::info!(%peer, error = %e, "closing connection");
    }
    // let the writer send the answers of requests already read
    writer_task.await;
    open_conns.set(open_conns.get() - 1);
    shard.metrics.connection_closed();
}

/// Runs a request handler so that a panic in it (a bug) closes only its connection: the
/// panic is caught at this task's boundary, logged and counted, and the shard serves on.
async fn guarded(
    handler: impl std::future::Future<Output = Result<Option<Response>, ConnError>>,
    shard: &Shard,
) -> Result<Option<Response>, ConnError> {
    use futures_lite::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => {
            let what = panic_message(payload.as_ref());
            tracing::error!(shard = shard.id, panic = %what, "request handler panicked; closing its connection");
            shard.metrics.handler_panicked();
            Err(ConnError::HandlerPanicked(what))
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// `queued.max.request.bytes`, per connection: request bytes read and not yet handled, plus
/// the in-memory bytes of answers not yet sent. The reader waits for room before it allocates
/// the next frame, so a client pipelining large requests (or one whose requests wait, as
/// acks=all produces do), or one that stops reading its answers (a slow consumer), holds at
/// most this much broker memory beyond the requests already being handled; a frame is always
/// let in when nothing else is in flight.
pub struct RequestBudget {
    limit: usize,
    used: Cell<usize>,
    freed: event_listener::Event,
}

impl RequestBudget {
    pub fn new(limit: usize) -> Self {
        RequestBudget {
            limit: limit.max(1),
            used: Cell::new(0),
            freed: event_listener::Event::new(),
        }
    }

    async fn acquire(&self, size: usize) {
        loop {
            let used = self.used.get();
            if used == 0 || used + size <= self.limit {
                self.used.set(used + size);
                return;
            }
            let freed = self.freed.listen();
            if self.used.get() == used {
                freed.await;
            }
        }
    }

    fn release(&self, size: usize) {
        self.used.set(self.used.get().saturating_sub(size));
        self.freed.notify(usize::MAX);
    }

    /// A request of `size` bytes was handled: its frame is freed, and the memory its answer
    /// holds until the writer sent it is counted instead (released by [`Self::sent`]).
    fn answered(&self, size: usize, r: &Result<Option<Response>, ConnError>) {
        if let Ok(Some(resp)) = r {
            self.used.set(self.used.get() + response_bytes(resp));
        }
        self.release(size);
    }

    /// The writer sent (or dropped) an answer that held `held` bytes.
    fn sent(&self, held: usize) {
        self.release(held);
    }
}

/// Broker memory an answer holds until it is written: its in-memory pieces (encoded headers
/// and hot-tail batches; file ranges are sent from the page cache and hold none).
fn response_bytes(resp: &Response) -> usize {
    resp.pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len(),
            Piece::File { .. } => 0,
        })
        .sum()
}

/// Reads one frame of `min..=max` bytes, within `budget`; `None` on a clean EOF between frames.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
    min: usize,
    max: usize,
    budget: &RequestBudget,
    metrics: &crate::metrics::ShardMetrics,
) -> Result<Option<Bytes>, ConnError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len) as i64;
    if size < min as i64 || size as u64 > max as u64 {
        return Err(ConnError::FrameTooLarge { size, max });
    }
    budget.acquire(size as usize).await;
    let mut buf = BytesMut::zeroed(size as usize);
    if let Err(e) = r.read_exact(&mut buf).await {
        budget.release(size as usize);
        return Err(e.into());
    }
    metrics.received(4 + size as u64);
    Ok(Some(buf.freeze()))
}

async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(
    rx: glommio::channels::local_channel::LocalReceiver<Pending>,
    writer: W,
    sendfile_fd: Option<RawFd>,
    queued: Rc<Cell<usize>>,
    budget: &RequestBudget,
    shard: &Shard,
) {
    let mut w = futures_lite::io::BufWriter::with_capacity(64 * 1024, writer);
    let mut nonblocking = false;
    while let Some(task) = rx.recv().await {
        queued.set(queued.get().saturating_sub(1));
        let resp = match task.await {
            Some(Ok(Some(r))) => r,
            Some(Ok(None)) => continue, // acks=0 produce: no response
            Some(Err(e)) => {
                tracing::info!(error = %e, "request failed; closing connection");
                break;
            }
            None => break,
        };
        let close = resp.close_after;
        let m = &shard.metrics;
        // the answer's memory, counted by `answered`, is free once it is written
        let held = response_bytes(&resp);
        let written = write_response(&mut w, sendfile_fd, &mut nonblocking, resp, m).await;
        budget.sent(held);
        if let Err(e) = written {
            tracing::debug!(error = %e, "write failed");
            break;
        }
        if close {
            break;
        }
        if queued.get() == 0 && w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.close().await;
}

async fn write_response<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut futures_lite::io::BufWriter<W>,
    sendfile_fd: Option<RawFd>,
    nonblocking: &mut bool,
    resp: Response,
    metrics: &crate::metrics::ShardMetrics,
) -> std::io::Result<()> {
    for piece in resp.pieces {
        match piece {
            Piece::Bytes(b) => {
                w.write_all(&b).await?;
                metrics.sent(b.len() as u64);
            }
            Piece::File {
                file,
                position,
                len,
            } => {
                metrics.sent(len);
                metrics.fetch_file_bytes(len, sendfile_fd.is_some());
                if let Some(fd) = sendfile_fd {
                    w.flush().await?;
                    if !*nonblocking {
                        set_nonblocking(fd)?;
                        *nonblocking = true;
                    }
                    crate::sendfile::send_file(w, fd, &file, position, len).await?;
                } else {
                    crate::sendfile::copy_file(w, &file, position, len).await?;
                }
            }
        }
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd this connection owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod budget_tests {
    use super::RequestBudget;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_frame_waits_for_room_and_a_lone_frame_always_fits() {
        let ex = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor");
        ex.run(async {
            let b = Rc::new(RequestBudget::new(1000));
            b.acquire(600).await;
            let got = Rc::new(Cell::new(false));
            let (b2, g2) = (b.clone(), got.clone());
            let waiter = glommio::spawn_local(async move {
                b2.acquire(600).await;
                g2.set(true);
            });
            for _ in 0..10 {
                futures_lite::future::yield_now().await;
            }
            assert!(!got.get(), "600 + 600 > 1000: the second frame waits");
            b.release(600);
            waiter.await;
            assert!(got.get());
            b.release(600);
            // larger than the whole budget, with nothing in flight: let in
            b.acquire(5000).await;
            b.release(5000);
        });
    }
}
