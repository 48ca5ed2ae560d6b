//! loadgen's command line.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use sluice_tools::security::parse_override;
use sluice_tools::{ClientSecurity, Compression};

use crate::dial::Dial;

/// Bytes at the start of every message value: run id (u32), producer (u32), sequence number
/// within (producer, partition) (u64), send time in microseconds since the Unix epoch (u64).
pub const VALUE_HEADER: usize = 24;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    // a flag given twice takes its last value (scripts append overrides to shared flags)
    args_override_self = true,
    about = "Kafka load generator: million-message runs with HdrHistogram latency reports, \
             loss verification, plots and comparisons",
    long_about = "Produces --messages messages, consumes them back and verifies that none was \
                  lost, duplicated or reordered. With no --bootstrap-server it starts an embedded \
                  sluice broker (temporary data dir on the real disk, real fsync)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Side-by-side table of two or more runs (result directories) with ratios to the first,
    /// and one overlaid percentile plot.
    Compare(CompareArgs),
    /// Plots of scaling curves from CSV files (bench/scripts/run-scaling.sh writes them):
    /// throughput and p99 against each parameter, and restart times.
    PlotScaling(PlotScalingArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PlotScalingArgs {
    /// CSV files: curve,x,msg_per_sec,mb_per_sec,p99_ms,... or curve,x,accept_ms,serve_ms,...
    #[arg(required = true, num_args = 1..)]
    pub csv: Vec<PathBuf>,
    /// Prefix of the plots: PREFIX-<curve>.<format>.
    #[arg(long)]
    pub output: PathBuf,
    /// svg or png.
    #[arg(long, default_value = "svg")]
    pub format: String,
}

#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// Run directories (each with summary.json and produce-latency.hgrm).
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Where to write compare.txt and the overlaid plots (default: beside the first run,
    /// `<output>/<date>-compare-<labels>`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Produce only (no verification).
    Produce,
    /// Consume --messages messages from the earliest offsets and check order and duplicates.
    Consume,
    /// Produce, consume everything back (consumers run alongside the producers so end-to-end
    /// latency is meaningful) and verify.
    E2e,
}

/// Kafka acks: 0, 1 or all (-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Acks(pub i16);

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" => Ok(Acks(0)),
            "1" => Ok(Acks(1)),
            "all" | "-1" => Ok(Acks(-1)),
            _ => Err(format!("acks must be 0, 1 or all, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            -1 => f.write_str("all"),
            n => write!(f, "{n}"),
        }
    }
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

fn parse_linger(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=60_000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a linger time in ms between 0 and 60000"
        )),
    }
}

/// How loadgen reaches its embedded broker (`--security`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedSecurity {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS: a CA and a broker certificate are made for the run, the broker gets an SSL
    /// listener and every connection goes through it.
    Ssl,
    /// SASL PLAIN over TLS: as ssl, on a SASL_SSL listener with a user made for the run.
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl EmbeddedSecurity {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddedSecurity::Plaintext => "plaintext",
            EmbeddedSecurity::Ssl => "ssl",
            EmbeddedSecurity::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Args, Clone, Serialize)]
