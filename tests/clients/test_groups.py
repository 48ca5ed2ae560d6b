"""Consumer groups with real clients (issue 6): kafka-python's KafkaConsumer and confluent-kafka's
Consumer subscribe to topics in a group, split the partitions, rebalance as members join, leave
and die, commit offsets after processing, and resume from them after a consumer or broker
restart. ListGroups / DescribeGroups / OffsetFetch are checked through both admin clients.

Every message carries a unique id. "Exactly once" below means: the multiset of (partition,
offset, key, value) consumed by the group equals the one the producer's delivery reports gave,
so both the count and the content are checked. Members commit synchronously after processing
each poll's records, so with clean close()s nothing may be delivered twice; a SIGKILLed member's
uncommitted records are the only ones that may (and must) come again.

Each member polls in its own thread, like an application would (kafka-python only makes
progress on a JoinGroup inside poll(), so consumers polled in turn by one thread would delay
each other's rejoins). The member that gets killed runs in a subprocess: this file run as a
script (see `member_main`). kafka-python 3.0.12 needs one workaround (`kp_finish_join`) for a
client bug that otherwise leaves a group leader stuck after a start-up rebalance.
"""

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import kafka
import kafka.errors
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions
from confluent_kafka import KafkaException, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from helpers import TIMEOUT, Rec, admin, create_topic, produce_all, producer

# "confluent-848": confluent-kafka with group.protocol=consumer (KIP-848, broker-side assignment)
CLIENTS = ["kafka-python", "confluent", "confluent-848"]
# the KIP-848 timers shortened (Kafka's defaults: 5 s heartbeat, 45 s session) so that the seeds'
# scenarios take about as long with the new protocol as with the classic one
KIP848_TIMERS = [
    "group.consumer.min.heartbeat.interval.ms=100",
    "group.consumer.heartbeat.interval.ms=250",
    "group.consumer.min.session.timeout.ms=2000",
    "group.consumer.session.timeout.ms=6000",
]
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms, like Kafka's
HEARTBEAT_MS = 500
MAX_POLL_MS = 10000  # also the JoinGroup rebalance timeout
WAIT = 60.0  # generous deadline for every condition the tests wait for
PARTITIONS = 3


# ---------------------------------------------------------------------------------------------
# consumers


