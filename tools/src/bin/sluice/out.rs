//! Errors, connections and output helpers shared by the subcommands.

use std::io::{self, Write};

use serde::Serialize;
use sluice_tools::client::PartitionInfo;
use sluice_tools::conn::ConnError;
use sluice_tools::consume::ConsumeError;
use sluice_tools::groups::LagRow;
use sluice_tools::produce::ProduceError;
use sluice_tools::{Client, ClientError};
use thiserror::Error;

use crate::Global;

#[derive(Debug, Error)]
pub enum CliError {
    /// Bad arguments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else that failed (exit code 1).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn failed(msg: impl Into<String>) -> CliError {
        CliError::Failed(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }
}

impl From<ProduceError> for CliError {
    fn from(e: ProduceError) -> CliError {
        match e {
            ProduceError::Client(c) => CliError::Client(c),
            ProduceError::Conn(c) => CliError::Client(ClientError::Conn(c)),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<ConsumeError> for CliError {
    fn from(e: ConsumeError) -> CliError {
        match e {
            ConsumeError::Client(c) => CliError::Client(c),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// The one-line text of an error.
pub fn message(e: &CliError) -> String {
    match e {
        CliError::Client(ClientError::Conn(ConnError::Connect { addr, source })) => {
            format!("cannot connect to broker {addr}: {source} (check --bootstrap-server)")
        }
        CliError::Client(ClientError::Conn(ConnError::Resolve(a))) => {
            format!("cannot resolve broker address {a:?} (check --bootstrap-server)")
        }
        CliError::Client(ClientError::Conn(ConnError::Io(io)))
            if matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            "the broker did not answer in time".to_string()
        }
        CliError::Client(ClientError::Conn(ConnError::Closed)) => {
            "the broker closed the connection (is it a Kafka broker? a TLS or SASL listener \
             needs security.protocol in --command-config or -X)"
                .to_string()
        }
        other => other.to_string(),
    }
    .replace('\n', " ")
}

pub fn print_warning(w: &str) {
    let _ = writeln!(io::stderr(), "sluice: warning: {w}");
}

pub fn print_error(e: &CliError) {
    let _ = writeln!(io::stderr(), "sluice: error: {}", message(e));
}

/// The first line of a clap error, without its "error: " prefix; when it ends in a colon
/// (`the following required arguments were not provided:`), with the indented lines it
/// introduces.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    if first.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if !listed.is_empty() {
            return format!("{first} {} (see --help)", listed.join(", "));
        }
    }
    format!("{first} (see --help)")
}

/// Connects to the first reachable bootstrap server, with the security of --command-config
/// and -X.
pub fn connect(g: &Global, client_id: &str) -> Result<Client, CliError> {
    let mut last = None;
    for server in g
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match Client::connect_secure(server, client_id, &g.security) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => CliError::Client(e),
        None => CliError::usage("--bootstrap-server is empty"),
    })
}

/// The partitions of `topic`, or the unknown-topic error.
pub fn topic_partitions(client: &mut Client, topic: &str) -> Result<Vec<PartitionInfo>, CliError> {
    client
        .partitions(topic)?
        .ok_or_else(|| unknown_topic(topic))
}

pub fn unknown_topic(topic: &str) -> CliError {
    CliError::failed(format!("topic '{topic}' does not exist"))
}

/// Checks a partition number against a topic's partition count.
pub fn check_partition(topic: &str, partition: i32, count: usize) -> Result<(), CliError> {
    if partition >= 0 && (partition as usize) < count {
        return Ok(());
    }
    Err(CliError::failed(format!(
        "partition {partition} is out of range: topic '{topic}' has {count} partition{} (0..{})",
        if count == 1 { "" } else { "s" },
        count.saturating_sub(1)
    )))
}

/// One topic from a positional argument or `--topic` (Kafka's spelling).
pub fn one_topic(positional: Option<String>, flag: Option<String>) -> Result<String, CliError> {
    match (positional, flag) {
        (Some(a), Some(b)) if a != b => Err(CliError::usage(format!(
            "two different topics given: {a:?} and --topic {b:?}"
        ))),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(CliError::usage("a topic is required (TOPIC or --topic)")),
    }
}

/// Topics from positional arguments and `--topic` flags.
pub fn topics(mut positional: Vec<String>, flags: Vec<String>) -> Vec<String> {
    for t in flags {
        if !positional.contains(&t) {
            positional.push(t);
        }
    }
    positional
}

/// Parses `key=value`.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Prints `v` as pretty JSON.
pub fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError::failed(e.to_string()))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// A table whose columns are as wide as their widest cell, separated by two spaces (rpk's
/// style).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Writes text to stdout.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `-` for a missing value.
pub fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The columns of one partition's lag that `group describe` and `top` both print.
pub const LAG_HEADERS: [&str; 7] = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
];

/// One lag row as the cells under [`LAG_HEADERS`] (`-` for what is unknown).
pub fn lag_cells(r: &LagRow) -> Vec<String> {
    vec![
        r.group.clone(),
        dash(r.topic.as_ref()),
        dash(r.partition),
        dash(r.current_offset),
        dash(r.log_end_offset),
        dash(r.lag),
        dash(r.consumer_id.as_ref()),
    ]
}
