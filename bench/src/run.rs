//! One loadgen run: start (or reach) the broker, create the topic, run producers and consumers
//! with a progress bar, sample throughput and latency every second, verify.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sluice_server::config::{Listeners, SecurityProtocol};
use sluice_tools::{Client, ClientSecurity};
use thiserror::Error;

use crate::config::{EmbeddedSecurity, Mode, RunArgs};
use crate::consumer::{self, ConsumeControl, ConsumerOutcome, ConsumerPlan};
use crate::dial::Dial;
use crate::nullsink::NullSink;
use crate::producer::{self, ProducerOutcome, ProducerPlan};
use crate::stats::{new_histogram, Clock, Stats};
use crate::verify::{self, PartitionCheck, Verification};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("{0}")]
    Client(#[from] sluice_tools::ClientError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What loadgen ran against.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    /// "sluice (embedded)", "external" or "null sink".
    pub kind: String,
    pub address: String,
    pub cores: Option<usize>,
    pub data_dir: Option<String>,
    /// Whether acks=all waits for an fdatasync (true for sluice; unknown for an external one).
    pub fsync_on_acks_all: Option<bool>,
}

/// One sampling interval of the run (`--interval-ms`).
#[derive(Debug, Clone)]
pub struct Interval {
    /// Seconds since the run's clock started.
    pub start_s: f64,
    pub duration_s: f64,
    /// Acknowledged (measured) messages and value bytes in the interval.
    pub acked: u64,
    pub acked_bytes: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub produce: Histogram<u64>,
    pub e2e: Histogram<u64>,
}

/// Totals of one direction.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
}

impl Throughput {
    fn new(messages: u64, bytes: u64, from_us: u64, to_us: u64) -> Throughput {
        let seconds = (to_us.saturating_sub(from_us) as f64 / 1e6).max(1e-6);
        Throughput {
            messages,
            bytes,
            seconds,
            messages_per_sec: messages as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / (1024.0 * 1024.0),
        }
    }
}

/// Everything a run produced, for the summary and the report files.
pub struct RunResult {
    pub args: RunArgs,
    pub label: String,
    pub run_id: u32,
    pub started_us: u64,
    pub broker: BrokerInfo,
    pub produce: Option<Throughput>,
    pub consume: Option<Throughput>,
    pub produce_hist: Histogram<u64>,
    pub e2e_hist: Histogram<u64>,
    pub intervals: Vec<Interval>,
    pub verification: Option<Verification>,
    /// `--transactional`: transactions committed, EndTxn and AddPartitionsToTxn round trips (us).
    pub transactions: u64,
    pub commit_hist: Histogram<u64>,
    pub add_partitions_hist: Histogram<u64>,
    pub failed: u64,
    pub errors: (u64, Vec<String>),
    pub wall_seconds: f64,
    /// /proc/loadavg (1, 5, 15 min) when the run started: other work on the machine skews
    /// the figures.
    pub load_average_at_start: String,
}

impl RunResult {
    /// True when the run met its contract: no errors, and verification (if any) clean.
    pub fn ok(&self) -> bool {
        self.errors.0 == 0 && self.failed == 0 && self.verification.as_ref().is_none_or(|v| v.ok())
    }
}

enum Target {
    Embedded {
        /// One broker, or every broker of the embedded cluster.
        handles: Vec<sluice_server::BrokerHandle>,
        dir: Option<tempfile::TempDir>,
        path: PathBuf,
        /// The addresses clients use (the SSL listeners with --security ssl), by handle.
        client_addrs: Vec<SocketAddr>,
        /// --security ssl: the CA and broker certificate made for the run.
        _pki: Option<tempfile::TempDir>,
    },
    Null(NullSink),
    External,
}

