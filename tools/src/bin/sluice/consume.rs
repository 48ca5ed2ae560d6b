//! `sluice consume TOPIC`: kafka-console-consumer.sh, with a format string.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_tools::consume::{Fetcher, Flow, Format, JsonRecord};
use sluice_tools::leaders::{Leaders, Router};
use sluice_tools::member::{GroupMember, MemberConfig};

use crate::out::{self, CliError};
use crate::Global;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to consume
    topic: Option<String>,
    #[arg(long = "topic", value_name = "TOPIC")]
    topic_flag: Option<String>,
    /// Consume as a member of this consumer group (offsets are committed)
    #[arg(short, long)]
    group: Option<String>,
    /// Only this partition
    #[arg(short, long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Where to start: earliest, latest or an offset (an offset needs --partition)
    #[arg(short, long, conflicts_with = "group")]
    offset: Option<String>,
    /// Start at the earliest offset (with --group: when the group has no committed offset)
    #[arg(long)]
    from_beginning: bool,
    /// Exit after this many messages
    #[arg(short = 'n', long)]
    max_messages: Option<u64>,
    /// Exit when no message arrived for this many milliseconds
    #[arg(long, alias = "timeout-ms", value_name = "MS")]
    timeout: Option<u64>,
    /// Output format: %t topic, %p partition, %o offset, %d timestamp, %k key, %v value,
    /// %K/%V key/value size, %h headers (k=v,...), %% percent; \n \t escapes
    #[arg(short, long, default_value = "%v\\n")]
    format: Format,
    /// Client id (shown as CLIENT-ID in `group describe`)
    #[arg(long, default_value = "sluice-consumer")]
    client_id: String,
}

/// Where partitions without a position start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    At(i64),
}

impl Start {
    fn timestamp(self) -> i64 {
        match self {
            Start::Earliest => -2,
            _ => -1,
        }
    }
}

fn parse_start(a: &ConsumeArgs) -> Result<Start, CliError> {
    match a.offset.as_deref() {
        None if a.from_beginning => Ok(Start::Earliest),
        None => Ok(Start::Latest),
        Some(_) if a.from_beginning => Err(CliError::usage(
            "--from-beginning and --offset cannot be used together",
        )),
        Some("earliest" | "beginning" | "start") => Ok(Start::Earliest),
        Some("latest" | "end") => Ok(Start::Latest),
        Some(n) => {
            let o: i64 = n.parse().map_err(|_| {
                CliError::usage(format!(
                    "--offset must be earliest, latest or a number, not {n:?}"
                ))
            })?;
            if o < 0 {
                return Err(CliError::usage(format!(
                    "--offset must not be negative, got {o}"
                )));
            }
            if a.partition.is_none() {
                return Err(CliError::usage("--offset with a number needs --partition"));
            }
            Ok(Start::At(o))
        }
    }
}

/// Output of the records, text (format string) or JSON lines.
struct Sink {
    out: io::BufWriter<io::StdoutLock<'static>>,
    buf: Vec<u8>,
    json: bool,
    format: Format,
    /// stdout went away (`| head`): stop quietly.
    closed: bool,
}