pub struct RunArgs {
    /// Broker to benchmark (host:port). Without it, an embedded sluice broker is started.
    #[arg(long, short = 'b')]
    pub bootstrap_server: Option<String>,
    /// Client security settings for --bootstrap-server in a Java properties file (as
    /// kafka-topics.sh's): security.protocol, sasl.mechanism, sasl.username, sasl.password,
    /// ssl.ca.location, ssl.certificate.location, ssl.key.location,
    /// ssl.endpoint.identification.algorithm.
    #[arg(long = "command-config", value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// A client setting for --bootstrap-server (repeatable, overrides --command-config), as
    /// kcat's -X: e.g. -X security.protocol=SSL -X ssl.ca.location=ca.pem.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_override)]
    #[serde(skip)]
    pub settings: Vec<(String, String)>,
    /// How to reach the embedded broker: plaintext, ssl (a CA and broker certificate made for
    /// the run, TLS on every connection) or sasl_ssl (the same, plus SASL PLAIN with a user
    /// made for the run).
    #[arg(long, value_enum, default_value = "plaintext")]
    pub security: EmbeddedSecurity,
    /// How connections are made (set by the run from the settings above).
    #[arg(skip)]
    #[serde(skip)]
    pub dial: Dial,
    /// Messages to produce (and consume back).
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    pub messages: u64,
    /// Bytes per message value (at least 24: run id, producer, sequence, send time).
    #[arg(long, short = 's', default_value_t = 100)]
    pub message_size: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Topic (created with --partitions when missing).
    #[arg(long, default_value = "loadgen")]
    pub topic: String,
    /// Partitions of the topic when loadgen creates it.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: i32,
    /// Producer connections (one thread each, plus its response reader).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections (partitions are divided among them).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Batch size in bytes per partition (Kafka's batch.size; Kafka's default is 16384, the
    /// throughput tuning of its own perf docs uses 64 KiB-1 MiB).
    #[arg(long, default_value_t = 262_144)]
    pub batch_size: usize,
    /// Longest a message waits for its batch to fill, in ms (Kafka's linger.ms; fractions such
    /// as 0.2 are allowed here, for low-latency runs).
    #[arg(long, default_value_t = 5.0, value_parser = parse_linger)]
    pub linger_ms: f64,
    /// Produce requests in flight per connection
    /// (Kafka's max.in.flight.requests.per.connection).
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Target messages/s over all producers; 0 = as fast as possible. Latency is then measured
    /// from each message's intended send time (coordinated omission correction).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    #[serde(serialize_with = "ser_display")]
    pub compression: Compression,
    /// Keyed messages (key = message number), partitioned with Kafka's murmur2.
    #[arg(long)]
    pub keys: bool,
    /// Messages sent first and left out of the latency and throughput figures (still verified).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// produce, consume or e2e.
    #[arg(long, value_enum, default_value = "e2e")]
    pub mode: Mode,
    /// Reports go to OUTPUT/<date>-<label>/.
    #[arg(long, default_value = "results")]
    pub output: PathBuf,
    /// Name of the run (default: made from the settings).
    #[arg(long)]
    pub label: Option<String>,
    /// Shards (cores) of the embedded broker. Default 1 on this 2-vCPU class: the broker's
    /// shard is pinned to core 0 and loadgen's threads find room on the other.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Brokers of the embedded cluster: more than 1 starts that many brokers in this process,
    /// each a metadata quorum voter with its own data dir (real fsync), on 127.0.0.1.
    #[arg(long, default_value_t = 1)]
    pub brokers: usize,
    /// Replication factor of the topic when loadgen creates it.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// A setting of the embedded broker, as in server.properties (repeatable), e.g.
    /// `--broker-config log.segment.bytes=1048576`.
    #[arg(long = "broker-config", value_name = "KEY=VALUE")]
    pub broker_config: Vec<String>,
    /// Parent directory of the embedded broker's temporary data dir (must be a real disk, not
    /// tmpfs, for real fsync).
    #[arg(long, default_value = "/var/tmp")]
    pub data_dir: PathBuf,
    /// Keep the embedded broker's data dir after the run.
    #[arg(long)]
    pub keep_data: bool,
    /// Sampling interval of throughput.csv, the plots and the .hlog interval log, in ms.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Seconds to wait for missing messages once producing is done (consume phase).
    #[arg(long, default_value_t = 30)]
    pub consume_timeout: u64,
    /// Start consuming only after every message is acknowledged (no end-to-end latency).
    #[arg(long)]
    pub consume_after: bool,
    /// Pin loadgen's threads to the cores the embedded broker does not use (off by default:
    /// on a machine shared with other work, pinned threads cannot move off a busy core and
    /// wait tens of ms to run).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub pin: bool,
    /// Null sink: produce to an in-process server that acknowledges every request at once
    /// without storing it. Measures loadgen's own ceiling (implies --mode produce).
    #[arg(long)]
    pub null_sink: bool,
    /// No report directory (print the summary only).
    #[arg(long)]
    pub no_report: bool,
    /// Idempotent producers (Kafka's enable.idempotence): each producer connection gets a
    /// producer id (InitProducerId) and stamps it, its epoch and a per-partition sequence number
    /// on every batch. Needs --acks all and --max-in-flight <= 5, as in Kafka.
    #[arg(long)]
    pub idempotent: bool,
    /// Transactional producers (implies --idempotent): producer connection n uses transactional
    /// id `loadgen-<run id>-<n>` and commits every --txn-messages messages (one
    /// AddPartitionsToTxn at the start of each transaction for the partitions it will write,
    /// transactional produce, all acks, EndTxn commit). Consumers read with isolation level
    /// read_committed.
    #[arg(long)]
    pub transactional: bool,
    /// Messages per transaction and producer connection with --transactional.
    #[arg(long, default_value_t = 10_000)]
    pub txn_messages: u64,
    /// Transaction timeout asked for in InitProducerId with --transactional, in ms (Kafka's
    /// transaction.timeout.ms).
    #[arg(long, default_value_t = 60_000)]
    pub txn_timeout_ms: i32,
    /// Testing aid: after this many messages are acknowledged, delete every record of
    /// partition 0 written so far (DeleteRecords), so verification must report a loss.
    #[arg(long, hide = true)]
    pub inject_delete_records_at: Option<u64>,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// How the producers produce: plain (no producer id), idempotent or transactional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProducerMode {
    Plain,
    Idempotent,
    Transactional,
}

impl ProducerMode {
    pub fn name(self) -> &'static str {
        match self {
            ProducerMode::Plain => "plain",
            ProducerMode::Idempotent => "idempotent",
            ProducerMode::Transactional => "transactional",
        }
    }

    /// Batches carry a producer id, epoch and sequence numbers.
    pub fn idempotent(self) -> bool {
        self != ProducerMode::Plain
    }
}

