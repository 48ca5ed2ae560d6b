//! A pipelined connection: several requests in flight, responses matched by correlation id.
//!
//! The caller's thread encodes and writes requests ([`Pipeline::send`]); a reader thread reads
//! the responses (Kafka answers in request order on one connection), checks each correlation id
//! against the oldest request in flight and calls the handler with the request's token and the
//! response body. The window is a bounded queue of in-flight requests: `send` blocks while
//! `max_in_flight` requests are unanswered, which is the back-pressure a producer needs.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, StrBytes};

use rustls::ClientConnection;

use crate::conn::{encode_request, read_response, ConnError, Connection, Stream};

/// The writing side of a pipeline.
enum Writer {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl Writer {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::Plain(s) => s.write_all(buf),
            Writer::Tls(t) => t.write_all(buf),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Writer::Plain(s) => s,
            Writer::Tls(t) => &t.sock,
        }
    }
}

fn lock(
    session: &Mutex<ClientConnection>,
) -> io::Result<std::sync::MutexGuard<'_, ClientConnection>> {
    session
        .lock()
        .map_err(|_| io::Error::other("the TLS session was poisoned by a panic"))
}

/// Encrypts under the session lock, writes to the socket without it.
struct TlsWriter {
    session: Arc<Mutex<ClientConnection>>,
    sock: TcpStream,
    records: Vec<u8>,
}

impl TlsWriter {
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.records.clear();
        {
            let mut s = lock(&self.session)?;
            while !buf.is_empty() {
                let n = s.writer().write(buf)?;
                buf = &buf[n..];
                // also whatever the reader's side queued (a KeyUpdate answer)
                while s.wants_write() {
                    s.write_tls(&mut self.records)?;
                }
                if n == 0 && !buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the TLS session takes no more data",
                    ));
                }
            }
        }
        self.sock.write_all(&self.records)
    }
}

/// Waits for the socket without the session lock, decrypts under it.
struct TlsReader {
    session: Arc<Mutex<ClientConnection>>,
    sock: TcpStream,
    /// TLS bytes read from the socket, `raw[start..end]` not yet given to the session.
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut s = lock(&self.session)?;
                match s.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    let mut pending = &self.raw[self.start..self.end];
                    let n = s.read_tls(&mut pending)?;
                    self.start += n;
                    s.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
                if self.eof {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let n = self.sock.read(&mut self.raw)?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                self.eof = true;
                let mut s = lock(&self.session)?;
                // tells the session about the end of the stream: it answers Ok(0) after a
                // close_notify, else UnexpectedEof
                s.read_tls(&mut &[][..])?;
                let _ = s.process_new_packets();
            }
        }
    }
}

/// What the reader needs to know about one request in flight.
struct InFlight<T> {
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    /// false for acks=0 produces, which get no response.
    expects_response: bool,
    token: T,
}

/// A connection with a writer (the owner) and a reader thread.
pub struct Pipeline<T: Send + 'static> {
    writer: Writer,
    tx: Option<SyncSender<InFlight<T>>>,
    reader: Option<JoinHandle<Result<(), ConnError>>>,
    client_id: StrBytes,
    next_id: i32,
    buf: BytesMut,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

