//! Broker-side compression: a topic's `compression.type` (and KIP-390's
//! `compression.<codec>.level`), and how far compressed produce batches are checked.
//!
//! Data path, per produce batch on the partition's owner shard, before `PartitionLog::append`
//! ([`admit`]):
//! - the topic keeps the producer's codec (`compression.type=producer`, the default, or the
//!   batch already is in the topic's codec): the batch is stored byte for byte. Its codec
//!   framing is walked without decompressing ([`codec::check_framing`]); with
//!   `sluice.compression.validation=full` the records are also decompressed (bounded) and
//!   parsed strictly, as Kafka's LogValidator does. The log then checks length, magic, CRC.
//! - the topic's codec differs: recompressed as Kafka does. CRC checked first (a recomputed
//!   CRC must not hide a corrupt batch), records decompressed (bounded) and parsed strictly,
//!   compressed in the topic's codec (or stored uncompressed), header kept, CRC recomputed.
//!
//! Anything wrong inside a compressed batch answers CORRUPT_MESSAGE for that partition.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sluice_engine::batch::{self, BatchHeader, Compression};
use sluice_engine::codec::{self, Levels};
use sluice_engine::BatchError;

/// The config keys this module owns (topic configs, and broker defaults under the same names).
pub const TYPE_KEY: &str = "compression.type";
pub const LEVEL_KEYS: [&str; 3] = [
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
];
/// `framing` (default) or `full`: how far a batch stored in its producer's codec is checked.
pub const VALIDATION_KEY: &str = "sluice.compression.validation";

/// A decompressed batch may be at most this many times max.message.bytes (and at least
/// [`MIN_INFLATE_LIMIT`]): a bound on the memory one batch can take.
const INFLATE_FACTOR: usize = 32;
const MIN_INFLATE_LIMIT: usize = 32 << 20;

/// What a topic stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whatever codec the producer used (`producer`).
    Producer,
    /// This codec (`Compression::None` for `uncompressed`).
    Codec(Compression),
}

/// Parses a `compression.type` value (Kafka's names).
pub fn parse_type(value: &str) -> Result<Target, String> {
    match value {
        "producer" => Ok(Target::Producer),
        "uncompressed" => Ok(Target::Codec(Compression::None)),
        "gzip" | "snappy" | "lz4" | "zstd" => Ok(Target::Codec(
            Compression::from_name(value).expect("a codec name"),
        )),
        _ => Err("expected one of uncompressed, zstd, lz4, snappy, gzip, producer".into()),
    }
}

/// Parses a `compression.<codec>.level` value within Kafka's bounds.
pub fn parse_level(key: &str, value: &str) -> Result<i32, String> {
    let v: i32 = value
        .parse()
        .map_err(|_| format!("{value:?} is not an integer"))?;
    let (lo, hi) = match key {
        "compression.gzip.level" if v == -1 => return Ok(codec::GZIP_DEFAULT_LEVEL),
        "compression.gzip.level" => (1, 9),
        "compression.lz4.level" => (1, 17),
        _ => (-131_072, 22),
    };
    if !(lo..=hi).contains(&v) {
        return Err(format!("must be between {lo} and {hi}"));
    }
    Ok(v)
}

/// The broker's defaults for the topic keys above, and the validation switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub target: Target,
    pub levels: Levels,
    pub full_validation: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            target: Target::Producer,
            levels: Levels::default(),
            full_validation: false,
        }
    }
}

fn set_level(levels: &mut Levels, key: &str, v: i32) {
    match key {
        "compression.gzip.level" => levels.gzip = Some(v),
        "compression.lz4.level" => levels.lz4 = Some(v),
        _ => levels.zstd = Some(v),
    }
}

