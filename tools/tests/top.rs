//! `sluice top` against an in-process broker: exact end offsets and lag in its JSON lines,
//! messages/s from messages produced between two refreshes, the text frame with `--partitions`,
//! filters, SASL through -X and --command-config, Ctrl-C, an unreachable bootstrap broker and a
//! broker that goes away mid-run.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use sluice_server::config::SecurityProtocol;
use sluice_tools::produce::{encode_batch, OutRecord};
use sluice_tools::{Client, Compression};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

mod common;
use common::Broker;

impl Broker {
    fn client(&self) -> Client {
        Client::connect(&self.addr, "top-test").expect("connect")
    }
}

/// Produces `n` records to `topic`-`partition` (acks=all).
fn produce(client: &mut Client, topic: &str, partition: i32, n: usize) {
    let records: Vec<OutRecord> = (0..n)
        .map(|i| OutRecord {
            key: None,
            value: Some(format!("message {i} of partition {partition}").into_bytes()),
            headers: Vec::new(),
            timestamp: None,
        })
        .collect();
    let batch = encode_batch(&records, Compression::None).expect("encode");
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
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp: ProduceResponse = client
        .connection()
        .call(ApiKey::Produce, v, &req)
        .expect("produce");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

/// Topic `tt` with 3 partitions of 10 messages each, and group `tg` with committed offsets
/// 4, 10 and 0 (lag 6 + 0 + 10).
fn setup(b: &Broker) -> Client {
    let mut c = b.client();
    assert!(c.create_topic("tt", 3, 1, &[]).expect("create"));
    for p in 0..3 {
        produce(&mut c, "tt", p, 10);
    }
    let mut coord = c.group_coordinator("tg", "top-test").expect("coordinator");
    let offsets = [
        ("tt".to_string(), 0, 4),
        ("tt".to_string(), 1, 10),
        ("tt".to_string(), 2, 0),
    ];
    let codes = coord
        .commit_offsets("tg", -1, "", &offsets)
        .expect("commit");
    assert!(codes.iter().all(|(_, _, code)| *code == 0), "{codes:?}");
    c
}

fn spawn(addr: &str, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(BIN)
        .arg("--bootstrap-server")
        .arg(addr)
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice top");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, out)
}

fn json_line(out: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).expect("read a frame");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
}

/// Waits for the child (at most `limit`): (exit code, stderr).
fn finish(mut child: Child, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).expect("stderr");
            }
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice top did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn topic<'a>(frame: &'a Value, name: &str) -> &'a Value {
    frame["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == name)
        .unwrap_or_else(|| panic!("no topic {name} in {frame}"))
}

fn group<'a>(frame: &'a Value, name: &str) -> &'a Value {
    frame["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {frame}"))
}

#[test]
fn json_frames_have_exact_offsets_lag_and_rates() {
    let b = Broker::start();
    let mut c = setup(&b);
    let (child, mut out) = spawn(
        &b.addr,
        &[
            "--iterations",
            "2",
            "--interval-ms",
            "300",
            "--output",
            "json",
        ],
    );
    let first = json_line(&mut out);
    // produced between the two refreshes
    produce(&mut c, "tt", 0, 5);
    let second = json_line(&mut out);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("rest");
    assert_eq!(rest, "", "two frames only");
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");

    // first frame: no rates yet
    let t = topic(&first, "tt");
    assert_eq!(t["partitions"], 3);
    assert_eq!(t["end_offset"], 30);
    assert!(t["messages_per_sec"].is_null(), "{t}");
    assert!(t["bytes"].as_i64().expect("bytes") > 0, "{t}");
    assert!(first["interval_s"].is_null());
    let g = group(&first, "tg");
    assert_eq!(g["state"], "Empty");
    assert_eq!(g["members"], 0);
    assert_eq!(g["lag"], 16);
    assert!(
        g.get("partitions").is_none(),
        "per partition only with --partitions"
    );
    assert!(
        first["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .all(|t| !t["topic"].as_str().expect("name").starts_with("__")),
        "internal topics are left out: {first}"
    );
    assert_eq!(first["errors"], serde_json::json!([]));

    // second frame: 5 more messages on partition 0
    let t = topic(&second, "tt");
    assert_eq!(t["end_offset"], 35);
    let interval = second["interval_s"].as_f64().expect("interval");
    assert!((0.2..5.0).contains(&interval), "{interval}");
    let rate = t["messages_per_sec"].as_f64().expect("messages/s");
    assert!(rate > 0.0, "{t}");
    assert!(
        (rate - 5.0 / interval).abs() < 1e-6,
        "{rate} vs 5 / {interval}"
    );
    let b1 = topic(&first, "tt")["bytes"].as_i64().expect("bytes");
    let b2 = t["bytes"].as_i64().expect("bytes");
    assert!(b2 >= b1, "{b1} -> {b2}");
    let bps = t["bytes_per_sec"].as_f64().expect("bytes/s");
    assert!(
        (bps - (b2 - b1) as f64 / interval).abs() < (b2 - b1) as f64 * 0.2 + 1e-6,
        "{bps}"
    );
    assert_eq!(group(&second, "tg")["lag"], 21);
}

#[test]
fn no_traffic_is_zero_messages_per_second_and_partitions_show_lag_rows() {
    let b = Broker::start();
    let _c = setup(&b);
    let (child, mut out) = spawn(
        &b.addr,
        &[
            "--iterations",
            "2",
            "--interval-ms",
            "300",
            "--output",
            "json",
            "--partitions",
            "--topic",
            "tt",
            "--group",
            "tg",
        ],
    );
    let _first = json_line(&mut out);
    let second = json_line(&mut out);
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(second["topics"].as_array().map(Vec::len), Some(1));
    let t = topic(&second, "tt");
    assert_eq!(t["messages_per_sec"].as_f64(), Some(0.0));
    let g = group(&second, "tg");
    let rows = g["partitions"].as_array().expect("partition rows");
    let lags: Vec<(i64, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap_or(-1);
            (
                n("partition"),
                n("current_offset"),
                n("log_end_offset"),
                n("lag"),
            )
        })
        .collect();
    assert_eq!(lags, [(0, 4, 10, 6), (1, 10, 10, 0), (2, 0, 10, 10)]);
}

