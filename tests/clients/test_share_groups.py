"""KIP-932 share groups (queues) with confluent-kafka's ShareConsumer (librdkafka 2.16):
ShareGroupHeartbeat, ShareFetch and ShareAcknowledge against the broker binary. Records of a
partition are shared by the members, each record delivered to one member at a time under an
acquisition lock; ACCEPT ends it, RELEASE redelivers it with a higher delivery count, REJECT
ends it undelivered, and a lock that runs out (a member that stops acknowledging) hands the
record to another member."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import AcknowledgeType, KafkaError, KafkaException, ShareConsumer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from kafka.admin import KafkaAdminClient

from helpers import TIMEOUT, admin, consumer, create_topic, produce_all, producer

# the lock is short so that expiry is quick to see; the broker's bounds must allow it
SHORT_LOCK = [
    "group.share.min.record.lock.duration.ms=1000",
    "group.share.record.lock.duration.ms=2000",
]


def share_consumer(bs, group, **conf):
    settings = {"bootstrap.servers": bs, "group.id": group}
    settings.update({k.replace("_", "."): v for k, v in conf.items()})
    return ShareConsumer(settings)


def set_group_configs(bs, group, configs):
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()
    ]
    a = admin(bs)
    (fut,) = a.incremental_alter_configs(
        [ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)],
        request_timeout=TIMEOUT,
    ).values()
    fut.result(TIMEOUT)


def earliest(bs, group):
    """share.auto.offset.reset=earliest: the group starts at the log start, not the end."""
    set_group_configs(bs, group, {"share.auto.offset.reset": "earliest"})


def poll_until(c, want, timeout=TIMEOUT):
    """Polls `c` until `want` records arrived (or the timeout): [(offset, value, count)]."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for m in c.poll(0.5):
            assert m.error() is None, m.error()
            got.append((m.offset(), m.value(), m.delivery_count()))
    return got


def quiet(c, seconds):
    """What `c` receives within `seconds` (expected: nothing)."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend((m.offset(), m.value(), m.delivery_count()) for m in c.poll(0.5) if not m.error())
    return got


def classic_read(c, want, timeout=TIMEOUT):
    """Values a subscribed classic consumer reads, until `want` of them."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m.value())
    return out


