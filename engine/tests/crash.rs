//! Crash test: a child process appends to a partition log and reports every batch whose
//! `wait_durable(.., Synced)` returned; the parent kills it with SIGKILL at a random moment,
//! reopens the log and checks that every acknowledged batch is there, intact, at its offset,
//! and that the log is a contiguous run of valid batches from offset 0 with nothing after it.
//! Several kill cycles run against the same directory: each child recovers what the previous
//! one left and appends after it, so acknowledged offsets accumulate across cycles.
//!
//! What this can and cannot show: SIGKILL ends the process, not the machine. Data the kernel
//! accepted (page cache, device cache) survives it whether or not it was fdatasync'd, so this
//! test checks acknowledged batches against the strongest failure we can produce without
//! cutting power. It does exercise recovery from every state a process can die in: mid-write,
//! mid-roll, mid-seal, mid-metadata-update, mid-recovery of the previous crash.
//!
//! The child is this same test binary, re-executed with `SLUICE_CRASH_CHILD=<dir>` and the exact
//! test name, so it runs only this test, which sees the variable and becomes the writer.
//! Reproduce a run with `SLUICE_CRASH_SEED=<seed printed by the test>`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{copy_dir, log_files_len, normalized, padded_batch, read_all, run};
use sluice_engine::batch::BatchHeader;
use sluice_engine::{AppendOptions, Durability, LogConfig, LogEnv, Offset, PartitionLog};

const TEST_NAME: &str = "sigkill_cycles_keep_every_acknowledged_batch";
const CHILD_ENV: &str = "SLUICE_CRASH_CHILD";
const TAG_ENV: &str = "SLUICE_CRASH_TAG_BASE";
const SEED_ENV: &str = "SLUICE_CRASH_SEED";
const CYCLES: u64 = 9;
/// Concurrent appenders in the child (their Synced waits share fdatasyncs: group commit).
const APPENDERS: u64 = 4;
/// Tags of cycle `c` are `c * TAGS_PER_CYCLE + ..`; a tag identifies one batch for good.
const TAGS_PER_CYCLE: u64 = 1 << 32;
/// Batch timestamps are `T0 + tag`, so a stored batch names its tag.
const T0: i64 = 1_600_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        retention_ms: None,
        preallocate_bytes: 64 * 1024,
        hot_cache_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

/// The batch with `tag`: 1-5 records of 0-2999 byte values, all derived from the tag.
fn crash_batch(tag: u64) -> Vec<u8> {
    let count = 1 + (tag % 5) as usize;
    let value_len = (tag.wrapping_mul(7919) % 3000) as usize;
    padded_batch(tag, count, value_len, T0 + tag as i64)
}

