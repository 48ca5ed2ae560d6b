//! TCP transport between quorum nodes (and from brokers to the controller).
//!
//! Every frame is `len u32 (big endian, payload bytes) | type u8 | payload`, at most
//! [`MAX_FRAME`] bytes of payload; a frame over the limit, of an unknown type or with a payload
//! that does not decode closes its connection. Types:
//! - [`RAFT`]: one raft message (protobuf `eraftpb.Message`), one way, on a connection that a
//!   peer's sender thread keeps open;
//! - [`PROPOSE`] / [`PROPOSE_REPLY`]: a follower forwarding a proposal to the leader and the
//!   outcome (`timeout_ms u32 | command` -> `0 | index u64 | reply`, `1 | leader u64`, or
//!   `2 | code u8 | message`);
//! - [`RPC`] / [`RPC_REPLY`]: an opaque request for the node's [`super::RpcHandler`].
//!
//! Outbound raft messages go through one sender thread per peer with a bounded queue: a full
//! queue drops the message (Raft retransmits), a broken connection is re-dialled with backoff.
//! Inbound connections get one thread each; every socket read has a timeout so the threads see
//! a stop.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::core::Envelope;
use super::{Event, NodeId, Proposed, Quorum, QuorumError, RpcHandler};

pub const RAFT: u8 = 1;
pub const PROPOSE: u8 = 2;
pub const PROPOSE_REPLY: u8 = 3;
pub const RPC: u8 = 4;
pub const RPC_REPLY: u8 = 5;

/// Largest payload accepted (a snapshot travels in one frame, so it bounds the snapshot size).
pub const MAX_FRAME: usize = 128 << 20;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
/// How often blocked reads and waits look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// A frame that started must finish within this long.
const FRAME_STALL: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Inbound connections served at once; more are closed right away.
const MAX_INBOUND: usize = 256;

fn io_error(context: impl Into<String>, source: io::Error) -> QuorumError {
    QuorumError::Io {
        context: context.into(),
        source,
    }
}

pub fn encode_frame(ty: u8, payload: &[u8]) -> Result<Vec<u8>, QuorumError> {
    if payload.len() > MAX_FRAME {
        return Err(QuorumError::TooLarge {
            bytes: payload.len(),
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.push(ty);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The deadline for the frame passed before it (fully) arrived.
    Timeout,
    TooLarge(usize),
    /// The stream ended inside a frame.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Timeout => write!(f, "timed out"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is over the {MAX_FRAME} limit")
            }
            FrameError::Truncated => write!(f, "stream ended inside a frame"),
        }
    }
}

impl FrameError {
    fn into_quorum(self, context: &str) -> QuorumError {
        match self {
            FrameError::Timeout => QuorumError::Timeout,
            FrameError::Io(e) => io_error(context, e),
            other => io_error(
                context,
                io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
            ),
        }
    }
}

/// Fills `buf`; `Ok(false)` if the stream ended (or `stop` was set) before the first byte.
/// The stream must have a read timeout (it is how `stop` and `deadline` are noticed).
fn read_full(
    r: &mut TcpStream,
    buf: &mut [u8],
    stop: &AtomicBool,
    deadline: Option<Instant>,
    started: bool,
) -> Result<bool, FrameError> {
    let mut got = 0;
    let mut frame_start = if started { Some(Instant::now()) } else { None };
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && !started => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => {
                got += n;
                frame_start.get_or_insert_with(Instant::now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Acquire) {
                    return Ok(false);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(FrameError::Timeout);
                }
                if frame_start.is_some_and(|t| t.elapsed() > FRAME_STALL) {
                    return Err(FrameError::Timeout);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames or a stop.
pub fn read_frame(
    r: &mut TcpStream,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0u8; 5];
    if !read_full(r, &mut head, stop, deadline, false)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    // grow with the bytes that actually arrive, so a bogus length cannot allocate much
    let mut payload = Vec::new();
    while payload.len() < len {
        let start = payload.len();
        let want = (len - start).min(1 << 20);
        payload.resize(start + want, 0);
        if !read_full(r, &mut payload[start..], stop, deadline, true)? {
            return Ok(None);
        }
    }
    Ok(Some((head[4], payload)))
}

fn setup_stream(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))
}

/// One request/response exchange on a fresh connection.
pub fn call(
    addr: SocketAddr,
    ty: u8,
    payload: &[u8],
    timeout: Duration,
) -> Result<(u8, Vec<u8>), QuorumError> {
    let deadline = Instant::now() + timeout;
    let frame = encode_frame(ty, payload)?;
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(CONNECT_TIMEOUT.max(timeout / 4)))
        .map_err(|e| QuorumError::Unreachable {
            addr,
            reason: e.to_string(),
        })?;
    setup_stream(&s).map_err(|e| io_error(format!("configuring a connection to {addr}"), e))?;
    s.write_all(&frame)
        .map_err(|e| io_error(format!("sending to {addr}"), e))?;
    let never = AtomicBool::new(false);
    let context = format!("reading the reply from {addr}");
    let reply = read_frame(&mut s, &never, Some(deadline)).map_err(|e| e.into_quorum(&context))?;
    let _ = s.shutdown(Shutdown::Both);
    reply.ok_or_else(|| {
        io_error(
            context,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the reply",
            ),
        )
    })
}