impl Sink {
    fn write(&mut self, topic: &str, partition: i32, r: &sluice_tools::records::Record<'_>) {
        if self.closed {
            return;
        }
        self.buf.clear();
        if self.json {
            if let Ok(s) = serde_json::to_string(&JsonRecord::new(topic, partition, r)) {
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(b'\n');
            }
        } else {
            self.format.render(&mut self.buf, topic, partition, r);
        }
        if self.out.write_all(&self.buf).is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Stop conditions shared by both modes.
struct Limits {
    max: Option<u64>,
    timeout: Option<Duration>,
    stop: Arc<AtomicBool>,
    seen: u64,
    last_record: Instant,
}

impl Limits {
    fn done(&self, sink: &Sink) -> bool {
        sink.closed
            || self.stop.load(Ordering::Relaxed)
            || self.max.is_some_and(|m| self.seen >= m)
            || self
                .timeout
                .is_some_and(|t| self.last_record.elapsed() >= t)
    }
}

pub fn run(g: &Global, a: ConsumeArgs) -> Result<(), CliError> {
    let topic = out::one_topic(a.topic.clone(), a.topic_flag.clone())?;
    let start = parse_start(&a)?;
    if a.max_messages == Some(0) {
        return Err(CliError::usage("--max-messages must be at least 1"));
    }
    let mut client = out::connect(g, &a.client_id)?;
    let parts = out::topic_partitions(&mut client, &topic)?;
    // in a cluster, each partition is read from its leader (found in Metadata, again whenever
    // it moves); a single broker serves everything over this connection
    let mut router = Router::new(Leaders::new(client, &topic, &a.client_id)?);
    if let Some(p) = a.partition {
        out::check_partition(&topic, p, parts.len())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mut sink = Sink {
        out: io::BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        buf: Vec::with_capacity(1024),
        json: g.json(),
        format: a.format.clone(),
        closed: false,
    };
    let mut limits = Limits {
        max: a.max_messages,
        timeout: a.timeout.map(Duration::from_millis),
        stop,
        seen: 0,
        last_record: Instant::now(),
    };
    let result = match &a.group {
        Some(group) => run_group(&mut router, group, &a, start, &mut sink, &mut limits),
        None => {
            let chosen: Vec<i32> = match a.partition {
                Some(p) => vec![p],
                None => parts.iter().map(|p| p.partition).collect(),
            };
            run_assigned(&mut router, &chosen, start, &mut sink, &mut limits)
        }
    };
    sink.flush()?;
    let _ = writeln!(
        io::stderr(),
        "Processed a total of {} messages",
        limits.seen
    );
    result
}

/// Positions for `parts`: committed ones where given, else `start`.
fn resolve_positions(
    router: &mut Router,
    parts: &[i32],
    start: Start,
    committed: &BTreeMap<i32, i64>,
) -> Result<Vec<(i32, i64)>, CliError> {
    let missing: Vec<i32> = parts
        .iter()
        .copied()
        .filter(|p| !committed.contains_key(p))
        .collect();
    let mut out: Vec<(i32, i64)> = committed
        .iter()
        .filter(|(p, _)| parts.contains(p))
        .map(|(p, o)| (*p, *o))
        .collect();
    if !missing.is_empty() {
        match start {
            Start::At(o) => out.extend(missing.iter().map(|p| (*p, o))),
            s => out.extend(router.list_offsets(&missing, s.timestamp())?),
        }
    }
    Ok(out)
}

fn poll_once(
    router: &mut Router,
    fetcher: &mut Fetcher,
    sink: &mut Sink,
    limits: &mut Limits,
) -> Result<Vec<(i32, i64, i64)>, CliError> {
    let topic = fetcher.topic.clone();
    let max = limits.max;
    let mut seen = limits.seen;
    let polled = fetcher.poll_routed(router, |p, r| {
        sink.write(&topic, p, r);
        seen += 1;
        if max.is_some_and(|m| seen >= m) || sink.closed {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    limits.seen = seen;
    if polled.records > 0 {
        limits.last_record = Instant::now();
    }
    sink.flush()?;
    Ok(polled.out_of_range)
}

fn run_assigned(
    router: &mut Router,
    parts: &[i32],
    start: Start,
    sink: &mut Sink,
    limits: &mut Limits,
) -> Result<(), CliError> {
    let topic = router.leaders.topic().to_string();
    let mut fetcher = Fetcher::new(&topic);
    for (p, o) in resolve_positions(router, parts, start, &BTreeMap::new())? {
        fetcher.seek(p, o);
    }
    while !limits.done(sink) {
        for (p, log_start, log_end) in poll_once(router, &mut fetcher, sink, limits)? {
            if let Start::At(o) = start {
                return Err(CliError::failed(format!(
                    "offset {o} is out of range for {topic}-{p} (log start {log_start}, log end \
                     {log_end})"
                )));
            }
            let reset = if start == Start::Earliest {
                log_start
            } else {
                log_end
            };
            fetcher.seek(p, reset);
        }
    }
    Ok(())
}

fn run_group(
    router: &mut Router,
    group: &str,
    a: &ConsumeArgs,
    start: Start,
    sink: &mut Sink,
    limits: &mut Limits,
) -> Result<(), CliError> {
    let topic = router.leaders.topic().to_string();
    let cfg = MemberConfig::new(group, std::slice::from_ref(&topic), &a.client_id);
    let mut member = GroupMember::new(router.leaders.meta(), cfg)?;
    let result = consume_in_group(router, &mut member, &topic, start, sink, limits);
    // leave even after an error, so that the group rebalances at once
    let left = member.leave();
    result?;
    left?;
    Ok(())
}

fn consume_in_group(
    router: &mut Router,
    member: &mut GroupMember,
    topic: &str,
    start: Start,
    sink: &mut Sink,
    limits: &mut Limits,
) -> Result<(), CliError> {
    let mut fetcher = Fetcher::new(topic);
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let commit = |member: &mut GroupMember,
                  fetcher: &Fetcher,
                  committed: &mut BTreeMap<i32, i64>|
     -> Result<(), CliError> {
        let changed: Vec<(String, i32, i64)> = fetcher
            .positions()
            .iter()
            .filter(|(p, o)| committed.get(p) != Some(o))
            .map(|(p, o)| (topic.to_string(), *p, *o))
            .collect();
        if !changed.is_empty() && member.commit(&changed)? {
            for (_, p, o) in changed {
                committed.insert(p, o);
            }
        }
        Ok(())
    };
    loop {
        if member.needs_rejoin() {
            // commit what was consumed in the old generation (refused if it is already over)
            commit(member, &fetcher, &mut committed)?;
            let assignment = member.rejoin(router.leaders.meta())?;
            let parts: Vec<i32> = assignment
                .iter()
                .filter(|(t, _)| t == topic)
                .flat_map(|(_, ps)| ps.iter().copied())
                .collect();
            let wanted = vec![(topic.to_string(), parts.clone())];
            committed = member
                .committed(&wanted)?
                .into_iter()
                .filter(|c| c.offset >= 0 && c.topic == topic)
                .map(|c| (c.partition, c.offset))
                .collect();
            fetcher.clear();
            for (p, o) in resolve_positions(router, &parts, start, &committed)? {
                fetcher.seek(p, o);
            }
        }
        if limits.done(sink) {
            break;
        }
        if fetcher.positions().is_empty() {
            // more members than partitions: nothing to read until the next rebalance
            std::thread::sleep(Duration::from_millis(200));
        } else {
            for (p, log_start, log_end) in poll_once(router, &mut fetcher, sink, limits)? {
                let reset = if start == Start::Earliest {
                    log_start
                } else {
                    log_end
                };
                fetcher.seek(p, reset);
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            commit(member, &fetcher, &mut committed)?;
            last_commit = Instant::now();
        }
    }
    commit(member, &fetcher, &mut committed)
}
