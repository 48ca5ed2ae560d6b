"""Group and transaction coordinators in a cluster, with real clients: their state lives in the
internal topics `__consumer_offsets` and `__transaction_state` (16 partitions each, RF 3,
created by the controller), and each coordinator runs on the leader of its key's partition.

Covers: the internal topics appear with full ISRs; FindCoordinator names the leader of the
key's partition; a consumer group commits on a three-broker cluster, its coordinator's broker is
SIGKILLed, and a new member of the group (through the survivors) resumes exactly at the
committed offsets, which the new coordinator serves; a transaction spanning partitions led by
all three brokers (markers travel as WriteTxnMarkers) commits, with send_offsets_to_transaction
to a group coordinated elsewhere, and an aborted one stays invisible to read_committed; after
the transaction coordinator's broker is killed, the same transactional.id initialises on the
new coordinator (the old producer fenced) and commits again.
"""

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import TIMEOUT, admin, produce_all, producer
from test_cluster import (  # noqa: F401 - `cluster` is a fixture
    FAILOVER_TIMEOUT,
    VOTERS,
    cluster,
    create_topics,
    replicas_in_sync,
    wait_until,
)

OFFSETS = "__consumer_offsets"
TXNS = "__transaction_state"
INTERNAL_PARTITIONS = 16


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the broker hashes keys onto state partitions."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def state_partition(key: str) -> int:
    return crc32c(key.encode()) % INTERNAL_PARTITIONS


def internal_topics_in_sync(bootstrap):
    md = admin(bootstrap).list_topics(timeout=10)
    return all(replicas_in_sync(md, t, INTERNAL_PARTITIONS, 3) for t in (OFFSETS, TXNS)) and md


def leader_of(bootstrap, topic, partition):
    return admin(bootstrap).list_topics(timeout=10).topics[topic].partitions[partition].leader


