//! Consuming for the `sluice` CLI: a [`Fetcher`] keeps a position per partition of one topic,
//! fetches from all of them at once and hands every record (control batches skipped, records
//! below the position of a batch fetched from its middle skipped) to a callback in offset order
//! per partition. [`Format`] renders records with a kcat/rpk-like format string.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use thiserror::Error;

use crate::client::{error_name, Client, ClientError, FetchOptions};
use crate::leaders::{retriable, Router};
use crate::records::{decode_batches, Record, RecordError};

#[derive(Debug, Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{topic}-{partition}: {source}")]
    Records {
        topic: String,
        partition: i32,
        source: RecordError,
    },
    #[error("fetching {topic}-{partition}: {name} (error code {code})")]
    Partition {
        topic: String,
        partition: i32,
        code: i16,
        name: String,
    },
}

/// What the record callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What one poll did.
#[derive(Debug, Default)]
pub struct Polled {
    /// Records handed to the callback.
    pub records: usize,
    /// Partitions whose position is out of range (log start, log end) of each.
    pub out_of_range: Vec<(i32, i64, i64)>,
    /// The callback asked to stop.
    pub stopped: bool,
    /// Partitions whose leader moved (or is being elected): (partition, error code). Only
    /// [`Fetcher::poll_routed`] fills it; [`Fetcher::poll`] fails on them.
    pub stale: Vec<(i32, i16)>,
}

/// Positions of one topic's partitions and the fetch loop over them.
pub struct Fetcher {
    pub topic: String,
    positions: BTreeMap<i32, i64>,
    pub opts: FetchOptions,
}

/// OFFSET_OUT_OF_RANGE
const OFFSET_OUT_OF_RANGE: i16 = 1;

impl Fetcher {
    pub fn new(topic: &str) -> Fetcher {
        Fetcher {
            topic: topic.to_string(),
            positions: BTreeMap::new(),
            opts: FetchOptions::default(),
        }
    }

    /// Sets (or adds) a partition's position.
    pub fn seek(&mut self, partition: i32, offset: i64) {
        self.positions.insert(partition, offset);
    }