impl RunArgs {
    /// Plain, idempotent or transactional (--transactional implies --idempotent).
    pub fn producer_mode(&self) -> ProducerMode {
        if self.transactional {
            ProducerMode::Transactional
        } else if self.idempotent {
            ProducerMode::Idempotent
        } else {
            ProducerMode::Plain
        }
    }

    /// The client security of --command-config and -X (warnings on stderr), with the PEM
    /// files read.
    pub fn client_security(&self) -> Result<ClientSecurity, String> {
        let parsed =
            ClientSecurity::from_file_and_overrides(self.command_config.as_deref(), &self.settings)
                .map_err(|e| e.to_string())?;
        for w in &parsed.warnings {
            eprintln!("loadgen: warning: {w}");
        }
        parsed.security.prepare().map_err(|e| e.to_string())?;
        Ok(parsed.security)
    }

    /// The label used when none is given: e.g. `sluice-acks-all-p4-100b`.
    pub fn default_label(&self) -> String {
        let target = if self.null_sink {
            "null-sink"
        } else if self.bootstrap_server.is_some() {
            "external"
        } else {
            "sluice"
        };
        let mut l = format!(
            "{target}-acks-{}-p{}-{}b",
            self.acks, self.partitions, self.message_size
        );
        if self.compression != Compression::None {
            l.push('-');
            l.push_str(self.compression.name());
        }
        if self.rate > 0 {
            l.push_str(&format!("-rate{}", self.rate));
        }
        if self.security != EmbeddedSecurity::Plaintext {
            l.push('-');
            l.push_str(self.security.name());
        }
        match self.producer_mode() {
            ProducerMode::Plain => {}
            ProducerMode::Idempotent => l.push_str("-idempotent"),
            ProducerMode::Transactional => l.push_str(&format!("-txn{}", self.txn_messages)),
        }
        l
    }

    /// Checks the combination of options.
    pub fn validate(&self) -> Result<(), String> {
        if self.message_size < VALUE_HEADER {
            return Err(format!(
                "--message-size must be at least {VALUE_HEADER} (run id, producer, sequence, time)"
            ));
        }
        if self.messages == 0 {
            return Err("--messages must be > 0".into());
        }
        if self.partitions < 1 || self.producers < 1 || self.consumers < 1 {
            return Err("--partitions, --producers and --consumers must be >= 1".into());
        }
        if self.max_in_flight < 1 {
            return Err("--max-in-flight must be >= 1".into());
        }
        if self.cores < 1 {
            return Err("--cores must be >= 1".into());
        }
        if self.interval_ms < 10 {
            return Err("--interval-ms must be >= 10".into());
        }
        if self.batch_size < 128 {
            return Err("--batch-size must be >= 128".into());
        }
        if self.brokers == 0 {
            return Err("--brokers must be at least 1".into());
        }
        if self.brokers > 1 && (self.bootstrap_server.is_some() || self.null_sink) {
            return Err(
                "--brokers starts an embedded cluster: not with --bootstrap-server or --null-sink"
                    .into(),
            );
        }
        if self.replication_factor < 1 {
            return Err("--replication-factor must be at least 1".into());
        }
        if self.bootstrap_server.is_none()
            && !self.null_sink
            && self.replication_factor as usize > self.brokers
        {
            return Err(format!(
                "--replication-factor {} needs at least as many --brokers (got {})",
                self.replication_factor, self.brokers
            ));
        }
        if !self.broker_config.is_empty() && (self.bootstrap_server.is_some() || self.null_sink) {
            return Err("--broker-config sets the embedded broker: not with --bootstrap-server                         or --null-sink"
                .into());
        }
        let external = self.bootstrap_server.is_some();
        if (self.command_config.is_some() || !self.settings.is_empty()) && !external {
            return Err(
                "--command-config and -X set how to reach --bootstrap-server (the embedded \
                 broker takes --security)"
                    .into(),
            );
        }
        if self.security != EmbeddedSecurity::Plaintext && (external || self.null_sink) {
            return Err(format!(
                "--security {} sets up the embedded broker: not with --bootstrap-server (use \
                 --command-config or -X) or --null-sink",
                self.security.name()
            ));
        }
        let mode = self.producer_mode();
        if mode.idempotent() {
            let flag = format!("--{}", mode.name());
            if self.acks.0 != -1 {
                return Err(format!(
                    "{flag} needs --acks all (as Kafka's idempotent producer)"
                ));
            }
            if self.max_in_flight > 5 {
                return Err(format!(
                    "{flag} needs --max-in-flight <= 5 (the broker keeps the last 5 batches of a \
                     producer for de-duplication)"
                ));
            }
            if self.null_sink {
                return Err(format!("{flag} does not work with --null-sink"));
            }
        }
        if mode == ProducerMode::Transactional {
            if self.txn_messages < 1 {
                return Err("--txn-messages must be >= 1".into());
            }
            if self.txn_timeout_ms < 1 {
                return Err("--txn-timeout-ms must be >= 1".into());
            }
        }
        Ok(())
    }
}
