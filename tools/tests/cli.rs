//! The `sluice` binary against an in-process broker: every subcommand, its output, and the
//! error cases (unreachable broker, unknown topic, bad arguments, partition out of range) with
//! their exit codes and messages; a 10,000-line produce/consume round trip; dump-log on a
//! healthy segment (offsets, positions, sizes and CRCs as produced) and on damaged copies.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use sluice_engine::batch::BatchHeader;
use sluice_tools::produce::{encode_batch, OutRecord};
use sluice_tools::{Client, Compression};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

mod common;
use common::Broker;

impl Broker {
    /// Runs `sluice --bootstrap-server <broker> args...`.
    fn run(&self, args: &[&str]) -> Out {
        run_with(&self.addr, args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_with(&self.addr, args, Some(stdin))
    }

    fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok()
    }

    fn segment(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir
            .path()
            .join(format!("{topic}-{partition}"))
            .join("00000000000000000000.log")
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    fn from(o: Output, what: String) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            what,
        }
    }

    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "{} failed with {}:\nstdout: {}\nstderr: {}",
            self.what, self.code, self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts a failure with exit code `code` and a one-line `sluice: error:` message
    /// containing `needle`.
    fn fails(self, code: i32, needle: &str) -> Out {
        assert_eq!(
            self.code, code,
            "{}: expected exit {code}:\nstdout: {}\nstderr: {}",
            self.what, self.stdout, self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("sluice: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{}: stderr {:?}", self.what, self.stderr);
        assert!(
            errors[0].contains(needle),
            "{}: {:?} does not contain {needle:?}",
            self.what,
            errors[0]
        );
        self
    }

    fn json(self) -> Value {
        let text = self.ok();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

fn run_with(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg("--bootstrap-server").arg(bootstrap).args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn sluice");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&input);
        });
    }
    let o = child.wait_with_output().expect("wait");
    Out::from(o, format!("sluice {}", args.join(" ")))
}