    /// Drops every partition (a new assignment follows).
    pub fn clear(&mut self) {
        self.positions.clear();
    }

    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// One Fetch for every partition; `on_record(partition, record)` sees each new record.
    pub fn poll(
        &mut self,
        client: &mut Client,
        on_record: impl FnMut(i32, &Record<'_>) -> Flow,
    ) -> Result<Polled, ConsumeError> {
        let all: Vec<i32> = self.positions.keys().copied().collect();
        let polled = self.poll_some(client, &all, on_record, self.opts)?;
        if let Some(&(partition, code)) = polled.stale.first() {
            return Err(ConsumeError::Partition {
                topic: self.topic.clone(),
                partition,
                code,
                name: error_name(code),
            });
        }
        Ok(polled)
    }

    /// One round of fetches, each partition from its leader (one Fetch per leader, one after
    /// the other; the wait for data is shared out between them). Partitions whose leader moved
    /// or whose connection failed are fetched again after a metadata refresh, a bounded number
    /// of rounds in a row ([`Router::failed`]). With a single broker this is [`Fetcher::poll`].
    pub fn poll_routed(
        &mut self,
        router: &mut Router,
        mut on_record: impl FnMut(i32, &Record<'_>) -> Flow,
    ) -> Result<Polled, ConsumeError> {
        if router.single() {
            return self.poll(router.leaders.meta(), on_record);
        }
        let groups = router.leaders.by_leader(self.positions.keys().copied());
        let mut opts = self.opts;
        opts.max_wait_ms /= groups.len().max(1) as i32;
        let mut polled = Polled::default();
        let mut failed: Option<String> = None;
        for (leader, parts) in groups {
            if leader < 0 {
                failed = Some(format!("{}-{}: no leader", self.topic, parts[0]));
                continue;
            }
            let client = match router.client(leader) {
                Ok(c) => c,
                Err(e) => {
                    failed = Some(format!("connecting to broker {leader}: {e}"));
                    continue;
                }
            };
            match self.poll_some(client, &parts, &mut on_record, opts) {
                Ok(p) => {
                    polled.records += p.records;
                    polled.out_of_range.extend(p.out_of_range);
                    if let Some(&(partition, code)) = p.stale.first() {
                        failed = Some(format!(
                            "fetching {}-{partition}: {} (error code {code})",
                            self.topic,
                            error_name(code)
                        ));
                    }
                    if p.stopped {
                        polled.stopped = true;
                        break;
                    }
                }
                Err(ConsumeError::Client(ClientError::Conn(e))) => {
                    router.drop_client(leader);
                    failed = Some(format!("fetching {} from broker {leader}: {e}", self.topic));
                }
                Err(e) => return Err(e),
            }
        }
        match failed {
            None => router.succeeded(),
            Some(what) if !polled.stopped => router
                .failed(what)
                .map_err(|m| ConsumeError::Client(ClientError::GaveUp(m)))?,
            Some(_) => {}
        }
        Ok(polled)
    }

    /// One Fetch of `partitions` (those with a position) over `client`.
    fn poll_some(
        &mut self,
        client: &mut Client,
        partitions: &[i32],
        mut on_record: impl FnMut(i32, &Record<'_>) -> Flow,
        opts: FetchOptions,
    ) -> Result<Polled, ConsumeError> {
        let mut polled = Polled::default();
        let positions: Vec<(i32, i64)> = partitions
            .iter()
            .filter_map(|p| self.positions.get(p).map(|o| (*p, *o)))
            .collect();
        if positions.is_empty() {
            return Ok(polled);
        }
        let parts = client.fetch(&self.topic, &positions, opts)?;
        for fp in parts {
            let Some(&start) = self.positions.get(&fp.partition) else {
                continue;
            };
            match fp.error {
                0 => {}
                OFFSET_OUT_OF_RANGE => {
                    polled.out_of_range.push((
                        fp.partition,
                        fp.log_start_offset,
                        fp.high_watermark,
                    ));
                    continue;
                }
                code if retriable(code) => {
                    polled.stale.push((fp.partition, code));
                    continue;
                }
                code => {
                    return Err(ConsumeError::Partition {
                        topic: self.topic.clone(),
                        partition: fp.partition,
                        code,
                        name: error_name(code),
                    })
                }
            }
            let batches = decode_batches(&fp.records).map_err(|source| ConsumeError::Records {
                topic: self.topic.clone(),
                partition: fp.partition,
                source,
            })?;
            let mut pos = start;
            'batches: for b in &batches {
                if b.last_offset() < pos {
                    continue;
                }
                if !b.is_control() {
                    for r in b.iter() {
                        let r = r.map_err(|source| ConsumeError::Records {
                            topic: self.topic.clone(),
                            partition: fp.partition,
                            source,
                        })?;
                        if r.offset < pos {
                            continue;
                        }
                        polled.records += 1;
                        pos = r.offset + 1;
                        if on_record(fp.partition, &r) == Flow::Stop {
                            polled.stopped = true;
                            break 'batches;
                        }
                    }
                }
                pos = pos.max(b.last_offset() + 1);
            }
            self.positions.insert(fp.partition, pos);
            if polled.stopped {
                break;
            }
        }
        Ok(polled)
    }
}

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    KeyLen,
    ValueLen,
    Headers,
}

/// A record format: `%t` topic, `%p` partition, `%o` offset, `%d` timestamp (ms), `%k` key,
/// `%v` (or `%s`) value, `%K` / `%V` key / value length (-1 for null), `%h` headers as
/// `k=v,k2=v2`, `%%` a percent sign; `\n`, `\t`, `\r`, `\\` escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = s.chars();
        let flush = |lit: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(lit)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let p = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('d') | Some('T') => Piece::Timestamp,
                        Some('k') => Piece::Key,
                        Some('v') | Some('s') => Piece::Value,
                        Some('K') => Piece::KeyLen,
                        Some('V') | Some('S') => Piece::ValueLen,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                            "unknown format directive %{other} (use %t %p %o %d %k %v %K %V %h %%)"
                        ))
                        }
                        None => return Err("format string ends with a lone %".into()),
                    };
                    flush(&mut lit, &mut pieces);
                    pieces.push(p);
                }
                '\\' => {
                    let e = match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('\\') => '\\',
                        Some(other) => {
                            lit.push(b'\\');
                            other
                        }
                        None => '\\',
                    };
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                }
                c => {
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut lit, &mut pieces);
        Ok(Format(pieces))
    }
}

