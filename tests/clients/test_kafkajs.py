"""kafkajs 2.2.4 (npm, the pure-JavaScript client) against sluice, end to end.

kafkajs is driven through the node scripts in tests/clients/js/ (see kafkajs_helpers.py); the
other side of every check is confluent-kafka (librdkafka), the `sluice` CLI, or ListOffsets /
OffsetFetch answers of the broker, and every record, key, value, header, partition, offset
and timestamp is compared exactly:

* kafkajs produces (acks -1 and 1, keys, repeated headers, explicit partitions and Java's
  murmur2 key partitioning, several batches) and confluent-kafka reads; confluent-kafka
  produces and kafkajs reads;
* two kafkajs consumers share a 4-partition topic in one group, commit every record, and one
  leaving (LeaveGroup) or SIGKILLed (session expiry) hands its partitions to the other: every
  record is consumed exactly once and the committed offsets are what confluent-kafka's
  committed() and `sluice group describe` show;
* the kafkajs admin client's topic, config (describe and alter), partition, offset and group
  calls, checked against what the broker holds;
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

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType
from kafka.partitioner.default import murmur2

import kafkajs_helpers as kjs
from conftest import REPO
from helpers import TIMEOUT, Rec, admin, consume, create_topic, produce_all, producer

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


@pytest.mark.parametrize("how", ["leave", "kill"])
def test_kafkajs_group_splits_partitions_and_takes_over(broker, how):
    """`leave`: a's disconnect() sends LeaveGroup, the rebalance starts at once; `kill`: a is
    SIGKILLed while idle (everything it reported is committed) and b takes over once a's
    session (6 s) has expired."""
    topic, group, parts, per = "kjs-group", f"kjs-group-{how}", 4, 10
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
        started = time.monotonic()
        if how == "leave":
            a.stop()
        else:
            a.kill()
        wait_for(lambda: b.join_count() > joins and b.assignment() == list(range(parts)),
                 "b to take over a's partitions", members)
        if how == "kill":
            # not before the session timeout (less the heartbeat's slack)
            assert time.monotonic() - started > SESSION_MS / 1000 - 1
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


# ---------------------------------------------------------------------------------------------
# admin

TOPIC_RESOURCE = 2  # kafkajs ConfigResourceTypes.TOPIC
SOURCE_TOPIC, SOURCE_DEFAULT = 1, 5  # DescribeConfigs config sources


def ck_partitions(bootstrap, topic):
    """{partition: (leader, replicas, isrs)} from confluent-kafka's Metadata, or None."""
    md = admin(bootstrap).list_topics(timeout=TIMEOUT).topics.get(topic)
    if md is None or md.error is not None:
        return None
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in md.partitions.values()}


def ck_configs(bootstrap, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = admin(bootstrap)  # must outlive the future
    [fut] = a.describe_configs([res], request_timeout=TIMEOUT).values()
    return {name: (e.value, e.is_default) for name, e in fut.result(TIMEOUT).items()}


def ck_commit(bootstrap, group, topic, offsets):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                 asynchronous=False)
    finally:
        c.close()


