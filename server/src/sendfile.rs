//! Zero-copy fetch: sendfile(2) from a segment's buffered read-only fd straight to the socket.
//!
//! glommio drives its sockets with MSG_DONTWAIT plus io_uring polls, but the fd itself is
//! blocking; a raw sendfile on it could stall the shard. The connection sets O_NONBLOCK first.
//! When the socket buffer is full (EAGAIN), a chunk is copied through glommio's own write path,
//! which waits for writability without blocking the executor, and sendfile resumes after it.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use futures_lite::io::{AsyncWriteExt, BufWriter};

use crate::wire::FileRef;

/// Bytes copied through the normal write path when the socket is full.
const EAGAIN_CHUNK: u64 = 64 * 1024;

pub async fn send_file<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    sock: RawFd,
    file: &FileRef,
    mut position: u64,
    len: u64,
) -> std::io::Result<()> {
    let end = position + len;
    while position < end {
        let mut off = position as libc::off_t;
        let want = (end - position).min(1 << 30) as usize;
        // SAFETY: both fds are open for the duration of the call; `off` is a valid pointer.
        let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, want) };
        if n > 0 {
            position += n as u64;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment file shorter than the fetched range",
            ));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => {
                // socket full: copy one chunk through glommio, which waits for writability
                let n = EAGAIN_CHUNK.min(end - position);
                copy_file(w, file, position, n).await?;
                w.flush().await?;
                position += n;
            }
            Some(libc::EINTR) => {}
            _ => return Err(err),
        }
    }
    Ok(())
}

/// The copy path (also used when zero copy is switched off): pread and write.
pub async fn copy_file<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    file: &FileRef,
    mut position: u64,
    len: u64,
) -> std::io::Result<()> {
    let end = position + len;
    let mut buf = vec![0u8; (len.min(256 * 1024)) as usize];
    while position < end {
        let n = ((end - position) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], position)?;
        w.write_all(&buf[..n]).await?;
        position += n as u64;
    }
    Ok(())
}