def sluice(bs, *args):
    cli = os.environ.get(
        "SLUICE_CLI_BIN", str(Path(__file__).resolve().parents[2] / "target/debug/sluice")
    )
    r = subprocess.run([cli, "-b", bs, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_two_members_share_a_partition_and_accept_each_record_once(broker):
    bs, group, topic = broker.bootstrap, "queue", "jobs"
    create_topic(bs, topic, 1)
    earliest(bs, group)
    total = 200
    stop = threading.Event()
    received = {0: [], 1: []}
    # at most 10 records per fetch (ShareFetch max_records): a member never takes a whole round
    consumers = [
        share_consumer(bs, group, client_id=f"worker-{i}", max_poll_records=10) for i in range(2)
    ]

    def work(i):
        c = consumers[i]
        c.subscribe([topic])
        while not stop.is_set():
            msgs = c.poll(0.5)
            for m in msgs:
                assert m.error() is None, m.error()
                received[i].append((m.offset(), m.value(), m.delivery_count()))
            if msgs:
                time.sleep(0.2)  # processing: the other member takes what arrives meanwhile
        c.commit_sync(TIMEOUT)  # implicit mode: the last poll's records are accepted here

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)  # both members joined
    p = producer(bs)
    for r in range(10):
        produce_all(p, topic, [f"job-{r * 20 + i}".encode() for i in range(20)])
        time.sleep(0.3)
    deadline = time.monotonic() + TIMEOUT
    while len(received[0]) + len(received[1]) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
    for c in consumers:
        c.close()
    offsets = [o for i in (0, 1) for (o, _, _) in received[i]]
    assert sorted(offsets) == list(range(total)), "every record exactly once"
    assert received[0] and received[1], "both members got records"
    assert all(n == 1 for i in (0, 1) for (_, _, n) in received[i])
    # all of it was accepted: a new member of the group gets nothing again
    late = share_consumer(bs, group)
    late.subscribe([topic])
    try:
        assert quiet(late, 3) == []
    finally:
        late.close()


def test_release_redelivers_and_reject_does_not(broker):
    bs, group, topic = broker.bootstrap, "explicit", "acks"
    create_topic(bs, topic, 1)
    earliest(bs, group)
    produce_all(producer(bs), topic, [b"accept-me", b"release-me", b"reject-me"])
    c = share_consumer(bs, group, share_acknowledgement_mode="explicit")
    c.subscribe([topic])
    try:
        msgs = []
        deadline = time.monotonic() + TIMEOUT
        while len(msgs) < 3 and time.monotonic() < deadline:
            msgs.extend(m for m in c.poll(0.5) if m.error() is None)
        assert [(m.offset(), m.delivery_count()) for m in msgs] == [(0, 1), (1, 1), (2, 1)]
        c.acknowledge(msgs[0], AcknowledgeType.ACCEPT)
        c.acknowledge(msgs[1], AcknowledgeType.RELEASE)
        c.acknowledge(msgs[2], AcknowledgeType.REJECT)
        results = c.commit_sync(TIMEOUT)
        assert all(v is None for v in results.values()), results
        again = []
        deadline = time.monotonic() + TIMEOUT
        while not again and time.monotonic() < deadline:
            again.extend(m for m in c.poll(0.5) if m.error() is None)
        # only the released record, delivered a second time
        assert [(m.offset(), m.value(), m.delivery_count()) for m in again] == [
            (1, b"release-me", 2)
        ]
        c.acknowledge(again[0], AcknowledgeType.ACCEPT)
        c.commit_sync(TIMEOUT)
        assert quiet(c, 2) == []
    finally:
        c.close()


def test_a_member_that_stops_acknowledging_loses_its_records_when_the_lock_expires(
    broker_factory,
):
    b = broker_factory(overrides=SHORT_LOCK)
    bs, group, topic = b.bootstrap, "stalled", "work"
    create_topic(bs, topic, 1)
    earliest(bs, group)
    produce_all(producer(bs), topic, [f"w{i}".encode() for i in range(5)])
    stuck = share_consumer(bs, group, share_acknowledgement_mode="explicit")
    stuck.subscribe([topic])
    try:
        first = poll_until(stuck, 5)
        assert [(o, n) for (o, _, n) in first] == [(i, 1) for i in range(5)]
        # `stuck` stays in the group (its heartbeats go on) but never acknowledges
        other = share_consumer(bs, group)
        other.subscribe([topic])
        try:
            t0 = time.monotonic()
            again = poll_until(other, 5)
            waited = time.monotonic() - t0
            assert sorted((o, v, n) for (o, v, n) in again) == [
                (i, f"w{i}".encode(), 2) for i in range(5)
            ]
            assert waited >= 1.0, f"redelivered after {waited:.1f}s, before the 2 s lock ran out"
            other.commit_sync(TIMEOUT)
        finally:
            other.close()
    finally:
        stuck.close()


KILLED_MEMBER = """
import sys, time
from confluent_kafka import ShareConsumer
c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                   "share.acknowledgement.mode": "explicit"})
c.subscribe([sys.argv[3]])
n = 0
while n < 3:
    n += sum(1 for m in c.poll(0.5) if m.error() is None)
print("got", n, flush=True)
time.sleep(60)
"""


def test_records_of_a_killed_member_are_redelivered(broker_factory):
    b = broker_factory(overrides=SHORT_LOCK)
    bs, group, topic = b.bootstrap, "killed", "tasks"
    create_topic(bs, topic, 1)
    earliest(bs, group)
    produce_all(producer(bs), topic, [b"t0", b"t1", b"t2"])
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILLED_MEMBER, bs, group, topic], stdout=subprocess.PIPE, text=True
    )
    try:
        assert doomed.stdout.readline().strip() == "got 3"
    finally:
        doomed.kill()
        doomed.wait(TIMEOUT)
    c = share_consumer(bs, group)
    c.subscribe([topic])
    try:
        got = poll_until(c, 3)
        assert sorted(got) == [(0, b"t0", 2), (1, b"t1", 2), (2, b"t2", 2)]
        c.commit_sync(TIMEOUT)
    finally:
        c.close()


def test_classic_group_and_share_group_read_the_same_topic(broker):
    bs, topic = broker.bootstrap, "both"
    create_topic(bs, topic, 2)
    earliest(bs, "share-side")
    values = [f"v{i}".encode() for i in range(40)]
    produce_all(producer(bs), topic, values)
    s = share_consumer(bs, "share-side")
    s.subscribe([topic])
    try:
        shared = poll_until(s, 40)
        s.commit_sync(TIMEOUT)
    finally:
        s.close()
    c = consumer(bs, group_id="classic-side", auto_offset_reset="earliest")
    c.subscribe([topic])
    try:
        classic = classic_read(c, 40)
    finally:
        c.close()
    assert sorted(v for (_, v, _) in shared) == sorted(values)
    assert sorted(classic) == sorted(values)


