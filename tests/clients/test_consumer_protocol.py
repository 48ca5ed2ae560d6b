"""The KIP-848 consumer group protocol (`group.protocol=consumer`) with confluent-kafka
(librdkafka 2.16): server-side assignment, incremental hand-over with no partition owned twice,
leaves, session timeouts of killed members, static members, regex subscriptions, classic groups
beside consumer groups, conversion of empty groups both ways, the errors for a group of the
other protocol, and what the admin APIs and `sluice group` show.

The broker runs with short consumer-group timers (heartbeat 250 ms, session 4 s) so that
rebalances take well under a second and a killed member is fenced within seconds."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import (
    Consumer, ConsumerGroupTopicPartitions, ConsumerGroupType, KafkaError, KafkaException,
)
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer

from helpers import TIMEOUT, create_topic, produce_all, producer

OVERRIDES = [
    "group.consumer.min.heartbeat.interval.ms=100",
    "group.consumer.heartbeat.interval.ms=250",
    "group.consumer.min.session.timeout.ms=2000",
    "group.consumer.session.timeout.ms=4000",
]
WAIT = 30.0


@pytest.fixture
def kbroker(broker_factory):
    return broker_factory(overrides=OVERRIDES)


def wait(cond, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Member:
    """A group.protocol=consumer consumer polling in its own thread: it records its
    incremental assign/revoke callbacks, what it owns, and every record it reads."""

    def __init__(self, bootstrap, group, topics, name, **conf):
        self.name = name
        self.owned = set()
        self.records = []  # (topic, partition, offset, value)
        self.errors = []
        self.revoked = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        })
        self.c.subscribe(
            topics,
            on_assign=lambda c, ps: self._assign(ps),
            on_revoke=lambda c, ps: self._revoke(ps),
            on_lost=lambda c, ps: self._revoke(ps),
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _assign(self, ps):
        with self.lock:
            self.owned |= {(p.topic, p.partition) for p in ps}

    def _revoke(self, ps):
        # commit what was read before giving the partitions up, as an application would
        with self.lock:
            gone = {(p.topic, p.partition) for p in ps}
            self.revoked.append(gone)
        try:
            self.c.commit(asynchronous=False)
        except KafkaException:
            pass  # nothing read yet
        with self.lock:
            self.owned -= gone

    def _run(self):
        while not self._stop.is_set():
            m = self.c.poll(0.1)
            if m is None:
                continue
            if m.error():
                self.errors.append(m.error())
                continue
            with self.lock:
                self.records.append((m.topic(), m.partition(), m.offset(), m.value()))

    def partitions(self):
        with self.lock:
            return {p for _, p in self.owned}

    def close(self, commit=True):
        self._stop.set()
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()
        if commit:
            try:
                self.c.commit(asynchronous=False)
            except KafkaException:
                pass
        self.c.close()


def describe(bs, group):
    a = AdminClient({"bootstrap.servers": bs})
    return a.describe_consumer_groups([group])[group].result(TIMEOUT)


def split_evenly(members, partitions):
    owned = [m.partitions() for m in members]
    union = set().union(*owned)
    disjoint = sum(len(o) for o in owned) == len(union)
    sizes = sorted(len(o) for o in owned)
    return disjoint and union == set(range(partitions)) and sizes[-1] - sizes[0] <= 1


def committed(bs, group):
    a = AdminClient({"bootstrap.servers": bs})  # kept alive until the answer is in
    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    offsets = offsets.result(TIMEOUT)
    return {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}


def values(members):
    return {r[3] for m in members for r in m.records}


def test_members_share_partitions_and_hand_them_over(kbroker):
    bs, group, topic = kbroker.bootstrap, "k848", "k848-topic"
    create_topic(bs, topic, 6)
    sent = {f"v{i}".encode() for i in range(600)}
    produce_all(producer(bs), topic, sorted(sent))
    a = Member(bs, group, [topic], "a")
    members = [a]
    try:
        wait(lambda: a.partitions() == set(range(6)), "a alone owns every partition")
        b = Member(bs, group, [topic], "b")
        members.append(b)
        wait(lambda: split_evenly([a, b], 6), "a and b split 3/3")
        c = Member(bs, group, [topic], "c")
        members.append(c)
        wait(lambda: split_evenly([a, b, c], 6), "three members split 2/2/2")
        assert a.revoked, "a gave partitions up (incrementally, in its revoke callback)"
        wait(lambda: describe(bs, group).state.name == "STABLE", "a stable group")
        d = describe(bs, group)
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.partition_assignor == "uniform"
        by_client = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                     for m in d.members}
        assert by_client == {"a": a.partitions(), "b": b.partitions(), "c": c.partitions()}
        c.close()
        wait(lambda: split_evenly([a, b], 6), "c left: a and b take its partitions over")
        wait(lambda: values(members) == sent, "every record read")
    finally:
        for m in members:
            if m._thread.is_alive():
                m.close()
    assert not [e for m in members for e in m.errors], [m.errors for m in members]
    assert sum(committed(bs, group).values()) == 600, committed(bs, group)


def test_classic_and_consumer_groups_side_by_side(kbroker):
    bs, topic = kbroker.bootstrap, "mixed-topic"
    create_topic(bs, topic, 3)
    sent = [f"m{i}".encode() for i in range(90)]
    produce_all(producer(bs), topic, sent)
    new = Member(bs, "new-group", [topic], "new")
    classic = KafkaConsumer(
        topic, bootstrap_servers=bs, group_id="classic-group", auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=200,
    )
    got = []
    try:
        deadline = time.monotonic() + WAIT
        while len(got) < len(sent) and time.monotonic() < deadline:
            got.extend(r.value for r in classic)
        classic.commit()
        wait(lambda: values([new]) == set(sent), "the consumer-protocol group reads everything")
    finally:
        classic.close()
        new.close()
    assert sorted(got) == sorted(sent)
    a = AdminClient({"bootstrap.servers": bs})
    groups = a.list_consumer_groups().result(TIMEOUT)
    types = {g.group_id: g.type for g in groups.valid}
    assert types == {"new-group": ConsumerGroupType.CONSUMER,
                     "classic-group": ConsumerGroupType.CLASSIC}, types
    out = sluice(bs, "group", "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["new-group"][-1] == "consumer" and rows["classic-group"][-1] == "classic", out
    for g in ("new-group", "classic-group"):
        assert sum(committed(bs, g).values()) == 90


def sluice(bs, *args):
    cli = os.environ.get("SLUICE_CLI_BIN", str(
        __import__("pathlib").Path(__file__).resolve().parents[2] / "target/debug/sluice"))
    r = subprocess.run([cli, "-b", bs, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_empty_groups_convert_between_protocols(kbroker):
    bs, group, topic = kbroker.bootstrap, "convert", "convert-topic"
    create_topic(bs, topic, 1)
    produce_all(producer(bs), topic, [f"c{i}".encode() for i in range(30)])
    # a classic member reads 10 and commits, then leaves: the classic group is empty
    classic = KafkaConsumer(
        topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=10,
    )
    batch = []
    deadline = time.monotonic() + WAIT
    while len(batch) < 10 and time.monotonic() < deadline:
        for recs in classic.poll(500, max_records=10 - len(batch)).values():
            batch.extend(recs)
    classic.commit()
    classic.close()
    assert [r.offset for r in batch] == list(range(10))
    # a consumer-protocol member takes the group over and resumes at the committed offset
    new = Member(bs, group, [topic], "upgraded")
    try:
        wait(lambda: len(new.records) >= 20, "the upgraded group reads the rest")
        assert [r[2] for r in new.records[:20]] == list(range(10, 30))
        assert describe(bs, group).type == ConsumerGroupType.CONSUMER
    finally:
        new.close()
    assert committed(bs, group) == {(topic, 0): 30}
    # and back: a classic member finds the empty consumer group and makes it classic again
    produce_all(producer(bs), topic, [b"after"])
    classic = KafkaConsumer(
        topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        again = [r for r in classic]
    finally:
        classic.close()
    assert [(r.offset, r.value) for r in again] == [(30, b"after")]
    assert describe(bs, group).type == ConsumerGroupType.CLASSIC


def test_a_group_with_members_keeps_its_protocol(kbroker):
    bs, topic = kbroker.bootstrap, "keep-topic"
    create_topic(bs, topic, 2)
    # a consumer-protocol member cannot join a classic group that has members
    classic = Consumer({"bootstrap.servers": bs, "group.id": "busy-classic"})
    classic.subscribe([topic])
    wait(lambda: classic.poll(0.1) is None and len(classic.assignment()) == 2,
         "the classic member owns both partitions")
    new = Consumer({"bootstrap.servers": bs, "group.id": "busy-classic",
                    "group.protocol": "consumer"})
    new.subscribe([topic])
    errors = []

    def refused():
        m = new.poll(0.1)
        if m is not None and m.error():
            errors.append(m.error())
        return errors

    wait(refused, "the consumer-protocol member is refused")
    assert errors[0].code() == KafkaError._FATAL, errors[0]
    assert "ConsumerGroupHeartbeat fatal error: Broker: The group id does not exist" in errors[0].str()
    new.close()
    classic.close()
    # a classic member cannot join a consumer group that has members
    member = Member(bs, "busy-new", [topic], "owner")
    try:
        wait(lambda: len(member.partitions()) == 2, "the consumer-protocol member owns both")
        old = Consumer({"bootstrap.servers": bs, "group.id": "busy-new"})
        old.subscribe([topic])
        errors.clear()

        def inconsistent():
            m = old.poll(0.1)
            if m is not None and m.error():
                errors.append(m.error())
            return errors

        wait(inconsistent, "the classic member is refused")
        assert errors[0].code() == 23, errors[0]  # INCONSISTENT_GROUP_PROTOCOL
        old.close()
        assert member.partitions() == {0, 1}
    finally:
        member.close()


KILLED_MEMBER = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
              "group.protocol": "consumer", "client.id": "doomed"})
c.subscribe([sys.argv[3]], on_assign=lambda c, ps: print("assigned", len(ps), flush=True))
while True:
    c.poll(0.1)
"""