fn lines(n: usize, f: impl Fn(usize) -> String) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&f(i));
        s.push('\n');
    }
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn topic_create_list_describe_alter_delete() {
    let b = Broker::start();
    assert_eq!(
        b.ok(&["topic", "create", "my_first_topic", "--partitions", "10"]),
        "Created topic my_first_topic.\n"
    );
    // Kafka's spelling works too
    b.ok(&[
        "topic",
        "create",
        "--topic",
        "other",
        "-p",
        "2",
        "-c",
        "retention.ms=3600000",
    ]);
    b.run(&["topic", "create", "my_first_topic", "-p", "3"])
        .fails(1, "topic 'my_first_topic' already exists");
    b.ok(&[
        "topic",
        "create",
        "my_first_topic",
        "-p",
        "3",
        "--if-not-exists",
    ]);

    assert_eq!(b.ok(&["topic", "list"]), "my_first_topic\nother\n");

    let d = b.ok(&["topic", "describe", "my_first_topic"]);
    let ls: Vec<&str> = d.lines().collect();
    assert_eq!(ls.len(), 11, "{d}");
    assert!(ls[0].starts_with("Topic: my_first_topic\tTopicId: "), "{d}");
    assert!(
        ls[0].contains("\tPartitionCount: 10\tReplicationFactor: 1\tConfigs: "),
        "{d}"
    );
    for (p, l) in ls[1..].iter().enumerate() {
        assert_eq!(
            *l,
            format!("\tTopic: my_first_topic\tPartition: {p}\tLeader: 0\tReplicas: 0\tIsr: 0")
        );
    }
    let d = b.ok(&["topic", "describe", "--topic", "other"]);
    assert!(
        d.lines()
            .next()
            .expect("line")
            .ends_with("Configs: retention.ms=3600000"),
        "{d}"
    );

    // configs
    b.ok(&[
        "topic",
        "alter-config",
        "other",
        "--set",
        "segment.bytes=1048576",
        "--delete",
        "retention.ms",
    ]);
    let d = b.ok(&["topic", "describe", "other"]);
    assert!(
        d.lines()
            .next()
            .expect("line")
            .ends_with("Configs: segment.bytes=1048576"),
        "{d}"
    );
    let j = b
        .run(&[
            "topic",
            "describe",
            "other",
            "--all-configs",
            "--output",
            "json",
        ])
        .json();
    let configs = j[0]["configs"].as_array().expect("configs");
    assert!(configs
        .iter()
        .any(|c| c["name"] == "retention.ms" && c["source"] == 5));
    b.run(&[
        "topic",
        "alter-config",
        "other",
        "--set",
        "no.such.config=1",
    ])
    .fails(1, "no.such.config");
    b.run(&["topic", "alter-config", "other"])
        .fails(2, "nothing to change");
    b.run(&["topic", "alter-config", "other", "--set", "novalue"])
        .fails(2, "expected key=value");

    // partitions
    assert_eq!(
        b.ok(&["topic", "add-partitions", "other", "--num", "3"]),
        "Topic other now has 5 partitions (was 2).\n"
    );
    b.ok(&["topic", "add-partitions", "other", "--total", "6"]);
    let j = b
        .run(&["topic", "describe", "other", "--output", "json"])
        .json();
    assert_eq!(j[0]["partition_count"], 6);
    assert_eq!(j[0]["name"], "other");
    assert_eq!(j[0]["id"].as_str().expect("id").len(), 22);
    b.run(&["topic", "add-partitions", "other", "--total", "2"])
        .fails(2, "already has 6 partitions");

    // json list
    let j = b.run(&["topic", "list", "--output", "json"]).json();
    assert_eq!(j[0]["name"], "my_first_topic");
    assert_eq!(j[0]["partitions"], 10);

    // delete
    assert_eq!(
        b.ok(&["topic", "delete", "other"]),
        "Deleted topic other.\n"
    );
    assert_eq!(b.ok(&["topic", "list"]), "my_first_topic\n");
    b.ok(&["topic", "delete", "other", "--if-exists"]);

    // unknown topics
    b.run(&["topic", "delete", "other"])
        .fails(1, "topic 'other' does not exist");
    b.run(&["topic", "describe", "nope"])
        .fails(1, "topic 'nope' does not exist");
    b.run(&["topic", "alter-config", "nope", "--set", "retention.ms=1"])
        .fails(1, "topic 'nope' does not exist");
    b.run(&["topic", "add-partitions", "nope", "--num", "1"])
        .fails(1, "topic 'nope' does not exist");

    // bad arguments
    b.run(&["topic", "create", "x", "--partitions", "abc"])
        .fails(2, "invalid value 'abc'");
    b.run(&["topic", "create", "x", "--partitions", "0"])
        .fails(2, "--partitions must be at least 1");
    b.run(&["topic", "create"]).fails(2, "a topic is required");
    b.run(&["topic", "frobnicate"])
        .fails(2, "unrecognized subcommand");
    b.run(&["topic", "list", "--output", "yaml"])
        .fails(2, "invalid value 'yaml'");
    b.run(&["topic", "create", "bad name!", "-p", "1"])
        .fails(1, "InvalidTopicException");
}

#[test]
fn unreachable_broker() {
    // a port nobody listens on
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    for args in [
        &["topic", "list"][..],
        &["topic", "describe", "t"],
        &["topic", "create", "t"],
        &["consume", "t", "--max-messages", "1"],
        &["group", "list"],
        &["group", "describe", "g"],
        &["records", "delete", "t", "--before", "1"],
        &["log-dirs"],
        &["cluster", "info"],
        &["cluster", "quorum"],
        &["cluster", "quorum", "--replication"],
    ] {
        run_with(&addr, args, None).fails(1, &format!("cannot connect to broker {addr}"));
    }
    run_with(&addr, &["produce", "t"], Some(b"x\n"))
        .fails(1, &format!("cannot connect to broker {addr}"));
    run_with("no-such-host.invalid:9092", &["topic", "list"], None)
        .fails(1, "cannot resolve broker address");
    run_with("", &["topic", "list"], None).fails(2, "--bootstrap-server is empty");
}