/// xorshift64*, enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[test]
fn sigkill_cycles_keep_every_acknowledged_batch() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_writer(PathBuf::from(dir));
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        .max(1);
    println!("crash test seed {seed} (rerun with {SEED_ENV}={seed})");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("crash-0");
    // every acknowledged batch so far: base offset -> (last offset, tag)
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut recovered_end = 0u64;
    let mut kills_after_acks = 0;
    let mut writing_cycles = 0;
    let mut kills_during_open = 0;
    // when the last child said "opening" and "ready", measured from its spawn
    let mut open_window = (Duration::from_millis(20), Duration::from_millis(60));
    for cycle in 0..CYCLES {
        // most kills land while batches are being acknowledged; every third one aims at the
        // child's own recovery of the previous crash (the window the last child took to open)
        let kill = if cycle % 3 == 2 {
            let (lo, hi) = open_window;
            let (lo, hi) = (lo.as_micros() as u64, hi.as_micros() as u64);
            Kill::FromSpawn(Duration::from_micros(rng.between(lo, hi.max(lo) + 2_000)))
        } else {
            writing_cycles += 1;
            Kill::AfterReady(Duration::from_millis(rng.between(50, 400)))
        };
        let out = crash_cycle(&dir, cycle, kill);
        // The child recovered the files the previous child left, the parent checked a copy of
        // them taken right after that child was reaped. O_DIRECT writes the killed process had
        // in flight can still land after it is reaped (seen here: the tail page of the active
        // segment changing with no process running), so the child may find a few more valid
        // batches than the copy held, never fewer. Such late writes only add batches after the
        // valid prefix: the partial page they rewrite carries the same bytes as before.
        if let Some((_, ready_end)) = out.ready {
            assert!(
                ready_end >= recovered_end,
                "cycle {cycle}: the child recovered log end {ready_end}, below the \
                 {recovered_end} the parent's check recovered"
            );
            if ready_end > recovered_end {
                println!(
                    "cycle {cycle}: the child recovered {} offsets more than the copy held \
                     (writes of the killed child landed after it was reaped)",
                    ready_end - recovered_end
                );
            }
        }
        if let (Some(o), Some((r, _))) = (out.opening, out.ready) {
            open_window = (o, r);
        }
        let moment = match (out.opening, out.ready) {
            (None, _) => "before opening the log",
            (Some(_), None) => {
                kills_during_open += 1;
                "while opening (recovering) the log"
            }
            (Some(_), Some(_)) => "while appending",
        };
        let ready_end = out.ready.map_or(0, |r| r.1);
        for (base, last, tag) in &out.acks {
            assert!(
                *base >= ready_end,
                "cycle {cycle}: ack {base} below the log end {ready_end} the child recovered"
            );
            let prev = acked.insert(*base, (*last, *tag));
            assert!(
                prev.is_none(),
                "cycle {cycle}: offset {base} acknowledged twice"
            );
        }
        if !out.acks.is_empty() && matches!(kill, Kill::AfterReady(_)) {
            kills_after_acks += 1;
        }
        // check a copy, so that the next child recovers the crashed files itself
        let copy = tmp.path().join(format!("check-{cycle}"));
        copy_dir(&dir, &copy);
        let (end, segments) = verify(&copy, &acked, &format!("cycle {cycle}"));
        println!(
            "cycle {cycle}: {kill:?}, killed {moment}, {} acks this cycle, {} in total, \
             log end {end}, {segments} segments",
            out.acks.len(),
            acked.len()
        );
        assert!(end >= recovered_end, "cycle {cycle}: the log only grows");
        recovered_end = end;
        std::fs::remove_dir_all(&copy).expect("remove copy");
    }
    println!("{kills_during_open} kills landed while a child was opening the log");
    assert!(
        kills_after_acks * 2 >= writing_cycles,
        "the kills landed while batches were being acknowledged \
         ({kills_after_acks} of {writing_cycles} cycles)"
    );
    // the real directory: recovered in place, then closed cleanly and reopened
    let (end, segments) = verify(&dir, &acked, "final");
    assert!(end >= recovered_end, "final: {end} >= {recovered_end}");
    assert!(segments >= 2, "segments rolled during the run: {segments}");
    let (again, _) = verify(&dir, &acked, "after clean close");
    assert_eq!(again, end, "a clean close and reopen keeps the log end");
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the child reported that it recovered the log and started appending.
    AfterReady(Duration),
    /// This long after spawning it, ready or not.
    FromSpawn(Duration),
}

/// What one child got done before it was killed.
struct Outcome {
    /// When it said it was about to open the log (since its spawn).
    opening: Option<Duration>,
    /// When it said it had opened the log, and the log end offset it recovered.
    ready: Option<(Duration, u64)>,
    /// (base offset, last offset, tag) of each batch it acknowledged.
    acks: Vec<(u64, u64, u64)>,
}

/// Runs one child until the kill.
fn crash_cycle(dir: &Path, cycle: u64, kill: Kill) -> Outcome {
    let exe = std::env::current_exe().expect("current exe");
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(TAG_ENV, (cycle * TAGS_PER_CYCLE).to_string())
        .env_remove(SEED_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    // complete lines only: a line cut by the kill was never a complete acknowledgement
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => {
                    let msg = (spawned.elapsed(), line.trim_end().to_string());
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let mut lines = Vec::new();
    match kill {
        Kill::FromSpawn(delay) => std::thread::sleep(delay),
        Kill::AfterReady(delay) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(msg) => {
                        let ready = msg.1.starts_with("ready ");
                        lines.push(msg);
                        if ready {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = child.kill();
                        let status = child.wait().expect("wait child");
                        panic!("cycle {cycle}: child never got ready ({e:?}, exit {status})");
                    }
                }
            }
            std::thread::sleep(delay);
        }
    }
    if let Some(status) = child.try_wait().expect("poll child") {
        panic!("cycle {cycle}: child exited before the kill: {status}");
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "cycle {cycle}: killed"
        );
    }
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    let mut out = Outcome {
        opening: None,
        ready: None,
        acks: Vec::new(),
    };
    for (at, line) in &lines {
        if line == "opening" {
            out.opening = Some(*at);
        } else if let Some(rest) = line.strip_prefix("ready ") {
            assert!(
                out.opening.is_some() && out.ready.is_none(),
                "cycle {cycle}: {line}"
            );
            out.ready = Some((*at, rest.parse::<u64>().expect("ready line")));
        } else if let Some(rest) = line.strip_prefix("ack ") {
            assert!(out.ready.is_some(), "cycle {cycle}: acks come after ready");
            let f: Vec<u64> = rest
                .split(' ')
                .map(|x| x.parse().expect("ack field"))
                .collect();
            assert_eq!(f.len(), 3, "ack line {line:?}");
            out.acks.push((f[0], f[1], f[2]));
        }
    }
    out
}