/// How a forwarded proposal ended on the node it was sent to.
pub enum ForwardReply {
    Done(Proposed),
    /// It is not the leader (any more); ask whoever is now.
    NotLeader,
    Failed(QuorumError),
}

const ERR_TIMEOUT: u8 = 1;
const ERR_DROPPED: u8 = 2;
const ERR_UNKNOWN: u8 = 3;
const ERR_STOPPED: u8 = 4;
const ERR_NO_LEADER: u8 = 5;
const ERR_OTHER: u8 = 0;

pub fn encode_propose_reply(result: &Result<Proposed, QuorumError>) -> Vec<u8> {
    let mut out = Vec::new();
    match result {
        Ok(p) => {
            out.push(0);
            out.extend_from_slice(&p.index.to_be_bytes());
            out.extend_from_slice(&p.reply);
        }
        Err(QuorumError::NotLeader { leader }) => {
            out.push(1);
            out.extend_from_slice(&leader.unwrap_or(0).to_be_bytes());
        }
        Err(e) => {
            out.push(2);
            out.push(match e {
                QuorumError::Timeout => ERR_TIMEOUT,
                QuorumError::Dropped => ERR_DROPPED,
                QuorumError::Unknown => ERR_UNKNOWN,
                QuorumError::Stopped => ERR_STOPPED,
                QuorumError::NoLeader => ERR_NO_LEADER,
                _ => ERR_OTHER,
            });
            out.extend_from_slice(e.to_string().as_bytes());
        }
    }
    out
}

pub fn decode_propose_reply(b: &[u8]) -> Option<ForwardReply> {
    let (&tag, rest) = b.split_first()?;
    match tag {
        0 if rest.len() >= 8 => {
            let index = u64::from_be_bytes(rest[..8].try_into().ok()?);
            Some(ForwardReply::Done(Proposed {
                index,
                reply: rest[8..].to_vec(),
            }))
        }
        1 if rest.len() == 8 => Some(ForwardReply::NotLeader),
        2 if !rest.is_empty() => {
            let msg = String::from_utf8_lossy(&rest[1..]).into_owned();
            Some(ForwardReply::Failed(match rest[0] {
                ERR_TIMEOUT => QuorumError::Timeout,
                ERR_DROPPED => QuorumError::Dropped,
                ERR_UNKNOWN => QuorumError::Unknown,
                ERR_STOPPED => QuorumError::Stopped,
                ERR_NO_LEADER => QuorumError::NoLeader,
                _ => QuorumError::Remote(msg),
            }))
        }
        _ => None,
    }
}

/// Sends a proposal to `addr` (the leader) and waits for its outcome. An
/// [`QuorumError::Unreachable`] error means nothing was sent.
pub fn forward_propose(
    addr: SocketAddr,
    command: &[u8],
    timeout: Duration,
) -> Result<ForwardReply, QuorumError> {
    let mut payload = Vec::with_capacity(4 + command.len());
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    payload.extend_from_slice(&ms.to_be_bytes());
    payload.extend_from_slice(command);
    // the leader answers within `timeout`; allow for the round trip
    let (ty, reply) = call(
        addr,
        PROPOSE,
        &payload,
        timeout + Duration::from_millis(500),
    )?;
    if ty != PROPOSE_REPLY {
        return Err(QuorumError::Remote(format!(
            "unexpected reply frame type {ty}"
        )));
    }
    decode_propose_reply(&reply)
        .ok_or_else(|| QuorumError::Remote("malformed proposal reply".into()))
}

/// A raft message encoded for one peer.
struct Outbound {
    frame: Vec<u8>,
    snapshot: bool,
}

/// The per-peer sender threads' queues.
pub struct Peers {
    queues: HashMap<NodeId, SyncSender<Outbound>>,
}

/// What became of a message handed to [`Peers::send`].
pub enum Sent {
    Queued,
    /// Dropped here (queue full, unknown peer or unencodable).
    Dropped,
}

impl Peers {
    /// Starts one sender thread per peer; they end when `Peers` is dropped or `stop` is set.
    pub fn start(
        peers: &[(NodeId, SocketAddr)],
        events: SyncSender<Event>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Peers, Vec<JoinHandle<()>>), QuorumError> {
        let mut queues = HashMap::new();
        let mut threads = Vec::new();
        for &(id, addr) in peers {
            let (tx, rx) = mpsc::sync_channel(PEER_QUEUE);
            let events = events.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("quorum-send-{id}"))
                .spawn(move || sender_loop(id, addr, rx, events, stop))
                .map_err(|e| io_error("spawning a quorum sender thread", e))?;
            queues.insert(id, tx);
            threads.push(t);
        }
        Ok((Peers { queues }, threads))
    }

    pub fn send(&self, env: &Envelope) -> Sent {
        let Some(q) = self.queues.get(&env.to()) else {
            return Sent::Dropped;
        };
        let frame = match env.encode().and_then(|b| encode_frame(RAFT, &b)) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(to = env.to(), error = %e, "cannot send a raft message");
                return Sent::Dropped;
            }
        };
        match q.try_send(Outbound {
            frame,
            snapshot: env.is_snapshot(),
        }) {
            Ok(()) => Sent::Queued,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Sent::Dropped,
        }
    }
}