#[test]
fn produce_consume_round_trip_of_10000_lines() {
    let b = Broker::start();
    b.ok(&["topic", "create", "rt", "-p", "4"]);
    let input = lines(10_000, |i| format!("line-{i:05}"));
    assert_eq!(b.run_stdin(&["produce", "rt"], &input).ok(), "");
    let out = b.run(&[
        "consume",
        "rt",
        "--from-beginning",
        "--max-messages",
        "10000",
        "--format",
        "%p %o %v\\n",
    ]);
    assert!(
        out.stderr.contains("Processed a total of 10000 messages"),
        "{}",
        out.stderr
    );
    let text = out.ok();
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for l in text.lines() {
        let mut it = l.split(' ');
        let p: i32 = it.next().expect("p").parse().expect("partition");
        let o: i64 = it.next().expect("o").parse().expect("offset");
        let v = it.next().expect("v");
        let i: usize = v.strip_prefix("line-").expect("prefix").parse().expect("n");
        per_partition.entry(p).or_default().push((o, i));
    }
    let mut seen = vec![false; 10_000];
    for (p, recs) in &per_partition {
        for (k, (o, i)) in recs.iter().enumerate() {
            assert_eq!(*o, k as i64, "partition {p}: offsets are contiguous from 0");
            if k > 0 {
                assert!(*i > recs[k - 1].1, "partition {p}: lines keep their order");
            }
            assert!(!seen[*i], "line {i} twice");
            seen[*i] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "every line came back");
    assert!(
        per_partition.len() > 1,
        "the sticky partitioner spreads batches"
    );

    // --partition and --offset
    let (p, recs) = per_partition.iter().next().expect("a partition");
    let p_s = p.to_string();
    let text = b.ok(&[
        "consume", "rt", "-p", &p_s, "--offset", "5", "-n", "3", "-f", "%o:%v\\n",
    ]);
    let want: String = recs[5..8]
        .iter()
        .map(|(o, i)| format!("{o}:line-{i:05}\n"))
        .collect();
    assert_eq!(text, want);

    // JSON lines
    let text = b.ok(&[
        "consume", "rt", "-p", &p_s, "--offset", "earliest", "-n", "2", "--output", "json",
    ]);
    let first: Value = serde_json::from_str(text.lines().next().expect("line")).expect("json");
    assert_eq!(first["offset"], 0);
    assert_eq!(first["partition"], *p);
    assert_eq!(first["topic"], "rt");

    // latest + --timeout: nothing new, exits 0
    let out = b.run(&["consume", "rt", "--timeout", "500"]);
    assert!(out.stderr.contains("Processed a total of 0 messages"));
    assert_eq!(out.ok(), "");

    // an offset past the end
    b.run(&[
        "consume", "rt", "-p", "0", "--offset", "99999999", "-n", "1",
    ])
    .fails(1, "offset 99999999 is out of range for rt-0");
}

#[test]
fn produce_keys_headers_partitions_and_errors() {
    let b = Broker::start();
    b.ok(&["topic", "create", "kv", "-p", "3"]);
    let input = lines(30, |i| format!("key{}:value {i}", i % 5));
    b.run_stdin(
        &[
            "produce",
            "kv",
            "--key-separator",
            ":",
            "-H",
            "app=test",
            "-H",
            "v=1",
            "-z",
            "gzip",
        ],
        &input,
    )
    .ok();
    let text = b.ok(&[
        "consume",
        "kv",
        "--from-beginning",
        "-n",
        "30",
        "-f",
        "%p|%k|%v|%h\\n",
    ]);
    let mut key_partition: BTreeMap<String, String> = BTreeMap::new();
    let mut count = 0;
    for l in text.lines() {
        let f: Vec<&str> = l.split('|').collect();
        assert_eq!(f.len(), 4, "{l}");
        assert!(f[2].starts_with("value "), "{l}");
        assert_eq!(f[3], "app=test,v=1");
        // the same key always lands on the same partition (murmur2, as Kafka's producers)
        let prev = key_partition.insert(f[1].to_string(), f[0].to_string());
        assert!(prev.is_none() || prev.as_deref() == Some(f[0]), "{l}");
        count += 1;
    }
    assert_eq!(count, 30);
    assert_eq!(key_partition.len(), 5);

    // Kafka's property spelling; an explicit partition
    b.run_stdin(
        &[
            "produce",
            "kv",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator==",
            "-p",
            "2",
            "--acks",
            "1",
        ],
        b"a=1\nb=2\n",
    )
    .ok();
    // stdin is empty: nothing produced
    let j = b
        .run(&[
            "produce", "kv", "-p", "1", "--acks", "0", "--output", "json",
        ])
        .json();
    assert_eq!(j["records"], 0);
    let text = b.ok(&[
        "consume",
        "kv",
        "-p",
        "2",
        "--offset",
        "earliest",
        "-f",
        "%k=%v\\n",
        "--timeout",
        "1000",
    ]);
    assert!(text.ends_with("a=1\nb=2\n"), "{text}");

    // errors
    b.run_stdin(
        &["produce", "kv", "--key-separator", ":"],
        b"no separator here\n",
    )
    .fails(1, "line 1 has no key separator");
    b.run_stdin(&["produce", "kv", "-p", "3"], b"x\n").fails(
        1,
        "partition 3 is out of range: topic 'kv' has 3 partitions (0..2)",
    );
    b.run(&["consume", "kv", "-p", "7"])
        .fails(1, "partition 7 is out of range");
    b.run(&["consume", "kv", "-p", "-1"])
        .fails(2, "unexpected argument");
    b.run_stdin(&["produce", "nope"], b"x\n")
        .fails(1, "topic 'nope' does not exist");
    b.run(&["consume", "nope", "--from-beginning"])
        .fails(1, "topic 'nope' does not exist");
    b.run_stdin(&["produce", "kv", "--acks", "2"], b"x\n")
        .fails(2, "acks must be all, -1, 0 or 1");
    b.run(&["consume", "kv", "--offset", "5"])
        .fails(2, "needs --partition");
    b.run(&["consume", "kv", "--offset", "soon", "-p", "0"])
        .fails(2, "--offset must be earliest, latest or a number");
    b.run(&["consume", "kv", "-f", "%q"])
        .fails(2, "unknown format directive %q");
    b.run(&["consume", "kv", "--group", "g", "-p", "0"])
        .fails(2, "cannot be used with");
    b.run(&["produce"]).fails(2, "a topic is required");
    // --create-topic uses the broker's defaults
    b.run_stdin(&["produce", "fresh", "--create-topic"], b"hello\n")
        .ok();
    assert_eq!(
        b.ok(&["consume", "fresh", "--from-beginning", "-n", "1"]),
        "hello\n"
    );
}

/// The rows of `group describe` as (topic, partition) -> [current, end, lag, consumer, host,
/// client].
fn lag_rows(text: &str) -> BTreeMap<(String, i32), Vec<String>> {
    let mut out = BTreeMap::new();
    let mut header = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() == Some(&"GROUP") {
            assert_eq!(
                f,
                [
                    "GROUP",
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID"
                ]
            );
            header = true;
            continue;
        }
        // (a member without partitions has a row of dashes: skipped)
        if header && f.len() == 9 && f[2] != "-" {
            out.insert(
                (f[1].to_string(), f[2].parse().expect("partition")),
                f[3..].iter().map(|s| s.to_string()).collect(),
            );
        }
    }
    assert!(header, "no header in {text}");
    out
}

