//! `sluice top`: live numbers of the broker (or cluster), refreshed every `--interval-ms`: per
//! topic the partitions, summed log end offsets, messages/s, bytes stored and their growth per
//! second; per consumer group its state, members and lag (per partition with `--partitions`).
//! The sampling and rates are `sluice_tools::top`.
//!
//! On a terminal the view is redrawn in place; otherwise every refresh prints one frame (text)
//! or one JSON object per line (`--output json`). Ctrl-C (or SIGTERM) stops it with exit code
//! 0; a bootstrap broker that goes away (and cannot be reached again) is a one-line error with
//! exit code 1.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_tools::top::{frame, Frame, Sampler, Watch};
use sluice_tools::ClientError;

use crate::admin::human;
use crate::out::{self, dash, CliError};
use crate::Global;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Milliseconds between refreshes
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = parse_interval)]
    interval_ms: u64,
    /// Stop after N refreshes (0: until Ctrl-C)
    #[arg(long, default_value_t = 0, value_name = "N")]
    iterations: u64,
    /// Also show each group's lag per partition
    #[arg(long)]
    partitions: bool,
    /// Only these topics (repeatable; default: all but the internal ones)
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Only these consumer groups (repeatable; default: all)
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// Also the internal topics (__consumer_offsets, __transaction_state)
    #[arg(long)]
    include_internal: bool,
}

fn parse_interval(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(ms) if ms >= 1 => Ok(ms),
        _ => Err("the interval must be a number of milliseconds, at least 1".into()),
    }
}

/// Pauses are cut into steps this long to notice Ctrl-C.
const STEP: Duration = Duration::from_millis(50);

pub fn run(g: &Global, a: TopArgs) -> Result<(), CliError> {
    let client = out::connect(g, "sluice-top")?;
    let mut sampler = Sampler::new(
        client,
        "sluice-top",
        Watch {
            topics: a.topics.clone(),
            groups: a.groups.clone(),
            include_internal: a.include_internal,
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let tty = io::stdout().is_terminal();
    let interval = Duration::from_millis(a.interval_ms);
    let mut prev = None;
    let mut shown = 0u64;
    loop {
        let started = Instant::now();
        let sample = match sample(&mut sampler) {
            Ok(s) => s,
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let f = frame(prev.as_ref(), &sample, a.partitions);
        let text = if g.json() {
            let mut line =
                serde_json::to_string(&f).map_err(|e| CliError::failed(e.to_string()))?;
            line.push('\n');
            line
        } else if tty {
            redraw(&render(&f, &sampler, &a))
        } else {
            format!("{}\n", render(&f, &sampler, &a))
        };
        if !write_frame(&text)? {
            return Ok(()); // stdout closed (`| head`)
        }
        prev = Some(sample);
        shown += 1;
        if a.iterations != 0 && shown >= a.iterations {
            return Ok(());
        }
        let next = started + interval;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(STEP.min(next.saturating_duration_since(Instant::now())));
        }
    }
}

/// One sample; after a connection error the bootstrap broker is connected to again once, and
/// when that fails too, the one-line error says so.
fn sample(sampler: &mut Sampler) -> Result<sluice_tools::top::Sample, CliError> {
    match sampler.sample() {
        Ok(s) => Ok(s),
        Err(ClientError::Conn(first)) => {
            let addr = sampler.addr();
            if let Err(e) = sampler.reconnect() {
                return Err(CliError::failed(format!(
                    "lost the connection to broker {addr} ({first}) and could not reconnect: {}",
                    out::message(&CliError::Client(e))
                )));
            }
            sampler.sample().map_err(|e| {
                CliError::failed(format!(
                    "lost the connection to broker {addr} ({first}), and after reconnecting: {}",
                    out::message(&CliError::Client(e))
                ))
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a frame; `false` when stdout is closed.
fn write_frame(text: &str) -> Result<bool, CliError> {
    let mut o = io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The frame drawn over the previous one: cursor home, each line cleared to its end, the rest
/// of the screen cleared.
fn redraw(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 64);
    s.push_str("\x1b[H");
    for line in text.lines() {
        s.push_str(line);
        s.push_str("\x1b[K\n");
    }
    s.push_str("\x1b[J");
    s
}

/// HH:MM:SS (UTC) of epoch milliseconds.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn bytes_rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) => {
            let sign = if v < 0.0 { "-" } else { "" };
            format!("{sign}{}/s", human(v.abs().round() as i64))
        }
    }
}

/// The text of one frame.
fn render(f: &Frame, sampler: &Sampler, a: &TopArgs) -> String {
    let mut s = format!(
        "sluice top  {}  {} UTC  every {} ms  (Ctrl-C to quit)\n\n",
        sampler.addr(),
        clock(f.time_ms),
        a.interval_ms
    );
    if f.topics.is_empty() {
        s.push_str("(no topics)\n");
    } else {
        let rows: Vec<Vec<String>> = f
            .topics
            .iter()
            .map(|t| {
                vec![
                    t.topic.clone(),
                    t.partitions.to_string(),
                    dash(t.end_offset),
                    rate(t.messages_per_sec),
                    t.bytes.map_or_else(|| "-".into(), human),
                    bytes_rate(t.bytes_per_sec),
                ]
            })
            .collect();
        s.push_str(&out::table(
            &[
                "TOPIC",
                "PARTITIONS",
                "END-OFFSET",
                "MSG/S",
                "STORED",
                "BYTES/S",
            ],
            &rows,
        ));
    }
    s.push('\n');
    if f.groups.is_empty() {
        s.push_str("(no consumer groups)\n");
    } else {
        let rows: Vec<Vec<String>> = f
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.group.clone(),
                    g.state.clone(),
                    g.members.to_string(),
                    dash(g.lag),
                ]
            })
            .collect();
        s.push_str(&out::table(&["GROUP", "STATE", "MEMBERS", "LAG"], &rows));
    }
    if a.partitions {
        let rows: Vec<Vec<String>> = f
            .groups
            .iter()
            .flat_map(|g| g.partitions.iter().flatten())
            .map(out::lag_cells)
            .collect();
        if !rows.is_empty() {
            s.push('\n');
            s.push_str(&out::table(&out::LAG_HEADERS, &rows));
        }
    }
    for e in &f.errors {
        s.push_str(&format!("\n! {}", e.replace('\n', " ")));
    }
    if !f.errors.is_empty() {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_rates() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(1_700_000_000_000), "22:13:20");
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(12.345)), "12.3");
        assert_eq!(bytes_rate(Some(2048.0)), "2.0 KiB/s");
        assert_eq!(bytes_rate(Some(-100.0)), "-100 B/s");
    }

    #[test]
    fn redraw_clears_each_line_and_below() {
        assert_eq!(redraw("a\nb\n"), "\x1b[Ha\x1b[K\nb\x1b[K\n\x1b[J");
    }
}
