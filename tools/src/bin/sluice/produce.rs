//! `sluice produce TOPIC`: kafka-console-producer.sh. One message per line of stdin.

use std::io::{self, BufRead};
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use sluice_tools::produce::{OutRecord, Producer, ProducerConfig};
use sluice_tools::Compression;

use crate::out::{self, parse_kv, CliError};
use crate::Global;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to produce to
    topic: Option<String>,
    #[arg(long = "topic", value_name = "TOPIC")]
    topic_flag: Option<String>,
    /// Split each line at the first SEP into key and value (lines without it are an error)
    #[arg(long, alias = "separator", value_name = "SEP")]
    key_separator: Option<String>,
    /// The same key for every message
    #[arg(short, long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Header added to every message, key=value (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_kv)]
    headers: Vec<(String, String)>,
    /// Send every message to this partition (default: by key, else sticky round-robin)
    #[arg(short, long)]
    partition: Option<i32>,
    /// Acknowledgements: all (-1), 1 or 0
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_negative_numbers = true)]
    acks: i16,
    /// Batch compression: none, gzip, snappy, lz4, zstd
    #[arg(short = 'z', long, default_value = "none")]
    compression: Compression,
    /// How long to wait for more lines before sending a partial batch (ms)
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Bytes per partition batch (Kafka's batch.size)
    #[arg(long, default_value_t = 16384)]
    batch_size: usize,
    /// Create the topic with the broker's defaults when it does not exist
    #[arg(long)]
    create_topic: bool,
    /// kafka-console-producer.sh properties: parse.key=true, key.separator=SEP
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_kv)]
    properties: Vec<(String, String)>,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => Err(format!("acks must be all, -1, 0 or 1, not {other:?}")),
    }
}

/// The key separator from --key-separator or Kafka's parse.key/key.separator properties.
fn separator(a: &ProduceArgs) -> Result<Option<Vec<u8>>, CliError> {
    let mut parse_key = false;
    let mut sep = "\t".to_string();
    for (k, v) in &a.properties {
        match k.as_str() {
            "parse.key" => parse_key = v == "true",
            "key.separator" => sep = v.clone(),
            other => {
                return Err(CliError::usage(format!(
                    "unsupported --property {other} (parse.key, key.separator)"
                )))
            }
        }
    }
    let sep = match &a.key_separator {
        Some(s) => Some(s.clone()),
        None if parse_key => Some(sep),
        None => None,
    };
    match sep {
        Some(s) if s.is_empty() => Err(CliError::usage("the key separator must not be empty")),
        Some(s) => Ok(Some(s.into_bytes())),
        None => Ok(None),
    }
}

fn split_key(line: &[u8], sep: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((line[..at].to_vec(), line[at + sep.len()..].to_vec()))
}

pub fn run(g: &Global, a: ProduceArgs) -> Result<(), CliError> {
    let topic = out::one_topic(a.topic.clone(), a.topic_flag.clone())?;
    let sep = separator(&a)?;
    if a.batch_size == 0 {
        return Err(CliError::usage("--batch-size must be at least 1"));
    }
    let mut client = out::connect(g, "sluice-producer")?;
    let count = match client.partitions(&topic)? {
        Some(p) => p.len(),
        None if a.create_topic => {
            client.create_topic(&topic, -1, -1, &[])?;
            out::topic_partitions(&mut client, &topic)?.len()
        }
        None => {
            return Err(CliError::failed(format!(
                "topic '{topic}' does not exist (create it with `sluice topic create {topic}` or \
                 pass --create-topic)"
            )))
        }
    };
    if let Some(p) = a.partition {
        out::check_partition(&topic, p, count)?;
    }
    let mut cfg = ProducerConfig::new(&topic);
    cfg.acks = a.acks;
    cfg.compression = a.compression;
    cfg.batch_bytes = a.batch_size;
    let mut producer = Producer::new(client, cfg, count as u32)?;
    let headers: Vec<(String, Option<Vec<u8>>)> = a
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone().into_bytes())))
        .collect();

    // stdin is read on a thread of its own so that a quiet terminal still gets its lines sent
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4096);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut r = stdin.lock();
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        if tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
    let linger = Duration::from_millis(a.linger_ms);
    let mut line_no = 0u64;
    loop {
        let line = match rx.recv_timeout(linger) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(CliError::failed(format!("reading stdin: {e}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                producer.flush()?;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        line_no += 1;
        let (key, value) = match &sep {
            Some(sep) => match split_key(&line, sep) {
                Some((k, v)) => (Some(k), v),
                None => {
                    return Err(CliError::failed(format!(
                        "line {line_no} has no key separator {:?}",
                        String::from_utf8_lossy(sep)
                    )))
                }
            },
            None => (a.key.as_ref().map(|k| k.clone().into_bytes()), line),
        };
        producer.send(
            OutRecord {
                key,
                value: Some(value),
                headers: headers.clone(),
                timestamp: None,
            },
            a.partition,
        )?;
    }
    let summary = producer.finish()?;
    if g.json() {
        out::print_json(&summary)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(
            split_key(b"k:v:w", b":"),
            Some((b"k".to_vec(), b"v:w".to_vec()))
        );
        assert_eq!(split_key(b"kv", b":"), None);
        assert_eq!(
            split_key(b"a::b", b"::"),
            Some((b"a".to_vec(), b"b".to_vec()))
        );
    }
}