def test_list_and_describe_show_the_share_group(broker):
    bs, group, topic = broker.bootstrap, "visible", "seen"
    create_topic(bs, topic, 3)
    c = share_consumer(bs, group, client_id="lister")
    c.subscribe([topic])
    try:
        quiet(c, 2)  # joined
        # librdkafka's list_consumer_groups asks for consumer and classic groups only;
        # kafka-python's ListGroups v5 and DescribeGroups show every type
        kp = KafkaAdminClient(bootstrap_servers=bs)
        try:
            listed = {g["group_id"]: g for g in kp.list_groups()}
            described = kp.describe_groups([group])[group]
        finally:
            kp.close()
        assert (listed[group]["group_type"], listed[group]["group_state"]) == ("share", "Stable")
        assert (described["protocol_type"], described["protocol_data"]) == ("share", "simple")
        (m,) = described["members"]
        assert m["client_id"] == "lister"
        assert m["member_assignment"]["assigned_partitions"] == [
            {"topic": topic, "partitions": [0, 1, 2]}
        ]
        out = sluice(bs, "group", "list")
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
        assert rows[group][-1] == "share", out
        text = sluice(bs, "group", "describe", group)
        assert "lister" in text, text
    finally:
        c.close()


def test_one_id_namespace_with_classic_groups(broker):
    """A share member cannot join a classic group that has members (GROUP_ID_NOT_FOUND, as in
    Kafka), and the group stays classic."""
    bs, topic = broker.bootstrap, "ns"
    create_topic(bs, topic, 1)
    produce_all(producer(bs), topic, [b"x"])
    classic = consumer(bs, group_id="taken", auto_offset_reset="earliest")
    classic.subscribe([topic])
    assert len(classic_read(classic, 1)) == 1  # a member of classic group "taken"
    s = share_consumer(bs, "taken")
    s.subscribe([topic])
    try:
        errors = []
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            try:
                errors.extend(m.error() for m in s.poll(0.5) if m.error() is not None)
            except KafkaException as e:  # librdkafka makes it fatal
                errors.append(e.args[0])
        assert errors and errors[0].code() == KafkaError.GROUP_ID_NOT_FOUND, errors
    finally:
        try:
            s.close()
        except KafkaException:
            pass  # closing a consumer that hit a fatal error reports it again
    kp = KafkaAdminClient(bootstrap_servers=bs)
    try:
        assert {g["group_id"]: g["group_type"] for g in kp.list_groups()}["taken"] == "classic"
    finally:
        kp.close()
        classic.close()


def test_share_group_configs_are_validated(broker):
    bs = broker.bootstrap
    a = admin(bs)
    (fut,) = a.describe_configs(
        [ConfigResource(ResourceType.GROUP, "cfg")], request_timeout=TIMEOUT
    ).values()
    got = {n: e.value for n, e in fut.result(TIMEOUT).items() if n.startswith("share.")}
    assert got == {"share.auto.offset.reset": "latest", "share.record.lock.duration.ms": "30000"}
    for bad in ({"share.auto.offset.reset": "sometime"}, {"share.record.lock.duration.ms": "5"}):
        with pytest.raises(KafkaException) as e:
            set_group_configs(bs, "cfg", bad)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    set_group_configs(bs, "cfg", {"share.record.lock.duration.ms": "20000"})


def test_deleting_a_share_group_forgets_its_delivery_state(broker):
    bs, group, topic = broker.bootstrap, "again", "replay"
    create_topic(bs, topic, 1)
    earliest(bs, group)
    produce_all(producer(bs), topic, [b"r0", b"r1", b"r2"])
    c = share_consumer(bs, group)
    c.subscribe([topic])
    try:
        assert len(poll_until(c, 3)) == 3
        c.commit_sync(TIMEOUT)
    finally:
        c.close()  # leaves: the group is empty
    a = admin(bs)
    (fut,) = a.delete_consumer_groups([group], request_timeout=TIMEOUT).values()
    fut.result(TIMEOUT)
    # the group configs belong to the id and stay; the records are delivered afresh
    c = share_consumer(bs, group)
    c.subscribe([topic])
    try:
        assert sorted(poll_until(c, 3)) == [(0, b"r0", 1), (1, b"r1", 1), (2, b"r2", 1)]
        c.commit_sync(TIMEOUT)
    finally:
        c.close()