impl Defaults {
    /// Applies a broker key; `Ok(false)` if the key is not one of this module's.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if key == TYPE_KEY {
            self.target = parse_type(value)?;
        } else if LEVEL_KEYS.contains(&key) {
            set_level(&mut self.levels, key, parse_level(key, value)?);
        } else if key == VALIDATION_KEY {
            self.full_validation = match value {
                "framing" => false,
                "full" => true,
                _ => return Err("expected framing or full".into()),
            };
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The topic-config view of the defaults (DescribeConfigs of a topic without overrides).
    pub fn topic_defaults(&self) -> [(&'static str, String); 4] {
        let name = match self.target {
            Target::Producer => "producer",
            Target::Codec(Compression::None) => "uncompressed",
            Target::Codec(c) => c.name(),
        };
        [
            (TYPE_KEY, name.to_string()),
            (
                LEVEL_KEYS[0],
                self.levels
                    .gzip
                    .unwrap_or(codec::GZIP_DEFAULT_LEVEL)
                    .to_string(),
            ),
            (
                LEVEL_KEYS[1],
                self.levels
                    .lz4
                    .unwrap_or(codec::LZ4_DEFAULT_LEVEL)
                    .to_string(),
            ),
            (
                LEVEL_KEYS[2],
                self.levels
                    .zstd
                    .unwrap_or(codec::ZSTD_DEFAULT_LEVEL)
                    .to_string(),
            ),
        ]
    }

    /// The policy of a topic with these overrides (values were validated when stored; one
    /// that no longer parses falls back to the broker's default).
    pub fn policy(&self, overrides: &BTreeMap<String, String>, max_message_bytes: usize) -> Policy {
        let target = overrides
            .get(TYPE_KEY)
            .and_then(|v| parse_type(v).ok())
            .unwrap_or(self.target);
        let mut levels = self.levels;
        for key in LEVEL_KEYS {
            if let Some(v) = overrides.get(key).and_then(|v| parse_level(key, v).ok()) {
                set_level(&mut levels, key, v);
            }
        }
        Policy {
            target,
            levels,
            full_validation: self.full_validation,
            inflate_limit: max_message_bytes
                .saturating_mul(INFLATE_FACTOR)
                .max(MIN_INFLATE_LIMIT),
        }
    }
}

/// How one topic's produce batches are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub target: Target,
    pub levels: Levels,
    pub full_validation: bool,
    pub inflate_limit: usize,
}