def group_consumer(bootstrap, group, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def poll_values(c, n, timeout=TIMEOUT):
    """Polls until `n` messages arrived; returns them as (partition, offset, value)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages within {timeout}s"
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.partition(), m.offset(), m.value()))
    return got


def committed_offsets(bootstrap, group, topic, partitions):
    c = group_consumer(bootstrap, group)
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_internal_topics_and_find_coordinator(cluster):
    """The controller creates both internal topics with RF 3 over the three brokers; the
    coordinator of a group is the leader of its offsets partition."""
    md = wait_until(
        "internal topics in sync", lambda: internal_topics_in_sync(cluster.bootstrap()), 20
    )
    for t in (OFFSETS, TXNS):
        leaders = {p.leader for p in md.topics[t].partitions.values()}
        assert leaders == set(VOTERS), f"{t} leaders {leaders}"
    a = admin(cluster.bootstrap())
    create_topics(cluster.bootstrap(), [("cg", 1, 3)])
    produce_all(producer(cluster.bootstrap(), acks="all"), "cg", [b"x"], partition=0)
    c = group_consumer(cluster.bootstrap(), "find-me")
    c.subscribe(["cg"])
    poll_values(c, 1)
    c.commit(asynchronous=False)
    desc = a.describe_consumer_groups(["find-me"])["find-me"].result(TIMEOUT)
    assert desc.coordinator.id == leader_of(cluster.bootstrap(), OFFSETS, state_partition("find-me"))
    c.close()
    # clients may not write the coordinators' state
    errors = []
    prod = producer(cluster.bootstrap(), acks=1)
    prod.produce(OFFSETS, b"junk", partition=0, on_delivery=lambda err, _m: errors.append(err))
    assert prod.flush(TIMEOUT) == 0
    assert [e.code() for e in errors] == [KafkaError.TOPIC_EXCEPTION], errors


def test_group_offsets_survive_the_coordinators_broker(cluster):
    """Commit on a cluster, SIGKILL the group coordinator's broker: through the survivors the
    group's committed offsets are still there and a new member resumes exactly after them."""
    wait_until("internal topics in sync", lambda: internal_topics_in_sync(cluster.bootstrap()), 20)
    create_topics(cluster.bootstrap(), [("go", 2, 3)])
    values = [f"m-{i}".encode() for i in range(200)]
    d = produce_all(producer(cluster.bootstrap(), acks="all"), "go", values)
    assert len(d.ok) == 200 and not d.failed
    group = "survivor-group"
    c = group_consumer(cluster.bootstrap(), group)
    c.subscribe(["go"])
    first = poll_values(c, 120)
    c.commit(asynchronous=False)
    want = {}
    for p, o, _ in first:
        want[p] = max(want.get(p, 0), o + 1)
    c.close()
    assert committed_offsets(cluster.bootstrap(), group, "go", 2) == {
        p: want.get(p, -1001) for p in range(2)
    }

    coordinator = leader_of(cluster.bootstrap(), OFFSETS, state_partition(group))
    cluster.brokers[coordinator].kill()
    survivors = cluster.bootstrap()

    def moved():
        leader = leader_of(survivors, OFFSETS, state_partition(group))
        return leader not in (coordinator, -1) and leader

    new = wait_until("offsets partition failed over", moved, FAILOVER_TIMEOUT)
    assert new != coordinator
    got = wait_until(
        "committed offsets served by the new coordinator",
        lambda: (lambda o: o if o == {p: want.get(p, -1001) for p in range(2)} else None)(
            committed_offsets(survivors, group, "go", 2)
        ),
        FAILOVER_TIMEOUT,
    )
    assert got == {p: want.get(p, -1001) for p in range(2)}

    c = group_consumer(survivors, group)
    c.subscribe(["go"])
    rest = poll_values(c, 200 - len(first), timeout=40)
    c.close()
    seen = sorted(v for _, _, v in first + rest)
    assert seen == sorted(values), "messages lost or read twice across the failover"
    for p, o, _ in rest:
        assert o >= want.get(p, 0)


def txn_producer(bootstrap, tid):
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": tid,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )


def read_committed(bootstrap, topic, partitions, n):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        return poll_values(c, n)
    finally:
        c.close()


def test_transactions_across_brokers_and_coordinator_failover(cluster):
    """A transaction over partitions led by all three brokers commits (markers to the other
    brokers), with offsets sent to a group coordinated on any broker; an aborted one is never
    read; after SIGKILL of the transaction coordinator's broker the same transactional.id
    starts again on the new coordinator and commits."""
    bootstrap = cluster.bootstrap()
    wait_until("internal topics in sync", lambda: internal_topics_in_sync(bootstrap), 20)
    create_topics(bootstrap, [("tx", 3, 3), ("tx-in", 1, 3)])
    a = admin(bootstrap)
    ps = wait_until("tx in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "tx", 3, 3), 10)
    assert {p.leader for p in ps} == set(VOTERS), "tx's leaders are not on every broker"
    produce_all(producer(bootstrap, acks="all"), "tx-in", [b"in-0", b"in-1"], partition=0)

    tid = "cross-broker-txn"
    group = "txn-group"
    p = txn_producer(bootstrap, tid)
    p.init_transactions(TIMEOUT)
    p.begin_transaction()
    for i in range(30):
        p.produce("tx", f"c-{i}".encode(), partition=i % 3)
    p.send_offsets_to_transaction(
        [TopicPartition("tx-in", 0, 2)],
        group_consumer(bootstrap, group).consumer_group_metadata(),
        TIMEOUT,
    )
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    for i in range(30):
        p.produce("tx", f"a-{i}".encode(), partition=i % 3)
    p.flush(TIMEOUT)
    p.abort_transaction(TIMEOUT)
    got = read_committed(bootstrap, "tx", 3, 30)
    assert sorted(v for _, _, v in got) == sorted(f"c-{i}".encode() for i in range(30))
    assert committed_offsets(bootstrap, group, "tx-in", 1) == {0: 2}

    coordinator = leader_of(bootstrap, TXNS, state_partition(tid))
    cluster.brokers[coordinator].kill()
    survivors = cluster.bootstrap()
    wait_until(
        "transaction state partition failed over",
        lambda: leader_of(survivors, TXNS, state_partition(tid)) not in (coordinator, -1),
        FAILOVER_TIMEOUT,
    )
    p2 = txn_producer(survivors, tid)
    p2.init_transactions(TIMEOUT)
    # the old producer is fenced by the new epoch
    p.begin_transaction()
    p.produce("tx", b"zombie", partition=0)
    try:
        p.commit_transaction(TIMEOUT)
        raise AssertionError("the fenced producer committed")
    except KafkaException:
        pass
    p2.begin_transaction()
    for i in range(9):
        p2.produce("tx", f"again-{i}".encode(), partition=i % 3)
    p2.commit_transaction(TIMEOUT)
    got = read_committed(survivors, "tx", 3, 39)
    values = sorted(v for _, _, v in got)
    assert values == sorted(
        [f"c-{i}".encode() for i in range(30)] + [f"again-{i}".encode() for i in range(9)]
    )
    assert b"zombie" not in values
