//! What the power-cut hooks of `sluice_engine::io` cost when no recorder is installed (every
//! production run): the hook check alone (a relaxed atomic load), and a 4 KiB O_DIRECT write
//! through `io::dma_write_rc` against the same write straight through glommio, interleaved in
//! one run. `cargo run --release -p sluice-engine --example io_hook_cost [DIR]` (DIR on the
//! disk to measure; default: a directory under the system temp dir).

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_engine::io;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sluice-hook-cost-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).expect("dir");
    let n = 100_000_000u64;
    let t = Instant::now();
    let mut on = 0u64;
    for _ in 0..n {
        on += u64::from(black_box(io::recording()));
    }
    let check_ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(on, 0);
    let d = dir.clone();
    let (raw, hooked) = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            sluice_engine::prime_dma_probe(&d).await.expect("probe");
            let f = io::dma_open(&d.join("w.log"), true).await.expect("open");
            let mut buf = glommio::allocate_dma_buffer(4096);
            buf.as_bytes_mut().fill(7);
            let buf = Rc::new(buf);
            let (mut raw, mut hooked) = (Duration::ZERO, Duration::ZERO);
            for i in 0..40_000u64 {
                let pos = (i % 256) * 4096;
                let t = Instant::now();
                if i % 2 == 0 {
                    f.write_rc_at(buf.clone(), pos).await.expect("write");
                    raw += t.elapsed();
                } else {
                    io::dma_write_rc(&f, buf.clone(), pos).await.expect("write");
                    hooked += t.elapsed();
                }
            }
            let _ = f.close().await;
            (raw / 20_000, hooked / 20_000)
        })
        .expect("executor")
        .join()
        .expect("join");
    let _ = std::fs::remove_dir_all(&dir);
    println!("hook check (no recorder): {check_ns:.2} ns");
    println!(
        "4 KiB O_DIRECT write: raw glommio {:.2} us, through io::dma_write_rc {:.2} us",
        raw.as_secs_f64() * 1e6,
        hooked.as_secs_f64() * 1e6
    );
}