#[test]
fn groups_offsets_lag_reset_and_delete() {
    let b = Broker::start();
    b.ok(&["topic", "create", "gt", "-p", "3"]);
    for p in 0..3 {
        let input = lines(10, |i| format!("p{p}-{i}"));
        b.run_stdin(&["produce", "gt", "-p", &p.to_string()], &input)
            .ok();
    }
    b.run(&["group", "describe", "g"])
        .fails(1, "consumer group 'g' does not exist");

    // a group member that owns all partitions, stops after 12 messages, commits and leaves
    let text = b.ok(&[
        "consume",
        "gt",
        "--group",
        "g",
        "--from-beginning",
        "-n",
        "12",
    ]);
    assert_eq!(text.lines().count(), 12);
    let d = b.ok(&["group", "describe", "g"]);
    assert!(
        d.starts_with("\nConsumer group 'g' has no active members.\n\nGROUP "),
        "{d}"
    );
    let rows = lag_rows(&d);
    assert_eq!(rows.len(), 3);
    let mut current = 0;
    for ((t, _), r) in &rows {
        assert_eq!(t, "gt");
        current += r[0].parse::<i64>().expect("current");
        assert_eq!(r[1], "10");
        assert_eq!(
            r[2].parse::<i64>().expect("lag"),
            10 - r[0].parse::<i64>().expect("c")
        );
        assert_eq!(&r[3..], ["-", "-", "-"]);
    }
    assert_eq!(current, 12);

    // the rest, then lag 0
    let text = b.ok(&["consume", "gt", "--group", "g", "--timeout", "1500"]);
    assert_eq!(text.lines().count(), 18);
    let j = b
        .run(&["group", "describe", "g", "--output", "json"])
        .json();
    assert_eq!(j[0]["state"], "Empty");
    for r in j[0]["rows"].as_array().expect("rows") {
        assert_eq!(r["current_offset"], 10);
        assert_eq!(r["log_end_offset"], 10);
        assert_eq!(r["lag"], 0);
        assert!(r["consumer_id"].is_null());
    }

    // list
    let l = b.ok(&["group", "list"]);
    assert!(
        l.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["g", "Empty", "consumer", "classic"]),
        "{l}"
    );

    // reset: dry run changes nothing, then for real
    let r = b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--all-topics",
        "--to-earliest",
        "--dry-run",
    ]);
    assert!(r.contains("NEW-OFFSET") && r.contains("dry run"), "{r}");
    assert!(lag_rows(&b.ok(&["group", "describe", "g"]))
        .values()
        .all(|r| r[0] == "10"));
    b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt",
        "--to-earliest",
    ]);
    assert!(lag_rows(&b.ok(&["group", "describe", "g"]))
        .values()
        .all(|r| r[0] == "0" && r[2] == "10"));
    b.ok(&[
        "group",
        "reset-offsets",
        "--group",
        "g",
        "--topic",
        "gt:1",
        "--to-offset",
        "4",
    ]);
    b.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt:2",
        "--shift-by",
        "7",
    ]);
    let j = b
        .run(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "gt:0",
            "--to-datetime",
            "2999-01-01T00:00:00Z",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(
        j[0]["new_offset"], 10,
        "a time after every record resets to the end"
    );
    let rows = lag_rows(&b.ok(&["group", "describe", "g"]));
    assert_eq!(rows[&("gt".into(), 0)][0], "10");
    assert_eq!(rows[&("gt".into(), 1)][0], "4");
    assert_eq!(rows[&("gt".into(), 2)][0], "7");
    // consuming resumes from the reset offsets
    let text = b.ok(&["consume", "gt", "--group", "g", "-n", "9", "-f", "%v\\n"]);
    let mut got: Vec<&str> = text.lines().collect();
    got.sort();
    let mut want: Vec<String> = (4..10)
        .map(|i| format!("p1-{i}"))
        .chain((7..10).map(|i| format!("p2-{i}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
    b.run(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "gt:5",
        "--to-earliest",
    ])
    .fails(1, "partition 5 is out of range");
    b.run(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "nope",
        "--to-earliest",
    ])
    .fails(1, "topic 'nope' does not exist");
    b.run(&["group", "reset-offsets", "g", "--topic", "gt"])
        .fails(2, "required");
    b.run(&["group", "reset-offsets", "g", "--to-latest"])
        .fails(2, "required");

    // an active member: describe shows it; reset and delete are refused; it leaves cleanly
    let child = Command::new(BIN)
        .args([
            "--bootstrap-server",
            &b.addr,
            "consume",
            "gt",
            "--group",
            "g",
            "--client-id",
            "cli-test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let active = loop {
        let d = b.ok(&["group", "describe", "g"]);
        let rows = lag_rows(&d);
        if !d.contains("no active members")
            && !d.contains("rebalancing")
            && rows.len() == 3
            && rows.values().all(|r| r[5] == "cli-test")
        {
            break d;
        }
        assert!(Instant::now() < deadline, "the member never showed up: {d}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in lag_rows(&active).values() {
        assert!(r[3].starts_with("cli-test-"), "{active}");
        assert_ne!(r[4], "-");
        assert_eq!(r[0], "10", "{active}");
    }
    b.run(&[
        "group",
        "reset-offsets",
        "g",
        "--all-topics",
        "--to-earliest",
    ])
    .fails(1, "inactive");
    b.run(&["group", "delete", "g"]).fails(1, "not empty");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let o = child.wait_with_output().expect("wait");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // left at once (no session timeout to wait for)
    let d = b.ok(&["group", "describe", "g"]);
    assert!(
        d.contains("Consumer group 'g' has no active members."),
        "{d}"
    );

    // delete
    assert_eq!(
        b.ok(&["group", "delete", "g"]),
        "Deletion of requested consumer groups ('g') was successful.\n"
    );
    b.run(&["group", "describe", "g"])
        .fails(1, "consumer group 'g' does not exist");
    b.run(&["group", "delete", "g"]).fails(1, "does not exist");
    b.run(&["group", "describe"])
        .fails(2, "a group is required");
}

#[test]
fn records_delete_log_dirs_and_cluster_info() {
    let b = Broker::start();
    b.ok(&["topic", "create", "r", "-p", "2"]);
    b.run_stdin(
        &["produce", "r", "-p", "0"],
        &lines(100, |i| format!("{i}")),
    )
    .ok();

    let j = b.run(&["log-dirs", "--output", "json"]).json();
    let topics = j["log_dirs"][0]["topics"].as_array().expect("topics");
    let r = topics.iter().find(|t| t["topic"] == "r").expect("topic r");
    assert!(r["size"].as_i64().expect("size") > 100 * 3);
    assert_eq!(r["partitions"][1]["size"], 0);
    let text = b.ok(&["log-dirs", "--topic", "r"]);
    assert!(text.contains("TOPIC  PARTITION  SIZE"), "{text}");
    b.run(&["log-dirs", "--topic", "nope"])
        .fails(1, "topic 'nope' does not exist");

    assert_eq!(
        b.ok(&["records", "delete", "r", "--before", "40", "-p", "0"]),
        "Records delete operation completed:\npartition: r-0\tlow_watermark: 40\n"
    );
    assert_eq!(
        b.ok(&[
            "consume",
            "r",
            "-p",
            "0",
            "--from-beginning",
            "-n",
            "1",
            "-f",
            "%o %v\\n"
        ]),
        "40 40\n"
    );
    b.run(&["records", "delete", "r", "--before", "1000", "-p", "0"])
        .fails(1, "beyond the end of the log");
    b.run(&["records", "delete", "r", "--before", "1", "-p", "2"])
        .fails(1, "partition 2 is out of range");
    b.run(&["records", "delete", "nope", "--before", "1"])
        .fails(1, "topic 'nope' does not exist");
    b.run(&["records", "delete", "r", "--before", "x"])
        .fails(2, "--before must be an offset");
    let j = b
        .run(&[
            "records", "delete", "r", "--before", "end", "--output", "json",
        ])
        .json();
    assert_eq!(j["partitions"][0]["low_watermark"], 100);
    assert_eq!(j["partitions"][1]["low_watermark"], 0);

    let text = b.ok(&["cluster", "info"]);
    let port = b.addr.rsplit(':').next().expect("port").to_string();
    assert!(text.starts_with("CLUSTER\n=======\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0*", "127.0.0.1", &port, "-"]),
        "{text}"
    );
    assert!(text.contains("\nCONTROLLER\n==========\n0\n\n"), "{text}");
    let j = b.run(&["cluster", "info", "--output", "json"]).json();
    assert_eq!(j["brokers"][0]["port"].as_i64(), port.parse().ok());
    assert_eq!(j["controller_id"], 0);
    assert_eq!(j["topics"], 1);
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn cluster_quorum_of_a_single_node() {
    let b = Broker::start();
    let cluster_id = b.run(&["cluster", "info", "--output", "json"]).json()["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_string();

    // kafka-metadata-quorum.sh describe --status, line for line: a quorum of one
    let expected = format!(
        "ClusterId:              {cluster_id}\n\
         LeaderId:               0\n\
         LeaderEpoch:            0\n\
         HighWatermark:          0\n\
         MaxFollowerLag:         0\n\
         MaxFollowerLagTimeMs:   0\n\
         CurrentVoters:          [0]\n\
         CurrentObservers:       []\n"
    );
    assert_eq!(b.ok(&["cluster", "quorum"]), expected);
    assert_eq!(b.ok(&["cluster", "quorum", "--status"]), expected);
    let j = b.run(&["cluster", "quorum", "--output", "json"]).json();
    assert_eq!(j["cluster_id"], cluster_id.as_str());
    assert_eq!(j["leader_id"], 0);
    assert_eq!(j["leader_epoch"], 0);
    assert_eq!(j["high_watermark"], 0);
    assert_eq!(j["max_follower_lag"], 0);
    assert_eq!(j["max_follower_lag_time_ms"], 0);
    assert_eq!(j["current_voters"], serde_json::json!([0]));
    assert_eq!(j["current_observers"], serde_json::json!([]));
    // DescribeQuorum v2 lists the voters' endpoints: a single node's is its client listener
    assert_eq!(
        j["nodes"],
        serde_json::json!([{"id": 0, "endpoints": [format!("PLAINTEXT://{}", b.addr)]}])
    );

    // --replication: Kafka's tab-separated table, the leader fetched "now"
    let before = now_ms();
    let text = b.ok(&["cluster", "quorum", "--replication"]);
    let after = now_ms();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        "NodeId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus\t"
    );
    let cells: Vec<&str> = lines[1].split('\t').map(str::trim_end).collect();
    assert_eq!(cells.len(), 7, "{text}");
    assert_eq!(&cells[..3], ["0", "0", "0"], "{text}");
    assert_eq!((cells[5], cells[6]), ("Leader", ""), "{text}");
    for t in &cells[3..5] {
        let t: i64 = t.parse().expect("a timestamp");
        assert!(
            (before..=after).contains(&t),
            "{t} not in {before}..={after}"
        );
    }
    // every cell is padded to its column's width
    assert_eq!(
        lines[1].split('\t').map(str::len).collect::<Vec<_>>()[..6],
        [6, 12, 3, 18, 21, 6]
    );
    let j = b
        .run(&["cluster", "quorum", "--replication", "--output", "json"])
        .json();
    let rows = j.as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["node_id"], 0);
    assert_eq!(rows[0]["lag"], 0);
    assert_eq!(rows[0]["status"], "Leader");
    let text = b.ok(&["cluster", "quorum", "--replication", "--human-readable"]);
    assert!(
        text.lines().nth(1).expect("row").contains(" ms ago"),
        "{text}"
    );

    b.run(&["cluster", "quorum", "--status", "--replication"])
        .fails(2, "cannot be used with");
    b.run(&["cluster", "quorum", "--human-readable"])
        .fails(2, "--replication");
}

// ---------------------------------------------------------------------------------------------
// dump-log

struct Produced {
    base_offset: i64,
    count: i32,
    size: usize,
    crc: u32,
    max_timestamp: i64,
    codec: &'static str,
}

fn produce_batch(
    client: &mut Client,
    topic: &str,
    records: &[OutRecord],
    c: Compression,
) -> Produced {
    let batch = encode_batch(records, c).expect("encode");
    let h = *BatchHeader::parse(&batch).expect("header");
    let v = client
        .versions()
        .get(ApiKey::Produce)
        .expect("produce version");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.clone()))])]);
    let resp: ProduceResponse = client
        .connection()
        .call(ApiKey::Produce, v, &req)
        .expect("produce");
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    Produced {
        base_offset: p.base_offset,
        count: h.record_count.get(),
        size: batch.len(),
        crc: h.crc.get(),
        max_timestamp: h.max_timestamp.get(),
        codec: c.name(),
    }
}