def test_kafkajs_admin_topics_and_configs(broker):
    bs = broker.bootstrap
    a, b, c = "kjs-adm-a", "kjs-adm-b", "kjs-adm-c"
    r = kjs.admin(
        bs,
        ("createTopics", {"topics": [
            {"topic": a, "numPartitions": 3, "replicationFactor": 1, "configEntries": [
                {"name": "retention.ms", "value": "123456789"},
                {"name": "message.timestamp.type", "value": "LogAppendTime"}]},
            {"topic": b, "numPartitions": 1}]}),
        # already there: kafkajs resolves false on TOPIC_ALREADY_EXISTS
        ("createTopics", {"topics": [{"topic": a, "numPartitions": 3}]}),
        # a cleanup.policy that is neither delete nor compact is refused
        ("createTopics", {"topics": [{"topic": c, "numPartitions": 1, "configEntries": [
            {"name": "cleanup.policy", "value": "compact,shred"}]}]}),
        ("listTopics",),
        ("fetchTopicMetadata", {"topics": [a, b]}),
        ("describeConfigs", {"resources": [{"type": TOPIC_RESOURCE, "name": a, "configNames": [
            "retention.ms", "message.timestamp.type", "segment.bytes"]}],
            "includeSynonyms": False}),
        ("describeConfigs", {"resources": [{"type": TOPIC_RESOURCE, "name": a}],
                             "includeSynonyms": False}),
    )
    created, again, bad, listed, metadata, some, every = r
    assert kjs.ok(created) is True
    assert kjs.ok(again) is False
    assert bad["error"]["name"] == "KafkaJSAggregateError"
    assert [(e["type"], e["code"]) for e in bad["error"]["errors"]] == [("INVALID_CONFIG", 40)]
    assert ck_partitions(bs, c) is None

    # listTopics is what Metadata holds (no internal topics in either)
    ck_topics = set(admin(bs).list_topics(timeout=TIMEOUT).topics)
    assert sorted(kjs.ok(listed)) == sorted(ck_topics) == sorted([a, b])

    topics = {t["name"]: t["partitions"] for t in kjs.ok(metadata)["topics"]}
    assert sorted(topics) == [a, b]
    for name, want_n in [(a, 3), (b, 1)]:
        ck = ck_partitions(bs, name)
        assert sorted(ck) == list(range(want_n))
        assert {p["partitionId"]: (p["leader"], p["replicas"], p["isr"]) for p in topics[name]} \
            == ck
        assert all(p["partitionErrorCode"] == 0 and p["offlineReplicas"] == []
                   for p in topics[name])

    # DescribeConfigs: the values, defaults and sources the broker has, as confluent sees them
    ck = ck_configs(bs, a)
    [res] = kjs.ok(some)["resources"]
    assert (res["errorCode"], res["resourceType"], res["resourceName"]) == (0, TOPIC_RESOURCE, a)
    entries = {e["configName"]: e for e in res["configEntries"]}
    assert sorted(entries) == ["message.timestamp.type", "retention.ms", "segment.bytes"]
    assert {k: (e["configValue"], e["isDefault"], e["configSource"]) for k, e in entries.items()} \
        == {"retention.ms": ("123456789", False, SOURCE_TOPIC),
            "message.timestamp.type": ("LogAppendTime", False, SOURCE_TOPIC),
            "segment.bytes": (ck["segment.bytes"][0], True, SOURCE_DEFAULT)}
    [res] = kjs.ok(every)["resources"]
    assert {e["configName"]: (e["configValue"], e["isDefault"]) for e in res["configEntries"]} \
        == ck

    # createPartitions grows the topic; the new partitions have a leader at once
    r = kjs.admin(bs, ("createPartitions", {"topicPartitions": [{"topic": a, "count": 5}]}),
                  ("createPartitions", {"topicPartitions": [{"topic": b, "count": 1}]}),
                  ("fetchTopicMetadata", {"topics": [a]}))
    grown, same, metadata = r
    assert kjs.ok(grown) is None
    assert same["error"]["type"] == "INVALID_PARTITIONS"
    [t] = kjs.ok(metadata)["topics"]
    ck = ck_partitions(bs, a)
    assert sorted(ck) == list(range(5))
    assert {p["partitionId"]: (p["leader"], p["replicas"], p["isr"]) for p in t["partitions"]} \
        == ck

    # a LogAppendTime topic: kafkajs gets the broker's append time in the Produce response
    before = int(time.time() * 1000)
    [res] = kjs.produce(bs, [kjs.send(a, [kjs.message(b"x", partition=4, timestamp=5)])])
    [rec] = res["records"]
    assert before - 1000 <= int(rec["logAppendTime"]) <= int(time.time() * 1000) + 1000
    [got] = [r for r in consume(bs, a, [4])]
    assert got.timestamp == int(rec["logAppendTime"])

    # alterConfigs (AlterConfigs, not incremental) replaces the topic's whole config set: the
    # key it names is set, message.timestamp.type, which it leaves out, is back to its default
    r = kjs.admin(bs, ("alterConfigs", {"resources": [{"type": TOPIC_RESOURCE, "name": a,
                                                       "configEntries": [
                                                           {"name": "retention.ms",
                                                            "value": "1000000"}]}]}))
    [res] = kjs.ok(r[0])["resources"]
    assert (res["errorCode"], res["resourceName"]) == (0, a)
    ck = ck_configs(bs, a)
    assert ck["retention.ms"] == ("1000000", False)
    assert ck["message.timestamp.type"] == ("CreateTime", True)

    # deleteTopics: gone from Metadata for both clients; deleting it again is an error
    r = kjs.admin(bs, ("deleteTopics", {"topics": [b]}), ("listTopics",),
                  ("deleteTopics", {"topics": [b]}))
    deleted, listed, missing = r
    assert kjs.ok(deleted) is None
    assert kjs.ok(listed) == [a]
    assert ck_partitions(bs, b) is None
    assert "This server does not host this topic-partition" in missing["error"]["message"]