/// Opens the log in `dir` (recovering it), checks it against the acknowledgements and returns
/// (log end offset, segment count). Closes it cleanly.
fn verify(dir: &Path, acked: &BTreeMap<u64, (u64, u64)>, what: &str) -> (u64, usize) {
    let dir = dir.to_path_buf();
    let acked = acked.clone();
    let what = what.to_string();
    run(move || async move {
        let log = PartitionLog::open(&dir, config(), LogEnv::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let o = log.offsets();
        assert_eq!(o.log_start, Offset(0), "{what}");
        assert_eq!(o.high_watermark, o.log_end, "{what}");
        assert_eq!(o.synced, o.log_end, "{what}");
        // read_all also checks that every read is batch aligned and that the reads end exactly
        // at the high watermark
        let got = read_all(&log, Offset(0), 256 * 1024).await;
        let mut next = 0u64;
        let mut tags = HashSet::new();
        let mut stored: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut bytes = 0u64;
        for (base, b) in &got {
            let h = BatchHeader::parse(b).expect("header");
            assert_eq!(*base, next, "{what}: offsets are contiguous");
            let tag = (h.base_timestamp.get() - T0) as u64;
            assert!(tags.insert(tag), "{what}: tag {tag} stored twice");
            assert!(
                normalized(b) == crash_batch(tag),
                "{what}: batch at {base} (tag {tag}) is intact"
            );
            let last = base + h.last_offset_delta.get() as u64;
            stored.insert(*base, (last, tag));
            next = last + 1;
            bytes += b.len() as u64;
        }
        assert_eq!(Offset(next), o.log_end, "{what}: batches reach the log end");
        assert_eq!(
            log.size_bytes(),
            bytes,
            "{what}: nothing beyond the valid prefix"
        );
        assert_eq!(
            log_files_len(&dir),
            bytes,
            "{what}: recovery truncated the files to the valid prefix"
        );
        for (base, (last, tag)) in &acked {
            assert_eq!(
                stored.get(base),
                Some(&(*last, *tag)),
                "{what}: acknowledged batch {base}..={last} (tag {tag}) survives at its offset"
            );
        }
        let segments = log.segment_count();
        log.close().await.expect("close");
        (next, segments)
    })
}

/// The child: recover the log, then append forever from several tasks, acknowledging on stdout
/// each batch whose fdatasync completed. Never returns; the parent kills it.
fn child_writer(dir: PathBuf) -> ! {
    let tag_base: u64 = std::env::var(TAG_ENV)
        .expect("tag base")
        .parse()
        .expect("tag base number");
    run(move || async move {
        say("opening");
        let log = Rc::new(
            PartitionLog::open(&dir, config(), LogEnv::default())
                .await
                .expect("child open"),
        );
        say(&format!("ready {}", log.offsets().log_end.get()));
        let mut tasks = Vec::new();
        for a in 0..APPENDERS {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut k = 0u64;
                loop {
                    // 1-3 batches per fdatasync wait
                    let mut infos = Vec::new();
                    for _ in 0..1 + (k + a) % 3 {
                        let tag = tag_base + a + k * APPENDERS;
                        k += 1;
                        let info = log
                            .append(&crash_batch(tag), AppendOptions::default())
                            .await
                            .expect("child append");
                        infos.push((info, tag));
                    }
                    let last = infos.last().expect("appended").0.last_offset;
                    log.wait_durable(last, Durability::Synced)
                        .await
                        .expect("child sync");
                    for (info, tag) in infos {
                        say(&format!(
                            "ack {} {} {tag}",
                            info.base_offset.get(),
                            info.last_offset.get()
                        ));
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    unreachable!("the child writer appends until it is killed");
}

/// One complete line on stdout, flushed before returning.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // a leading newline keeps the line apart from libtest's "test <name> ... "
    out.write_all(format!("\n{line}\n").as_bytes())
        .expect("child stdout");
    out.flush().expect("flush child stdout");
}