fn dump(path: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["dump-log", path.to_str().expect("utf8 path")];
    args.extend_from_slice(extra);
    // dump-log needs no broker: an unreachable bootstrap address proves it
    run_with("127.0.0.1:1", &args, None)
}

#[test]
fn dump_log_healthy_and_damaged_segments() {
    let mut b = Broker::start();
    b.ok(&["topic", "create", "seg", "-p", "1"]);
    let mut client = Client::connect(&b.addr, "dump-test").expect("connect");
    let mut produced = Vec::new();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::None,
        Compression::Zstd,
        Compression::Lz4,
        Compression::None,
    ];
    for (n, c) in codecs.into_iter().enumerate() {
        let recs: Vec<OutRecord> = (0..=n)
            .map(|i| OutRecord {
                key: (i % 2 == 0).then(|| format!("k{n}-{i}").into_bytes()),
                value: Some(format!("value {n}-{i}").into_bytes()),
                headers: if n == 2 {
                    vec![("h".into(), Some(b"x".to_vec()))]
                } else {
                    Vec::new()
                },
                timestamp: Some(1_700_000_000_000 + (n * 10 + i) as i64),
            })
            .collect();
        produced.push(produce_batch(&mut client, "seg", &recs, c));
    }
    drop(client);
    b.stop(); // a clean close trims the preallocated tail
    let seg = b.segment("seg", 0);
    let file_len = std::fs::metadata(&seg).expect("segment").len();
    assert_eq!(
        file_len,
        produced.iter().map(|p| p.size as u64).sum::<u64>()
    );

    // text: one kafka-dump-log line per batch, exactly
    let text = dump(&seg, &[]).ok();
    let ls: Vec<&str> = text.lines().collect();
    assert_eq!(ls[0], format!("Dumping {}", seg.display()));
    assert_eq!(ls[1], "Log starting offset: 0");
    assert_eq!(ls.len(), 2 + produced.len(), "{text}");
    let mut pos = 0usize;
    let mut next = 0i64;
    for (l, p) in ls[2..].iter().zip(&produced) {
        assert_eq!(p.base_offset, next);
        let want = format!(
            "baseOffset: {} lastOffset: {} count: {} baseSequence: -1 lastSequence: -1 \
             producerId: -1 producerEpoch: -1 partitionLeaderEpoch: 0 isTransactional: false \
             isControl: false position: {pos} CreateTime: {} size: {} magic: 2 compresscodec: {} \
             crc: {} isvalid: true",
            p.base_offset,
            p.base_offset + i64::from(p.count) - 1,
            p.count,
            p.max_timestamp,
            p.size,
            p.codec,
            p.crc
        );
        assert_eq!(*l, want);
        pos += p.size;
        next += i64::from(p.count);
    }

    // JSON and records (compressed batches decompressed)
    let j = dump(&seg, &["--print-records", "--output", "json"]).json();
    let f = &j[0];
    assert!(f["damage"].is_null());
    assert_eq!(f["valid_bytes"].as_u64(), Some(file_len));
    assert_eq!(f["records"], 21);
    assert_eq!(f["last_valid_offset"], 20);
    let batches = f["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), produced.len());
    let gz = &batches[1];
    assert_eq!(gz["compresscodec"], "gzip");
    assert_eq!(gz["records"][1]["value"], "value 1-1");
    assert_eq!(gz["records"][1]["offset"], 2);
    assert_eq!(batches[3]["records"][2]["key"], "k3-2");
    let text = dump(&seg, &["--print-records"]).ok();
    assert!(
        text.contains("| offset: 3 CreateTime: 1700000000020 keySize: 4 valueSize: 9 sequence: -1 headerKeys: [h] key: k2-0 headers: [h=x] payload: value 2-0"),
        "{text}"
    );

    // index files
    let idx = seg.with_extension("timeindex");
    if idx.exists() {
        let t = dump(&idx, &[]).ok();
        assert!(t.starts_with("Dumping "), "{t}");
    }

    // damaged copy: one byte of the fourth batch's records flipped (CRC mismatch)
    let dir = tempfile::tempdir().expect("tempdir");
    let data = std::fs::read(&seg).expect("read");
    let fourth: usize = produced[..3].iter().map(|p| p.size).sum();
    let mut bad = data.clone();
    bad[fourth + 61 + 2] ^= 0x40;
    let copy = dir.path().join("00000000000000000000.log");
    std::fs::write(&copy, &bad).expect("write");
    let o = dump(&copy, &[]);
    assert!(o.stdout.contains("isvalid: false"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!(
            "is damaged at position {fourth}: batch at offset 6: CRC-32C mismatch"
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!(
            "It is valid up to position {fourth} (offsets 0..5 in 3 valid batches)"
        )),
        "{}",
        o.stdout
    );
    o.fails(
        1,
        &format!("is damaged at position {fourth} (valid up to position {fourth})"),
    );
    let o = dump(&copy, &["--output", "json"]);
    assert_eq!(o.code, 1);
    let j: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(j[0]["damage"]["position"].as_u64(), Some(fourth as u64));
    assert_eq!(j[0]["valid_bytes"].as_u64(), Some(fourth as u64));
    assert_eq!(j[0]["last_valid_offset"], 5);

    // truncated copies: the file ends inside the fifth batch, then inside its header
    let fifth: usize = produced[..4].iter().map(|p| p.size).sum();
    assert!(produced[4].size > 70);
    std::fs::write(&copy, &data[..fifth + 70]).expect("write");
    let o = dump(&copy, &[]);
    assert!(o.stdout.contains("(truncated)"), "{}", o.stdout);
    o.fails(1, &format!("damaged at position {fifth}"));
    std::fs::write(&copy, &data[..fifth + 30]).expect("write");
    let o = dump(&copy, &[]);
    assert!(
        o.stdout.contains("truncated batch header: 30 bytes"),
        "{}",
        o.stdout
    );
    o.fails(1, &format!("damaged at position {fifth}"));

    // garbage length field in the second batch
    let mut bad = data.clone();
    let second = produced[0].size;
    bad[second + 8..second + 12].copy_from_slice(&7i32.to_be_bytes());
    std::fs::write(&copy, &bad).expect("write");
    dump(&copy, &[]).fails(1, &format!("damaged at position {second}"));

    // trailing zeros (an active segment's preallocation) are not damage
    let mut padded = data.clone();
    padded.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&copy, &padded).expect("write");
    let text = dump(&copy, &[]).ok();
    assert!(
        text.contains("Found 4096 zero bytes after position"),
        "{text}"
    );

    // errors
    dump(&dir.path().join("missing.log"), &[]).fails(1, "cannot read");
    run_with("127.0.0.1:1", &["dump-log"], None).fails(2, "name at least one segment file");
}
