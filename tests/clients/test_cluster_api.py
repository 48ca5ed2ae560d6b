"""Cluster APIs that librdkafka and kafka-python do not call directly, and the cluster-aware
CLI, against three sluice-server processes that are each a broker and a voter (the `cluster`
fixture of test_cluster.py).

- OffsetForLeaderEpoch (v3, raw protocol): end offsets per leader epoch from the leader,
  NOT_LEADER_OR_FOLLOWER from a follower, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for a
  stale / future current epoch; after a SIGKILL failover the new leader answers the old epoch's
  end and its own epoch (at the log end, before and after writing in it). Single node too.
- DescribeTopicPartitions (v0, raw protocol): the same placement as Metadata, topics sorted by
  name, unknown topics flagged, response_partition_limit and the cursor.
- CreateTopics with explicit replica assignments (confluent-kafka `replica_assignment`).
- `sluice produce` / `sluice consume` against a topic whose leaders are on other brokers than
  the bootstrap one, and across a leader failover.
"""

import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import NewTopic

from helpers import TIMEOUT, admin, consume, create_topic, produce_all, producer
from test_cluster import (  # noqa: F401 - `cluster` is a fixture
    CLI,
    FAILOVER_TIMEOUT,
    VOTERS,
    cluster,
    create_topics,
    partition_from,
    replicas_in_sync,
    wait_until,
)

OFFSET_FOR_LEADER_EPOCH = 23
DESCRIBE_TOPIC_PARTITIONS = 75

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
INVALID_REPLICA_ASSIGNMENT = 39
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 76


# --- a minimal raw Kafka protocol client --------------------------------------------------