def ck_consumer(bootstrap, group, name, client="confluent", **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "max.poll.interval.ms": MAX_POLL_MS,
    }
    if client == "confluent-848":
        conf["group.protocol"] = "consumer"  # session and heartbeat come from the broker
    else:
        conf.update({"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS})
    conf.update(extra)
    return Consumer(conf)


def kp_consumer(bootstrap, group, name):
    return kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        max_poll_interval_ms=MAX_POLL_MS,
    )


def kp_finish_join(c):
    """Works around a kafka-python 3.0.12 bug; returns True when it had to.

    When consumer.poll(timeout_ms) times out while the group leader's JoinGroup/SyncGroup is
    in flight, kafka-python keeps the join task for the next poll. But if that rebalance was
    caused by a metadata change (assignment_snapshot != metadata_snapshot: the first
    assignment was computed before the topic's metadata arrived, the usual case at start-up),
    the leader's assignor has already updated the snapshot, so need_rejoin() is False on the
    next poll and the finished join is never consumed: no assignment is applied, heartbeats
    stay disabled, and the broker expires the member after session.timeout.ms (seen with
    DEBUG logs: "Received SyncGroup response" with an assignment, then silence). Asking for a
    rejoin makes the next poll finish (or redo) the join."""
    coord = getattr(c, "_coordinator", None)
    if coord is None or getattr(coord, "_join_task", None) is None:
        return False
    if coord.need_rejoin():
        return False
    coord.request_rejoin()
    return True


def kp_rec(r):
    return Rec(r.partition, r.offset, r.key, r.value)


def ck_rec(m):
    return Rec(m.partition(), m.offset(), m.key(), m.value())


class Member:
    """One group member (either client) consuming `topic` in its own thread.

    It processes every record (appends it to `consumed`), then commits the offsets after what
    it processed, synchronously, before polling again. `assigned` follows the rebalance
    callbacks (confluent on_assign/on_revoke/on_lost, kafka-python's ConsumerRebalanceListener).
    close() stops the loop and closes the consumer in its thread (LeaveGroup). With
    `max_messages` the member stops processing after that many records (and stops polling, so
    nothing beyond them is fetched into the application)."""

    def __init__(self, client, bootstrap, group, topic, name, max_messages=None):
        assert client in CLIENTS
        self.client = client
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.name = name
        self.max_messages = max_messages
        self.lock = threading.Lock()
        self.consumed = []
        self.assigned = frozenset()
        self.events = []  # ("assign" | "revoke" | "lost", partitions) in order
        self.committed = {}  # partition -> last offset this member committed successfully
        self.commit_errors = []
        self.errors = []
        self.failure = None
        self.closed = False
        self.join_workarounds = 0  # kafka-python only, see kp_finish_join
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self, timeout=WAIT):
        """Stops polling, then close() (which leaves the group) in the member's thread."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.name}: close() did not return in {timeout}s"
        self.closed = True
        if self.join_workarounds:
            print(f"{self.name}: kp_finish_join worked around kafka-python's stuck join "
                  f"{self.join_workarounds} time(s)")
        if self.failure is not None:
            raise AssertionError(f"{self.name} failed: {self.failure!r}") from self.failure

    def snapshot(self):
        with self.lock:
            return list(self.consumed)

    def count(self):
        with self.lock:
            return len(self.consumed)

    def __repr__(self):
        with self.lock:
            return (
                f"<{self.name} {self.client} assigned={sorted(self.assigned)} "
                f"consumed={len(self.consumed)} events={self.events[-6:]} "
                f"commit_errors={self.commit_errors[:3]} errors={self.errors[:3]}>"
            )

    def _full(self):
        return self.max_messages is not None and self.count() >= self.max_messages

    def _event(self, kind, partitions):
        with self.lock:
            self.events.append((kind, sorted(partitions)))
            if kind == "assign":
                self.assigned = self.assigned | set(partitions)
            else:
                self.assigned = self.assigned - set(partitions)

    def _process(self, recs):
        with self.lock:
            self.consumed.extend(recs)

    def _main(self):
        try:
            if self.client.startswith("confluent"):
                self._run_confluent()
            else:
                self._run_kafka_python()
        except BaseException as e:  # reported by close()
            self.failure = e

    def _run_confluent(self):
        c = ck_consumer(self.bootstrap, self.group, self.name, self.client)

        def on_assign(_c, parts):
            self._event("assign", [p.partition for p in parts])

        def on_revoke(_c, parts):
            self._event("revoke", [p.partition for p in parts])

        def on_lost(_c, parts):
            self._event("lost", [p.partition for p in parts])

        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        try:
            while not self._stop.is_set():
                if self._full():
                    self._stop.wait(0.1)
                    continue
                # one message per poll: a revoke served inside a batch call could otherwise
                # leave processed records of a revoked partition behind
                m = c.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    with self.lock:
                        self.errors.append(str(m.error()))
                    continue
                self._process([ck_rec(m)])
                try:
                    (tp,) = c.commit(
                        offsets=[TopicPartition(self.topic, m.partition(), m.offset() + 1)],
                        asynchronous=False,
                    )
                    if tp.error is not None:
                        raise KafkaException(tp.error)
                    with self.lock:
                        self.committed[m.partition()] = m.offset() + 1
                except KafkaException as e:
                    with self.lock:
                        self.commit_errors.append((m.partition(), m.offset(), str(e)))
        finally:
            c.close()

    def _run_kafka_python(self):
        member = self

        class Listener(kafka.ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                member._event("revoke", [tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned):
                member._event("assign", [tp.partition for tp in assigned])

            def on_partitions_lost(self, lost):
                member._event("lost", [tp.partition for tp in lost])

        c = kp_consumer(self.bootstrap, self.group, self.name)
        c.subscribe([self.topic], listener=Listener())
        try:
            while not self._stop.is_set():
                if self._full():
                    self._stop.wait(0.1)
                    continue
                left = None if self.max_messages is None else self.max_messages - self.count()
                batches = c.poll(timeout_ms=200, max_records=left)
                if kp_finish_join(c):
                    self.join_workarounds += 1
                recs = [kp_rec(r) for rs in batches.values() for r in rs]
                if not recs:
                    continue
                self._process(recs)
                offsets = {
                    tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1)
                    for tp, rs in batches.items()
                    if rs
                }
                try:
                    c.commit(offsets)
                    with self.lock:
                        for tp, om in offsets.items():
                            self.committed[tp.partition] = om.offset
                except kafka.errors.KafkaError as e:
                    with self.lock:
                        self.commit_errors.append((sorted(offsets), repr(e)))
        finally:
            c.close(autocommit=False)


# ---------------------------------------------------------------------------------------------
# waiting and checking


def wait_until(cond, describe, timeout=WAIT, interval=0.1):
    """Polls `cond` until it returns a truthy value (returned); fails with describe()."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting: {describe()}")
        time.sleep(interval)


