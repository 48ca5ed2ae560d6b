//! The fuzz targets on the stable toolchain (`sluice_server::fuzzing`; the libFuzzer runs are
//! in `fuzz/`, see README.md "Fuzzing"): every input kept under `fuzz/regressions/<target>/`
//! (crashes and timeouts libFuzzer found, each fixed) and every seed replayed, then a short
//! property run of each target on random bytes and on mutated seeds.
//!
//! `SLUICE_FUZZ_CASES` sets the property cases per target (default 256, seconds in CI).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice_server::fuzzing::{Target, TARGETS};

#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

/// The target's entry point and seeds.
#[allow(clippy::type_complexity)]
fn target(name: &str) -> (fn(&[u8]), Vec<Vec<u8>>) {
    let t: &Target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    (t.run, (t.seeds)())
}

fn regressions(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(name);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).expect("read a regression input");
            (p, b)
        })
        .collect();
    out.sort();
    out
}

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// One edit of a seed: overwrite a byte, insert bytes, truncate, or splice in a big number.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Big(usize, [u8; 4]),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                Just(0x7fff_ffffu32),
                Just(0xffff_ffff),
                Just(0x8000_0000),
                Just(0x0000_ffff),
                Just(0x0001_0000)
            ]
        )
            .prop_map(|(i, v)| Edit::Big(i, v.to_be_bytes())),
    ]
}

fn apply(mut s: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = s.len().max(1);
        match e {
            Edit::Set(i, b) => {
                if !s.is_empty() {
                    s[i % n] = *b;
                }
            }
            Edit::Insert(i, b) => {
                let at = i % (s.len() + 1);
                s.splice(at..at, b.iter().copied());
            }
            Edit::Truncate(i) => s.truncate(i % n),
            Edit::Big(i, v) => {
                if s.len() >= 4 {
                    let at = i % (s.len() - 3);
                    s[at..at + 4].copy_from_slice(v);
                }
            }
        }
    }
    s
}

/// Replays the kept inputs and the seeds, then the property run.
fn run(name: &str) {
    let (f, seeds) = target(name);
    assert!(!seeds.is_empty(), "{name} has seeds");
    for (path, input) in regressions(name) {
        eprintln!("{name}: replaying {}", path.display());
        f(&input);
    }
    for s in &seeds {
        f(s);
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let random = proptest::collection::vec(any::<u8>(), 0..512);
    runner
        .run(&random, |input| {
            f(&input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name} on random bytes: {e}"));
    let mutated = (0..seeds.len(), proptest::collection::vec(edit(), 1..6));
    runner
        .run(&mutated, |(i, edits)| {
            f(&apply(seeds[i].clone(), &edits));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name} on mutated seeds: {e}"));
}

#[test]
fn request_frame() {
    run("request_frame");
}

#[test]
fn produce_batch() {
    run("produce_batch");
}

#[test]
fn segment_scan() {
    run("segment_scan");
}

#[test]
fn sasl() {
    run("sasl");
}

#[test]
fn tls_handshake() {
    run("tls_handshake");
}

/// The seeds reach past the first checks: a seed of each target that must succeed does.
#[test]
fn seeds_reach_the_interesting_paths() {
    use bytes::Bytes;
    use sluice_server::api::{decode_frame, Decoded};
    let (_, seeds) = target("request_frame");
    let decoded = seeds
        .iter()
        .filter(|s| {
            matches!(
                decode_frame(Bytes::copy_from_slice(s), |_| Ok(())),
                Ok(Decoded::Request(_))
            )
        })
        .count();
    let versions: usize = sluice_server::api::SUPPORTED
        .iter()
        .map(|k| {
            let (lo, hi) = sluice_server::api::version_range(*k);
            (hi - lo + 1) as usize
        })
        .sum();
    assert_eq!(
        decoded, versions,
        "a seed for every advertised API version decodes"
    );
    let (_, seeds) = target("produce_batch");
    for s in &seeds {
        sluice_engine::batch::validate(&s[1..]).expect("batch seeds validate");
    }
    let (_, seeds) = target("segment_scan");
    let out =
        sluice_engine::fuzzing::scan_bytes(&seeds[0][5..], sluice_engine::Offset(0), 64, false)
            .expect("scan");
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert_eq!(out.next_offset, sluice_engine::Offset(11));
    let (_, seeds) = target("sasl");
    let who: Vec<Option<String>> = seeds
        .iter()
        .map(|s| sluice_server::fuzzing::sasl_principal(s))
        .collect();
    assert_eq!(
        who[0].as_deref(),
        Some("User:alice"),
        "PLAIN over v0 raw tokens"
    );
    assert_eq!(who[2], None, "a wrong password");
    for v in 0..3 {
        assert_eq!(who[5 + 2 * v].as_deref(), Some("User:alice"), "PLAIN v{v}");
        assert_eq!(who[6 + 2 * v].as_deref(), Some("User:bob"), "SCRAM v{v}");
    }
}

/// Requests with an entry in each list, at every advertised version they encode at, through
/// `request_frame` (whose refusal answer must encode at the request's version: DescribeGroups
/// v0-v5, FindCoordinator v0 and v4+, OffsetFetch v0-v1 and v8+, DescribeLogDirs v0-v2,
/// DescribeQuorum v0-v1 and AddPartitionsToTxn v4+ did not).
#[test]
fn refusals_encode_at_every_version() {
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let s = StrBytes::from_static_str;
    let group = || GroupId(s("g"));
    let txn = || TransactionalId(s("t"));
    let topic = || TopicName(s("t"));
    let bodies: Vec<(ApiKey, RequestKind)> = vec![
        (
            ApiKey::DescribeGroups,
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![group()]),
            ),
        ),
        (
            ApiKey::FindCoordinator,
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g"))),
        ),
        (
            ApiKey::FindCoordinator,
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")]),
            ),
        ),
        (
            ApiKey::OffsetFetch,
            RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(group())),
        ),
        (
            ApiKey::OffsetFetch,
            RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group()),
            ])),
        ),
        (
            ApiKey::DescribeLogDirs,
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default()),
        ),
        (
            ApiKey::DescribeQuorum,
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default()),
        ),
        (
            ApiKey::AddPartitionsToTxn,
            RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(txn())
                    .with_v3_and_below_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![0]),
                    ]),
            ),
        ),
        (
            ApiKey::AddPartitionsToTxn,
            RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default().with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(txn()),
                ]),
            ),
        ),
    ];
    let mut ran = 0;
    for (k, body) in &bodies {
        let (lo, hi) = sluice_server::api::version_range(*k);
        for v in lo..=hi {
            let mut b = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(*k as i16)
                .with_request_api_version(v)
                .encode(&mut b, k.request_header_version(v))
                .expect("header");
            if body.encode(&mut b, v).is_err() {
                continue; // a field this version does not have
            }
            sluice_server::fuzzing::request_frame(&b);
            ran += 1;
        }
    }
    assert!(ran >= 36, "{ran} requests");
}
