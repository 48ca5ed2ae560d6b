"""kafkajs 2.2.4 (npm, the pure-JavaScript client) against sluice, end to end.

kafkajs is driven through the node scripts in tests/clients/js/ (see kafkajs_helpers.py); the
other side of every check is confluent-kafka (librdkafka), the `sluice` CLI, or ListOffsets /
OffsetFetch answers of the broker, and every record, key, value, header, partition, offset
and timestamp is compared exactly:

* kafkajs produces (acks -1 and 1, keys, repeated headers, explicit partitions and Java's
  murmur2 key partitioning, several batches) and confluent-kafka reads; confluent-kafka
  produces and kafkajs reads;
* two kafkajs consumers share a 4-partition topic in one group, commit every record, and one
  leaving hands its partitions to the other: every record is consumed exactly once and the
  committed offsets are what confluent-kafka's committed() and `sluice group describe` show;
* the kafkajs admin client's topic, config, partition, offset and group calls, checked
  against what the broker holds;
* the idempotent producer and transactions (commit and abort), read back by confluent-kafka
  with isolation.level=read_committed.

Compression (gzip, snappy, lz4, zstd from and to kafkajs) is in test_compression.py.
"""

import json
import os
import queue
import subprocess
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, TopicPartition
from kafka.partitioner.default import murmur2

import kafkajs_helpers as kjs
from conftest import REPO
from helpers import TIMEOUT, Rec, consume, create_topic, produce_all, producer

CLI = os.environ.get("SLUICE_CLI_BIN", str(REPO / "target" / "debug" / "sluice"))


def java_partition(key, partitions):
    """Kafka's (and kafkajs' DefaultPartitioner's) partition for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def sample_messages(n, partitions, tag):
    """Keyed (some null keys), binary values (one empty, one null), headers (one record with
    none, repeated names adjacent so kafkajs' header object keeps their order), explicit
    partitions and timestamps."""
    out = []
    for i in range(n):
        key = None if i % 5 == 4 else f"{tag}-k{i % 7}".encode()
        value = (b"" if i == 3 else None if i == 7 else
                 f"{tag}-v{i:04d}-".encode() + bytes([0, 255, i % 256]))
        headers = [] if i % 4 == 0 else [("h-a", f"{i}".encode()), ("h-a", b"\x00\x01"),
                                         ("h-b", b"")][: 1 + i % 3]
        out.append(dict(key=key, value=value, headers=headers, partition=i % partitions,
                        timestamp=1_700_000_000_000 + i))
    return out


def as_recs(msgs, offsets):
    return [Rec(m["partition"], o, m["key"], m["value"], tuple(m["headers"]), m["timestamp"])
            for m, o in zip(msgs, offsets)]


def sort_recs(recs):
    return sorted(recs, key=lambda r: (r.partition, r.offset))


# ---------------------------------------------------------------------------------------------
# produce and consume


def test_kafkajs_produces_confluent_consumes(broker):
    topic, parts = "kjs-produce", 3
    create_topic(broker.bootstrap, topic, parts)
    first = sample_messages(30, parts, "a")
    second = sample_messages(24, parts, "b")
    # acks -1 then acks 1, each in two sends: four batches per partition
    steps = [kjs.send(topic, [kjs.message(**m) for m in batch], acks=acks)
             for acks, batch in [(-1, first[:15]), (-1, first[15:]),
                                 (1, second[:12]), (1, second[12:])]]
    results = kjs.produce(broker.bootstrap, steps)
    # the offsets kafkajs was acknowledged: consecutive per partition, from 0, batch after batch
    want = []
    sent = [first[:15], first[15:], second[:12], second[12:]]
    next_offset = {p: 0 for p in range(parts)}
    for batch, res in zip(sent, results):
        assert sorted(r["partition"] for r in res["records"]) == list(range(parts))
        for r in res["records"]:
            assert r["errorCode"] == 0 and r["topicName"] == topic
            assert int(r["baseOffset"]) == next_offset[r["partition"]], res
            assert r["logAppendTime"] == "-1"  # CreateTime topic
        expected_offsets = []
        for m in batch:
            expected_offsets.append(next_offset[m["partition"]])
            next_offset[m["partition"]] += 1
        assert res["offsets"] == expected_offsets
        want += as_recs(batch, res["offsets"])
    got = consume(broker.bootstrap, topic, list(range(parts)))
    assert sort_recs(got) == sort_recs(want)


def test_kafkajs_key_partitioning_matches_java(broker):
    """Messages without a partition go where Java's murmur2 partitioner puts their key; kafkajs
    reports each partition's base offset, confluent-kafka reads the records there."""
    topic, parts = "kjs-keys", 5
    create_topic(broker.bootstrap, topic, parts)
    keys = [f"user-{i}".encode() for i in range(40)]
    msgs = [kjs.message(f"v{i}".encode(), key=k) for i, k in enumerate(keys)]
    [res] = kjs.produce(broker.bootstrap, [kjs.send(topic, msgs)])
    per_partition = Counter(java_partition(k, parts) for k in keys)
    assert {r["partition"]: int(r["baseOffset"]) for r in res["records"]} == {
        p: 0 for p in per_partition}
    got = consume(broker.bootstrap, topic, list(range(parts)))
    want = {}
    for i, k in enumerate(keys):
        p = java_partition(k, parts)
        want.setdefault(p, []).append((k, f"v{i}".encode()))
    assert {p: [(r.key, r.value) for r in got if r.partition == p] for p in want} == want
    assert len(got) == len(keys)
    for p in want:
        assert [r.offset for r in got if r.partition == p] == list(range(per_partition[p]))


def test_confluent_produces_kafkajs_consumes(broker):
    topic, parts = "kjs-consume", 3
    create_topic(broker.bootstrap, topic, parts)
    prod = producer(broker.bootstrap)
    want = []
    for p in range(parts):
        n = 10 + 5 * p
        vals = [f"p{p}-{i}".encode() + bytes([i]) for i in range(n)]
        keys = [None if i % 3 == 0 else f"key-{i}".encode() for i in range(n)]
        ts = 1_650_000_000_000 + p
        headers = (("x", b"1"), ("x", b"2"), ("y", b"\xff"))
        d = produce_all(prod, topic, vals, keys=keys, partition=p, timestamp=ts,
                        headers=list(headers))
        # (librdkafka's delivery reports carry no headers)
        want += [Rec(r.partition, r.offset, r.key, r.value, headers, ts) for r in d.ok]
    got = kjs.consume(broker.bootstrap, topic)
    assert sort_recs(got) == sort_recs(want)
    # kafkajs hands each partition's records over in offset order
    for p in range(parts):
        offs = [r.offset for r in got if r.partition == p]
        assert offs == sorted(offs) == list(range(len(offs)))
