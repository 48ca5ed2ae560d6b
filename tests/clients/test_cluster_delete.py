"""DeleteTopics in a cluster, with real clients: the topic leaves the metadata image and every
replica's broker removes its files; a topic created again under the same name starts empty on
every broker, including one that was down while the old topic was deleted (its directories
record the old topic id, so it drops them instead of serving the old records as the new
topic's); the internal topics cannot be deleted, grown or reconfigured.
"""

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from helpers import TIMEOUT, admin, consume, produce_all, producer
from test_cluster import (  # noqa: F401 - `cluster` is a fixture
    FAILOVER_TIMEOUT,
    JOIN_TIMEOUT,
    VOTERS,
    cluster,
    create_topics,
    replicas_in_sync,
    wait_until,
)


def partition_dirs(broker, topic):
    return sorted(p.name for p in broker.data_dir.glob(f"{topic}-*") if p.is_dir())


def delete_topics(bootstrap, names):
    a = admin(bootstrap)
    for f in a.delete_topics(names, operation_timeout=TIMEOUT).values():
        f.result(TIMEOUT)


def topic_gone_everywhere(cluster, topic):
    md = admin(cluster.bootstrap()).list_topics(timeout=10)
    if topic in md.topics:
        return False
    return all(not partition_dirs(b, topic) for b in cluster.running())


def test_delete_and_recreate_a_replicated_topic(cluster):
    bootstrap = cluster.bootstrap()
    create_topics(bootstrap, [("del", 3, 3)])
    a = admin(bootstrap)
    wait_until("del in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "del", 3, 3), 10)
    old = [f"old-{i}".encode() for i in range(90)]
    produce_all(producer(bootstrap, acks="all"), "del", old)
    wait_until(
        "del's replicas on every broker",
        lambda: all(partition_dirs(b, "del") == ["del-0", "del-1", "del-2"] for b in cluster.running()),
        10,
    )

    delete_topics(bootstrap, ["del"])
    wait_until("del's files removed on every broker", lambda: topic_gone_everywhere(cluster, "del"), 15)

    create_topics(bootstrap, [("del", 3, 3)])
    wait_until("new del in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "del", 3, 3), 10)
    new = [f"new-{i}".encode() for i in range(30)]
    produce_all(producer(bootstrap, acks="all"), "del", new)
    got = consume(bootstrap, "del", [0, 1, 2])
    assert sorted(r.value for r in got) == sorted(new)


def test_a_broker_down_during_delete_drops_the_old_topic(cluster):
    """Broker 3 is killed, the topic is deleted and created again (RF 3 needs broker 3 back,
    so it is recreated after the restart); broker 3's old directories must not come back as
    the new topic's data, and a topic it no longer holds a replica of is removed."""
    bootstrap = cluster.bootstrap()
    create_topics(bootstrap, [("back", 2, 3), ("stray", 1, 3)])
    a = admin(bootstrap)
    for t, n in (("back", 2), ("stray", 1)):
        wait_until(f"{t} in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), t, n, 3), 10)
    produce_all(producer(bootstrap, acks="all"), "back", [f"old-{i}".encode() for i in range(40)])
    produce_all(producer(bootstrap, acks="all"), "stray", [b"s"] * 10)
    wait_until(
        "replicas on every broker",
        lambda: all(
            partition_dirs(b, "back") == ["back-0", "back-1"] and partition_dirs(b, "stray")
            for b in cluster.running()
        ),
        10,
    )

    victim = cluster.brokers[3]
    victim.kill()
    survivors = cluster.bootstrap()
    wait_until(
        "broker 3 fenced",
        lambda: sorted(admin(survivors).list_topics(timeout=10).brokers) == [1, 2],
        FAILOVER_TIMEOUT,
    )
    delete_topics(survivors, ["back", "stray"])
    wait_until(
        "topics gone on the survivors",
        lambda: all(
            not partition_dirs(b, t) for b in cluster.running() for t in ("back", "stray")
        ),
        15,
    )
    # the victim still has its old replicas
    assert partition_dirs(victim, "back") == ["back-0", "back-1"]

    victim.start()
    cluster.wait_registered(VOTERS)
    create_topics(cluster.bootstrap(), [("back", 2, 3)])
    wait_until(
        "new back in sync",
        lambda: replicas_in_sync(admin(cluster.bootstrap()).list_topics(timeout=10), "back", 2, 3),
        JOIN_TIMEOUT,
    )
    wait_until("stray removed on the restarted broker", lambda: not partition_dirs(victim, "stray"), 15)
    new = [f"new-{i}".encode() for i in range(10)]
    produce_all(producer(cluster.bootstrap(), acks="all"), "back", new)
    # every replica, broker 3 included, holds only the new topic's records: read each
    # partition from its leader after moving leadership is not possible from a client, so
    # compare the records with broker 3's segment sizes: the old topic had 40 records
    got = consume(cluster.bootstrap(), "back", [0, 1])
    assert sorted(r.value for r in got) == sorted(new)
    deadline = time.monotonic() + 15
    while True:
        sizes = {
            b: sum(f.stat().st_size for d in ("back-0", "back-1") for f in (b.data_dir / d).glob("*.log"))
            for b in cluster.running()
        }
        if len(set(sizes.values())) == 1:
            break
        assert time.monotonic() < deadline, f"replicas of back differ in size: {sizes}"
        time.sleep(0.2)


def test_internal_topics_cannot_be_deleted_grown_or_reconfigured(cluster):
    bootstrap = cluster.bootstrap()
    wait_until(
        "__consumer_offsets exists",
        lambda: "__consumer_offsets" in admin(bootstrap).list_topics(timeout=10).topics,
        20,
    )
    try:
        delete_topics(bootstrap, ["__consumer_offsets"])
        raise AssertionError("deleting __consumer_offsets was accepted")
    except KafkaException as e:
        assert e.args[0].code() == 44, e  # POLICY_VIOLATION
    # the coordinators hash keys onto the partition count and rely on the topic's configs
    a = admin(bootstrap)
    grow = a.create_partitions([NewPartitions("__consumer_offsets", 32)])["__consumer_offsets"]
    retention = ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)
    reconf = a.incremental_alter_configs(
        [ConfigResource("topic", "__transaction_state", incremental_configs=[retention])]
    )
    for what, fut in (("growing", grow), ("reconfiguring", list(reconf.values())[0])):
        try:
            fut.result(TIMEOUT)
            raise AssertionError(f"{what} an internal topic was accepted")
        except KafkaException as e:
            assert e.args[0].code() == 44, (what, e)  # POLICY_VIOLATION
    # any broker may answer; each must still describe 16 partitions
    for _ in range(6):
        md = a.list_topics(timeout=10)
        if "__consumer_offsets" in md.topics:  # a broker just started may not know it yet
            assert len(md.topics["__consumer_offsets"].partitions) == 16