def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _uvarint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_string(s):
    b = s.encode()
    return _uvarint(len(b) + 1) + b


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def string(self):
        n = self.take(">h")
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def compact_string(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def compact_array(self, item):
        n = self.uvarint() - 1
        return None if n < 0 else [item() for _ in range(n)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def call(bootstrap, api_key, version, body, flexible):
    """One request to `bootstrap` (host:port); returns a Reader over the response body."""
    host, port = bootstrap.rsplit(":", 1)
    header = struct.pack(">hhi", api_key, version, 7) + _string("raw-test")
    if flexible:
        header += b"\x00"  # no tagged fields
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv(s, 4))[0]
        r = Reader(_recv(s, size))
    assert r.take(">i") == 7, "correlation id"
    if flexible:
        r.tags()
    return r


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def offset_for_leader_epoch(bootstrap, topic, partitions):
    """OffsetForLeaderEpoch v3 for `partitions` = [(partition, current epoch, epoch)]; returns
    {partition: (error, leader epoch, end offset)}."""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", len(partitions))
    for p, current, epoch in partitions:
        body += struct.pack(">iii", p, current, epoch)
    r = call(bootstrap, OFFSET_FOR_LEADER_EPOCH, 3, body, flexible=False)
    r.take(">i")  # throttle
    out = {}
    for _ in range(r.take(">i")):
        assert r.string() == topic
        for _ in range(r.take(">i")):
            err, p, epoch, end = r.take(">hiiq")
            out[p] = (err, epoch, end)
    return out


def describe_topic_partitions(bootstrap, topics, limit=2000, cursor=None):
    """DescribeTopicPartitions v0; returns (topics, next cursor). Each topic is a dict."""
    body = _uvarint(len(topics) + 1)
    for t in topics:
        body += _compact_string(t) + b"\x00"
    body += struct.pack(">i", limit)
    if cursor is None:
        body += struct.pack(">b", -1)
    else:
        body += struct.pack(">b", 1) + _compact_string(cursor[0]) + struct.pack(">i", cursor[1])
        body += b"\x00"
    body += b"\x00"
    r = call(bootstrap, DESCRIBE_TOPIC_PARTITIONS, 0, body, flexible=True)
    r.take(">i")  # throttle

    def ints():
        return r.compact_array(lambda: r.take(">i"))

    def partition():
        p = {}
        p["error"], p["partition"], p["leader"], p["leader_epoch"] = r.take(">hiii")
        p["replicas"], p["isr"], p["elr"], p["last_known_elr"], p["offline"] = (
            ints(), ints(), ints(), ints(), ints()
        )
        r.tags()
        return p

    def topic():
        t = {"error": r.take(">h"), "name": r.compact_string()}
        t["id"] = uuid.UUID(bytes=r.data[r.pos:r.pos + 16])
        r.pos += 16
        t["internal"] = r.take(">b") != 0
        t["partitions"] = r.compact_array(partition)
        t["authorized_operations"] = r.take(">i")
        r.tags()
        return t

    out = r.compact_array(topic)
    nxt = None
    if r.take(">b") != -1:
        nxt = (r.compact_string(), r.take(">i"))
        r.tags()
    r.tags()
    return out, nxt


# --- OffsetForLeaderEpoch ---------------------------------------------------------------

def test_offset_for_leader_epoch_on_a_single_node(broker):
    """One broker leads everything at epoch 0: the end of epoch 0 is the log end; a newer
    epoch is unknown; a current epoch above 0 is UNKNOWN_LEADER_EPOCH."""
    create_topic(broker.bootstrap, "one")
    produce_all(producer(broker.bootstrap), "one", [b"x"] * 7, partition=0)
    got = offset_for_leader_epoch(broker.bootstrap, "one", [(0, 0, 0)])
    assert got[0] == (NONE, 0, 7)
    assert offset_for_leader_epoch(broker.bootstrap, "one", [(0, -1, 1)])[0] == (NONE, -1, -1)
    assert offset_for_leader_epoch(broker.bootstrap, "one", [(1, -1, 0)])[1][0] == (
        UNKNOWN_TOPIC_OR_PARTITION
    )
    assert offset_for_leader_epoch(broker.bootstrap, "one", [(0, 1, 0)])[0][0] == (
        UNKNOWN_LEADER_EPOCH
    )
    assert offset_for_leader_epoch(broker.bootstrap, "nope", [(0, -1, 0)])[0][0] == (
        UNKNOWN_TOPIC_OR_PARTITION
    )


def partition_state(cluster, topic, partition, via=None):
    """(leader, leader epoch, isr) of one partition in `sluice topic describe` from `via`."""
    b = cluster.brokers[via] if via is not None else cluster.running()[0]
    p = partition_from(b, topic, partition)
    return p["leader"], p["leader_epoch"], p["isr"]


def test_offset_for_leader_epoch_follows_a_failover(cluster):
    """RF 3, 10 records at epoch 0: the leader answers (0, 10), followers refuse; after a
    SIGKILL of the leader the new one answers epoch 0's end (10) and its own epoch at the log
    end, before and after it wrote 5 records in it; a client on the old epoch is fenced."""
    create_topics(cluster.bootstrap(), [("ep", 1, 3)])
    a = admin(cluster.bootstrap())
    wait_until("ep in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "ep", 1, 3), 10)
    p = producer(cluster.bootstrap(), acks="all", enable_idempotence=False)
    produce_all(p, "ep", [f"e0-{i}".encode() for i in range(10)], partition=0)
    leader, epoch, isr = wait_until(
        "ep described", lambda: partition_state(cluster, "ep", 0, via=1), 5
    )
    assert epoch == 0 and sorted(isr) == [1, 2, 3]
    lb = cluster.brokers[leader].bootstrap
    assert offset_for_leader_epoch(lb, "ep", [(0, 0, 0)])[0] == (NONE, 0, 10)
    assert offset_for_leader_epoch(lb, "ep", [(0, -1, 0)])[0] == (NONE, 0, 10)
    assert offset_for_leader_epoch(lb, "ep", [(0, 1, 0)])[0][0] == UNKNOWN_LEADER_EPOCH
    for f in (i for i in VOTERS if i != leader):
        got = offset_for_leader_epoch(cluster.brokers[f].bootstrap, "ep", [(0, 0, 0)])
        assert got[0][0] == NOT_LEADER_OR_FOLLOWER, (f, got)

    cluster.brokers[leader].kill()
    other = next(i for i in VOTERS if i != leader)

    def moved():
        new, e, _ = partition_state(cluster, "ep", 0, via=other)
        return (new, e) if new not in (leader, -1) else None

    new, new_epoch = wait_until("a new leader for ep-0", moved, FAILOVER_TIMEOUT)
    assert new_epoch >= 1
    nb = cluster.brokers[new].bootstrap
    # the new leader's image may lag the one asked by a heartbeat
    wait_until(
        "the new leader answers",
        lambda: offset_for_leader_epoch(nb, "ep", [(0, new_epoch, 0)])[0][0] == NONE,
        5,
    )
    # a lower end means the new leader lost records acknowledged with acks=all
    got = offset_for_leader_epoch(nb, "ep", [(0, new_epoch, 0)])[0]
    assert got == (NONE, 0, 10), f"epoch 0 on the new leader {new}: {got}"
    assert offset_for_leader_epoch(nb, "ep", [(0, new_epoch, new_epoch)])[0] == (
        NONE, new_epoch, 10
    )
    assert offset_for_leader_epoch(nb, "ep", [(0, 0, 0)])[0][0] == FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(nb, "ep", [(0, new_epoch + 1, 0)])[0][0] == (
        UNKNOWN_LEADER_EPOCH
    )

    survivors = ",".join(cluster.brokers[i].bootstrap for i in VOTERS if i != leader)
    p = producer(survivors, acks="all", enable_idempotence=False)
    produce_all(p, "ep", [f"e1-{i}".encode() for i in range(5)], partition=0)
    got = offset_for_leader_epoch(
        nb, "ep", [(0, new_epoch, 0)]
    )[0], offset_for_leader_epoch(nb, "ep", [(0, new_epoch, new_epoch)])[0]
    assert got == ((NONE, 0, 10), (NONE, new_epoch, 15))
    # an epoch between the two (none when the epoch moved by one) ends where the new one starts
    if new_epoch > 1:
        assert offset_for_leader_epoch(nb, "ep", [(0, new_epoch, 1)])[0] == (NONE, 0, 10)
    assert offset_for_leader_epoch(nb, "ep", [(0, new_epoch, new_epoch + 1)])[0] == (
        NONE, -1, -1
    )


# --- DescribeTopicPartitions ------------------------------------------------------------

def topic_ids(a, names):
    """{name: uuid.UUID} from confluent-kafka's describe_topics."""
    futures = a.describe_topics(TopicCollection(names))
    out = {}
    for name, f in futures.items():
        u = f.result(TIMEOUT).topic_id
        msb = u.get_most_significant_bits() & (2**64 - 1)
        lsb = u.get_least_significant_bits() & (2**64 - 1)
        out[name] = uuid.UUID(int=(msb << 64) | lsb)
    return out


def test_describe_topic_partitions_matches_metadata_and_pages(cluster):
    """Two topics asked out of order plus an unknown one: sorted by name, ids and placement as
    in Metadata, eligible leader replicas empty; a limit of 3 partitions pages with the cursor;
    an empty topic list describes every topic."""
    create_topics(cluster.bootstrap(), [("dtp-b", 3, 2), ("dtp-a", 2, 3)])
    a = admin(cluster.bootstrap())
    wait_until("dtp-a", lambda: replicas_in_sync(a.list_topics(timeout=10), "dtp-a", 2, 3), 10)
    wait_until("dtp-b", lambda: replicas_in_sync(a.list_topics(timeout=10), "dtp-b", 3, 2), 10)
    md = a.list_topics(timeout=10)
    ids = topic_ids(a, ["dtp-a", "dtp-b"])
    b = cluster.brokers[2].bootstrap
    wait_until(
        "both topics known to broker 2",
        lambda: all(
            t["error"] == NONE
            for t in describe_topic_partitions(b, ["dtp-a", "dtp-b"])[0]
        ),
        5,
    )
    topics, nxt = describe_topic_partitions(b, ["dtp-b", "zzz-missing", "dtp-a"])
    assert nxt is None
    assert [t["name"] for t in topics] == ["dtp-a", "dtp-b", "zzz-missing"]
    assert topics[2]["error"] == UNKNOWN_TOPIC_OR_PARTITION
    assert topics[2]["partitions"] == []
    for t in topics[:2]:
        assert t["error"] == NONE
        assert not t["internal"]
        assert t["id"] == ids[t["name"]]
        want = md.topics[t["name"]].partitions
        assert [p["partition"] for p in t["partitions"]] == sorted(want)
        for p in t["partitions"]:
            m = want[p["partition"]]
            assert p["error"] == NONE
            assert p["leader"] == m.leader
            assert p["replicas"] == m.replicas
            assert sorted(p["isr"]) == sorted(m.isrs)
            assert p["offline"] == []
            assert p["elr"] == [] and p["last_known_elr"] == []
            assert p["leader_epoch"] >= 0

    # pages of 3 partitions: dtp-a 0-1 and dtp-b 0, then dtp-b 1-2
    page1, nxt = describe_topic_partitions(b, ["dtp-a", "dtp-b"], limit=3)
    assert [(t["name"], [p["partition"] for p in t["partitions"]]) for t in page1] == [
        ("dtp-a", [0, 1]), ("dtp-b", [0])
    ]
    assert nxt == ("dtp-b", 1)
    page2, nxt = describe_topic_partitions(b, ["dtp-a", "dtp-b"], limit=3, cursor=nxt)
    assert [(t["name"], [p["partition"] for p in t["partitions"]]) for t in page2] == [
        ("dtp-b", [1, 2])
    ]
    assert nxt is None
    # a page that ends exactly at a topic's end points at the next topic
    page, nxt = describe_topic_partitions(b, ["dtp-a", "dtp-b"], limit=2)
    assert [t["name"] for t in page] == ["dtp-a"] and nxt == ("dtp-b", 0)

    # every topic, sorted
    every, nxt = describe_topic_partitions(b, [])
    names = [t["name"] for t in every]
    assert names == sorted(names) and {"dtp-a", "dtp-b"} <= set(names)
    assert nxt is None


# --- CreateTopics with explicit assignments ---------------------------------------------

def test_create_topics_with_replica_assignment(cluster):
    """replica_assignment [[1,2],[2,3]] is placed as given (first replica leads); unknown
    brokers, duplicates and uneven replica counts are INVALID_REPLICA_ASSIGNMENT. (librdkafka
    wants the partition count given, and sends -1 for it and the replication factor.)"""
    a = admin(cluster.bootstrap())
    a.create_topics([NewTopic("man", 2, replica_assignment=[[1, 2], [2, 3]])])["man"].result(
        TIMEOUT
    )
    ps = wait_until(
        "man in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "man", 2, 2), 10
    )
    assert [p.replicas for p in ps] == [[1, 2], [2, 3]]
    assert [p.leader for p in ps] == [1, 2]

    for name, assignment in [
        ("bad-broker", [[1, 9]]),
        ("bad-dup", [[1, 1]]),
        ("bad-uneven", [[1, 2], [3]]),
    ]:
        f = a.create_topics([NewTopic(name, len(assignment), replica_assignment=assignment)])[name]
        with pytest.raises(KafkaException) as e:
            f.result(TIMEOUT)
        assert e.value.args[0].code() == INVALID_REPLICA_ASSIGNMENT, (name, e.value)
    assert "bad-broker" not in a.list_topics(timeout=10).topics


def test_create_topics_with_replica_assignment_on_a_single_node(broker):
    """A single node accepts an assignment naming only itself."""
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic("solo", 3, replica_assignment=[[0], [0], [0]])])["solo"].result(
        TIMEOUT
    )
    md = a.list_topics(timeout=10)
    assert sorted(md.topics["solo"].partitions) == [0, 1, 2]
    f = a.create_topics([NewTopic("solo2", 1, replica_assignment=[[0, 1]])])["solo2"]
    with pytest.raises(KafkaException) as e:
        f.result(TIMEOUT)
    assert e.value.args[0].code() == INVALID_REPLICA_ASSIGNMENT