#[test]
fn text_frames_without_a_terminal() {
    let b = Broker::start();
    let _c = setup(&b);
    let (child, mut out) = spawn(
        &b.addr,
        &[
            "--iterations",
            "1",
            "--partitions",
            "--group",
            "tg",
            "--group",
            "nope",
        ],
    );
    let mut text = String::new();
    out.read_to_string(&mut text).expect("frame");
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        !text.contains('\x1b'),
        "no escape codes off a terminal: {text:?}"
    );
    assert!(text.starts_with("sluice top  "), "{text}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = text.lines().map(words).collect();
    let has = |row: &[&str]| {
        lines
            .iter()
            .any(|l| l.len() >= row.len() && l[..row.len()] == *row)
    };
    assert!(
        has(&[
            "TOPIC",
            "PARTITIONS",
            "END-OFFSET",
            "MSG/S",
            "STORED",
            "BYTES/S"
        ]),
        "{text}"
    );
    assert!(has(&["tt", "3", "30", "-"]), "{text}");
    assert!(has(&["GROUP", "STATE", "MEMBERS", "LAG"]), "{text}");
    assert!(has(&["tg", "Empty", "0", "16"]), "{text}");
    assert!(has(&["tg", "tt", "0", "4", "10", "6", "-"]), "{text}");
    assert!(has(&["tg", "tt", "2", "0", "10", "10", "-"]), "{text}");
    assert!(
        text.contains("! consumer group 'nope' does not exist"),
        "{text}"
    );
}

#[test]
fn ctrl_c_exits_cleanly() {
    let b = Broker::start();
    let (child, mut out) = spawn(&b.addr, &["--output", "json", "--interval-ms", "200"]);
    let _ = json_line(&mut out);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (code, err) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(err, "");
}

#[test]
fn an_unreachable_bootstrap_broker_is_one_line_and_exit_1() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (child, _out) = spawn(&addr, &["--iterations", "1"]);
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 1, "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with(&format!("sluice: error: cannot connect to broker {addr}")),
        "{err:?}"
    );
}

#[test]
fn a_broker_that_goes_away_is_one_line_and_exit_1() {
    let mut b = Broker::start();
    let _c = setup(&b);
    let (child, mut out) = spawn(&b.addr, &["--output", "json", "--interval-ms", "200"]);
    let _ = json_line(&mut out);
    drop(_c);
    b.stop();
    let (code, err) = finish(child, Duration::from_secs(30));
    assert_eq!(code, 1, "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with(&format!(
            "sluice: error: lost the connection to broker {}",
            b.addr
        )),
        "{err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sasl_through_x_and_command_config() {
    let b = Broker::start_with(|config| {
        config.cores = 1;
        for (k, v) in [
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            ),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 user_alice=\"alice-secret\";",
            ),
        ] {
            config.set(k, v).expect("setting");
        }
    });
    let sasl = b.listener(SecurityProtocol::SaslPlaintext);
    let _c = setup(&b);
    let x = |pw: &str| {
        vec![
            "-X".to_string(),
            "security.protocol=SASL_PLAINTEXT".into(),
            "-X".into(),
            "sasl.mechanism=PLAIN".into(),
            "-X".into(),
            "sasl.username=alice".into(),
            "-X".into(),
            format!("sasl.password={pw}"),
        ]
    };
    let run = |global: &[String]| {
        let mut args: Vec<&str> = global.iter().map(String::as_str).collect();
        args.extend(["--iterations", "1", "--output", "json"]);
        let mut child = Command::new(BIN)
            .arg("--bootstrap-server")
            .arg(&sasl)
            .args(&args[..global.len()])
            .arg("top")
            .args(&args[global.len()..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        let (code, err) = finish(child, Duration::from_secs(20));
        (code, out, err)
    };
    let (code, out, err) = run(&x("alice-secret"));
    assert_eq!(code, 0, "stderr: {err}");
    let f: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(topic(&f, "tt")["end_offset"], 30);
    assert_eq!(
        group(&f, "tg")["lag"],
        16,
        "the coordinator is reached with SASL too"
    );

    let props = b.dir.path().join("client.properties");
    std::fs::write(
        &props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=alice\n\
         sasl.password=alice-secret\n",
    )
    .expect("write properties");
    let (code, out, err) = run(&["--command-config".into(), props.display().to_string()]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        topic(&serde_json::from_str(&out).expect("json"), "tt")["end_offset"],
        30
    );

    let (code, out, err) = run(&x("wrong"));
    assert_eq!((code, out.as_str()), (1, ""), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.starts_with("sluice: error: "), "{err:?}");
}
