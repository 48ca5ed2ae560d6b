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


# ---------------------------------------------------------------------------------------------
# consumer groups

SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
WAIT = 60.0


class Member:
    """One kafkajs group member: tests/clients/js/group.js in its own node process."""

    def __init__(self, bootstrap, topic, group, name):
        kjs.require_kafkajs()
        self.name = name
        self.events = queue.Queue()
        self.records = []  # every "record" event, in order: (partition, offset, key, value)
        self.owned = []  # for each record, the assignment of the member's latest join before it
        self.joins = []  # every "joined" event, in order
        self.lock = threading.Lock()
        conf = {"brokers": [bootstrap], "topic": topic, "groupId": group, "clientId": name,
                "sessionTimeout": SESSION_MS, "heartbeatInterval": 300,
                "rebalanceTimeout": 10000}
        self.proc = subprocess.Popen(
            [kjs.NODE, str(kjs.JS / "group.js"), json.dumps(conf)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"),
        )
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.lock:
                if ev["event"] == "record":
                    self.owned.append(self.joins[-1]["assignment"] if self.joins else [])
                    self.records.append((ev["partition"], ev["offset"], kjs.unb64(ev["key"]),
                                         kjs.unb64(ev["value"])))
                elif ev["event"] == "joined":
                    self.joins.append(ev)
            self.events.put(ev)

    def assignment(self):
        with self.lock:
            return self.joins[-1]["assignment"] if self.joins else None

    def join_count(self):
        with self.lock:
            return len(self.joins)

    def stop(self):
        """A clean leave: disconnect() sends LeaveGroup; the process must exit 0."""
        if self.proc.poll() is None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.proc.stdin.close()
        code = self.proc.wait(30)
        assert code == 0, f"{self.name} exited {code}:\n{self.log()}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self):
        return "".join(self.stderr[-80:])

    def crashes(self):
        return [e for e in list(self.events.queue) if e["event"] == "crash"]


def wait_for(cond, what, members, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {m.name}\n{m.log()}" for m in members)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def ck_committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def cli_describe(bootstrap, group):
    r = subprocess.run([CLI, "--bootstrap-server", bootstrap, "group", "describe", group,
                        "--output", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [g] = json.loads(r.stdout)
    return g


def test_kafkajs_group_splits_partitions_and_takes_over_on_leave(broker):
    topic, group, parts, per = "kjs-group", "kjs-group-1", 4, 10
    create_topic(broker.bootstrap, topic, parts)
    prod = producer(broker.bootstrap)

    def fill(round_):
        out = []
        for p in range(parts):
            vals = [f"r{round_}-p{p}-{i}".encode() for i in range(per)]
            d = produce_all(prod, topic, vals, keys=[f"k{i}".encode() for i in range(per)],
                            partition=p)
            out += [(r.partition, r.offset, r.key, r.value) for r in d.ok]
        return out

    produced = fill(1)
    a = Member(broker.bootstrap, topic, group, "kjs-a")
    b = Member(broker.bootstrap, topic, group, "kjs-b")
    members = [a, b]
    try:
        # one generation in which the two split the four partitions, two each (round robin)
        def split():
            pa, pb = a.assignment(), b.assignment()
            return pa is not None and pb is not None and sorted(pa + pb) == list(range(parts))
        wait_for(split, "a generation with both members", members)
        assert len(a.assignment()) == len(b.assignment()) == 2
        wait_for(lambda: len(a.records) + len(b.records) >= len(produced),
                 "the first round to be consumed", members)
        time.sleep(0.5)  # nothing more may come
        # exactly once, and each record from a partition its consumer owned
        assert sorted(a.records + b.records) == sorted(produced)
        joins = b.join_count()
        for m in members:
            assert all(r[0] in owned for r, owned in zip(m.records, m.owned)), m.name
        assert ck_committed(broker.bootstrap, group, topic, range(parts)) == {
            p: per for p in range(parts)}
        g = cli_describe(broker.bootstrap, group)
        assert g["state"] == "Stable" and len(g["members"]) == 2, g
        assert {r["partition"]: (r["current_offset"], r["log_end_offset"], r["lag"])
                for r in g["rows"]} == {p: (per, per, 0) for p in range(parts)}

        # a leaves: b is given all four partitions in a newer generation, and reads round 2
        a_partitions = set(a.assignment())
        a_count = len(a.records)
        a.stop()
        wait_for(lambda: b.join_count() > joins and b.assignment() == list(range(parts)),
                 "b to take over a's partitions", members)
        produced += fill(2)
        wait_for(lambda: len(a.records) + len(b.records) >= len(produced),
                 "the second round to be consumed", members)
        time.sleep(0.5)
        assert len(a.records) == a_count
        assert sorted(a.records + b.records) == sorted(produced)
        assert Counter(r[0] for r in b.records[-(parts * per):]) == {p: per for p in range(parts)}
        assert a_partitions <= {r[0] for r in b.records}
        assert ck_committed(broker.bootstrap, group, topic, range(parts)) == {
            p: 2 * per for p in range(parts)}
        g = cli_describe(broker.bootstrap, group)
        assert g["state"] == "Stable" and len(g["members"]) == 1, g
        assert {r["partition"]: (r["current_offset"], r["log_end_offset"], r["lag"])
                for r in g["rows"]} == {p: (2 * per, 2 * per, 0) for p in range(parts)}
        assert not a.crashes() and not b.crashes()

        b.stop()
        g = cli_describe(broker.bootstrap, group)
        assert g["state"] == "Empty" and g["members"] == [], g
    finally:
        for m in members:
            m.kill()