def test_kafkajs_admin_offsets_and_groups(broker):
    bs = broker.bootstrap
    topic, group = "kjs-offsets", "kjs-adm-group"
    create_topic(bs, topic, 3)
    prod = producer(bs)
    counts = {0: 4, 1: 0, 2: 7}
    for p, n in counts.items():
        if n:
            produce_all(prod, topic, [f"{p}-{i}".encode() for i in range(n)], partition=p,
                        timestamp=1_600_000_000_000 + 1000 * p)
    # DeleteRecords moves partition 2's log start to 3 (kafkajs' deleteTopicRecords needs the
    # topic's metadata loaded first)
    r = kjs.admin(
        bs,
        ("fetchTopicMetadata", {"topics": [topic]}),
        ("deleteTopicRecords", {"topic": topic, "partitions": [{"partition": 2, "offset": "3"}]}),
        ("fetchTopicOffsets", topic),
        ("fetchTopicOffsetsByTimestamp", topic, 1_600_000_000_000 + 1500),
        ("fetchOffsets", {"groupId": group, "topics": [topic]}),
    )
    _, deleted, offsets, by_time, fetched = r
    assert kjs.ok(deleted) is None
    assert sorted((o["partition"], o["low"], o["high"], o["offset"]) for o in kjs.ok(offsets)) \
        == [(0, "0", "4", "4"), (1, "0", "0", "0"), (2, "3", "7", "7")]
    # the first offset at or after the timestamp; none (the end) where every record is older
    assert sorted((o["partition"], o["offset"]) for o in kjs.ok(by_time)) == [
        (0, "4"), (1, "0"), (2, "3")]
    assert kjs.ok(fetched) == [{"topic": topic, "partitions": [
        {"partition": p, "offset": "-1", "metadata": None} for p in range(3)]}]

    # offsets committed by confluent-kafka are what fetchOffsets reads
    ck_commit(bs, group, topic, {0: 2, 2: 5})
    [fetched] = kjs.admin(bs, ("fetchOffsets", {"groupId": group, "topics": [topic]}))
    assert kjs.ok(fetched) == [{"topic": topic, "partitions": [
        {"partition": 0, "offset": "2", "metadata": None},
        {"partition": 1, "offset": "-1", "metadata": None},
        {"partition": 2, "offset": "5", "metadata": None}]}]

    # setOffsets (a kafkajs consumer joins, seeks and commits, then leaves; kafkajs idles 5 s,
    # its paused consumer's maxWaitTime, before it leaves: no request is outstanding then, so
    # each of the three calls below costs that) and resetOffsets
    # (commits the logical offset -1 / -2, which fetchOffsets' resolveOffsets turns into the
    # log end / start and commits again), read back by confluent-kafka
    [set_] = kjs.admin(bs, ("setOffsets", {"groupId": group, "topic": topic, "partitions": [
        {"partition": 0, "offset": "3"}, {"partition": 1, "offset": "0"}]}))
    assert kjs.ok(set_) is None
    assert ck_committed(bs, group, topic, range(3)) == {0: 3, 1: 0, 2: 5}
    r = kjs.admin(bs, ("resetOffsets", {"groupId": group, "topic": topic, "earliest": True}),
                  ("fetchOffsets", {"groupId": group, "topics": [topic]}),
                  ("fetchOffsets", {"groupId": group, "topics": [topic],
                                    "resolveOffsets": True}))
    reset, raw, resolved = r
    assert kjs.ok(reset) is None
    assert [(p["partition"], p["offset"]) for p in kjs.ok(raw)[0]["partitions"]] == [
        (0, "-2"), (1, "-2"), (2, "-2")]
    assert [(p["partition"], p["offset"]) for p in kjs.ok(resolved)[0]["partitions"]] == [
        (0, "0"), (1, "0"), (2, "3")]
    assert ck_committed(bs, group, topic, range(3)) == {0: 0, 1: 0, 2: 3}

    # describeGroups / listGroups while a kafkajs member is in the group, and after it left
    m = Member(bs, topic, group, "kjs-described")
    try:
        wait_for(lambda: m.assignment() == [0, 1, 2], "the member's join", [m])
        wait_for(lambda: len(m.records) == 4 + 0 + 4, "the member to consume", [m])
        member_id = m.joins[-1]["memberId"]
        r = kjs.admin(bs, ("describeGroups", [group, "kjs-no-such-group"]), ("listGroups",))
        described, listed = r
        live, none = kjs.ok(described)["groups"]
        assert (live["groupId"], live["errorCode"], live["state"], live["protocolType"],
                live["protocol"]) == (group, 0, "Stable", "consumer", "RoundRobinAssigner")
        [mem] = live["members"]
        assert (mem["memberId"], mem["clientId"]) == (member_id, "kjs-described")
        assert mem["clientHost"].lstrip("/") == "127.0.0.1"
        assert (none["groupId"], none["errorCode"], none["state"], none["members"]) == (
            "kjs-no-such-group", 0, "Dead", [])
        cadmin = admin(bs)
        [ck] = cadmin.describe_consumer_groups([group], request_timeout=TIMEOUT).values()
        ck = ck.result(TIMEOUT)
        assert ck.state == ConsumerGroupState.STABLE
        assert [x.member_id for x in ck.members] == [member_id]
        assert {g["groupId"]: g["protocolType"] for g in kjs.ok(listed)["groups"]} == {
            group: "consumer"}
        m.stop()
    finally:
        m.kill()
    assert ck_committed(bs, group, topic, range(3)) == {0: 4, 1: 0, 2: 7}
    r = kjs.admin(bs, ("describeGroups", [group]), ("deleteGroups", [group]), ("listGroups",),
                  ("fetchOffsets", {"groupId": group, "topics": [topic]}))
    described, deleted, listed, fetched = r
    [g] = kjs.ok(described)["groups"]
    assert (g["state"], g["protocolType"], g["members"]) == ("Empty", "consumer", [])
    assert kjs.ok(deleted) == [{"groupId": group, "errorCode": 0}]
    assert kjs.ok(listed)["groups"] == []
    assert [p["offset"] for p in kjs.ok(fetched)[0]["partitions"]] == ["-1", "-1", "-1"]