def test_a_killed_member_is_fenced_after_the_session_timeout(kbroker):
    bs, group, topic = kbroker.bootstrap, "fenced", "fenced-topic"
    create_topic(bs, topic, 4)
    survivor = Member(bs, group, [topic], "survivor")
    doomed = subprocess.Popen([sys.executable, "-c", KILLED_MEMBER, bs, group, topic],
                              stdout=subprocess.PIPE, text=True)
    try:
        wait(lambda: len(survivor.partitions()) == 2, "the two members split the partitions")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(TIMEOUT)
        killed = time.monotonic()
        wait(lambda: survivor.partitions() == set(range(4)),
             "the survivor gets the killed member's partitions")
        took = time.monotonic() - killed
        # fenced by the broker's 4 s session timeout, not before: no heartbeat said it left
        assert 3.0 <= took <= 15.0, took
        d = describe(bs, group)
        assert [m.client_id for m in d.members] == ["survivor"]
    finally:
        if doomed.poll() is None:
            doomed.kill()
        survivor.close()


def test_static_member_restarts_without_a_rebalance(kbroker):
    bs, group, topic = kbroker.bootstrap, "static848", "static848-topic"
    create_topic(bs, topic, 4)
    a = Member(bs, group, [topic], "sa", **{"group.instance.id": "ia"})
    b = Member(bs, group, [topic], "sb", **{"group.instance.id": "ib"})
    try:
        wait(lambda: split_evenly([a, b], 4), "two static members split the partitions")
        wait(lambda: describe(bs, group).state.name == "STABLE", "a stable group")
        mine = b.partitions()
        revokes_before = len(a.revoked)
        b.close()  # a static member leaves for a while (epoch -2): it keeps its partitions
        time.sleep(1.0)
        assert a.partitions() == set(range(4)) - mine, "nobody took b's partitions"
        b = Member(bs, group, [topic], "sb2", **{"group.instance.id": "ib"})
        wait(lambda: b.partitions() == mine, "b's instance gets its partitions back")
        assert len(a.revoked) == revokes_before, "a saw no rebalance"
        d = describe(bs, group)
        assert sorted(m.group_instance_id for m in d.members) == ["ia", "ib"]
    finally:
        a.close()
        b.close()