impl<T: Send + 'static> Pipeline<T> {
    /// Takes over `conn`. `handler(token, response)` runs on the reader thread, in request
    /// order, once per request; after a connection error it gets `Err` for every request still
    /// in flight.
    pub fn start<H>(conn: Connection, max_in_flight: usize, handler: H) -> Result<Self, ConnError>
    where
        H: FnMut(T, Result<Bytes, ConnError>) + Send + 'static,
    {
        let (stream, client_id, next_id) = conn.into_stream();
        stream
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(120)))?;
        // the reader holds one request outside the queue while it waits for its response
        let (tx, rx) = mpsc::sync_channel::<InFlight<T>>(max_in_flight.max(1) - 1);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let count = in_flight.clone();
        let mut handler = handler;
        let counted = move |token: T, r: Result<Bytes, ConnError>| {
            handler(token, r);
            count.fetch_sub(1, Ordering::Release);
        };
        let builder = std::thread::Builder::new().name("kafka-reader".into());
        let (writer, reader) = match stream {
            Stream::Plain(sock) => {
                let r = BufReader::with_capacity(256 * 1024, sock.try_clone()?);
                (
                    Writer::Plain(sock),
                    builder.spawn(move || read_loop(r, rx, counted))?,
                )
            }
            Stream::Tls(tls) => {
                let tls = *tls;
                let (mut session, sock) = (tls.conn, tls.sock);
                // the writer drains the session's records at every send
                session.set_buffer_limit(None);
                let session = Arc::new(Mutex::new(session));
                let r = BufReader::with_capacity(
                    64 * 1024,
                    TlsReader {
                        session: session.clone(),
                        sock: sock.try_clone()?,
                        raw: vec![0u8; 64 * 1024].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        eof: false,
                    },
                );
                (
                    Writer::Tls(TlsWriter {
                        session,
                        sock,
                        records: Vec::with_capacity(64 * 1024),
                    }),
                    builder.spawn(move || read_loop(r, rx, counted))?,
                )
            }
        };
        Ok(Pipeline {
            writer,
            tx: Some(tx),
            reader: Some(reader),
            client_id,
            next_id,
            buf: BytesMut::with_capacity(64 * 1024),
            in_flight,
            max_in_flight: max_in_flight.max(1),
        })
    }

    /// Requests sent and not yet handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// True when [`Pipeline::send`] would not block.
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.max_in_flight
    }

    /// Encodes and writes one request; blocks while the window is full.
    pub fn send<B: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &B,
        token: T,
        expects_response: bool,
    ) -> Result<(), ConnError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.buf.clear();
        encode_request(&mut self.buf, api, version, id, &self.client_id, body)?;
        let tx = self.tx.as_ref().ok_or(ConnError::Closed)?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // queue first, so the reader knows the request before its response can arrive
        tx.send(InFlight {
            correlation_id: id,
            api,
            version,
            expects_response,
            token,
        })
        .map_err(|_| ConnError::Closed)?;
        self.writer.write_all(&self.buf).map_err(ConnError::io)?;
        Ok(())
    }

    /// Waits for every response, stops the reader and returns its result.
    pub fn finish(mut self) -> Result<(), ConnError> {
        self.tx = None;
        let r = match self.reader.take() {
            Some(h) => h.join().unwrap_or(Err(ConnError::Closed)),
            None => Ok(()),
        };
        let _ = self.writer.tcp().shutdown(std::net::Shutdown::Both);
        r
    }
}

impl<T: Send + 'static> Drop for Pipeline<T> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.reader.take() {
            let _ = self.writer.tcp().shutdown(std::net::Shutdown::Both);
            let _ = h.join();
        }
    }
}

fn read_loop<R: Read, T, H>(
    mut r: R,
    rx: Receiver<InFlight<T>>,
    mut handler: H,
) -> Result<(), ConnError>
where
    H: FnMut(T, Result<Bytes, ConnError>),
{
    while let Ok(req) = rx.recv() {
        if !req.expects_response {
            handler(req.token, Ok(Bytes::new()));
            continue;
        }
        let err = match read_response(&mut r, req.api, req.version) {
            Ok((id, body)) if id == req.correlation_id => {
                handler(req.token, Ok(body));
                continue;
            }
            Ok((got, _)) => ConnError::Correlation {
                expected: req.correlation_id,
                got,
            },
            Err(e) => e,
        };
        let text = err.to_string();
        handler(req.token, Err(err));
        // everything else in flight fails too
        while let Ok(req) = rx.recv() {
            handler(req.token, Err(ConnError::Failed(text.clone())));
        }
        return Err(ConnError::Failed(text));
    }
    Ok(())
}