/// The batch to append: `batch` itself, or its recompressed copy (see the module docs).
/// Control batches and headers that do not parse are passed on for the log (and the
/// producer checks) to refuse.
pub fn admit<'a>(batch: &'a [u8], policy: &Policy) -> Result<Cow<'a, [u8]>, BatchError> {
    let Some(header) = BatchHeader::parse(batch) else {
        return Ok(Cow::Borrowed(batch));
    };
    if header.is_control() {
        return Ok(Cow::Borrowed(batch));
    }
    let codec = header.compression();
    if let Compression::Unknown(n) = codec {
        return Err(codec::CodecError::Unknown(n).into());
    }
    let keep = match policy.target {
        Target::Producer => true,
        Target::Codec(c) => c == codec,
    };
    if keep {
        if policy.full_validation {
            let body = batch::uncompressed_payload(batch, policy.inflate_limit)?;
            batch::parse_records(header, &body)?;
        } else {
            codec::check_framing(codec, batch::payload(batch))?;
        }
        return Ok(Cow::Borrowed(batch));
    }
    let Target::Codec(target) = policy.target else {
        unreachable!("kept above");
    };
    batch::validate(batch)?;
    let body = batch::uncompressed_payload(batch, policy.inflate_limit)?;
    batch::parse_records(header, &body)?;
    let out = codec::compress(target, &body, policy.levels)?;
    Ok(Cow::Owned(batch::with_payload(batch, target, &out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::batch::{build, NewRecord};

    fn policy(target: Target, full: bool) -> Policy {
        let d = Defaults {
            target,
            full_validation: full,
            ..Defaults::default()
        };
        d.policy(&BTreeMap::new(), 1 << 20)
    }

    fn sample() -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("value {i} compresses well well well").into_bytes())
            .collect();
        let recs: Vec<NewRecord<'_>> = values
            .iter()
            .map(|v| NewRecord {
                key: Some(b"k"),
                value: Some(v),
                timestamp: 5,
            })
            .collect();
        build(&recs)
    }

    #[test]
    fn recompresses_to_the_topic_codec_and_back() {
        let plain = sample();
        let mut zstd = None;
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let out = admit(&plain, &policy(Target::Codec(c), false)).expect("admit");
            let h = batch::validate(&out).expect("valid");
            assert_eq!(h.compression(), c);
            assert!(out.len() < plain.len(), "{c:?} shrinks");
            if c == Compression::Zstd {
                zstd = Some(out.into_owned());
            }
        }
        let zstd = zstd.expect("zstd");
        // same codec: stored as sent, borrowed
        let same = admit(&zstd, &policy(Target::Codec(Compression::Zstd), true)).expect("same");
        assert!(matches!(same, Cow::Borrowed(_)));
        let back = admit(&zstd, &policy(Target::Codec(Compression::None), false)).expect("none");
        assert_eq!(&back[..], &plain[..], "uncompressed again, byte for byte");
        let kept = admit(&zstd, &policy(Target::Producer, false)).expect("producer");
        assert!(matches!(kept, Cow::Borrowed(_)));
    }

    /// A zstd batch with a valid CRC whose inner records do not match its header.
    fn zstd_with(body: &[u8], template: &[u8]) -> Vec<u8> {
        let z = codec::compress(Compression::Zstd, body, Levels::default()).expect("zstd");
        batch::with_payload(template, Compression::Zstd, &z)
    }

    #[test]
    fn a_record_count_mismatch_is_caught_by_full_validation_and_recompression() {
        let plain = sample();
        let mut body = batch::payload(&plain).to_vec();
        body.push(7); // a stray byte after the last record
        let bad = zstd_with(&body, &plain);
        batch::validate(&bad).expect("header and CRC are fine");
        // the fast path sees intact zstd framing
        admit(&bad, &policy(Target::Producer, false)).expect("framing only");
        let full = admit(&bad, &policy(Target::Producer, true));
        assert!(matches!(full, Err(BatchError::BadRecords(_))), "{full:?}");
        let re = admit(&bad, &policy(Target::Codec(Compression::Lz4), false));
        assert!(matches!(re, Err(BatchError::BadRecords(_))), "{re:?}");
    }

    #[test]
    fn a_corrupt_inner_stream_is_caught_on_the_fast_path() {
        let plain = sample();
        let good = zstd_with(batch::payload(&plain), &plain);
        let mut body = batch::payload(&good).to_vec();
        body.truncate(body.len() - 2);
        let bad = batch::with_payload(&good, Compression::Zstd, &body);
        let r = admit(&bad, &policy(Target::Producer, false));
        assert!(matches!(r, Err(BatchError::Codec(_))), "{r:?}");
        assert_eq!(
            sluice_engine::LogError::InvalidBatch(r.expect_err("refused")).kafka_code(),
            2,
            "CORRUPT_MESSAGE"
        );
    }

    #[test]
    fn recompression_refuses_a_bad_crc() {
        let plain = sample();
        let mut bad = plain.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let r = admit(&bad, &policy(Target::Codec(Compression::Gzip), false));
        assert!(matches!(r, Err(BatchError::CrcMismatch { .. })), "{r:?}");
    }

    #[test]
    fn config_values_parse_like_kafka() {
        assert_eq!(parse_type("producer"), Ok(Target::Producer));
        assert_eq!(
            parse_type("uncompressed"),
            Ok(Target::Codec(Compression::None))
        );
        assert!(
            parse_type("none").is_err(),
            "Kafka's topic config says uncompressed"
        );
        assert!(parse_type("brotli").is_err());
        assert_eq!(parse_level("compression.zstd.level", "-5"), Ok(-5));
        assert!(parse_level("compression.gzip.level", "10").is_err());
        assert_eq!(parse_level("compression.gzip.level", "-1"), Ok(6));
        assert!(parse_level("compression.lz4.level", "0").is_err());
        let mut d = Defaults::default();
        assert_eq!(d.set("compression.type", "zstd"), Ok(true));
        assert_eq!(d.set(VALIDATION_KEY, "full"), Ok(true));
        assert_eq!(d.set("segment.bytes", "1"), Ok(false));
        let overrides = BTreeMap::from([
            ("compression.type".to_string(), "lz4".to_string()),
            ("compression.lz4.level".to_string(), "3".to_string()),
        ]);
        let p = d.policy(&overrides, 1 << 20);
        assert_eq!(p.target, Target::Codec(Compression::Lz4));
        assert_eq!(p.levels.lz4, Some(3));
        assert!(p.full_validation);
        assert_eq!(p.inflate_limit, 32 << 20);
    }
}