# ---------------------------------------------------------------------------------------------
# idempotence and transactions


def dump_batches(broker, topic, partition):
    seg = broker.data_dir / f"{topic}-{partition}" / "00000000000000000000.log"
    r = subprocess.run([CLI, "dump-log", "--output", "json", str(seg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [dump] = json.loads(r.stdout)
    return dump["batches"]


def test_kafkajs_idempotent_producer(broker):
    topic = "kjs-idem"
    create_topic(broker.bootstrap, topic, 2)
    sends = [[kjs.message(f"s{s}-{i}".encode(), key=b"k", partition=i % 2) for i in range(n)]
             for s, n in enumerate([5, 1, 8])]
    results = kjs.produce(broker.bootstrap, [kjs.send(topic, m) for m in sends],
                          idempotent=True, maxInFlightRequests=1)
    want = []
    for msgs, res in zip(sends, results):
        want += [Rec(m["partition"], o, b"k", kjs.unb64(m["value"]))
                 for m, o in zip(msgs, res["offsets"])]
    got = consume(broker.bootstrap, topic, [0, 1])
    assert sorted((r.partition, r.offset, r.key, r.value) for r in got) == sorted(
        (r.partition, r.offset, r.key, r.value) for r in want)
    # every batch carries the producer id InitProducerId gave, sequences run on per partition
    pids = set()
    for p in (0, 1):
        batches = dump_batches(broker, topic, p)
        seq = 0
        for b in batches:
            assert (b["base_sequence"], b["is_transactional"]) == (seq, False), b
            assert b["last_sequence"] - b["base_sequence"] == b["count"] - 1
            seq += b["count"]
            pids.add((b["producer_id"], b["producer_epoch"]))
        assert seq == sum(1 for r in want if r.partition == p)
    assert len(pids) == 1 and next(iter(pids))[0] >= 0


def test_kafkajs_transactions_commit_and_abort(broker):
    topic, group = "kjs-txn", "kjs-txn-group"
    create_topic(broker.bootstrap, topic, 2)
    create_topic(broker.bootstrap, "kjs-txn-in", 1)

    def batch(tag, n):
        return [kjs.message(f"{tag}-{i}".encode(), key=tag.encode(), partition=i % 2,
                            headers=[("t", tag.encode())]) for i in range(n)]

    def offsets(o):
        return {"sendOffsets": {"consumerGroupId": group, "topics": [
            {"topic": "kjs-txn-in", "partitions": [{"partition": 0, "offset": str(o)}]}]}}

    plan = [("commit", [batch("c1", 4), batch("c1b", 2)], 10),
            ("abort", [batch("a1", 5)], 20),
            ("commit", [batch("c2", 3)], 30),
            ("abort", [batch("a2", 2)], 40)]
    steps = []
    for end, sends, offset in plan:
        steps += [{"begin": {}}, *[kjs.send(topic, m) for m in sends], offsets(offset),
                  {end: {}}]
    results = iter(kjs.produce(broker.bootstrap, steps, transactionalId="kjs-txn-1",
                               idempotent=True, maxInFlightRequests=1))
    committed, aborted = [], []
    for end, sends, _ in plan:
        next(results)  # begin
        for msgs in sends:
            res = next(results)
            recs = [Rec(m["partition"], o, kjs.unb64(m["key"]), kjs.unb64(m["value"]),
                        (("t", kjs.unb64(m["key"])),)) for m, o in zip(msgs, res["offsets"])]
            (committed if end == "commit" else aborted).extend(recs)
        next(results), next(results)  # sendOffsets, commit/abort

    def strip(recs):
        return sorted((r.partition, r.offset, r.key, r.value, r.headers) for r in recs)

    # read_committed: only the committed transactions' records, at the offsets kafkajs got
    got = consume(broker.bootstrap, topic, [0, 1], isolation_level="read_committed")
    assert strip(got) == strip(committed)
    # read_uncommitted: the aborted records are in the log too
    got = consume(broker.bootstrap, topic, [0, 1], isolation_level="read_uncommitted")
    assert strip(got) == strip(committed + aborted)
    # kafkajs' own consumer (read_committed by default) sees the same as confluent-kafka
    per_partition = Counter(r.partition for r in committed)
    got = kjs.consume(broker.bootstrap, topic, counts=dict(per_partition))
    assert strip(got) == strip(committed)
    # the offsets sent with the last committed transaction are the group's; the aborted
    # transaction's later ones are not
    assert ck_committed(broker.bootstrap, group, "kjs-txn-in", [0]) == {0: 30}
    # the batches: transactional, each transaction closed by one control batch per partition
    for p in (0, 1):
        batches = dump_batches(broker, topic, p)
        assert all(b["is_transactional"] for b in batches)
        assert sum(b["is_control"] for b in batches) == len(plan)