def produce_ids(bootstrap, topic, tag, n, partitions=PARTITIONS):
    """Produces n messages with unique values `tag-i` (key `k-tag-i`), message i to partition
    i % partitions; returns the delivered Recs."""
    prod = producer(bootstrap)
    out = []
    for p in range(partitions):
        ids = [i for i in range(n) if i % partitions == p]
        d = produce_all(
            prod,
            topic,
            [f"{tag}-{i:05d}".encode() for i in ids],
            keys=[f"k-{tag}-{i:05d}".encode() for i in ids],
            partition=p,
        )
        out.extend(d.ok)
    return out


def ident(r):
    return (r.partition, r.offset, r.key, r.value)


def assert_exactly_once(produced, consumed, what):
    exp = Counter(ident(r) for r in produced)
    got = Counter(ident(r) for r in consumed)
    missing = sorted(exp - got)
    dups = sorted((k, v) for k, v in got.items() if v > 1)
    unexpected = sorted(k for k in got if k not in exp)
    assert not missing and not dups and not unexpected, (
        f"{what}: {len(consumed)} records consumed for {len(produced)} produced; "
        f"missing {len(missing)} {missing[:5]}; duplicated {len(dups)} {dups[:5]}; "
        f"unexpected {len(unexpected)} {unexpected[:5]}"
    )
    assert len(consumed) == len(produced)
    assert len({r.value for r in consumed}) == len(produced)  # the unique ids, once each


def consumed_by(members):
    out = []
    for m in members:
        out.extend(m.snapshot())
    return out


def kp_admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="groups-test-admin")


def broker_assignments(kadmin, group, topic):
    """(state, {client_id: set of partitions of `topic`}) as DescribeGroups reports them."""
    d = kadmin.describe_groups([group])[group]
    assert d["error"] is None, d
    out = {}
    for m in d["members"]:
        parts = set()
        a = m["member_assignment"]
        if a:  # decoded ConsumerProtocolAssignment; b"" before the first SyncGroup
            for t in a["assigned_partitions"]:
                if t["topic"] == topic:
                    parts.update(t["partitions"])
        out.setdefault(m["client_id"], set()).update(parts)
    return d["group_state"], out


def stable_split(kadmin, group, topic, members, partitions=PARTITIONS):
    """The group is Stable with exactly `members`, whose assignments (as each client sees it
    through its callbacks, and as the broker's DescribeGroups reports it) agree, are disjoint
    and cover every partition. Returns {name: partitions} or None."""
    seen = {m.name: set(m.assigned) for m in members}
    union = set().union(*seen.values())
    if sum(len(p) for p in seen.values()) != len(union) or union != set(range(partitions)):
        return None
    state, by_broker = broker_assignments(kadmin, group, topic)
    if state != "Stable" or by_broker != seen:
        return None
    return seen


def describe_split(kadmin, group, topic, members):
    try:
        b = broker_assignments(kadmin, group, topic)
    except Exception as e:  # only for the failure message
        b = repr(e)
    return f"members {members}; broker {b}"


def wait_split(kadmin, group, topic, members):
    return wait_until(
        lambda: stable_split(kadmin, group, topic, members),
        lambda: describe_split(kadmin, group, topic, members),
    )


def wait_consumed(members, produced, what):
    """Waits until the members together consumed at least every produced record."""
    want = {ident(r) for r in produced}

    def done():
        return want <= {ident(r) for r in consumed_by(members)}

    def state():
        got = {ident(r) for r in consumed_by(members)}
        return f"{what}: {len(want - got)} of {len(want)} not consumed yet; members {members}"

    wait_until(done, state)


def end_offsets(bootstrap, topic, partitions=PARTITIONS):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "groups-test-watermarks"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT, cached=False)[1]
            for p in range(partitions)
        }
    finally:
        c.close()