def test_regex_subscription_picks_up_new_topics(kbroker):
    bs, group = kbroker.bootstrap, "regex848"
    create_topic(bs, "ev-one", 1)
    create_topic(bs, "other", 1)
    m = Member(bs, group, ["^ev-.*"], "rx")
    try:
        wait(lambda: m.owned == {("ev-one", 0)}, "the existing matching topic")
        create_topic(bs, "ev-two", 2)
        wait(lambda: m.owned == {("ev-one", 0), ("ev-two", 0), ("ev-two", 1)},
             "a topic created later that matches")
    finally:
        m.close()


def test_sluice_group_describe_shows_a_consumer_group(kbroker):
    bs, group, topic = kbroker.bootstrap, "described", "described-topic"
    create_topic(bs, topic, 2)
    p = producer(bs)
    produce_all(p, topic, [b"x", b"y"], partition=0)
    produce_all(p, topic, [b"z"], partition=1)
    # one thread: librdkafka's synchronous commit is not used beside another thread's poll
    m = Consumer({"bootstrap.servers": bs, "group.id": group, "group.protocol": "consumer",
                  "client.id": "describer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    m.subscribe([topic])
    try:
        read = []
        deadline = time.monotonic() + WAIT
        while len(read) < 3 and time.monotonic() < deadline:
            r = m.poll(0.1)
            if r is not None and not r.error():
                read.append(r)
        assert len(read) == 3
        m.commit(asynchronous=False)
        (lag,) = json.loads(sluice(bs, "--output", "json", "group", "describe", group))
        text = sluice(bs, "group", "describe", group)
    finally:
        m.close()
    assert (lag["group"], lag["state"], lag["protocol"]) == (group, "Stable", "uniform"), lag
    rows = sorted((r["partition"], r["current_offset"], r["lag"], r["client_id"]) for r in lag["rows"])
    ends = {r["partition"]: r["log_end_offset"] for r in lag["rows"]}
    assert ends == {0: 2, 1: 1}
    assert rows == [(p, ends[p], 0, "describer") for p in (0, 1)], rows
    assert "describer" in text, text