/// --security ssl: a CA and a broker certificate (127.0.0.1, localhost) for this run, in a
/// temporary directory: (directory, CA file, broker PEM with key and certificate).
fn make_pki() -> Result<(tempfile::TempDir, PathBuf, PathBuf), RunError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let e = |e: rcgen::Error| RunError::Broker(format!("making a test certificate: {e}"));
    let dir = tempfile::Builder::new().prefix("loadgen-tls-").tempdir()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "loadgen test CA");
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(e)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
    let ca_path = dir.path().join("ca.pem");
    let broker_path = dir.path().join("broker.pem");
    std::fs::write(&ca_path, ca.pem())?;
    std::fs::write(
        &broker_path,
        format!("{}{}", key.serialize_pem(), cert.pem()),
    )?;
    Ok((dir, ca_path, broker_path))
}

fn start_embedded(args: &RunArgs) -> Result<(Target, SocketAddr, BrokerInfo, Dial), RunError> {
    std::fs::create_dir_all(&args.data_dir)?;
    let sasl = args.security == EmbeddedSecurity::SaslSsl;
    let ssl = sasl || args.security == EmbeddedSecurity::Ssl;
    let pki = if ssl { Some(make_pki()?) } else { None };
    // sasl_ssl: a PLAIN user for this run
    let password = if sasl {
        let b = sluice_tools::sasl::random_bytes(16).map_err(RunError::Broker)?;
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    } else {
        String::new()
    };
    let client_protocol = if sasl {
        SecurityProtocol::SaslSsl
    } else {
        SecurityProtocol::Ssl
    };
    let dir = tempfile::Builder::new()
        .prefix("loadgen-sluice-")
        .tempdir_in(&args.data_dir)?;
    let path = dir.path().to_path_buf();
    // a cluster: every broker is a voter of the metadata quorum, on ports picked now
    let voters: Vec<(i32, SocketAddr)> = if args.brokers > 1 {
        (1..=args.brokers as i32)
            .map(|id| {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                Ok((id, l.local_addr()?))
            })
            .collect::<std::io::Result<_>>()?
    } else {
        Vec::new()
    };
    let mut handles = Vec::new();
    for b in 0..args.brokers {
        let data_dir = if args.brokers > 1 {
            path.join(format!("broker-{}", b + 1))
        } else {
            path.clone()
        };
        let mut config = sluice_server::config::ServerConfig {
            listeners: Listeners::plaintext(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir,
            cores: args.cores,
            // off unless --broker-config sluice.http.listen=... turns it on
            http_listen: None,
            ..Default::default()
        };
        if let Some((_, _, broker_pem)) = &pki {
            let mut tls = vec![
                (
                    "listeners",
                    format!(
                        "PLAINTEXT://127.0.0.1:0,{}://127.0.0.1:0",
                        client_protocol.name()
                    ),
                ),
                ("ssl.keystore.type", "PEM".to_string()),
                ("ssl.keystore.location", broker_pem.display().to_string()),
            ];
            if sasl {
                tls.push(("sasl.enabled.mechanisms", "PLAIN".to_string()));
                tls.push((
                    "listener.name.sasl_ssl.plain.sasl.jaas.config",
                    format!(
                        "org.apache.kafka.common.security.plain.PlainLoginModule required \
                         user_loadgen=\"{password}\";"
                    ),
                ));
            }
            for (k, v) in tls {
                config.set(k, &v).map_err(|e| {
                    RunError::Broker(format!("--security {}: {k}: {e}", args.security.name()))
                })?;
            }
        }
        if args.brokers > 1 {
            config.node_id = b as i32 + 1;
            config.quorum_voters = voters.clone();
            // brokers of an embedded cluster start on different CPUs (as on different
            // machines, each would have its own); --broker-config sluice.cpus=... overrides
            let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cores = args.cores.max(1);
            config.cpus = (0..cores).map(|c| (b * cores + c) % ncpu).collect();
        }
        for kv in &args.broker_config {
            let (k, v) = kv
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| {
                    RunError::Broker(format!("--broker-config {kv}: expected KEY=VALUE"))
                })?;
            config
                .set(k, v)
                .map_err(|e| RunError::Broker(format!("--broker-config {kv}: {e}")))?;
            if config.unknown_keys.iter().any(|u| u == k) {
                return Err(RunError::Broker(format!(
                    "--broker-config {kv}: unknown setting"
                )));
            }
        }
        match sluice_server::start(config) {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in handles {
                    h.stop();
                }
                return Err(RunError::Broker(e.to_string()));
            }
        }
    }
    if args.brokers > 1 {
        // every broker registered with the quorum before topics are placed over them
        let until = Instant::now() + Duration::from_secs(30);
        while handles[0].live_brokers().map_or(0, |b| b.len()) < args.brokers {
            if Instant::now() > until {
                for h in handles {
                    h.stop();
                }
                return Err(RunError::Broker("the embedded cluster did not form".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // clients use the SSL listener with --security ssl
    let client_addrs: Vec<SocketAddr> = handles
        .iter()
        .map(|h| {
            h.listeners
                .iter()
                .find(|(_, p, _)| !ssl || *p == client_protocol)
                .map_or(h.addr, |(_, _, a)| *a)
        })
        .collect();
    let addr = client_addrs[0];
    let dial = match &pki {
        None => Dial::default(),
        Some((_, ca, _)) => {
            let ca = ca.display().to_string();
            let mut settings = vec![
                ("security.protocol", client_protocol.name().to_string()),
                ("ssl.ca.location", ca),
            ];
            if sasl {
                settings.push(("sasl.mechanism", "PLAIN".into()));
                settings.push(("sasl.username", "loadgen".into()));
                settings.push(("sasl.password", password.clone()));
            }
            let parsed = ClientSecurity::from_settings(settings)
                .map_err(|e| RunError::Broker(e.to_string()))?;
            parsed
                .security
                .prepare()
                .map_err(|e| RunError::Broker(e.to_string()))?;
            Dial::new(parsed.security)
        }
    };
    let info = BrokerInfo {
        kind: format!(
            "sluice (embedded{}{})",
            if args.brokers > 1 {
                format!(" cluster of {} brokers", args.brokers)
            } else {
                String::new()
            },
            match (sasl, ssl) {
                (true, _) => ", SASL PLAIN over TLS",
                (false, true) => ", over TLS",
                _ => "",
            }
        ),
        address: addr.to_string(),
        cores: Some(args.cores),
        data_dir: Some(path.display().to_string()),
        fsync_on_acks_all: Some(true),
    };
    Ok((
        Target::Embedded {
            handles,
            dir: Some(dir),
            path,
            client_addrs,
            _pki: pki.map(|(d, _, _)| d),
        },
        addr,
        info,
        dial,
    ))
}

/// The embedded cluster's brokers by node id (what Metadata's leader ids name).
fn broker_addrs(target: &Target) -> Vec<(i32, SocketAddr)> {
    match target {
        Target::Embedded {
            handles,
            client_addrs,
            ..
        } if handles.len() > 1 => client_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as i32 + 1, *a))
            .collect(),
        _ => Vec::new(),
    }
}

/// An embedded cluster: one acks=all record per partition, before the timed run, so that it
/// measures replication in its steady state rather than the followers' first fetch of a new
/// topic (they learn of it with their next metadata heartbeat). Consumers start after it.
fn warm_up(dial: &Dial, addr: SocketAddr, topic: &str, partitions: i32) -> Result<(), RunError> {
    use sluice_tools::produce::{OutRecord, ProducerConfig};
    let client = dial.connect(addr, "loadgen-warmup")?;
    let mut p = sluice_tools::produce::Producer::new(
        client,
        ProducerConfig::new(topic),
        partitions.max(1) as u32,
    )
    .map_err(|e| RunError::Broker(format!("warm-up: {e}")))?;
    for partition in 0..partitions.max(1) {
        let rec = OutRecord {
            value: Some(b"loadgen warm-up".to_vec()),
            ..OutRecord::default()
        };
        p.send(rec, Some(partition))
            .map_err(|e| RunError::Broker(format!("warm-up: {e}")))?;
    }
    p.finish()
        .map_err(|e| RunError::Broker(format!("warm-up: {e}")))?;
    Ok(())
}

/// The one broker leading every partition of `topic` (loadgen's connections each talk to one
/// broker, so in a cluster the topic's partitions must share their leader: 1 partition does).
fn cluster_leader(
    dial: &Dial,
    admin: &mut Client,
    topic: &str,
    cluster: &[(i32, SocketAddr)],
) -> Result<SocketAddr, RunError> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let parts = admin.partitions(topic)?.unwrap_or_default();
        let mut leaders: Vec<i32> = parts.iter().map(|p| p.leader).collect();
        leaders.sort_unstable();
        leaders.dedup();
        match leaders.as_slice() {
            [l] if *l >= 0 && !parts.is_empty() => {
                if let Some((_, a)) = cluster.iter().find(|(id, _)| id == l) {
                    // the leader learns of the topic from the quorum a moment later
                    let mut c = dial.connect(*a, "loadgen-admin")?;
                    let seen = c
                        .partitions(topic)?
                        .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p.leader == *l));
                    if seen {
                        return Ok(*a);
                    }
                }
            }
            [_, _, ..] => {
                return Err(RunError::Config(format!(
                    "the partitions of {topic} have leaders {leaders:?}: with --brokers, use \
                     partitions that share one leader (e.g. --partitions 1)"
                )))
            }
            _ => {}
        }
        if Instant::now() > until {
            return Err(RunError::Broker(format!("{topic} has no leader")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
fn pin_to(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A random-enough run id (time and pid), so messages of earlier runs are told apart.
fn make_run_id(clock: &Clock) -> u32 {
    let x = clock.start_us() ^ (u64::from(std::process::id()) << 32);
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 32) as u32).max(1)
}

/// How long loadgen waits for a topic whose CreateTopics timed out.
const CREATE_WAIT: Duration = Duration::from_secs(600);

/// A CreateTopics answer that did not come in time: the client's read timed out (30 s) or the
/// broker answered REQUEST_TIMED_OUT.
fn timed_out(e: &sluice_tools::ClientError) -> bool {
    use sluice_tools::conn::ConnError;
    use sluice_tools::ClientError;
    match e {
        ClientError::Conn(ConnError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        ClientError::Kafka { code, .. } => *code == 7,
        _ => false,
    }
}

/// Creates the topic. The broker creates partitions one after the other (4,096 took over a
/// minute on the 2-vCPU VM), so a CreateTopics that times out is waited out: loadgen reconnects
/// and polls until the topic has all its partitions and each answers ListOffsets, for up to
/// [`CREATE_WAIT`].
fn create_topic(
    dial: &Dial,
    addr: SocketAddr,
    admin: &mut Client,
    args: &RunArgs,
) -> Result<(), RunError> {
    let e = match admin.create_topic(&args.topic, args.partitions, args.replication_factor, &[]) {
        Ok(_) => return Ok(()),
        Err(e) if timed_out(&e) => e,
        Err(e) => return Err(e.into()),
    };
    let started = Instant::now();
    eprintln!(
        "loadgen: creating topic {} ({} partitions) timed out ({e}); waiting for its partitions",
        args.topic, args.partitions
    );
    let all: Vec<i32> = (0..args.partitions).collect();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        // the old connection may still get the late CreateTopics answer: use a new one
        let ready = dial.connect(addr, "loadgen-admin").and_then(|mut c| {
            let n = c.partitions(&args.topic)?.map_or(0, |p| p.len());
            if n as i32 == args.partitions {
                c.list_offsets(&args.topic, &all, -1)?;
            }
            Ok((n, c))
        });
        match ready {
            Ok((n, c)) if n as i32 == args.partitions => {
                eprintln!(
                    "loadgen: topic {} ready {:.1} s after the timeout",
                    args.topic,
                    started.elapsed().as_secs_f64()
                );
                *admin = c;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if started.elapsed() > CREATE_WAIT => return Err(e.into()),
            Err(_) => {}
        }
        if started.elapsed() > CREATE_WAIT {
            return Err(RunError::Broker(format!(
                "topic {} did not get its {} partitions within {} s of the CreateTopics timeout",
                args.topic,
                args.partitions,
                CREATE_WAIT.as_secs()
            )));
        }
    }
}

/// Runs loadgen with `args`.
pub fn run(args: &RunArgs) -> Result<RunResult, RunError> {
    args.validate().map_err(RunError::Config)?;
    let mut args = args.clone();
    if args.null_sink {
        args.mode = Mode::Produce;
    }
    let clock = Clock::new();
    let run_id = make_run_id(&clock);
    let label = args.label.clone().unwrap_or_else(|| args.default_label());
    let (target, addr, broker, dial) = if args.null_sink {
        let s = NullSink::start(args.partitions)?;
        let addr = s.addr;
        (
            Target::Null(s),
            addr,
            BrokerInfo {
                kind: "null sink".into(),
                address: addr.to_string(),
                cores: None,
                data_dir: None,
                fsync_on_acks_all: Some(false),
            },
            Dial::default(),
        )
    } else if let Some(b) = &args.bootstrap_server {
        let addr = sluice_tools::conn::resolve(b).map_err(sluice_tools::ClientError::from)?;
        let security = args.client_security().map_err(RunError::Config)?;
        (
            Target::External,
            addr,
            BrokerInfo {
                kind: "external".into(),
                address: b.clone(),
                cores: None,
                data_dir: None,
                fsync_on_acks_all: None,
            },
            Dial::new(security).with_host(b, addr),
        )
    } else {
        start_embedded(&args)?
    };
    args.dial = dial;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.pin && matches!(target, Target::Embedded { .. }) && ncpu > args.cores {
        let cpus: Vec<usize> = (args.cores..ncpu).collect();
        pin_to(&cpus);
    }
    let brokers = broker_addrs(&target);
    let result = drive(&args, &label, run_id, clock, addr, broker, &brokers);
    // stop the broker whatever happened
    match target {
        Target::Embedded {
            handles, dir, path, ..
        } => {
            // ask them all to stop first: a cluster's brokers hand leadership over as they go
            for h in &handles {
                h.request_stop();
            }
            for h in handles {
                h.join();
            }
            if args.keep_data {
                if let Some(d) = dir {
                    let kept = d.keep();
                    eprintln!("kept broker data in {}", kept.display());
                }
            } else {
                drop(dir);
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Target::Null(s) => drop(s),
        Target::External => {}
    }
    result
}

fn drive(
    args: &RunArgs,
    label: &str,
    run_id: u32,
    clock: Clock,
    addr: SocketAddr,
    broker: BrokerInfo,
    cluster: &[(i32, SocketAddr)],
) -> Result<RunResult, RunError> {
    let wall = Instant::now();
    let load_average_at_start = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let dial = &args.dial;
    let mut admin = dial.connect(addr, "loadgen-admin")?;
    let partitions = match admin.partitions(&args.topic)? {
        Some(p) if !p.is_empty() => {
            if p.len() as i32 != args.partitions {
                eprintln!(
                    "topic {} exists with {} partitions (not {}); using it as it is",
                    args.topic,
                    p.len(),
                    args.partitions
                );
            }
            p.len() as i32
        }
        _ => {
            if args.mode == Mode::Consume {
                return Err(RunError::Config(format!(
                    "topic {} does not exist",
                    args.topic
                )));
            }
            create_topic(dial, addr, &mut admin, args)?;
            args.partitions
        }
    };
    // an embedded cluster: producers and consumers talk to the partitions' leader
    let addr = if cluster.is_empty() {
        addr
    } else {
        cluster_leader(dial, &mut admin, &args.topic, cluster)?
    };
    if !cluster.is_empty() && args.mode != Mode::Consume {
        warm_up(dial, addr, &args.topic, partitions)?;
    }
    let mut admin = if cluster.is_empty() {
        admin
    } else {
        dial.connect(addr, "loadgen-admin")?
    };
    let all: Vec<i32> = (0..partitions).collect();
    let start_at = if args.mode == Mode::Consume { -2 } else { -1 };
    let start_offsets = if args.null_sink {
        all.iter().map(|p| (*p, 0)).collect()
    } else {
        admin.list_offsets(&args.topic, &all, start_at)?
    };

    let stats = Arc::new(Stats::new());
    let control = Arc::new(ConsumeControl {
        end_offsets: OnceLock::new(),
        abort: AtomicBool::new(false),
        limit: if args.mode == Mode::Consume {
            args.messages
        } else {
            0
        },
        timeout: Duration::from_secs(args.consume_timeout.max(1)),
        read: AtomicU64::new(0),
    });
    if args.mode == Mode::Consume {
        let latest = admin.list_offsets(&args.topic, &all, -1)?;
        let _ = control
            .end_offsets
            .set(latest.iter().map(|x| x.1).collect());
    }
    let spawn_consumers = || -> std::io::Result<Vec<JoinHandle<ConsumerOutcome>>> {
        let n = args.consumers.min(partitions as usize).max(1);
        (0..n)
            .map(|c| {
                let plan = ConsumerPlan {
                    id: c,
                    addr,
                    dial: args.dial.clone(),
                    topic: args.topic.clone(),
                    partitions: start_offsets
                        .iter()
                        .filter(|(p, _)| *p as usize % n == c)
                        .copied()
                        .collect(),
                    run_id,
                    isolation_level: i8::from(args.transactional),
                    clock,
                    stats: stats.clone(),
                    control: control.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("consumer-{c}"))
                    .spawn(move || consumer::run(plan))
            })
            .collect()
    };
    let mut consumers: Vec<JoinHandle<ConsumerOutcome>> = Vec::new();
    let consuming = args.mode != Mode::Produce;
    if args.mode == Mode::Consume || (consuming && !args.consume_after) {
        consumers = spawn_consumers()?;
    }

    let mut producers: Vec<JoinHandle<ProducerOutcome>> = Vec::new();
    if args.mode != Mode::Consume {
        let n = args.producers as u64;
        let mut first = 0u64;
        for i in 0..n {
            let share = args.messages / n + u64::from(i < args.messages % n);
            let warm = args.warmup / n + u64::from(i < args.warmup % n);
            let plan = ProducerPlan {
                id: i as u32,
                run_id,
                addr,
                topic: args.topic.clone(),
                partitions,
                messages: share,
                warmup: warm.min(share),
                first_index: first,
                rate: args.rate as f64 / n as f64,
                args: args.clone(),
                clock,
                stats: stats.clone(),
            };
            first += share;
            producers.push(
                std::thread::Builder::new()
                    .name(format!("producer-{i}"))
                    .spawn(move || producer::run(plan))?,
            );
        }
    }

    let pb = ProgressBar::new(args.messages);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut intervals: Vec<Interval> = Vec::new();
    let mut last_tick = clock.now_us();
    let (mut last_acked, mut last_bytes, mut last_consumed, mut last_cbytes) = (0, 0, 0, 0);
    let mut produced_done_handled = args.mode == Mode::Consume;
    let mut producer_outcomes: Vec<ProducerOutcome> = Vec::new();
    let mut injected = false;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = clock.now_us();
        let acked = stats.acked.load(Ordering::Relaxed);
        let consumed = stats.consumed.load(Ordering::Relaxed);
        if args.mode == Mode::Consume {
            pb.set_position(consumed);
        } else {
            pb.set_position(acked);
        }
        if let Some(at) = args.inject_delete_records_at {
            if !injected && acked >= at {
                injected = true;
                let hw = admin.list_offsets(&args.topic, &[0], -1)?;
                let upto = hw.first().map_or(0, |x| x.1);
                match admin.delete_records(&args.topic, &[(0, upto)]) {
                    Ok(_) => eprintln!("injected fault: deleted partition 0 below offset {upto}"),
                    Err(e) => stats.error(format!("injected DeleteRecords failed: {e}")),
                }
            }
        }
        if now - last_tick >= args.interval_ms * 1000 {
            let (p, e) = stats.take_intervals();
            let a = stats.measured_acked.load(Ordering::Relaxed);
            let b = stats.measured_bytes.load(Ordering::Relaxed);
            let cb = stats.consumed_bytes.load(Ordering::Relaxed);
            intervals.push(Interval {
                start_s: (last_tick - clock.start_us()) as f64 / 1e6,
                duration_s: (now - last_tick) as f64 / 1e6,
                acked: a - last_acked,
                acked_bytes: b - last_bytes,
                consumed: consumed - last_consumed,
                consumed_bytes: cb - last_cbytes,
                produce: p,
                e2e: e,
            });
            let secs = (now - last_tick) as f64 / 1e6;
            pb.set_message(format!(
                "{:.0} msg/s acked, {:.0} msg/s consumed",
                (a - last_acked) as f64 / secs,
                (consumed - last_consumed) as f64 / secs
            ));
            (last_acked, last_bytes, last_consumed, last_cbytes) = (a, b, consumed, cb);
            last_tick = now;
        }
        if !produced_done_handled && producers.iter().all(|h| h.is_finished()) {
            produced_done_handled = true;
            for h in producers.drain(..) {
                producer_outcomes.push(h.join().unwrap_or_default());
            }
            if consuming {
                let end = admin.list_offsets(&args.topic, &all, -1)?;
                let _ = control.end_offsets.set(end.iter().map(|x| x.1).collect());
                if args.consume_after {
                    consumers = spawn_consumers()?;
                    pb.set_length(args.messages);
                }
            }
            if consuming {
                // from here on the bar shows what was read back
                pb.set_message("consuming");
            }
        }
        if produced_done_handled && consumers.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    pb.finish_and_clear();
    let consumer_outcomes: Vec<ConsumerOutcome> = consumers
        .into_iter()
        .filter_map(|h| h.join().ok())
        .collect();
    // the last partial second
    let (p, e) = stats.take_intervals();
    let now = clock.now_us();
    let a = stats.measured_acked.load(Ordering::Relaxed);
    let b = stats.measured_bytes.load(Ordering::Relaxed);
    let consumed = stats.consumed.load(Ordering::Relaxed);
    let cb = stats.consumed_bytes.load(Ordering::Relaxed);
    if !p.is_empty() || !e.is_empty() || a > last_acked || consumed > last_consumed {
        intervals.push(Interval {
            start_s: (last_tick - clock.start_us()) as f64 / 1e6,
            duration_s: ((now - last_tick) as f64 / 1e6).max(1e-3),
            acked: a - last_acked,
            acked_bytes: b - last_bytes,
            consumed: consumed - last_consumed,
            consumed_bytes: cb - last_cbytes,
            produce: p,
            e2e: e,
        });
    }
    let mut produce_hist = new_histogram();
    let mut e2e_hist = new_histogram();
    for i in &intervals {
        let _ = produce_hist.add(&i.produce);
        let _ = e2e_hist.add(&i.e2e);
    }

    let produce = (args.mode != Mode::Consume).then(|| {
        Throughput::new(
            a,
            b,
            stats.measure_start_us.load(Ordering::Relaxed).min(now),
            stats.last_ack_us.load(Ordering::Relaxed).max(1),
        )
    });
    let consume = consuming.then(|| {
        Throughput::new(
            consumed,
            cb,
            stats.first_consume_us.load(Ordering::Relaxed).min(now),
            stats.last_consume_us.load(Ordering::Relaxed).max(1),
        )
    });
    let verification = if consuming {
        let mut checks: BTreeMap<i32, PartitionCheck> = BTreeMap::new();
        for o in &consumer_outcomes {
            for (p, c) in &o.checks {
                checks.insert(*p, c.clone());
            }
        }
        Some(if args.mode == Mode::Consume {
            verify::verify_standalone(&checks)
        } else {
            let sent: Vec<Vec<u64>> = producer_outcomes.iter().map(|o| o.sent.clone()).collect();
            let failed: Vec<Vec<(i32, u64, u64)>> =
                producer_outcomes.iter().map(|o| o.failed.clone()).collect();
            verify::verify(run_id, &checks, &sent, &failed)
        })
    } else {
        None
    };
    Ok(RunResult {
        args: args.clone(),
        label: label.to_string(),
        run_id,
        started_us: clock.start_us(),
        broker,
        produce,
        consume,
        produce_hist,
        e2e_hist,
        intervals,
        verification,
        transactions: stats.transactions.load(Ordering::Relaxed),
        commit_hist: stats
            .commit
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_histogram()),
        add_partitions_hist: stats
            .add_partitions
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_histogram()),
        failed: stats.failed.load(Ordering::Relaxed),
        errors: stats.errors(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        load_average_at_start,
    })
}