fn report_failed(to: NodeId, batch: &[Outbound], events: &SyncSender<Event>) {
    for _ in batch.iter().filter(|m| m.snapshot) {
        // blocking: a lost report would leave the leader waiting for this snapshot; fails once
        // the node thread is gone
        let _ = events.send(Event::SnapshotSent { to, ok: false });
    }
    let _ = events.try_send(Event::Unreachable(to));
}

fn sender_loop(
    to: NodeId,
    addr: SocketAddr,
    rx: Receiver<Outbound>,
    events: SyncSender<Event>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = Instant::now();
    let mut buf = Vec::new();
    loop {
        let first = match rx.recv_timeout(POLL) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            if Instant::now() < retry_at {
                report_failed(to, &batch, &events);
                continue;
            }
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .and_then(|s| setup_stream(&s).map(|_| s))
            {
                Ok(s) => {
                    tracing::debug!(to, %addr, "connected to quorum peer");
                    conn = Some(s);
                }
                Err(e) => {
                    if backoff == BACKOFF_MIN {
                        tracing::debug!(to, %addr, error = %e, "cannot reach quorum peer");
                    }
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    report_failed(to, &batch, &events);
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else {
            continue;
        };
        buf.clear();
        for m in &batch {
            buf.extend_from_slice(&m.frame);
        }
        match s.write_all(&buf) {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                for _ in batch.iter().filter(|m| m.snapshot) {
                    let _ = events.send(Event::SnapshotSent { to, ok: true });
                }
            }
            Err(e) => {
                tracing::debug!(to, %addr, error = %e, "lost the connection to quorum peer");
                conn = None;
                retry_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                report_failed(to, &batch, &events);
            }
        }
        if buf.capacity() > 4 << 20 {
            buf = Vec::new();
        }
    }
}

/// Counts the inbound connection threads, so a stop can wait for them.
pub struct InboundCount(AtomicUsize);

impl InboundCount {
    pub fn new() -> InboundCount {
        InboundCount(AtomicUsize::new(0))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

struct InboundGuard(Arc<InboundCount>);

impl Drop for InboundGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until the stop flag is set; each gets a thread.
pub fn accept_loop(
    listener: TcpListener,
    quorum: Quorum,
    rpc: Arc<dyn RpcHandler>,
    count: Arc<InboundCount>,
) {
    let stop = quorum.stop_flag();
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "quorum listener cannot be made non-blocking; not accepting");
        return;
    }
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((s, peer)) => {
                if count.get() >= MAX_INBOUND {
                    tracing::warn!(%peer, "too many quorum connections; closing a new one");
                    continue;
                }
                if let Err(e) = s.set_nonblocking(false).and_then(|_| setup_stream(&s)) {
                    tracing::debug!(%peer, error = %e, "cannot configure a quorum connection");
                    continue;
                }
                count.0.fetch_add(1, Ordering::AcqRel);
                let guard = InboundGuard(count.clone());
                let q = quorum.clone();
                let rpc = rpc.clone();
                let spawned = std::thread::Builder::new()
                    .name("quorum-conn".into())
                    .spawn(move || {
                        let _guard = guard;
                        serve_conn(s, peer, q, rpc);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot spawn a quorum connection thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "quorum accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_conn(mut s: TcpStream, peer: SocketAddr, quorum: Quorum, rpc: Arc<dyn RpcHandler>) {
    let stop = quorum.stop_flag();
    // a peer that keeps sending never lets a read time out: look at the flag between frames too
    while !stop.load(Ordering::Acquire) {
        let (ty, payload) = match read_frame(&mut s, &stop, None) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closing a quorum connection");
                break;
            }
        };
        let reply = match ty {
            RAFT => match Envelope::decode(&payload) {
                Ok(env) => {
                    quorum.deliver(env);
                    None
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "malformed raft message; closing the connection");
                    break;
                }
            },
            PROPOSE if payload.len() >= 4 => {
                let ms = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let result = quorum
                    .propose_local(payload[4..].to_vec(), Duration::from_millis(u64::from(ms)));
                Some((PROPOSE_REPLY, encode_propose_reply(&result)))
            }
            RPC => Some((RPC_REPLY, rpc.handle(&payload))),
            other => {
                tracing::debug!(%peer, ty = other, "bad quorum frame; closing the connection");
                break;
            }
        };
        if let Some((ty, body)) = reply {
            let frame = match encode_frame(ty, &body) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "reply too large; closing the connection");
                    break;
                }
            };
            if let Err(e) = s.write_all(&frame) {
                tracing::debug!(%peer, error = %e, "cannot write a quorum reply");
                break;
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}