def kp_committed(kadmin, group, topic):
    """{partition: committed offset} via KafkaAdminClient.list_group_offsets (OffsetFetch)."""
    offsets = kadmin.list_group_offsets(group)[group]
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def ck_committed(bootstrap, group, topic, partitions=PARTITIONS):
    """{partition: committed offset} via AdminClient.list_consumer_group_offsets; partitions
    without a committed offset are left out."""
    a = admin(bootstrap)
    req = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    res = a.list_consumer_group_offsets([req], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"{group} {tp}: {tp.error}"
        if tp.offset >= 0:
            out[tp.partition] = tp.offset
    return out


def no_commit_errors(members):
    bad = {m.name: m.commit_errors for m in members if m.commit_errors}
    assert not bad, f"commits failed: {bad}"


def open_connections(port):
    """Server-side TCP connections of the broker's port (ESTABLISHED or CLOSE_WAIT), from
    /proc/net/tcp*."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] in ("01", "08"):
                n += 1
    return n


@pytest.fixture
def broker(broker_factory):
    """This module's broker: the default one, with the KIP-848 timers shortened."""
    return broker_factory(overrides=KIP848_TIMERS)


@pytest.fixture
def closing(broker):
    """Members (and admin clients) created by a test; whatever the test did not close is
    closed at its end, before the broker fixture stops the broker.

    Then it waits (best effort, up to 3 s) until the broker has no connection left: a
    consumer's last Fetch long-poll (fetch.wait.max.ms) outlives its close(), and a broker
    stopped while such a fetch waits on another shard's partition spends its whole 5 s
    shutdown grace period on it (the cross-shard call never returns once the other shard has
    stopped). That is a broker shutdown bug outside the group coordinator, reported
    separately; this wait only keeps the suite fast."""
    things = []
    yield things
    for t in reversed(things):
        try:
            if isinstance(t, Member):
                if not t.closed:
                    t.close()
            else:
                t.close()
        except Exception:
            pass
    wait_connections_closed(broker)


def wait_connections_closed(broker, timeout=3.0):
    """Best effort, no assertion: see `closing`."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while broker.running and open_connections(broker.port) and time.monotonic() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# the seeds' scenarios


@pytest.mark.parametrize("client", CLIENTS)
def test_members_split_rebalance_and_consume_exactly_once(broker, closing, client):
    """2 members split 3 partitions; 2 more join (4 on 3 partitions: one idle); two owners
    close cleanly and their partitions move to the other two. Messages are produced while all
    of this happens, and the group consumes each exactly once."""
    bs, topic, group = broker.bootstrap, "orders", "billing"
    create_topic(bs, topic, PARTITIONS)
    kadmin = kp_admin(bs)
    closing.append(kadmin)

    def member(name):
        m = Member(client, bs, group, topic, name).start()
        closing.append(m)
        return m

    a, b = member("m1"), member("m2")
    produced = produce_ids(bs, topic, "a", 150)
    split = wait_split(kadmin, group, topic, [a, b])
    assert all(split.values()), f"a member got no partition: {split}"
    wait_consumed([a, b], produced, "two members")

    # two more members: 4 members, 3 partitions -> exactly one idle, three own one each
    c, d = member("m3"), member("m4")
    produced += produce_ids(bs, topic, "b", 150)  # while the group rebalances
    four = [a, b, c, d]
    split = wait_until(
        lambda: (s := stable_split(kadmin, group, topic, four))
        and sorted(len(p) for p in s.values()) == [0, 1, 1, 1]
        and s,
        lambda: describe_split(kadmin, group, topic, four),
    )
    idle = [n for n, p in split.items() if not p]
    assert len(idle) == 1, split
    wait_consumed(four, produced, "four members")

    # close two members that own partitions: the idle one and the remaining owner take over
    owners = [m for m in four if split[m.name]]
    leaving, staying = owners[:2], [m for m in four if m not in owners[:2]]
    moved = set().union(*(split[m.name] for m in leaving))
    for m in leaving:
        m.close()
    produced += produce_ids(bs, topic, "c", 150)  # while the group rebalances
    split = wait_until(
        lambda: (s := stable_split(kadmin, group, topic, staying)) and all(s.values()) and s,
        lambda: describe_split(kadmin, group, topic, staying),
    )
    assert moved <= set().union(*split.values())
    idle_member = next(m for m in staying if m.name == idle[0])
    assert split[idle_member.name], "the idle member got none of the freed partitions"
    wait_consumed(four, produced, "after two members left")

    for m in staying:
        m.close()
    no_commit_errors(four)
    assert_exactly_once(produced, consumed_by(four), f"group {group} ({client})")
    for m in four:  # per member: a partition's records in offset order, no gaps or repeats
        by_part = {}
        for r in m.snapshot():
            by_part.setdefault(r.partition, []).append(r.offset)
        for p, offs in by_part.items():
            assert offs == sorted(offs), f"{m.name} partition {p} out of order"

    # the group is Empty and its committed offsets are the log end offsets
    state, members = broker_assignments(kadmin, group, topic)
    assert (state, members) == ("Empty", {})
    ends = end_offsets(bs, topic)
    assert ends == {p: 150 for p in range(PARTITIONS)}
    assert kp_committed(kadmin, group, topic) == ends
    assert ck_committed(bs, group, topic) == ends


MEMBER_SCRIPT_MARK = "sluice-groups-member"


def member_main(argv):
    """A group member in its own process, for the kill test: prints one JSON line per
    assignment event, consumed record and successful commit; commits (synchronously, one
    record at a time) only the first `commit_first` records it consumes, then goes on
    consuming without committing, until it is killed."""
    client, bootstrap, group, topic, name, commit_first = argv
    commit_first = int(commit_first)

    def out(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    consumed = 0
    give_up = time.monotonic() + 120  # never outlive a broken test run
    if client.startswith("confluent"):
        c = ck_consumer(bootstrap, group, name, client)
        c.subscribe(
            [topic],
            on_assign=lambda _c, ps: out(assign=[p.partition for p in ps]),
            on_revoke=lambda _c, ps: out(revoke=[p.partition for p in ps]),
            on_lost=lambda _c, ps: out(lost=[p.partition for p in ps]),
        )
        while time.monotonic() < give_up:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out(p=m.partition(), o=m.offset(), k=m.key().decode(), v=m.value().decode())
            consumed += 1
            if consumed <= commit_first:
                c.commit(
                    offsets=[TopicPartition(topic, m.partition(), m.offset() + 1)],
                    asynchronous=False,
                )
                out(committed=[m.partition(), m.offset() + 1])
    else:

        class Listener(kafka.ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                out(revoke=[tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned):
                out(assign=[tp.partition for tp in assigned])

            def on_partitions_lost(self, lost):
                out(lost=[tp.partition for tp in lost])

        c = kp_consumer(bootstrap, group, name)
        c.subscribe([topic], listener=Listener())
        while time.monotonic() < give_up:
            batches = c.poll(timeout_ms=200, max_records=1)
            kp_finish_join(c)
            for tp, rs in batches.items():
                for r in rs:
                    out(p=r.partition, o=r.offset, k=r.key.decode(), v=r.value.decode())
                    consumed += 1
                    if consumed <= commit_first:
                        c.commit({tp: OffsetAndMetadata(r.offset + 1, "", -1)})
                        out(committed=[r.partition, r.offset + 1])


class MemberProcess:
    """The subprocess side of member_main, with its output parsed by a reader thread."""

    def __init__(self, client, bootstrap, group, topic, name, commit_first, log_path):
        self.name = name
        self.lock = threading.Lock()
        self.consumed = []
        self.committed = {}
        self.assigned = frozenset()
        self.lines = []
        self.log_path = log_path
        self.stderr = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, MEMBER_SCRIPT_MARK, client, bootstrap, group, topic,
             name, str(commit_first)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.lock:
                self.lines.append(ev)
                if "assign" in ev:
                    self.assigned = self.assigned | set(ev["assign"])
                elif "revoke" in ev or "lost" in ev:
                    self.assigned = self.assigned - set(ev.get("revoke", ev.get("lost")))
                elif "committed" in ev:
                    p, o = ev["committed"]
                    self.committed[p] = o
                else:
                    self.consumed.append(
                        Rec(ev["p"], ev["o"], ev["k"].encode(), ev["v"].encode())
                    )

    def snapshot(self):
        with self.lock:
            return list(self.consumed)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        self.stderr.close()

    def __repr__(self):
        with self.lock:
            return (
                f"<{self.name} pid {self.proc.pid} rc={self.proc.poll()} "
                f"assigned={sorted(self.assigned)} consumed={len(self.consumed)} "
                f"committed={self.committed} last={self.lines[-3:]} "
                f"stderr={open(self.log_path, errors='replace').read()[-500:]!r}>"
            )


@pytest.mark.parametrize("client", CLIENTS)
def test_killed_member_loses_nothing(broker_factory, closing, tmp_path, client):
    """A member in a subprocess consumes its partitions but commits only its first records,
    then is SIGKILLed (no LeaveGroup, no close). After the session timeout the broker expires
    it, the survivor takes its partitions from the committed offsets: every record the dead
    member consumed but did not commit is redelivered (counted), nothing is lost, nothing it
    committed comes again.

    The broker delays the first rebalance (Kafka's default group.initial.rebalance.delay.ms)
    so that both members join the first generation. Without it, the member that joins first
    briefly owns every partition, and librdkafka can go on fetching a partition revoked while
    its offset reset was in flight, then hand one of those stale records to the application
    after a later assignment (confluentinc/librdkafka#1359; seen here once in ~10 runs: the
    broker's trace showed the client fetching, unrequested by its assignment, partitions it no
    longer owned)."""
    broker = broker_factory(overrides=["group.initial.rebalance.delay.ms=3000", *KIP848_TIMERS])
    bs, topic, group = broker.bootstrap, "payments", "ledger"
    create_topic(bs, topic, PARTITIONS)
    kadmin = kp_admin(bs)
    closing.append(kadmin)
    commit_first = 10
    doomed = MemberProcess(
        client, bs, group, topic, "doomed", commit_first, tmp_path / "doomed.err"
    )
    closing.append(doomed)
    survivor = Member(client, bs, group, topic, "survivor")
    closing.append(survivor)
    survivor.start()

    # produce only once both own partitions, so the doomed member's share is known
    split = wait_split(kadmin, group, topic, [doomed, survivor])
    assert split["doomed"] and split["survivor"], split
    produced = produce_ids(bs, topic, "pay", 300)
    mine = [r for r in produced if r.partition in split["doomed"]]
    theirs = [r for r in produced if r.partition in split["survivor"]]
    wait_consumed([doomed], mine, "the doomed member's partitions")
    wait_consumed([survivor], theirs, "the survivor's partitions")
    assert len(doomed.committed) >= 1
    assert_exactly_once(mine, doomed.snapshot(), "doomed member before the kill")

    killed_at = time.monotonic()
    doomed.kill()
    committed = {p: doomed.committed.get(p, 0) for p in split["doomed"]}
    # what the broker stored is what the dead member saw acknowledged
    assert {p: o for p, o in kp_committed(kadmin, group, topic).items() if p in committed} == {
        p: o for p, o in committed.items() if p in doomed.committed
    }
    kept = [r for r in mine if r.offset < committed[r.partition]]
    uncommitted = [r for r in mine if r.offset >= committed[r.partition]]
    assert len(kept) == commit_first
    assert len(uncommitted) == len(mine) - commit_first > 0

    # the session expires, the survivor alone owns every partition and re-reads the rest
    wait_until(
        lambda: stable_split(kadmin, group, topic, [survivor]),
        lambda: describe_split(kadmin, group, topic, [survivor]),
    )
    expired_after = time.monotonic() - killed_at
    wait_consumed([survivor], theirs + uncommitted, "redelivery to the survivor")
    survivor.close()
    no_commit_errors([survivor])
    assert_exactly_once(theirs + uncommitted, survivor.snapshot(), "survivor")
    redelivered = {ident(r) for r in survivor.snapshot()} & {ident(r) for r in doomed.snapshot()}
    assert redelivered == {ident(r) for r in uncommitted}, "redelivered != uncommitted"
    print(
        f"{client}: killed member consumed {len(mine)}, committed {len(kept)}; "
        f"{len(redelivered)} redelivered after {expired_after:.1f}s"
    )
    # nothing lost: the union is every produced record, duplicates only the redelivered ones
    everything = doomed.snapshot() + survivor.snapshot()
    assert {ident(r) for r in everything} == {ident(r) for r in produced}
    assert len(everything) == len(produced) + len(redelivered)
    assert "member session expired" in broker.log_text()
    # only the session timeout removed the member: not sooner than the timeout itself
    assert expired_after >= (SESSION_MS - 2 * HEARTBEAT_MS) / 1000
    assert kp_committed(kadmin, group, topic) == end_offsets(bs, topic)


@pytest.mark.parametrize("client", CLIENTS)
def test_two_groups_each_receive_everything(broker, closing, client):
    bs, topic = broker.bootstrap, "events"
    create_topic(bs, topic, PARTITIONS)
    kadmin = kp_admin(bs)
    closing.append(kadmin)
    produced = produce_ids(bs, topic, "e", 120)
    g1 = [Member(client, bs, "audit", topic, f"audit-{i}").start() for i in range(2)]
    g2 = [Member(client, bs, "search", topic, "search-0").start()]
    closing.extend(g1 + g2)
    wait_split(kadmin, "audit", topic, g1)
    wait_split(kadmin, "search", topic, g2)
    produced += produce_ids(bs, topic, "f", 120)
    wait_consumed(g1, produced, "group audit")
    wait_consumed(g2, produced, "group search")
    for m in g1 + g2:
        m.close()
    no_commit_errors(g1 + g2)
    assert_exactly_once(produced, consumed_by(g1), "group audit")
    assert_exactly_once(produced, consumed_by(g2), "group search")
    ends = end_offsets(bs, topic)
    assert kp_committed(kadmin, "audit", topic) == ends
    assert kp_committed(kadmin, "search", topic) == ends


def consume_part_then_close(client, bs, group, topic, n):
    """A member that processes (and commits) exactly n records, then closes cleanly. Returns
    (records, {partition: next offset}) — the committed position of every partition, 0 for
    partitions it consumed nothing of."""
    m = Member(client, bs, group, topic, "first", max_messages=n).start()
    try:
        wait_until(lambda: m.count() >= n, lambda: repr(m))
    finally:
        m.close()
    no_commit_errors([m])
    recs = m.snapshot()
    assert len(recs) == n
    pos = {p: 0 for p in range(PARTITIONS)}
    for r in recs:
        pos[r.partition] = max(pos[r.partition], r.offset + 1)
    assert m.committed == {p: o for p, o in pos.items() if o > 0}
    return recs, pos


def resume_and_check(client, bs, group, topic, produced, first, pos, closing):
    """A new member of the group gets exactly the records after the committed offsets."""
    m = Member(client, bs, group, topic, "second").start()
    closing.append(m)
    rest = [r for r in produced if r.offset >= pos[r.partition]]
    wait_consumed([m], rest, "the restarted member")
    m.close()
    got = m.snapshot()
    early = [r for r in got if r.offset < pos[r.partition]]
    assert not early, f"records before the committed offset redelivered: {early[:5]}"
    for p in range(PARTITIONS):
        offs = [r.offset for r in got if r.partition == p]
        if pos[p] < 50:
            assert offs and offs[0] == pos[p], f"partition {p} did not resume at {pos[p]}"
    assert_exactly_once(rest, got, "restarted member")
    assert_exactly_once(produced, first + got, "both runs together")


@pytest.mark.parametrize("client", CLIENTS)
def test_restarted_consumer_resumes_from_committed_offset(broker, closing, client):
    bs, topic, group = broker.bootstrap, "jobs", "workers"
    create_topic(bs, topic, PARTITIONS)
    produced = produce_ids(bs, topic, "j", 150)  # 50 per partition
    first, pos = consume_part_then_close(client, bs, group, topic, 70)
    assert 0 < sum(pos.values()) == 70 < 150
    kadmin = kp_admin(bs)
    closing.append(kadmin)
    assert kp_committed(kadmin, group, topic) == {p: o for p, o in pos.items() if o > 0}
    resume_and_check(client, bs, group, topic, produced, first, pos, closing)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("how", ["restart", "kill"])
def test_broker_restart_keeps_committed_offsets(broker, closing, client, how):
    """Committed offsets survive a clean broker restart and a SIGKILL of the broker (they were
    fdatasync'd before OffsetCommit was answered); the group is listed again (Empty), both
    admin clients read the same offsets, and a new member resumes from them."""
    bs, topic, group = broker.bootstrap, "invoices", "accounting"
    create_topic(bs, topic, PARTITIONS)
    produced = produce_ids(bs, topic, "i", 150)
    first, pos = consume_part_then_close(client, bs, group, topic, 80)
    want = {p: o for p, o in pos.items() if o > 0}
    assert ck_committed(bs, group, topic) == want
    if how == "restart":
        wait_connections_closed(broker)  # see `closing`
        broker.restart()
    else:
        broker.kill()
        broker.start()
    kadmin = kp_admin(bs)
    closing.append(kadmin)
    assert kp_committed(kadmin, group, topic) == want
    assert ck_committed(bs, group, topic) == want
    listed = {g["group_id"]: g for g in kadmin.list_groups()}
    assert group in listed and listed[group]["group_state"] == "Empty", listed
    resume_and_check(client, bs, group, topic, produced, first, pos, closing)
    ends = end_offsets(bs, topic)
    assert kp_committed(kadmin, group, topic) == ends
    assert ck_committed(bs, group, topic) == ends


def test_list_and_describe_groups(broker, closing):
    """A group with one kafka-python and one confluent-kafka member (protocol selection across
    clients: both offer range first) and a group with only committed offsets, through both
    admin clients: ListGroups (with and without a state filter) and DescribeGroups (state,
    protocol, members, client ids, hosts, assignments), before and after the members leave."""
    bs, topic = broker.bootstrap, "metrics"
    create_topic(bs, topic, PARTITIONS)
    kadmin = kp_admin(bs)
    closing.append(kadmin)
    cadmin = admin(bs)
    produced = produce_ids(bs, topic, "x", 90)

    # an Empty group: committed offsets, no members
    first, _ = consume_part_then_close("confluent", bs, "dormant", topic, 5)
    assert len(first) == 5

    kp = Member("kafka-python", bs, "dashboards", topic, "kp-member").start()
    ck = Member("confluent", bs, "dashboards", topic, "ck-member").start()
    closing.extend([kp, ck])
    split = wait_split(kadmin, "dashboards", topic, [kp, ck])
    assert split["kp-member"] and split["ck-member"], split
    wait_consumed([kp, ck], produced, "mixed group")

    # kafka-python: ListGroups v4+ carries the state; the state filter works
    listed = {g["group_id"]: g for g in kadmin.list_groups()}
    assert listed["dashboards"]["group_state"] == "Stable"
    assert listed["dashboards"]["protocol_type"] == "consumer"
    assert listed["dormant"]["group_state"] == "Empty"
    ours = {"dashboards", "dormant"}
    assert {g["group_id"] for g in kadmin.list_groups(states_filter=["Stable"])} & ours == {
        "dashboards"
    }
    assert {g["group_id"] for g in kadmin.list_groups(states_filter=["Empty"])} & ours == {
        "dormant"
    }

    # kafka-python: DescribeGroups with decoded subscriptions and assignments
    d = kadmin.describe_groups(["dashboards", "dormant"])
    dash = d["dashboards"]
    assert dash["error"] is None and dash["group_state"] == "Stable"
    assert dash["protocol_type"] == "consumer" and dash["protocol_data"] == "range"
    assert sorted(m["client_id"] for m in dash["members"]) == ["ck-member", "kp-member"]
    for m in dash["members"]:
        assert m["member_id"].startswith(m["client_id"]), m
        assert "127.0.0.1" in m["client_host"], m
        assert m["member_metadata"]["topics"] == [topic], m
    assert d["dormant"]["group_state"] == "Empty" and d["dormant"]["members"] == []

    # confluent-kafka: ListConsumerGroups (all, and filtered by state), DescribeConsumerGroups
    res = cadmin.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    assert not res.errors, res.errors
    states = {g.group_id: g.state for g in res.valid}
    assert states["dashboards"] == ConsumerGroupState.STABLE
    assert states["dormant"] == ConsumerGroupState.EMPTY
    assert all(not g.is_simple_consumer_group for g in res.valid if g.group_id in ours)
    res = cadmin.list_consumer_groups(
        request_timeout=TIMEOUT, states={ConsumerGroupState.EMPTY}
    ).result(TIMEOUT)
    assert {g.group_id for g in res.valid} & ours == {"dormant"}
    futs = cadmin.describe_consumer_groups(["dashboards", "dormant"], request_timeout=TIMEOUT)
    desc = futs["dashboards"].result(TIMEOUT)
    assert desc.state == ConsumerGroupState.STABLE
    assert desc.partition_assignor == "range"
    got = {
        m.client_id: {tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic}
        for m in desc.members
    }
    assert got == split
    assert all("127.0.0.1" in m.host for m in desc.members)
    dormant = futs["dormant"].result(TIMEOUT)
    assert dormant.state == ConsumerGroupState.EMPTY and dormant.members == []

    # both leave: the group becomes Empty, keeps its offsets
    kp.close()
    ck.close()
    no_commit_errors([kp, ck])
    assert_exactly_once(produced, consumed_by([kp, ck]), "mixed group")
    d = kadmin.describe_groups(["dashboards"])["dashboards"]
    assert d["group_state"] == "Empty" and d["members"] == []
    desc = cadmin.describe_consumer_groups(["dashboards"], request_timeout=TIMEOUT)[
        "dashboards"
    ].result(TIMEOUT)
    assert desc.state == ConsumerGroupState.EMPTY and desc.members == []
    assert ck_committed(bs, "dashboards", topic) == end_offsets(bs, topic)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == MEMBER_SCRIPT_MARK:
    member_main(sys.argv[2:])
