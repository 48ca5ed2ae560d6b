//! The floor under acks=all latency on this machine: one durable round (an O_DIRECT write of
//! `--write-bytes` at the next offset, then fdatasync) timed alone, with nothing else running,
//! by the path the I/O takes from a glommio executor:
//!
//! - `uring`: glommio `write_at` + `fdatasync` through io_uring (what the engine does);
//! - `blocking`: `pwrite` + `fdatasync` in one closure on glommio's blocking thread pool;
//! - `inline`: `pwrite` + `fdatasync` on the executor thread itself (no thread hop at all;
//!   a broker cannot do this, it stalls the shard; it is the floor).
//!
//! and by the state of the blocks written: `unwritten` (a fresh file, writes extend it and
//! fdatasync journals the new size) or `written` (zeros written and synced first, so every
//! write overwrites allocated blocks and fdatasync only flushes the device cache).
//!
//! Rounds are spaced `--gap-us` apart (the CPU idles in between, as at low load).
//!
//!     cargo run --release -p sluice-bench --example disk_floor -- --repeats 3

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
struct Args {
    /// Rounds per case.
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
    /// Bytes per write (a multiple of 4096).
    #[arg(long, default_value_t = 4096)]
    write_bytes: usize,
    /// Idle time between rounds, in microseconds.
    #[arg(long, default_value_t = 1000)]
    gap_us: u64,
    /// Passes over every case (interleaved, so drifts of a shared machine hit all cases alike).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Directory on the disk to measure (not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

#[derive(Clone, Copy, Debug)]
enum IoPath {
    Uring,
    Blocking,
    Inline,
}

fn main() {
    let args = Args::parse();
    if args.write_bytes == 0 || args.write_bytes % 4096 != 0 {
        eprintln!("disk_floor: --write-bytes must be a positive multiple of 4096");
        std::process::exit(2);
    }
    let ex = match LocalExecutorBuilder::new(Placement::Fixed(0)).make() {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("disk_floor: cannot start a glommio executor: {e}");
            std::process::exit(1);
        }
    };
    match ex.run(run(args)) {
        Ok(()) => {}
        // the reader went away (`| head`): not an error of the measurement
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("disk_floor: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    prime_probe(dir.path()).await?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "# {} rounds of {} B write + fdatasync, {} us apart, per case; times in us",
        args.rounds, args.write_bytes, args.gap_us
    )?;
    for rep in 1..=args.repeats {
        for path in [IoPath::Uring, IoPath::Blocking, IoPath::Inline] {
            for written in [false, true] {
                let h = case(&args, dir.path(), path, written).await?;
                writeln!(
                    out,
                    "repeat {rep} {:8} {:9}: p50 {:5} p90 {:5} p99 {:5} p99.9 {:6} max {:6}",
                    format!("{path:?}").to_lowercase(),
                    if written { "written" } else { "unwritten" },
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.9),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999),
                    h.max()
                )?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// glommio's first DmaFile on a device probes it with a read; give it a non-empty file
/// (see engine/src/quirk.rs).
async fn prime_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join("probe");
    std::fs::write(&probe, vec![1u8; 4096])?;
    std::fs::File::open(&probe)?.sync_all()?;
    let p = OpenOptions::new().read(true).dma_open(&probe).await?;
    p.read_at(0, 4096).await?;
    p.close().await?;
    Ok(())
}

async fn case(
    args: &Args,
    dir: &Path,
    path: IoPath,
    written: bool,
) -> std::io::Result<Histogram<u64>> {
    let file = dir.join("segment");
    let _ = std::fs::remove_file(&file);
    let dma = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&file)
        .await?;
    let total = (args.rounds * args.write_bytes) as u64;
    if written {
        fill_zeros(&dma, total).await?;
    }
    let fd = dma.as_raw_fd();
    let wlen = args.write_bytes;
    let mut h =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(std::io::Error::other)?;
    for i in 0..args.rounds {
        glommio::timer::sleep(Duration::from_micros(args.gap_us)).await;
        let mut buf = dma.alloc_dma_buffer(wlen);
        buf.as_bytes_mut().fill(b'x');
        let pos = (i * wlen) as u64;
        let t = Instant::now();
        match path {
            IoPath::Uring => {
                dma.write_at(buf, pos).await?;
                dma.fdatasync().await?;
            }
            IoPath::Blocking => {
                let addr = buf.as_ptr() as usize;
                // the closure is awaited before `buf` is dropped, so the pointer stays valid
                glommio::executor()
                    .spawn_blocking(move || write_sync(fd, addr as *const u8, wlen, pos))
                    .await?;
                drop(buf);
            }
            IoPath::Inline => write_sync(fd, buf.as_ptr(), wlen, pos)?,
        }
        let _ = h.record(t.elapsed().as_micros() as u64);
    }
    dma.close().await?;
    std::fs::remove_file(&file)?;
    Ok(h)
}

async fn fill_zeros(dma: &DmaFile, total: u64) -> std::io::Result<()> {
    let chunk = 1 << 20;
    let mut pos = 0u64;
    while pos < total {
        dma.write_at(dma.alloc_dma_buffer(chunk), pos).await?;
        pos += chunk as u64;
    }
    dma.fdatasync().await?;
    Ok(())
}

fn write_sync(fd: i32, ptr: *const u8, len: usize, pos: u64) -> std::io::Result<()> {
    // SAFETY: `ptr` points to `len` readable bytes of an aligned DMA buffer the caller keeps
    // alive for the duration of the call; `fd` is an open O_DIRECT file.
    let n = unsafe { libc::pwrite(fd, ptr.cast(), len, pos as libc::off_t) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != len {
        return Err(std::io::Error::other(format!("short write: {n} of {len}")));
    }
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::fdatasync(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