impl Format {
    /// Appends the rendering of `r` to `out`.
    pub fn render(&self, out: &mut Vec<u8>, topic: &str, partition: i32, r: &Record<'_>) {
        let mut num = String::new();
        for p in &self.0 {
            num.clear();
            match p {
                Piece::Lit(b) => out.extend_from_slice(b),
                Piece::Topic => out.extend_from_slice(topic.as_bytes()),
                Piece::Partition => {
                    let _ = write!(num, "{partition}");
                }
                Piece::Offset => {
                    let _ = write!(num, "{}", r.offset);
                }
                Piece::Timestamp => {
                    let _ = write!(num, "{}", r.timestamp);
                }
                Piece::Key => out.extend_from_slice(r.key.unwrap_or_default()),
                Piece::Value => out.extend_from_slice(r.value.unwrap_or_default()),
                Piece::KeyLen => {
                    let _ = write!(num, "{}", r.key.map_or(-1, |k| k.len() as i64));
                }
                Piece::ValueLen => {
                    let _ = write!(num, "{}", r.value.map_or(-1, |v| v.len() as i64));
                }
                Piece::Headers => {
                    for (i, (k, v)) in r.headers().iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k);
                        out.push(b'=');
                        out.extend_from_slice(v.unwrap_or_default());
                    }
                }
            }
            out.extend_from_slice(num.as_bytes());
        }
    }
}

/// A record as `--output json` prints it (bytes shown as UTF-8, invalid sequences replaced).
#[derive(Debug, Serialize)]
pub struct JsonRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<JsonHeader>,
}

#[derive(Debug, Serialize)]
pub struct JsonHeader {
    pub key: String,
    pub value: Option<String>,
}

impl<'a> JsonRecord<'a> {
    pub fn new(topic: &'a str, partition: i32, r: &Record<'_>) -> JsonRecord<'a> {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        JsonRecord {
            topic,
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(s),
            value: r.value.map(s),
            headers: r
                .headers()
                .into_iter()
                .map(|(k, v)| JsonHeader {
                    key: s(k),
                    value: v.map(s),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Batch, Compression};
    use bytes::Bytes;

    fn one_record() -> Batch {
        // key "k", value "v", one header a=1, offset 7, timestamp 1000
        let mut rec = vec![0u8];
        sluice_engine::batch::write_varint(&mut rec, 0);
        sluice_engine::batch::write_varint(&mut rec, 0);
        sluice_engine::batch::write_varint(&mut rec, 1);
        rec.push(b'k');
        sluice_engine::batch::write_varint(&mut rec, 1);
        rec.push(b'v');
        sluice_engine::batch::write_varint(&mut rec, 1);
        sluice_engine::batch::write_varint(&mut rec, 1);
        rec.push(b'a');
        sluice_engine::batch::write_varint(&mut rec, 1);
        rec.push(b'1');
        let mut section = Vec::new();
        sluice_engine::batch::write_varint(&mut section, rec.len() as i64);
        section.extend_from_slice(&rec);
        Batch {
            base_offset: 7,
            last_offset_delta: 0,
            base_timestamp: 1000,
            max_timestamp: 1000,
            attributes: 0,
            record_count: 1,
            compression: Compression::None,
            records: Bytes::from(section),
        }
    }

    #[test]
    fn formats_render_every_field() {
        let b = one_record();
        let r = b.iter().next().expect("one").expect("ok");
        let f: Format = "%t/%p@%o %d %k=%v [%h] %K %V 100%%\\n"
            .parse()
            .expect("parse");
        let mut out = Vec::new();
        f.render(&mut out, "topic", 3, &r);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "topic/3@7 1000 k=v [a=1] 1 1 100%\n"
        );
        assert!("%x".parse::<Format>().is_err());
        assert!("50%".parse::<Format>().is_err());
    }
}