# --- the CLI follows partition leaders --------------------------------------------------

def cli(bootstrap, *args, stdin=None, timeout=90):
    return subprocess.run(
        [str(CLI), "--bootstrap-server", bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_consume(bootstrap, topic, n):
    """(partition, key, value) of the first `n` messages, read by `sluice consume`."""
    r = cli(
        bootstrap, "consume", topic, "--from-beginning", "-n", str(n), "--timeout", "15000",
        "-f", "%p %o %k %v\\n",
    )
    assert r.returncode == 0, r.stderr
    rows = [line.split(" ") for line in r.stdout.splitlines()]
    return [(int(p), int(o), k, v) for p, o, k, v in rows]


def test_cli_produce_and_consume_follow_partition_leaders(cluster):
    """RF 3, 3 partitions led by brokers 2 and 3, the CLI bootstrapped from broker 1 (which
    leads none): `sluice produce` sends each partition's batches to its leader and
    `sluice consume` reads them from there; after a SIGKILL of broker 2 both find the new
    leaders (metadata refreshed, retried) and nothing is lost; a partition whose only replica
    is gone makes `sluice produce` give up after its bounded retries with a one-line error."""
    a = admin(cluster.bootstrap())
    assignment = [[2, 3, 1], [3, 1, 2], [2, 1, 3]]
    a.create_topics([NewTopic("cli", 3, replica_assignment=assignment)])["cli"].result(TIMEOUT)
    a.create_topics([NewTopic("solo3", 1, replica_assignment=[[3]])])["solo3"].result(TIMEOUT)
    ps = wait_until(
        "cli in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "cli", 3, 3), 10
    )
    assert [p.leader for p in ps] == [2, 3, 2]
    b1 = cluster.brokers[1].bootstrap
    # broker 1's copy of the image has the topic within a heartbeat
    wait_until("cli known to broker 1", lambda: cli(b1, "topic", "describe", "cli").returncode == 0, 5)

    first = [f"k{i % 17}\tv{i}" for i in range(300)]
    r = cli(b1, "produce", "cli", "--key-separator", "\t", "--acks", "all", stdin="\n".join(first))
    assert r.returncode == 0, r.stderr
    got = consume(cluster.bootstrap(), "cli", range(3))
    assert sorted(rec.value.decode() for rec in got) == sorted(f"v{i}" for i in range(300))
    assert len({rec.partition for rec in got}) == 3
    read = cli_consume(b1, "cli", 300)
    assert sorted(v for _, _, _, v in read) == sorted(f"v{i}" for i in range(300))
    assert {(rec.partition, rec.offset) for rec in got} == {(p, o) for p, o, _, _ in read}

    # broker 2 dies: partitions 0 and 2 move to the next in-sync replica in assignment order
    cluster.brokers[2].kill()
    more = [f"k{i % 17}\tw{i}" for i in range(100)]
    t0 = time.monotonic()
    r = cli(b1, "produce", "cli", "--key-separator", "\t", "--acks", "1", stdin="\n".join(more))
    assert r.returncode == 0, r.stderr
    print(f"produced across the failover in {time.monotonic() - t0:.1f}s")
    read = cli_consume(b1, "cli", 400)
    values = [v for _, _, _, v in read]
    assert sorted(values) == sorted([f"v{i}" for i in range(300)] + [f"w{i}" for i in range(100)])
    # per partition, offsets in order with no gap
    for p in range(3):
        offs = [o for q, o, _, _ in read if q == p]
        assert offs == list(range(len(offs))), (p, offs[:10])

    # the only replica of solo3 is gone: bounded retries, then one line on stderr
    cluster.brokers[3].kill()
    t0 = time.monotonic()
    r = cli(b1, "produce", "solo3", stdin="lost\n")
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gave up after" in lines[0], r.stderr
    assert 5 < took < 60, took
