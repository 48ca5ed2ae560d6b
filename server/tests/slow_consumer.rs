//! A client that pipelines fetches and stops reading cannot make the broker hold more than
//! its connection's `queued.max.request.bytes` of answers (plus those already being handled):
//! the connection's reader stops taking requests while unsent answers fill the budget, and goes
//! on as the client reads. Observed through the broker's received-bytes counter.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{config, name, start_with, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use sluice_engine::batch::build_uniform;

/// `sluice_network_received_bytes_total` from the broker's /metrics.
fn received_bytes(http: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(http).expect("connect http");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("sluice_network_received_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("received bytes counter") as u64
}

fn fetch_all(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(4 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(4 << 20)])])
}

/// Waits until the counter stops moving (the broker read all it is going to read).
fn settled(http: SocketAddr) -> u64 {
    let mut last = received_bytes(http);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = received_bytes(http);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn a_client_that_stops_reading_stops_being_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    // a fetch answer below is ~1 MiB, from the hot tail (memory)
    cfg.queued_max_request_bytes = 256 << 10;
    let broker = start_with(cfg);
    let http = broker.http_addr.expect("http listener");
    let mut admin = Client::connect(broker.addr);
    admin.create_topic("slow", 1, &[]);
    for _ in 0..16 {
        let batch = build_uniform(64, 1000, 1_700_000_000_000);
        assert!(admin.produce("slow", 0, batch) >= 0);
    }

    let mut slow = Client::connect(broker.addr);
    let req = fetch_all("slow");
    // one fetch read back in full tells how many bytes one request frame is
    let before = settled(http);
    let r: FetchResponse = slow.call(ApiKey::Fetch, 12, &req);
    let got = r.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |b| b.len());
    assert!(
        got > 512 << 10,
        "the answer carries the hot data ({got} bytes)"
    );
    let frame = settled(http) - before;
    assert!(frame > 0);

    // 64 pipelined fetches (the broker's in-flight limit), none of whose answers is read
    const N: u64 = 64;
    let start = settled(http);
    for _ in 0..N {
        slow.send(ApiKey::Fetch, 12, &req);
    }
    let read_while_stalled = (settled(http) - start) / frame;
    assert!(
        read_while_stalled < N / 4,
        "the broker read {read_while_stalled} of {N} requests from a client reading nothing"
    );

    // reading the answers lets the broker take the rest, and every one is answered
    for _ in 0..N {
        let (_, r): (i32, FetchResponse) = slow.recv(ApiKey::Fetch, 12);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.records.as_ref().map_or(0, |b| b.len()), got);
    }
    assert_eq!((settled(http) - start) / frame, N);
    // other clients were served all along
    assert_eq!(admin.fetch("slow", 0, 0).0, 0);
    broker.stop();
}
